"""Token embeddings of the decoder: latent patches, Plucker rays and scene time, all folded to
the latent grid (the codec's temporal compression is undone by stacking frames as channels)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from lyra.render.cameras import c2w_to_viewmat, plucker_rays, resize_intrinsics


def time_features(t: Tensor) -> Tensor:  # [...] in [0, 1] -> [..., 3]
    """[t, cos t, sin t] as in the reference (t scaled to a quarter turn so cos/sin stay distinct)."""
    a = t * (math.pi / 2)
    return torch.stack([t, torch.cos(a), torch.sin(a)], dim=-1)


def relative_cameras(c2w: Tensor) -> tuple[Tensor, Tensor]:  # [B, V, T, 4, 4] -> (rel c2w, ref c2w [B, 4, 4])
    """Express all cameras in the frame of the first camera of the first view."""
    ref = c2w[:, 0, 0]
    rel = c2w_to_viewmat(ref)[:, None, None] @ c2w
    return rel, ref


def latent_rays(
    c2w: Tensor,  # [B, V, T, 4, 4]
    K: Tensor,  # [B, V, T, 3, 3] for the pixel resolution
    pixel_size: tuple[int, int],  # (H, W)
    latent_size: tuple[int, int],  # (h, w)
) -> Tensor:  # [B, V, T, h, w, 6] Plucker rays of the latent-pixel centres
    K_lat = resize_intrinsics(K, pixel_size, latent_size)
    return plucker_rays(c2w, K_lat, latent_size[0], latent_size[1])


class PatchEmbed3d(nn.Module):
    """[N, C, T', h, w] -> [N, T'*(h/p)*(w/p), dim] with a (1, p, p) conv; optional zero init so a
    conditioning branch starts as a no-op."""

    def __init__(self, in_channels: int, dim: int, patch: int, zero_init: bool = False, norm: bool = False):
        super().__init__()
        self.patch = patch
        self.proj = nn.Conv3d(in_channels, dim, kernel_size=(1, patch, patch), stride=(1, patch, patch))
        self.norm = nn.LayerNorm(dim) if norm else nn.Identity()
        if zero_init:
            nn.init.zeros_(self.proj.weight)
            nn.init.zeros_(self.proj.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.proj(x).flatten(2).transpose(1, 2))
