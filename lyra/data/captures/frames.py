"""A capture's frames at clip size: read, undistorted to the pinhole intrinsics, centre-cropped to
the clip's aspect ratio and resized; the intrinsics follow every step.

Pixel convention (docs/conventions.md): pixel centres at integer + 0.5, as COLMAP, OpenCV's
calibration and the 3DGS code use. The crop is whole pixels (the principal point moves by the
crop offset) and the resize scales focal lengths and principal point with the image, so a world
point projects onto the same image content before and after (tests/test_captures.py checks it).
"""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from lyra.data.captures.capture import Capture, capture_error
from lyra.render.cameras import crop_intrinsics, resize_intrinsics

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


def read_frame(path: Path, source: Path) -> Tensor:  # [H0, W0, 3] float in [0, 1]
    """One image file as RGB floats; a missing or unreadable file names itself and the camera file."""
    if not path.is_file():
        raise FileNotFoundError(f"{source}: image {path.name!r} listed there does not exist at {path}; copy the "
                                "frames next to the camera file (or fix its image paths)")
    try:
        a = np.asarray(iio.imread(path))
    except Exception as err:  # noqa: BLE001  (imageio's plugins raise many kinds for unreadable input)
        raise ValueError(f"{source}: image {path} is not readable ({type(err).__name__}: "
                         f"{str(err).splitlines()[0] if str(err) else ''}); re-extract the frame") from None
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=-1)
    if a.ndim != 3 or a.shape[-1] not in (1, 3, 4):
        raise ValueError(f"{source}: image {path} has shape {a.shape}, not an [H, W, 3] picture; re-extract it")
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    scale = float(np.iinfo(a.dtype).max) if np.issubdtype(a.dtype, np.integer) else 1.0
    return torch.from_numpy(np.ascontiguousarray(a[..., :3])).float() / scale


def distort(
    xy: Tensor,  # [..., 2] normalised pinhole coordinates (x / z, y / z)
    coeffs: Tensor,  # [8] OpenCV (k1, k2, p1, p2, k3, k4, k5, k6)
) -> Tensor:  # [..., 2] distorted normalised coordinates
    """OpenCV's rational radial + tangential lens model (COLMAP's RADIAL / OPENCV / FULL_OPENCV)."""
    k1, k2, p1, p2, k3, k4, k5, k6 = coeffs.to(xy).unbind()
    x, y = xy.unbind(-1)
    r2 = x * x + y * y
    radial = (1 + r2 * (k1 + r2 * (k2 + r2 * k3))) / (1 + r2 * (k4 + r2 * (k5 + r2 * k6)))
    xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    return torch.stack([xd, yd], dim=-1)


def undistort_image(
    image: Tensor,  # [H, W, 3]
    K: Tensor,  # [3, 3] intrinsics of both the distorted input and the pinhole output
    coeffs: Tensor,  # [8] OpenCV lens coefficients
) -> Tensor:  # [H, W, 3] as a pinhole camera with intrinsics K would see it
    """Resample every output pixel centre from where the lens put it (edge pixels repeat outside)."""
    H, W = image.shape[:2]
    K = K.double()
    v, u = torch.meshgrid(torch.arange(H, dtype=torch.float64) + 0.5, torch.arange(W, dtype=torch.float64) + 0.5,
                          indexing="ij")
    xy = torch.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1]], dim=-1)
    d = distort(xy, coeffs.double())
    src_u, src_v = d[..., 0] * K[0, 0] + K[0, 2], d[..., 1] * K[1, 1] + K[1, 2]
    grid = torch.stack([2 * src_u / W - 1, 2 * src_v / H - 1], dim=-1).float()[None]
    out = F.grid_sample(image.permute(2, 0, 1)[None], grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out[0].permute(1, 2, 0)


def center_crop_box(size: tuple[int, int], aspect: float) -> tuple[int, int, int, int]:  # (top, left, h, w)
    """The largest centred whole-pixel box of ``aspect`` = width / height inside an image of ``size`` (H, W)."""
    H, W = size
    h, w = (H, round(H * aspect)) if W / H >= aspect else (round(W / aspect), W)
    h, w = min(h, H), min(w, W)
    return (H - h) // 2, (W - w) // 2, h, w


def frame_intrinsics(
    K: Tensor,  # [3, 3] intrinsics for the stored image size
    stored: tuple[int, int],  # (H0, W0) the intrinsics refer to
    height: int,
    width: int,
) -> Tensor:  # [3, 3] intrinsics of the centre-cropped, resized frame
    top, left, h, w = center_crop_box(stored, width / height)
    return resize_intrinsics(crop_intrinsics(K.double(), top, left), (h, w), (height, width))


def load_frame(capture: Capture, index: int, height: int, width: int) -> tuple[Tensor, Tensor]:  # [H, W, 3], [3, 3]
    """Frame ``index`` of ``capture`` at ``height`` x ``width``: (rgb [H, W, 3], K [3, 3]).

    An image stored at another size than its camera states (e.g. a downscaled ``images_4/``) is
    accepted when the aspect ratio agrees within a pixel; the intrinsics are scaled to it.
    """
    path = capture.image_paths[index]
    image = read_frame(path, capture.source)
    H0, W0 = image.shape[:2]
    h, w = (int(s) for s in capture.image_sizes[index].tolist())
    K = capture.K[index].double()
    if (H0, W0) != (h, w):
        if abs(H0 * w / W0 - h) > max(1.0, h / W0):
            raise capture_error(capture.source, "image size", f"{path.name} is {W0}x{H0} but its camera is {w}x{h} "
                                "(another aspect ratio)", "pass the images the cameras were estimated on")
        K = resize_intrinsics(K, (h, w), (H0, W0))
    if capture.distortion is not None and bool(capture.distortion[index].abs().max() > 0):
        image = undistort_image(image, K, capture.distortion[index])
    top, left, ch, cw = center_crop_box((H0, W0), width / height)
    crop = image[top:top + ch, left:left + cw].permute(2, 0, 1)[None]
    rgb = F.interpolate(crop, size=(height, width), mode="bilinear", align_corners=False,
                        antialias=(ch, cw) != (height, width))[0].permute(1, 2, 0).clamp(0, 1)
    return rgb, frame_intrinsics(K, (H0, W0), height, width)
