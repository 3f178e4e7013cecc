"""ProceduralWorld: the weight-free default teacher's scene source, with exact RGB and depth.

``render`` ray-casts the scene analytically (see raytrace.py). Conventions of its outputs:

- ``rgb [..., H, W, 3]`` float32 in [0, 1].
- ``depth [..., H, W]`` metric camera z-depth: the hit point's coordinate along the camera's
  forward (z) axis, i.e. ``t * dot(d, z_cam)`` for a hit at distance ``t`` along unit ray ``d``.
  This is what gsplat's expected-depth ("ED") mode renders, and ``o + depth / dot(d, z_cam) * d``
  back-projects a pixel exactly. Rays that hit nothing (sky) get ``SKY_DEPTH`` = 100.0 world
  units, larger than any floor hit seen from sampled cameras (the floor is a disc of radius <= 40).
- ``time``: scene time in [0, 1]; static worlds ignore it (their clips carry zeros).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

from lyra.data.procedural.raytrace import cast_rays
from lyra.data.procedural.scene import GROUND_Y, ProceduralScene, sample_scene
from lyra.render.cameras import (
    crop_intrinsics,
    intrinsics_from_fov,
    look_at,
    validate_intrinsics,
)
from lyra.render.trajectories import LYRA_TRAJECTORIES, make_trajectory

PER_FRAME_KEYS = ("rgb", "depth", "c2w", "K", "time")


class ProceduralWorld:
    """A seeded toy scene (floor, sky, 4-16 textured spheres / boxes / cylinders), static or moving.

    The same ``seed`` always gives the bitwise same scene and, with the default generator, clips.
    """

    def __init__(
        self,
        seed: int,
        dynamic: bool = False,
        num_objects: tuple[int, int] = (4, 16),
        shadows: bool = True,
        rays_per_chunk: int = 1 << 17,
        scene: ProceduralScene | None = None,
    ) -> None:
        lo, hi = num_objects
        if not 1 <= lo <= hi <= 64:
            raise ValueError(f"num_objects must be (lo, hi) with 1 <= lo <= hi <= 64, got {num_objects}")
        if rays_per_chunk < 1:
            raise ValueError(f"rays_per_chunk must be >= 1, got {rays_per_chunk}")
        self.seed, self.dynamic, self.shadows, self.rays_per_chunk = int(seed), dynamic, shadows, rays_per_chunk
        g = torch.Generator().manual_seed(self.seed)
        self.scene = scene if scene is not None else sample_scene(g, dynamic, num_objects)
        s = self.scene
        # Look at the middle of the objects' height range, above the layout's centre.
        mid_height = float(s.half_extent[:, 1].mean()) if s.num_objects else 0.5
        self.center = torch.tensor([0.0, GROUND_Y - mid_height, 0.0])
        reach = (s.position - self.center).norm(dim=-1) + s.bounding_radius() + s.motion_amp.norm(dim=-1)
        # Radius of a sphere around `center` holding every object at every time.
        self.scene_scale = float(reach.max()) if s.num_objects else 1.0

    @classmethod
    def from_scene(cls, scene: ProceduralScene, dynamic: bool = False, **kwargs) -> "ProceduralWorld":
        """Wrap a hand-built scene (e.g. ``ProceduralScene.simple``)."""
        return cls(seed=0, dynamic=dynamic, scene=scene, **kwargs)

    @property
    def caption(self) -> str:
        return self.scene.caption

    def render(
        self,
        c2w: Tensor,  # [..., 4, 4] camera-to-world, OpenCV axes
        K: Tensor,  # [..., 3, 3] pixel intrinsics for (height, width)
        height: int,
        width: int,
        time: Tensor | None = None,  # [...] scene time in [0, 1]; None means 0
    ) -> tuple[Tensor, Tensor]:  # rgb [..., H, W, 3], camera-z depth [..., H, W]
        time = None if time is None else torch.as_tensor(time)
        lead = self._validate(c2w, K, height, width, time)
        c2w = c2w.reshape(-1, 4, 4).to(torch.float32)
        K = K.reshape(-1, 3, 3).to(torch.float32)
        n_cam, n_pix = c2w.shape[0], height * width
        t = torch.zeros(n_cam) if time is None or not self.dynamic else time.reshape(-1).to(torch.float32)
        centres, yaw = self.scene.poses_at(t)
        rgb, depth = torch.empty(n_cam, n_pix, 3), torch.empty(n_cam, n_pix)
        # Bound memory: each step traces about `rays_per_chunk` rays (whole images of a few
        # cameras, or bands of rows of one camera) against all objects.
        cams = max(1, self.rays_per_chunk // n_pix)
        rows = height if cams > 1 else max(1, self.rays_per_chunk // width)
        for c0 in range(0, n_cam, cams):
            cs = slice(c0, c0 + cams)
            for r0 in range(0, height, rows):
                h = min(rows, height - r0)
                ps = slice(r0 * width, (r0 + h) * width)
                K_band = crop_intrinsics(K[cs], top=r0, left=0) if h < height else K[cs]
                rgb[cs, ps], depth[cs, ps] = cast_rays(
                    self.scene, c2w[cs], K_band, h, width, centres[cs], yaw[cs], self.shadows)
        return rgb.reshape(lead + (height, width, 3)), depth.reshape(lead + (height, width))

    def _validate(self, c2w: Tensor, K: Tensor, height: int, width: int, time: Tensor | None) -> tuple[int, ...]:
        if not (isinstance(height, int) and isinstance(width, int)) or height < 1 or width < 1:
            raise ValueError(f"height and width must be positive ints, got {height!r} x {width!r}")
        if c2w.ndim < 2 or c2w.shape[-2:] != (4, 4):
            raise ValueError(f"c2w must have shape [..., 4, 4], got {tuple(c2w.shape)}")
        if K.shape[:-2] != c2w.shape[:-2]:
            raise ValueError(f"K {tuple(K.shape)} and c2w {tuple(c2w.shape)} must share leading dims; "
                             "expand K to one matrix per camera")
        validate_intrinsics(K)
        if not torch.isfinite(c2w).all():
            raise ValueError("c2w contains NaN or Inf; pass finite camera-to-world poses")
        if time is not None:
            if time.shape != c2w.shape[:-2]:
                raise ValueError(f"time {tuple(time.shape)} must match the camera dims {tuple(c2w.shape[:-2])}")
            if not (torch.isfinite(time).all() and (time >= 0).all() and (time <= 1).all()):
                raise ValueError("time must lie in [0, 1] (normalised scene time); rescale it")
        return tuple(c2w.shape[:-2])

    def start_view(
        self,
        K: Tensor,  # [3, 3] intrinsics of the clip
        height: int,
        width: int,
        generator: torch.Generator | None = None,
    ) -> Tensor:  # [4, 4] camera-to-world looking at `center`
        """A random azimuth / elevation, at the smallest distance whose frustum holds every object
        (at any time), pushed back a little; never so close that a trajectory enters an object."""
        az = 2 * math.pi * float(torch.rand((), generator=generator))
        el = math.radians(12.0 + 23.0 * float(torch.rand((), generator=generator)))
        out = torch.tensor([math.cos(el) * math.sin(az), -math.sin(el), math.cos(el) * math.cos(az)])
        rot = look_at(self.center + out, self.center)[:3, :3]
        s = self.scene
        rel = (s.position - self.center) @ rot  # object centres in camera axes, camera at `center`
        radius = s.bounding_radius() + s.motion_amp.norm(dim=-1)
        fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
        half_x = torch.atan(torch.minimum(cx, width - cx) / fx)
        half_y = torch.atan(torch.minimum(cy, height - cy) / fy)
        # A sphere (x, z0 + dist) of radius r is inside the side planes iff
        # (z0 + dist) sin(a) - |x| cos(a) >= r, which is linear in dist.
        need_x = (radius + rel[:, 0].abs() * half_x.cos()) / half_x.sin() - rel[:, 2]
        need_y = (radius + rel[:, 1].abs() * half_y.cos()) / half_y.sin() - rel[:, 2]
        framing = float(torch.maximum(need_x, need_y).max()) if s.num_objects else 2.0
        framing *= 1.0 + 0.1 * float(torch.rand((), generator=generator))
        return look_at(self.center + self._safe_distance(framing, out) * out, self.center)

    def _safe_distance(self, start: float, out: Tensor) -> float:  # out: [3] unit, centre -> eye
        """Smallest distance >= start from which no Lyra trajectory brings the camera into an object.

        Every trajectory keeps the eye within 0.3 scene_scale of the line through the centre and the
        start eye, between 0.6 scene_scale closer (spiral / zoom-in dolly) and 0.4 farther (zoom-out).
        """
        s = self.scene
        if not s.num_objects:
            return start
        scale = self.scene_scale
        w = s.position - self.center  # [N, 3]
        radius = s.bounding_radius() + s.motion_amp.norm(dim=-1) + 0.3 * scale + 0.05 * scale
        dist = start + scale * torch.arange(0, 41) * 0.05  # [D] candidates
        lam = torch.minimum(torch.maximum((w @ out)[None], dist[:, None] - 0.6 * scale), dist[:, None] + 0.4 * scale)
        gap = (w[None] - lam[..., None] * out).norm(dim=-1)  # [D, N] object centre to the eye's tube axis
        ok = (gap >= radius).all(dim=-1).nonzero()
        # Beyond the grid, 1.9 scene_scale always works: the eye never gets nearer than 1.3 scale.
        return float(dist[ok[0, 0]]) if ok.numel() else max(start, 1.9 * scale)

    def sample_clip(
        self,
        num_frames: int,
        height: int,
        width: int,
        trajectories: Sequence[str] = LYRA_TRAJECTORIES,
        fov_deg: float = 60.0,
        generator: torch.Generator | None = None,
        reverse_time: bool = False,
    ) -> dict:
        """Render the scene along V trajectories of T frames, all starting from one random view.

        Returns rgb [V, T, H, W, 3], depth [V, T, H, W], c2w [V, T, 4, 4], K [V, T, 3, 3],
        time [V, T] and caption. ``time[v, i]`` is the scene time frame i shows: zeros for a static
        world; ``i / (T - 1)`` for a dynamic one (frame i of every trajectory shows input-video
        frame i while the camera moves). ``reverse_time=True`` is the time-reversed augmentation
        as the teacher would generate it from the reversed input video: frame i keeps pose i of
        the same trajectories but shows scene time ``1 - i / (T - 1)`` (time runs 1 -> 0), so late
        times are seen from the start view and early times from every trajectory. Every per-frame
        array describes its own frame; use ``reverse_frames`` to put such a clip back in
        forward time order (it flips frames, depth, poses, intrinsics and times together).
        A static world ignores ``reverse_time`` (its time is zero throughout). ``generator`` defaults to one seeded with the world seed (same clip on every call).
        """
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        if len(trajectories) == 0:
            raise ValueError("trajectories is empty; pass at least one of " + ", ".join(LYRA_TRAJECTORIES))
        unknown = [k for k in trajectories if k not in LYRA_TRAJECTORIES]
        if unknown:
            raise ValueError(f"unknown trajectories {unknown}; choose from {LYRA_TRAJECTORIES}")
        g = generator if generator is not None else torch.Generator().manual_seed(self.seed)
        K = intrinsics_from_fov(fov_deg, width, height)
        start = self.start_view(K, height, width, g)
        c2w = torch.stack([make_trajectory(k, start, self.center, num_frames, self.scene_scale, generator=g)
                           for k in trajectories])
        v = len(trajectories)
        Ks = K.expand(v, num_frames, 3, 3).clone()
        t = torch.zeros(num_frames)
        if self.dynamic and num_frames > 1:
            t = torch.linspace(0.0, 1.0, num_frames)
            t = t.flip(0) if reverse_time else t
        time = t.expand(v, num_frames).clone()
        rgb, depth = self.render(c2w, Ks, height, width, time)
        return dict(rgb=rgb, depth=depth, c2w=c2w, K=Ks, time=time, caption=self.caption)


def reverse_frames(clip: dict) -> dict:
    """Flip every per-frame array of an unbatched clip ([V, T, ...]) along T together (frames,
    depth, poses, intrinsics, times), so each frame keeps its own camera; the reference tooling
    flipped frames and intrinsics but forgot the poses."""
    out = dict(clip)
    for key in PER_FRAME_KEYS:
        if key in clip and clip[key] is not None:
            out[key] = clip[key].flip(1)
    return out
