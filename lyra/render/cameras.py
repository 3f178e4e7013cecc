"""Camera conventions: the one place that owns them.

Conventions (docs/conventions.md):
- OpenCV camera frame: x right, y down, z forward.
- Data carries camera-to-world ``c2w [..., 4, 4]`` and pixel intrinsics ``K [..., 3, 3]`` for the
  stored resolution; renderers take world-to-camera ``viewmats`` like gsplat.
- World "up" is ``-y`` by default, so an identity ``c2w`` is an upright camera looking along +z.
- Pixel centres sit at integer + 0.5 (the convention of gsplat and of the 3DGS reference).
- Plucker ray of a pixel = (o x d, d) with unit d.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

WORLD_UP = (0.0, -1.0, 0.0)


def c2w_to_viewmat(c2w: Tensor) -> Tensor:  # [..., 4, 4] -> [..., 4, 4]
    """Rigid inverse of a camera-to-world matrix (exact for rotations, no general inverse)."""
    R = c2w[..., :3, :3]
    t = c2w[..., :3, 3:]
    Rt = R.transpose(-1, -2)
    out = torch.zeros_like(c2w)
    out[..., :3, :3] = Rt
    out[..., :3, 3:] = -Rt @ t
    out[..., 3, 3] = 1.0
    return out


def viewmat_to_c2w(viewmat: Tensor) -> Tensor:  # [..., 4, 4] -> [..., 4, 4]
    """World-to-camera back to camera-to-world; the rigid inverse is its own inverse."""
    return c2w_to_viewmat(viewmat)


def make_intrinsics(
    fx: float | Tensor, fy: float | Tensor, cx: float | Tensor, cy: float | Tensor
) -> Tensor:  # [..., 3, 3]
    fx, fy, cx, cy = (torch.as_tensor(v, dtype=torch.float32) for v in (fx, fy, cx, cy))
    fx, fy, cx, cy = torch.broadcast_tensors(fx, fy, cx, cy)
    K = torch.zeros(fx.shape + (3, 3), dtype=fx.dtype)
    K[..., 0, 0], K[..., 1, 1], K[..., 0, 2], K[..., 1, 2] = fx, fy, cx, cy
    K[..., 2, 2] = 1.0
    return K


def intrinsics_from_fov(fov_x_deg: float, width: int, height: int) -> Tensor:  # [3, 3]
    """Square pixels, principal point at the image centre, horizontal field of view in degrees."""
    if not 0.0 < fov_x_deg < 180.0:
        raise ValueError(f"fov_x_deg must lie in (0, 180), got {fov_x_deg}")
    fx = 0.5 * width / torch.tan(torch.deg2rad(torch.tensor(fov_x_deg / 2.0)))
    return make_intrinsics(fx, fx, width / 2.0, height / 2.0)


def validate_intrinsics(K: Tensor, name: str = "K") -> None:  # [..., 3, 3]
    if K.shape[-2:] != (3, 3):
        raise ValueError(f"{name} must have shape [..., 3, 3], got {tuple(K.shape)}")
    if not torch.isfinite(K).all():
        raise ValueError(f"{name} contains NaN or Inf; pass finite pixel intrinsics")
    if (K[..., 0, 0] <= 0).any() or (K[..., 1, 1] <= 0).any():
        raise ValueError(
            f"{name} has a zero or negative focal length (fx={K[..., 0, 0].min().item():g}, "
            f"fy={K[..., 1, 1].min().item():g}); focal lengths are in pixels and must be > 0"
        )


FOV_RANGE_DEG = (1.0, 170.0)  # fields of view a real pinhole camera path or video can have


def check_intrinsics_fit(
    K: Tensor,  # [..., 3, 3] pixel intrinsics
    width: int,
    height: int,
    where: str,
) -> None:
    """Refuse intrinsics that cannot belong to a ``width x height`` image: a field of view outside
    ``FOV_RANGE_DEG`` (e.g. K scaled by 1e6, or given for another resolution), a principal point
    outside the image, or a last row other than [0, 0, 1]. ``where`` names the file for the message."""
    validate_intrinsics(K, where)
    K = K.double().reshape(-1, 3, 3)
    lo, hi = (math.radians(d) for d in FOV_RANGE_DEG)
    fov_x = 2 * torch.atan(width / (2 * K[:, 0, 0]))
    fov_y = 2 * torch.atan(height / (2 * K[:, 1, 1]))
    bad = ((fov_x < lo) | (fov_x > hi) | (fov_y < lo) | (fov_y > hi)).nonzero().flatten()
    if len(bad):
        i = int(bad[0])
        raise ValueError(f"{where}: K[{i}] gives a {math.degrees(fov_x[i]):.3g} x {math.degrees(fov_y[i]):.3g} degree "
                         f"field of view for {width}x{height} pixels (fx={float(K[i, 0, 0]):.6g}, "
                         f"fy={float(K[i, 1, 1]):.6g}); a camera sees {FOV_RANGE_DEG[0]:g} to {FOV_RANGE_DEG[1]:g} "
                         "degrees: K must be in pixels of this image size (not scaled, not normalised)")
    cx, cy = K[:, 0, 2], K[:, 1, 2]
    bad = ((cx < 0) | (cx > width) | (cy < 0) | (cy > height)).nonzero().flatten()
    if len(bad):
        i = int(bad[0])
        raise ValueError(f"{where}: K[{i}] puts the principal point at ({float(cx[i]):.6g}, {float(cy[i]):.6g}), "
                         f"outside the {width}x{height} image; K must be in pixels of this image size")
    last = (K[:, 2] - torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)).abs().amax(dim=1)
    if (last > 1e-6).any():
        i = int((last > 1e-6).nonzero()[0])
        raise ValueError(f"{where}: K[{i}]'s last row is {K[i, 2].tolist()}, not [0, 0, 1]")


def resize_intrinsics(
    K: Tensor,  # [..., 3, 3]
    old_size: tuple[int, int],  # (height, width)
    new_size: tuple[int, int],  # (height, width)
) -> Tensor:  # [..., 3, 3]
    """Intrinsics after resizing the whole image (pixel-centre aligned, as F.interpolate with
    align_corners=False): a point at continuous pixel u maps to u * s."""
    if min(*old_size, *new_size) <= 0:
        raise ValueError(f"resize_intrinsics: sizes must be positive (height, width), got {old_size} -> {new_size}")
    sy = new_size[0] / old_size[0]
    sx = new_size[1] / old_size[1]
    K = K.clone()
    K[..., 0, :] = K[..., 0, :] * sx
    K[..., 1, :] = K[..., 1, :] * sy
    K[..., 2, :] = torch.tensor([0.0, 0.0, 1.0], dtype=K.dtype, device=K.device)
    return K


def crop_intrinsics(K: Tensor, top: int, left: int) -> Tensor:  # [..., 3, 3] -> [..., 3, 3]
    """Intrinsics of a crop whose top-left corner is pixel (top, left) of the original."""
    K = K.clone()
    K[..., 0, 2] = K[..., 0, 2] - left
    K[..., 1, 2] = K[..., 1, 2] - top
    return K


def look_at(
    eye: Tensor,  # [..., 3]
    target: Tensor,  # [..., 3]
    up: Sequence[float] | Tensor = WORLD_UP,
) -> Tensor:  # [..., 4, 4] camera-to-world, OpenCV axes
    eye = torch.as_tensor(eye)
    if not eye.is_floating_point():
        eye = eye.float()  # integer eyes; float64 stays float64 (trajectories are built in float64)
    target = torch.as_tensor(target, dtype=eye.dtype, device=eye.device)
    up = torch.as_tensor(up, dtype=eye.dtype, device=eye.device).expand_as(eye)
    forward = target - eye
    norm = forward.norm(dim=-1, keepdim=True)
    if (norm < 1e-12).any():
        raise ValueError("look_at: eye and target coincide; the viewing direction is undefined")
    z = forward / norm
    # OpenCV y points down (against world up) and x = y cross z; crossing in the other order
    # would give an upside-down camera (a 180-degree roll) with the same determinant.
    x = torch.cross(-up, z, dim=-1)
    xn = x.norm(dim=-1, keepdim=True)
    if (xn < 1e-9).any():
        raise ValueError("look_at: viewing direction is parallel to `up`; pass another up vector")
    x = x / xn
    y = torch.cross(z, x, dim=-1)
    c2w = torch.zeros(eye.shape[:-1] + (4, 4), dtype=eye.dtype, device=eye.device)
    c2w[..., :3, 0], c2w[..., :3, 1], c2w[..., :3, 2] = x, y, z
    c2w[..., :3, 3] = eye
    c2w[..., 3, 3] = 1.0
    return c2w


def relative_to_first(c2w: Tensor) -> Tensor:  # [..., T, 4, 4] -> [..., T, 4, 4]
    """Express every pose in the frame of the first one (first pose becomes identity)."""
    first_inv = c2w_to_viewmat(c2w[..., :1, :, :])
    return first_inv @ c2w


def pixel_rays(
    c2w: Tensor,  # [..., 4, 4]
    K: Tensor,  # [..., 3, 3]
    height: int,
    width: int,
) -> tuple[Tensor, Tensor]:  # origins [..., H, W, 3], unit directions [..., H, W, 3]
    """World-space rays through pixel centres."""
    dtype, device = c2w.dtype, c2w.device
    v, u = torch.meshgrid(
        torch.arange(height, dtype=dtype, device=device) + 0.5,
        torch.arange(width, dtype=dtype, device=device) + 0.5,
        indexing="ij",
    )
    K = K.to(dtype)
    fx, fy = K[..., 0, 0, None, None], K[..., 1, 1, None, None]
    cx, cy = K[..., 0, 2, None, None], K[..., 1, 2, None, None]
    skew = K[..., 0, 1, None, None]
    # K^-1 [u, v, 1] solved by back-substitution; skew is kept so rays invert world_to_pixels exactly.
    y = (v - cy) / fy
    x = (u - cx - skew * y) / fx
    d_cam = torch.stack([x, y, torch.ones_like(x)], dim=-1)  # [..., H, W, 3]
    R = c2w[..., None, None, :3, :3]
    d = (R @ d_cam[..., None]).squeeze(-1)
    d = d / d.norm(dim=-1, keepdim=True)
    o = c2w[..., None, None, :3, 3].expand_as(d)
    return o, d


def ray_distance(
    z: Tensor,  # [..., H, W] z-depth (along the camera's optical axis)
    dirs: Tensor,  # [..., H, W, 3] unit ray directions of those pixels (pixel_rays)
    c2w: Tensor,  # [..., 4, 4] their cameras
) -> Tensor:  # [..., H, W] distance from the camera centre along each ray
    """z-depth -> distance along the pixel's ray: z over the cosine of the ray and the optical axis."""
    cos = (dirs * c2w[..., None, None, :3, 2].to(dirs.dtype)).sum(-1)
    return z / cos.clamp_min(1e-6)


