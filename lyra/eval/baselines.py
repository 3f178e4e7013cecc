"""Baselines of the evaluation protocol, scored on the same frames as the student.

- ``nearest``: the teacher frame of the nearest source camera (what any 3D method must beat);
- ``codec``: the teacher's own decoding of the held-out frames vs ground truth (the ceiling:
  the student only ever sees decoded frames);
- ``input_warp``: the input image (first source frame) lifted to points at the depth the student
  reads and rendered at the query cameras, the nearest source frame where no point lands: what a
  student that reads the input depth must beat (GEN3C's 3D cache, gap-filled by copying);
  ``input_warp_exact``: the same with the clip's exact depth (what better depth would give);
- ``per_scene``: Gaussians fitted to one scene's source views with Adam (the slow upper bound
  of what a feed-forward decoder amortises). With ``pixel_stride`` / ``frame_stride`` equal to
  a decoder's layout it is also that layout's ceiling (``benchmarks/layout_ceiling.py``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, fields, replace

import torch
import torch.nn.functional as F
from torch import Tensor

from lyra.data.clip import Clip
from lyra.data.generators.point_cache import lift_to_points, render_points
from lyra.render.cameras import (
    c2w_to_viewmat,
    pixel_rays,
    ray_distance,
    resize_intrinsics,
    world_to_pixels,
)
from lyra.render.gaussians import Gaussians
from lyra.render.renderer import GaussianRenderer

BASELINES = ("nearest", "codec", "input_warp", "input_warp_exact", "per_scene")


def nearest_source_frames(
    src_c2w: Tensor,  # [S, 4, 4] candidate cameras
    query_c2w: Tensor,  # [Q, 4, 4]
    angle_weight: float = 1.0,
) -> Tensor:  # [Q] index into S
    """Nearest camera by centre distance plus ``angle_weight`` x viewing-direction angle (radians
    times the spread of the centres, so both terms are in scene units)."""
    centres_s, centres_q = src_c2w[:, :3, 3], query_c2w[:, :3, 3]
    dist = torch.cdist(centres_q, centres_s)  # [Q, S]
    cos = (query_c2w[:, None, :3, 2] * src_c2w[None, :, :3, 2]).sum(-1).clamp(-1, 1)
    spread = (centres_s - centres_s.mean(0)).norm(dim=-1).max().clamp_min(1e-6)
    return (dist + angle_weight * spread * torch.arccos(cos)).argmin(dim=1)


def source_parallax(
    src_c2w: Tensor,  # [S, 4, 4] source cameras
    src_K: Tensor,  # [S, 3, 3]
    query_c2w: Tensor,  # [Q, 4, 4]
    query_K: Tensor,  # [Q, 3, 3]
    query_depth: Tensor,  # [Q, H, W] z-depth of the query views, 0 = unknown
    grid: int = 16,
) -> Tensor:  # [Q] pixels
    """How far each query view is from the closest source view, in pixels of scene motion: the
    centres of a ``grid x grid`` block lattice of the query image are lifted to their depth
    (unknown depth: the median known depth of all the query views), projected into every source
    camera, and the mean distance they move is minimised over the source cameras.

    Copying the closest source frame (the ``nearest`` baseline) misplaces the view's content by
    about this much, so the report uses it to tell near-duplicates of source views from novel ones."""
    Q, H, W = query_depth.shape
    known = query_depth > 0
    if not known.any():
        raise ValueError("source_parallax needs some known depth in the query views")
    origins, dirs = pixel_rays(query_c2w, resize_intrinsics(query_K, (H, W), (grid, grid)), grid, grid)
    centre = (torch.arange(grid, device=query_depth.device) + 0.5) / grid  # block centres, as fractions
    z = query_depth[:, (centre * H).long()][:, :, (centre * W).long()]  # [Q, grid, grid]
    z = torch.where(z > 0, z, query_depth[known].median())
    points = (origins + dirs * ray_distance(z, dirs, query_c2w)[..., None]).reshape(Q, 1, -1, 3)  # [Q, 1, P, 3]
    here, _ = world_to_pixels(points[:, 0], c2w_to_viewmat(query_c2w), query_K)  # [Q, P, 2]
    there, depth = world_to_pixels(points, c2w_to_viewmat(src_c2w)[None], src_K[None])  # [Q, S, P, 2]
    moved = (there - here[:, None]).norm(dim=-1)
    moved = torch.where(depth > 0, moved, torch.full_like(moved, float("inf")))  # behind a source camera
    return moved.mean(-1).amin(-1)


def nearest_frame(
    src: Clip,  # the source views, all frames
    c2w: Tensor,  # [Q, 4, 4] query cameras
) -> Tensor:  # [Q, H, W, 3] the teacher RGB of the nearest source camera
    idx = nearest_source_frames(src.c2w.reshape(-1, 4, 4).to(c2w), c2w)
    return src.rgb.reshape(-1, *src.rgb.shape[2:]).to(c2w.device)[idx]


def input_image_warp(
    src: Clip,  # the source views, all frames; trajectory 0 is the input image (frame 0) or video, with depth
    c2w: Tensor,  # [Q, 4, 4] query cameras
    K: Tensor,  # [Q, 3, 3]
    time: Tensor | None = None,  # [Q] scene time of each query (dynamic scenes); None: the input image
    depth: Tensor | None = None,  # [T or 1, H, W] trajectory 0's depth to lift (default: the clip's)
    sky_factor: float = 10.0,
) -> tuple[Tensor, Tensor]:  # rgb [Q, H, W, 3], holes [Q, H, W] (where the lifted input shows nothing)
    """The input image's teacher RGB lifted to one point per pixel at its depth (unknown depth, the
    sky: ``sky_factor`` x the farthest known depth) and rendered at the query cameras; pixels no point
    covers (the holes) come from the nearest source frame. With ``time``, each query lifts the input
    video's frame (trajectory 0) nearest to its time, as the dynamic decoder reads it. ``depth`` is
    the depth a student reads (an estimator's, or the clip's with ``input_depth_noise``): scored
    with it, the baseline reads exactly what the student reads."""
    if src.depth is None and depth is None:
        raise ValueError("the input_warp baseline lifts the input image with its depth; the clip has none "
                         "(use a teacher that writes depth, or drop input_warp from evaluation.baselines)")
    lifted = src.depth[0] if depth is None else depth.to(src.rgb.device)
    frames = torch.zeros(c2w.shape[0], dtype=torch.long)
    if time is not None:
        frames = (src.time[0, None, :].to(time) - time[:, None]).abs().argmin(-1).cpu()
    if int(frames.max()) >= lifted.shape[0]:
        raise ValueError(f"input_warp: a query reads input frame {int(frames.max())}, the depth given has "
                         f"{lifted.shape[0]} frames; pass every frame of trajectory 0 for a dynamic scene")
    H, W = src.image_size
    out = torch.empty(c2w.shape[0], H, W, 3, dtype=src.rgb.dtype, device=c2w.device)
    holes = torch.empty(c2w.shape[0], H, W, dtype=torch.bool, device=c2w.device)
    for f in frames.unique().tolist():
        d = lifted[f]
        known = d > 0
        if not known.any():
            raise ValueError(f"input frame {f} has no known depth at all; input_warp cannot lift it")
        d = torch.where(known, d, sky_factor * d[known].max())
        cloud = lift_to_points(src.rgb[0, f], d, src.c2w[0, f], src.K[0, f])
        q = (frames == f).nonzero()[:, 0].to(c2w.device)
        cache = render_points(cloud, c2w[q], K[q], H, W)
        out[q] = torch.where(cache.holes[..., None], nearest_frame(src, c2w[q]), cache.rgb).to(out.dtype)
        holes[q] = cache.holes.to(holes.device)
    return out, holes


# ---- per-scene optimisation ---------------------------------------------------------------------

@dataclass
class SceneFitConfig:
    """Per-scene optimisation: Gaussians on source pixel rays, fitted to the source views.

    Args:
        steps: Adam steps.
        views_per_step: source frames rendered per step.
        frame_stride: initialise from every k-th source frame (1: every frame, like the decoders).
        pixel_stride: one Gaussian per s x s pixel block, on the ray through the block centre
            (s = 8 is a decoder with one Gaussian per latent pixel of an 8x codec).
        unknown_depth: initial depth of pixels whose clip depth is 0 (sky, holes); ``None``
            uses twice the farthest known depth of the scene.
        init_scale: initial scale (each axis) as a fraction of the Gaussian's pixel-block width at
            its depth.
        init_opacity: initial opacity of every Gaussian, in (0, 1).
        lr_means, lr_scales, lr_quats, lr_opacities, lr_colors: Adam learning rates of the raw
            parameters (means, log-scales, quaternions, opacity logits, colour logits).
        seed: which source frames each step renders.
    """

    steps: int = 150
    views_per_step: int = 2
    frame_stride: int = 8
    pixel_stride: int = 4
    unknown_depth: float | None = None
    init_scale: float = 0.5
    init_opacity: float = 0.7310585786300049  # sigmoid(1)
    lr_means: float = 1e-3
    lr_scales: float = 1e-2
    lr_quats: float = 1e-2
    lr_opacities: float = 5e-2
    lr_colors: float = 2e-2
    seed: int = 0


def init_on_rays(src: Clip, cfg: SceneFitConfig) -> dict[str, Tensor]:
    """Raw (unconstrained) parameters of one Gaussian per ``pixel_stride`` block of every
    ``frame_stride``-th source frame, at the clip's metric depth, coloured by the block's mean
    teacher RGB and sized to its footprint."""
    if src.depth is None or not src.depth_is_metric:
        raise ValueError("per-scene optimisation initialises from metric depth; the clip has none "
                         "(use a procedural teacher, whose depth is exact)")
    s = cfg.pixel_stride
    H, W = src.image_size
    if not (cfg.init_scale > 0 and 0 < cfg.init_opacity < 1):
        raise ValueError(f"init_scale must be > 0 and init_opacity in (0, 1), got {cfg.init_scale}, {cfg.init_opacity}")
    if s < 1 or H % s or W % s:
        raise ValueError(f"pixel_stride {s} must divide the image size {H}x{W}")
    f = torch.arange(0, src.num_frames, cfg.frame_stride)
    c2w, K = src.c2w[:, f], src.K[:, f]  # [V, F, 4, 4], [V, F, 3, 3]
    origins, dirs = pixel_rays(c2w, resize_intrinsics(K, (H, W), (H // s, W // s)), H // s, W // s)
    z = src.depth[:, f][:, :, s // 2::s, s // 2::s]  # camera z-depth at the block centre
    known = z > 0
    if not known.any():
        raise ValueError("the clip has no known depth at all; per-scene optimisation needs some")
    far = cfg.unknown_depth if cfg.unknown_depth is not None else 2.0 * float(z[known].max())
    z = torch.where(known, z, torch.full_like(z, far))
    means = origins + dirs * ray_distance(z, dirs, c2w)[..., None]
    footprint = z / K[:, :, None, None, 0, 0] * s * cfg.init_scale
    rgb = src.rgb[:, f].reshape(-1, H, W, 3).permute(0, 3, 1, 2)
    rgb = F.avg_pool2d(rgb, s).permute(0, 2, 3, 1).clamp(0.02, 0.98)
    n = means[..., 0].numel()
    quats = torch.zeros(n, 4)
    quats[:, 0] = 1
    params = {"means": means.reshape(n, 3), "log_scales": footprint.reshape(n, 1).log().expand(n, 3).clone(),
              "quats": quats, "opacity_logits": torch.full((n,), cfg.init_opacity).logit(),
              "color_logits": torch.logit(rgb.reshape(n, 3))}
    for name, p in params.items():
        bad = int((~torch.isfinite(p)).sum())
        if bad:
            raise ValueError(f"per-scene initialisation produced {bad} non-finite values in {name}; "
                             "check the clip's depth and intrinsics")
    return params


def _to_gaussians(p: dict[str, Tensor]) -> Gaussians:  # batch [1]
    return Gaussians(p["means"][None], p["quats"][None], p["log_scales"].exp()[None],
                     torch.sigmoid(p["opacity_logits"])[None], torch.sigmoid(p["color_logits"])[None],
                     check_values=False)


def fit_scene(src: Clip, renderer: GaussianRenderer, cfg: SceneFitConfig) -> Gaussians:
    """Fit Gaussians to the source views' teacher RGB (L1) with Adam; returns them detached, batch [1]."""
    params = {k: v.clone().requires_grad_(True) for k, v in init_on_rays(src, cfg).items()}
    lrs = {"means": cfg.lr_means, "log_scales": cfg.lr_scales, "quats": cfg.lr_quats,
           "opacity_logits": cfg.lr_opacities, "color_logits": cfg.lr_colors}
    opt = torch.optim.Adam([{"params": [params[k]], "lr": lr} for k, lr in lrs.items()], eps=1e-15)
    g = torch.Generator().manual_seed(cfg.seed)
    V, T = src.num_views, src.num_frames
    H, W = src.image_size
    for _ in range(cfg.steps):
        pick = torch.randperm(V * T, generator=g)[: cfg.views_per_step]
        v, t = pick // T, pick % T
        rgb = renderer(_to_gaussians(params), src.c2w[v, t][None], src.K[v, t][None], H, W).rgb
        loss = F.l1_loss(rgb[0], src.rgb[v, t])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return _to_gaussians({k: v.detach() for k, v in params.items()})


def timed_fit(src: Clip, renderer: GaussianRenderer, cfg: SceneFitConfig) -> tuple[Gaussians, float]:
    """``fit_scene`` from inside an evaluation: ``lightning test`` runs under ``torch.inference_mode``,
    where grad mode alone records nothing and the clip's tensors cannot be saved for backward, so
    the fit leaves inference mode and works on copies of them."""
    t0 = time.perf_counter()
    with torch.inference_mode(False), torch.enable_grad():
        src = replace(src, **{f.name: getattr(src, f.name).clone() for f in fields(src)
                              if isinstance(getattr(src, f.name), Tensor)})
        g = fit_scene(src, renderer, cfg)
    return g, time.perf_counter() - t0
