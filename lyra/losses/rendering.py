"""``RenderingLoss``: the one loss both decoders train with. It renders the Gaussians at the
target cameras (one Gaussian set per target view for dynamic decoders) and sums weighted MSE,
LPIPS, depth and opacity terms against the teacher's RGB decoding."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from lyra.data.clip import ClipBatch
from lyra.losses.depth import depth_loss
from lyra.losses.lpips import LPIPS
from lyra.render.cameras import c2w_to_viewmat
from lyra.render.gaussians import Gaussians
from lyra.render.rasterization import rasterization


class RenderingLoss(nn.Module):
    def __init__(
        self,
        mse_weight: float = 1.0,
        lpips_weight: float = 0.5,
        lpips_net: Literal["vgg", "alex"] = "vgg",
        lpips_weights_path: str | None = None,
        depth_weight: float = 0.05,
        opacity_weight: float = 0.1,
        opacity_regularizer: bool = False,
        background: tuple[float, float, float] = (1.0, 1.0, 1.0),
        backend: Literal["auto", "torch", "gsplat"] = "auto",
        rasterize_mode: Literal["classic", "antialiased"] = "classic",
    ) -> None:
        super().__init__()
        self.weights = {"mse": mse_weight, "lpips": lpips_weight, "depth": depth_weight, "opacity": opacity_weight}
        self.opacity_regularizer = opacity_regularizer  # the reference enables it only in pruning stages
        self.lpips = LPIPS(lpips_net, weights_path=lpips_weights_path) if lpips_weight > 0 else None
        self.register_buffer("background", torch.tensor(background, dtype=torch.float32), persistent=False)
        self.backend = backend
        self.rasterize_mode = rasterize_mode

    def render(
        self,
        gaussians: Gaussians,  # batch [B] (one set per scene) or [B, M] (one set per target view)
        c2w: Tensor,  # [B, M, 4, 4]
        K: Tensor,  # [B, M, 3, 3]
        height: int,
        width: int,
    ) -> tuple[Tensor, Tensor, Tensor]:  # rgb [B, M, H, W, 3], depth [B, M, H, W], alpha [B, M, H, W]
        B, M = c2w.shape[:2]
        viewmats = c2w_to_viewmat(c2w)
        g = gaussians
        per_view = len(g.batch_shape) == 2
        if per_view:
            if tuple(g.batch_shape) != (B, M):
                raise ValueError(f"per-target Gaussians have batch {tuple(g.batch_shape)} but there are {(B, M)} "
                                 "target views")
            viewmats, K = viewmats[:, :, None], K[:, :, None]
        bg = self.background.to(g.means.dtype).expand(*viewmats.shape[:-2], 3)
        out, alpha, _ = rasterization(g.means, g.quats, g.scales, g.opacities, g.colors, viewmats, K, width, height,
                                      backgrounds=bg, render_mode="RGB+ED", backend=self.backend,
                                      rasterize_mode=self.rasterize_mode)
        if per_view:
            out, alpha = out[:, :, 0], alpha[:, :, 0]
        return out[..., :3], out[..., 3], alpha[..., 0]

    def forward(self, gaussians: Gaussians, batch: ClipBatch) -> tuple[Tensor, dict[str, Tensor], dict[str, Tensor]]:
        """Returns (total loss, every term (weighted terms sum to the total), renders)."""
        B, V, F, H, W, _ = batch.rgb.shape
        rgb, depth, alpha = self.render(gaussians, batch.c2w.reshape(B, V * F, 4, 4), batch.K.reshape(B, V * F, 3, 3),
                                        H, W)
        target = batch.rgb.reshape(B, V * F, H, W, 3)
        terms: dict[str, Tensor] = {"mse": ((rgb - target) ** 2).mean()}
        if self.lpips is not None:
            terms["lpips"] = self.lpips(rgb, target).mean()
        if batch.depth is not None and self.weights["depth"] > 0:
            terms["depth"] = depth_loss(depth, batch.depth.reshape(B, V * F, H, W).to(depth.dtype),
                                        mask=alpha > 0.5, metric=batch.depth_is_metric)
        if self.opacity_regularizer:
            terms["opacity"] = gaussians.opacities.mean()
        total = sum(self.weights[k] * v for k, v in terms.items())
        return total, terms, {"rgb": rgb, "depth": depth, "alpha": alpha, "target": target}
