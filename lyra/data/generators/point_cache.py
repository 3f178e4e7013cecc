"""The "3D cache" of GEN3C: lift an image to a point cloud with its depth, re-render it along camera paths.

Every pixel becomes one small isotropic Gaussian at its unprojected position. Its world-space
standard deviation is ``point_radius_px * z / f`` (``point_radius_px`` source pixels at depth z),
so in the source view the splats of neighbouring pixels overlap just enough to close the image
(0.4 px keeps the bleed of a neighbour's colour under ~5 % while leaving no cracks at the
pixel corners), and they grow or shrink with perspective in other views. Pixels the cloud does
not cover (disocclusions, the outside of the source frustum, cracks when the camera dollies in)
get ``alpha < hole_threshold``: those are the holes the video model must fill.

Rendered colours are divided by alpha so partially covered pixels are not darkened; holes are
black. Rendering goes through :func:`lyra.render.rasterization` (our torch rasterizer on CPU,
gsplat on CUDA), a few cameras per call to bound memory. ``plan_cache`` puts it together for
one input image: identity input camera, Lyra trajectories around the median depth, the renders.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from lyra.data.codecs.frames import fold_frames
from lyra.render.cameras import (
    intrinsics_from_fov,
    pixel_rays,
    ray_distance,
    validate_intrinsics,
)
from lyra.render.gaussians import Gaussians
from lyra.render.rasterization import Backend
from lyra.render.renderer import GaussianRenderer
from lyra.render.trajectories import make_trajectory


@dataclass
class PointCloud:
    points: Tensor  # [N, 3] world positions
    colors: Tensor  # [N, 3] RGB in [0, 1]
    sigmas: Tensor  # [N] world-space standard deviation of each point's Gaussian


@dataclass
class CacheRender:
    rgb: Tensor  # [..., H, W, 3] warped frames, holes black
    holes: Tensor  # [..., H, W] bool, True where the cache has nothing to show
    depth: Tensor  # [..., H, W] expected z-depth of the cache, 0 in holes
    alpha: Tensor  # [..., H, W] accumulated opacity


def lift_to_points(
    image: Tensor,  # [H, W, 3] in [0, 1]
    depth: Tensor,  # [H, W] z-depth (distance along the optical axis, not along the ray)
    c2w: Tensor,  # [4, 4]
    K: Tensor,  # [3, 3]
    point_radius_px: float = 0.4,
) -> PointCloud:
    """Unproject every pixel centre to its 3D point; z-depth -> ray length via the ray's z cosine."""
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"image must be [H, W, 3], got {tuple(image.shape)}")
    H, W = image.shape[:2]
    if tuple(depth.shape) != (H, W):
        raise ValueError(f"depth must be [H, W] = {(H, W)} to match the image, got {tuple(depth.shape)}")
    if not torch.isfinite(depth).all() or (depth <= 0).any():
        raise ValueError("depth must be finite and > 0 everywhere (z-depth in scene units); "
                         "clamp or inpaint invalid pixels before lifting")
    if point_radius_px <= 0:
        raise ValueError(f"point_radius_px must be > 0, got {point_radius_px}")
    validate_intrinsics(K)
    c2w, K, depth = c2w.float(), K.float().to(c2w.device), depth.float().to(c2w.device)
    origins, dirs = pixel_rays(c2w, K, H, W)  # [H, W, 3] each
    points = origins + dirs * ray_distance(depth, dirs, c2w)[..., None]
    focal = torch.sqrt(K[0, 0] * K[1, 1])
    sigmas = point_radius_px * depth / focal
    return PointCloud(points.reshape(-1, 3), image.reshape(-1, 3).float().to(c2w.device), sigmas.reshape(-1))


