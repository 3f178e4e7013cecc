"""Where a method's error is: the pixels the lifted input frame covers, and its holes.

The input frame lifted with the depth the student reads (the ``input_warp`` baseline) covers most of
a target view; its holes (disocclusions, the world beyond the input's edges) are what a method must
supply from elsewhere. Splitting every method's score between the two says whether a student loses
on what its input already shows (rendering) or on what it does not (filling). PSNR pools the
squared error over the region's pixels of all truth frames; LPIPS averages its per-pixel map
(``LPIPS.spatial``) over them.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lyra.losses.lpips import LPIPS
from lyra.metrics.image import mse_to_psnr

REGIONS = ("covered", "holes")


@torch.no_grad()
def region_scores(
    pred: Tensor,  # [F, H, W, 3] a method's frames
    target: Tensor,  # [F, H, W, 3] what they are scored against
    holes: Tensor,  # [F, H, W] bool, True where the lifted input shows nothing
    lpips: LPIPS,
) -> dict[str, dict[str, float]]:  # region -> {psnr, lpips}; a region without pixels is left out
    pred, target = pred.clamp(0, 1).float(), target.float()
    err = (pred - target).square().mean(-1)  # [F, H, W]
    dist = lpips.spatial(pred, target)  # [F, H, W]
    out: dict[str, dict[str, float]] = {}
    for name, mask in zip(REGIONS, (~holes, holes)):
        if mask.any():
            out[name] = {"psnr": float(mse_to_psnr(err[mask].mean())), "lpips": float(dist[mask].mean())}
    return out
