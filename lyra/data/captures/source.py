"""``CaptureSource``: real posed captures cut into Lyra clips, a generator ``TeacherModule`` accepts.

A clip of V trajectories x T frames is a window of ``1 + V (T - 1)`` frames of one capture (every
``frame_stride``-th frame). Its first frame is the input image and starts every trajectory (the
data contract: frame 0 of every view is the same view); the other ``V (T - 1)`` frames are dealt
to the V trajectories (``layout``):

- ``"interleaved"``: trajectory v takes frames ``1 + v, 1 + v + V, ...``: every trajectory spans the
  whole window, in steps of V frames;
- ``"split"``: trajectory v takes the v-th run of ``T - 1`` consecutive frames: holding out the last
  one asks for the end of the path from the frames before it (the real-capture protocol,
  docs/evaluation.md).

The teacher encodes the real frames with its codec and decodes them again (what the student
matches); the frames themselves are the clip's ground truth (``gt_rgb``). Clip ``i`` is window
``i mod num_clips``: ``clips_per_capture`` windows per capture, evenly spaced along it, captures in
name order (``lyra.data.captures.find_captures``). Depth (``lyra.data.captures.depth``): the sparse
points projected (``"sparse"``), an estimator from a local folder aligned to them (``"estimator"``),
or none. Scene time is 0: captures are treated as static scenes.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from lyra.data.captures.capture import Capture, Normalization
from lyra.data.captures.depth import align_estimate, sparse_depth
from lyra.data.captures.detect import FormatChoice, find_captures, read_capture
from lyra.data.captures.frames import load_frame
from lyra.data.generators.base import ClipGenerator, GeneratedClip
from lyra.data.generators.depth import MonocularDepth

Layout = Literal["interleaved", "split"]
DepthSource = Literal["sparse", "estimator", "none"]


def window_positions(num_views: int, num_frames: int, layout: Layout) -> Tensor:  # [V, T] frame offsets in a window
    """Offsets (in strided frames) of every trajectory's frames in a window of ``1 + V (T - 1)`` frames."""
    V, rest = num_views, torch.arange(num_frames - 1)
    if layout == "interleaved":
        tail = 1 + torch.arange(V)[:, None] + V * rest[None]
    elif layout == "split":
        tail = 1 + (num_frames - 1) * torch.arange(V)[:, None] + rest[None]
    else:
        raise ValueError(f"layout must be 'interleaved' or 'split', got {layout!r}")
    return torch.cat([torch.zeros(V, 1, dtype=torch.long), tail], dim=1)


