"""Real spherical harmonics up to degree 3 in the 3DGS coefficient order (as gsplat and the
reference 3DGS code), and the RGB <-> DC-coefficient conversion used by PLY files."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

SH_C0 = 0.28209479177387814
SH_C1 = 0.4886025119029199
SH_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
SH_C3 = (-0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154,
         -0.4570457994644658, 1.445305721320277, -0.5900435899266435)
MAX_SH_DEGREE = 3


def num_sh_bases(degree: int) -> int:
    return (degree + 1) ** 2


def rgb_to_sh0(rgb: Tensor) -> Tensor:  # [..., 3] -> [..., 3]
    return (rgb - 0.5) / SH_C0


def sh0_to_rgb(sh0: Tensor) -> Tensor:  # [..., 3] -> [..., 3]
    return sh0 * SH_C0 + 0.5


def sh_basis(degree: int, dirs: Tensor) -> Tensor:  # [..., 3] unit -> [..., (degree+1)^2]
    if not 0 <= degree <= MAX_SH_DEGREE:
        raise ValueError(f"sh_degree must be in 0..{MAX_SH_DEGREE}, got {degree}")
    out = [torch.full_like(dirs[..., 0], SH_C0)]
    if degree >= 1:
        x, y, z = dirs.unbind(-1)
        out += [-SH_C1 * y, SH_C1 * z, -SH_C1 * x]
    if degree >= 2:
        xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
        out += [SH_C2[0] * xy, SH_C2[1] * yz, SH_C2[2] * (2 * zz - xx - yy), SH_C2[3] * xz, SH_C2[4] * (xx - yy)]
    if degree >= 3:
        out += [
            SH_C3[0] * y * (3 * xx - yy), SH_C3[1] * xy * z, SH_C3[2] * y * (4 * zz - xx - yy),
            SH_C3[3] * z * (2 * zz - 3 * xx - 3 * yy), SH_C3[4] * x * (4 * zz - xx - yy),
            SH_C3[5] * z * (xx - yy), SH_C3[6] * x * (xx - 3 * yy),
        ]
    return torch.stack(out, dim=-1)


def eval_sh(
    degree: int,
    coeffs: Tensor,  # [..., K, 3] with K >= (degree+1)^2
    dirs: Tensor,  # [..., 3] viewing directions (any length)
) -> Tensor:  # [..., 3] raw SH value; renderers add 0.5 and clamp at 0 as 3DGS does
    k = num_sh_bases(degree)
    if coeffs.shape[-2] < k:
        raise ValueError(f"SH degree {degree} needs {k} coefficients per channel, colors have {coeffs.shape[-2]}")
    basis = sh_basis(degree, F.normalize(dirs, dim=-1))
    return (basis[..., None] * coeffs[..., :k, :]).sum(dim=-2)
