"""Cameras, trajectories, Gaussian rasterization backends and PLY I/O."""

from lyra.render.camera_path import CameraPath
from lyra.render.cameras import (
    c2w_to_viewmat,
    crop_intrinsics,
    intrinsics_from_fov,
    look_at,
    make_intrinsics,
    pixel_rays,
    plucker_rays,
    relative_to_first,
    resize_intrinsics,
    viewmat_to_c2w,
)
from lyra.render.trajectories import LYRA_TRAJECTORIES, interpolate_poses, make_trajectory, orbit
from lyra.render.gaussians import Gaussians
from lyra.render.ply import load_ply, save_ply
from lyra.render.rasterization import rasterization
