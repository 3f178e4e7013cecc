"""Lyra's six camera trajectory families, plus pose interpolation.

Every family starts at a given view and keeps the camera looking at the scene centre. Movement
magnitudes are drawn from the ranges of the reference setup (times ``scene_scale``):

=========  ==================================================================
left/right  sideways (camera x axis) by 0.2-0.3
up          along the camera's up (-y) by 0.1-0.2
zoom_in     towards the centre by 0.3-0.4 (never past 90 % of the distance)
zoom_out    away from the centre by 0.3-0.4
spiral      two clockwise turns (as seen on screen) of radii 0.15 (x) x 0.10 (y)
            while dollying towards the centre by 0.4-0.6
=========  ==================================================================
"""

from __future__ import annotations

import math
from typing import Literal, get_args

import torch
from torch import Tensor

from lyra.render.cameras import look_at
from lyra.render.rotations import quat_slerp, quat_to_rotmat, rotmat_to_quat

TrajectoryKind = Literal["left", "right", "up", "zoom_in", "zoom_out", "spiral"]
LYRA_TRAJECTORIES: tuple[str, ...] = get_args(TrajectoryKind)

MAGNITUDE_RANGES: dict[str, tuple[float, float]] = {
    "left": (0.2, 0.3),
    "right": (0.2, 0.3),
    "up": (0.1, 0.2),
    "zoom_in": (0.3, 0.4),
    "zoom_out": (0.3, 0.4),
    "spiral": (0.4, 0.6),
}
SPIRAL_RADII = (0.15, 0.10)
SPIRAL_TURNS = 2.0


def _smoothstep(t: Tensor) -> Tensor:
    # Zero velocity at both ends: generated videos start and stop gently.
    return t * t * (3 - 2 * t)


def make_trajectory(
    kind: TrajectoryKind | str,
    start_c2w: Tensor,  # [4, 4] first view
    center: Tensor,  # [3] scene centre the camera keeps looking at
    num_frames: int,
    scene_scale: float = 1.0,
    magnitude: float | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:  # [T, 4, 4] camera-to-world
    """Camera path of one Lyra trajectory family; frame 0 is exactly ``look_at`` from the start eye."""
    if kind not in MAGNITUDE_RANGES:
        raise ValueError(f"unknown trajectory kind {kind!r}; choose one of {LYRA_TRAJECTORIES}")
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if tuple(start_c2w.shape) != (4, 4):
        raise ValueError(f"start_c2w must be one [4, 4] camera-to-world pose, got {tuple(start_c2w.shape)}")
    if not scene_scale > 0:
        raise ValueError(f"scene_scale must be > 0, got {scene_scale}")
    if magnitude is not None and not magnitude >= 0:
        raise ValueError(f"magnitude must be >= 0 (None draws it from {MAGNITUDE_RANGES[kind]}), got {magnitude}")
    if magnitude is None:
        lo, hi = MAGNITUDE_RANGES[kind]
        u = torch.rand((), generator=generator).item()
        magnitude = lo + (hi - lo) * u
    dist = magnitude * scene_scale
    start_c2w = start_c2w.to(torch.float64)
    center = torch.as_tensor(center, dtype=torch.float64)
    eye0 = start_c2w[:3, 3]
    # Work in the start camera's own axes: x right, y down, z towards the centre.
    x_ax, y_ax = start_c2w[:3, 0], start_c2w[:3, 1]
    to_center = center - eye0
    if to_center.norm() < 1e-9:
        raise ValueError("make_trajectory: the start camera sits at `center`; place it away from the centre "
                         "it looks at")
    z_ax = to_center / to_center.norm()
    t = torch.linspace(0.0, 1.0, num_frames, dtype=torch.float64)
    s = _smoothstep(t)[:, None]
    if kind == "left":
        eye = eye0 - s * dist * x_ax
    elif kind == "right":
        eye = eye0 + s * dist * x_ax
    elif kind == "up":
        eye = eye0 - s * dist * y_ax
    elif kind == "zoom_in":
        dist = min(dist, 0.9 * to_center.norm().item())
        eye = eye0 + s * dist * z_ax
    elif kind == "zoom_out":
        eye = eye0 - s * dist * z_ax
    else:  # spiral
        rx, ry = (r * scene_scale for r in SPIRAL_RADII)
        theta = 2 * math.pi * SPIRAL_TURNS * t[:, None]
        # Starts at the bottom of the ellipse and goes left, up, right: clockwise on screen (y down).
        ox = -rx * torch.sin(theta)
        oy = -ry * (1 - torch.cos(theta))
        dolly = min(dist, 0.9 * to_center.norm().item())
        eye = eye0 + ox * x_ax + oy * y_ax + s * dolly * z_ax
    up = -start_c2w[:3, 1]  # keep the start view's roll
    return look_at(eye, center.expand_as(eye), up=up).to(torch.float32)


def orbit(
    center: Tensor,  # [3]
    radius: float,
    num_frames: int,
    elevation_deg: float = 15.0,
    start_azimuth_deg: float = 0.0,
    sweep_deg: float = 360.0,
) -> Tensor:  # [T, 4, 4]
    """A horizontal orbit around ``center`` (world up = -y), for previews and videos."""
    if num_frames < 1 or not radius > 0:
        raise ValueError(f"orbit needs num_frames >= 1 and radius > 0, got {num_frames} and {radius}")
    if abs(elevation_deg) >= 90.0:
        raise ValueError(f"orbit elevation_deg must lie in (-90, 90) (the view would be parallel to up), "
                         f"got {elevation_deg}")
    center = torch.as_tensor(center, dtype=torch.float64)
    az = torch.deg2rad(start_azimuth_deg + torch.linspace(0, sweep_deg, num_frames + 1, dtype=torch.float64)[:-1])
    el = math.radians(elevation_deg)
    offs = torch.stack(
        [radius * math.cos(el) * torch.sin(az), torch.full_like(az, -radius * math.sin(el)),
         -radius * math.cos(el) * torch.cos(az)], dim=-1)
    eye = center + offs
    return look_at(eye, center.expand_as(eye)).to(torch.float32)


def interpolate_poses(
    key_c2w: Tensor,  # [K, 4, 4] key poses
    num_frames: int,
) -> Tensor:  # [T, 4, 4]
    """Resample a pose path to any frame count: slerp on rotations, linear on positions."""
    if key_c2w.ndim != 3 or key_c2w.shape[1:] != (4, 4) or key_c2w.shape[0] < 1:
        raise ValueError(f"key_c2w must be [K, 4, 4] with K >= 1, got {tuple(key_c2w.shape)}")
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    k = key_c2w.shape[0]
    if k == 1:
        return key_c2w.expand(num_frames, 4, 4).clone()
    pos = torch.linspace(0, k - 1, num_frames, dtype=torch.float64, device=key_c2w.device)
    i0 = pos.floor().long().clamp(max=k - 2)
    frac = (pos - i0).to(key_c2w.dtype)
    q = rotmat_to_quat(key_c2w[:, :3, :3])
    qi = quat_slerp(q[i0], q[i0 + 1], frac)
    ti = key_c2w[i0, :3, 3] * (1 - frac[:, None]) + key_c2w[i0 + 1, :3, 3] * frac[:, None]
    out = torch.zeros(num_frames, 4, 4, dtype=key_c2w.dtype, device=key_c2w.device)
    out[:, :3, :3] = quat_to_rotmat(qi)
    out[:, :3, 3] = ti
    out[:, 3, 3] = 1.0
    return out
