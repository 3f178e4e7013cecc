"""How ``lightning`` configs compose: ``_base_`` files, the ``clip`` size stated once, the codec's facts
linked into the decoder, and the sizes and classes refused before anything is built (docs/configs.md)."""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from jsonargparse import Namespace

from lyra.data.codecs.frames import check_clip_size
from lyra.data.shard_store import read_manifest
from lyra.models import decoders
from lyra.models.decoders import GaussianDecoder

BASE_KEY = "_base_"


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
