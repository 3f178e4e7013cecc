"""Trained decoders for ``lyra generate``: where they are, how to load them, what they were trained on.

``--decoder`` accepts

- a ``save_pretrained`` folder (``config.json`` + ``diffusion_pytorch_model.safetensors``);
- a Lightning checkpoint of a ``StudentModule`` (``*.ckpt``; the decoder class and settings are
  stored in it by ``StudentModule.on_save_checkpoint``);
- a training run folder (``trainer.default_root_dir``, e.g. ``outputs/dynamic``): the newest
  ``final*.ckpt`` under it (the weights ``fit`` ends with), else the newest ``last*.ckpt``, else the
  newest ``*.ckpt``.

The clip size and procedural-teacher settings a checkpoint was trained with come from the run's
``config.yaml`` (LightningCLI saves it in the log folder above ``checkpoints/``). A
``save_pretrained`` folder does not record them: then the defaults of configs/static.yaml and
configs/dynamic.yaml apply (17 / 9 frames, 128 x 128, 60 degrees), and the run says so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lyra.models.decoders import GaussianDecoder

DEFAULT_SIZES = {False: (17, 128, 128), True: (9, 128, 128)}  # is_dynamic -> (frames, height, width)


@dataclass
class DecoderInfo:
    source: str  # what the user passed
    path: str  # the folder or checkpoint actually loaded
    kind: str  # "pretrained" or "checkpoint"
    run_config: str | None = None  # the run's config.yaml, when found
    training: dict[str, Any] = field(default_factory=dict)  # num_frames, height, width, teacher settings


def resolve_decoder(path: str | Path) -> tuple[Path, str]:
    """(file or folder to load, "pretrained" | "checkpoint"); errors name the path and the fix."""
    p = Path(path)
    fix = ("pass a decoder folder (decoder.save_pretrained), a Lightning checkpoint (.ckpt) or a training run "
           "folder such as outputs/dynamic (train one with `lightning fit --config configs/dynamic.yaml`)")
    if not p.exists():
        raise FileNotFoundError(f"decoder {str(p)!r} does not exist; {fix}")
    if p.is_file():
        if p.suffix != ".ckpt":
            raise ValueError(f"decoder {str(p)!r} is a file but not a Lightning checkpoint (.ckpt); {fix}")
        return p, "checkpoint"
    if (p / "config.json").is_file():
        try:
            cls = json.loads((p / "config.json").read_text()).get("_class_name")
        except (ValueError, AttributeError):
            cls = None
        if not isinstance(cls, str) or not cls.endswith("GaussianDecoder"):
            raise ValueError(f"{str(p)!r} holds {cls or 'no _class_name'!r}, not a lyra Gaussian decoder; {fix}")
        if not (p / "diffusion_pytorch_model.safetensors").is_file():
            raise FileNotFoundError(f"decoder folder {str(p)!r} has config.json but no diffusion_pytorch_model.safetensors; "
                                    "save the decoder again with save_pretrained (safe_serialization=True)")
        return p, "pretrained"
    ckpts = [c for c in p.rglob("*.ckpt") if c.is_file()]
    if not ckpts:
        raise FileNotFoundError(f"{str(p)!r} is neither a decoder folder (no config.json) nor a run folder with "
                                f"checkpoints (no *.ckpt below it); {fix}")
    for prefix in ("final", "last", ""):
        picked = [c for c in ckpts if c.name.startswith(prefix)]
        if picked:
            return max(picked, key=lambda c: (c.stat().st_mtime, str(c))), "checkpoint"
    raise AssertionError("unreachable")


def _run_config(ckpt: Path) -> Path | None:
    for folder in (ckpt.parent, ckpt.parent.parent):
        if (folder / "config.yaml").is_file():
            return folder / "config.yaml"
    return None


def _training_from_config(path: Path) -> dict[str, Any]:
    """Clip size and procedural-teacher settings from a LightningCLI config.yaml (what is there)."""
    import yaml

    try:
        cfg = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError:
        return {}
    out: dict[str, Any] = {}
    data = (cfg.get("data") or {}).get("init_args") or {}
    clip = cfg.get("clip") or {}
    for key in ("num_frames", "height", "width"):
        value = clip.get(key, data.get(key))
        if isinstance(value, int):
            out[key] = value
    teacher = (data.get("teacher") or {}).get("init_args") or {}
    gen = teacher.get("generator") or {}
    if gen.get("class_path"):
        out["generator"] = gen["class_path"]
        args = gen.get("init_args") or {}
        for key in ("fov_deg", "num_objects", "shadows", "trajectories", "num_views"):
            if key in args and args[key] is not None:
                out[key] = args[key]
    codec = teacher.get("codec") or {}
    if codec.get("class_path"):
        out["codec"] = codec["class_path"]
    if data.get("source") == "shards":
        out["codec"] = out.get("codec") or "clip cache"
    return out


def load_decoder(path: str | Path) -> tuple[GaussianDecoder, DecoderInfo]:
    """The decoder (eval mode, CPU, float32) and where it came from / what it was trained on."""
    from lyra.models import decoders
    from lyra.models.init_weights import load_decoder_weights

    target, kind = resolve_decoder(path)
    info = DecoderInfo(source=str(path), path=str(target), kind=kind)
    if kind == "pretrained":
        decoder = GaussianDecoder.from_pretrained(target)
    else:
        try:
            ckpt = torch.load(target, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001  (torch raises many kinds for a file that is not a checkpoint)
            raise ValueError(f"{str(target)!r} is not a readable Lightning checkpoint ({type(err).__name__}); pass a "
                             "checkpoint written by `lightning fit` or a save_pretrained folder") from None
        desc = ckpt.get("lyra_decoder") if isinstance(ckpt, dict) else None
        if not desc or not desc.get("class"):
            raise ValueError(f"{str(target)!r} does not say which decoder it holds (no 'lyra_decoder' entry, written by "
                             "StudentModule.on_save_checkpoint); pass a checkpoint of lyra's StudentModule or a "
                             "save_pretrained folder")
        cls = getattr(decoders, desc["class"], None)
        if not (isinstance(cls, type) and issubclass(cls, GaussianDecoder)):
            raise ValueError(f"{str(target)!r} holds an unknown decoder class {desc['class']!r}")
        config = {k: v for k, v in desc.get("config", {}).items() if not k.startswith("_")}
        decoder = cls.from_config(config)
        load_decoder_weights(decoder, target)
        cfg = _run_config(target)
        if cfg is not None:
            info.run_config = str(cfg)
            info.training = _training_from_config(cfg)
    decoder = decoder.float().eval().requires_grad_(False)
    info.training["sizes_from"] = "run config" if "num_frames" in info.training else "defaults"
    frames, height, width = DEFAULT_SIZES[decoder.is_dynamic]
    info.training.setdefault("num_frames", frames)
    info.training.setdefault("height", height)
    info.training.setdefault("width", width)
    info.training.setdefault("fov_deg", 60.0)
    return decoder, info
