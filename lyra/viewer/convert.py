"""Conversions between viser's view of a scene and lyra's: cameras, intrinsics, splat arrays.

viser cameras are OpenCV-axed like lyra's (x right, y down, looking along +z), given as the wxyz
rotation and position of camera-to-world, with a *vertical* field of view in radians. So a viewer
camera is a lyra ``c2w`` with no axis change, and its intrinsics for an image of ``width x height``
are square pixels with ``fy = height / (2 tan(fov / 2))`` and the principal point at the centre.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from lyra.render.cameras import make_intrinsics
from lyra.render.formats import gaussians_rgb
from lyra.render.gaussians import Gaussians
from lyra.render.projection import quat_scale_to_covar
from lyra.render.rotations import quat_to_rotmat, rotmat_to_quat


def viewer_camera_to_c2w(
    wxyz: Sequence[float] | np.ndarray,  # [4] rotation of camera-to-world
    position: Sequence[float] | np.ndarray,  # [3] camera centre in the world
) -> Tensor:  # [4, 4] float64 camera-to-world, OpenCV axes
    """A viser camera as lyra's ``c2w``: both are OpenCV-axed, so no axis flip is involved."""
    c2w = torch.eye(4, dtype=torch.float64)
    c2w[:3, :3] = quat_to_rotmat(torch.as_tensor(np.asarray(wxyz, dtype=np.float64)))
    c2w[:3, 3] = torch.as_tensor(np.asarray(position, dtype=np.float64))
    return c2w


def c2w_to_viewer_camera(c2w: Tensor) -> tuple[np.ndarray, np.ndarray]:  # [4, 4] -> wxyz [4], position [3]
    c2w = torch.as_tensor(c2w, dtype=torch.float64)
    return rotmat_to_quat(c2w[:3, :3]).numpy(), c2w[:3, 3].numpy().copy()


def viewer_intrinsics(fov_y: float, width: int, height: int) -> Tensor:  # [3, 3]
    """Pixel intrinsics of a viewer camera with vertical field of view ``fov_y`` (radians)."""
    if not 0.0 < fov_y < math.pi:
        raise ValueError(f"fov_y must lie in (0, pi) radians, got {fov_y}")
    f = 0.5 * height / math.tan(fov_y / 2)
    return make_intrinsics(f, f, width / 2.0, height / 2.0)


def intrinsics_fov_y(K: Tensor, height: int) -> float:  # K [3, 3] -> radians
    """The vertical field of view viser needs to show what ``K`` sees (square pixels, centred)."""
    return 2.0 * math.atan(0.5 * height / float(K[1, 1]))


def splat_arrays(gaussians: Gaussians) -> dict[str, np.ndarray]:
    """What viser's ``add_gaussian_splats`` / ``set_gaussians`` take, for one unbatched scene."""
    if gaussians.batch_shape:
        raise ValueError(f"the viewer shows one scene at a time, got batch_shape {tuple(gaussians.batch_shape)}")
    g = gaussians.detach().to("cpu", torch.float32)
    return {
        "centers": g.means.numpy(),
        "covariances": quat_scale_to_covar(g.quats, g.scales).numpy(),
        "rgbs": gaussians_rgb(g).numpy(),
        "opacities": g.opacities[:, None].numpy(),
    }
