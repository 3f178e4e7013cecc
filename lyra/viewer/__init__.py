"""``lyra view``: a web viewer (viser) for static scenes and dynamic scene folders (docs/viewer.md)."""

from lyra.viewer.convert import (
    c2w_to_viewer_camera,
    intrinsics_fov_y,
    splat_arrays,
    viewer_camera_to_c2w,
    viewer_intrinsics,
)
from lyra.viewer.guard import protect_viser
from lyra.viewer.server import SceneViewer, check_address, load_viewable, view_scene

__all__ = [
    "SceneViewer",
    "c2w_to_viewer_camera",
    "check_address",
    "intrinsics_fov_y",
    "load_viewable",
    "protect_viser",
    "splat_arrays",
    "view_scene",
    "viewer_camera_to_c2w",
    "viewer_intrinsics",
]
