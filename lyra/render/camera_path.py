"""A camera path (poses, intrinsics, image size, optional scene time) with JSON I/O.

Files are read defensively: the JSON's size and the frame count are checked against the limits
(``lyra.utils.limits``) before tensors are built, every number must be a number (no strings, booleans
or null), image sizes must be whole pixels (64.5 is refused, not truncated), and the intrinsics must
fit the image size (a field of view of 1 to 170 degrees, the principal point inside the image).
"""

from __future__ import annotations

import json
import math
import operator
import os
from dataclasses import dataclass

import torch
from torch import Tensor

from lyra.render.cameras import check_intrinsics_fit, validate_intrinsics
from lyra.utils.atomic import atomic_write_text
from lyra.utils.errors import LyraUsageError
from lyra.utils.jsonfile import numbers, read_json
from lyra.utils.limits import check_limit

FORMAT = "lyra.camera_path/1"
MAX_IMAGE_SIZE = 16384  # pixels per side; one 16384^2 RGB float frame is already 3 GiB


def _pixels(value: object, name: str) -> int:
    """An image side as a plain int (Python, numpy or 0-d torch integers), or a TypeError."""
    try:
        if isinstance(value, (bool, float, str)):  # 64.5, 64.0 or "64" must not silently become pixels
            raise TypeError
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int number of pixels, got {value!r}") from None


@dataclass
class CameraPath:
    c2w: Tensor  # [T, 4, 4] camera-to-world, OpenCV axes
    K: Tensor  # [T, 3, 3] pixel intrinsics for (height, width)
    width: int
    height: int
    time: Tensor | None = None  # [T] scene time in [0, 1]

    def __post_init__(self) -> None:
        self.c2w = torch.as_tensor(self.c2w, dtype=torch.float32)
        self.K = torch.as_tensor(self.K, dtype=torch.float32)
        if self.c2w.ndim != 3 or self.c2w.shape[1:] != (4, 4):
            raise ValueError(f"CameraPath.c2w must be [T, 4, 4], got {tuple(self.c2w.shape)}")
        if self.K.shape == (3, 3):
            self.K = self.K.expand(len(self.c2w), 3, 3).clone()
        if self.K.shape != (len(self.c2w), 3, 3):
            raise ValueError(f"CameraPath.K must be [T, 3, 3] with T={len(self.c2w)}, got {tuple(self.K.shape)}")
        validate_intrinsics(self.K, "CameraPath.K")
        if not torch.isfinite(self.c2w).all():
            raise ValueError("CameraPath.c2w contains NaN or Inf")
        # Renderers invert c2w rigidly (transpose of R), so a scaled or sheared pose would silently misrender.
        R = self.c2w[:, :3, :3].double()
        ortho_err = (R.transpose(1, 2) @ R - torch.eye(3, dtype=torch.float64)).abs().amax().item()
        bottom = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=torch.float64)
        bottom_err = (self.c2w[:, 3].double() - bottom).abs().amax().item()
        if ortho_err > 1e-3 or bottom_err > 1e-6 or (torch.linalg.det(R) < 0).any():
            raise ValueError(
                "CameraPath.c2w must hold rigid camera-to-world poses (orthonormal rotation with det +1, last "
                f"row [0, 0, 0, 1]); got rotation error {ortho_err:.3g}, last-row error {bottom_err:.3g}"
            )
        self.width, self.height = _pixels(self.width, "CameraPath.width"), _pixels(self.height, "CameraPath.height")
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"image size must be positive, got {self.width}x{self.height}")
        if self.width > MAX_IMAGE_SIZE or self.height > MAX_IMAGE_SIZE:
            raise ValueError(f"image size {self.width}x{self.height} is too large: width and height must be at most "
                             f"{MAX_IMAGE_SIZE} pixels each; resize the path (lyra.render.framing.resample_path, or --size)")
        check_limit("pixels", self.width * self.height, f"camera path image size {self.width}x{self.height}")
        if self.time is not None:
            self.time = torch.as_tensor(self.time, dtype=torch.float32)
            if self.time.shape != (len(self.c2w),):
                raise ValueError(f"CameraPath.time must be [T]={len(self.c2w)}, got {tuple(self.time.shape)}")
            if not (torch.isfinite(self.time).all() and (self.time >= 0).all() and (self.time <= 1).all()):
                raise ValueError("CameraPath.time must lie in [0, 1] (normalised scene time); rescale it")

    def __len__(self) -> int:
        return self.c2w.shape[0]

    def to_dict(self) -> dict:
        d = {"format": FORMAT, "width": self.width, "height": self.height,
             "c2w": self.c2w.tolist(), "K": self.K.tolist()}
        if self.time is not None:
            d["time"] = self.time.tolist()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "CameraPath":
        if not isinstance(d, dict):
            raise ValueError(f"camera path JSON must be an object with keys width, height, c2w, K, "
                             f"got {type(d).__name__}")
        if d.get("format", FORMAT) != FORMAT:
            raise ValueError(f"camera path format {d['format']!r} is not {FORMAT!r}; convert the file first")
        missing = [k for k in ("width", "height", "c2w", "K") if k not in d]
        if missing:
            raise ValueError(f"camera path JSON lacks {missing}; expected keys width, height, c2w, K[, time]")
        if not isinstance(d["c2w"], list) or not d["c2w"]:
            raise ValueError("camera path c2w must be a non-empty list of 4x4 matrices")
        check_limit("frames", len(d["c2w"]), "camera path c2w (frames)")
        for key in ("c2w", "K", "time"):
            if d.get(key) is not None:
                numbers(d[key], f"camera path {key}")
        # the sizes go in as they are: a width of 64.5 or "64" is refused, never truncated to 64
        return cls(torch.tensor(d["c2w"]), torch.tensor(d["K"]), d["width"], d["height"],
                   torch.tensor(d["time"]) if d.get("time") is not None else None)

    def save(self, path: str | os.PathLike) -> None:
        atomic_write_text(path, json.dumps(self.to_dict()))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "CameraPath":
        """Read a camera-path JSON file; its intrinsics must fit its image size (module doc)."""
        d = read_json(path, "export a camera path with `lyra camera-path`")
        try:
            out = cls.from_dict(d)
            check_intrinsics_fit(out.K, out.width, out.height, "K")
            return out
        except (ValueError, TypeError) as err:
            raise LyraUsageError(f"{path}: {err}") from None