class CaptureSource(ClipGenerator):
    """Clips cut from the posed captures under ``root`` (module docstring).

    Args:
        root: a capture folder, or a folder of captures (COLMAP, LLFF, RealEstate10K,
            transforms.json; ``lyra.data.captures.find_captures``). ``ClipDataModule(root=...)``
            replaces it, so one option points a config at another folder.
        num_views: trajectories per clip (V).
        layout: how a window's frames are dealt to trajectories: ``"interleaved"`` or ``"split"``.
        frame_stride: use every n-th frame of the capture (1: consecutive frames).
        clips_per_capture: windows per capture, evenly spaced along it (1: its first frames).
        depth: ``"sparse"`` (the capture's points projected; none for formats without points),
            ``"estimator"`` (``depth_model`` aligned to the points) or ``"none"``.
        depth_model: local folder of a transformers depth estimator (``depth="estimator"``),
            loaded with ``AutoModelForDepthEstimation.from_pretrained``; nothing is downloaded.
        format: the capture format, or ``"auto"`` to detect it per capture.
        normalization: the statistic that fixes each capture's scale (``lyra.data.captures.capture``).
        unit: the value that statistic takes (the decoders' depth range is in these units).
        seed: kept for the generator interface; cutting captures draws nothing at random.
    """

    def __init__(
        self,
        root: str | None = None,
        num_views: int = 6,
        layout: Layout = "interleaved",
        frame_stride: int = 1,
        clips_per_capture: int = 1,
        depth: DepthSource = "sparse",
        depth_model: str | None = None,
        format: FormatChoice = "auto",
        normalization: Normalization = "auto",
        unit: float = 1.0,
        seed: int = 0,
    ) -> None:
        super().__init__(seed)
        for name, v in (("num_views", num_views), ("frame_stride", frame_stride),
                        ("clips_per_capture", clips_per_capture)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        window_positions(1, 2, layout)  # refuses an unknown layout now
        if depth not in ("sparse", "estimator", "none"):
            raise ValueError(f"depth must be 'sparse', 'estimator' or 'none', got {depth!r}")
        if depth == "estimator" and not depth_model:
            raise ValueError("depth='estimator' needs depth_model: the local folder of a transformers depth model")
        self.num_views, self.layout, self.frame_stride = num_views, layout, frame_stride
        self.clips_per_capture, self.depth, self.depth_model = clips_per_capture, depth, depth_model
        self.format, self.normalization, self.unit = format, normalization, float(unit)
        self.estimator: MonocularDepth | None = None
        self.root = root

    @property
    def root(self) -> str | None:
        return self._root

    @root.setter
    def root(self, value: str | os.PathLike | None) -> None:
        self._root = None if value is None else str(value)
        self._paths: list[Path] | None = None
        self._captures: dict[int, Capture] = {}

    @property
    def capture_paths(self) -> list[Path]:
        if self._root is None:
            raise ValueError("CaptureSource has no root: set the capture folder (--data.init_args.root DIR)")
        if self._paths is None:
            self._paths = find_captures(self._root)
        return self._paths

    @property
    def num_clips(self) -> int:
        """Windows over all captures (``clips_per_capture`` each): the clips this source holds."""
        return len(self.capture_paths) * self.clips_per_capture

    def capture(self, k: int) -> Capture:
        """Capture ``k`` (name order), read and normalised once per process."""
        if k not in self._captures:
            self._captures[k] = read_capture(self.capture_paths[k], self.format, self.normalization, self.unit)
        return self._captures[k]

    def frame_indices(self, index: int, num_frames: int) -> tuple[int, Tensor]:  # capture, [V, T] frame indices
        """Which capture clip ``index`` comes from and the capture frame of every (trajectory, frame)."""
        k, w = divmod(self.check_index(index) % self.num_clips, self.clips_per_capture)
        capture = self.capture(k)
        offsets = window_positions(self.num_views, num_frames, self.layout) * self.frame_stride
        span = int(offsets.max()) + 1
        if capture.num_frames < span:
            raise ValueError(f"{capture.source}: {capture.num_frames} frames, but a clip of {self.num_views} "
                             f"trajectories x {num_frames} frames at frame_stride {self.frame_stride} needs {span}; "
                             "lower num_views, the clip's num_frames or frame_stride, or drop this capture")
        starts = torch.linspace(0, capture.num_frames - span, self.clips_per_capture).round().long()
        return k, starts[w] + offsets

    def generate(self, index: int, num_frames: int, height: int, width: int) -> GeneratedClip:
        k, frames = self.frame_indices(index, num_frames)
        capture = self.capture(k)
        loaded = {f: load_frame(capture, f, height, width) for f in frames.unique().tolist()}
        rgb = torch.stack([torch.stack([loaded[f][0] for f in row]) for row in frames.tolist()])
        K = torch.stack([torch.stack([loaded[f][1] for f in row]) for row in frames.tolist()]).float()
        depth, metric = self._depth(capture, frames, rgb, K)
        names = [f"sub{v}" for v in range(self.num_views)]
        meta = {"index": int(index), "trajectories": names,
                "capture": {"name": capture.name, "format": capture.format, "layout": self.layout,
                            "frames": frames.tolist(),
                            "images": [[capture.image_paths[f].name for f in row] for row in frames.tolist()],
                            "normalization": capture.normalization_meta()}}
        return GeneratedClip(c2w=capture.c2w[frames].float(), K=K, time=torch.zeros(frames.shape), rgb=rgb,
                             depth=depth, depth_is_metric=metric, gt_rgb=rgb, meta=meta)

    def _depth(
        self,
        capture: Capture,
        frames: Tensor,  # [V, T] capture frame indices
        rgb: Tensor,  # [V, T, H, W, 3] those frames at clip size
        K: Tensor,  # [V, T, 3, 3] their intrinsics
    ) -> tuple[Tensor | None, bool]:  # [V, T, H, W] depth (0: unknown), whether it is in the cameras' units
        """The clip's depth as ``depth`` asks (module docstring)."""
        if self.depth == "none":
            return None, False
        H, W = rgb.shape[2:4]
        flat = frames.reshape(-1).tolist()
        sparse = torch.stack([sparse_depth(capture, f, K.reshape(-1, 3, 3)[i], H, W) for i, f in enumerate(flat)])
        if self.depth == "sparse":
            if capture.points is None or not len(capture.points):
                raise ValueError(f"{capture.source}: points: this {capture.format} capture has no sparse points, so "
                                 "depth='sparse' has nothing to project; use depth='estimator' with depth_model (a "
                                 "local transformers depth model), or depth='none' with a decoder that reads no depth")
            return sparse.reshape(frames.shape + (H, W)), True
        if self.estimator is None:
            self.estimator = MonocularDepth(self.depth_model)
        raw = torch.cat([self.estimator.raw(chunk) for chunk in rgb.reshape(-1, H, W, 3).split(8)])
        bounds = capture.depth_bounds
        out = [align_estimate(raw[i], sparse[i], self.estimator.output, None if bounds is None else bounds[f])
               for i, f in enumerate(flat)]
        metric = all(m for _, m in out)
        if not metric:
            warnings.warn(f"{capture.source}: no sparse points or depth bounds to align the estimated depth to; "
                          "the clip's depth keeps the estimator's own scale (not metric)", stacklevel=2)
        return torch.stack([d for d, _ in out]).reshape(frames.shape + (H, W)), metric

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "root": self._root, "num_views": self.num_views, "layout": self.layout,
                "frame_stride": self.frame_stride, "clips_per_capture": self.clips_per_capture,
                "depth": self.depth, "depth_model": self.depth_model, "format": self.format,
                "normalization": self.normalization, "unit": self.unit}
