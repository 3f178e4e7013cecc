"""RealEstate10K camera files: one ``.txt`` per clip, plus its extracted frames.

The first line is the video URL; every other line is one frame: ``timestamp_us fx fy cx cy 0 0``
(intrinsics divided by the image width / height) then the 12 numbers of a row-major 3x4
world-to-camera matrix in OpenCV axes. Frames live in a folder named like the file (``<clip>/``
beside ``<clip>.txt``), or in ``frames/`` or ``images/`` beside it; a frame is matched by its
timestamp (``<timestamp>.png``/``.jpg``) when every frame is named so, else by sorted file order.
"""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch

from lyra.data.captures.capture import Capture, capture_error
from lyra.data.captures.llff import list_images
from lyra.render.cameras import viewmat_to_c2w

ROW_NUMBERS = 19


def frames_folder(camera_file: Path) -> Path | None:
    for candidate in (camera_file.with_suffix(""), camera_file.parent / "frames", camera_file.parent / "images"):
        if candidate.is_dir():
            return candidate
    return None


def read_realestate10k(camera_file: str | Path, frames_dir: str | Path | None = None) -> Capture:
    """One RealEstate10K clip: its camera file and frames (``frames_dir``, default as in the module doc)."""
    path = Path(camera_file)
    if not path.is_file():
        raise FileNotFoundError(f"RealEstate10K camera file {str(path)!r} does not exist")
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        words = line.split()
        if len(words) != ROW_NUMBERS:
            raise capture_error(f"{path} line {number}", "frame", f"{len(words)} numbers, expected {ROW_NUMBERS} "
                                "(timestamp fx fy cx cy 0 0 and a 3x4 world-to-camera)", "one frame per line")
        try:
            rows.append([float(w) for w in words])
        except ValueError:
            raise capture_error(f"{path} line {number}", "frame", f"not a number in {line!r}",
                                "write the row as RealEstate10K does") from None
    if not rows:
        raise capture_error(path, "frames", "no frame lines after the URL line", "pass a RealEstate10K camera file")
    data = torch.tensor(rows, dtype=torch.float64)
    bad = (~torch.isfinite(data).all(1)).nonzero()[:, 0].tolist()
    if bad:
        raise capture_error(f"{path} line {bad[0] + 2}", "pose", "NaN or infinite values", "fix or drop that frame")
    folder = Path(frames_dir) if frames_dir is not None else frames_folder(path)
    images = list_images(folder) if folder is not None else []
    by_stamp = {p.stem: p for p in images}
    stamps = [str(int(t)) for t in data[:, 0].tolist()]
    if images and all(s in by_stamp for s in stamps):
        images = [by_stamp[s] for s in stamps]
    elif len(images) != len(rows):
        raise capture_error(path, "frames", f"{len(rows)} camera lines but {len(images)} frames in "
                            f"{folder or 'no frames folder'} (and they are not all named by timestamp)",
                            f"extract the clip's frames into {path.with_suffix('')}/ as <timestamp>.png")
    H, W = np.asarray(iio.improps(images[0]).shape[:2]) if images[0].is_file() else (0, 0)
    if H == 0:
        raise FileNotFoundError(f"{path}: frames: {images[0]} does not exist; extract the clip's frames")
    K = torch.zeros(len(rows), 3, 3, dtype=torch.float64)
    K[:, 0, 0], K[:, 1, 1], K[:, 0, 2], K[:, 1, 2], K[:, 2, 2] = (
        data[:, 1] * W, data[:, 2] * H, data[:, 3] * W, data[:, 4] * H, 1.0)
    viewmats = torch.eye(4, dtype=torch.float64).repeat(len(rows), 1, 1)
    viewmats[:, :3, :] = data[:, 7:].reshape(-1, 3, 4)
    return Capture(name=path.stem, format="realestate10k", source=path, c2w=viewmat_to_c2w(viewmats), K=K,
                   image_sizes=torch.tensor([[H, W]], dtype=torch.float64).expand(len(rows), 2).clone(),
                   image_paths=images, timestamps=data[:, 0] * 1e-6)
