"""Monocular video + per-frame cameras as a teacher clip (``VideoTeacher``), and the camera file.

The camera file is what a video pose / depth estimator writes, as one ``.npz`` (numpy.savez):

=========  ==============  ===================================================================
key        shape           meaning
=========  ==============  ===================================================================
``c2w``    [T, 4, 4]       camera-to-world, OpenCV axes (x right, y down, z forward), rigid
``K``      [T, 3, 3]       pixel intrinsics for the video's own resolution (or one [3, 3])
``depth``  [T, H, W]       optional z-depth per frame at any resolution (0 = unknown)
``time``   [T]             optional scene time in [0, 1] (default: 0 -> 1 evenly)
=========  ==============  ===================================================================

One camera per video frame (T must equal the video's frame count). From the video, ``num_frames``
frames are taken evenly spaced (first and last included), centre-cropped to the clip's aspect ratio
and resized; intrinsics and depth follow the same crop and resize.

Scale: the decoder was trained on scenes of a certain size (its Gaussians sit between ``near`` and
``far`` along the rays). With ``depth``, the world is scaled so that the median known depth of the
chosen frames equals ``scene_depth`` (default 3.2, the median depth of the procedural training
scenes' first frames); ``world_scale`` sets the factor by hand instead. The teacher's clip lives in
that scaled world; ``lyra generate`` scales the Gaussians back (``meta["world_scale"]``), so the
scene it writes lines up with the file's cameras.

Sanity (refused with the reason, unless ``force``): intrinsics must fit the video's resolution (a
field of view of 1 to 170 degrees, the principal point inside the frame: K scaled by 1e6 or given
for another resolution is caught), and known depth may not span more than ``MAX_DEPTH_SPAN`` times
its median (an "infinite" far value stored as 1e9). Sizes are checked before reading: the camera
file's arrays (``decoded_bytes``), the video's frame count (``frames``) and frame size (``pixels``).
"""

from __future__ import annotations

import importlib.util
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from lyra.data.generators.base import ClipGenerator, GeneratedClip
from lyra.inference.images import read_media
from lyra.render.cameras import check_intrinsics_fit, crop_intrinsics, resize_intrinsics
from lyra.utils.errors import LyraUsageError
from lyra.utils.limits import check_limit
from lyra.utils.npz import npz_keys, read_npz

CAMERA_KEYS = ("c2w", "K", "depth", "time")
DEFAULT_SCENE_DEPTH = 3.2
MAX_DEPTH_SPAN = 1000.0  # known depth beyond this x its median is a placeholder, not a measurement
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v")


