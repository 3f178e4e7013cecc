"""Validation visuals for TensorBoard: render / target / depth grids and a short orbit."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from torch import Tensor

from lyra.data.clip import ClipBatch
from lyra.render.gaussians import Gaussians
from lyra.render.renderer import Renders
from lyra.render.trajectories import orbit
from lyra.viz.video import write_video


def _depth_to_rgb(depth: Tensor) -> Tensor:  # [..., H, W] -> [..., H, W, 3] grey, near = bright
    lo, hi = depth.flatten(-2).quantile(0.02, dim=-1), depth.flatten(-2).quantile(0.98, dim=-1)
    d = (depth - lo[..., None, None]) / (hi - lo).clamp_min(1e-6)[..., None, None]
    return (1 - d.clamp(0, 1))[..., None].expand(*depth.shape, 3)


@torch.no_grad()
def log_validation_visuals(
    module,  # a StudentModule (its renderer, logger and trainer)
    batch: ClipBatch,
    renders: Renders,  # [B, M, ...] renders of the batch's target views
    target: Tensor,  # [B, M, H, W, 3]
    g: Gaussians,
    n_orbit: int,
) -> None:
    logger = getattr(module, "logger", None)
    writer = getattr(logger, "experiment", None)
    if writer is None or not hasattr(writer, "add_image"):
        return
    step = module.global_step
    n = min(4, renders.rgb.shape[1])
    rows = [renders.rgb[0, :n].clamp(0, 1), target[0, :n]]
    if renders.depth is not None:
        rows.append(_depth_to_rgb(renders.depth[0, :n].float()))
    grid = torch.cat([torch.cat(list(r), dim=1) for r in rows], dim=0)  # [3H, nW, 3]
    writer.add_image("val/render_target_depth", grid.permute(2, 0, 1).cpu(), step)
    if n_orbit <= 0:
        return
    # A short orbit around the scene centre shows the 3D structure beyond the training views
    # (dynamic decoders: the scene frozen at the first target time).
    scene = g[0:1, 0] if module.decoder.is_dynamic else g[0:1]
    means = scene.means[0].detach()
    center = means.median(dim=0).values
    cams = batch.c2w[0].reshape(-1, 4, 4)
    radius = float((cams[:, :3, 3] - center).norm(dim=-1).mean())
    c2w = orbit(center.cpu(), radius, n_orbit).to(means)[None]
    K = batch.K[0, :1, 0].expand(n_orbit, 3, 3)[None]
    H, W = batch.rgb.shape[-3:-1]
    frames = module.renderer.render_path(scene[0], c2w[0], K[0], H, W).cpu()
    writer.add_image("val/orbit", torch.cat(list(frames), dim=1).permute(2, 0, 1), step)
    if importlib.util.find_spec("moviepy") is not None:  # TensorBoard's video encoder
        writer.add_video("val/orbit_video", frames.permute(0, 3, 1, 2)[None], step, fps=8)
    log_dir = getattr(module.trainer, "log_dir", None)
    if log_dir:  # TensorBoard videos need moviepy; an mp4 beside the logs needs nothing extra

        write_video(Path(log_dir) / "val_orbit" / f"step{step:07d}.mp4", frames, fps=8)
