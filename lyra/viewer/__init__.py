"""``lyra view``: a web viewer (viser) for static scenes and dynamic scene folders (docs/viewer.md)."""

from lyra.viewer.server import (
    SceneViewer,
    c2w_to_viewer_camera,
    intrinsics_fov_y,
    load_viewable,
    splat_arrays,
    view_scene,
    viewer_camera_to_c2w,
    viewer_intrinsics,
)

__all__ = [
    "SceneViewer",
    "c2w_to_viewer_camera",
    "intrinsics_fov_y",
    "load_viewable",
    "splat_arrays",
    "view_scene",
    "viewer_camera_to_c2w",
    "viewer_intrinsics",
]
