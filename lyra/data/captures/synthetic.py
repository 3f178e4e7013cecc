"""A procedural world filmed along a camera path and stored as a capture: test fixtures and
benchmarks of the capture readers that need no download.

The frames are ray-traced ``ProceduralWorld`` renders along a Lyra spiral, saved as PNG; the
sparse points are pixels with known depth lifted to the world, each observed by the frames whose
depth map agrees with it (a COLMAP-like track). The whole world is multiplied by ``units`` so
that scale normalisation has something to undo. With ``marker=True`` a white blob on a black patch
is painted at the projection of one known world point in every frame: where a reader's cameras
put that point must be where the frame shows it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import imageio.v3 as iio
import torch
from torch import Tensor

from lyra.data.captures.capture import Capture
from lyra.data.procedural import SKY_DEPTH, ProceduralWorld
from lyra.render.cameras import (
    c2w_to_viewmat,
    intrinsics_from_fov,
    pixel_rays,
    ray_distance,
    world_to_pixels,
)
from lyra.render.trajectories import make_trajectory
from lyra.utils.atomic import atomic_path

MARKER_SIGMA_PX = 1.5
MARKER_HALF_PX = 7


@dataclass
class FilmedCapture:
    capture: Capture  # in the world's units (no normalisation), pinhole
    depth: Tensor  # [N, H, W] exact z-depth, 0 on the sky
    marker: Tensor | None  # [3] the world point painted in every frame (None without marker)


def _paint_marker(rgb: Tensor, uv: Tensor) -> Tensor:  # [H, W, 3], [2] -> [H, W, 3]
    """A Gaussian blob (white on a black square) centred exactly on continuous pixel ``uv``."""
    H, W = rgb.shape[:2]
    cu, cv = int(uv[0]), int(uv[1])
    rows = slice(max(cv - MARKER_HALF_PX, 0), min(cv + MARKER_HALF_PX + 1, H))
    cols = slice(max(cu - MARKER_HALF_PX, 0), min(cu + MARKER_HALF_PX + 1, W))
    v, u = torch.meshgrid(torch.arange(H)[rows] + 0.5, torch.arange(W)[cols] + 0.5, indexing="ij")
    blob = torch.exp(-((u - uv[0]) ** 2 + (v - uv[1]) ** 2) / (2 * MARKER_SIGMA_PX**2))
    out = rgb.clone()
    out[rows, cols] = blob[..., None].expand(-1, -1, 3)
    return out


def film_procedural(
    folder: str | Path,
    num_frames: int = 12,
    height: int = 64,
    width: int = 96,
    seed: int = 0,
    num_points: int = 600,
    units: float = 3.7,
    marker: bool = False,
) -> FilmedCapture:
    """Film ``ProceduralWorld(seed)`` along a spiral into ``folder/frame_00000.png ...``.

    Args:
        folder: where the PNG frames go (created).
        num_frames: frames along the path.
        height, width: frame size in pixels.
        seed: the world's seed (also the path's and the sampled points').
        num_points: sparse points lifted from the depth maps.
        units: world units per procedural unit (poses, points and depth are multiplied by it).
        marker: paint a blob at the projection of a known point in every frame (``FilmedCapture.marker``).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    world = ProceduralWorld(seed)
    g = torch.Generator().manual_seed(seed)
    K = intrinsics_from_fov(60.0, width, height)
    start = world.start_view(K, height, width, g)
    c2w = make_trajectory("spiral", start, world.center, num_frames, world.scene_scale, magnitude=0.5).float()
    Ks = K.expand(num_frames, 3, 3).clone()
    rgb, depth = world.render(c2w, Ks, height, width)
    depth = torch.where(depth >= SKY_DEPTH, torch.zeros_like(depth), depth)
    points, colors = _lift_points(rgb, depth, c2w, Ks, num_points, g)
    c2w = c2w.double()
    c2w[:, :3, 3] *= units
    points, depth = points * units, depth * units
    viewmats = c2w_to_viewmat(c2w)
    P = None
    if marker:  # off the first view's optical axis, at the scene's median depth: crops and scales show
        dm = float(depth[0][depth[0] > 0].median())
        P = (c2w[0] @ torch.tensor([0.25 * dm, -0.15 * dm, dm, 1.0], dtype=torch.float64))[:3]
    paths = []
    for i in range(num_frames):
        frame = rgb[i]
        if P is not None:
            uv = world_to_pixels(P[None], viewmats[i], Ks[i].double())[0][0].float()
            if MARKER_HALF_PX <= uv[0] < width - MARKER_HALF_PX and MARKER_HALF_PX <= uv[1] < height - MARKER_HALF_PX:
                frame = _paint_marker(frame, uv)
        paths.append(folder / f"frame_{i:05d}.png")
        with atomic_path(paths[-1]) as tmp:
            iio.imwrite(tmp, (frame * 255).round().clamp(0, 255).to(torch.uint8).numpy(), extension=".png")
    observations = _observations(points, depth, viewmats, Ks.double())
    capture = Capture(name=folder.name, format="colmap", source=folder, c2w=c2w, K=Ks.double(),
                      image_sizes=torch.tensor([[height, width]], dtype=torch.float64).expand(num_frames, 2).clone(),
                      image_paths=paths, points=points, point_colors=colors, observations=observations,
                      timestamps=torch.arange(num_frames, dtype=torch.float64) / 30)
    return FilmedCapture(capture, depth.float(), P)


def _lift_points(
    rgb: Tensor,  # [N, H, W, 3]
    depth: Tensor,  # [N, H, W] z-depth, 0 on the sky
    c2w: Tensor,  # [N, 4, 4]
    K: Tensor,  # [N, 3, 3]
    n: int,
    g: torch.Generator,
) -> tuple[Tensor, Tensor]:  # points [P, 3] float64, colours [P, 3]
    N, H, W = depth.shape
    o, d = pixel_rays(c2w.double(), K.double(), H, W)  # [N, H, W, 3]
    dist = ray_distance(depth.double(), d, c2w.double())
    world = (o + d * dist[..., None]).reshape(-1, 3)
    known = (depth.reshape(-1) > 0).nonzero()[:, 0]
    pick = known[torch.randperm(len(known), generator=g)[:n]]
    return world[pick], rgb.reshape(-1, 3)[pick]


def _observations(
    points: Tensor,  # [P, 3]
    depth: Tensor,  # [N, H, W] exact z-depth
    viewmats: Tensor,  # [N, 4, 4]
    K: Tensor,  # [N, 3, 3]
) -> list[Tensor]:  # N x [M_i] indices of the points each frame sees
    """Per frame, the points it sees: in view, and their depth agrees with the depth map (not occluded)."""
    N, H, W = depth.shape
    seen = []
    for i in range(N):
        uv, z = world_to_pixels(points, viewmats[i], K[i])
        col, row = uv[:, 0].floor().long(), uv[:, 1].floor().long()
        inside = (z > 0) & (col >= 0) & (col < W) & (row >= 0) & (row < H)
        at = depth[i][row.clamp(0, H - 1), col.clamp(0, W - 1)].double()
        seen.append((inside & ((at - z).abs() < 0.01 * z)).nonzero()[:, 0])
    return seen
