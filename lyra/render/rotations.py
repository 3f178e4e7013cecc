"""Quaternion (w, x, y, z) and rotation-matrix helpers shared by cameras and Gaussians."""

from __future__ import annotations

import torch
from torch import Tensor


def quat_to_rotmat(quats: Tensor) -> Tensor:  # [..., 4] wxyz (any norm) -> [..., 3, 3]
    q = quats / quats.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    w, x, y, z = q.unbind(-1)
    R = torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    )
    return R.reshape(q.shape[:-1] + (3, 3))


def rotmat_to_quat(R: Tensor) -> Tensor:  # [..., 3, 3] -> [..., 4] wxyz, w >= 0
    """Shepperd's method: pick the numerically largest of w, x, y, z to divide by."""
    m = R
    tr = m[..., 0, 0] + m[..., 1, 1] + m[..., 2, 2]
    cands = torch.stack(
        [
            torch.stack([1 + tr, m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]], -1),
            torch.stack([m[..., 2, 1] - m[..., 1, 2], 1 + m[..., 0, 0] - m[..., 1, 1] - m[..., 2, 2], m[..., 0, 1] + m[..., 1, 0], m[..., 0, 2] + m[..., 2, 0]], -1),
            torch.stack([m[..., 0, 2] - m[..., 2, 0], m[..., 0, 1] + m[..., 1, 0], 1 - m[..., 0, 0] + m[..., 1, 1] - m[..., 2, 2], m[..., 1, 2] + m[..., 2, 1]], -1),
            torch.stack([m[..., 1, 0] - m[..., 0, 1], m[..., 0, 2] + m[..., 2, 0], m[..., 1, 2] + m[..., 2, 1], 1 - m[..., 0, 0] - m[..., 1, 1] + m[..., 2, 2]], -1),
        ],
        dim=-2,
    )  # [..., 4, 4]: row i is 4 * q_i * q
    diag = torch.stack([1 + tr, 1 + m[..., 0, 0] - m[..., 1, 1] - m[..., 2, 2],
                        1 - m[..., 0, 0] + m[..., 1, 1] - m[..., 2, 2], 1 - m[..., 0, 0] - m[..., 1, 1] + m[..., 2, 2]], -1)
    best = diag.argmax(dim=-1)
    q = torch.gather(cands, -2, best[..., None, None].expand(best.shape + (1, 4))).squeeze(-2)
    q = q / q.norm(dim=-1, keepdim=True)
    return torch.where(q[..., :1] < 0, -q, q)


def quat_slerp(q0: Tensor, q1: Tensor, t: Tensor) -> Tensor:  # [..., 4], [..., 4], [...] -> [..., 4]
    """Shortest-arc spherical interpolation of unit quaternions."""
    dot = (q0 * q1).sum(-1, keepdim=True)
    q1 = torch.where(dot < 0, -q1, q1)
    dot = dot.abs().clamp(max=1.0)
    t = t[..., None]
    theta = torch.acos(dot)
    sin = torch.sin(theta)
    near = sin < 1e-6  # nearly equal: fall back to normalised lerp
    w0 = torch.where(near, 1 - t, torch.sin((1 - t) * theta) / torch.where(near, 1.0, sin))
    w1 = torch.where(near, t, torch.sin(t * theta) / torch.where(near, 1.0, sin))
    q = w0 * q0 + w1 * q1
    return q / q.norm(dim=-1, keepdim=True)


def quat_multiply(q1: Tensor, q2: Tensor) -> Tensor:  # [..., 4] wxyz x [..., 4] -> [..., 4]
    """Hamilton product: the rotation q2 followed by q1."""
    w1, x1, y1, z1 = q1.unbind(-1)
    w2, x2, y2, z2 = q2.unbind(-1)
    return torch.stack([
        w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2,
        w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
        w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
        w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2,
    ], dim=-1)
