"""Cameras for a whole scene: its robust centre and the distance that fits it, automatic paths around
it, a loaded path resampled, and a scene rendered along a path.

``lyra render`` (its automatic paths) and ``lyra view`` (its first camera) frame scenes the same way.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

from lyra.render.camera_path import CameraPath
from lyra.render.cameras import intrinsics_from_fov, look_at, resize_intrinsics
from lyra.render.gaussians import Gaussians
from lyra.render.renderer import BACKGROUNDS, GaussianRenderer
from lyra.render.trajectories import (
    LYRA_TRAJECTORIES,
    MAGNITUDE_RANGES,
    interpolate_poses,
    make_trajectory,
    orbit,
)

TRAJECTORIES = (*LYRA_TRAJECTORIES, "orbit")  # what an automatic path can be


def frame_scene(
    means: Tensor,  # [N, 3]
    fov_x_deg: float,
    width: int,
    height: int,
) -> tuple[Tensor, float]:  # centre [3], camera distance
    """Median centre (robust to stray splats) and the distance at which the 95 % sphere fits the view."""
    if means.shape[0] == 0:
        raise ValueError("the scene has no Gaussians; nothing to frame or render")
    center = means.median(dim=0).values
    dist = (means - center).norm(dim=-1).double()
    dist = dist[:: max(1, len(dist) // 1_000_000)]  # torch.quantile refuses inputs over 2^24 elements
    radius = torch.quantile(dist, 0.95).item()
    half_x = math.radians(fov_x_deg) / 2
    half_y = math.atan(math.tan(half_x) * height / width)
    return center, 1.1 * max(radius, 1e-3) / math.sin(min(half_x, half_y))


def auto_camera_path(
    kind: str,
    center: Tensor,  # [3]
    distance: float,
    num_frames: int,
    width: int,
    height: int,
    fov_x_deg: float = 60.0,
    magnitude: float | None = None,
    elevation_deg: float = 20.0,
) -> CameraPath:
    """``kind`` from a start view ``elevation_deg`` above ``center`` on its -z side (world up = -y);
    Lyra paths move by ``magnitude`` x ``distance`` (default: the middle of the family's range)."""
    if kind not in TRAJECTORIES:
        raise ValueError(f"unknown trajectory {kind!r}; choose one of {', '.join(TRAJECTORIES)}")
    K = intrinsics_from_fov(fov_x_deg, width, height)
    if kind == "orbit":
        c2w = orbit(center, distance, num_frames, elevation_deg=elevation_deg)
    else:
        el = math.radians(elevation_deg)
        eye = center.double() + distance * torch.tensor([0.0, -math.sin(el), -math.cos(el)], dtype=torch.float64)
        if magnitude is None:
            magnitude = sum(MAGNITUDE_RANGES[kind]) / 2
        start = look_at(eye, center.double())
        c2w = make_trajectory(kind, start, center, num_frames, scene_scale=distance, magnitude=magnitude)
    return CameraPath(c2w, K, width, height)


def resample_path(path: CameraPath, num_frames: int | None, size: tuple[int, int] | None) -> CameraPath:
    """A loaded path at another frame count (slerped poses, interpolated K) and/or image size."""
    c2w, K, w, h = path.c2w, path.K, path.width, path.height
    if num_frames is not None and num_frames != len(path):
        c2w = interpolate_poses(path.c2w, num_frames)
        pos = torch.linspace(0, len(path) - 1, num_frames)
        i0 = pos.floor().long().clamp(max=max(len(path) - 2, 0))
        i1 = (i0 + 1).clamp(max=len(path) - 1)
        frac = (pos - i0)[:, None, None]
        K = K[i0] * (1 - frac) + K[i1] * frac
    if size is not None and size != (w, h):
        K = resize_intrinsics(K, (h, w), (size[1], size[0]))
        w, h = size
    return CameraPath(c2w, K, w, h)


def render_path(
    gaussians: Gaussians,  # unbatched, N Gaussians
    path: CameraPath,
    background: Sequence[float] = BACKGROUNDS["white"],
    cameras_per_call: int = 8,
    device: str | torch.device = "cpu",
) -> Tensor:  # [T, H, W, 3] float in [0, 1]
    """Frames of a scene along a camera path with ``GaussianRenderer`` (the scene's own SH degree)."""
    if gaussians.batch_shape:
        raise ValueError(f"render_path takes one scene, got batch_shape {tuple(gaussians.batch_shape)}")
    renderer = GaussianRenderer(background=background, render_mode="RGB", camera_chunk=cameras_per_call).to(device)
    g = gaussians.to(device=device, dtype=torch.float32)
    return renderer.render_path(g, path.c2w.to(device), path.K.to(device), path.height, path.width).cpu()
