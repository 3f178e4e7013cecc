"""Shared pieces of the student benchmarks: machine line, decoder settings, clip splitting, baselines.

Imported by ``benchmarks/quality.py`` and ``benchmarks/decoder_scaling.py`` (run from the repo root,
``python benchmarks/<name>.py``; the script's folder is on ``sys.path``).
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from lyra.data.clip import Clip
from lyra.losses.rendering import RenderingLoss
from lyra.models.decoders import StaticGaussianDecoder
from lyra.render.cameras import pixel_rays
from lyra.render.gaussians import Gaussians


def machine_line(threads: int) -> str:
    load = os.getloadavg()
    return (f"# torch {torch.__version__}, {threads} threads of {os.cpu_count()} cores, "
            f"{platform.machine()}, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}, "
            f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


def peak_rss_gb() -> float:
    """This process's peak resident memory so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def current_rss_gb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1024**3


# ---- decoder settings ----------------------------------------------------------------------------

def add_decoder_args(parser: argparse.ArgumentParser, width: int, layers: int, pattern: str, d_state: int,
                     headdim: int, far: float) -> None:
    g = parser.add_argument_group("decoder (StaticGaussianDecoder)")
    g.add_argument("--width", type=int, default=width)
    g.add_argument("--layers", type=int, default=layers)
    g.add_argument("--pattern", default=pattern, help="M = bidirectional Mamba-2, A = attention")
    g.add_argument("--d-state", type=int, default=d_state)
    g.add_argument("--headdim", type=int, default=headdim, help="Mamba-2 and attention head dim")
    g.add_argument("--far", type=float, default=far, help="largest distance a Gaussian can sit along its ray")
    g.add_argument("--max-scale", type=float, default=0.3)
    g.add_argument("--no-checkpointing", action="store_true", help="disable gradient checkpointing")


def build_decoder(args: argparse.Namespace, latent_channels: int) -> StaticGaussianDecoder:
    if args.width % args.headdim:
        raise ValueError(f"--width {args.width} must be a multiple of --headdim {args.headdim}; "
                         "pick e.g. --headdim 32 for widths 96, 160, 224")
    return StaticGaussianDecoder(
        latent_channels=latent_channels, width=args.width, num_layers=args.layers, pattern=args.pattern,
        d_state=args.d_state, headdim=args.headdim, attn_headdim=args.headdim,
        gradient_checkpointing=not args.no_checkpointing, far=args.far, max_scale=args.max_scale)


def num_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ---- clips ---------------------------------------------------------------------------------------

def split_heldout(clip: Clip, heldout: int) -> tuple[Clip, Clip]:
    """(source clip: every view but ``heldout``, all frames; the held-out view alone)."""
    if not 0 <= heldout < clip.num_views:
        raise ValueError(f"held-out view {heldout} does not exist in a {clip.num_views}-view clip")
    keep = [v for v in range(clip.num_views) if v != heldout]
    return clip.select(views=keep), clip.select(views=[heldout])


def eval_frames(num_frames: int, stride: int) -> list[int]:
    """Every ``stride``-th frame, skipping frame 0: all Lyra trajectories start at the same view, so
    frame 0 of the held-out trajectory is also a source frame and says nothing about novel views."""
    frames = list(range(stride, num_frames, stride))
    if not frames:
        raise ValueError(f"no evaluation frames: {num_frames} frames with stride {stride}; lower --eval-stride")
    return frames


def nearest_source_frames(
    src_c2w: Tensor,  # [S, 4, 4] candidate cameras
    query_c2w: Tensor,  # [Q, 4, 4]
    angle_weight: float = 1.0,
) -> Tensor:  # [Q] index into S
    """Nearest camera by centre distance plus ``angle_weight`` x viewing-direction angle (radians x
    the spread of the centres, so both terms are in scene units)."""
    centres_s, centres_q = src_c2w[:, :3, 3], query_c2w[:, :3, 3]
    dist = torch.cdist(centres_q, centres_s)  # [Q, S]
    cos = (query_c2w[:, None, :3, 2] * src_c2w[None, :, :3, 2]).sum(-1).clamp(-1, 1)
    spread = (centres_s - centres_s.mean(0)).norm(dim=-1).max().clamp_min(1e-6)
    return (dist + angle_weight * spread * torch.arccos(cos)).argmin(dim=1)


