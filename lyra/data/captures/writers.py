"""Write a capture in each format lyra reads: to hand lyra's cameras to other tools, and to build
test fixtures and benchmarks without downloading anything.

The writers take a capture in its own units (``normalization == "none"``) with pinhole frames and
copy its images beside the camera files, so every writer's output reads back with the matching
reader (``lyra.data.captures``) to the same cameras. Files are written to a temporary name and
renamed (``lyra.utils.atomic``).
"""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import numpy as np
import torch
from plyfile import PlyData, PlyElement

from lyra.data.captures.capture import Capture
from lyra.render.cameras import c2w_to_viewmat, world_to_pixels
from lyra.render.rotations import rotmat_to_quat
from lyra.utils.atomic import atomic_path, atomic_write_text

OPENGL_FROM_OPENCV = np.diag([1.0, -1.0, -1.0, 1.0])


def _check_writable(capture: Capture) -> None:
    if capture.normalization != "none" or capture.distortion is not None:
        raise ValueError(f"{capture.source}: writers take a capture as read (no normalisation) with pinhole frames; "
                         f"this one is {capture.normalization!r}, distortion {capture.distortion is not None}")


def _copy_images(capture: Capture, folder: Path, names: list[str] | None = None) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    names = names or [p.name for p in capture.image_paths]
    for src, name in zip(capture.image_paths, names):
        if src.resolve() != (folder / name).resolve():
            shutil.copyfile(src, folder / name)
    return names


def _points_seen(capture: Capture, i: int) -> np.ndarray:  # rows of the points image i observes
    if capture.points is None:
        return np.zeros(0, np.int64)
    if capture.observations is not None:
        return capture.observations[i].numpy()
    _, z = world_to_pixels(capture.points, c2w_to_viewmat(capture.c2w[i]), capture.K[i])
    return np.flatnonzero(z.numpy() > 0)


def write_colmap(folder: str | Path, capture: Capture, binary: bool = False) -> Path:
    """``folder/sparse/0/{cameras,images,points3D}.{txt|bin}`` (one PINHOLE camera per image) and
    ``folder/images/``; each image observes its points (projected to their pixels). Returns the model folder."""
    _check_writable(capture)
    folder, n = Path(folder), capture.num_frames
    model = folder / "sparse" / "0"
    model.mkdir(parents=True, exist_ok=True)
    names = _copy_images(capture, folder / "images")
    viewmats = c2w_to_viewmat(capture.c2w.double())
    q, t = rotmat_to_quat(viewmats[:, :3, :3]).numpy(), viewmats[:, :3, 3].numpy()
    K, (H, W) = capture.K.numpy(), capture.image_sizes.numpy().T
    pts = np.zeros((0, 3)) if capture.points is None else capture.points.numpy()
    rgb = np.full_like(pts, 0.5) if capture.point_colors is None else capture.point_colors.numpy()
    seen = [_points_seen(capture, i) for i in range(n)]
    obs = [world_to_pixels(torch.from_numpy(pts[s]), viewmats[i], capture.K[i])[0].numpy() for i, s in enumerate(seen)]
    tracks: list[list[tuple[int, int]]] = [[] for _ in range(len(pts))]
    for i, s in enumerate(seen):
        for k, p in enumerate(s):
            tracks[p].append((i + 1, k))
    cams = [(i + 1, W[i], H[i], (K[i, 0, 0], K[i, 1, 1], K[i, 0, 2], K[i, 1, 2])) for i in range(n)]
    ext = ".bin" if binary else ".txt"
    if binary:
        blobs = {
            "cameras": struct.pack("<Q", n) + b"".join(struct.pack("<iiQQ4d", c, 1, int(w), int(h), *p)
                                                      for c, w, h, p in cams),
            "images": struct.pack("<Q", n) + b"".join(
                struct.pack("<i7di", i + 1, *q[i], *t[i], i + 1) + names[i].encode() + b"\0"
                + struct.pack("<Q", len(seen[i])) + b"".join(struct.pack("<2dq", *xy, p + 1)
                                                            for xy, p in zip(obs[i], seen[i]))
                for i in range(n)),
            "points3D": struct.pack("<Q", len(pts)) + b"".join(
                struct.pack("<Q3d3BdQ", p + 1, *pts[p], *np.round(rgb[p] * 255).astype(int), 0.0, len(tracks[p]))
                + b"".join(struct.pack("<ii", a, b) for a, b in tracks[p]) for p in range(len(pts))),
        }
        for name, blob in blobs.items():
            with atomic_path(model / f"{name}{ext}") as tmp:
                tmp.write_bytes(blob)
        return model
    cam_lines = [f"# Number of cameras: {n}"] + [f"{c} PINHOLE {int(w)} {int(h)} {' '.join(repr(float(v)) for v in p)}"
                                                  for c, w, h, p in cams]
    img_lines = [f"# Number of images: {n}"]
    for i in range(n):
        img_lines.append(" ".join([str(i + 1), *(repr(float(v)) for v in (*q[i], *t[i])), str(i + 1), names[i]]))
        img_lines.append(" ".join(f"{x!r} {y!r} {p + 1}" for (x, y), p in zip(obs[i].tolist(), seen[i])))
    pt_lines = [f"# Number of points: {len(pts)}"] + [
        " ".join([str(p + 1), *(repr(float(v)) for v in pts[p]), *(str(int(v)) for v in np.round(rgb[p] * 255)), "0",
                  *(f"{a} {b}" for a, b in tracks[p])]) for p in range(len(pts))]
    for name, lines in (("cameras", cam_lines), ("images", img_lines), ("points3D", pt_lines)):
        atomic_write_text(model / f"{name}{ext}", "\n".join(lines) + "\n")
    return model


