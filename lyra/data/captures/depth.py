"""Depth for capture frames: the sparse points projected, or an estimator's depth aligned to them.

- ``sparse_depth``: the points an image observes (COLMAP tracks; every point in front of the camera
  for formats without tracks) projected into the clip frame; the nearest point wins a pixel, the
  other pixels are 0 (unknown). Already in the capture's normalised units.
- ``align_estimate``: a monocular estimate brought to those units per frame. A relative estimator
  (disparity up to scale and shift) gets the affine map ``a * raw + b ~ 1 / sparse`` fitted by
  least squares on the pixels with a sparse depth (refitted once without the worst fifth, to shed
  mismatched points); a metric one gets the median ratio ``sparse / raw``. A frame with fewer than
  ``min_points`` sparse pixels falls back to its depth bounds (LLFF: the robust disparity range
  mapped onto [near, far]); without bounds either, the estimate keeps its own scale and the clip
  says its depth is not metric.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from lyra.data.captures.capture import Capture
from lyra.data.generators.depth import disparity_to_depth
from lyra.render.cameras import c2w_to_viewmat, world_to_pixels

MIN_POINTS = 8
TRIM_FRACTION = 0.2


def sparse_depth(
    capture: Capture,
    index: int,
    K: Tensor,  # [3, 3] intrinsics of the clip frame
    height: int,
    width: int,
) -> Tensor:  # [H, W] z-depth in normalised units, 0 = no point
    """The sparse points image ``index`` observes, z-buffered into a ``height`` x ``width`` frame."""
    depth = torch.zeros(height * width, dtype=torch.float64)
    if capture.points is None or not len(capture.points):
        return depth.reshape(height, width).float()
    pts = capture.points if capture.observations is None else capture.points[capture.observations[index]]
    uv, z = world_to_pixels(pts.double(), c2w_to_viewmat(capture.c2w[index].double()), K.double())
    col, row = uv[:, 0].floor().long(), uv[:, 1].floor().long()  # pixel centres at integer + 0.5
    keep = (z > 0) & (col >= 0) & (col < width) & (row >= 0) & (row < height)
    flat = row[keep] * width + col[keep]
    depth.fill_(float("inf")).scatter_reduce_(0, flat, z[keep], reduce="amin")
    return torch.where(torch.isinf(depth), torch.zeros_like(depth), depth).reshape(height, width).float()


def align_estimate(
    raw: Tensor,  # [H, W] the estimator's output at frame size
    sparse: Tensor,  # [H, W] sparse z-depth, 0 = unknown
    kind: Literal["relative_inverse", "metric"],
    bounds: Tensor | None = None,  # [2] near, far z-depth of this frame, if the capture states them
    min_points: int = MIN_POINTS,
) -> tuple[Tensor, bool]:  # depth [H, W] (0: no positive depth), True when in the cameras' units
    """One frame's estimate in the units of its sparse depth (the module docstring says how)."""
    known = sparse > 0
    if int(known.sum()) >= min_points:
        x, target = raw[known].double(), sparse[known].double()
        if kind == "metric":
            return (raw.double() * (target / x.clamp_min(1e-12)).median()).float(), True
        a, b = _fit_affine(x, 1.0 / target)
        inverse = a * raw.double() + b
        return torch.where(inverse > 0, 1.0 / inverse.clamp_min(1e-12), torch.zeros_like(inverse)).float(), True
    if bounds is not None and kind == "relative_inverse":
        near, far = (float(v) for v in bounds)
        return disparity_to_depth(raw[None].float(), near, far)[0], True
    if kind == "metric":
        return raw.float(), False
    return disparity_to_depth(raw[None].float(), 1.0, 20.0)[0], False


def _fit_affine(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:  # [M], [M] -> a, b of y ~ a x + b
    A = torch.stack([x, torch.ones_like(x)], dim=-1)
    sol = torch.linalg.lstsq(A, y[:, None]).solution[:, 0]
    residual = (A @ sol - y).abs()
    keep = residual <= torch.quantile(residual, 1.0 - TRIM_FRACTION)
    if int(keep.sum()) >= 2:
        sol = torch.linalg.lstsq(A[keep], y[keep, None]).solution[:, 0]
    return sol[0], sol[1]