def render_points(
    cloud: PointCloud,
    c2w: Tensor,  # [..., 4, 4] target cameras
    K: Tensor,  # [..., 3, 3]
    height: int,
    width: int,
    hole_threshold: float = 0.5,
    cameras_per_call: int = 16,
    backend: Backend = "auto",
) -> CacheRender:  # fields [..., H, W(, 3)]
    """Render the cloud at every camera: the warped frames and hole masks of the 3D cache."""
    if c2w.shape[-2:] != (4, 4) or K.shape[-2:] != (3, 3) or c2w.shape[:-2] != K.shape[:-2]:
        raise ValueError(f"c2w [..., 4, 4] and K [..., 3, 3] need the same batch dims, got "
                         f"{tuple(c2w.shape)} and {tuple(K.shape)}")
    if not 0.0 < hole_threshold < 1.0:
        raise ValueError(f"hole_threshold must lie in (0, 1), got {hole_threshold}")
    batch = c2w.shape[:-2]
    device = cloud.points.device
    N = cloud.points.shape[0]
    quats = torch.zeros(N, 4, device=device)
    quats[:, 0] = 1.0
    points = Gaussians(cloud.points, quats, cloud.sigmas[:, None].expand(N, 3), torch.ones(N, device=device),
                       cloud.colors, check_values=False)
    # eps2d only guards against degenerate footprints; the sizes already cover the pixel grid.
    renderer = GaussianRenderer(background=(0.0, 0.0, 0.0), backend=backend, camera_chunk=cameras_per_call,
                                eps2d=0.01)
    out = renderer(points[None], c2w.reshape(1, -1, 4, 4).float().to(device), K.reshape(1, -1, 3, 3).float().to(device),
                   height, width)
    alpha = out.alpha[0]  # [I, H, W]
    holes = alpha < hole_threshold
    rgb = (out.rgb[0] / alpha[..., None].clamp_min(1e-6)).clamp(0, 1).masked_fill(holes[..., None], 0.0)
    depth = out.depth[0].masked_fill(holes, 0.0)
    shape = batch + (height, width)
    return CacheRender(rgb.reshape(shape + (3,)), holes.reshape(shape), depth.reshape(shape), alpha.reshape(shape))


def mask_to_latent_grid(
    holes: Tensor,  # [..., T, H, W] bool
    time_factor: int,
    space_factor: int,
    causal_first_frame: bool = True,
) -> Tensor:  # [..., T', H / space_factor, W / space_factor] float hole fraction in [0, 1]
    """Hole mask at latent resolution, grouped in time exactly like the codec groups frames.

    Each latent cell holds the *fraction* of its pixels that are holes (area average over the
    ``space_factor**2`` block and the frames of its temporal group), which tells the model how much
    of the cell it must invent rather than just whether it must.
    """
    *batch, T, H, W = holes.shape
    if H % space_factor or W % space_factor:
        raise ValueError(f"mask size {(H, W)} is not a multiple of space_factor {space_factor}")
    m = F.avg_pool2d(holes.float().reshape(-1, T, H, W), space_factor)  # [B, T, h, w]
    out = fold_frames(m, time_factor, causal_first_frame).mean(2)  # [B, T', h, w]
    return out.reshape(*batch, *out.shape[1:])


@dataclass
class CachePlan:
    """Everything a camera-controlled generation is conditioned on, before any diffusion."""

    image: Tensor  # [H, W, 3] input view
    depth: Tensor  # [H, W] its z-depth
    c2w: Tensor  # [V, T, 4, 4] target cameras; frame 0 of every view is the input camera
    K: Tensor  # [V, T, 3, 3]
    cache: CacheRender  # fields [V, T, H, W(, 3)]


def plan_cache(
    image: Tensor,  # [H, W, 3] in [0, 1]
    depth: Tensor,  # [H, W] z-depth
    num_frames: int,
    trajectories: Sequence[str],
    fov_x_deg: float = 60.0,
    point_radius_px: float = 0.4,
    hole_threshold: float = 0.5,
    seed: int = 0,
    backend: Backend = "auto",
) -> CachePlan:
    """Input camera = identity with a ``fov_x_deg`` pinhole; each trajectory looks at the point at
    median depth on the optical axis and moves by Lyra's ranges times that depth (seeded draws)."""
    H, W = image.shape[:2]
    K0 = intrinsics_from_fov(fov_x_deg, W, H).to(image.device)
    start = torch.eye(4, device=image.device)
    cloud = lift_to_points(image, depth, start, K0, point_radius_px)
    median = float(depth.median())
    center = torch.tensor([0.0, 0.0, median], dtype=torch.float64)
    draws = torch.Generator().manual_seed(int(seed))
    c2w = torch.stack([make_trajectory(kind, start.cpu(), center, num_frames, scene_scale=median, generator=draws)
                       for kind in trajectories]).to(image.device)  # [V, T, 4, 4]
    K = K0.expand(c2w.shape[:2] + (3, 3)).contiguous()
    cache = render_points(cloud, c2w, K, H, W, hole_threshold=hole_threshold, backend=backend)
    return CachePlan(image, depth.float(), c2w, K, cache)
