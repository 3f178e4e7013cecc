"""Where to put a camera to see a whole scene: its robust centre and the distance that fits it.

``lyra render`` (its automatic paths) and ``lyra view`` (its first camera) frame scenes the same way.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


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
