"""The dynamic (4D) decoder: the static decoder plus source-time and target-time conditioning.

It returns one complete Gaussian set per requested target time (time-conditioned 3DGS, not a
deformation field): tokens of the whole clip are mixed once per target time.

With ``input_depth`` / ``input_image_gaussians`` it reads the input *video* (trajectory 0, every
frame) where the static decoder reads the input image: each target time takes the trajectory-0
frame nearest to it in time, its depth warped into every source camera and its pixels lifted as
Gaussians, so every time's set starts from what the input video shows at that time. A frame
between two input frames' times takes the nearer one.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lyra.data.codecs.frames import fold_frames
from lyra.models.decoders.embed import PatchEmbed3d, time_features
from lyra.models.decoders.static import StaticGaussianDecoder
from lyra.render.gaussians import Gaussians


class DynamicGaussianDecoder(StaticGaussianDecoder):
    """Lyra's 4D decoder: ``StaticGaussianDecoder`` (same settings, same ``Args``) plus the time of
    every source frame and one target time, each encoded as [t, cos t, sin t] and added through a
    zero-initialised embed, so a dynamic decoder initialised from a static one starts identical
    to it. ``forward`` returns Gaussians of batch shape [B, M], one set per target time.
    """

    is_dynamic = True

    def add_conditioning(self, width: int) -> None:
        cfg = self.config
        self.source_time_embed = PatchEmbed3d(3 * cfg.time_factor, width, cfg.patch_size, zero_init=True)
        self.target_time_embed = nn.Linear(3, width)
        nn.init.zeros_(self.target_time_embed.weight)
        nn.init.zeros_(self.target_time_embed.bias)

    @staticmethod
    def input_frames(time: Tensor, target_time: Tensor) -> Tensor:  # [B, V, T], [B, M] -> [B, M]
        """For each target time, the input video's frame (trajectory 0) nearest to it in time."""
        return (time[:, 0, None, :] - target_time[:, :, None]).abs().argmin(-1)

    def input_views(
        self,
        c2w: Tensor,  # [B, V, T, 4, 4]
        K: Tensor,  # [B, V, T, 3, 3]
        input_depth: Tensor,  # [B, T, H, W] the input video's depth
        time: Tensor | None = None,  # [B, V, T]
        target_time: Tensor | None = None,  # [B, M]
    ) -> dict[str, Tensor]:
        """Per target time, the input video's frame nearest to it: its depth [B, M, H, W] and camera
        [B, M, 4, 4] / [B, M, 3, 3] (``StaticGaussianDecoder.input_views``)."""
        return self._views_at(self.input_frames(time, target_time), c2w, K, input_depth)

    @staticmethod
    def _views_at(frame: Tensor, c2w: Tensor, K: Tensor, input_depth: Tensor) -> dict[str, Tensor]:  # frame [B, M]
        rows = torch.arange(frame.shape[0], device=frame.device)[:, None]
        return {"input_depth": input_depth[rows, frame], "input_c2w": c2w[:, 0][rows, frame],
                "input_K": K[:, 0][rows, frame]}

    def forward(
        self,
        latents: Tensor,  # [B, V, C, T', h, w]
        c2w: Tensor,  # [B, V, T, 4, 4]
        K: Tensor,  # [B, V, T, 3, 3]
        time: Tensor | None = None,  # [B, V, T] scene time of every source frame
        target_time: Tensor | None = None,  # [B, M] times at which to output Gaussians
        input_depth: Tensor | None = None,  # [B, T, H, W] z-depth of trajectory 0's frames, 0 = unknown
        input_image: Tensor | None = None,  # [B, T, H, W, 3] their RGB (decoders with input_image_gaussians)
    ) -> Gaussians:  # batch shape [B, M]
        self._check(latents, c2w, K, input_depth, input_image)
        B, V, _, Tl, h, w = latents.shape
        T = c2w.shape[2]
        if time is None or target_time is None:
            raise ValueError("DynamicGaussianDecoder needs `time` [B, V, T] (source frames) and `target_time` "
                             "[B, M]; for a static scene use StaticGaussianDecoder")
        if tuple(time.shape) != (B, V, T) or target_time.ndim != 2 or target_time.shape[0] != B:
            raise ValueError(f"time must be {(B, V, T)} and target_time [B={B}, M]; got {tuple(time.shape)} "
                             f"and {tuple(target_time.shape)}")
        for name, t in (("time", time), ("target_time", target_time)):
            if not torch.isfinite(t).all() or (t < 0).any() or (t > 1).any():
                raise ValueError(f"{name} must be finite and in [0, 1] (scene time is normalised)")
        cfg = self.config
        tokens = self.embed_tokens(latents, c2w, K)  # [B*V, L, D]
        tf = fold_frames(time_features(time).reshape(B * V, T, 3), cfg.time_factor, cfg.causal_first_frame)
        tf = tf.reshape(B * V, Tl, cfg.time_factor * 3).permute(0, 2, 1)[..., None, None].expand(-1, -1, -1, h, w)
        tokens = tokens + self.source_time_embed(tf.to(self.dtype))
        M = target_time.shape[1]
        tgt = self.target_time_embed(time_features(target_time).to(self.dtype))  # [B, M, D]
        L, D = tokens.shape[1:]
        tokens = tokens.reshape(B, 1, V, L, D) + tgt[:, :, None, None, :]
        inputs, frame = {}, self.input_frames(time, target_time)  # [B, M] the input frame of each target time
        if cfg.input_depth:
            inputs = self._views_at(frame, c2w, K, input_depth)
            tokens = tokens + self.depth_tokens(**inputs, c2w=c2w, K=K, latent_shape=(Tl, h, w)).reshape(B, M, V, L, D)
        x = self.mix_tokens(tokens.reshape(B * M * V, L, D), (Tl, h, w), B * M, V)
        raw = self.decode_tokens(x, latents, B * M, V)
        raw = raw.reshape(B, M, *raw.shape[1:])
        skip = self.latent_skip_raw(latents)  # the latents are the same at every target time
        if skip is not None:
            raw = raw + skip[:, None]
        g = self.to_gaussians(raw.float(), c2w, K, **inputs)
        if self.pixel_gaussians is None:
            return g
        rows = torch.arange(B, device=frame.device)[:, None]
        x = x.reshape(B, M, V, *x.shape[1:])[:, :, 0]  # [B, M, D, T', h/p, w/p] trajectory 0
        first = x[rows, torch.arange(M, device=frame.device), :, self.latent_frame_of(frame)]  # [B, M, D, h/p, w/p]
        flat = {k: v.flatten(0, 1) for k, v in inputs.items()}  # [B*M, ...] one input frame per target time
        pixels = self.input_pixel_gaussians(first.flatten(0, 1), input_image[rows, frame].flatten(0, 1), **flat,
                                            unit=self.length_unit(c2w).repeat_interleave(M))
        return Gaussians.cat([g, pixels.reshape_batch(B, M)])
