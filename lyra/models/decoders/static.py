"""``StaticGaussianDecoder``: Lyra's 3DGS decoder, one Gaussian set per scene."""

from __future__ import annotations

import torch
from torch import Tensor

from lyra.models.decoders.base import GaussianDecoder
from lyra.models.decoders.checks import check_decoder_inputs
from lyra.models.decoders.input_frames import InputFrames
from lyra.render.gaussians import Gaussians


class StaticGaussianDecoder(GaussianDecoder):
    """Lyra's 3DGS decoder: one Gaussian set per scene from the latents of all its trajectories.

    Each trajectory's latents are patch-embedded (1 x p x p) with their Plucker rays added through
    a zero-initialised embed; all tokens are mixed jointly by the body; a transposed 3D convolution
    undoes the patching (and, with ``gaussian_frames="all"``, the codec's temporal compression),
    giving ``density**2`` Gaussians per latent pixel of every frame that emits Gaussians, each on its
    own pixel ray (docs/conventions.md). With ``input_depth`` / ``input_image_gaussians`` it reads
    the input image: trajectory 0, frame 0. Settings: :class:`GaussianDecoder` (``Args``).
    """

    is_dynamic = False

    def forward(
        self,
        latents: Tensor,  # [B, V, C, T', h, w]
        c2w: Tensor,  # [B, V, T, 4, 4]
        K: Tensor,  # [B, V, T, 3, 3]
        time: Tensor | None = None,  # [B, V, T] ignored: one set for the whole clip
        target_time: Tensor | None = None,  # [B, M] ignored
        input_depth: Tensor | None = None,  # [B, H, W] z-depth of the first source frame, 0 = unknown
        input_image: Tensor | None = None,  # [B, H, W, 3] its RGB (decoders with input_image_gaussians)
    ) -> Gaussians:  # batch [B], N = V * F * (h * density) * (w * density) (+ H * W input pixels)
        check_decoder_inputs(self.config, False, latents, c2w, K, input_depth, input_image)
        inputs = None if input_depth is None else self.input_frames(c2w, K, input_depth, input_image=input_image)
        return self.decode(latents, c2w, K, 1, inputs)[:, 0]

    def input_frames(
        self,
        c2w: Tensor,  # [B, V, T, 4, 4]
        K: Tensor,  # [B, V, T, 3, 3]
        input_depth: Tensor,  # [B, H, W]
        time: Tensor | None = None,  # ignored
        target_time: Tensor | None = None,  # ignored
        input_image: Tensor | None = None,  # [B, H, W, 3]
    ) -> InputFrames:  # one set per scene: the first source frame
        first = torch.zeros(c2w.shape[0], 1, dtype=torch.long, device=c2w.device)
        return InputFrames.pick(first, c2w, K, input_depth[:, None], None if input_image is None else input_image[:, None])
