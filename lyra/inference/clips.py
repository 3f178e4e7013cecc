"""Teacher clip -> the student's input batch: what ``lyra generate`` and ``lightning predict`` share."""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor

from lyra.data.clip import Clip, ClipBatch
from lyra.inference.progress import bar
from lyra.models.teacher import TeacherModule


@torch.no_grad()
def make_clip(teacher: TeacherModule, index: int = 0, view_chunk: int | None = None) -> Clip:
    """``teacher.make_clip(index)``, with the codec run on ``view_chunk`` trajectories at a time
    (bounds its peak memory; None: all at once) and progress bars."""
    T, H, W = teacher.num_frames, teacher.height, teacher.width
    gen = teacher.generator.generate(int(index), T, H, W)
    teacher._check_generated(gen, int(index))
    codec, device = teacher.codec, teacher.device
    V = gen.num_views
    step = view_chunk or V
    chunks = range(0, V, step)
    if gen.latents is not None:
        latents = gen.latents.to(device, torch.float32)
    else:
        latents = torch.cat([codec.encode(gen.rgb[i:i + step].to(device, torch.float32))
                             for i in bar(chunks, desc="teacher: encode", unit="chunk")])
    rgb = torch.cat([codec.decode(latents[i:i + step]).float().cpu()
                     for i in bar(chunks, desc="teacher: decode", unit="chunk")])
    meta = {**gen.meta, "index": int(index)}
    return Clip(latents=latents.float().cpu(), rgb=rgb, c2w=gen.c2w.float().cpu(), K=gen.K.float().cpu(),
                time=gen.time.float().cpu(), depth=None if gen.depth is None else gen.depth.float().cpu(),
                gt_rgb=None if gen.gt_rgb is None else gen.gt_rgb.float().cpu(), caption=gen.caption,
                depth_is_metric=gen.depth_is_metric, meta=meta)


def default_times(clip: Clip) -> list[float]:
    """The distinct scene times of the clip's frames (a dynamic decoder outputs one set per time)."""
    return sorted({round(float(t), 6) for t in clip.time.reshape(-1).tolist()})


def check_times(times: Sequence[float]) -> list[float]:
    times = [float(t) for t in times]
    if not times:
        raise ValueError("--times is empty; give at least one scene time in [0, 1]")
    if not all(0.0 <= t <= 1.0 for t in times):
        raise ValueError(f"--times must lie in [0, 1] (normalised scene time), got {times}")
    if any(b < a for a, b in zip(times, times[1:])):
        raise ValueError(f"--times must be non-decreasing, got {times}")
    return times


def clip_batch(
    clip: Clip,
    target_times: Sequence[float] | None = None,
    time_chunk: int | None = None,
    meta: dict[str, Any] | None = None,
) -> ClipBatch:
    """A batch of one: the clip is the source (latents + every camera) and its frames the targets;
    ``meta`` carries the times a dynamic decoder outputs and how many it decodes per pass
    (``StudentModule.predict_step`` reads ``target_times`` and ``time_chunk``)."""
    batch = ClipBatch.collate([(clip, clip)])
    extra = dict(meta or {})
    if target_times is not None:
        extra["target_times"] = check_times(target_times)
    if time_chunk is not None:
        extra["time_chunk"] = int(time_chunk)
    batch.meta[0].update(extra)
    return batch


def nearest_set(
    set_times: Sequence[float],
    frame_times: Tensor,  # [F]
) -> Tensor:  # [F] long: index of the Gaussian set nearest in time to every frame
    st = torch.as_tensor(list(set_times), dtype=torch.float64)
    return (frame_times.double()[:, None] - st[None]).abs().argmin(dim=1)