# ---- per-scene optimisation baseline --------------------------------------------------------------

@dataclass
class SceneOptConfig:
    steps: int = 150
    views_per_step: int = 2
    init_frame_stride: int = 8  # unproject every 8th source frame ...
    init_pixel_stride: int = 4  # ... on a 4-px grid
    lr_means: float = 1e-3
    lr_scales: float = 1e-2
    lr_quats: float = 1e-2
    lr_opacities: float = 5e-2
    lr_colors: float = 2e-2
    seed: int = 0


def init_from_depth(src: Clip, frame_stride: int, pixel_stride: int) -> dict[str, Tensor]:
    """Raw (unconstrained) Gaussian parameters from the source views' metric depth: one Gaussian per
    grid pixel, coloured by the teacher RGB, sized to the grid's footprint at its depth."""
    if src.depth is None or not src.depth_is_metric:
        raise ValueError("per-scene optimisation initialises from metric depth; the clip has none "
                         "(use a procedural teacher, whose depth is exact)")
    f = torch.arange(0, src.num_frames, frame_stride)
    c2w, K = src.c2w[:, f], src.K[:, f]  # [V, F, 4, 4], [V, F, 3, 3]
    H, W = src.image_size
    origins, dirs = pixel_rays(c2w, K, H, W)  # [V, F, H, W, 3]
    s = pixel_stride
    sel = (slice(None), slice(None), slice(s // 2, None, s), slice(s // 2, None, s))
    o, d = origins[sel], dirs[sel]
    z = src.depth[:, f][sel]  # camera z-depth
    cos = (d * c2w[:, :, None, None, :3, 2]).sum(-1)
    means = o + d * (z / cos)[..., None]
    footprint = z / K[:, :, None, None, 0, 0] * s * 0.5
    rgb = src.rgb[:, f][sel].clamp(0.02, 0.98)
    n = means[..., 0].numel()
    quats = torch.zeros(n, 4)
    quats[:, 0] = 1
    return {"means": means.reshape(n, 3), "log_scales": footprint.reshape(n, 1).log().expand(n, 3).clone(),
            "quats": quats, "opacity_logits": torch.full((n,), 1.0), "color_logits": torch.logit(rgb.reshape(n, 3))}


def to_gaussians(p: dict[str, Tensor]) -> Gaussians:  # batch [1]
    return Gaussians(p["means"][None], p["quats"][None], p["log_scales"].exp()[None],
                     torch.sigmoid(p["opacity_logits"])[None], torch.sigmoid(p["color_logits"])[None],
                     check_values=False)


def optimise_scene(src: Clip, renderer: RenderingLoss, cfg: SceneOptConfig) -> Gaussians:
    """Fit Gaussians to the source views' teacher RGB (L1) with Adam; returns them detached."""
    params = {k: v.clone().requires_grad_(True) for k, v in
              init_from_depth(src, cfg.init_frame_stride, cfg.init_pixel_stride).items()}
    lrs = {"means": cfg.lr_means, "log_scales": cfg.lr_scales, "quats": cfg.lr_quats,
           "opacity_logits": cfg.lr_opacities, "color_logits": cfg.lr_colors}
    opt = torch.optim.Adam([{"params": [params[k]], "lr": lr} for k, lr in lrs.items()], eps=1e-15)
    g = torch.Generator().manual_seed(cfg.seed)
    V, T = src.num_views, src.num_frames
    H, W = src.image_size
    for _ in range(cfg.steps):
        pick = torch.randperm(V * T, generator=g)[: cfg.views_per_step]
        v, t = pick // T, pick % T
        rgb, _, _ = renderer.render(to_gaussians(params), src.c2w[v, t][None], src.K[v, t][None], H, W)
        loss = F.l1_loss(rgb[0], src.rgb[v, t])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return to_gaussians({k: v.detach() for k, v in params.items()})
