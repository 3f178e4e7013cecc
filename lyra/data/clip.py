"""The data contract: one scene seen along V trajectories of T frames (``Clip``) and its batch.

``Clip`` owns the contract's shapes, its validation, and conversion to and from a flat dict of
numpy arrays / scalars (what shards store). ``ClipBatch`` is the same with a leading batch dim.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lyra.render.cameras import resize_intrinsics

OPTIONAL_TENSORS = ("depth", "gt_rgb")
PER_FRAME_FIELDS = ("rgb", "c2w", "K", "time") + OPTIONAL_TENSORS  # indexed by pixel frame


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


@dataclass
class Clip:
    latents: Tensor  # [V, C, T', h, w] teacher latents (what the student reads)
    rgb: Tensor  # [V, T, H, W, 3] teacher RGB decoding of the latents, float in [0, 1]
    c2w: Tensor  # [V, T, 4, 4] camera-to-world, OpenCV axes
    K: Tensor  # [V, T, 3, 3] pixel intrinsics for (H, W)
    time: Tensor  # [V, T] scene time in [0, 1]; zeros for static scenes
    depth: Tensor | None = None  # [V, T, H, W] z-depth, 0 = unknown (sky, holes); scale/shift-ambiguous unless depth_is_metric
    gt_rgb: Tensor | None = None  # [V, T, H, W, 3] ground truth views when the teacher knows them
    caption: str = ""
    depth_is_metric: bool = False
    meta: dict[str, Any] = field(default_factory=dict)  # e.g. seed, trajectory names

    def __post_init__(self) -> None:
        self.validate()

    @property
    def num_views(self) -> int:
        return self.rgb.shape[0]

    @property
    def num_frames(self) -> int:
        return self.rgb.shape[1]

    @property
    def image_size(self) -> tuple[int, int]:  # (H, W)
        return self.rgb.shape[2], self.rgb.shape[3]

    def validate(self) -> None:
        _check(self.latents.ndim == 5, f"Clip.latents must be [V, C, T', h, w], got {tuple(self.latents.shape)}")
        _check(self.rgb.ndim == 5 and self.rgb.shape[-1] == 3,
               f"Clip.rgb must be [V, T, H, W, 3] channels-last, got {tuple(self.rgb.shape)}")
        V, T, H, W, _ = self.rgb.shape
        _check(self.latents.shape[0] == V, f"Clip.latents has {self.latents.shape[0]} views but rgb has {V}")
        _check(tuple(self.c2w.shape) == (V, T, 4, 4), f"Clip.c2w must be {(V, T, 4, 4)}, got {tuple(self.c2w.shape)}")
        _check(tuple(self.K.shape) == (V, T, 3, 3), f"Clip.K must be {(V, T, 3, 3)}, got {tuple(self.K.shape)}")
        _check(tuple(self.time.shape) == (V, T), f"Clip.time must be {(V, T)}, got {tuple(self.time.shape)}")
        if self.depth is not None:
            _check(tuple(self.depth.shape) == (V, T, H, W),
                   f"Clip.depth must be {(V, T, H, W)}, got {tuple(self.depth.shape)}")
        if self.gt_rgb is not None:
            _check(tuple(self.gt_rgb.shape) == tuple(self.rgb.shape),
                   f"Clip.gt_rgb must match rgb {tuple(self.rgb.shape)}, got {tuple(self.gt_rgb.shape)}")
        for name in ("latents", "rgb", "c2w", "K", "time") + OPTIONAL_TENSORS:
            t = getattr(self, name)
            if t is not None and not torch.isfinite(t).all():
                raise ValueError(f"Clip.{name} contains NaN or Inf; the teacher produced a broken clip "
                                 "(check the codec / generator output) and it must not be stored or trained on")
        _check(bool((self.K[..., 0, 0] > 0).all() and (self.K[..., 1, 1] > 0).all()),
               "Clip.K has a non-positive focal length")
        _check(bool(((self.time >= 0) & (self.time <= 1)).all()), "Clip.time must lie in [0, 1]")

    def to_numpy_dict(self) -> dict[str, Any]:
        """Flat dict for shards: rgb as uint8 (what a video holds), the rest float32."""
        out: dict[str, Any] = {
            "latents": self.latents.float().numpy(),
            "rgb": (self.rgb.clamp(0, 1) * 255).round().to(torch.uint8).numpy(),
            "c2w": self.c2w.float().numpy(),
            "K": self.K.float().numpy(),
            "time": self.time.float().numpy(),
            "caption": self.caption,
            "depth_is_metric": bool(self.depth_is_metric),
            "meta": dict(self.meta),
        }
        if self.depth is not None:
            out["depth"] = self.depth.float().numpy()
        if self.gt_rgb is not None:
            out["gt_rgb"] = (self.gt_rgb.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
        return out

    @classmethod
    def from_numpy_dict(cls, d: dict[str, Any]) -> "Clip":
        missing = [k for k in ("latents", "rgb", "c2w", "K", "time") if k not in d]
        if missing:
            raise ValueError(f"clip record lacks {missing}; it was not written by lyra's clip writer")

        def img(a: np.ndarray) -> Tensor:
            t = torch.as_tensor(np.asarray(a))
            return t.float() / 255.0 if t.dtype == torch.uint8 else t.float()

        return cls(
            latents=torch.as_tensor(np.asarray(d["latents"])).float(), rgb=img(d["rgb"]),
            c2w=torch.as_tensor(np.asarray(d["c2w"])).float(), K=torch.as_tensor(np.asarray(d["K"])).float(),
            time=torch.as_tensor(np.asarray(d["time"])).float(),
            depth=None if d.get("depth") is None else torch.as_tensor(np.asarray(d["depth"])).float(),
            gt_rgb=None if d.get("gt_rgb") is None else img(d["gt_rgb"]),
            caption=str(d.get("caption", "")), depth_is_metric=bool(d.get("depth_is_metric", False)),
            meta=dict(d.get("meta") or {}),
        )

    def select(self, views: Tensor | list[int] | None = None, frames: Tensor | list[int] | None = None) -> "Clip":
        """Subset of views (all fields) and of pixel frames (frame-level fields only; latents keep
        every latent frame since the student reads the whole clip)."""
        c = self
        if views is not None:
            v = torch.as_tensor(views, dtype=torch.long)
            c = replace(c, **{f.name: getattr(c, f.name)[v] for f in fields(c)
                              if isinstance(getattr(c, f.name), Tensor)})
        if frames is not None:
            t = torch.as_tensor(frames, dtype=torch.long)
            c = replace(c, **{n: getattr(c, n)[:, t] for n in PER_FRAME_FIELDS
                              if getattr(c, n) is not None})
        return c


@dataclass
class ClipBatch:
    """Clips stacked along a leading batch dim B; what the student's training step receives.

    ``rgb``/``c2w``/``K``/``time``/``depth``/``gt_rgb`` may hold only the *target* frames (the
    DataModule samples a few per trajectory); ``src_c2w``/``src_K``/``src_time`` always hold the
    cameras of every source frame that the latents encode.
    """

    latents: Tensor  # [B, V, C, T', h, w]
    src_c2w: Tensor  # [B, V, T, 4, 4]
    src_K: Tensor  # [B, V, T, 3, 3]
    src_time: Tensor  # [B, V, T]
    rgb: Tensor  # [B, V, F, H, W, 3] target frames
    c2w: Tensor  # [B, V, F, 4, 4]
    K: Tensor  # [B, V, F, 3, 3]
    time: Tensor  # [B, V, F]
    depth: Tensor | None = None  # [B, V, F, H, W]
    gt_rgb: Tensor | None = None  # [B, V, F, H, W, 3]
    depth_is_metric: bool = False
    src_depth: Tensor | None = None  # [B, V, T, H, W] depth of every source frame (pixel-aligned supervision)
    input_rgb: Tensor | None = None  # [B, T, H, W, 3] trajectory 0's source frames: the input image (frame 0) or video
    captions: list[str] = field(default_factory=list)
    meta: list[dict[str, Any]] = field(default_factory=list)  # per sample: the target clip's meta
    # The source clips themselves (test split only): what the baselines of lyra.eval read.
    sources: list[Clip] | None = None

    @property
    def batch_size(self) -> int:
        return self.latents.shape[0]

    def to(self, *args, **kwargs) -> "ClipBatch":
        return replace(self, **{f.name: getattr(self, f.name).to(*args, **kwargs) for f in fields(self)
                                if isinstance(getattr(self, f.name), Tensor)})

    def downscale_targets(self, factor: int) -> "ClipBatch":
        """The same batch with its target frames ``factor`` times smaller: images area-averaged,
        depth sampled at each block's centre pixel (averaging would blend across edges), target
        intrinsics rescaled. Sources (latents, source cameras and depth) are unchanged."""
        if factor == 1:
            return self
        H, W = self.rgb.shape[-3:-1]
        if factor < 1 or H % factor or W % factor:
            raise ValueError(f"target frames of {H}x{W} cannot be downscaled by {factor}; use a factor dividing both")

        def area(x: Tensor | None) -> Tensor | None:  # [..., H, W, 3]
            if x is None:
                return None
            lead = x.shape[:-3]
            y = torch.nn.functional.avg_pool2d(x.reshape(-1, H, W, 3).permute(0, 3, 1, 2), factor)
            return y.permute(0, 2, 3, 1).reshape(*lead, H // factor, W // factor, 3)

        c = factor // 2
        return replace(self, rgb=area(self.rgb), gt_rgb=area(self.gt_rgb),
                       depth=None if self.depth is None else self.depth[..., c::factor, c::factor],
                       K=resize_intrinsics(self.K, (H, W), (H // factor, W // factor)))

    @classmethod
    def collate(cls, items: list[tuple[Clip, Clip]], keep_sources: bool = False) -> "ClipBatch":
        """``items`` are (source clip, target clip) pairs: the source gives latents and source
        cameras, the target gives the frames to render and match. ``keep_sources`` also keeps the
        source clips (the evaluation baselines need their frames)."""
        src, tgt = zip(*items)

        def stack(objs, name):
            vals = [getattr(o, name) for o in objs]
            if any(v is None for v in vals):
                return None
            return torch.stack(vals)

        metric = {t.depth_is_metric for t in tgt}
        if len(metric) > 1:
            raise ValueError("a batch mixes metric and non-metric depth; keep one kind per dataset")
        return cls(latents=stack(src, "latents"), src_c2w=stack(src, "c2w"), src_K=stack(src, "K"),
                   src_time=stack(src, "time"), rgb=stack(tgt, "rgb"), c2w=stack(tgt, "c2w"),
                   K=stack(tgt, "K"), time=stack(tgt, "time"), depth=stack(tgt, "depth"),
                   gt_rgb=stack(tgt, "gt_rgb"), depth_is_metric=metric.pop(), src_depth=stack(src, "depth"),
                   input_rgb=torch.stack([s.rgb[0] for s in src]),
                   captions=[t.caption for t in tgt], meta=[dict(t.meta) for t in tgt],
                   sources=list(src) if keep_sources else None)
