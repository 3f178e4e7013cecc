"""How well can the lifted input frame render, as a standard 3DGS scene, where it covers a held-out view?

The student's input pixels start as the input frame lifted with its depth: one Gaussian per pixel.
``input_warp`` renders the same lifted pixels as point splats with almost no 2D dilation and divides
by the accumulated alpha; a scene for 3DGS viewers is rendered over a background with gsplat's
0.3 px^2 dilation. This script scores the lifted frame (exact depth, no learning) in the pixels the
warp covers, rendered each way, so the covered-region gap between student and warp can be split
into the renderer's share and the decoder's (docs/experiments.md, section 7).

    python benchmarks/lifted_input_render.py [--config configs/dynamic.yaml] [--test-scenes 2] [--fit-colours]

Prints a table and, last, one JSON line. ``--fit-colours`` adds rows whose colours are fitted (Adam)
to reproduce the input view exactly: does a per-view deconvolution carry over to other views?
"""

from __future__ import annotations

import argparse
import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from _common import machine_line, peak_rss_gb

from lyra.cli import LyraCLI
from lyra.data.generators.point_cache import lift_to_points
from lyra.eval.baselines import input_image_warp
from lyra.metrics.image import mse_to_psnr
from lyra.models.decoders.input_image import fit_colours_to_view
from lyra.render import GaussianRenderer
from lyra.render.gaussians import Gaussians

# name -> (splat sigma in input pixels, sub-pixel splats per side, opacity, eps2d, alpha-normalised)
VARIANTS: dict[str, tuple[float, int, float, float, bool]] = {
    "3DGS: the student's start (0.5 px, opacity 0.9)": (0.5, 1, 0.9, 0.3, False),
    "3DGS: 0.4 px, opacity 0.99": (0.4, 1, 0.99, 0.3, False),
    "3DGS: 0.3 px, opacity 0.99": (0.3, 1, 0.99, 0.3, False),
    "3DGS: 0.7 px, opacity 0.99": (0.7, 1, 0.99, 0.3, False),
    "3DGS: 2x2 splats of 0.25 px per pixel, opacity 0.9": (0.5, 2, 0.9, 0.3, False),
    "not 3DGS: 0.4 px, eps2d 0.3, alpha-normalised": (0.4, 1, 0.99, 0.3, True),
    "not 3DGS: 0.4 px, eps2d 0.01, alpha-normalised (the warp's renderer)": (0.4, 1, 0.99, 0.01, True),
}
FITTED = "3DGS: the student's start, colours fitted to the input view"
COLOUR_FIT = "3DGS: the student's start, 2 residual colour steps (the decoder's input_colour_fit: 2)"


def lifted_gaussians(
    image: torch.Tensor,  # [H, W, 3] the input frame
    depth: torch.Tensor,  # [H, W] its z-depth, 0 = unknown (sky)
    c2w: torch.Tensor,  # [4, 4]
    K: torch.Tensor,  # [3, 3]
    sigma_px: float,
    sub: int,
    opacity: float,
) -> Gaussians:  # [N] one splat per pixel (sub x sub per pixel with sub > 1)
    """The frame lifted as the warp lifts it (sky at 10x the farthest depth), as isotropic Gaussians."""
    depth = torch.where(depth > 0, depth, 10 * depth[depth > 0].max())
    if sub > 1:  # sub x sub splats per pixel, each of the pixel's colour and depth
        image = image.repeat_interleave(sub, 0).repeat_interleave(sub, 1)
        depth = depth.repeat_interleave(sub, 0).repeat_interleave(sub, 1)
        K = K.clone()
        K[:2] *= sub
    cloud = lift_to_points(image, depth, c2w, K, point_radius_px=sigma_px)
    n = cloud.points.shape[0]
    quats = torch.zeros(n, 4)
    quats[:, 0] = 1.0
    return Gaussians(cloud.points, quats, cloud.sigmas[:, None].expand(n, 3).contiguous(), torch.full((n,), opacity),
                     cloud.colors)


def render(g: Gaussians, c2w, K, H: int, W: int, eps2d: float, normalised: bool) -> torch.Tensor:  # [Q, H, W, 3]
    renderer = GaussianRenderer(background=(0.0, 0.0, 0.0) if normalised else (1.0, 1.0, 1.0), eps2d=eps2d)
    out = renderer(g[None], c2w[None], K[None], H, W)
    rgb = out.rgb[0]
    return rgb / out.alpha[0][..., None].clamp_min(1e-6) if normalised else rgb


