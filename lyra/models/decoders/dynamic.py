"""``DynamicGaussianDecoder``: Lyra's 4D decoder, one complete Gaussian set per target time.

Time-conditioned 3DGS, not a deformation field: the tokens of the whole clip are mixed once per
target time, with every source frame's time and the target time added (``TimeEmbed``). With
``input_depth`` / ``input_image_gaussians`` it reads the input *video* (trajectory 0): each target
time reads the frame nearest to it in time, so every set starts from what the input video shows then.
"""

from __future__ import annotations

from torch import Tensor

from lyra.models.decoders.base import GaussianDecoder
from lyra.models.decoders.checks import check_decoder_inputs, check_times
from lyra.models.decoders.input_frames import InputFrames, nearest_input_frames
from lyra.render.gaussians import Gaussians


class DynamicGaussianDecoder(GaussianDecoder):
    """Lyra's 4D decoder: the static decoder's parts (same settings, :class:`GaussianDecoder`'s
    ``Args``) plus time conditioning that starts at zero, so one built from a static decoder's
    weights begins identical to it. ``forward`` returns Gaussians of batch shape [B, M]."""

    is_dynamic = True

    def forward(
        self,
        latents: Tensor,  # [B, V, C, T', h, w]
        c2w: Tensor,  # [B, V, T, 4, 4]
        K: Tensor,  # [B, V, T, 3, 3]
        time: Tensor | None = None,  # [B, V, T] scene time of every source frame
        target_time: Tensor | None = None,  # [B, M] times at which to output Gaussians
        input_depth: Tensor | None = None,  # [B, T, H, W] z-depth of trajectory 0's frames, 0 = unknown
        input_image: Tensor | None = None,  # [B, T, H, W, 3] their RGB (decoders with input_image_gaussians)
    ) -> Gaussians:  # batch [B, M]
        check_decoder_inputs(self.config, True, latents, c2w, K, input_depth, input_image)
        check_times(time, target_time, tuple(c2w.shape[:3]))
        inputs = None if input_depth is None else self.input_frames(c2w, K, input_depth, time, target_time, input_image)
        return self.decode(latents, c2w, K, target_time.shape[1], inputs, time, target_time)

    def input_frames(
        self,
        c2w: Tensor,  # [B, V, T, 4, 4]
        K: Tensor,  # [B, V, T, 3, 3]
        input_depth: Tensor,  # [B, T, H, W]
        time: Tensor | None = None,  # [B, V, T]
        target_time: Tensor | None = None,  # [B, M]
        input_image: Tensor | None = None,  # [B, T, H, W, 3]
    ) -> InputFrames:  # per target time, the input video's frame nearest to it
        check_times(time, target_time, tuple(c2w.shape[:3]))
        return InputFrames.pick(nearest_input_frames(time, target_time), c2w, K, input_depth, input_image)
