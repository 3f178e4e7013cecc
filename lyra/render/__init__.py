"""Cameras, trajectories, Gaussians, rasterization backends, the renderer and PLY I/O.

Conventions (OpenCV cameras, ``c2w`` in data, ``viewmats`` for rasterizers): docs/conventions.md.
"""

from lyra.render.camera_path import CameraPath
from lyra.render.cameras import (
    c2w_to_viewmat,
    crop_intrinsics,
    intrinsics_from_fov,
    look_at,
    make_intrinsics,
    pixel_rays,
    plucker_rays,
    ray_distance,
    relative_to_first,
    resize_intrinsics,
    viewmat_to_c2w,
)
from lyra.render.gaussians import Gaussians
from lyra.render.ply import load_ply, save_ply
from lyra.render.rasterization import rasterization
from lyra.render.renderer import GaussianRenderer, Renders
from lyra.render.trajectories import (
    LYRA_TRAJECTORIES,
    interpolate_poses,
    make_trajectory,
    orbit,
)

__all__ = [
    "LYRA_TRAJECTORIES",
    "CameraPath",
    "GaussianRenderer",
    "Gaussians",
    "Renders",
    "c2w_to_viewmat",
    "crop_intrinsics",
    "interpolate_poses",
    "intrinsics_from_fov",
    "load_ply",
    "look_at",
    "make_intrinsics",
    "make_trajectory",
    "orbit",
    "pixel_rays",
    "plucker_rays",
    "ray_distance",
    "rasterization",
    "relative_to_first",
    "resize_intrinsics",
    "save_ply",
    "viewmat_to_c2w",
]
