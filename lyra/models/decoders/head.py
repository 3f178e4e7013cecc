"""The decoder's head: mixed tokens (and the latents themselves) -> raw channels of every grid Gaussian.

Lyra's head is one transposed 3D convolution: every token (a p x p patch of latent pixels) emits
its ``(p * density)**2`` Gaussians per output frame through a linear map, undoing the patching and,
with ``gaussian_frames="all"``, the codec's temporal compression. The optional latent skip maps every
latent pixel straight to its own Gaussians (a zero-initialised linear map beside the body): a latent
patch holds more colour detail than a narrow token can carry.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lyra.data.codecs.frames import frame_slot, unfold_frames
from lyra.models.decoders.activations import RAW_CHANNELS, colour_logits
from lyra.models.decoders.layout import GaussianLayout


class GaussianHead(nn.Module):
    """Tokens [S*V, D, T', h/p, w/p] (+ latents) -> raw Gaussians [B, M, V, F, gh, gw, 12].

    Args:
        width: the body's token width D.
        latent_channels: channels of the codec's latents.
        patch_size: latent pixels per token (each side).
        layout: the decoder's grid (density, which frames emit Gaussians, the codec's factors).
        latent_skip: also map every latent pixel to its Gaussians with a zero-initialised linear map.
    """

    def __init__(self, width: int, latent_channels: int, patch_size: int, layout: GaussianLayout,
                 latent_skip: bool) -> None:
        super().__init__()
        self.layout = layout
        k, kt = patch_size * layout.density, layout.time_factor if layout.gaussian_frames == "all" else 1
        self.proj = nn.ConvTranspose3d(width, RAW_CHANNELS, kernel_size=(kt, k, k), stride=(kt, k, k))
        self.skip = None
        if latent_skip:
            d = layout.density
            self.skip = nn.ConvTranspose3d(latent_channels, RAW_CHANNELS, kernel_size=(kt, d, d), stride=(kt, d, d))
            nn.init.zeros_(self.skip.weight)
            nn.init.zeros_(self.skip.bias)

    def _frames(self, raw: Tensor) -> Tensor:  # [N, 12, T'*kt, gh, gw] -> [N, 12, F, gh, gw]
        lay = self.layout
        if lay.gaussian_frames == "all":
            return unfold_frames(raw, lay.time_factor, lay.causal_first_frame)
        return raw

    def forward(
        self,
        tokens: Tensor,  # [B*M*V, D, T', h/p, w/p] mixed tokens of every target set
        latents: Tensor,  # [B, V, C, T', h, w] the latents they came from (the same for every set)
        sets: int,  # M
    ) -> Tensor:  # [B, M, V, F, gh, gw, 12]
        B, V, C, _, h, w = latents.shape
        gh, gw = h * self.layout.density, w * self.layout.density
        x = self.layout.latent_frames(tokens, 2)  # every token was mixed; only these frames emit Gaussians
        raw = self._frames(self.proj(x)).permute(0, 2, 3, 4, 1).reshape(B, sets, V, -1, gh, gw, RAW_CHANNELS)
        if self.skip is not None:
            lat = self.layout.latent_frames(latents, 3).reshape(B * V, C, -1, h, w).to(self.skip.weight.dtype)
            skip = self._frames(self.skip(lat)).permute(0, 2, 3, 4, 1).reshape(B, 1, V, -1, gh, gw, RAW_CHANNELS)
            raw = raw + skip
        return raw

    @torch.no_grad()
    def fit_skip(
        self,
        latents: Tensor,  # [S, C, T', h, w] latents of S source trajectories
        rgb: Tensor,  # [S, T, H, W, 3] the teacher's RGB decoding of them
        ridge: float = 1e-3,
    ) -> float:
        """Set the latent skip's colour weights to the least-squares linear readout of each
        Gaussian's block colour from its latent pixel (pre-activation, so 0.5 tanh(x) + 0.5 gives
        the colour back), and the token projection's colour outputs to zero. A data-driven start for
        any codec (the best linear fit; a VAE's is not exact). Returns the fit's RMS error (raw units)."""
        if self.skip is None:
            raise ValueError("fitting the latent skip needs a decoder built with latent_skip=True")
        lay = self.layout
        S, C, Tl, h, w = latents.shape
        k, kt = lay.density, self.skip.kernel_size[0]
        frames = lay.frame_indices(rgb.shape[1])
        block = F.avg_pool2d(rgb[:, frames].permute(0, 1, 4, 2, 3).reshape(-1, 3, *rgb.shape[2:4]), lay.space_factor // k)
        target = colour_logits(block.reshape(S, len(frames), 3, h * k, w * k).permute(0, 1, 3, 4, 2))  # [S, F, gh, gw, 3]
        # Where each Gaussian frame sits in the codec's folded layout: (latent frame, slot in it).
        if lay.gaussian_frames == "latent":
            lat_f = lay.latent_frames(torch.arange(Tl), 0)
            slot = torch.zeros(len(lat_f), dtype=torch.long)
        else:
            lat_f, slot = frame_slot(frames, lay.time_factor, lay.causal_first_frame)
        feats = latents.float()[:, :, lat_f]  # [S, C, F, h, w]: each Gaussian frame's latent pixel
        weight = self.skip.weight  # [C, 12, kt, k, k]
        self.proj.weight[:, 1:4] = 0  # the skip owns colour at the start
        self.proj.bias[1:4] = 0
        fits, means = [], []
        for f_slot in range(kt):
            rows = slot == f_slot
            if not rows.any():
                continue
            Xs = feats[:, :, rows].permute(0, 2, 3, 4, 1).reshape(-1, C)
            Xm = Xs.mean(0)
            Xc = Xs - Xm
            gram = Xc.T @ Xc
            gram += ridge * gram.diagonal().mean() * torch.eye(C)
            for dy in range(k):
                for dx in range(k):
                    Y = target[:, rows][:, :, dy::k, dx::k].reshape(-1, 3)
                    Ym = Y.mean(0)
                    W = torch.linalg.solve(gram, Xc.T @ (Y - Ym))  # [C, 3]
                    weight[:, 1:4, f_slot, dy, dx] = W.to(weight.dtype)
                    fits.append(((Xc @ W + Ym - Y) ** 2).mean())
                    means.append(Ym - Xm @ W)
        self.skip.bias[1:4] = torch.stack(means).mean(0).to(weight.dtype)  # the bias is shared
        return float(torch.stack(fits).mean().sqrt())
