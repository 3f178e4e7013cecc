"""What a decoder built with ``input_depth`` / ``input_image_gaussians`` does with its inputs.

The input image's depth (the static decoder; for the dynamic one, the input video's frame nearest
each target time) warped into the source cameras, as tokens and as the grid Gaussians' starting
distances; the input pixels as Gaussians. A mixin of :class:`StaticGaussianDecoder` (and so of the
dynamic one), kept apart from the decoder's body; the functional cores are
:mod:`~lyra.models.decoders.input_depth` and :mod:`~lyra.models.decoders.input_image`.
"""

from __future__ import annotations

import math

from torch import Tensor

from lyra.data.codecs.frames import fold_frames
from lyra.models.decoders.input_depth import depth_features, warp_depth
from lyra.render.gaussians import Gaussians


class InputReadingMixin:
    """Methods of the decoders that read the input image or video (see the module docstring)."""

    def warped_input_depth(
        self,
        input_depth: Tensor,  # [B, (M,) H, W] one input depth per scene (dynamic: per target time)
        input_c2w: Tensor,  # [B, (M,) 4, 4] the camera it was seen from
        input_K: Tensor,  # [B, (M,) 3, 3]
        c2w: Tensor,  # [B, V, T, 4, 4] the cameras to see it from
        K: Tensor,  # [B, V, T, 3, 3]
        grid: tuple[int, int],  # (gh, gw) cells per image
    ) -> tuple[Tensor, Tensor]:  # z-depth, filled: [B, (M,) V, T, gh, gw]
        """Every input depth warped into every source camera (``warp_depth``, holes filled
        ``input_depth_fill`` cells deep)."""
        lead, (H, W) = input_depth.shape[:-2], input_depth.shape[-2:]
        S, B = math.prod(lead), c2w.shape[0]
        z, filled = warp_depth(input_depth.reshape(S, H, W), input_c2w.reshape(S, 4, 4), input_K.reshape(S, 3, 3),
                               c2w.repeat_interleave(S // B, 0), K.repeat_interleave(S // B, 0), grid,
                               self.config.input_depth_fill)
        return z.reshape(*lead, *z.shape[1:]), filled.reshape(*lead, *filled.shape[1:])

    def depth_tokens(
        self,
        input_depth: Tensor,  # [B, (M,) H, W]
        input_c2w: Tensor,  # [B, (M,) 4, 4]
        input_K: Tensor,  # [B, (M,) 3, 3]
        c2w: Tensor,  # [B, V, T, 4, 4]
        K: Tensor,  # [B, V, T, 3, 3]
        latent_shape: tuple[int, int, int],  # (T', h, w)
    ) -> Tensor:  # [B*(M)*V, L, D] to add to the latent tokens
        """The input depth, warped into every source camera, as tokens (log depth, seen, filled)."""
        cfg = self.config
        Tl, h, w = latent_shape
        seen, filled = self.warped_input_depth(input_depth, input_c2w, input_K, c2w, K, (h, w))
        T = c2w.shape[2]
        feats = fold_frames(depth_features(seen, filled).reshape(-1, T, h, w, 3), cfg.time_factor, cfg.causal_first_frame)
        feats = feats.permute(0, 2, 5, 1, 3, 4).reshape(-1, cfg.time_factor * 3, Tl, h, w)
        return self.depth_embed(feats.to(self.dtype))

    def latent_frame_of(self, frame: Tensor) -> Tensor:  # source frame indices -> their latent frame's
        cfg = self.config
        tf = cfg.time_factor
        return (frame + tf - 1) // tf if cfg.causal_first_frame else frame // tf

    def input_pixel_gaussians(
        self,
        tokens: Tensor,  # [S, D, h/p, w/p] mixed tokens of the input frame's latent frame
        image: Tensor,  # [S, H, W, 3]
        input_depth: Tensor,  # [S, H, W]
        input_c2w: Tensor,  # [S, 4, 4]
        input_K: Tensor,  # [S, 3, 3]
        unit: Tensor,  # [S] the scene's length unit
    ) -> Gaussians:  # [S, H*W] in world coordinates
        g = self.pixel_gaussians(tokens.float(), image.float(), input_depth, input_c2w, input_K, self.activation, unit)
        return self.orient_to_world(g, input_c2w)

    def input_views(
        self,
        c2w: Tensor,  # [B, V, T, 4, 4] the source cameras
        K: Tensor,  # [B, V, T, 3, 3]
        input_depth: Tensor,  # [B, H, W] the input image's depth (the dynamic decoder: [B, T, H, W])
        time: Tensor | None = None,  # [B, V, T] (dynamic decoders)
        target_time: Tensor | None = None,  # [B, M] (dynamic decoders)
    ) -> dict[str, Tensor]:  # input_depth [B, (M,) H, W], input_c2w [B, (M,) 4, 4], input_K [B, (M,) 3, 3]
        """The input depth and its camera as the Gaussians read them: the first source frame."""
        return {"input_depth": input_depth, "input_c2w": c2w[:, 0, 0], "input_K": K[:, 0, 0]}

    def input_depth_prior(
        self,
        c2w: Tensor,  # [B, V, T, 4, 4] the source cameras
        K: Tensor,  # [B, V, T, 3, 3]
        input_depth: Tensor,  # as ``forward`` takes it
        time: Tensor | None = None,  # [B, V, T] (dynamic decoders)
        target_time: Tensor | None = None,  # [B, M] (dynamic decoders)
    ) -> Tensor:  # [B, (M,) V, F, gh, gw] z-depth in each grid Gaussian's source frame, 0 = none
        """The input depth each grid Gaussian starts from, laid out like ``gaussian_depths``: what the
        decoder was given, to compare the depths it outputs with (docs/evaluation.md)."""
        cfg = self.config
        if not cfg.input_depth:
            raise ValueError("input_depth_prior needs a decoder built with input_depth=True")
        gh, gw = (n // cfg.space_factor * cfg.density for n in input_depth.shape[-2:])
        frames = self.gaussian_frame_indices(c2w.shape[2]).to(c2w.device)
        inputs = self.input_views(c2w, K, input_depth, time, target_time)
        return self.warped_input_depth(**inputs, c2w=c2w[:, :, frames], K=K[:, :, frames], grid=(gh, gw))[0]
