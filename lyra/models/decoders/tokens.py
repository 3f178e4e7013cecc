"""The decoder's tokens: latent patches with their Plucker rays, and (dynamic decoders) scene time.

Every frame-level input (rays, times, the input depth's features) is folded to the latent grid the
way the codec folds frames (``lyra.data.codecs.frames``) and stacked as channels, so one token of
a latent frame sees all the frames its latents encode.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from lyra.data.codecs.frames import fold_frames
from lyra.render.cameras import c2w_to_viewmat, plucker_rays, resize_intrinsics


def time_features(t: Tensor) -> Tensor:  # [...] in [0, 1] -> [..., 3]
    """[t, cos t, sin t] as in the reference (t scaled to a quarter turn so cos/sin stay distinct)."""
    a = t * (math.pi / 2)
    return torch.stack([t, torch.cos(a), torch.sin(a)], dim=-1)


def relative_cameras(c2w: Tensor) -> Tensor:  # [B, V, T, 4, 4] -> [B, V, T, 4, 4]
    """All cameras in the frame of the first camera of the first trajectory."""
    return c2w_to_viewmat(c2w[:, 0, 0])[:, None, None] @ c2w


def latent_rays(
    c2w: Tensor,  # [B, V, T, 4, 4]
    K: Tensor,  # [B, V, T, 3, 3] for the pixel resolution
    pixel_size: tuple[int, int],  # (H, W)
    latent_size: tuple[int, int],  # (h, w)
) -> Tensor:  # [B, V, T, h, w, 6] Plucker rays of the latent-pixel centres
    K_lat = resize_intrinsics(K, pixel_size, latent_size)
    return plucker_rays(c2w, K_lat, latent_size[0], latent_size[1])


def fold_to_latent_grid(
    x: Tensor,  # [N, T, h, w, c] per-frame features
    time_factor: int,
    causal_first_frame: bool,
) -> Tensor:  # [N, time_factor * c, T', h, w]: each latent frame's frames stacked as channels
    N, T, h, w, c = x.shape
    folded = fold_frames(x, time_factor, causal_first_frame)  # [N, T', tf, h, w, c]
    return folded.permute(0, 2, 5, 1, 3, 4).reshape(N, time_factor * c, -1, h, w)


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


class TokenEmbed(nn.Module):
    """Latents + cameras -> tokens, each trajectory embedded on its own (Lyra): a 1 x p x p patch
    embed of the latents with LayerNorm, plus the latent pixels' Plucker rays (relative to the first
    camera, so the tokens are unchanged by a rigid motion of the world) through a zero-initialised
    patch embed."""

    def __init__(self, latent_channels: int, width: int, patch_size: int, time_factor: int, space_factor: int,
                 causal_first_frame: bool) -> None:
        super().__init__()
        self.time_factor, self.space_factor, self.causal_first_frame = time_factor, space_factor, causal_first_frame
        self.latent_embed = PatchEmbed3d(latent_channels, width, patch_size, norm=True)
        self.ray_embed = PatchEmbed3d(6 * time_factor, width, patch_size, zero_init=True)

    def forward(
        self,
        latents: Tensor,  # [B, V, C, T', h, w]
        c2w: Tensor,  # [B, V, T, 4, 4]
        K: Tensor,  # [B, V, T, 3, 3]
    ) -> Tensor:  # [B, V, L, D], L = T' (h/p) (w/p)
        B, V, C, Tl, h, w = latents.shape
        T = c2w.shape[2]
        dtype = self.latent_embed.proj.weight.dtype
        rays = latent_rays(relative_cameras(c2w), K, (h * self.space_factor, w * self.space_factor), (h, w))
        rays = fold_to_latent_grid(rays.reshape(B * V, T, h, w, 6), self.time_factor, self.causal_first_frame)
        tokens = self.latent_embed(latents.reshape(B * V, C, Tl, h, w).to(dtype)) + self.ray_embed(rays.to(dtype))
        return tokens.reshape(B, V, *tokens.shape[1:])


class TimeEmbed(nn.Module):
    """The dynamic decoder's time conditioning (Lyra): every source frame's time through a
    zero-initialised patch embed, and one target time per Gaussian set through a zero-initialised
    linear map, both as [t, cos t, sin t]. Zero at the start: a dynamic decoder built from a static
    one's weights begins as that static decoder."""

    def __init__(self, width: int, patch_size: int, time_factor: int, causal_first_frame: bool) -> None:
        super().__init__()
        self.time_factor, self.causal_first_frame = time_factor, causal_first_frame
        self.source = PatchEmbed3d(3 * time_factor, width, patch_size, zero_init=True)
        self.target = nn.Linear(3, width)
        nn.init.zeros_(self.target.weight)
        nn.init.zeros_(self.target.bias)

    def forward(
        self,
        tokens: Tensor,  # [B, V, L, D]
        time: Tensor,  # [B, V, T] scene time of every source frame
        target_time: Tensor,  # [B, M]
        latent_size: tuple[int, int],  # (h, w)
    ) -> Tensor:  # [B, M, V, L, D]
        B, V, T = time.shape
        h, w = latent_size
        dtype = self.target.weight.dtype
        feats = time_features(time).reshape(B * V, T, 1, 1, 3).expand(B * V, T, h, w, 3)
        src = self.source(fold_to_latent_grid(feats, self.time_factor, self.causal_first_frame).to(dtype))
        tgt = self.target(time_features(target_time).to(dtype))  # [B, M, D]
        return (tokens + src.reshape(tokens.shape))[:, None] + tgt[:, :, None, None, :]
