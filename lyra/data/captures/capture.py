"""``Capture``: a posed image sequence read from disk, in lyra's camera convention, and its scale.

Every reader (COLMAP, LLFF, RealEstate10K, ``transforms.json``) returns the same container:
OpenCV camera-to-world poses, pixel intrinsics for the stored image size, the image files in
trajectory order, and what else the format knows (sparse points and which images see them,
per-image depth bounds, timestamps, lens distortion).

Scale normalisation (stated once, here). Captures come in arbitrary units (COLMAP and ORB-SLAM
fix no scale), while a decoder's depth range is fixed. ``normalize_capture`` moves the world so
the centroid of the camera centres is the origin and scales it so one statistic equals ``unit``:

- ``"points"``: the median z-depth of the sparse points in the cameras that observe them (every
  point in front of every camera when the format lists no observations);
- ``"bounds"``: the median over images of ``sqrt(near * far)`` of the per-image depth bounds (LLFF);
- ``"cameras"``: the mean distance of the camera centres from their centroid (no depth known);
- ``"auto"``: the first of those the capture supports; ``"none"``: units as stored.

The map is ``x_normalised = scale * (x_capture - origin)``; ``scale``, ``origin`` and the statistic
are kept on the capture (and in every clip's meta) so renders and exported scenes can return to
the capture's units (:meth:`Capture.to_capture_units`). Rotations are never changed.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor

from lyra.render.cameras import c2w_to_viewmat, world_to_pixels
from lyra.render.gaussians import Gaussians

CaptureFormat = Literal["colmap", "llff", "realestate10k", "transforms_json"]
Normalization = Literal["auto", "points", "bounds", "cameras", "none"]


def capture_error(where: str | Path, field_name: str, problem: str, fix: str) -> ValueError:
    """The one message shape of capture errors: the file, the field, what is wrong, how to fix it."""
    return ValueError(f"{where}: {field_name}: {problem}; {fix}")


@dataclass
class Capture:
    """One capture. Tensors are float64 on the CPU (exact enough to compare with the files).

    Attributes:
        name: the capture's name (its folder, or the RealEstate10K file stem).
        format: which reader made it.
        source: the camera file it was read from (named in every later error).
        c2w: ``[N, 4, 4]`` camera-to-world, OpenCV axes (x right, y down, z forward).
        K: ``[N, 3, 3]`` pixel intrinsics for each image's stored size (``image_sizes``).
        image_sizes: ``[N, 2]`` (height, width) in pixels the intrinsics refer to.
        image_paths: the N image files, in trajectory order.
        distortion: ``[N, 8]`` OpenCV lens coefficients (k1, k2, p1, p2, k3, k4, k5, k6), or None
            for pinhole images; frames are undistorted to the pinhole ``K`` when loaded.
        points: ``[P, 3]`` sparse world points, or None.
        point_colors: ``[P, 3]`` their colours in [0, 1], or None.
        observations: per image, a ``[M_i]`` long tensor of the points it observes (COLMAP
            tracks), or None (then every point in front of a camera counts as seen).
        depth_bounds: ``[N, 2]`` near and far z-depth per image (LLFF), or None.
        timestamps: ``[N]`` frame times in seconds (RealEstate10K), or None.
        scale, origin, normalization: the map to normalised units (module docstring):
            ``x_normalised = scale * (x_capture - origin)``; ``normalization`` names the statistic.
    """

    name: str
    format: CaptureFormat
    source: Path
    c2w: Tensor  # [N, 4, 4]
    K: Tensor  # [N, 3, 3]
    image_sizes: Tensor  # [N, 2] (height, width)
    image_paths: list[Path]
    distortion: Tensor | None = None  # [N, 8]
    points: Tensor | None = None  # [P, 3]
    point_colors: Tensor | None = None  # [P, 3]
    observations: list[Tensor] | None = None  # N x [M_i]
    depth_bounds: Tensor | None = None  # [N, 2]
    timestamps: Tensor | None = None  # [N]
    scale: float = 1.0
    origin: Tensor = field(default_factory=lambda: torch.zeros(3, dtype=torch.float64))  # [3]
    normalization: str = "none"

    def __post_init__(self) -> None:
        n = len(self.image_paths)
        if n == 0:
            raise capture_error(self.source, "images", "the capture lists no images", "add posed frames")
        expect = {"c2w": (n, 4, 4), "K": (n, 3, 3), "image_sizes": (n, 2)}
        optional = {"distortion": (n, 8), "depth_bounds": (n, 2), "timestamps": (n,)}
        for name, shape in [*expect.items(), *optional.items()]:
            value = getattr(self, name)
            if value is None:
                continue
            if tuple(value.shape) != shape:
                raise capture_error(self.source, name, f"shape {tuple(value.shape)} does not match {n} images "
                                    f"(expected {shape})", "one entry per image")
            bad = (~torch.isfinite(value.double())).reshape(n, -1).any(-1).nonzero()[:, 0].tolist()
            if bad:
                raise capture_error(self.source, name, f"NaN or infinite values for image {bad[0]} "
                                    f"({self.image_paths[bad[0]].name})", "fix or drop that frame")
        missing = [p for p in self.image_paths if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"{self.source}: images: {len(missing)} of {n} listed images do not exist, the "
                                    f"first {str(missing[0])!r}; copy the frames next to the camera file (or fix "
                                    "the image paths it lists)")
        if self.points is not None and (self.points.ndim != 2 or self.points.shape[-1] != 3):
            raise capture_error(self.source, "points", f"shape {tuple(self.points.shape)}, expected [P, 3]",
                                "write x y z per point")
        if self.observations is not None and len(self.observations) != n:
            raise capture_error(self.source, "observations", f"{len(self.observations)} lists for {n} images",
                                "one list of observed points per image")

    @property
    def num_frames(self) -> int:
        return len(self.image_paths)

    @property
    def camera_centers(self) -> Tensor:  # [N, 3]
        return self.c2w[:, :3, 3]

    def point_depths(self) -> Tensor:  # [M] z-depth of every (point, observing camera) pair in front of it
        """Depths of the sparse points in the cameras that observe them (all cameras without tracks)."""
        if self.points is None or not len(self.points):
            return torch.zeros(0, dtype=torch.float64)
        viewmats = c2w_to_viewmat(self.c2w)
        depths = []
        for i in range(self.num_frames):
            pts = self.points if self.observations is None else self.points[self.observations[i]]
            _, z = world_to_pixels(pts, viewmats[i], self.K[i])
            depths.append(z[z > 0])
        return torch.cat(depths)

    def to_capture_units(self, points: Tensor) -> Tensor:  # [..., 3] normalised -> [..., 3] capture units
        return points.double() / self.scale + self.origin

    def from_capture_units(self, points: Tensor) -> Tensor:  # [..., 3] capture units -> [..., 3] normalised
        return (points.double() - self.origin) * self.scale

    def gaussians_to_capture_units(self, gaussians: Gaussians) -> Gaussians:
        """A scene decoded from this capture's clips (normalised units) in the capture's own units:
        means through the inverse map, scales divided by ``scale``; rotations, opacities and colours as they are."""
        means = self.to_capture_units(gaussians.means).to(gaussians.means.dtype)
        return replace(gaussians, means=means, scales=gaussians.scales / self.scale)

    def normalization_meta(self) -> dict:
        """JSON-serialisable record of the normalisation (stored in every clip's meta)."""
        return {"scale": float(self.scale), "origin": [float(v) for v in self.origin],
                "statistic": self.normalization,
                "map": "x_normalised = scale * (x_capture - origin); x_capture = x_normalised / scale + origin"}


def normalize_capture(capture: Capture, mode: Normalization = "auto", unit: float = 1.0) -> Capture:
    """A copy of ``capture`` in normalised units (the map and statistics: module docstring).

    Args:
        capture: a capture as read (``scale`` 1, ``origin`` 0).
        mode: which statistic becomes ``unit``: ``"points"``, ``"bounds"``, ``"cameras"``,
            ``"auto"`` (the first the capture supports) or ``"none"`` (keep the units).
        unit: the value the statistic takes after normalisation (> 0).
    """
    if capture.normalization != "none" or capture.scale != 1.0:
        raise ValueError(f"{capture.source}: the capture is already normalised ({capture.normalization}); "
                         "normalise the capture as read")
    if not unit > 0:
        raise ValueError(f"unit must be > 0, got {unit}")
    if mode not in ("auto", "points", "bounds", "cameras", "none"):
        raise ValueError(f"normalization must be auto, points, bounds, cameras or none, got {mode!r}")
    if mode == "none":
        return capture
    stats = {"points": _points_statistic, "bounds": _bounds_statistic, "cameras": _cameras_statistic}
    order = ["points", "bounds", "cameras"] if mode == "auto" else [mode]
    for name in order:
        value = stats[name](capture)
        if value is not None:
            break
    else:
        raise capture_error(capture.source, mode, "the capture has nothing to measure that statistic on "
                            "(points: sparse points; bounds: per-image depth bounds; cameras: 2+ distinct centres)",
                            "choose normalization 'auto' or 'none'")
    origin = capture.camera_centers.mean(0)
    scale = unit / value
    c2w = capture.c2w.clone()
    c2w[:, :3, 3] = (c2w[:, :3, 3] - origin) * scale
    return replace(
        capture, c2w=c2w, scale=float(scale), origin=origin, normalization=f"{name}: {value:.6g} -> {unit:g}",
        points=None if capture.points is None else (capture.points - origin) * scale,
        depth_bounds=None if capture.depth_bounds is None else capture.depth_bounds * scale)


def _points_statistic(capture: Capture) -> float | None:
    depths = capture.point_depths()
    return _median(depths) if len(depths) else None


def _bounds_statistic(capture: Capture) -> float | None:
    b = capture.depth_bounds
    if b is None or not (b > 0).all():
        return None
    return _median((b[:, 0] * b[:, 1]).sqrt())


def _cameras_statistic(capture: Capture) -> float | None:
    centers = capture.camera_centers
    spread = float((centers - centers.mean(0)).norm(dim=-1).mean())
    return spread if spread > 1e-12 else None


def _median(values: Tensor) -> float:  # [M] -> the middle value (the mean of the two middle ones for even M)
    v = values.double().sort().values
    return float(v[(len(v) - 1) // 2: len(v) // 2 + 1].mean())
