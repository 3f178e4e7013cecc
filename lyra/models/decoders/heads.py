"""Heads that turn the body's tokens into raw Gaussian channels.

Lyra's head is one transposed 3D convolution: every token (a p x p patch of latent pixels)
emits its ``(p * density)**2`` Gaussians through a linear map. With a narrow body (the CPU
recipes' width 96 against 2 x 4 x 4 x 12 = 192 outputs per token at density 2) that map cannot
give neighbouring Gaussians independent depths, opacities or scales. ``ConvGaussianHead`` first
brings the tokens back to the latent grid, adds the latent pixel itself, and mixes a 3 x 3
neighbourhood twice before the per-Gaussian readout: detail at the latent pixel's scale, for a
few percent of a training step on CPU (docs/benchmarks.md, "Student quality").
"""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn

from lyra.models.decoders.activations import RAW_CHANNELS

HeadKind = Literal["linear", "conv"]


class ConvGaussianHead(nn.Module):
    """Body tokens + latents -> raw Gaussians, through a feature map at latent resolution.

    Args:
        width: the body's token width D.
        latent_channels: channels of the codec's latents.
        hidden: channels of the latent-resolution feature map.
        patch_size: latent pixels per token (each side).
        density: Gaussians per latent pixel (each side).
        frames_per_latent: output frames per latent frame (1, or the codec's time factor when
            Gaussians are emitted for every frame).
        num_blocks: residual 3 x 3 convolutions at latent resolution.
    """

    def __init__(self, width: int, latent_channels: int, hidden: int, patch_size: int, density: int,
                 frames_per_latent: int = 1, num_blocks: int = 2) -> None:
        super().__init__()
        p, kt = patch_size, frames_per_latent
        self.frames_per_latent = kt
        self.unpatch = nn.ConvTranspose3d(width, hidden, kernel_size=(kt, p, p), stride=(kt, p, p))
        self.latent_in = nn.Conv3d(latent_channels, hidden, kernel_size=1)
        self.blocks = nn.ModuleList(
            nn.Conv3d(hidden, hidden, kernel_size=(1, 3, 3), padding=(0, 1, 1)) for _ in range(num_blocks))
        for conv in self.blocks:  # each block starts as the identity
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)
        self.out = nn.ConvTranspose3d(hidden, RAW_CHANNELS, kernel_size=(1, density, density),
                                      stride=(1, density, density))

    def forward(
        self,
        tokens: Tensor,  # [N, D, T', h/p, w/p] the body's output on the token grid
        latents: Tensor,  # [N, C, T', h, w] the same frames' latents
    ) -> Tensor:  # [N, 12, T'*kt, h*density, w*density]
        x = self.unpatch(tokens)
        x = x + self.latent_in(latents).repeat_interleave(self.frames_per_latent, dim=2)
        for conv in self.blocks:
            x = x + conv(F.gelu(x))
        return self.out(F.gelu(x))