def read_cameras(path: str | os.PathLike) -> dict[str, Tensor]:
    """The camera file (layout in the module doc), checked: rigid poses, positive focal lengths, ranges."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"camera file {str(p)!r} does not exist; write one with numpy.savez(path, c2w=[T, 4, 4], "
                                "K=[T, 3, 3][, depth=[T, H, W], time=[T]])")
    if p.suffix.lower() != ".npz":
        raise ValueError(f"{p}: unknown camera file format {p.suffix or '(no suffix)'!r}; pass a .npz written with "
                         "numpy.savez(path, c2w=[T, 4, 4], K=[T, 3, 3][, depth=[T, H, W], time=[T]])")
    # Array sizes checked before anything is decompressed; arrays lyra does not read are left packed.
    data = read_npz(p, "write it with numpy.savez", keys=CAMERA_KEYS)
    missing = [k for k in ("c2w", "K") if k not in data]
    if missing:
        held = npz_keys(p)
        hint = " (found w2c: invert it to camera-to-world first)" if "w2c" in held else ""
        raise ValueError(f"{p} lacks {missing}{hint}; it holds {held}. Expected c2w [T, 4, 4] (OpenCV "
                         "camera-to-world), K [T, 3, 3] in pixels, optional depth [T, H, W] and time [T]")
    for k, v in data.items():
        if k in CAMERA_KEYS and not np.issubdtype(v.dtype, np.number):
            raise ValueError(f"{p}: {k} has dtype {v.dtype}; store numbers (float32 or float64)")
    c2w = torch.as_tensor(data["c2w"], dtype=torch.float64)
    if c2w.ndim != 3 or c2w.shape[1:] != (4, 4):
        raise ValueError(f"{p}: c2w must be [T, 4, 4] (one camera-to-world matrix per frame), got {tuple(c2w.shape)}")
    T = c2w.shape[0]
    K = torch.as_tensor(data["K"], dtype=torch.float64)
    if K.shape == (3, 3):
        K = K.expand(T, 3, 3).clone()
    if tuple(K.shape) != (T, 3, 3):
        raise ValueError(f"{p}: K must be [T={T}, 3, 3] or one [3, 3], got {tuple(K.shape)}")
    for name, t in (("c2w", c2w), ("K", K)):
        if not torch.isfinite(t).all():
            raise ValueError(f"{p}: {name} contains NaN or Inf; remove or re-estimate those frames")
    R = c2w[:, :3, :3]
    err = (R.transpose(1, 2) @ R - torch.eye(3, dtype=torch.float64)).abs().amax(dim=(1, 2))
    det = torch.linalg.det(R)
    bottom = (c2w[:, 3] - torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=torch.float64)).abs().amax(dim=1)
    bad = ((err > 1e-3) | (det < 0) | (bottom > 1e-6)).nonzero().flatten()
    if len(bad):
        i = int(bad[0])
        raise ValueError(
            f"{p}: c2w[{i}] is not a rigid camera-to-world pose (rotation error |R^T R - I| = {float(err[i]):.3g}, "
            f"det {float(det[i]):.3g}, last row {c2w[i, 3].tolist()}; {len(bad)} of {T} frames are bad). Store "
            "orthonormal rotations with det +1 and last row [0, 0, 0, 1] (re-orthonormalise with an SVD; a scaled "
            "or mirrored matrix, or a world-to-camera one, is not a pose)")
    if (K[:, 0, 0] <= 0).any() or (K[:, 1, 1] <= 0).any():
        raise ValueError(f"{p}: K has zero or negative focal lengths; K holds pixel intrinsics [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]")
    out = {"c2w": c2w.float(), "K": K.float()}
    if "time" in data:
        time = torch.as_tensor(data["time"], dtype=torch.float32).reshape(-1)
        if time.shape != (T,) or not torch.isfinite(time).all() or (time < 0).any() or (time > 1).any():
            raise ValueError(f"{p}: time must be [T={T}] values in [0, 1] (normalised scene time), got shape "
                             f"{tuple(data['time'].shape)}; divide timestamps by the clip's duration")
        out["time"] = time
    if "depth" in data:
        depth = torch.as_tensor(data["depth"], dtype=torch.float32)
        if depth.ndim != 3 or depth.shape[0] != T:
            raise ValueError(f"{p}: depth must be [T={T}, H, W], got {tuple(depth.shape)}")
        if not torch.isfinite(depth).all() or (depth < 0).any():
            raise ValueError(f"{p}: depth must be finite and >= 0 (0 = unknown); set invalid pixels to 0")
        if not (depth > 0).any():
            raise ValueError(f"{p}: depth is 0 (unknown) everywhere; drop the key instead")
        out["depth"] = depth
    check_limit("frames", T, f"{p} (cameras)")
    return out


def check_plausible(cams: dict[str, Tensor], width: int, height: int, where: str) -> None:
    """Refuse intrinsics that do not fit a ``width x height`` video and depth that spans more than
    ``MAX_DEPTH_SPAN`` x its median (module doc); ``lyra generate --force`` skips this."""
    force = " (or pass --force if the file is right)"
    try:
        check_intrinsics_fit(cams["K"], width, height, f"{where}: K")
    except ValueError as err:
        raise LyraUsageError(f"{err}{force}") from None
    if "depth" in cams:
        known = cams["depth"][cams["depth"] > 0]
        median, top = float(known.median()), float(known.max())
        if top > MAX_DEPTH_SPAN * median:
            raise LyraUsageError(f"{where}: depth reaches {top:.4g}, {top / median:.3g} x its median {median:.4g}; values "
                                 "that far are placeholders for 'unknown' or 'infinity', which would set the scene's "
                                 f"scale: store 0 for unknown pixels{force}")
        centres = cams["c2w"][:, :3, 3]
        baseline = float((centres - centres[:1]).norm(dim=-1).max())
        if baseline > 0 and not 1.0 / MAX_DEPTH_SPAN**2 <= median / baseline <= MAX_DEPTH_SPAN**2:
            raise LyraUsageError(f"{where}: the median depth {median:.4g} and the cameras' travel {baseline:.4g} differ "
                                 f"by a factor of {max(median / baseline, baseline / median):.3g}: depth and poses must "
                                 f"be in the same units{force}")


def read_video(path: str | os.PathLike) -> np.ndarray:  # [T, H, W, 3] uint8
    """Every frame of a video file, RGB uint8."""
    p = Path(path)
    frames = read_media(p, "video", VIDEO_SUFFIXES, " (convert with ffmpeg -i in.xyz out.mp4)",
                        "re-encode it, e.g. ffmpeg -i in.mp4 -c:v libx264 -pix_fmt yuv420p out.mp4",
                        plugin="pyav" if _has_pyav() else None)
    if frames.ndim == 3:  # a grey video comes back without the colour axis
        frames = frames[..., None]
    if frames.ndim != 4 or frames.shape[-1] not in (1, 3, 4) or frames.dtype != np.uint8:
        raise ValueError(f"{p}: expected 8-bit RGB frames, got an array {frames.shape} of {frames.dtype}; "
                         "re-encode it as 8-bit RGB (yuv420p H.264)")
    if frames.shape[-1] == 1:
        frames = np.repeat(frames, 3, axis=-1)
    return np.ascontiguousarray(frames[..., :3])


def _has_pyav() -> bool:
    return importlib.util.find_spec("av") is not None


def frame_indices(total: int, num_frames: int) -> list[int]:
    """``num_frames`` evenly spaced frames of ``total``, first and last included, no repeats."""
    if num_frames > total:
        raise ValueError(f"the clip needs {num_frames} frames but the video has only {total}; pass a longer video "
                         f"or fewer --frames")
    if num_frames == 1:
        return [0]
    return [round(i * (total - 1) / (num_frames - 1)) for i in range(num_frames)]


def _crop_box(H0: int, W0: int, height: int, width: int) -> tuple[int, int, int, int]:  # top, left, h, w
    crop_h, crop_w = min(H0, round(W0 * height / width)), min(W0, round(H0 * width / height))
    return (H0 - crop_h) // 2, (W0 - crop_w) // 2, crop_h, crop_w


class VideoTeacher(ClipGenerator):
    """One trajectory: a monocular video's frames (encoded by the teacher's codec) and their cameras.

    Everything is read and checked here (frame count against cameras, poses, intrinsics, depth),
    before any long work. ``generate(index)`` ignores ``index`` beyond 0 (there is one video).
    """

    def __init__(
        self,
        video: str | os.PathLike,
        cameras: str | os.PathLike,
        scene_depth: float | None = DEFAULT_SCENE_DEPTH,
        world_scale: float | None = None,
        force: bool = False,
    ) -> None:
        """Args: video, cameras: the files; scene_depth / world_scale: the scale (module doc); force:
        accept intrinsics and depth that ``check_plausible`` refuses."""
        super().__init__(0)
        self.video_path, self.cameras_path = str(video), str(cameras)
        self.cams = read_cameras(cameras)
        self.frames = read_video(video)
        T = self.cams["c2w"].shape[0]
        if len(self.frames) != T:
            raise ValueError(f"{video} has {len(self.frames)} frames but {cameras} holds {T} cameras (c2w [{T}, 4, 4]); "
                             "the camera file needs exactly one camera per video frame: re-export it for this video, "
                             "or cut the video to the frames it covers")
        H0, W0 = self.frames.shape[1:3]
        if not force:
            check_plausible(self.cams, W0, H0, str(cameras))
        if "depth" in self.cams and self.cams["depth"].shape[1:] != (H0, W0):
            dh, dw = self.cams["depth"].shape[1:]
            if abs(dh / dw - H0 / W0) > 0.01:
                raise ValueError(f"{cameras}: depth is {dw}x{dh} but the video is {W0}x{H0} (another aspect ratio); "
                                 "store depth at the video's resolution or any size of the same shape")
        if world_scale is not None and not (math.isfinite(world_scale) and world_scale > 0):
            raise ValueError(f"world_scale must be a positive number, got {world_scale}")
        if scene_depth is not None and not (math.isfinite(scene_depth) and scene_depth > 0):
            raise ValueError(f"scene_depth must be a positive number, got {scene_depth}")
        self.scene_depth, self.world_scale = scene_depth, world_scale

    @property
    def video_size(self) -> tuple[int, int]:  # (H, W)
        return int(self.frames.shape[1]), int(self.frames.shape[2])

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "video": self.video_path, "cameras": self.cameras_path,
                "video_frames": int(len(self.frames)), "video_size": list(self.video_size),
                "has_depth": "depth" in self.cams, "scene_depth": self.scene_depth, "world_scale": self.world_scale}

    def generate(self, index: int, num_frames: int, height: int, width: int) -> GeneratedClip:
        self.check_index(index)
        pick = frame_indices(len(self.frames), num_frames)
        H0, W0 = self.video_size
        top, left, ch, cw = _crop_box(H0, W0, height, width)
        rgb = torch.from_numpy(self.frames[pick]).float().div(255.0)[:, top:top + ch, left:left + cw]
        rgb = F.interpolate(rgb.permute(0, 3, 1, 2), size=(height, width), mode="bilinear", align_corners=False,
                            antialias=True).clamp(0, 1).permute(0, 2, 3, 1)
        K = resize_intrinsics(crop_intrinsics(self.cams["K"][pick], top, left), (ch, cw), (height, width))
        c2w = self.cams["c2w"][pick].clone()
        total = len(self.frames)
        time = self.cams["time"][pick] if "time" in self.cams else (
            torch.tensor(pick, dtype=torch.float32) / max(total - 1, 1))
        depth = None
        if "depth" in self.cams:
            d = self.cams["depth"][pick]
            dh, dw = d.shape[1:]
            sy, sx = dh / H0, dw / W0
            d = d[:, round(top * sy):round((top + ch) * sy), round(left * sx):round((left + cw) * sx)]
            depth = F.interpolate(d[:, None], size=(height, width), mode="nearest")[:, 0]
        scale = 1.0
        if self.world_scale is not None:
            scale = float(self.world_scale)
        elif depth is not None and self.scene_depth is not None:
            known = depth[depth > 0]
            if known.numel() == 0:
                raise ValueError(f"{self.cameras_path}: depth is 0 (unknown) on every chosen frame; cannot scale the "
                                 "scene from it: pass --world-scale")
            scale = self.scene_depth / float(known.median())
        c2w[:, :3, 3] *= scale
        if depth is not None:
            depth = depth * scale
        return GeneratedClip(
            c2w=c2w[None], K=K[None], time=time[None], rgb=rgb[None], depth=None if depth is None else depth[None],
            depth_is_metric=False, caption="",
            meta={"trajectories": ["video"], "frames": pick, "world_scale": scale, "video": self.video_path})
