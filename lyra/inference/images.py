"""Input images for ``lyra generate --image``: read and checked before any model is loaded."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
MAX_SIDE = 16384


def read_media(
    p: Path,
    kind: str,  # "image" or "video", for the messages
    suffixes: tuple[str, ...],
    suffix_hint: str,  # appended to the unknown-format message
    fix: str,  # appended to the unreadable-file message
    **imread_kwargs,
) -> np.ndarray:
    """``imageio.v3.imread`` of a user's file, with every failure named: missing file, unknown
    suffix, unreadable content."""
    if not p.is_file():
        raise FileNotFoundError(f"{kind} {str(p)!r} does not exist")
    if p.suffix.lower() not in suffixes:
        raise ValueError(f"{p}: unknown {kind} format {p.suffix or '(no suffix)'!r}; pass one of "
                         f"{', '.join(suffixes)}{suffix_hint}")
    import imageio.v3 as iio

    try:
        return np.asarray(iio.imread(p, **imread_kwargs))
    except Exception as err:  # noqa: BLE001  (imageio's plugins raise many kinds for unreadable input)
        first = str(err).splitlines()[0] if str(err) else ""
        raise ValueError(f"{p} is not a readable {kind} ({type(err).__name__}: {first}); {fix}") from None


def read_image(
    path: str | os.PathLike,
    min_height: int,
    min_width: int,
) -> Tensor:  # [H0, W0, 3] uint8
    """An 8-bit RGB image file (opaque RGBA accepted) at least as large as the clip it must fill
    after the centre crop to the clip's aspect ratio (``lyra.data.generators.gen3c.load_image``)."""
    p = Path(path)
    a = read_media(p, "image", IMAGE_SUFFIXES, "", "save it again as 8-bit RGB PNG or JPEG")
    if a.ndim == 4 and a.shape[0] == 1:
        a = a[0]
    if a.ndim == 2 or (a.ndim == 3 and a.shape[-1] in (1, 2)):
        raise ValueError(f"{p} is a greyscale image (shape {a.shape}); the teacher needs RGB: convert it, e.g. "
                         "PIL.Image.open(path).convert('RGB').save(path)")
    if a.ndim != 3 or a.shape[-1] not in (3, 4):
        raise ValueError(f"{p} has shape {a.shape}, not an [H, W, 3] RGB image (an animation or a multi-page file?); "
                         "pass one RGB frame")
    if a.dtype != np.uint8:
        raise ValueError(f"{p} has {a.dtype} samples (e.g. 16-bit); convert it to 8-bit RGB")
    if a.shape[-1] == 4:
        if (a[..., 3] < 255).any():
            raise ValueError(f"{p} has transparent pixels (alpha < 255); flatten it onto a background first, e.g. "
                             "PIL.Image.open(path).convert('RGB')")
        a = a[..., :3]
    H0, W0 = a.shape[:2]
    if max(H0, W0) > MAX_SIDE:
        raise ValueError(f"{p} is {W0}x{H0}; sides above {MAX_SIDE} pixels are refused: downscale it")
    crop_h, crop_w = min(H0, round(W0 * min_height / min_width)), min(W0, round(H0 * min_width / min_height))
    if crop_h < min_height or crop_w < min_width:
        raise ValueError(f"{p} is {W0}x{H0}: after the centre crop to the clip's aspect ratio it is {crop_w}x{crop_h}, "
                         f"smaller than the {min_width}x{min_height} clip (it would be upsampled); pass a larger "
                         f"image or a smaller --size")
    return torch.from_numpy(np.ascontiguousarray(a))
