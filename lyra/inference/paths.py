"""Camera trajectories for generation: Lyra's families (scalable per scene) and users' camera paths.

A generation reads V trajectories of T frames each: any of Lyra's six families (``left``, ``right``,
``up``, ``zoom_in``, ``zoom_out``, ``spiral``) and any number of camera-path files, in that order.
Files may be the project's camera-path JSON (``lyra camera-path``, ``lyra view``'s "Save path") or
nerfstudio's ``camera_path.json``; the format is recognised from the content. Every path is
resampled to the generation's T frames and image size (slerped poses, interpolated intrinsics and
times).

Where a file's poses sit in the teacher's world:

- default: as they are. The teacher's world is the frame the generated scene is written in (the
  procedural world; for an image, the input camera at the identity with the depth model's units),
  so a path recorded in ``lyra view`` on a generated scene regenerates along that very path.
- ``anchor=True``: the path is re-expressed relative to its own first camera and attached to the
  teacher's start view (procedural: the scene's start view; image: the input camera), its
  translations multiplied by ``path_scale`` x the scene scale (procedural: the radius holding every
  object; image: the median depth). Use it for paths made for another scene (nerfstudio).

Magnitudes: each family moves by a fraction of the scene scale drawn from Lyra's range
(``lyra.render.trajectories.MAGNITUDE_RANGES``); ``magnitude`` replaces the draw, for all families
(one number) or per family (``"left=0.3,spiral=0.5"``). The draws are still made, so families
without an override keep exactly the trajectory they would have had.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Mapping, Sequence

import torch
from torch import Tensor

from lyra.render.camera_path import CameraPath, load_nerfstudio_camera_path
from lyra.render.cameras import c2w_to_viewmat, resize_intrinsics
from lyra.render.trajectories import (
    LYRA_TRAJECTORIES,
    MAGNITUDE_RANGES,
    interpolate_poses,
    make_trajectory,
)
from lyra.utils.jsonfile import read_json

Magnitude = float | Mapping[str, float] | None


def load_camera_path(path: str | os.PathLike) -> CameraPath:
    """A camera path file: lyra's JSON (``format: lyra.camera_path/1``) or nerfstudio's camera_path.json."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"camera path {str(p)!r} does not exist; export one with `lyra camera-path`, "
                                "`lyra view` (Save path) or nerfstudio's viewer (camera_path.json)")
    d = read_json(p, "a camera path is lyra's camera-path JSON or nerfstudio's camera_path.json")
    if isinstance(d, dict) and "camera_path" in d:
        return load_nerfstudio_camera_path(p)
    if isinstance(d, dict) and ("c2w" in d or "format" in d):
        return CameraPath.load(p)
    raise ValueError(f"{p}: unknown camera path format: expected lyra's camera-path JSON (keys format, width, "
                     "height, c2w, K[, time]) or nerfstudio's camera_path.json (keys render_width, render_height, "
                     "camera_path); convert the file to one of them")


def parse_magnitude(text: str | float | Mapping[str, float] | None) -> Magnitude:
    """``"0.3"`` (every family) or ``"left=0.3,spiral=0.5"`` (per family) -> float or dict; None stays None."""
    if text is None or isinstance(text, Mapping) or isinstance(text, (int, float)):
        value = text
    else:
        text = str(text).strip()
        if "=" not in text:
            try:
                value = float(text)
            except ValueError:
                raise ValueError(f"--magnitude {text!r}: expected a number or name=number pairs such as "
                                 "'left=0.3,spiral=0.5'") from None
        else:
            value = {}
            for part in text.split(","):
                name, _, num = part.partition("=")
                name = name.strip().replace("-", "_")
                try:
                    value[name] = float(num)
                except ValueError:
                    raise ValueError(f"--magnitude {text!r}: {part!r} is not name=number") from None
    if isinstance(value, Mapping):
        unknown = [k for k in value if k not in LYRA_TRAJECTORIES]
        if unknown:
            raise ValueError(f"--magnitude names unknown trajectories {unknown}; choose from {', '.join(LYRA_TRAJECTORIES)}")
        bad = {k: v for k, v in value.items() if not (math.isfinite(v) and v >= 0)}
        if bad:
            raise ValueError(f"--magnitude values must be finite and >= 0 (fractions of the scene scale), got {bad}")
        return dict(value)
    if value is not None and not (math.isfinite(float(value)) and float(value) >= 0):
        raise ValueError(f"--magnitude must be finite and >= 0 (a fraction of the scene scale), got {value}")
    return None if value is None else float(value)


