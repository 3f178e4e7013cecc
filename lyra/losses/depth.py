"""Depth losses. Estimated depth is only defined up to scale and shift, so by default both sides
are normalised per frame (median-centred, divided by the mean absolute deviation) before a
smooth-L1; metric depth (procedural teachers) is compared directly."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def normalize_depth(
    depth: Tensor,  # [..., H, W]
    mask: Tensor,  # [..., H, W] bool, pixels that count
    eps: float = 1e-6,
) -> Tensor:  # [..., H, W]
    flat = depth.flatten(-2)
    m = mask.flatten(-2)
    # Median over valid pixels: push invalid ones to +inf / -inf alternately is fragile; use nanmedian.
    med = torch.nanmedian(torch.where(m, flat, torch.nan), dim=-1, keepdim=True).values
    med = torch.nan_to_num(med, nan=0.0)
    centred = flat - med
    count = m.sum(-1, keepdim=True).clamp_min(1)
    mad = (centred.abs() * m).sum(-1, keepdim=True) / count
    return (centred / (mad + eps)).view_as(depth)


def depth_loss(
    pred: Tensor,  # [..., H, W] rendered expected depth
    target: Tensor,  # [..., H, W]
    mask: Tensor | None = None,  # [..., H, W] bool
    metric: bool = False,
) -> Tensor:  # scalar
    valid = torch.isfinite(target) & (target > 0)
    if mask is not None:
        valid = valid & mask
    target = torch.where(valid, target, torch.zeros_like(target))
    if not metric:
        pred, target = normalize_depth(pred, valid), normalize_depth(target, valid)
    per_px = F.smooth_l1_loss(pred, target, reduction="none")
    return (per_px * valid).sum() / valid.sum().clamp_min(1)
