"""COLMAP sparse models (``cameras``, ``images``, ``points3D``), text and binary, as a ``Capture``.

Layouts (COLMAP's own): text files with ``#`` comments; ``images.txt`` holds two lines per image,
``ID QW QX QY QZ TX TY TZ CAMERA_ID NAME`` (world-to-camera, Hamilton quaternion, OpenCV axes)
and its 2D points ``X Y POINT3D_ID ...``. Binary files are little-endian with a leading uint64
count. Camera models: pinhole ones are read as they are; ``SIMPLE_RADIAL``, ``RADIAL``, ``OPENCV``
and ``FULL_OPENCV`` keep their lens coefficients and frames are undistorted to the pinhole part
when loaded (``lyra.data.captures.frames``); fisheye models are refused (run COLMAP's
``image_undistorter`` and read its output).

The folder may hold the model in ``sparse/0/``, ``sparse/`` or itself, and the frames in ``images/``.
"""

from __future__ import annotations

import math
import re
import struct
from pathlib import Path

import numpy as np
import torch

from lyra.data.captures.capture import Capture, capture_error
from lyra.render.cameras import viewmat_to_c2w
from lyra.render.rotations import quat_to_rotmat

# COLMAP's model ids: (name, number of parameters)
MODELS: dict[int, tuple[str, int]] = {
    0: ("SIMPLE_PINHOLE", 3), 1: ("PINHOLE", 4), 2: ("SIMPLE_RADIAL", 4), 3: ("RADIAL", 5), 4: ("OPENCV", 8),
    5: ("OPENCV_FISHEYE", 8), 6: ("FULL_OPENCV", 12), 7: ("FOV", 5), 8: ("SIMPLE_RADIAL_FISHEYE", 4),
    9: ("RADIAL_FISHEYE", 5), 10: ("THIN_PRISM_FISHEYE", 12), 11: ("RAD_TAN_THIN_PRISM_FISHEYE", 16),
}
MODEL_IDS = {name: i for i, (name, _) in MODELS.items()}
SUPPORTED = ("SIMPLE_PINHOLE", "PINHOLE", "SIMPLE_RADIAL", "RADIAL", "OPENCV", "FULL_OPENCV")
MODEL_DIRS = ("sparse/0", "sparse", ".")


def find_model_dir(folder: Path) -> Path | None:
    for sub in MODEL_DIRS:
        d = folder / sub
        if any((d / f"cameras{ext}").is_file() for ext in (".bin", ".txt")):
            return d
    return None


def camera_to_pinhole(model: str, params: list[float], where: str) -> tuple[list[float], list[float]]:
    """(fx, fy, cx, cy) and the 8 OpenCV lens coefficients of one COLMAP camera."""
    p = params
    if model == "SIMPLE_PINHOLE":
        return [p[0], p[0], p[1], p[2]], [0.0] * 8
    if model == "PINHOLE":
        return p[:4], [0.0] * 8
    if model == "SIMPLE_RADIAL":
        return [p[0], p[0], p[1], p[2]], [p[3]] + [0.0] * 7
    if model == "RADIAL":
        return [p[0], p[0], p[1], p[2]], [p[3], p[4]] + [0.0] * 6
    if model == "OPENCV":
        return p[:4], p[4:8] + [0.0] * 4
    if model == "FULL_OPENCV":
        return p[:4], p[4:12]
    raise ValueError(f"{where}: model: camera model {model} is not supported (lyra reads {', '.join(SUPPORTED)}); "
                     "undistort the images first (`colmap image_undistorter` writes PINHOLE cameras) and read that")


# ---- text -----------------------------------------------------------------------------------------


def _text_rows(path: Path, keep_empty: bool = False) -> tuple[list[tuple[int, str]], int | None]:
    """(line number, text) of the data lines and the count the ``# Number of ...: N`` header states."""
    rows, stated = [], None
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if line.startswith("#"):
            m = re.match(r"#\s*Number of \w+:\s*(\d+)", line)
            stated = int(m.group(1)) if m else stated
        elif line.strip() or keep_empty:
            rows.append((number, line.strip()))
    return rows, stated


def _numbers(words: list[str], path: Path, number: int, what: str) -> list[float]:
    try:
        return [float(w) for w in words]
    except ValueError:
        raise capture_error(f"{path} line {number}", what, f"not a number in {' '.join(words)!r}",
                            "write the row as COLMAP does") from None


def _check_count(path: Path, stated: int | None, found: int, what: str) -> None:
    if stated is not None and stated != found:
        raise capture_error(path, f"number of {what}", f"the header says {stated} but the file lists {found}",
                            "the file is truncated or was edited; export the model again")


