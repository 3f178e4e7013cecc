"""The output folder of one generation (docs/generate.md):

=====================  ==========================================================================
``scene.ply``          static decoders: the Gaussians, standard 3DGS PLY
``scene/``             dynamic decoders: ``t000.ply`` ... one set per time + ``index.json`` (times)
``orbit.mp4``          a turntable around the point the first input camera looks at
``inputs.mp4``         per input trajectory (rows): the teacher's frames | the scene rendered there
``inputs.png``         the same as a sheet: up to 4 frames per trajectory
``input.png``          the image the teacher started from (image and prompt sources)
``cameras/*.json``     every input trajectory and the orbit as camera-path JSON (``lyra render``)
``meta.json``          inputs, weights, settings, seed, timings per stage, peak memory, fidelity
``.lyra-output``       marks the folder as lyra's: only such a folder may be replaced (--overwrite)
=====================  ==========================================================================
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

from lyra.data.clip import Clip
from lyra.inference.render import render_frames
from lyra.metrics import psnr
from lyra.render.camera_path import CameraPath
from lyra.render.cameras import look_at
from lyra.render.formats import save_dynamic_scene
from lyra.render.gaussians import Gaussians
from lyra.render.ply import save_ply
from lyra.utils.errors import LyraUsageError, cannot_write
from lyra.viz.video import to_uint8, write_png, write_video

OUTPUT_MARKER = ".lyra-output"  # in every folder lyra generate / SceneWriter wrote


def replaceable(out: Path) -> bool:
    """``out`` may be replaced: it does not exist, is an empty folder, or holds lyra's marker file
    (a plain file, not a link someone placed there)."""
    if not out.exists():
        return True
    if not out.is_dir() or out.is_symlink():
        return False
    marker = out / OUTPUT_MARKER
    return not any(out.iterdir()) or (marker.is_file() and not marker.is_symlink())


@contextmanager
def staged_folder(out: Path) -> Iterator[Path]:
    """Yield a hidden sibling ``.NAME.partial-PID`` to write into; it becomes ``out`` only when the
    block completes (an existing ``out``, with --overwrite, is removed only then, and only if lyra
    wrote it: ``replaceable``) and is deleted if the block fails, so no half-written folder ever looks
    finished. The new folder carries ``OUTPUT_MARKER``."""
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        (tmp / OUTPUT_MARKER).write_text("written by lyra; `lyra generate --overwrite` may replace this folder\n")
    except OSError as err:  # name the folder asked for, not the hidden one
        shutil.rmtree(tmp, ignore_errors=True)
        raise cannot_write(out, err, "--out ") from None
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if not replaceable(out):  # it changed while we ran: never delete what lyra did not write
        raise LyraUsageError(f"{out} appeared during the run and was not written by lyra; the finished result is in "
                             f"{tmp}: move it where you want it")
    try:
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except OSError as err:
        raise LyraUsageError(f"cannot rename the finished result {tmp} to {out} ({err.strerror}); it is complete "
                             "where it is: move it by hand") from None


def write_meta(folder: Path, meta: dict[str, Any], summary: dict[str, Any]) -> None:
    """``meta.json``: ``meta`` plus the peak memory of ``summary`` (a ``StageLog.summary()``) and versions."""
    meta = {**meta,
            "peak_memory": {"cpu_peak_rss_mb": summary["cpu_peak_rss_mb"],
                            "cuda_peak_allocated_mb": summary["cuda_peak_allocated_mb"]},
            "versions": {"torch": torch.__version__, "python": sys.version.split()[0]}}
    (folder / "meta.json").write_text(json.dumps(meta, indent=1, default=str))


def scene_sets(
    gaussians: Gaussians,  # [N] (static) or [M, N] (one set per time)
) -> list[Gaussians]:
    return [gaussians] if len(gaussians.batch_shape) == 0 else [gaussians[m] for m in range(gaussians.batch_shape[0])]


def write_scene(folder: Path, gaussians: Gaussians, times: Sequence[float] | None) -> str:
    """``scene.ply`` or the dynamic ``scene/`` folder; returns its name."""
    if times is None:
        save_ply(folder / "scene.ply", gaussians)
        return "scene.ply"
    sets = scene_sets(gaussians)
    save_dynamic_scene(folder / "scene", sets, list(times))
    return "scene"


def orbit_path(
    c2w0: Tensor,  # [4, 4] first input camera
    K0: Tensor,  # [3, 3]
    means: Tensor,  # [N, 3] Gaussians to frame
    num_frames: int,
    width: int,
    height: int,
    degrees: float = 60.0,
    dynamic: bool = False,
) -> CameraPath:
    """A loop around the point the first camera looks at (at the median depth of the Gaussians in
    front of it), about the camera's own up axis: a full circle for 360 degrees, else a smooth swing
    of +-degrees/2 that returns to the start. Dynamic scenes play time 0 -> 1 along it."""
    c2w0 = c2w0.double()
    z = ((means.double() - c2w0[:3, 3]) @ c2w0[:3, 2])
    z = z[z > 0]
    depth = float(z.median()) if z.numel() else 1.0
    center = c2w0[:3, 3] + depth * c2w0[:3, 2]
    axis = -c2w0[:3, 1]  # the camera's up
    u = torch.linspace(0.0, 1.0, num_frames + 1, dtype=torch.float64)[:-1]
    angle = (2 * math.pi * u) if degrees >= 360 else math.radians(degrees) / 2 * torch.sin(2 * math.pi * u)
    offset = c2w0[:3, 3] - center
    # Rodrigues rotation of the eye's offset about the up axis.
    cos, sin = torch.cos(angle)[:, None], torch.sin(angle)[:, None]
    rotated = offset * cos + torch.cross(axis.expand(num_frames, 3), offset.expand(num_frames, 3), dim=-1) * sin \
        + axis * (axis @ offset) * (1 - cos)
    c2w = look_at(center + rotated, center.expand(num_frames, 3), up=axis).float()
    time = torch.linspace(0.0, 1.0, num_frames) if dynamic and num_frames > 1 else (
        torch.zeros(num_frames) if dynamic else None)
    return CameraPath(c2w, K0.expand(num_frames, 3, 3).clone(), width, height, time)


def _sheet(teacher: np.ndarray, render: np.ndarray, frames: int = 4, border: int = 2) -> np.ndarray:
    """[V, T, H, W, 3] x 2 -> one row per trajectory: (teacher, render) pairs at up to ``frames`` times."""
    V, T, H, W, _ = teacher.shape
    picks = np.unique(np.round(np.linspace(0, T - 1, min(frames, T))).astype(int))
    cols = 2 * len(picks)
    sheet = np.full((V * (H + border) + border, cols * (W + border) + border, 3), 128, dtype=np.uint8)
    for v in range(V):
        for k, t in enumerate(picks):
            y = border + v * (H + border)
            for j, img in enumerate((teacher[v, t], render[v, t])):
                x = border + (2 * k + j) * (W + border)
                sheet[y:y + H, x:x + W] = img
    return sheet


def write_views(
    folder: Path,
    clip: Clip,
    gaussians: Gaussians,  # [N] or [M, N]
    times: Sequence[float] | None,
    view_names: Sequence[str],
    orbit_frames: int = 48,
    orbit_degrees: float = 60.0,
    fps: float = 24.0,
    background: Sequence[float] = (1.0, 1.0, 1.0),
    camera_chunk: int = 8,
    device: str | torch.device = "cpu",
    input_image: Tensor | None = None,  # [H, W, 3]
) -> dict[str, Any]:
    """Camera paths, the input-trajectory comparison and the orbit; returns what meta.json records."""
    sets = scene_sets(gaussians)
    dynamic = times is not None
    V, T, H, W, _ = clip.rgb.shape
    cams = folder / "cameras"
    names = list(view_names) if len(view_names) == V else [f"view{v}" for v in range(V)]
    for v in range(V):
        CameraPath(clip.c2w[v], clip.K[v], W, H, clip.time[v] if dynamic else None).save(
            cams / f"{v:02d}_{names[v]}.json")
    renders = render_frames(sets, times, clip.c2w.reshape(-1, 4, 4), clip.K.reshape(-1, 3, 3), H, W,
                            clip.time.reshape(-1) if dynamic else None, background, camera_chunk, device,
                            desc="render: input views").reshape(V, T, H, W, 3)
    teacher_u8, render_u8 = to_uint8(clip.rgb), to_uint8(renders)
    side = np.concatenate([teacher_u8, render_u8], axis=3)  # [V, T, H, 2W, 3]
    write_video(folder / "inputs.mp4", side.transpose(1, 0, 2, 3, 4).reshape(T, V * H, 2 * W, 3), fps=fps)
    write_png(folder / "inputs.png", _sheet(teacher_u8, render_u8))
    first = sets[0]
    path = orbit_path(clip.c2w[0, 0], clip.K[0, 0], first.means, orbit_frames, W, H, orbit_degrees, dynamic)
    path.save(cams / "orbit.json")
    orbit = render_frames(sets, times, path.c2w, path.K, H, W, path.time, background, camera_chunk, device,
                          desc="render: orbit")
    write_video(folder / "orbit.mp4", orbit, fps=fps)
    if input_image is not None:
        write_png(folder / "input.png", input_image)
    return {"fidelity_psnr": {names[v]: round(float(psnr(renders[v].reshape(-1, *renders.shape[-2:]), clip.rgb[v].reshape(-1, *clip.rgb.shape[-2:]).to(renders))), 3) for v in range(V)},
            "view_names": names}
