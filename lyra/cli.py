"""The ``lightning`` command: LightningCLI over any lyra (or user) LightningModule / DataModule.

    lightning fit --config configs/dynamic.yaml
    lightning test --config configs/dynamic.yaml --ckpt_path path/to.ckpt
    lightning predict --config configs/generate.yaml
    lightning fit --config configs/static.yaml --config configs/stages/7_pruning.yaml   # overlays merge

How configs compose (docs/configs.md):
- A YAML file may start from others with a top-level ``_base_: file.yaml`` (or a list), paths
  relative to that file: the bases are merged first, then the file itself.
- YAML is parsed in jsonargparse's ``omegaconf+`` mode, so ``${...}`` interpolation is resolved
  after every file and command-line option is merged: a value stated once (frame count, image
  size) follows an overlay that changes it.
- The decoder's codec facts (latent channels, time and space factors, causal first frame) are
  linked from the data module's codec (or its cache's manifest) before anything is built, so
  they are never copied by hand and a value written in a decoder config is replaced.

``fit`` also runs the test protocol on the final weights when ``test_after_fit: true`` (the
shipped configs set it), so one command leaves a checkpoint, logs and test metrics.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from jsonargparse import set_parsing_settings
from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

BASE_KEY = "_base_"


@dataclass
class ClipSize:
    """The clip size a config states once; teacher and data module refer to it as ``${clip.*}``
    and the curriculum stages (configs/stages/) change it."""

    num_frames: int = 17
    height: int = 128
    width: int = 128

CODEC_FIELDS = ("latent_channels", "time_factor", "space_factor", "causal_first_frame")


def codec_spec_from_config(data: Any) -> dict | None:
    """The decoder-facing codec facts of a data config (a ``ClipDataModule`` namespace), without
    instantiating anything heavy: from a cache's manifest, or from the teacher's codec settings.
    None when the config does not say (another data module, or a cache not written yet)."""
    from jsonargparse import Namespace

    from lyra.data.shards import read_manifest

    init = data.get("init_args") if isinstance(data, Namespace) else None
    if init is None:
        return None
    if init.get("source") == "shards":
        try:
            codec = read_manifest(init.get("shard_dir"))["config"].get("codec", {})
        except (FileNotFoundError, TypeError):
            return None  # the data module names the missing cache at setup
        return {k: codec[k] for k in CODEC_FIELDS if k in codec} or None
    codec = init.get("teacher.init_args.codec")
    if not isinstance(codec, Namespace) or not codec.get("class_path"):
        return None
    module, _, name = codec.class_path.rpartition(".")
    import importlib

    cls = getattr(importlib.import_module(module), name)
    args = codec.get("init_args")
    return cls.spec_from_init_args(**(args.as_dict() if isinstance(args, Namespace) else {}))


def _load_config_file(path: Path, seen: tuple[Path, ...] = ()) -> list[str]:
    """The config files to merge for ``path``, bases first, as YAML texts."""
    path = path.resolve()
    if path in seen:
        raise ValueError(f"config {path} includes itself through {BASE_KEY}: {' -> '.join(map(str, seen))}")
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict) or BASE_KEY not in data:
        return [path.read_text()]
    bases = data.pop(BASE_KEY)
    texts: list[str] = []
    for base in [bases] if isinstance(bases, str) else list(bases):
        base_path = (path.parent / base)
        if not base_path.is_file():
            raise FileNotFoundError(f"{path}: {BASE_KEY} {base!r} does not exist (paths are relative to the file)")
        texts += _load_config_file(base_path, seen + (path,))
    return texts + [yaml.safe_dump(data, sort_keys=False)]


def expand_config_bases(args: list[str]) -> list[str]:
    """Replace every ``--config FILE`` whose YAML has a ``_base_`` key by its bases and itself."""
    out: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        value = None
        if arg == "--config" and i + 1 < len(args):
            value, i = args[i + 1], i + 2
        elif arg.startswith("--config="):
            value, i = arg.split("=", 1)[1], i + 1
        else:
            out.append(arg)
            i += 1
            continue
        path = Path(value)
        if path.is_file() and path.suffix in (".yaml", ".yml") and BASE_KEY in (path.read_text()):
            for text in _load_config_file(path):
                out += ["--config", text]
        else:
            out += ["--config", value]
    return out


class LyraCLI(LightningCLI):
    """LightningCLI over any LightningModule / LightningDataModule (subclass mode), with lyra's
    config composition (``_base_``, ``omegaconf+`` interpolation, the ``clip`` size, codec links)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("model_class", LightningModule)
        kwargs.setdefault("datamodule_class", LightningDataModule)
        kwargs.setdefault("subclass_mode_model", True)
        kwargs.setdefault("subclass_mode_data", True)
        kwargs.setdefault("parser_kwargs", {"parser_mode": "omegaconf+"})
        # Configs write ${clip.num_frames}; under a subcommand the tree is fit.clip..., so absolute
        # references are made relative at load time (jsonargparse's setting for exactly this).
        set_parsing_settings(omegaconf_absolute_to_relative_paths=True)
        super().__init__(*args, **kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("--test_after_fit", type=bool, default=False,
                            help="after `fit`, run `test` with the final weights (fit subcommand only)")
        parser.add_class_arguments(ClipSize, "clip", fail_untyped=True, sub_configs=True)

    def before_instantiate_classes(self) -> None:
        """Link the codec's facts into the decoder settings (jsonargparse's link_arguments drops
        targets nested in a subclass of a subclass, as model.init_args.decoder.init_args.* is)."""
        cfg = self.config.get(self.subcommand) if self.subcommand else self.config
        decoder = cfg.get("model.init_args.decoder")
        if decoder is None or not decoder.get("init_args"):
            return
        spec = codec_spec_from_config(cfg.get("data"))
        if spec is None:
            return
        for name, value in spec.items():
            decoder.init_args[name] = value

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        if args is None:
            args = sys.argv[1:]
        if isinstance(args, (list, tuple)):
            args = expand_config_bases(list(args))
        super().parse_arguments(parser, args)

    def after_fit(self) -> None:
        if self.config.get(self.subcommand, {}).get("test_after_fit"):
            self.trainer.test(self.model, datamodule=self.datamodule)


def main(args: list[str] | None = None) -> None:
    # Nothing in lyra may download weights at run time; fail loudly instead of hanging on a hub.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    LyraCLI(save_config_kwargs={"overwrite": True}, args=args)


if __name__ == "__main__":
    main()
