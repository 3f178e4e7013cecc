"""Where the decoder's copies of one surface overlap: per-Gaussian features for the readout.

A pixel-aligned decoder puts a Gaussian on the ray of every pixel block of every frame it emits
Gaussians for, so each surface point is covered by one copy per frame that sees it, sampled
finely by near frames and coarsely by far ones. Rendered together, the copies blend; a per-scene
fit learns which copy should win where they overlap (the finest one, mostly), a decoder that
sees one token at a time cannot tell. ``copy_features`` measures it geometrically from the
decoder's own depths: every Gaussian is projected into every Gaussian frame, counted as seen
there when it lands on that frame's own surface (its depth within ``tolerance`` of the depth
that frame's Gaussians have at that pixel), and compared with the finest footprint among the
frames that see it. docs/benchmarks.md ("Student quality") has the measurements.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lyra.render.cameras import c2w_to_viewmat, world_to_pixels

NUM_COPY_FEATURES = 2


@torch.no_grad()
def copy_features(
    means: Tensor,  # [S, P * gh * gw, 3] Gaussians of P frames, frame-major, each frame row-major
    c2w: Tensor,  # [S, P, 4, 4] the camera of each Gaussian frame
    K_grid: Tensor,  # [S, P, 3, 3] its intrinsics at the Gaussian grid's resolution
    grid: tuple[int, int],  # (gh, gw)
    tolerance: float = 0.1,  # relative depth difference that still counts as the same surface
) -> Tensor:  # [S, N, 2]: log(frames that see the Gaussian), log(its footprint / the finest of them)
    S, P = c2w.shape[:2]
    gh, gw = grid
    N = means.shape[1]
    if N != P * gh * gw:
        raise ValueError(f"copy_features: {N} Gaussians are not {P} frames of {gh}x{gw}")
    if not tolerance > 0:
        raise ValueError(f"copy tolerance must be > 0, got {tolerance}")
    viewmat = c2w_to_viewmat(c2w)
    # Every Gaussian in every frame's camera: pixel (in grid cells) and camera z.
    uv, z = world_to_pixels(means[:, None].expand(S, P, N, 3), viewmat, K_grid)  # [S, P, N, 2], [S, P, N]
    # Each frame's own surface: its Gaussians' z in their own camera, laid on the grid.
    own = torch.arange(P, device=means.device).repeat_interleave(gh * gw)  # [N] frame of each Gaussian
    each = torch.arange(N, device=means.device)
    surface = z[:, own, each].reshape(S, P, gh, gw)
    u, v = uv[..., 0].floor().long(), uv[..., 1].floor().long()
    inside = (u >= 0) & (u < gw) & (v >= 0) & (v < gh) & (z > 0)
    there = surface.reshape(S, P, gh * gw).gather(2, (v.clamp(0, gh - 1) * gw + u.clamp(0, gw - 1)))
    seen = inside & ((z - there).abs() <= tolerance * z)
    seen[:, own, each] = True  # a Gaussian always lies on its own surface
    # Footprint of one grid cell at the Gaussian, per frame: z / focal (in grid cells).
    focal = torch.sqrt(K_grid[..., 0, 0] * K_grid[..., 1, 1])  # [S, P]
    footprint = z.clamp_min(1e-6) / focal[..., None]  # [S, P, N]
    own_fp = footprint[:, own, each]  # [S, N]
    finest = torch.where(seen, footprint, torch.full_like(footprint, float("inf"))).amin(1)  # [S, N]
    count = seen.sum(1).to(means.dtype)
    return torch.stack([count.log(), (own_fp / finest).clamp_min(1).log()], dim=-1)


def frame_copy_features(
    means: Tensor,  # [B, (M,) V * F * gh * gw, 3] a decoder's Gaussians (M target times, if dynamic)
    c2w: Tensor,  # [B, V, F, 4, 4] the cameras of the frames that emit Gaussians
    K_grid: Tensor,  # [B, V, F, 3, 3] their intrinsics at the Gaussian grid's resolution
    grid: tuple[int, int],  # (gh, gw)
    tolerance: float = 0.1,
) -> Tensor:  # [B, (M,) N, 2] copy_features of every Gaussian set, against its own scene's frames
    B, P = c2w.shape[0], c2w.shape[1] * c2w.shape[2]
    S = means[..., 0, 0].numel()
    cams = c2w.reshape(B, 1, P, 4, 4).expand(B, S // B, P, 4, 4).reshape(S, P, 4, 4)
    K = K_grid.reshape(B, 1, P, 3, 3).expand(B, S // B, P, 3, 3).reshape(S, P, 3, 3)
    feats = copy_features(means.detach().reshape(S, -1, 3), cams, K, grid, tolerance)
    return feats.reshape(*means.shape[:-1], NUM_COPY_FEATURES)
