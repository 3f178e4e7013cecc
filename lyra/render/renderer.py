"""``GaussianRenderer``: the one stateful user of :func:`lyra.render.rasterization`.

It owns what every caller would otherwise repeat: background colour, backend, rasterize mode,
SH degree, render mode and camera chunking (at most ``camera_chunk`` cameras are rasterized at a
time, so memory stays bounded however many views are asked for). The student, its validation
visuals, the evaluation protocol, the ``lyra`` tools and the benchmarks all render through it;
the rendering loss only ever sees images.

Cameras come as camera-to-world ``c2w`` (the data contract, docs/conventions.md); the renderer
converts them to gsplat's world-to-camera ``viewmats``.
"""

from __future__ import annotations

from typing import Literal, NamedTuple, Sequence

import torch
from torch import Tensor, nn

from lyra.render.cameras import c2w_to_viewmat
from lyra.render.gaussians import Gaussians
from lyra.render.rasterization import Backend, RasterizeMode, rasterization

BACKGROUNDS = {"white": (1.0, 1.0, 1.0), "black": (0.0, 0.0, 0.0)}  # the named backgrounds of the commands


class Renders(NamedTuple):
    rgb: Tensor  # [B, M, H, W, 3]
    depth: Tensor | None  # [B, M, H, W] expected depth (None when render_mode is "RGB")
    alpha: Tensor  # [B, M, H, W] accumulated opacity


