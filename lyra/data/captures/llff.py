"""LLFF captures: ``poses_bounds.npy`` + ``images/`` (the layout of the LLFF and NeRF forward-facing data).

``poses_bounds.npy`` is ``[N, 17]``: each row a row-major 3x5 matrix ``[R | t | (h, w, f)]``, a
camera-to-world whose rotation columns point (down, right, backwards), then the near and far
z-depth bounds of the scene in that view. In OpenCV axes the columns are (right, down, forward)
= (col 1, col 0, -col 2). Rows follow the sorted image file names; the principal point is the
image centre.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from lyra.data.captures.capture import Capture, capture_error
from lyra.data.captures.frames import IMAGE_SUFFIXES


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []


def read_llff(folder: str | Path, images_dir: str | Path | None = None) -> Capture:
    """``folder/poses_bounds.npy`` with the frames of ``images_dir`` (default ``folder/images``)."""
    folder = Path(folder)
    path = folder / "poses_bounds.npy"
    if not path.is_file():
        raise FileNotFoundError(f"{folder}: no poses_bounds.npy; point at an LLFF capture folder")
    try:
        data = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as err:
        raise capture_error(path, "array", f"not a readable .npy file ({err})", "write it with numpy.save") from None
    if data.ndim != 2 or data.shape[1] != 17:
        raise capture_error(path, "shape", f"{data.shape}, expected [N, 17] (3x5 pose + near, far per image)",
                            "write one row per image")
    images = list_images(Path(images_dir) if images_dir is not None else folder / "images")
    if len(images) != len(data):
        raise capture_error(path, "rows", f"{len(data)} poses but {len(images)} images in "
                            f"{images_dir or folder / 'images'}", "one image per row, in sorted file-name order")
    bad = np.flatnonzero(~np.isfinite(data).all(1))
    if len(bad):
        raise capture_error(path, f"row {bad[0]}", f"NaN or infinite pose or bounds ({images[bad[0]].name})",
                            "fix or drop that frame")
    poses = torch.from_numpy(data[:, :15].reshape(-1, 3, 5)).double()
    c2w = torch.eye(4, dtype=torch.float64).repeat(len(data), 1, 1)
    c2w[:, :3, 0], c2w[:, :3, 1], c2w[:, :3, 2] = poses[:, :, 1], poses[:, :, 0], -poses[:, :, 2]
    c2w[:, :3, 3] = poses[:, :, 3]
    h, w, f = poses[:, 0, 4], poses[:, 1, 4], poses[:, 2, 4]
    if not bool((f > 0).all() and (h > 0).all() and (w > 0).all()):
        raise capture_error(path, "h w f", "a non-positive image size or focal length", "write (h, w, f) in pixels")
    K = torch.zeros(len(data), 3, 3, dtype=torch.float64)
    K[:, 0, 0], K[:, 1, 1], K[:, 0, 2], K[:, 1, 2], K[:, 2, 2] = f, f, w / 2, h / 2, 1.0
    return Capture(name=folder.name, format="llff", source=path, c2w=c2w, K=K,
                   image_sizes=torch.stack([h, w], -1).round(), image_paths=images,
                   depth_bounds=torch.from_numpy(data[:, 15:17]).double())
