"""DCTCodec: a weight-free, deterministic, exactly linear stand-in for a video VAE.

How a latent pixel is made (time_factor ``tf``, space_factor ``sf``):

1. colour: RGB - 0.5 is rotated into an orthonormal opponent space (luma, red-blue, green-magenta),
   so most energy lands in luma and squared errors are the same as in RGB;
2. time: frames are grouped like a causal video VAE (first frame alone, then groups of ``tf``;
   or only groups of ``tf`` when not causal) and each group gets an orthonormal temporal DCT;
3. space: every ``sf`` x ``sf`` block of every (colour, temporal) component gets a 2D DCT;
4. selection: of the ``3 * tf * sf * sf`` coefficients of a block we keep the ``latent_channels``
   with the largest *expected* amplitude under a fixed spectral model of rendered video (power-law
   spatial spectrum, a motion-dependent temporal roll-off, colour weights; fitted once to clips of
   textured primitives on checkered floors). Within one (colour, temporal) component this is the
   JPEG zig-zag order; across components it decides e.g. how much chroma or motion to keep;
5. normalisation: each kept coefficient is divided by its model amplitude, so latents are roughly
   zero-mean and unit-scale per channel, like a normalised diffusion-VAE latent.

The lone first frame is coded like a static group (its coefficients are scaled by ``sqrt(tf)``), so
latent frame 0 has the statistics of the others; channels of temporal frequency > 0 are zero in it.
Every step is an orthogonal transform or a coordinate selection, so ``decode`` is the least-squares
inverse: ``encode(decode(z)) == z`` for every encoded ``z`` and ``decode(encode(.))`` is an
orthogonal projection (before the final clamp to [0, 1]). With all ``3 * tf * sf**2`` channels the
codec is lossless.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from lyra.data.codecs.base import VideoCodec

# Round trip >= 30 dB on procedural clips at 128 px and above (see benchmarks/codec.py).
DEFAULT_LATENT_CHANNELS = 128

# Spectral model of rendered video. Expected |coefficient| at normalised frequencies (cycles per
# sample; spatial DC counts as index _DC_OFFSET) f_t in time and f_s = |(f_y, f_x)| in space:
#   colour * (f_s^2 + _SPATIAL_FLOOR^2)^(-_SPATIAL_EXPONENT / 2)
#          * (1 + (f_t / (_MOTION_SPEED * (f_s + _MOTION_FLOOR)))^2)^(-_TEMPORAL_EXPONENT / 2)
# i.e. a power-law image spectrum whose fine detail decorrelates fastest in time (camera motion).
# Fitted once (energy-weighted log least squares) to ProceduralWorld clips and ray-cast checkered
# scenes at 128 px with tf=4, sf=8; in normalised frequencies it carries over to other factors.
_COLOUR_AMPLITUDE = (0.0243, 0.0122, 0.0078)  # luma, red-blue, green-magenta (pixel units)
_SPATIAL_EXPONENT, _SPATIAL_FLOOR, _DC_OFFSET = 1.33, 0.016, 0.115
_MOTION_SPEED, _MOTION_FLOOR, _TEMPORAL_EXPONENT = 0.23, 0.010, 0.6


def dct_matrix(n: int) -> Tensor:  # [n, n] orthonormal DCT-II, row k = frequency k
    k = torch.arange(n, dtype=torch.float64)[:, None]
    i = torch.arange(n, dtype=torch.float64)[None, :]
    d = torch.cos(math.pi * (i + 0.5) * k / n) * math.sqrt(2.0 / n)
    d[0] = d[0] / math.sqrt(2.0)
    return d


def opponent_colour_matrix() -> Tensor:  # [3, 3] orthonormal rows: luma, R - B, R - 2G + B
    m = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, -1.0], [1.0, -2.0, 1.0]], dtype=torch.float64)
    return m / m.norm(dim=1, keepdim=True)


def spectral_amplitude(time_factor: int, space_factor: int) -> Tensor:  # [3, tf, sf, sf]
    """Expected |coefficient| of (colour, temporal freq, vertical freq, horizontal freq)."""
    k = torch.arange(space_factor, dtype=torch.float64)
    f1 = torch.where(k == 0, torch.full_like(k, _DC_OFFSET), k) / (2 * space_factor)
    fs = (f1[:, None] ** 2 + f1[None, :] ** 2).sqrt()  # [sf, sf]
    ft = torch.arange(time_factor, dtype=torch.float64)[:, None, None] / (2 * time_factor)
    spatial = (fs**2 + _SPATIAL_FLOOR**2) ** (-_SPATIAL_EXPONENT / 2)
    temporal = (1 + (ft / (_MOTION_SPEED * (fs + _MOTION_FLOOR))) ** 2) ** (-_TEMPORAL_EXPONENT / 2)
    colour = torch.tensor(_COLOUR_AMPLITUDE, dtype=torch.float64)[:, None, None, None]
    return colour * spatial * temporal


class DCTCodec(VideoCodec):
    """Grouped temporal DCT + block spatial DCT, keeping the ``latent_channels`` strongest coefficients."""

    def __init__(
        self,
        latent_channels: int = DEFAULT_LATENT_CHANNELS,
        time_factor: int = 4,
        space_factor: int = 8,
        causal_first_frame: bool = True,
    ) -> None:
        super().__init__()
        for name, v in (("latent_channels", latent_channels), ("time_factor", time_factor),
                        ("space_factor", space_factor)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        full = 3 * time_factor * space_factor**2
        if latent_channels > full:
            raise ValueError(f"latent_channels={latent_channels} exceeds the {full} coefficients of a "
                             f"{time_factor}x{space_factor}x{space_factor} RGB block; use at most {full}")
        self.latent_channels, self.time_factor = latent_channels, time_factor
        self.space_factor, self.causal_first_frame = space_factor, bool(causal_first_frame)

        amp = spectral_amplitude(time_factor, space_factor)  # [3, tf, sf, sf]
        order = torch.sort(amp.flatten(), descending=True, stable=True).indices[:latent_channels]
        c, j, u, v = torch.unravel_index(order, amp.shape)
        d_t, d_s, col = dct_matrix(time_factor), dct_matrix(space_factor), opponent_colour_matrix()
        # Basis images over (t, y, x, rgb) of the kept coefficients; rows are orthonormal.
        spatial = torch.einsum("ky,kx,kc->kyxc", d_s[u], d_s[v], col[c])  # [C, sf, sf, 3]
        group = torch.einsum("kt,kyxc->ktyxc", d_t[j], spatial).reshape(latent_channels, -1)
        first = (math.sqrt(time_factor) * (j == 0).double())[:, None] * spatial.reshape(latent_channels, -1)
        std = amp.flatten()[order][:, None]  # [C, 1]
        self.register_buffer("channel_index", torch.stack([c, j, u, v], -1), persistent=False)  # [C, 4]
        self.register_buffer("channel_scale", std[:, 0].float(), persistent=False)  # [C]
        self.register_buffer("enc_group", (group / std).float(), persistent=False)  # [C, tf*sf*sf*3]
        self.register_buffer("dec_group", (group * std).float(), persistent=False)  # [C, tf*sf*sf*3]
        self.register_buffer("enc_first", (first / std).float(), persistent=False)  # [C, sf*sf*3]
        self.register_buffer("dec_first", (first * std / time_factor).float(), persistent=False)

    # ---- block layout: [B, G*n, H, W, 3] <-> [B, G, h, w, n*sf*sf*3] ---------------------------
    def _to_blocks(self, x: Tensor, n: int) -> Tensor:  # [B, G*n, H, W, 3] -> [B, G, h, w, n*sf*sf*3]
        b, t, hh, ww, _ = x.shape
        sf = self.space_factor
        x = x.reshape(b, t // n, n, hh // sf, sf, ww // sf, sf, 3).permute(0, 1, 3, 5, 2, 4, 6, 7)
        return x.reshape(b, t // n, hh // sf, ww // sf, n * sf * sf * 3)

    def _from_blocks(self, x: Tensor, n: int) -> Tensor:  # [B, G, h, w, n*sf*sf*3] -> [B, G*n, H, W, 3]
        b, g, h, w, _ = x.shape
        sf = self.space_factor
        x = x.reshape(b, g, h, w, n, sf, sf, 3).permute(0, 1, 4, 2, 5, 3, 6, 7)
        return x.reshape(b, g * n, h * sf, w * sf, 3)

    def _encode(self, rgb: Tensor) -> Tensor:  # [B, T, H, W, 3] -> [B, C, T', h, w]
        dtype = torch.promote_types(rgb.dtype, torch.float32)
        x = rgb.to(dtype) - 0.5
        parts = []
        if self.causal_first_frame:
            parts.append(self._to_blocks(x[:, :1], 1) @ self.enc_first.to(dtype).T)
            x = x[:, 1:]
        if x.shape[1]:
            parts.append(self._to_blocks(x, self.time_factor) @ self.enc_group.to(dtype).T)
        return torch.cat(parts, dim=1).permute(0, 4, 1, 2, 3).contiguous()

    def decode_linear(self, latents: Tensor) -> Tensor:  # [B, C, T', h, w] -> [B, T, H, W, 3]
        """The exact linear inverse, without the clamp to [0, 1] (keeps gradients everywhere)."""
        self._validate_latents(latents)
        return self._decode_linear(latents)

    def _decode_linear(self, latents: Tensor) -> Tensor:  # [B, C, T', h, w] -> [B, T, H, W, 3]
        dtype = torch.promote_types(latents.dtype, torch.float32)
        z = latents.to(dtype).permute(0, 2, 3, 4, 1)  # [B, T', h, w, C]
        parts = []
        if self.causal_first_frame:
            parts.append(self._from_blocks(z[:, :1] @ self.dec_first.to(dtype), 1))
            z = z[:, 1:]
        if z.shape[1]:
            parts.append(self._from_blocks(z @ self.dec_group.to(dtype), self.time_factor))
        return torch.cat(parts, dim=1) + 0.5

    def _decode(self, latents: Tensor) -> Tensor:  # [B, C, T', h, w] -> [B, T, H, W, 3]
        return self._decode_linear(latents).clamp(0.0, 1.0)