class GaussianRenderer(nn.Module):
    """Renders batches of Gaussian scenes at batches of cameras.

    Args:
        background: RGB in [0, 1] composited behind the Gaussians (Lyra renders on white).
        backend: ``"torch"`` (lyra's own differentiable rasterizer, any device), ``"cpp"`` (the same
            with its compositing compiled for the CPU), ``"gsplat"`` (CUDA kernels) or ``"auto"``
            (gsplat for CUDA tensors when its kernels load; for CPU tensors the compiled compositor
            when it builds, else torch).
        rasterize_mode: ``"classic"`` or ``"antialiased"`` (gsplat's meaning).
        render_mode: ``"RGB"`` or ``"RGB+ED"`` (colour plus expected depth, what the losses use).
        sh_degree: SH degree to evaluate; ``None`` uses the Gaussians' own (plain RGB: none).
        camera_chunk: cameras rasterized per call; bounds peak memory for many target views.
        near_plane: Gaussians nearer than this (camera z) are culled.
        far_plane: Gaussians farther than this are culled.
        eps2d: added to the projected 2D covariance (gsplat's low-pass filter, in pixels^2).
        train_background: ``"fixed"``: always ``background``; ``"random"``: while the module is in
            training mode, every rendered view gets its own uniform random background colour, so a
            loss against opaque targets charges transparency whatever the colour behind it (3DGS's
            random background; on a fixed white one, a half-transparent Gaussian passes for a pale
            one). Evaluation (``.eval()``) always renders on ``background``.
    """

    def __init__(
        self,
        background: Sequence[float] = (1.0, 1.0, 1.0),
        backend: Backend = "auto",
        rasterize_mode: RasterizeMode = "classic",
        render_mode: Literal["RGB", "RGB+ED"] = "RGB+ED",
        sh_degree: int | None = None,
        camera_chunk: int = 8,
        near_plane: float = 0.01,
        far_plane: float = 1e10,
        eps2d: float = 0.3,
        train_background: Literal["fixed", "random"] = "fixed",
    ) -> None:
        super().__init__()
        if len(background) != 3 or not all(0.0 <= float(c) <= 1.0 for c in background):
            raise ValueError(f"background must be 3 values in [0, 1] (RGB), got {list(background)}")
        if render_mode not in ("RGB", "RGB+ED"):
            raise ValueError(f"render_mode must be 'RGB' or 'RGB+ED', got {render_mode!r}")
        if train_background not in ("fixed", "random"):
            raise ValueError(f"train_background must be 'fixed' or 'random', got {train_background!r}")
        if camera_chunk < 1:
            raise ValueError(f"camera_chunk must be >= 1, got {camera_chunk}")
        if not 0 <= near_plane < far_plane:
            raise ValueError(f"need 0 <= near_plane < far_plane, got near_plane={near_plane}, far_plane={far_plane}")
        self.register_buffer("background", torch.tensor([float(c) for c in background]), persistent=False)
        self.backend, self.rasterize_mode, self.render_mode = backend, rasterize_mode, render_mode
        self.sh_degree, self.camera_chunk = sh_degree, camera_chunk
        self.near_plane, self.far_plane, self.eps2d = near_plane, far_plane, eps2d
        self.train_background = train_background

    def forward(
        self,
        gaussians: Gaussians,  # batch [B] (one scene per camera row) or [B, M] (one set per camera)
        c2w: Tensor,  # [B, M, 4, 4]
        K: Tensor,  # [B, M, 3, 3] pixel intrinsics for (height, width)
        height: int,
        width: int,
    ) -> Renders:
        if c2w.ndim != 4 or c2w.shape[-2:] != (4, 4) or tuple(K.shape) != tuple(c2w.shape[:2]) + (3, 3):
            raise ValueError(f"c2w must be [B, M, 4, 4] and K [B, M, 3, 3]; got {tuple(c2w.shape)} and {tuple(K.shape)}")
        B, M = c2w.shape[:2]
        g = gaussians
        per_view = len(g.batch_shape) == 2
        if tuple(g.batch_shape) not in ((B,), (B, M)):
            raise ValueError(f"Gaussians with batch {tuple(g.batch_shape)} cannot be rendered at cameras [B={B}, "
                             f"M={M}]: pass one set per scene [B] or one per camera [B, M]")
        viewmats = c2w_to_viewmat(c2w.to(g.dtype))
        K = K.to(g.dtype)
        sh_degree = g.sh_degree if self.sh_degree is None else self.sh_degree
        parts = []
        for lo in range(0, M, self.camera_chunk):
            hi = min(M, lo + self.camera_chunk)
            if per_view:  # one camera per Gaussian set: cameras become a [B, m, 1] batch
                sub = g[:, lo:hi]
                vm, ks = viewmats[:, lo:hi, None], K[:, lo:hi, None]
            else:
                sub, vm, ks = g, viewmats[:, lo:hi], K[:, lo:hi]
            bg = self.background.to(g.dtype).expand(*vm.shape[:-2], 3)
            if self.training and self.train_background == "random":
                bg = torch.rand(bg.shape, dtype=bg.dtype, device=bg.device)
            out, alpha, _ = rasterization(
                sub.means, sub.quats, sub.scales, sub.opacities, sub.colors, vm, ks, width, height,
                near_plane=self.near_plane, far_plane=self.far_plane, eps2d=self.eps2d, sh_degree=sh_degree, backgrounds=bg,
                render_mode=self.render_mode, backend=self.backend, rasterize_mode=self.rasterize_mode)
            if per_view:
                out, alpha = out[:, :, 0], alpha[:, :, 0]
            parts.append((out, alpha))
        out = torch.cat([p[0] for p in parts], dim=1) if len(parts) > 1 else parts[0][0]
        alpha = torch.cat([p[1] for p in parts], dim=1) if len(parts) > 1 else parts[0][1]
        depth = out[..., 3] if self.render_mode == "RGB+ED" else None
        return Renders(out[..., :3], depth, alpha[..., 0])

    @torch.no_grad()
    def render_path(
        self,
        gaussians: Gaussians,  # unbatched: one scene, N Gaussians
        c2w: Tensor,  # [T, 4, 4]
        K: Tensor,  # [T, 3, 3]
        height: int,
        width: int,
    ) -> Tensor:  # [T, H, W, 3] clamped to [0, 1]
        """Frames of one scene along a camera path (no gradients), e.g. for videos."""
        if gaussians.batch_shape:
            raise ValueError(f"render_path takes one scene, got batch_shape {tuple(gaussians.batch_shape)}")
        return self(gaussians[None], c2w[None], K[None], height, width).rgb[0].clamp(0.0, 1.0)

    def extra_repr(self) -> str:
        return (f"background={self.background.tolist()}, backend={self.backend!r}, "
                f"rasterize_mode={self.rasterize_mode!r}, render_mode={self.render_mode!r}, "
                f"sh_degree={self.sh_degree}, camera_chunk={self.camera_chunk}, "
                f"train_background={self.train_background!r}")
