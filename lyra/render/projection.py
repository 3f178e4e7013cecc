"""EWA projection of 3D Gaussians to screen space, with gsplat's CUDA semantics, in plain PyTorch.

Differentiable by autograd. Matches ``gsplat``'s ``fully_fused_projection`` (pinhole): the same
Jacobian clamping at 1.3x the field of view, ``eps2d`` dilation, antialiasing compensation,
opacity-aware radius rule (``extend = min(3.33, sqrt(2 ln(opacity * 255)))``), near/far and
off-screen culling (radius 0 marks a culled Gaussian).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from lyra.render.rotations import quat_to_rotmat

ALPHA_THRESHOLD = 1.0 / 255.0


class Projection(NamedTuple):
    radii: Tensor  # [..., C, N, 2] int32, 0 where culled
    means2d: Tensor  # [..., C, N, 2] pixels
    depths: Tensor  # [..., C, N] camera z
    conics: Tensor  # [..., C, N, 3] upper triangle (a, b, c) of the inverse 2D covariance
    opacities: Tensor  # [..., C, N] times the antialiasing compensation when enabled


def quat_scale_to_covar(
    quats: Tensor,  # [..., N, 4] wxyz
    scales: Tensor,  # [..., N, 3]
) -> Tensor:  # [..., N, 3, 3]
    R = quat_to_rotmat(quats)
    M = R * scales[..., None, :]
    return M @ M.transpose(-1, -2)


def project_gaussians(
    means: Tensor,  # [..., N, 3]
    quats: Tensor,  # [..., N, 4]
    scales: Tensor,  # [..., N, 3]
    opacities: Tensor,  # [..., N]
    viewmats: Tensor,  # [..., C, 4, 4]
    Ks: Tensor,  # [..., C, 3, 3]
    width: int,
    height: int,
    eps2d: float = 0.3,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    radius_clip: float = 0.0,
    antialiased: bool = False,
    opacity_aware_radius: bool = True,
) -> Projection:
    """``opacity_aware_radius=False`` uses the plain 3.33-sigma box of gsplat's PyTorch reference
    (``gsplat.cuda._torch_impl``); the default follows its CUDA kernels."""
    covars = quat_scale_to_covar(quats, scales)  # [..., N, 3, 3]
    R = viewmats[..., :3, :3]  # [..., C, 3, 3]
    t = viewmats[..., :3, 3]  # [..., C, 3]
    means_c = torch.einsum("...cij,...nj->...cni", R, means) + t[..., None, :]
    covars_c = torch.einsum("...cij,...njk,...clk->...cnil", R, covars, R)

    tx, ty, tz = means_c.unbind(-1)  # [..., C, N]
    fx, fy = Ks[..., 0, 0, None], Ks[..., 1, 1, None]
    cx, cy = Ks[..., 0, 2, None], Ks[..., 1, 2, None]
    # Clamp the Jacobian's evaluation point to 1.3x the frustum, as gsplat does, so Gaussians
    # far outside the view do not blow up into huge screen-space ellipses.
    tan_fovx, tan_fovy = 0.5 * width / fx, 0.5 * height / fy
    lim_x_pos = (width - cx) / fx + 0.3 * tan_fovx
    lim_x_neg = cx / fx + 0.3 * tan_fovx
    lim_y_pos = (height - cy) / fy + 0.3 * tan_fovy
    lim_y_neg = cy / fy + 0.3 * tan_fovy
    # Gaussians nearer than the near plane (or behind the camera) are culled (radius 0), but
    # autograd still runs through their entries: at tz ~ 0 the Jacobian overflows, det(cov2d) becomes inf - inf = NaN, and
    # 0 * NaN poisons every gradient of the batch. Project them as if at depth 1: finite values
    # that nothing reads, and no gradient.
    safe_tz = torch.where(tz >= near_plane, tz, torch.ones_like(tz)).clamp_min(1e-12)
    jx = safe_tz * torch.clamp(tx / safe_tz, min=-lim_x_neg, max=lim_x_pos)
    jy = safe_tz * torch.clamp(ty / safe_tz, min=-lim_y_neg, max=lim_y_pos)
    zero = torch.zeros_like(tz)
    J = torch.stack(
        [fx / safe_tz, zero, -fx * jx / safe_tz**2, zero, fy / safe_tz, -fy * jy / safe_tz**2], dim=-1
    ).reshape(tz.shape + (2, 3))
    cov2d = J @ covars_c @ J.transpose(-1, -2)  # [..., C, N, 2, 2]
    means2d = torch.stack([fx * tx / safe_tz + cx, fy * ty / safe_tz + cy], dim=-1)

    det_orig = cov2d[..., 0, 0] * cov2d[..., 1, 1] - cov2d[..., 0, 1] * cov2d[..., 1, 0]
    c00 = cov2d[..., 0, 0] + eps2d
    c11 = cov2d[..., 1, 1] + eps2d
    c01 = 0.5 * (cov2d[..., 0, 1] + cov2d[..., 1, 0])
    det = c00 * c11 - c01 * c01
    det_safe = det.clamp(min=1e-10)
    conics = torch.stack([c11 / det_safe, -c01 / det_safe, c00 / det_safe], dim=-1)

    opac = opacities[..., None, :].expand(tz.shape)
    if antialiased:
        opac = opac * torch.sqrt(torch.clamp(det_orig / det_safe, min=0.0))

    with torch.no_grad():
        extend = torch.full_like(opac, 3.33)
        if opacity_aware_radius:
            extend = torch.sqrt(2.0 * torch.log(opac.clamp_min(ALPHA_THRESHOLD) / ALPHA_THRESHOLD)).clamp(max=3.33)
        radius_x = torch.ceil(extend * torch.sqrt(c00.clamp_min(0)))
        radius_y = torch.ceil(extend * torch.sqrt(c11.clamp_min(0)))
        valid = (tz >= near_plane) & (tz <= far_plane) & (det > 0)
        if opacity_aware_radius:
            valid &= opac >= ALPHA_THRESHOLD
        valid &= ~((radius_x <= radius_clip) & (radius_y <= radius_clip))
        mx, my = means2d[..., 0], means2d[..., 1]
        valid &= (mx + radius_x > 0) & (mx - radius_x < width) & (my + radius_y > 0) & (my - radius_y < height)
        radii = torch.stack([radius_x, radius_y], dim=-1)
        radii = torch.where(valid[..., None], radii, torch.zeros_like(radii)).to(torch.int32)
    return Projection(radii, means2d, tz, conics, opac)