def read_cameras_text(path: Path) -> dict[int, tuple[str, int, int, list[float]]]:
    rows, stated = _text_rows(path)
    cams = {}
    for number, line in rows:
        w = line.split()
        if len(w) < 4:
            raise capture_error(f"{path} line {number}", "camera", f"{line!r} is not 'ID MODEL WIDTH HEIGHT PARAMS'",
                                "write one camera per line")
        model = w[1]
        if model not in MODEL_IDS:
            raise capture_error(f"{path} line {number}", "MODEL", f"unknown camera model {model!r}",
                                f"use one of {', '.join(SUPPORTED)}")
        params = _numbers(w[4:], path, number, "PARAMS")
        if len(params) != MODELS[MODEL_IDS[model]][1]:
            raise capture_error(f"{path} line {number}", "PARAMS", f"{model} takes {MODELS[MODEL_IDS[model]][1]} "
                                f"parameters, got {len(params)}", "write the model's parameters in COLMAP's order")
        cams[int(w[0])] = (model, int(w[2]), int(w[3]), params)
    _check_count(path, stated, len(cams), "cameras")
    return cams


def read_images_text(path: Path) -> list[tuple[int, list[float], int, str, np.ndarray]]:
    rows, stated = _text_rows(path, keep_empty=True)
    while rows and not rows[-1][1]:
        rows.pop()  # trailing blank lines
    images = []
    for k in range(0, len(rows), 2):
        number, line = rows[k]
        w = line.split()
        if len(w) < 10:
            raise capture_error(f"{path} line {number}", "image", f"{line!r} is not 'ID QW QX QY QZ TX TY TZ "
                                "CAMERA_ID NAME'", "two lines per image: pose, then 2D points")
        pose = _numbers(w[1:8], path, number, "QW QX QY QZ TX TY TZ")
        points = rows[k + 1][1].split() if k + 1 < len(rows) else []
        ids = np.asarray(points[2::3], dtype=np.int64) if points else np.zeros(0, np.int64)
        images.append((int(w[0]), pose, int(w[8]), " ".join(w[9:]), ids))
    _check_count(path, stated, len(images), "images")
    return images