def fit_colours(g: Gaussians, image, c2w, K, steps: int) -> Gaussians:
    """Colours (unbounded) fitted so that the splats render ``image`` at its own camera."""
    H, W = image.shape[:2]
    colours = g.colors.clone().requires_grad_(True)
    opt = torch.optim.Adam([colours], lr=0.05)
    renderer = GaussianRenderer(background=(1.0, 1.0, 1.0))
    for _ in range(steps):
        fitted = Gaussians(g.means, g.quats, g.scales, g.opacities, colours, check_values=False)
        loss = (renderer(fitted[None], c2w[None, None], K[None, None], H, W).rgb[0, 0] - image).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return Gaussians(g.means, g.quats, g.scales, g.opacities, colours.detach(), check_values=False)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="configs/dynamic.yaml")
    p.add_argument("--test-scenes", type=int, default=2)
    p.add_argument("--fit-colours", action="store_true")
    p.add_argument("--fit-steps", type=int, default=60)
    p.add_argument("--smoke", action="store_true", help="one 32 x 32 scene, seconds")
    args, extra = p.parse_known_args(argv)
    if args.smoke:
        args.test_scenes, args.fit_steps = 1, 3
        extra += ["--clip.height", "32", "--clip.width", "32"]
    torch.set_grad_enabled(True)
    cli = LyraCLI(run=False, args=["--config", args.config, "--data.init_args.num_test_clips", str(args.test_scenes),
                                   "--data.init_args.num_workers", "0", "--test_after_fit", "false", *extra])
    data = cli.datamodule
    data.setup("test")
    names = ["input_warp (point splats, exact depth)", *VARIANTS, COLOUR_FIT] + ([FITTED] if args.fit_colours else [])
    sums = {n: [0.0, 0] for n in names}
    per_frame: dict[str, list[float]] = {n: [] for n in names}  # the report's PSNR is a mean over frames
    for batch in data.test_dataloader():
        for b in range(batch.batch_size):
            src, against = batch.sources[b], batch.gt_rgb[b] if batch.gt_rgb is not None else batch.rgb[b]
            H, W = against.shape[-3:-1]
            lifted: dict[tuple, Gaussians] = {}
            for v in range(1, batch.rgb.shape[1]):  # every trajectory but the input's own
                c2w, K, time = batch.c2w[b, v], batch.K[b, v], batch.time[b, v]
                warp, holes = input_image_warp(src, c2w, K, time)
                frames = (src.time[0, None, :] - time[:, None]).abs().argmin(-1)
                covered = ~holes

                def score(name: str, pred: torch.Tensor) -> None:
                    err = (pred.clamp(0, 1) - against[v]).square().mean(-1)
                    sums[name][0] += float(err[covered].sum())
                    sums[name][1] += int(covered.sum())
                    per_frame[name] += [float(mse_to_psnr(e[c].mean())) for e, c in zip(err, covered) if c.any()]

                score(names[0], warp)
                for name in names[1:]:
                    sigma, sub, opacity, eps2d, normalised = VARIANTS.get(name, VARIANTS[names[1]])
                    preds = []
                    for q, f in enumerate(frames.tolist()):
                        key = (name, f)
                        if key not in lifted:
                            g = lifted_gaussians(src.rgb[0, f], src.depth[0, f], src.c2w[0, f], src.K[0, f],
                                                 sigma, sub, opacity)
                            if name == FITTED:
                                g = fit_colours(g, src.rgb[0, f], src.c2w[0, f], src.K[0, f], args.fit_steps)
                            if name == COLOUR_FIT:
                                colours = fit_colours_to_view(g[None], src.rgb[0, f][None], src.c2w[0, f][None],
                                                              src.K[0, f][None], 2)[0]
                                g = Gaussians(g.means, g.quats, g.scales, g.opacities, colours, check_values=False)
                            lifted[key] = g
                        preds.append(render(lifted[key], c2w[q:q + 1], K[q:q + 1], H, W, eps2d, normalised)[0])
                    score(name, torch.stack(preds))
    psnr = {n: round(float(mse_to_psnr(torch.tensor(s / max(c, 1)))), 2) for n, (s, c) in sums.items()}
    frame_mean = {n: round(sum(v) / max(len(v), 1), 2) for n, v in per_frame.items()}
    print(machine_line(torch.get_num_threads()))
    print(f"# {args.config}, {args.test_scenes} test scenes, exact depth, the pixels input_warp covers")
    print("| the lifted input frame, rendered as | covered PSNR vs truth, pooled | mean over frames |\n|---|---|---|")
    for n, v in psnr.items():
        print(f"| {n} | {v:.2f} | {frame_mean[n]:.2f} |")
    result = {"covered_psnr": psnr, "covered_psnr_frame_mean": frame_mean, "test_scenes": args.test_scenes,
              "peak_rss_gb": round(peak_rss_gb(), 2)}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