# ---- import: nerfstudio's camera_path.json ------------------------------------------------------------

# nerfstudio (like three.js and OpenGL) puts camera x right, y up, z backwards; lyra (OpenCV) x right,
# y down, z forwards. The same camera in both: negate its y and z axes (right-multiply c2w).
_OPENGL_TO_OPENCV = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=torch.float64))


def load_nerfstudio_camera_path(path: str | os.PathLike) -> CameraPath:
    """A nerfstudio ``camera_path.json`` (its viewer's render panel writes it, ``ns-render`` reads it).

    Read: ``render_width`` / ``render_height`` (pixels), ``camera_type`` (only ``"perspective"``;
    absent means perspective) and per entry of ``camera_path``: ``camera_to_world`` (16 numbers, a
    row-major 4x4 in OpenGL camera axes), ``fov`` (vertical field of view in degrees: focal =
    render_height / 2 / tan(fov / 2), square pixels, principal point at the image centre, as
    ``ns-render`` computes it) and, when every entry has one, ``render_time`` (scene time in [0, 1]).
    The world frame is kept; only the camera axes are converted to OpenCV (y and z negated). Other
    fields (keyframes, fps, seconds, aspect, crop, ...) are ignored.
    """
    d = read_json(path, "export the path again from nerfstudio's viewer")

    def fail(msg: str) -> ValueError:
        return LyraUsageError(f"{path}: {msg} (nerfstudio camera_path.json: render_width, render_height, "
                          "camera_path: [{camera_to_world: 16 numbers, fov: degrees}, ...])")

    if not isinstance(d, dict) or not isinstance(d.get("camera_path"), list) or not d["camera_path"]:
        raise fail("no non-empty 'camera_path' list")
    check_limit("frames", len(d["camera_path"]), f"{path} (camera_path entries)")
    kind = d.get("camera_type", "perspective")
    if kind != "perspective":
        raise fail(f"camera_type {kind!r} is not supported; only 'perspective' cameras map to pinhole intrinsics")
    try:
        width, height = _pixels(d.get("render_width"), "render_width"), _pixels(d.get("render_height"), "render_height")
    except TypeError as err:
        raise fail(str(err)) from None
    if width <= 0 or height <= 0:
        raise fail(f"render size must be positive, got {width}x{height}")
    c2w, focal, times = [], [], []
    for i, cam in enumerate(d["camera_path"]):
        m = cam.get("camera_to_world") if isinstance(cam, dict) else None
        if not isinstance(m, list) or len(m) != 16 or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                              for v in m):
            raise fail(f"camera_path[{i}].camera_to_world must be a list of 16 numbers (row-major 4x4)")
        fov = cam.get("fov")
        if isinstance(fov, bool) or not isinstance(fov, (int, float)) or not 0.0 < fov < 180.0:
            raise fail(f"camera_path[{i}].fov must be a vertical field of view in degrees within (0, 180), got {fov!r}")
        c2w.append(torch.tensor(m, dtype=torch.float64).reshape(4, 4) @ _OPENGL_TO_OPENCV)
        focal.append(0.5 * height / math.tan(math.radians(fov) / 2))
        times.append(cam.get("render_time"))
    K = torch.zeros(len(c2w), 3, 3)
    K[:, 0, 0] = K[:, 1, 1] = torch.tensor(focal)
    K[:, 0, 2], K[:, 1, 2], K[:, 2, 2] = width / 2.0, height / 2.0, 1.0
    time = None
    if all(t is not None for t in times):
        if not all(isinstance(t, (int, float)) and not isinstance(t, bool) for t in times):
            raise fail("render_time values must be numbers in [0, 1]")
        time = torch.tensor(times, dtype=torch.float32)
    try:
        return CameraPath(torch.stack(c2w).float(), K, width, height, time)
    except (ValueError, TypeError) as err:
        raise fail(str(err)) from None
