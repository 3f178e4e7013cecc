"""PSNR, SSIM (11-px Gaussian window, sigma 1.5) and LPIPS per frame, channels-last in [0, 1]."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn
from torchmetrics.functional.image import structural_similarity_index_measure

from lyra.losses.lpips import LPIPS


def mse_to_psnr(mse: Tensor) -> Tensor:  # [...] mean squared error of images in [0, 1] -> [...] dB
    return -10 * torch.log10(mse.clamp_min(1e-10))


def psnr(pred: Tensor, target: Tensor) -> Tensor:  # [..., H, W, 3] x2 -> [...] dB
    return mse_to_psnr(((pred.clamp(0, 1) - target) ** 2).flatten(-3).mean(-1))


def ssim(pred: Tensor, target: Tensor) -> Tensor:  # [..., H, W, 3] x2 -> [...]
    lead = pred.shape[:-3]
    p = pred.clamp(0, 1).reshape(-1, *pred.shape[-3:]).permute(0, 3, 1, 2).float()
    t = target.reshape(-1, *target.shape[-3:]).permute(0, 3, 1, 2).float()
    s = structural_similarity_index_measure(p, t, gaussian_kernel=True, kernel_size=11, sigma=1.5,
                                            data_range=1.0, reduction="none")
    return s.reshape(lead)


class ImageMetrics(nn.Module):
    """Per-frame PSNR / SSIM / LPIPS; LPIPS weights come from the local LPIPS module."""

    def __init__(self, lpips_net: Literal["vgg", "alex"] = "vgg", lpips_weights_path: str | None = None):
        super().__init__()
        self.lpips = LPIPS(lpips_net, weights_path=lpips_weights_path)

    @torch.no_grad()
    def forward(self, pred: Tensor, target: Tensor) -> dict[str, Tensor]:  # [..., H, W, 3] -> each [...]
        pred = pred.clamp(0, 1).float()
        target = target.float()
        return {"psnr": psnr(pred, target), "ssim": ssim(pred, target), "lpips": self.lpips(pred, target)}
