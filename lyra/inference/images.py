"""Input images for ``lyra generate --image``: read and checked before any model is loaded."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor

from lyra.utils.errors import LyraUsageError
from lyra.utils.limits import check_limit, how_to_raise

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
MAX_SIDE = 16384


def read_media(
    p: Path,
    kind: str,  # "image" or "video", for the messages
    suffixes: tuple[str, ...],
    suffix_hint: str,  # appended to the unknown-format message
    fix: str,  # appended to the unreadable-file message
    **imiter_kwargs,
) -> np.ndarray:  # [T, H, W, C] (one frame: [1, H, W, C])
    """Every frame of a user's image or video file through ``imageio.v3.imiter``, one at a time, with
    every failure named (missing file, unknown suffix, unreadable content) and the sizes checked as
    frames arrive: frame size (``pixels``), frame count (``frames``) and total bytes
    (``decoded_bytes``), so a small file that decodes to gigabytes stops at the limit."""
    if not p.is_file():
        raise FileNotFoundError(f"{kind} {str(p)!r} does not exist")
    if p.suffix.lower() not in suffixes:
        raise ValueError(f"{p}: unknown {kind} format {p.suffix or '(no suffix)'!r}; pass one of "
                         f"{', '.join(suffixes)}{suffix_hint}")
    frames, total = [], 0
    try:
        for frame in iio.imiter(p, **imiter_kwargs):
            frame = np.asarray(frame)
            if not frames:
                check_limit("pixels", int(np.prod(frame.shape[:2])), f"{p} (a {frame.shape[1]}x{frame.shape[0]} frame)")
            frames.append(frame)
            total += frame.nbytes
            check_limit("frames", len(frames), f"{p} (its frames)")
            check_limit("decoded_bytes", total, f"{p} (its decoded frames)")
    except LyraUsageError:
        raise
    except Exception as err:  # noqa: BLE001  (imageio's plugins raise many kinds for unreadable input)
        first = str(err).splitlines()[0] if str(err) else ""
        raise ValueError(f"{p} is not a readable {kind} ({type(err).__name__}: {first}); {fix}") from None
    if not frames:
        raise ValueError(f"{p} holds no frames; {fix}")
    if len({f.shape for f in frames}) > 1:
        raise ValueError(f"{p}: its frames change size ({sorted({f.shape for f in frames})[:2]}); {fix}")
    return np.stack(frames)


_GREY_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F")


def read_image(
    path: str | os.PathLike,
    min_height: int,
    min_width: int,
) -> Tensor:  # [H0, W0, 3] uint8
    """An 8-bit RGB image file (opaque RGBA accepted) at least as large as the clip it must fill
    after the centre crop to the clip's aspect ratio (``lyra.data.generators.gen3c.load_image``).

    The size in the header is checked against the ``pixels`` limit before the pixels are decoded;
    the EXIF orientation is applied (a photo taken upright is read upright); CMYK, greyscale,
    16-bit, palette-with-alpha and animated files are refused or converted with a message."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"image {str(p)!r} does not exist")
    if p.suffix.lower() not in IMAGE_SUFFIXES:
        raise ValueError(f"{p}: unknown image format {p.suffix or '(no suffix)'!r}; pass one of {', '.join(IMAGE_SUFFIXES)}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our pixels limit below says more
            img = Image.open(p)
        with img:
            W0, H0 = img.size
            check_limit("pixels", W0 * H0, f"{p} ({W0}x{H0})")  # before decoding: a small file can claim a huge image
            if max(H0, W0) > MAX_SIDE:
                raise ValueError(f"{p} is {W0}x{H0}; sides above {MAX_SIDE} pixels are refused: downscale it")
            if getattr(img, "n_frames", 1) > 1:
                raise ValueError(f"{p} holds {img.n_frames} frames (an animation or a multi-page file); pass one RGB frame")
            mode = img.mode
            if mode == "CMYK":
                raise ValueError(f"{p} is a CMYK image (print colours); the teacher needs RGB: convert it, e.g. "
                                 "PIL.Image.open(path).convert('RGB').save('photo.png')")
            if mode in _GREY_MODES:
                depth = " 16-bit" if mode.startswith("I") else ""
                raise ValueError(f"{p} is a{depth} greyscale image (mode {mode}); the teacher needs 8-bit RGB: convert "
                                 "it, e.g. PIL.Image.open(path).convert('RGB')")
            if mode in ("P", "PA"):
                img = img.convert("RGBA")
            elif mode not in ("RGB", "RGBA"):
                raise ValueError(f"{p} has colour mode {mode}; convert it to 8-bit RGB")
            a = np.array(ImageOps.exif_transpose(img))  # the camera's orientation tag, applied (a writable copy)
    except Image.DecompressionBombError:  # PIL's own guard, at twice its MAX_IMAGE_PIXELS, fires before ours
        raise LyraUsageError(f"{p}: its header claims more than {2 * Image.MAX_IMAGE_PIXELS:,} pixels, beyond the "
                             f"pixels limit ({how_to_raise('pixels')}) and what PIL decodes at all; downscale "
                             "it") from None
    except (OSError, SyntaxError) as err:
        raise ValueError(f"{p} is not a readable image ({type(err).__name__}: {err}); save it again as 8-bit RGB "
                         "PNG or JPEG") from None
    if a.shape[-1] == 4:
        if (a[..., 3] < 255).any():
            raise ValueError(f"{p} has transparent pixels (alpha < 255); flatten it onto a background first, e.g. "
                             "PIL.Image.open(path).convert('RGB')")
        a = a[..., :3]
    H0, W0 = a.shape[:2]
    crop_h, crop_w = min(H0, round(W0 * min_height / min_width)), min(W0, round(H0 * min_width / min_height))
    if crop_h < min_height or crop_w < min_width:
        raise ValueError(f"{p} is {W0}x{H0}: after the centre crop to the clip's aspect ratio it is {crop_w}x{crop_h}, "
                         f"smaller than the {min_width}x{min_height} clip (it would be upsampled); pass a larger "
                         f"image or a smaller --size")
    return torch.from_numpy(np.ascontiguousarray(a))