def write_llff(folder: str | Path, capture: Capture) -> Path:
    """``folder/poses_bounds.npy`` + ``folder/images/`` (needs square pixels and centred principal points;
    the bounds are the capture's, else the 0.1 / 99.9 percentile depths of the points each image sees)."""
    _check_writable(capture)
    folder, K = Path(folder), capture.K
    H, W = capture.image_sizes.unbind(-1)
    if not (torch.allclose(K[:, 0, 0], K[:, 1, 1]) and torch.allclose(K[:, 0, 2], W / 2)
            and torch.allclose(K[:, 1, 2], H / 2)):
        raise ValueError(f"{capture.source}: LLFF stores one focal length and a centred principal point per image")
    bounds = capture.depth_bounds
    if bounds is None:
        rows = []
        for i in range(capture.num_frames):
            z = world_to_pixels(capture.points[_points_seen(capture, i)], c2w_to_viewmat(capture.c2w[i]), K[i])[1]
            rows.append(torch.quantile(z, torch.tensor([0.001, 0.999], dtype=z.dtype)))
        bounds = torch.stack(rows)
    c2w = capture.c2w.double()
    pose = torch.stack([c2w[:, :3, 1], c2w[:, :3, 0], -c2w[:, :3, 2], c2w[:, :3, 3],
                        torch.stack([H, W, K[:, 0, 0]], -1)], dim=-1)  # [N, 3, 5] columns (down, right, back, t, hwf)
    data = torch.cat([pose.reshape(-1, 15), bounds.double()], dim=1).numpy()
    names = [f"{i:05d}{p.suffix}" for i, p in enumerate(capture.image_paths)]  # rows follow the sorted names
    _copy_images(capture, folder / "images", names)
    with atomic_path(folder / "poses_bounds.npy") as tmp:
        with open(tmp, "wb") as f:
            np.save(f, data)
    return folder / "poses_bounds.npy"


def write_realestate10k(camera_file: str | Path, capture: Capture, url: str = "https://example.invalid/clip") -> Path:
    """``<clip>.txt`` (URL line, then one line per frame) and the frames as ``<clip>/<timestamp>.<ext>``."""
    _check_writable(capture)
    path = Path(camera_file)
    H, W = capture.image_sizes.unbind(-1)
    stamps = (capture.timestamps * 1e6).round().long().tolist() if capture.timestamps is not None else \
        [round(i * 1e6 / 30) for i in range(capture.num_frames)]
    w2c = c2w_to_viewmat(capture.c2w.double())[:, :3, :].reshape(-1, 12)
    K = capture.K
    lines = [url]
    for i in range(capture.num_frames):
        intr = (K[i, 0, 0] / W[i], K[i, 1, 1] / H[i], K[i, 0, 2] / W[i], K[i, 1, 2] / H[i])
        lines.append(" ".join([str(stamps[i]), *(repr(float(v)) for v in intr), "0", "0",
                               *(repr(float(v)) for v in w2c[i])]))
    _copy_images(capture, path.with_suffix(""), [f"{s}{p.suffix}" for s, p in zip(stamps, capture.image_paths)])
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def write_transforms_json(folder: str | Path, capture: Capture) -> Path:
    """``folder/transforms.json`` (per-frame intrinsics, OpenGL camera-to-world) + ``folder/images/``, and
    the points as ``sparse_pc.ply`` (its ``ply_file_path``) when the capture has them."""
    _check_writable(capture)
    folder = Path(folder)
    names = _copy_images(capture, folder / "images")
    frames = []
    for i, name in enumerate(names):
        K, (h, w) = capture.K[i].tolist(), capture.image_sizes[i].tolist()
        frames.append({"file_path": f"images/{name}", "fl_x": K[0][0], "fl_y": K[1][1], "cx": K[0][2], "cy": K[1][2],
                       "w": int(w), "h": int(h),
                       "transform_matrix": (capture.c2w[i].double().numpy() @ OPENGL_FROM_OPENCV).tolist()})
    top: dict = {"camera_model": "OPENCV", "frames": frames}
    if capture.points is not None:  # nerfstudio's sparse points, in the same world as the poses
        colors = np.full_like(capture.points.numpy(), 0.5) if capture.point_colors is None else capture.point_colors.numpy()
        vertex = np.empty(len(capture.points), dtype=[(k, "f8") for k in "xyz"] + [(k, "u1") for k in ("red", "green", "blue")])
        for k, column in zip("xyz", capture.points.numpy().T):
            vertex[k] = column
        for k, column in zip(("red", "green", "blue"), np.round(colors * 255).astype(np.uint8).T):
            vertex[k] = column
        with atomic_path(folder / "sparse_pc.ply") as tmp:
            PlyData([PlyElement.describe(vertex, "vertex")]).write(str(tmp))
        top["ply_file_path"] = "sparse_pc.ply"
    atomic_write_text(folder / "transforms.json", json.dumps(top, indent=1))
    return folder / "transforms.json"
