"""The input image's depth, seen from every source camera: an optional input of the decoder.

Lyra's teacher (GEN3C) conditions its video model on a "3D cache": the input image lifted to a
point cloud with a monocular depth estimate, rendered along every trajectory. That depth is in the
trajectories' own scale, so it fixes what the latents' parallax alone leaves loose: the scene's
scale and the surfaces' distances. A decoder built with ``input_depth=True`` reads it
(:class:`~lyra.models.decoders.StaticGaussianDecoder`): as token features, and as the starting
distance of every Gaussian whose pixel it covers. Pixels the input image does not see stay 0
(unknown); there the decoder predicts distance as usual.

``warp_depth`` is the functional core: a z-buffered forward warp of one depth map into many
cameras on a coarse grid (the nearest point per cell). docs/conventions.md has the camera
conventions and which depth a clip holds.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from lyra.render.cameras import (
    c2w_to_viewmat,
    pixel_rays,
    project_to_cameras,
    ray_distance,
    world_to_pixels,
)

# Points per target cell and side, at least: a camera that moves towards a surface spreads its
# points apart, and cells between them would be cracks (unknown). Source pixels are split into
# sub-pixels when the cells are finer than this allows.
POINTS_PER_CELL = 4
SKY_FACTOR = 1e3


def unproject_depth(
    depth: Tensor,  # [B, H, W] z-depth, 0 = unknown
    c2w: Tensor,  # [B, 4, 4]
    K: Tensor,  # [B, 3, 3] for (H, W)
    subsamples: int = 1,
    stride: int = 1,
) -> tuple[Tensor, Tensor]:  # points [B, N, 3] (world), known [B, N] bool
    """World points of every (sub-)pixel, each with its pixel's depth (nearest, so no point floats
    between a foreground and a background surface): ``subsamples``^2 points per pixel, or with
    ``stride`` s one point per s x s block, at the centre of its pixel (s // 2, s // 2). Unknown
    pixels (sky) go far out along their rays (SKY_FACTOR x the deepest known depth), where only their
    direction matters."""
    if subsamples > 1 and stride > 1:
        raise ValueError(f"either subsamples ({subsamples}) or stride ({stride}), not both")
    s = subsamples
    K_fine = K.clone()
    if stride > 1:  # pixel i of the coarse grid is pixel stride i + stride // 2 of the image
        depth = depth[:, stride // 2::stride, stride // 2::stride]
        offset = stride // 2 + 0.5 - 0.5 * stride
        K_fine[:, :2, 2] -= offset
        K_fine[:, :2] /= stride
    B, H, W = depth.shape
    K_fine[:, :2] *= s
    origins, dirs = pixel_rays(c2w, K_fine.to(c2w.dtype), H * s, W * s)  # [B, Hs, Ws, 3]
    z = depth.repeat_interleave(s, dim=1).repeat_interleave(s, dim=2).to(dirs.dtype)
    known = z > 0
    far = SKY_FACTOR * z.flatten(1).amax(1).clamp_min(1.0)[:, None, None]
    z = torch.where(known, z, far.expand_as(z))
    points = origins + dirs * ray_distance(z, dirs, c2w)[..., None]
    return points.reshape(B, -1, 3), known.reshape(B, -1)


def points_for_grid(
    depth: Tensor,  # [B, H, W] z-depth, 0 = unknown
    c2w: Tensor,  # [B, 4, 4]
    K: Tensor,  # [B, 3, 3] for (H, W)
    grid: tuple[int, int],  # (gh, gw) cells the points will be binned into
    stride: int = 1,
) -> tuple[Tensor, Tensor]:  # points [B, N, 3], known [B, N] (``unproject_depth``)
    """The image's points for a warp onto ``grid``: at least POINTS_PER_CELL per cell side (sub-pixels
    where the grid is finer than that), or with ``stride`` k > 1 one per k x k pixels (a grid whose
    cells are wide enough that fewer points still reach every cell: the tokens' 8-pixel cells read 4
    x 4 points at k = 2)."""
    if stride < 1:
        raise ValueError(f"stride must be >= 1 pixel, got {stride}")
    if stride > 1:
        return unproject_depth(depth, c2w, K, stride=stride)
    H, W = depth.shape[-2:]
    return unproject_depth(depth, c2w, K, subsamples=max(1, math.ceil(POINTS_PER_CELL * max(grid[0] / H, grid[1] / W))))


def warp_depth(
    depth: Tensor,  # [B, H, W] z-depth of one image, 0 = unknown (sky)
    c2w_src: Tensor,  # [B, 4, 4] its camera
    K_src: Tensor,  # [B, 3, 3] its intrinsics, for (H, W)
    c2w: Tensor,  # [B, ..., 4, 4] the cameras to see it from
    K: Tensor,  # [B, ..., 3, 3] their intrinsics, for (H, W)
    grid: tuple[int, int],  # (gh, gw) cells over each target image
    fill: int = 0,
    near: float = 1e-3,
    stride: int = 1,
) -> tuple[Tensor, Tensor]:  # depth [B, ..., gh, gw] (0 = unknown), filled [B, ..., gh, gw] bool
    """Forward-warp ``depth`` into every camera of ``c2w`` on a ``grid`` of cells (z-buffer: the
    nearest point of a cell wins). Cells no known point reaches are either sky (an unknown pixel's
    ray lands there: they stay 0) or holes (nothing does: disocclusions, beyond the image's edges),
    which are filled ``fill`` cells deep (``fill_holes``). ``stride``: which points (``points_for_grid``).
    Plain PyTorch; one scatter per call."""
    if depth.ndim != 3 or c2w_src.shape != (depth.shape[0], 4, 4) or K_src.shape != (depth.shape[0], 3, 3):
        raise ValueError(f"depth must be [B, H, W] with c2w_src [B, 4, 4] and K_src [B, 3, 3]; got "
                         f"{tuple(depth.shape)}, {tuple(c2w_src.shape)}, {tuple(K_src.shape)}")
    B, H, W = depth.shape
    gh, gw = grid
    lead = c2w.shape[1:-2]
    points, known = points_for_grid(depth, c2w_src, K_src, grid, stride)
    cams = c2w.reshape(B, -1, 4, 4).to(points.dtype)
    u, v, z = project_to_cameras(points, c2w_to_viewmat(cams), K.reshape(B, -1, 3, 3))  # [B, C, N] each
    col = torch.floor(u * (gw / W)).long()
    row = torch.floor(v * (gh / H)).long()
    lands = (z > near) & (col >= 0) & (col < gw) & (row >= 0) & (row < gh)
    C = cams.shape[1]
    spare = torch.full_like(col, gh * gw)  # misses go to a spare cell
    inf = torch.full_like(z, float("inf"))
    ok = known[:, None] & lands
    nearest = torch.full((B, C, gh * gw + 1), float("inf"), dtype=z.dtype, device=z.device).scatter_reduce(
        2, torch.where(ok, row * gw + col, spare), torch.where(ok, z, inf), reduce="amin")[..., :-1]
    up = ~known[:, None] & lands
    sky_hits = torch.zeros((B, C, gh * gw + 1), dtype=z.dtype, device=z.device).scatter_add(
        2, torch.where(up, row * gw + col, spare), up.to(z.dtype))[..., :-1]
    hit = torch.isfinite(nearest)
    out = torch.where(hit, nearest, torch.zeros_like(nearest)).reshape(B, *lead, gh, gw).to(depth.dtype)
    return fill_holes(out, ((sky_hits > 0) & ~hit).reshape(B, *lead, gh, gw), fill)


@torch.no_grad()
def landing_cells(
    depth: Tensor,  # [B, H, W] z-depth of one image, 0 = unknown (sky: its rays land far out)
    c2w_src: Tensor,  # [B, 4, 4] its camera
    K_src: Tensor,  # [B, 3, 3] its intrinsics, for (H, W)
    c2w: Tensor,  # [B, C, 4, 4] the cameras to see it from
    K: Tensor,  # [B, C, 3, 3] their intrinsics, for (H, W)
    grid: tuple[int, int],  # (gh, gw) cells over each target image
    near: float = 1e-3,
) -> Tensor:  # [B, C, gh, gw] bool: True where a (sub-)pixel of the image lands, its sky included
    """Where the image, lifted with its depth, shows something in each camera; the rest are its holes."""
    B, H, W = depth.shape
    gh, gw = grid
    points, _ = points_for_grid(depth, c2w_src, K_src, grid)
    u, v, z = project_to_cameras(points, c2w_to_viewmat(c2w.to(points.dtype)), K)  # [B, C, N] each
    col, row = torch.floor(u * (gw / W)).long(), torch.floor(v * (gh / H)).long()
    lands = (z > near) & (col >= 0) & (col < gw) & (row >= 0) & (row < gh)
    spare = torch.full_like(col, gh * gw)
    hits = torch.zeros((*col.shape[:2], gh * gw + 1), dtype=torch.int32, device=depth.device).scatter_add(
        2, torch.where(lands, row * gw + col, spare), lands.to(torch.int32))
    return (hits[..., :-1] > 0).reshape(*col.shape[:2], gh, gw)


def hidden_from_input(
    points: Tensor,  # [S, N, 3] world points
    depth: Tensor,  # [S, H, W] the input frame's z-depth, 0 = unknown (sky)
    c2w: Tensor,  # [S, 4, 4] its camera
    K: Tensor,  # [S, 3, 3] for (H, W)
    margin: float = 0.1,
) -> Tensor:  # [S, N] bool
    """Which points the input frame cannot show: outside its view, or behind its surface by more than
    ``margin`` (relative depth, room for an estimate's error). Points in front of its surface or on it
    are what it shows (or proves empty); so are points in front of its sky."""
    S, H, W = depth.shape
    uv, z = world_to_pixels(points, c2w_to_viewmat(c2w.to(points.dtype)), K.to(points.dtype))  # [S, N, 2], [S, N]
    u, v = uv[..., 0].floor().long(), uv[..., 1].floor().long()
    inside = (z > 0) & (u >= 0) & (u < W) & (v >= 0) & (v < H)
    rows = torch.arange(S, device=depth.device)[:, None]
    seen = depth[rows, v.clamp(0, H - 1), u.clamp(0, W - 1)].to(z.dtype)  # [S, N]
    return ~inside | ((seen > 0) & (z > seen * (1 + margin)))


def fill_holes(
    depth: Tensor,  # [..., gh, gw] 0 = unknown
    sky: Tensor,  # [..., gh, gw] bool: unknown cells that stay unknown
    steps: int,
) -> tuple[Tensor, Tensor]:  # depth [..., gh, gw], filled [..., gh, gw] bool
    """Fill holes from their neighbours, ``steps`` cells deep, each step taking the deepest known
    neighbour (3 x 3): a disocclusion shows what lies behind, so the background's depth is the
    better guess. Sky stays unknown, and a hole next to sky but to no known cell becomes sky (the
    sky beyond the input image's edge)."""
    shape = depth.shape
    d = depth.reshape(-1, 1, *shape[-2:])
    keep = sky.reshape(d.shape)
    filled = torch.zeros_like(keep)
    for _ in range(steps):
        hole = (d == 0) & ~keep
        if not hole.any():
            break
        grown = F.max_pool2d(d, 3, stride=1, padding=1)
        new = hole & (grown > 0)
        near_sky = F.max_pool2d(keep.to(d.dtype), 3, stride=1, padding=1) > 0
        d = torch.where(new, grown, d)
        filled |= new
        keep = keep | (hole & ~new & near_sky)
    return d.reshape(shape), filled.reshape(shape)


def depth_features(
    depth: Tensor,  # [...] z-depth, 0 = unknown
    filled: Tensor | None = None,  # [...] bool: cells whose depth was filled in, not seen
) -> Tensor:  # [..., 3] (log depth where known else 0, seen as 0/1, filled as 0/1)
    known = depth > 0
    filled = torch.zeros_like(known) if filled is None else filled
    log = torch.where(known, depth.clamp_min(1e-6).log(), torch.zeros_like(depth))
    return torch.stack([log, (known & ~filled).to(depth.dtype), filled.to(depth.dtype)], dim=-1)


def perturb_depth(
    depth: Tensor,  # [B, H, W] z-depth, 0 = unknown
    log_std: float,
    seeds: list[int],  # one per batch item: the same seed gives the same error
    cells: int = 4,
) -> Tensor:  # [B, H, W]
    """``depth`` times exp(e), e a smooth random field with std ``log_std`` (bilinear over a
    ``cells`` x ``cells`` grid): the kind of low-frequency distortion a monocular depth estimate
    has, to test a decoder that reads exact (procedural) depth against depth it cannot trust."""
    if log_std <= 0:
        return depth
    if len(seeds) != depth.shape[0]:
        raise ValueError(f"need one seed per batch item ({depth.shape[0]}), got {len(seeds)}")
    fields = []
    for seed in seeds:
        gen = torch.Generator().manual_seed(int(seed))
        fields.append(torch.randn(1, 1, cells, cells, generator=gen, dtype=torch.float64))
    field = F.interpolate(torch.cat(fields), size=depth.shape[-2:], mode="bilinear", align_corners=True)
    return depth * torch.exp(log_std * field[:, 0]).to(depth)
