"""nerfstudio / instant-ngp ``transforms.json`` captures.

``frames[i].file_path`` (relative to the JSON's folder; a path without suffix, as the NeRF
synthetic scenes write, is tried with ``.png`` and ``.jpg``) and ``frames[i].transform_matrix``, a
camera-to-world in OpenGL axes (x right, y up, z back): OpenCV's is that matrix with its y and z
columns negated. Intrinsics ``fl_x fl_y cx cy w h`` (or ``camera_angle_x``) and lens coefficients
``k1 k2 k3 p1 p2`` are read per frame, else from the top level (fisheye models and ``k4`` are
refused). An optional ``ply_file_path`` (nerfstudio's sparse points, same world) supplies points.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch
from plyfile import PlyData

from lyra.data.captures.capture import Capture, capture_error

OPENGL_TO_OPENCV = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=torch.float64))


def _image_path(folder: Path, file_path: str) -> Path:
    p = folder / file_path
    if not p.suffix:
        for ext in (".png", ".jpg", ".jpeg"):
            if p.with_suffix(ext).is_file():
                return p.with_suffix(ext)
    return p


def _value(frame: dict, top: dict, key: str) -> float | None:
    v = frame.get(key, top.get(key))
    return None if v is None else float(v)


def read_transforms_json(path: str | Path) -> Capture:
    """A ``transforms.json`` file (or the folder holding one) as a capture, frames in file order."""
    path = Path(path)
    path = path / "transforms.json" if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; point at a nerfstudio / instant-ngp transforms.json")
    try:
        top = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise capture_error(path, "JSON", f"not valid JSON ({err})", "write the file again") from None
    frames = top.get("frames") if isinstance(top, dict) else None
    if not isinstance(frames, list) or not frames:
        raise capture_error(path, "frames", "missing or empty", "list {file_path, transform_matrix} per image")
    c2w, K, sizes, lens, images = [], [], [], [], []
    for i, frame in enumerate(frames):
        where = f"frames[{i}]"
        if "file_path" not in frame or "transform_matrix" not in frame:
            raise capture_error(path, where, "lacks file_path or transform_matrix", "give both for every frame")
        image = _image_path(path.parent, frame["file_path"])
        m = torch.tensor(frame["transform_matrix"], dtype=torch.float64)
        if m.shape not in ((4, 4), (3, 4)) or not bool(torch.isfinite(m).all()):
            raise capture_error(path, f"{where}.transform_matrix", f"not a finite 4x4 or 3x4 matrix ({image.name})",
                                "fix or drop that frame")
        m = torch.cat([m[:3], torch.tensor([[0.0, 0.0, 0.0, 1.0]], dtype=torch.float64)])
        w, h = _value(frame, top, "w"), _value(frame, top, "h")
        if (w is None or h is None) and image.is_file():
            h, w = (float(s) for s in iio.improps(image).shape[:2])
        fx, fy = _value(frame, top, "fl_x"), _value(frame, top, "fl_y")
        angle = _value(frame, top, "camera_angle_x")
        if fx is None and angle is not None and w is not None:
            fx = 0.5 * w / math.tan(0.5 * angle)
        fy = fy if fy is not None else fx
        if fx is None or w is None or h is None:
            raise capture_error(path, f"{where} intrinsics", "no fl_x (or camera_angle_x), w or h, neither in the "
                                "frame nor at the top level", "write fl_x fl_y cx cy w h")
        cx, cy = _value(frame, top, "cx"), _value(frame, top, "cy")
        coeffs = {k: _value(frame, top, k) or 0.0 for k in ("k1", "k2", "p1", "p2", "k3", "k4")}
        model = frame.get("camera_model", top.get("camera_model", "OPENCV"))
        if model in ("OPENCV_FISHEYE", "EQUIRECTANGULAR") or coeffs["k4"]:
            raise capture_error(path, f"{where} camera_model", f"{model} (k4 {coeffs['k4']:g}) is not a pinhole "
                                "camera with OpenCV lens terms", "undistort the frames first (pinhole frames, k1-k4 0)")
        c2w.append(m @ OPENGL_TO_OPENCV), images.append(image), sizes.append((h, w))
        K.append([[fx, 0.0, w / 2 if cx is None else cx], [0.0, fy, h / 2 if cy is None else cy], [0.0, 0.0, 1.0]])
        lens.append([coeffs["k1"], coeffs["k2"], coeffs["p1"], coeffs["p2"], coeffs["k3"], 0.0, 0.0, 0.0])
    lens_t = torch.tensor(lens, dtype=torch.float64)
    points, colors = _read_points(path, top)
    return Capture(name=path.parent.name, format="transforms_json", source=path, c2w=torch.stack(c2w),
                   K=torch.tensor(K, dtype=torch.float64), image_sizes=torch.tensor(sizes, dtype=torch.float64),
                   image_paths=images, distortion=lens_t if bool(lens_t.abs().max() > 0) else None,
                   points=points, point_colors=colors)


def _read_points(path: Path, top: dict) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    name = top.get("ply_file_path")
    if not name:
        return None, None
    ply = path.parent / name
    if not ply.is_file():
        raise capture_error(path, "ply_file_path", f"{ply} does not exist", "copy the point cloud or drop the field")
    v = PlyData.read(str(ply))["vertex"]
    xyz = np.stack([v["x"], v["y"], v["z"]], -1).astype(np.float64)
    names = v.data.dtype.names
    rgb = np.stack([v[c] for c in ("red", "green", "blue")], -1) / 255.0 if "red" in names else np.ones_like(xyz)
    return torch.from_numpy(xyz), torch.from_numpy(rgb).float()
