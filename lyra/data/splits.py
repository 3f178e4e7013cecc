"""The evaluation protocol's split of a clip (docs/evaluation.md), in one place.

A test sample is one scene with one *held-out* trajectory: the decoder reads every other
trajectory (all frames); targets are ``num_frames`` evenly spaced frames of every trajectory.
Scores against ground truth count only the held-out trajectory, and never a frame that is also a
source frame: the same camera at the same scene time as a frame of a trajectory the decoder reads.
Every Lyra trajectory starts at the same view, so that is frame 0 of a clip; in a time-reversed clip
(stored re-reversed, docs/conventions.md) the shared view comes last, at the last frame's time.

``lightning test`` (through ``ClipDataModule``'s test split) and ``benchmarks/`` both call
:func:`heldout_split`; nothing else decides which views and frames are scored. It lives with the
data (the test split is a way of sampling clips); ``lyra.eval`` scores what it selects.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor

from lyra.data.clip import Clip


def target_frames(num_frames: int, count: int) -> Tensor:  # [count] frame indices
    """``count`` evenly spaced frames from first to last (5 of 17: 0, 4, 8, 12, 16)."""
    if not 1 <= count <= num_frames:
        raise ValueError(f"cannot pick {count} target frames from {num_frames}; use 1..{num_frames}")
    return torch.linspace(0, num_frames - 1, count).round().long()


def resolve_view(clip: Clip, view: str | int) -> int:
    """Index of a trajectory given by name (``clip.meta["trajectories"]``) or by index."""
    names = list(clip.meta.get("trajectories") or [])
    if isinstance(view, str) and not view.lstrip("-").isdigit():
        if view not in names:
            raise ValueError(f"held-out trajectory {view!r} is not in this clip's trajectories {names or '(unnamed)'}; "
                             "name one of them or give a view index")
        return names.index(view)
    index = int(view)
    if not -clip.num_views <= index < clip.num_views:
        raise ValueError(f"held-out view {index} does not exist in a {clip.num_views}-view clip")
    return index % clip.num_views


def view_name(clip: Clip, index: int) -> str:
    names = list(clip.meta.get("trajectories") or [])
    return names[index] if index < len(names) else f"view{index}"


def heldout_split(
    clip: Clip,
    heldout: str | int,
    num_target_frames: int,
) -> tuple[Clip, Clip]:
    """(source, target) of one test sample.

    The source holds every trajectory but ``heldout`` with all frames (latents, cameras, RGB,
    depth). The target holds ``num_target_frames`` evenly spaced frames of *every* trajectory in
    the clip's order; ``target.meta`` records ``heldout`` (one bool per target view), the
    held-out trajectory's name, ``frames`` (the target frame indices) and ``truth_frames`` (the
    positions among them that count against ground truth: every held-out frame that is not also a
    source frame, :func:`source_duplicates`).
    """
    if clip.num_views < 2:
        raise ValueError("a held-out evaluation needs clips of at least 2 trajectories")
    h = resolve_view(clip, heldout)
    frames = target_frames(clip.num_frames, num_target_frames)
    src = clip.select(views=[v for v in range(clip.num_views) if v != h])
    every = clip.select(frames=frames)
    tgt = replace(every, meta={**clip.meta, "heldout": [v == h for v in range(clip.num_views)],
                               "heldout_name": view_name(clip, h), "frames": frames.tolist(),
                               "truth_frames": [i for i, dup in enumerate(source_duplicates(clip, h, frames))
                                                if not dup]})
    return src, tgt


def source_duplicates(
    clip: Clip,
    heldout: int,
    frames: Tensor,  # [F] frame indices of the held-out trajectory
    tolerance: float = 1e-5,
) -> list[bool]:  # [F] whether each frame is also a frame of another trajectory
    """Which of the held-out trajectory's ``frames`` some other trajectory also holds: the same camera
    (rotation, centre and intrinsics within ``tolerance``, the centre relative to the cameras' spread)
    at the same scene time. Such a frame is one the decoder reads, not a novel view."""
    c2w, K, time = clip.c2w.double(), clip.K.double(), clip.time.double()
    others = [v for v in range(clip.num_views) if v != heldout]
    spread = (c2w[..., :3, 3] - c2w[..., :3, 3].reshape(-1, 3).mean(0)).norm(dim=-1).max().clamp_min(1.0)
    held, rest = c2w[heldout, frames][:, None, None], c2w[others][None]  # [F, 1, 1, 4, 4], [1, V-1, T, 4, 4]
    same_rot = (rest[..., :3, :3] - held[..., :3, :3]).abs().amax((-2, -1)) <= tolerance
    same_centre = (rest[..., :3, 3] - held[..., :3, 3]).norm(dim=-1) <= tolerance * spread
    k = K[heldout, frames][:, None, None]
    same_K = (K[others][None] - k).abs().amax((-2, -1)) <= tolerance * k.abs().amax((-2, -1))
    same_time = (time[others][None] - time[heldout, frames][:, None, None]).abs() <= tolerance
    return (same_rot & same_centre & same_K & same_time).flatten(1).any(1).tolist()

