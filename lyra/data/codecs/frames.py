"""How a video codec groups frames into latent frames: the one place that states the rule.

A causal codec (Wan, CogVideoX, Hunyuan, LTX, Cosmos) encodes the first frame alone and then
groups of ``time_factor`` frames: ``T' = 1 + (T - 1) / time_factor``. A non-causal codec groups
all frames: ``T' = T / time_factor``. Codecs, decoders (which undo the grouping to emit
Gaussians per frame) and the GEN3C conditioning all use these functions.
"""

from __future__ import annotations

import torch
from torch import Tensor


def frame_rule(time_factor: int, causal_first_frame: bool) -> str:
    if causal_first_frame:
        return f"1 + {time_factor}k frames (the first frame is encoded alone, then groups of {time_factor})"
    return f"a multiple of {time_factor} frames (groups of {time_factor})"


def latent_frame_count(num_frames: int, time_factor: int, causal_first_frame: bool) -> int:
    """T' for T frames; a ValueError naming the rule when T does not group evenly."""
    rest = num_frames - 1 if causal_first_frame else num_frames
    if num_frames < 1 or rest % time_factor:
        first = 1 if causal_first_frame else time_factor  # the smallest count that fits
        below = first + max(0, (num_frames - first) // time_factor) * time_factor
        near = [n for n in (below, below + time_factor) if n != num_frames and n >= first]
        raise ValueError(f"{num_frames} frames do not fit a codec that takes "
                         f"{frame_rule(time_factor, causal_first_frame)}; nearest: {', '.join(map(str, near))}")
    return rest // time_factor + int(causal_first_frame)


def fold_frames(
    x: Tensor,  # [B, T, ...] per-frame values
    time_factor: int,
    causal_first_frame: bool,
) -> Tensor:  # [B, T', time_factor, ...]
    """Group frames the way the codec groups them; a causal codec's lone first frame is repeated
    to fill its group (so a mean over a group is that frame)."""
    latent_frame_count(x.shape[1], time_factor, causal_first_frame)
    if causal_first_frame:
        x = torch.cat([x[:, :1].expand(-1, time_factor - 1, *x.shape[2:]), x], dim=1)
    return x.reshape(x.shape[0], -1, time_factor, *x.shape[2:])


def unfold_frames(
    x: Tensor,  # [B, C, T' * time_factor, ...] per-slot values of the folded layout
    time_factor: int,
    causal_first_frame: bool,
) -> Tensor:  # [B, C, T, ...]
    """Inverse of :func:`fold_frames` along dim 2: drops the causal group's repeated slots."""
    return x[:, :, time_factor - 1 :] if causal_first_frame else x


def frame_slot(
    frame: Tensor,  # [...] source frame indices
    time_factor: int,
    causal_first_frame: bool,
) -> tuple[Tensor, Tensor]:  # [...] the latent frame whose group holds each frame, [...] its slot in the group
    """Where ``fold_frames`` puts a frame: a causal codec's lone first frame fills its group's last slot."""
    folded = frame + (time_factor - 1 if causal_first_frame else 0)
    return folded // time_factor, folded % time_factor


def latent_frame_of(
    frame: Tensor,  # [...] source frame indices
    time_factor: int,
    causal_first_frame: bool,
) -> Tensor:  # [...] the latent frame whose group holds each source frame
    return frame_slot(frame, time_factor, causal_first_frame)[0]


def last_frame_of(
    latent_frame: Tensor,  # [...] latent frame indices
    time_factor: int,
    causal_first_frame: bool,
) -> Tensor:  # [...] the last source frame of each latent frame's group
    """A causal codec's latent frame 0 is frame 0 alone, latent frame l its group ending at frame
    ``l * time_factor``; a non-causal codec's ends at ``l * time_factor + time_factor - 1``."""
    return latent_frame * time_factor + (0 if causal_first_frame else time_factor - 1)


def check_clip_size(
    num_frames: int | None,
    height: int | None,
    width: int | None,
    time_factor: int,
    space_factor: int,
    causal_first_frame: bool,
    patch_size: int = 1,
) -> None:
    """The one clip-size rule: frames must group the way the codec groups them, and every image side
    must be a multiple of ``space_factor x patch_size`` (the codec makes one latent pixel of
    ``space_factor`` pixels, a decoder reads ``patch_size`` latent pixels per token). A ValueError
    names the rule and the nearest sizes that fit; ``None`` skips a dimension."""
    if num_frames is not None:
        latent_frame_count(num_frames, time_factor, causal_first_frame)
    step = space_factor * patch_size
    for name, size in (("height", height), ("width", width)):
        if size is not None and (size < step or size % step):
            near = sorted({max(step, size // step * step), (size // step + 1) * step})
            raise ValueError(f"{name} {size} is not a multiple of {step} pixels (the codec's space_factor {space_factor} "
                             f"x the decoder's patch_size {patch_size}); use e.g. {' or '.join(map(str, near))}")
