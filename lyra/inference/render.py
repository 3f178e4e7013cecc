"""Rendering static and dynamic (one Gaussian set per time) scenes along camera paths."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from lyra.inference.clips import nearest_set
from lyra.inference.progress import bar
from lyra.render.gaussians import Gaussians
from lyra.render.renderer import GaussianRenderer


@torch.no_grad()
def render_frames(
    sets: Sequence[Gaussians],  # one unbatched scene per time (a static scene: one set)
    set_times: Sequence[float] | None,  # [M] the sets' times; None for a static scene
    c2w: Tensor,  # [F, 4, 4]
    K: Tensor,  # [F, 3, 3]
    height: int,
    width: int,
    frame_times: Tensor | None = None,  # [F] scene time of every frame (dynamic); None: the first set
    background: Sequence[float] = (1.0, 1.0, 1.0),
    camera_chunk: int = 8,
    device: str | torch.device = "cpu",
    desc: str = "render",
) -> Tensor:  # [F, H, W, 3] in [0, 1]
    """Frame f shows the set nearest in time to ``frame_times[f]`` (a tie goes to the earlier set) from
    camera f; sets may differ in size. At most ``camera_chunk`` cameras and one set are on the device
    at a time."""
    F = c2w.shape[0]
    if K.shape != (F, 3, 3):
        raise ValueError(f"render_frames: c2w [F={F}, 4, 4] needs K [F, 3, 3], got {tuple(K.shape)}")
    if frame_times is None or set_times is None:
        which = torch.zeros(F, dtype=torch.long)
    else:
        which = nearest_set(set_times, frame_times.reshape(-1))
    renderer = GaussianRenderer(background=background, render_mode="RGB", camera_chunk=camera_chunk).to(device)
    out = torch.empty(F, height, width, 3)
    with bar(total=F, desc=desc, unit="frame") as pbar:
        for m in which.unique().tolist():
            g = sets[m].to(device=device, dtype=torch.float32)
            frames = (which == m).nonzero().flatten()
            for i in range(0, len(frames), camera_chunk):
                f = frames[i:i + camera_chunk]
                out[f] = renderer.render_path(g, c2w[f].to(device), K[f].to(device), height, width).cpu()
                pbar.update(len(f))
            del g
    return out