def read_points_text(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # ids [P], xyz [P, 3], rgb [P, 3]
    rows, stated = _text_rows(path)
    ids, xyz, rgb = [], [], []
    for number, line in rows:
        w = line.split()
        if len(w) < 8:
            raise capture_error(f"{path} line {number}", "point", f"{line!r} is not 'ID X Y Z R G B ERROR TRACK'",
                                "one point per line")
        v = _numbers(w[1:7], path, number, "X Y Z R G B")
        ids.append(int(w[0])), xyz.append(v[:3]), rgb.append(v[3:6])
    _check_count(path, stated, len(ids), "points")
    return np.asarray(ids, np.int64), np.asarray(xyz, np.float64).reshape(-1, 3), np.asarray(rgb).reshape(-1, 3) / 255


# ---- binary ---------------------------------------------------------------------------------------


class _Reader:
    def __init__(self, path: Path) -> None:
        self.path, self.data, self.pos = path, path.read_bytes(), 0

    def take(self, fmt: str, what: str) -> tuple:
        size = struct.calcsize("<" + fmt)
        if self.pos + size > len(self.data):
            raise capture_error(self.path, what, f"the file ends at byte {len(self.data)}, inside {what}",
                                "the file is truncated (or the count at its start is wrong); export the model again")
        out = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += size
        return out

    def name(self, what: str) -> str:
        end = self.data.find(b"\0", self.pos)
        if end < 0:
            raise capture_error(self.path, what, "the image name has no terminating NUL byte", "export the model again")
        name, self.pos = self.data[self.pos:end].decode("utf-8"), end + 1
        return name

    def done(self, count: int, what: str) -> None:
        if self.pos != len(self.data):
            raise capture_error(self.path, f"number of {what}", f"the file says {count} but holds "
                                f"{len(self.data) - self.pos} more bytes after them", "export the model again")


def read_cameras_binary(path: Path) -> dict[int, tuple[str, int, int, list[float]]]:
    r = _Reader(path)
    (n,) = r.take("Q", "the camera count")
    cams = {}
    for k in range(n):
        cid, model_id, w, h = r.take("iiQQ", f"camera {k}")
        if model_id not in MODELS:
            raise capture_error(path, "model", f"camera {cid} has unknown camera model id {model_id}",
                                f"use one of {', '.join(f'{MODEL_IDS[s]} {s}' for s in SUPPORTED)}")
        model, count = MODELS[model_id]
        cams[cid] = (model, w, h, list(r.take(f"{count}d", f"camera {cid}'s parameters")))
    r.done(n, "cameras")
    return cams


def read_images_binary(path: Path) -> list[tuple[int, list[float], int, str, np.ndarray]]:
    r = _Reader(path)
    (n,) = r.take("Q", "the image count")
    images = []
    for k in range(n):
        iid, *pose, cam = r.take("i7di", f"image {k}")
        name = r.name(f"image {iid}'s name")
        (m,) = r.take("Q", f"image {iid}'s point count")
        if r.pos + 24 * m > len(r.data):
            raise capture_error(path, f"image {iid}", f"the file ends inside its {m} 2D points",
                                "the file is truncated; export the model again")
        obs = np.frombuffer(r.data, dtype=[("x", "<f8"), ("y", "<f8"), ("id", "<i8")], count=m, offset=r.pos)
        r.pos += 24 * m
        images.append((iid, pose, cam, name, obs["id"].astype(np.int64)))
    r.done(n, "images")
    return images


def read_points_binary(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r = _Reader(path)
    (n,) = r.take("Q", "the point count")
    ids, xyz, rgb = np.zeros(n, np.int64), np.zeros((n, 3)), np.zeros((n, 3))
    for k in range(n):
        pid, x, y, z, cr, cg, cb, _err, length = r.take("Q3d3BdQ", f"point {k}")
        ids[k], xyz[k], rgb[k] = pid, (x, y, z), (cr, cg, cb)
        r.take(f"{2 * length}i", f"point {pid}'s track")
    r.done(n, "points")
    return ids, xyz, rgb / 255


# ---- the capture ------------------------------------------------------------------------------------


def read_colmap(folder: str | Path, images_dir: str | Path | None = None) -> Capture:
    """The COLMAP model under ``folder`` (``sparse/0``, ``sparse`` or the folder itself) as a capture,
    images sorted by name; frames from ``images_dir`` (default ``folder/images``)."""
    folder = Path(folder)
    model = find_model_dir(folder)
    if model is None:
        raise FileNotFoundError(f"{folder}: no COLMAP model (cameras.bin or cameras.txt in "
                                f"{', '.join(MODEL_DIRS)}); run COLMAP's mapper or point at the capture folder")
    binary = (model / "cameras.bin").is_file()
    ext = ".bin" if binary else ".txt"
    paths = {k: model / f"{k}{ext}" for k in ("cameras", "images", "points3D")}
    if not paths["images"].is_file():
        raise FileNotFoundError(f"{model}: cameras{ext} without images{ext}; export the whole model")
    cams = (read_cameras_binary if binary else read_cameras_text)(paths["cameras"])
    images = sorted((read_images_binary if binary else read_images_text)(paths["images"]), key=lambda im: im[3])
    if paths["points3D"].is_file():
        ids, xyz, rgb = (read_points_binary if binary else read_points_text)(paths["points3D"])
    else:
        ids, xyz, rgb = np.zeros(0, np.int64), np.zeros((0, 3)), np.zeros((0, 3))
    where = str(paths["images"])
    rows, lens, sizes, w2c = [], [], [], []
    for iid, pose, cam, name, _ in images:
        if cam not in cams:
            raise capture_error(where, "CAMERA_ID", f"image {iid} ({name}) uses camera {cam}, which "
                                f"{paths['cameras'].name} does not define (it has {sorted(cams)})",
                                "export cameras and images of one model together")
        if not all(math.isfinite(v) for v in pose) or math.hypot(*pose[:4]) < 1e-12:
            raise capture_error(where, "QW QX QY QZ TX TY TZ", f"image {iid} ({name}) has a NaN, infinite or "
                                f"zero pose {pose}", "drop the image or register it again")
        model_name, w, h, params = cams[cam]
        pinhole, coeffs = camera_to_pinhole(model_name, params, f"{paths['cameras']} camera {cam}")
        rows.append(pinhole), lens.append(coeffs), sizes.append((h, w))
        w2c.append(pose)
    pose = torch.tensor(w2c, dtype=torch.float64)
    viewmats = torch.eye(4, dtype=torch.float64).repeat(len(images), 1, 1)
    viewmats[:, :3, :3], viewmats[:, :3, 3] = quat_to_rotmat(pose[:, :4]), pose[:, 4:]
    f = torch.tensor(rows, dtype=torch.float64)
    K = torch.zeros(len(images), 3, 3, dtype=torch.float64)
    K[:, 0, 0], K[:, 1, 1], K[:, 0, 2], K[:, 1, 2], K[:, 2, 2] = f[:, 0], f[:, 1], f[:, 2], f[:, 3], 1.0
    lens_t = torch.tensor(lens, dtype=torch.float64)
    row_of = {int(p): k for k, p in enumerate(ids)}
    observations = [torch.tensor(sorted({row_of[int(p)] for p in obs if int(p) in row_of}), dtype=torch.long)
                    for *_, obs in images]
    root = Path(images_dir) if images_dir is not None else folder / "images"
    return Capture(
        name=folder.name, format="colmap", source=paths["images"], c2w=viewmat_to_c2w(viewmats), K=K,
        image_sizes=torch.tensor(sizes, dtype=torch.float64), image_paths=[root / im[3] for im in images],
        distortion=lens_t if bool(lens_t.abs().max() > 0) else None,
        points=torch.from_numpy(xyz), point_colors=torch.from_numpy(rgb).float(), observations=observations)
