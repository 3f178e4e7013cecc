"""Checks every scene-file reader and writer shares: suffix, readable and non-empty, one finite scene."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from lyra.render.gaussians import Gaussians


def check_suffix(path: Path, suffix: str, verb: str) -> None:
    if path.suffix.lower() != suffix:
        raise ValueError(
            f"{str(path)!r} does not end in {suffix}; {verb}_{suffix[1:]} only handles {suffix} files, "
            f"use lyra.render.formats.{verb}_scene to pick the format from the suffix"
        )


def check_readable(path: Path, kind: str) -> int:
    if not path.is_file():
        raise FileNotFoundError(f"{kind} file {str(path)!r} does not exist")
    size = path.stat().st_size
    if size == 0:
        raise ValueError(f"{str(path)!r} is empty (0 bytes); it is not a {kind} file, re-export the scene")
    return size


def one_scene(gaussians: Gaussians, fn: str) -> Gaussians:
    """An unbatched float32 CPU copy with non-finite Gaussians dropped (as save_ply does)."""
    if not isinstance(gaussians, Gaussians):
        raise TypeError(f"{fn} takes a lyra.render.Gaussians, got {type(gaussians).__name__}")
    if gaussians.batch_shape:
        raise ValueError(
            f"{fn} writes one scene but got batch_shape {tuple(gaussians.batch_shape)}; save each element g[i]"
        )
    g = gaussians.detach().to("cpu", torch.float32)
    finite = g.finite_mask()
    dropped = int((~finite).sum())
    if dropped:
        warnings.warn(f"{fn}: dropping {dropped} of {g.num_gaussians} Gaussians with non-finite values", stacklevel=3)
        g = g.select(finite)
    g.validate(values=True)
    return g