def magnitude_for(kind: str, magnitude: Magnitude) -> float | None:
    if isinstance(magnitude, Mapping):
        return magnitude.get(kind)
    return magnitude


def check_trajectories(names: Sequence[str]) -> list[str]:
    names = [n.replace("-", "_") for n in names]
    unknown = [n for n in names if n not in LYRA_TRAJECTORIES]
    if unknown:
        raise ValueError(f"unknown trajectories {unknown}; choose from {', '.join(LYRA_TRAJECTORIES)}")
    if len(set(names)) != len(names):
        raise ValueError(f"trajectories {names} name one family twice; list each at most once")
    return names


def family_poses(
    names: Sequence[str],
    start: Tensor,  # [4, 4] start view
    center: Tensor,  # [3] what every family keeps looking at
    num_frames: int,
    scene_scale: float,
    magnitude: Magnitude,
    draws: torch.Generator,
) -> Tensor:  # [len(names), T, 4, 4]
    """``make_trajectory`` for each family with the generator's own draws; an override still consumes
    its draw, so the other families' magnitudes do not change."""
    out = []
    for kind in names:
        lo, hi = MAGNITUDE_RANGES[kind]
        u = torch.rand((), generator=draws).item()
        m = magnitude_for(kind, magnitude)
        m = lo + (hi - lo) * u if m is None else m
        out.append(make_trajectory(kind, start, center, num_frames, scene_scale=scene_scale, magnitude=m))
    return torch.stack(out)


def resample(path: CameraPath, num_frames: int, height: int, width: int) -> CameraPath:
    """``path`` at ``num_frames`` frames (slerped poses, linearly interpolated K and time) and height x width."""
    c2w, K, time = path.c2w, path.K, path.time
    if num_frames != len(path):
        c2w = interpolate_poses(path.c2w, num_frames)
        pos = torch.linspace(0, len(path) - 1, num_frames)
        i0 = pos.floor().long().clamp(max=max(len(path) - 2, 0))
        i1 = (i0 + 1).clamp(max=len(path) - 1)
        frac = pos - i0
        K = K[i0] * (1 - frac[:, None, None]) + K[i1] * frac[:, None, None]
        if time is not None:
            time = time[i0] * (1 - frac) + time[i1] * frac
    if (path.height, path.width) != (height, width):
        K = resize_intrinsics(K, (path.height, path.width), (height, width))
    return CameraPath(c2w, K, width, height, time)


def place_path(
    path: CameraPath,  # already resampled
    anchor: Tensor | None,  # [4, 4] start view to attach the path's first camera to; None: keep the poses
    scale: float,  # translation multiplier when anchored (path_scale x scene scale)
) -> Tensor:  # [T, 4, 4]
    if anchor is None:
        return path.c2w
    rel = c2w_to_viewmat(path.c2w[:1]) @ path.c2w  # relative to its first camera
    rel[:, :3, 3] = rel[:, :3, 3] * scale
    return anchor.to(rel) @ rel


def path_time(path: CameraPath, dynamic: bool) -> Tensor:  # [T]
    """A path's own times when it has them (dynamic scenes), else 0 -> 1 (dynamic) or zeros (static)."""
    T = len(path)
    if not dynamic:
        return torch.zeros(T)
    if path.time is not None:
        return path.time.clone()
    return torch.linspace(0.0, 1.0, T) if T > 1 else torch.zeros(T)
