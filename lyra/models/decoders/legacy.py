"""Decoders saved by earlier lyra versions: their tensor names and settings, converted or refused.

Until 2026-12 a decoder was one class with its layers as direct children (``latent_embed``,
``blocks``, ``head``, ...) and carried settings that were measured and not adopted. Its folders and
checkpoints load: tensors are renamed to the parts a decoder now has; a removed setting at the
value that is now the only behaviour is dropped, any other value is refused with the way forward.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"

# (old prefix, new prefix), for the tensors of the one-class layout.
RENAMED = (("latent_embed.", "tokens.latent_embed."), ("ray_embed.", "tokens.ray_embed."),
           ("depth_embed.", "depth_reader.embed."), ("skip_head.", "head.skip."),
           ("head.", "head.proj."), ("pixel_gaussians.", "input_pixels."), ("source_time_embed.", "time.source."),
           ("target_time_embed.", "time.target."))

# Removed settings: the value that is now the only behaviour (None: any value, it only mattered with
# another removed setting) and where the measurement that retired it is written down.
REMOVED = {"head_type": ("linear", "E8"), "head_width": (None, "E8"), "copy_features": (False, "E15"),
           "copy_tolerance": (None, "E15"), "depth_units": ("world", "E17"), "grid_cells": ("all", "E23"),
           "input_image_features": (0, "E24")}


def is_legacy_state(state: dict[str, Any]) -> bool:
    return any(k.startswith("latent_embed.") for k in state) and not any(k.startswith("tokens.") for k in state)


def convert_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Tensor names of the one-class layout -> the parts' names (other dicts are returned as they are)."""
    if not is_legacy_state(state):
        return state
    out = {}
    for key, value in state.items():
        new = key
        for old, renamed in RENAMED:
            if key.startswith(old):
                new = renamed + key[len(old):]
                break
        out[new] = value
    return out


def convert_config(config: dict[str, Any], where: str) -> dict[str, Any]:
    """A saved decoder config without the removed settings; a removed setting that changed the
    architecture is refused, naming it and the way forward."""
    out = dict(config)
    for name, (kept, experiment) in REMOVED.items():
        if name not in out:
            continue
        value = out.pop(name)
        if kept is not None and value != kept:
            raise ValueError(f"{where} was saved with {name}={value!r}, a decoder setting lyra no longer has (measured "
                             f"and not adopted: docs/experiments.md, {experiment}). Train a decoder without it, or load "
                             f"this one with the lyra release it was trained with")
    return out


def read_pretrained(path: Path) -> tuple[str, dict[str, Any], dict[str, torch.Tensor]]:
    """(class name, config, tensors) of a ``save_pretrained`` folder, converted to today's layout."""
    cfg_file, weights = path / "config.json", path / WEIGHTS_NAME
    if not cfg_file.is_file():
        raise FileNotFoundError(f"no decoder config at {cfg_file}; pass the folder written by save_pretrained")
    if not weights.is_file():
        raise FileNotFoundError(f"decoder folder {path} has config.json but no {WEIGHTS_NAME}; save the decoder again "
                                "with save_pretrained (safe_serialization=True)")
    try:
        config = json.loads(cfg_file.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"{cfg_file} is not valid JSON ({err}); save the decoder again with save_pretrained") from None
    if not isinstance(config, dict) or not isinstance(config.get("_class_name"), str):
        raise ValueError(f"{cfg_file} does not name a decoder class (_class_name); it is not a lyra decoder folder")
    name = config["_class_name"]
    config = convert_config({k: v for k, v in config.items() if not k.startswith("_")}, str(path))
    return name, config, convert_state_dict(load_file(weights))
