"""The clip generator interface: what a teacher imagines for clip ``index``.

A generator produces one scene seen along V camera trajectories of T frames, either as pixels
(``rgb``; the teacher encodes them with its codec) or directly as video latents (``latents``;
a diffusion model that denoises in latent space). The ``TeacherModule`` turns a
``GeneratedClip`` into the data contract (``lyra.data.clip.Clip``): latents + the codec's RGB
decoding of them.

Generators are deterministic per index: ``generate(i, ...)`` returns the same clip on every call,
in every process and DataLoader worker, whatever ran before. That is what lets the clip cache
resume a killed run and lets DataLoader workers split indices without coordinating RNG state.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn


@dataclass
class GeneratedClip:
    """One generated scene; exactly one of ``rgb`` / ``latents`` is required (both is allowed)."""

    c2w: Tensor  # [V, T, 4, 4] camera-to-world, OpenCV axes
    K: Tensor  # [V, T, 3, 3] pixel intrinsics for (H, W)
    time: Tensor  # [V, T] scene time in [0, 1]; zeros for static scenes
    rgb: Tensor | None = None  # [V, T, H, W, 3] generated pixels, float in [0, 1]
    latents: Tensor | None = None  # [V, C, T', h, w] generated latents, in the teacher codec's space
    depth: Tensor | None = None  # [V, T, H, W] camera z-depth
    depth_is_metric: bool = False  # True when depth is exact (procedural), not an estimator's guess
    gt_rgb: Tensor | None = None  # [V, T, H, W, 3] ground-truth views when the generator knows them
    caption: str = ""
    meta: dict[str, Any] = field(default_factory=dict)  # JSON-serialisable (it is stored in shards)

    def __post_init__(self) -> None:
        if self.rgb is None and self.latents is None:
            raise ValueError("GeneratedClip needs rgb [V, T, H, W, 3] or latents [V, C, T', h, w]; both are None")
        if self.c2w.ndim != 4 or self.c2w.shape[-2:] != (4, 4):
            raise ValueError(f"GeneratedClip.c2w must be [V, T, 4, 4], got {tuple(self.c2w.shape)}")

    @property
    def num_views(self) -> int:
        return self.c2w.shape[0]

    @property
    def num_frames(self) -> int:
        return self.c2w.shape[1]


class ClipGenerator(nn.Module, abc.ABC):
    """Base class of teacher clip generators (an ``nn.Module`` so weights follow the teacher's device).

    Subclasses implement ``generate`` and extend ``describe``. They must be deterministic per
    ``index`` (seed their randomness from ``base_seed + index``, never from global RNG state).
    """

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        self.base_seed = seed

    @abc.abstractmethod
    def generate(self, index: int, num_frames: int, height: int, width: int) -> GeneratedClip:
        """Clip ``index`` with ``num_frames`` frames of ``height`` x ``width`` pixels per view."""

    def describe(self) -> dict[str, Any]:
        """JSON-serialisable identity (class + every setting that changes the output).

        Stored in the shard manifest: a run may resume into a cache only when the descriptions
        agree, so two generators with equal descriptions must produce identical clips.
        """
        return {"class": f"{type(self).__module__}.{type(self).__qualname__}", "seed": self.base_seed}

    @staticmethod
    def check_index(index: int) -> int:
        if isinstance(index, Tensor):
            index = int(index.item())
        if not isinstance(index, int) or isinstance(index, bool) or index < 0:
            raise ValueError(f"clip index must be a non-negative int, got {index!r}")
        return index
