"""TeacherModule: a frozen clip generator + video codec that produces ``Clip`` records.

The student is trained to match the teacher's *own decoding* of its latents, so ``rgb`` is
always ``codec.decode(latents)``, also when the generator made pixels first (then
``latents = codec.encode(pixels)`` and the exact pixels are kept as ``gt_rgb`` when the generator
says they are ground truth, as procedural worlds do).

The teacher is never trained and never sharded: every parameter has ``requires_grad=False``, it
stays in eval mode even if a parent calls ``.train()``, and ``configure_model`` does nothing, so a
``ModelParallelStrategy`` that shards the student leaves it whole. ``lightning predict`` with the
``ClipWriter`` callback turns it into a clip cache (see configs/generate.yaml).
"""

from __future__ import annotations

from typing import Any

import lightning
import torch
from torch import Tensor

from lyra.data.clip import Clip
from lyra.data.codecs import VideoCodec
from lyra.data.generators import ClipGenerator, GeneratedClip


class TeacherModule(lightning.LightningModule):
    """Frozen teacher: ``make_clip(index)`` generates one scene along its trajectories, encodes it
    with the codec and decodes it again (``rgb`` is what the student matches).

    Args:
        generator: the ``ClipGenerator`` that makes the pixels or latents of a clip (procedural
            world, GEN3C-style diffusers model, image / video sources).
        codec: the ``VideoCodec`` whose latents the student reads (DCT, a diffusers video VAE).
        num_frames: frames per trajectory; the codec must accept it (checked here).
        height: frame height in pixels; the codec must accept it (checked here).
        width: frame width in pixels; the codec must accept it (checked here).
    """

    def __init__(
        self,
        generator: ClipGenerator,
        codec: VideoCodec,
        num_frames: int = 17,
        height: int = 128,
        width: int = 128,
    ) -> None:
        super().__init__()
        if not isinstance(generator, ClipGenerator):
            raise TypeError(f"generator must be a lyra ClipGenerator, got {type(generator).__name__}")
        if not isinstance(codec, VideoCodec):
            raise TypeError(f"codec must be a lyra VideoCodec, got {type(codec).__name__}")
        # Fail at construction, not after hours of generation: the codec must accept this size.
        codec.latent_shape(num_frames, height, width)
        self.generator, self.codec = generator, codec
        self.num_frames, self.height, self.width = num_frames, height, width
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "TeacherModule":
        return super().train(False)  # frozen: dropout / norm statistics never switch to training

    def configure_model(self) -> None:
        """Deliberately empty: the teacher is never sharded (only the student is)."""

    def describe(self) -> dict[str, Any]:
        """Identity of the clips this teacher makes (stored in shard manifests)."""
        codec = {"class": f"{type(self.codec).__module__}.{type(self.codec).__qualname__}",
                 "latent_channels": self.codec.latent_channels, "time_factor": self.codec.time_factor,
                 "space_factor": self.codec.space_factor,
                 "causal_first_frame": bool(getattr(self.codec, "causal_first_frame", False))}
        return {"generator": self.generator.describe(), "codec": codec,
                "num_frames": self.num_frames, "height": self.height, "width": self.width}

    @torch.no_grad()
    def make_clip(self, index: int) -> Clip:
        """Clip ``index`` (deterministic), on the CPU."""
        gen = self.generator.generate(int(index), self.num_frames, self.height, self.width)
        self._check_generated(gen, int(index))
        if gen.latents is not None:
            latents = gen.latents.to(self.device, torch.float32)
        else:
            latents = self.codec.encode(gen.rgb.to(self.device, torch.float32))
        rgb = self.codec.decode(latents)
        meta = {**gen.meta, "index": int(index)}
        return Clip(latents=latents.float().cpu(), rgb=rgb.float().cpu(), c2w=gen.c2w.float().cpu(),
                    K=gen.K.float().cpu(), time=gen.time.float().cpu(),
                    depth=None if gen.depth is None else gen.depth.float().cpu(),
                    gt_rgb=None if gen.gt_rgb is None else gen.gt_rgb.float().cpu(),
                    caption=gen.caption, depth_is_metric=gen.depth_is_metric, meta=meta)

    def _check_generated(self, gen: GeneratedClip, index: int) -> None:
        name = type(self.generator).__name__
        want = (self.num_frames, self.height, self.width)
        if gen.rgb is not None and tuple(gen.rgb.shape[1:4]) != want:
            raise ValueError(f"{name} returned rgb {tuple(gen.rgb.shape)} for clip {index} but the teacher asked "
                             f"for [V, {want[0]}, {want[1]}, {want[2]}, 3]; the generator must honour the request")
        if gen.latents is not None:
            shape = self.codec.latent_shape(*want)
            if tuple(gen.latents.shape[1:]) != shape:
                raise ValueError(f"{name} returned latents {tuple(gen.latents.shape)} for clip {index}; the codec "
                                 f"{type(self.codec).__name__} expects [V, {', '.join(map(str, shape))}] for "
                                 f"{want[0]} frames of {want[1]}x{want[2]}: pair the generator with its own codec")
        if gen.num_frames != self.num_frames:
            raise ValueError(f"{name} returned {gen.num_frames} camera frames for clip {index}, "
                             f"expected {self.num_frames}")

    def forward(self, index: int) -> Clip:
        return self.make_clip(index)

    def predict_step(self, batch: Tensor | list[int], batch_idx: int) -> list[Clip]:  # batch: [B] clip indices
        indices = batch.tolist() if isinstance(batch, Tensor) else list(batch)
        return [self.make_clip(int(i)) for i in indices]
