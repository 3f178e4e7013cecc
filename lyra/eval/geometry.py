"""Depth errors of a student's Gaussians, for the test report (docs/evaluation.md, "Geometry")."""

from __future__ import annotations

import torch
from torch import Tensor


def median_log_error(
    pred: Tensor,  # [B, ...] depths
    target: Tensor,  # [B, ...] depths, 0 = unknown (not counted)
) -> Tensor:  # [B] median |log(pred / target)| over known targets, NaN where none
    err = (pred.clamp_min(1e-6).log() - target.clamp_min(1e-6).log()).abs().flatten(1)
    return torch.where(target.flatten(1) > 0, err, torch.full_like(err, float("nan"))).nanmedian(dim=1).values


def depth_errors(
    pred: Tensor,  # [B, ...] the Gaussians' depths on their source pixels
    target: Tensor,  # [B, ...] the clip's depth there, 0 = unknown
    given: Tensor | None = None,  # [B, ...] the input depth the decoder read there, 0 = none
) -> dict[str, Tensor]:  # values [B]
    """``depth_log_error``: the median |log| error of the Gaussians' depths. With ``given``, on the
    cells it reaches, the same for the given depth (``input_depth_log_error``) and for the Gaussians
    there (``depth_log_error_on_input``): below the first, the student corrected its input."""
    out = {"depth_log_error": median_log_error(pred, target)}
    if given is not None:
        reached = torch.where(given > 0, target, torch.zeros_like(target))
        out["input_depth_log_error"] = median_log_error(given, reached)
        out["depth_log_error_on_input"] = median_log_error(pred, reached)
    return out
