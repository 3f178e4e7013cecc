"""Checks of ``lyra generate``'s options and output folder, before anything runs (docs/generate.md).

``o`` is a ``lyra.inference.pipeline.GenerateOptions``.
"""

from __future__ import annotations

import math
from pathlib import Path

from lyra.inference.outputs import OUTPUT_MARKER, replaceable
from lyra.render.trajectories import LYRA_TRAJECTORIES
from lyra.utils.errors import LyraUsageError


def check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise LyraUsageError(f"--out {str(out)!r} is a file; pass a folder name")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise LyraUsageError(f"--out {str(out)!r} exists and is not empty; pass --overwrite to replace it or another "
                             "--out")
    if overwrite and not replaceable(out):
        raise LyraUsageError(f"--out {str(out)!r} was not written by lyra (it has no {OUTPUT_MARKER} file), so "
                             "--overwrite will not delete it; pass another --out, or delete the folder yourself")


def inputs_of(o) -> dict[str, str | list[str] | None]:
    """Every file or folder the run reads, by option: the output may overlap none of them."""
    paths = {"--decoder": o.decoder, "--image": o.image, "--video": o.video, "--cameras": o.cameras,
             "--teacher": o.teacher, "--vae": None if o.vae == "dct" else o.vae, "--depth-model": o.depth_model,
             "--t2i": o.t2i, "--camera-path": list(o.camera_paths)}
    return paths


def check_numbers(o) -> None:
    """What the command line's types check, for callers of ``generate`` from Python: never a default for 0."""
    for name in ("frames", "num_times", "render_chunk", "decode_chunk", "teacher_chunk", "orbit_frames", "steps",
                 "t2i_steps"):
        value = getattr(o, name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise LyraUsageError(f"--{name.replace('_', '-')} must be a whole number >= 1, got {value!r}")
    checks = {"fov": (1.0, 170.0), "orbit_degrees": (1.0, 360.0), "fps": (0.1, 1000.0), "path_scale": (1e-9, math.inf),
              "scene_depth": (1e-9, math.inf), "world_scale": (1e-9, math.inf)}
    for name, (low, high) in checks.items():
        value = getattr(o, name)
        if value is not None and not (math.isfinite(float(value)) and low <= float(value) <= high):
            raise LyraUsageError(f"--{name.replace('_', '-')} must be a finite number in [{low:g}, {high:g}], "
                                 f"got {value!r}")


def num_views(trajectories: list[str] | None, camera_paths: list[str]) -> int:
    """How many trajectories the teacher will make (as ``lyra.inference.teachers`` picks them; a video: 1)."""
    if trajectories is None and not camera_paths:
        return len(LYRA_TRAJECTORIES)
    return max(1, len(trajectories or []) + len(camera_paths))
