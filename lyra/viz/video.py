"""Video (mp4, H.264) and contact-sheet (PNG) writers for rendered frames, written atomically."""

from __future__ import annotations

import math
import os

import imageio.v3 as iio
import imageio_ffmpeg
import numpy as np
from torch import Tensor

from lyra.utils.atomic import atomic_path
from lyra.utils.errors import LyraUsageError, write_failure_hint

FPS_RANGE = (0.1, 1000.0)  # ffmpeg refuses or silently drops frames outside such rates


def to_uint8(frames: Tensor | np.ndarray) -> np.ndarray:  # [..., H, W, 3] float in [0, 1] or uint8
    """Frames as uint8 numpy; floats are clipped to [0, 1] and rounded (not truncated)."""
    if isinstance(frames, Tensor):
        frames = frames.detach().cpu().numpy()
    frames = np.asarray(frames)
    if frames.dtype == np.uint8:
        return frames
    if not np.issubdtype(frames.dtype, np.floating):
        raise TypeError(f"frames must be float in [0, 1] or uint8, got {frames.dtype}")
    if not np.isfinite(frames).all():
        raise ValueError("frames contain NaN or Inf; check the renderer's output before writing it")
    return np.round(np.clip(frames, 0.0, 1.0) * 255.0).astype(np.uint8)


def _check_frames(frames: np.ndarray) -> None:  # [T, H, W, 3]
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 1:
        raise ValueError(f"frames must be [T, H, W, 3] with T >= 1, got {tuple(frames.shape)}")


def write_video(
    path: str | os.PathLike,
    frames: Tensor | np.ndarray,  # [T, H, W, 3] float in [0, 1] or uint8
    fps: float = 24.0,
    quality: float = 8.0,
) -> None:
    """Write an H.264 mp4 (yuv420p, plays everywhere) through imageio's ffmpeg, atomically.

    yuv420p subsamples chroma 2x2, so width and height must be even; we refuse odd sizes rather
    than silently resizing (imageio's default) so a video's size is always the size asked for.
    The written file is read back (its frame count) before it replaces ``path``: an encoder that
    wrote nothing, or fewer frames, is an error, never a "wrote" for an empty video.
    """
    frames = to_uint8(frames)
    _check_frames(frames)
    _, h, w, _ = frames.shape
    if h % 2 or w % 2:
        raise ValueError(f"mp4 (H.264 yuv420p) needs even width and height, got {w}x{h}; render at an even size")
    if not FPS_RANGE[0] <= fps <= FPS_RANGE[1]:
        raise LyraUsageError(f"fps must lie in [{FPS_RANGE[0]:g}, {FPS_RANGE[1]:g}] frames per second, got {fps}")
    with atomic_path(path) as tmp:
        # The temp name ends in .tmp, so name the container explicitly instead of by extension.
        writer = imageio_ffmpeg.write_frames(
            str(tmp), (w, h), fps=fps, codec="libx264", pix_fmt_in="rgb24", pix_fmt_out="yuv420p",
            quality=quality, macro_block_size=1, output_params=["-f", "mp4"], ffmpeg_log_level="error")
        writer.send(None)
        try:
            for frame in frames:
                writer.send(np.ascontiguousarray(frame))
        finally:
            writer.close()
        check_video(tmp, len(frames), shown_as=path)


def check_video(
    path: str | os.PathLike,
    num_frames: int,
    shown_as: str | os.PathLike | None = None,  # the name in messages (the final name of a temp file)
) -> None:
    """Refuse a video file that is empty or does not hold ``num_frames`` frames (read back by ffmpeg)."""
    name = shown_as if shown_as is not None else path
    size = os.path.getsize(path)
    try:
        found, _ = imageio_ffmpeg.count_frames_and_secs(str(path)) if size else (0, 0.0)
    except (RuntimeError, OSError) as err:
        raise LyraUsageError(f"the video written to {name} cannot be read back ({str(err).splitlines()[0]}); "
                             f"{write_failure_hint()}; nothing was written") from None
    if found != num_frames:
        raise LyraUsageError(f"the video written to {name} holds {found} frames ({size} bytes), not the {num_frames} "
                             "rendered; the encoder failed (an fps it cannot use?), nothing was written")


def contact_sheet(
    frames: Tensor | np.ndarray,  # [T, H, W, 3] float in [0, 1] or uint8
    max_frames: int = 12,
    columns: int | None = None,
    border: int = 2,
) -> np.ndarray:  # [rows * (H + border) + border, columns * (W + border) + border, 3] uint8
    """Tile up to ``max_frames`` evenly spaced frames (first and last included) on a grey grid."""
    frames = to_uint8(frames)
    _check_frames(frames)
    if max_frames < 1 or border < 0:
        raise ValueError(f"max_frames must be >= 1 and border >= 0, got {max_frames} and {border}")
    t, h, w, _ = frames.shape
    n = min(t, max_frames)
    picks = np.round(np.linspace(0, t - 1, n)).astype(int)
    cols = columns if columns is not None else math.ceil(math.sqrt(n * h / w))  # roughly square sheet
    cols = max(1, min(cols, n))
    rows = math.ceil(n / cols)
    sheet = np.full((rows * (h + border) + border, cols * (w + border) + border, 3), 128, dtype=np.uint8)
    for k, i in enumerate(picks):
        r, c = divmod(k, cols)
        y, x = border + r * (h + border), border + c * (w + border)
        sheet[y:y + h, x:x + w] = frames[i]
    return sheet


def write_png(path: str | os.PathLike, image: Tensor | np.ndarray) -> None:  # [H, W, 3]

    image = to_uint8(image)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"image must be [H, W, 3], got {tuple(image.shape)}")
    with atomic_path(path) as tmp:
        iio.imwrite(tmp, image, extension=".png")


def write_contact_sheet(
    path: str | os.PathLike,
    frames: Tensor | np.ndarray,  # [T, H, W, 3]
    max_frames: int = 12,
    columns: int | None = None,
) -> np.ndarray:  # the sheet that was written, [H', W', 3] uint8
    sheet = contact_sheet(frames, max_frames=max_frames, columns=columns)
    write_png(path, sheet)
    return sheet

