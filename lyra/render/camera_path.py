"""A camera path (poses, intrinsics, image size, optional scene time) with JSON I/O."""

from __future__ import annotations

import json
import operator
import os
from dataclasses import dataclass

import torch
from torch import Tensor

from lyra.render.cameras import validate_intrinsics
from lyra.utils.atomic import atomic_write_text

FORMAT = "lyra.camera_path/1"
MAX_IMAGE_SIZE = 16384  # pixels per side; one 16384^2 RGB float frame is already 3 GiB


def _pixels(value: object, name: str) -> int:
    """An image side as a plain int (Python, numpy or 0-d torch integers), or a TypeError."""
    if isinstance(value, bool) or isinstance(value, float) or isinstance(value, str):
        value = None  # float(64.5) or "64" must not silently become pixels
    try:
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
                             f"{MAX_IMAGE_SIZE} pixels each; resize the path (lyra.tools.resample_path, or --size)")
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
        return cls(torch.tensor(d["c2w"]), torch.tensor(d["K"]), int(d["width"]), int(d["height"]),
                   torch.tensor(d["time"]) if d.get("time") is not None else None)

    def save(self, path: str | os.PathLike) -> None:
        atomic_write_text(path, json.dumps(self.to_dict()))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "CameraPath":
        try:
            with open(path, "rb") as f:
                d = json.load(f)
        except ValueError as err:  # JSONDecodeError, or bytes that are not UTF-8
            raise ValueError(f"{path} is not valid JSON ({err}); export a camera path with `lyra camera-path`") from None
        try:
            return cls.from_dict(d)
        except (ValueError, TypeError) as err:
            raise type(err)(f"{path}: {err}") from None
