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

Runs and their files:
- A run lives in one folder: the shipped configs log to ``<default_root_dir>/tb/version_0`` (a
  fixed version) with checkpoints in its ``checkpoints/``, so ``--ckpt_path last`` after a crash
  finds the run's ``last.ckpt``. Asking to resume when there is nothing to resume is an error, and
  so is starting a new run in a folder that holds another run's checkpoints (it would overwrite
  them).
- ``--ckpt_path FILE`` is checked before anything is built: a missing, empty or non-checkpoint
  file is named with the fix (the student checks the contents when it loads them).
- The config snapshot goes into the run's folder (``config.yaml`` for fit,
  ``config.<subcommand>.yaml`` for the others), never into the working directory.
- Clip sizes the codec and the decoder cannot both take, and a decoder config naming the
  ``GaussianDecoder`` interface, are refused before anything is built or generated.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec
import yaml
from jsonargparse import Namespace, set_parsing_settings
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import (
    LightningArgumentParser,
    LightningCLI,
    SaveConfigCallback,
)

from lyra.callbacks.progress_log import ProgressLog, ScheduleCutWarning
from lyra.data.codecs.frames import check_clip_size
from lyra.data.shards import read_manifest
from lyra.fit_guard import check_training_values, lock_run_folder, one_line, release_run_folders
from lyra.models import decoders
from lyra.models.decoders import GaussianDecoder
from lyra.models.teacher import TeacherModule
from lyra.utils.atomic import atomic_write_text
from lyra.utils.errors import run_reporting_errors

BASE_KEY = "_base_"
SPECIAL_CKPT_PATHS = ("last", "best", "hpc", "registry")  # --ckpt_path values Lightning resolves itself


@dataclass
class ClipSize:
    """The clip size a config states once; teacher and data module refer to it as ``${clip.*}``
    and the curriculum stages (configs/stages/) change it."""

    num_frames: int = 17
    height: int = 128
    width: int = 128

CODEC_FIELDS = ("latent_channels", "time_factor", "space_factor", "causal_first_frame")


def _import(class_path: str) -> Any:
    module, _, name = class_path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _codec_spec(codec: Any) -> dict | None:
    """The codec facts of a codec config (class_path + init_args), plus its class name (``name``)."""
    if not isinstance(codec, Namespace) or not codec.get("class_path"):
        return None
    cls = _import(codec.class_path)
    args = codec.get("init_args")
    return {**cls.spec_from_init_args(**(args.as_dict() if isinstance(args, Namespace) else {})), "name": cls.__name__}


def _cache_config(init: Any) -> dict | None:
    try:
        return read_manifest(init.get("shard_dir"))["config"]
    except (FileNotFoundError, TypeError):
        return None  # the data module names the missing cache at setup


def codec_spec_from_config(data: Any) -> dict | None:
    """The decoder-facing codec facts of a data config (a ``ClipDataModule`` namespace), without
    instantiating anything heavy: from a cache's manifest, or from the teacher's codec settings.
    None when the config does not say (another data module, or a cache not written yet)."""
    init = data.get("init_args") if isinstance(data, Namespace) else None
    if init is None:
        return None
    if init.get("source") == "shards":
        codec = (_cache_config(init) or {}).get("codec", {})
        return {k: codec[k] for k in CODEC_FIELDS if k in codec} or None
    spec = _codec_spec(init.get("teacher.init_args.codec"))
    return None if spec is None else {k: spec[k] for k in CODEC_FIELDS}


def check_decoder_class(decoder: Any) -> None:
    """A decoder config must name a decoder, not the ``GaussianDecoder`` interface (which has no
    layers and no forward: it used to fail deep inside training)."""

    class_path = decoder.get("class_path") if decoder is not None else None
    if not class_path:
        return
    cls = _import(class_path)
    if isinstance(cls, type) and issubclass(cls, GaussianDecoder) and cls.forward is GaussianDecoder.forward:
        usable = [f"lyra.models.{c.__name__}" for c in (getattr(decoders, n) for n in decoders.__all__)
                  if isinstance(c, type) and issubclass(c, GaussianDecoder) and c.forward is not GaussianDecoder.forward]
        usable.sort(key=lambda name: "Dynamic" in name)  # the static decoder first
        raise ValueError(f"model.init_args.decoder.class_path: {class_path} is {cls.__name__}, the decoders' "
                         f"interface, not a decoder you can train; use one of {', '.join(usable)}")


def _default(cls: type, name: str) -> Any:
    param = inspect.signature(cls).parameters.get(name)
    return None if param is None or param.default is inspect.Parameter.empty else param.default