def plucker_rays(
    c2w: Tensor,  # [..., 4, 4]
    K: Tensor,  # [..., 3, 3]
    height: int,
    width: int,
) -> Tensor:  # [..., H, W, 6] = (o x d, d)
    o, d = pixel_rays(c2w, K, height, width)
    return torch.cat([torch.cross(o, d, dim=-1), d], dim=-1)


def world_to_pixels(
    points: Tensor,  # [..., N, 3]
    viewmat: Tensor,  # [..., 4, 4]
    K: Tensor,  # [..., 3, 3]
) -> tuple[Tensor, Tensor]:  # pixels [..., N, 2], depth (camera z) [..., N]
    cam = points @ viewmat[..., :3, :3].transpose(-1, -2) + viewmat[..., None, :3, 3]
    z = cam[..., 2]
    uv = cam @ K.to(cam.dtype).transpose(-1, -2)
    return uv[..., :2] / uv[..., 2:3].clamp_min(1e-12), z


def project_to_cameras(
    points: Tensor,  # [B, N, 3] world points
    viewmat: Tensor,  # [B, C, 4, 4] many cameras per batch item
    K: Tensor,  # [B, C, 3, 3]
) -> tuple[Tensor, Tensor, Tensor]:  # u, v (pixels), z (camera depth): [B, C, N] each
    """``world_to_pixels`` of the same points into many cameras as one matrix product per batch item:
    K R stacked into [C * 3, 3], so the points are not copied per camera (the input depth's warps
    project 10^5 points into ~50 cameras every step). Intrinsics are pinhole (last row 0 0 1), so the
    third row of K [R | t] is the camera depth itself."""
    B, C = viewmat.shape[:2]
    R, t = viewmat[..., :3, :3], viewmat[..., :3, 3]
    Kc = K.to(points.dtype)
    h = ((Kc @ R).reshape(B, C * 3, 3) @ points.transpose(-1, -2)).reshape(B, C, 3, -1) + (Kc @ t[..., None])
    z = h[:, :, 2]
    w = z.clamp_min(1e-12)
    return h[:, :, 0] / w, h[:, :, 1] / w, z