def check_clip_size_for(codec: dict, patch_size: int, sizes: dict[str, int], where: str) -> None:
    """Clip sizes the codec and the decoder cannot both take (``lyra.data.codecs.frames.check_clip_size``),
    refused before a teacher generates clips the student could not read."""
    try:
        check_clip_size(None, sizes.get("height") if isinstance(sizes.get("height"), int) else None,
                        sizes.get("width") if isinstance(sizes.get("width"), int) else None, 1,
                        codec["space_factor"], False, patch_size)
    except ValueError as err:
        raise ValueError(f"clip {err} (--clip.height / --clip.width; codec {codec.get('name', '')}), or a decoder with "
                         f"another patch_size ({where})") from None


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
        kwargs.setdefault("save_config_callback", RunConfigSnapshot)
        kwargs.setdefault("model_class", LightningModule)
        kwargs.setdefault("datamodule_class", LightningDataModule)
        kwargs.setdefault("subclass_mode_model", True)
        kwargs.setdefault("subclass_mode_data", True)
        kwargs.setdefault("parser_kwargs", {"parser_mode": "omegaconf+"})
        # Always present, not configurable: plain progress lines when no terminal shows the bar, and
        # a loud line when max_time cuts the learning-rate schedule short.
        defaults = dict(kwargs.get("trainer_defaults") or {})
        extra = defaults.get("callbacks") or []
        defaults["callbacks"] = [*(extra if isinstance(extra, list) else [extra]), ProgressLog(), ScheduleCutWarning()]
        kwargs["trainer_defaults"] = defaults
        # Configs write ${clip.num_frames}; under a subcommand the tree is fit.clip..., so absolute
        # references are made relative at load time (jsonargparse's setting for exactly this).
        set_parsing_settings(omegaconf_absolute_to_relative_paths=True)
        super().__init__(*args, **kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("--test_after_fit", type=bool, default=False,
                            help="after `fit`, run `test` with the final weights (fit subcommand only)")
        parser.add_class_arguments(ClipSize, "clip", fail_untyped=True, sub_configs=True)
        parser.add_argument("--student_patch_size", type=int, default=2,
                            help="predict with a teacher: the patch_size of the student decoder the clips are for; "
                                 "sizes it cannot read are refused before generation (other subcommands read it "
                                 "from the decoder config)")

    def before_instantiate_classes(self) -> None:
        """Link the codec's facts into the decoder settings (jsonargparse's link_arguments drops
        targets nested in a subclass of a subclass, as model.init_args.decoder.init_args.* is);
        refuse a decoder config naming the interface and clip sizes the decoder cannot take."""
        cfg = self.config.get(self.subcommand) if self.subcommand else self.config
        decoder = cfg.get("model.init_args.decoder")
        check_decoder_class(decoder)
        check_training_values(cfg)  # lr, batch_size, ...: named before anything is built (lyra.fit_guard)
        self._check_clip_sizes(cfg)
        if decoder is None or not decoder.get("init_args"):
            return
        spec = codec_spec_from_config(cfg.get("data"))
        if spec is None:
            return
        for name, value in spec.items():
            decoder.init_args[name] = value

    def _check_clip_sizes(self, cfg: Any) -> None:

        def side(ns: Any, key: str) -> Any:
            return ns.get(key) if isinstance(ns, Namespace) else None

        model, data = cfg.get("model"), cfg.get("data")
        cls = _import(model.class_path) if isinstance(model, Namespace) and model.get("class_path") else None
        if isinstance(cls, type) and issubclass(cls, TeacherModule):  # predict: the teacher makes the clips
            codec = _codec_spec(model.get("init_args.codec"))
            init = model.get("init_args")
            sizes = {k: side(init, k) for k in ("height", "width")}
            if codec is not None:
                check_clip_size_for(codec, cfg.get("student_patch_size") or 2, sizes,
                                "--student_patch_size says which decoder the clips are for")
            return
        decoder = cfg.get("model.init_args.decoder")
        init = data.get("init_args") if isinstance(data, Namespace) else None
        if not isinstance(decoder, Namespace) or not decoder.get("class_path") or init is None:
            return
        patch = side(decoder.get("init_args"), "patch_size") or _default(_import(decoder.class_path), "patch_size")
        if init.get("source") == "shards":
            described = _cache_config(init) or {}
            raw = described.get("codec") or {}
            codec = {**raw, "name": str(raw.get("class", "")).rpartition(".")[2]}
            sizes = {k: described.get(k, init.get(k)) for k in ("height", "width")}
        else:
            codec = _codec_spec(init.get("teacher.init_args.codec"))
            teacher = init.get("teacher.init_args")
            sizes = {k: side(teacher, k) for k in ("height", "width")}
        if codec and "space_factor" in codec and isinstance(patch, int):
            check_clip_size_for(codec, patch, sizes, "model.init_args.decoder.init_args.patch_size")

    # ---- checkpoints of the run -------------------------------------------------------------------

    def _ckpt_path(self) -> Any:
        return self.config.get(self.subcommand, {}).get("ckpt_path")

    def _check_ckpt_path(self, new_run_allowed: bool) -> None:
        """A file given as --ckpt_path was checked at parse time; here what needs the trainer."""
        ckpt = self._ckpt_path()
        if ckpt is None and new_run_allowed:
            refuse_overwriting_a_run(self.trainer)
        elif ckpt == "last":
            require_last_checkpoint(self.trainer)

    def before_fit(self) -> None:
        lock_run_folder(self.trainer)  # one fit per run folder, taken before the folder is checked
        self._check_ckpt_path(new_run_allowed=True)

    def before_validate(self) -> None:
        self._check_ckpt_path(new_run_allowed=False)

    def before_test(self) -> None:
        self._check_ckpt_path(new_run_allowed=False)

    def before_predict(self) -> None:
        self._check_ckpt_path(new_run_allowed=False)

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        if args is None:
            args = sys.argv[1:]
        if isinstance(args, (list, tuple)):
            args = expand_config_bases(list(args))
        super().parse_arguments(parser, args)
        # LightningCLI reads the checkpoint's hyperparameters right after parsing: check the file first.
        subcommand = self.config.get("subcommand")
        ckpt = self.config.get(subcommand, {}).get("ckpt_path") if subcommand else None
        if ckpt is not None and ckpt not in SPECIAL_CKPT_PATHS and not str(ckpt).startswith("registry:"):
            check_checkpoint_file(ckpt)

    def after_fit(self) -> None:
        if self.config.get(self.subcommand, {}).get("test_after_fit"):
            self.trainer.test(self.model, datamodule=self.datamodule)


# ---- run folders, checkpoints and config snapshots ------------------------------------------------


def checkpoint_dirs(trainer: Trainer) -> list[str]:
    """Where the trainer's ModelCheckpoints write, as Lightning resolves it at setup: the callback's
    ``dirpath``, else ``<logger save_dir>/<name>/<version>/checkpoints``, else
    ``<default_root_dir>/checkpoints``."""
    dirs: list[str] = []
    for cb in trainer.checkpoint_callbacks:
        if not isinstance(cb, ModelCheckpoint):
            continue
        if cb.dirpath is not None:
            d = str(cb.dirpath)
        elif trainer.loggers:
            logger = trainer.loggers[0]
            save_dir = logger.save_dir if logger.save_dir is not None else trainer.default_root_dir
            version = logger.version if isinstance(logger.version, str) else f"version_{logger.version}"
            d = os.path.join(save_dir, str(logger.name), version, "checkpoints")
        else:
            d = os.path.join(trainer.default_root_dir, "checkpoints")
        if d not in dirs:
            dirs.append(d)
    return dirs


def _ckpts(folder: str, last_only: bool = False) -> list[str]:
    fs, path = fsspec.core.url_to_fs(folder)
    if not fs.isdir(path):
        return []
    names = sorted(Path(p).name for p in fs.ls(path, detail=False))
    pattern = r"^last(-\d+)?\.ckpt$" if last_only else r"\.ckpt$"
    return [n for n in names if re.search(pattern, n)]


_LOCATION = ("checkpoints go to <logger folder>/checkpoints: with a logger that starts a new version_N folder "
             "per invocation, a resumed run looks in an empty one; give the logger a fixed version (the shipped "
             "configs use trainer.logger.init_args.version: 0) or a ModelCheckpoint dirpath")


def require_last_checkpoint(trainer: Trainer) -> None:
    """``--ckpt_path last`` must find a last checkpoint: Lightning only warns and trains from step 0."""
    dirs = checkpoint_dirs(trainer)
    if not any(_ckpts(d, last_only=True) for d in dirs):
        where = ", ".join(dirs) or "(no ModelCheckpoint callback is configured)"
        raise FileNotFoundError(f"--ckpt_path last: no last checkpoint (last.ckpt) in {where}, so there is nothing to "
                                f"resume. Check --trainer.default_root_dir (the run's folder), pass the checkpoint file "
                                f"itself, or start a new run without --ckpt_path. Note: {_LOCATION}")


def refuse_overwriting_a_run(trainer: Trainer) -> None:
    """A new run (no ``--ckpt_path``) in a folder holding another run's checkpoints would overwrite them."""
    for d in checkpoint_dirs(trainer):
        found = _ckpts(d)
        if found:
            raise FileExistsError(f"{d} holds checkpoints of an earlier run ({', '.join(found[:4])}"
                                  f"{', ...' if len(found) > 4 else ''}); a new run there would overwrite them. Resume "
                                  f"it with --ckpt_path last, start a new run in another folder with "
                                  f"--trainer.default_root_dir <folder>, or delete {d}")


def check_checkpoint_file(path: str | os.PathLike, option: str = "--ckpt_path") -> None:
    """A checkpoint file must exist and be what ``torch.save`` writes (a zip archive); anything else
    used to surface as EOFError / KeyError / miniz errors from deep inside torch.load."""
    fs, p = fsspec.core.url_to_fs(str(path))
    fix = ("pass a checkpoint written by `lightning fit` (e.g. <run>/tb/version_0/checkpoints/last.ckpt), or `last` "
           "to resume the run in --trainer.default_root_dir")
    if not fs.exists(p):
        raise FileNotFoundError(f"{option} {path} does not exist; {fix}")
    if fs.isdir(p):
        return  # a distributed (sharded) checkpoint is a folder: Lightning's strategy reads it
    if not fs.size(p):
        raise ValueError(f"{option} {path} is empty (0 bytes): its writing was cut short or it is not a checkpoint; "
                         "use another checkpoint of the run (its checkpoints/ folder keeps last.ckpt and the "
                         f"periodic ones), or {fix}")
    with fs.open(p, "rb") as f:
        head = f.read(64)
        f.seek(0)
        is_zip = zipfile.is_zipfile(f)
    if not is_zip:
        text = all(32 <= b < 127 or b in b"\t\r\n" for b in head)
        kind = "a text file" if text else "truncated (a copy or write cut short) or another format"
        raise ValueError(f"{option} {path} is not a PyTorch checkpoint (torch.save writes a zip archive; this file is "
                         f"{kind}); use another checkpoint of the run, or {fix}")


def run_folder(trainer: Trainer) -> str:
    """The run's output folder: the logger's (``trainer.log_dir``); when that is the working directory
    (no logger and no default_root_dir), the output folder of a callback that writes one
    (``ClipWriter.output_dir``), else ``./lightning_logs``. Never the working directory itself."""
    log_dir = trainer.log_dir  # broadcast from rank 0: every rank must call it
    if log_dir is not None and "://" in str(log_dir):
        return str(log_dir)
    here = Path.cwd().resolve()
    if log_dir is not None and Path(log_dir).resolve() != here:
        return str(log_dir)
    for cb in trainer.callbacks:
        out = getattr(cb, "output_dir", None)
        if isinstance(out, (str, os.PathLike)) and "://" not in str(out) and Path(out).resolve() != here:
            return str(out)
    return str(here / "lightning_logs")


class RunConfigSnapshot(SaveConfigCallback):
    """Saves the parsed config in the run's folder (``run_folder``), temp-then-rename: ``config.yaml``
    for fit, ``config.<subcommand>.yaml`` for validate / test / predict, so evaluating a run never
    replaces the config it was trained with, and nothing lands in the working directory."""

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self.already_saved:
            return
        folder = run_folder(trainer)
        fn = trainer.state.fn.value if trainer.state.fn is not None else stage
        name = "config.yaml" if fn == "fit" else f"config.{fn}.yaml"
        if trainer.is_global_zero:
            text = self.parser.dump(self.config, skip_none=False)
            if "://" in folder:
                fs, path = fsspec.core.url_to_fs(f"{folder.rstrip('/')}/{name}")
                if fs.exists(path) and not self.overwrite:
                    raise RuntimeError(f"{folder}/{name} exists; not overwriting a previous run's config")
                fs.pipe_file(path, text.encode())
            else:
                path = Path(folder) / name
                if path.exists() and not self.overwrite:
                    raise RuntimeError(f"{path} exists; not overwriting a previous run's config (delete it, or pick "
                                       "another --trainer.default_root_dir)")
                atomic_write_text(path, text)
            self.save_config(trainer, pl_module, stage)
            self.already_saved = True
        self.already_saved = trainer.strategy.broadcast(self.already_saved)


def main(args: list[str] | None = None) -> None:
    # Nothing in lyra may download weights at run time; fail loudly instead of hanging on a hub.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        LyraCLI(save_config_kwargs={"overwrite": True}, args=args)
    finally:
        release_run_folders()


def console_main(args: list[str] | None = None) -> None:
    """The ``lightning`` command: ``main`` with one-line errors and exit status 2 (``--debug``: traceback)."""
    from_argv = args is None  # LightningCLI warns when given args while sys.argv holds them too
    args = list(sys.argv[1:] if from_argv else args)
    debug = "--debug" in args
    args = [a for a in args if a != "--debug"]
    if from_argv:
        sys.argv[1:] = args
    code = run_reporting_errors(lambda: main(None if from_argv else args), "lightning", debug, one_line)
    if code:
        sys.exit(code)


if __name__ == "__main__":
    console_main()
