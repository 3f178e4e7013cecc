"""What could a *perfect* student reach with a given Gaussian layout?

    python benchmarks/layout_ceiling.py                                  # the table in docs/experiments.md
    python benchmarks/layout_ceiling.py --strides 8 4 --frame-strides 1 --scenes 1 --steps 20
    python benchmarks/layout_ceiling.py --scenes 1 --heldout spiral --frame-strides 4 --strides 4 \
        --fit all opacities colors scales means            # which parameters the fit needs

A decoder emits one Gaussian per s x s pixel block (s = 8: one per latent pixel of an 8x codec;
s = 4: 2x2 per latent pixel, ...) of every frame (or of every k-th frame) of its source
trajectories. For each layout this fits per-scene Gaussians that sit exactly there: on the
decoder's own rays, initialised at the true depth (sky at a far depth), fitted to the source
views' teacher RGB with Adam (``lyra.eval.baselines.fit_scene``), then scored on the held-out
trajectory against ground truth with the protocol of ``lyra.eval`` (frames 4, 8, 12, 16 of 17).
If a layout cannot beat the nearest source frame even fitted per scene, no decoder trained in
that layout can. ``--fit`` fits only some parameter groups (the others stay at their
initialisation), one row each: which of them a decoder must get right. Prints a table and one
JSON line.
"""

from __future__ import annotations

# ruff: noqa: E402  (the environment must be set before torch loads OpenMP)
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import itertools
import json
import time

import torch
from _common import machine_line, peak_rss_gb

from lyra.data.codecs import DCTCodec
from lyra.data.datamodule import SPLIT_OFFSETS
from lyra.data.generators.procedural import ProceduralGenerator
from lyra.data.splits import heldout_split
from lyra.eval.baselines import SceneFitConfig, fit_scene, nearest_frame
from lyra.metrics.image import psnr, ssim
from lyra.models.teacher import TeacherModule
from lyra.render.renderer import GaussianRenderer
from lyra.utils.atomic import atomic_write_text

# Parameter groups of --fit and the SceneFitConfig learning rates each one owns.
FIT_GROUPS = {"means": ("lr_means",), "scales": ("lr_scales", "lr_quats"), "opacities": ("lr_opacities",),
              "colors": ("lr_colors",)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--strides", type=int, nargs="+", default=[8, 4, 2], help="pixels per Gaussian (s)")
    ap.add_argument("--frame-strides", type=int, nargs="+", default=[1, 4],
                    help="Gaussians from every k-th source frame (1: every frame, like the decoders)")
    ap.add_argument("--max-gaussians", type=int, default=400_000, help="skip layouts with more Gaussians")
    ap.add_argument("--heldout", nargs="+", default=["spiral", "up"])
    ap.add_argument("--scenes", type=int, default=2, help="test scenes (disjoint seeds)")
    ap.add_argument("--steps", type=int, default=150,
                    help="Adam steps per fit (0: the initialisation alone: source pixels unprojected at their true depth)")
    ap.add_argument("--init-scale", type=float, nargs="+", default=[0.5],
                    help="initial Gaussian scale(s), fraction of the pixel block (one row each)")
    ap.add_argument("--init-opacity", type=float, default=0.7310585786300049, help="initial opacity")
    ap.add_argument("--fit", nargs="+", default=["all"], choices=["all", *FIT_GROUPS],
                    help="parameter groups to fit, one row each (scales: scales and rotations)")
    ap.add_argument("--views-per-step", type=int, default=2)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--frames", type=int, default=17)
    ap.add_argument("--target-frames", type=int, default=5, help="evenly spaced target frames (protocol)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None, help="also write the JSON result here")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    print(machine_line(args.threads), flush=True)
    teacher = TeacherModule(ProceduralGenerator(seed=0), DCTCodec(), args.frames, args.size, args.size)
    renderer = GaussianRenderer(backend="auto", render_mode="RGB")  # the compiled compositor on CPU
    rows: list[dict] = []
    for k in range(args.scenes):
        clip = teacher.make_clip(SPLIT_OFFSETS["test"] + k)
        for held in args.heldout:
            src, tgt = heldout_split(clip, held, args.target_frames)
            v = tgt.meta["heldout"].index(True)
            truth = tgt.meta["truth_frames"]
            c2w, K, gt = tgt.c2w[v, truth], tgt.K[v, truth], tgt.gt_rgb[v, truth]
            src_frames = tgt.meta["frames"]
            near = nearest_frame(src, c2w)
            rows.append({"scene": k, "heldout": held, "layout": "nearest", "psnr": float(psnr(near, gt).mean()),
                         "ssim": float(ssim(near, gt).mean())})
            rows.append({"scene": k, "heldout": held, "layout": "codec",
                         "psnr": float(psnr(tgt.rgb[v, truth], gt).mean()),
                         "ssim": float(ssim(tgt.rgb[v, truth], gt).mean())})
            print(f"scene {k} held-out {held}: nearest {rows[-2]['psnr']:.2f} dB, codec {rows[-1]['psnr']:.2f} dB",
                  flush=True)
            for fs, s, scale, fit in itertools.product(args.frame_strides, args.strides, args.init_scale, args.fit):
                n = src.num_views * len(range(0, src.num_frames, fs)) * (args.size // s) ** 2
                if n > args.max_gaussians:
                    print(f"  skip frame stride {fs}, s={s}: {n} Gaussians > --max-gaussians", flush=True)
                    continue
                frozen = {} if fit == "all" else {lr: 0.0 for g, lrs in FIT_GROUPS.items() if g != fit for lr in lrs}
                cfg = SceneFitConfig(steps=args.steps, views_per_step=args.views_per_step, frame_stride=fs,
                                     pixel_stride=s, init_scale=scale, init_opacity=args.init_opacity, **frozen)
                name = (f"fs{fs}_s{s}" + (f"_scale{scale:g}" if len(args.init_scale) > 1 else "")
                        + (f"_fit_{fit}" if args.fit != ["all"] else ""))
                t0 = time.perf_counter()
                g = fit_scene(src, renderer, cfg)
                seconds = time.perf_counter() - t0
                with torch.no_grad():
                    pred = renderer.render_path(g[0], c2w, K, args.size, args.size)
                    src_c2w = src.c2w[:, src_frames].reshape(-1, 4, 4)
                    src_K = src.K[:, src_frames].reshape(-1, 3, 3)
                    src_pred = renderer.render_path(g[0], src_c2w, src_K, args.size, args.size)
                src_rgb = src.rgb[:, src_frames].reshape(-1, args.size, args.size, 3)
                rows.append({"scene": k, "heldout": held, "layout": name, "frame_stride": fs, "init_scale": scale,
                             "fit": fit, "pixel_stride": s, "gaussians": n, "psnr": float(psnr(pred, gt).mean()),
                             "ssim": float(ssim(pred, gt).mean()),
                             "src_psnr": float(psnr(src_pred, src_rgb).mean()), "seconds": seconds})
                print(f"  frame stride {fs:2d}  s={s}  N={n:7d}  held-out {rows[-1]['psnr']:.2f} dB  "
                      f"source {rows[-1]['src_psnr']:.2f} dB  ({seconds:.0f} s)  load {os.getloadavg()[0]:.1f}",
                      flush=True)
    summary: dict[str, dict] = {}
    for r in rows:
        key = f"{r['heldout']}/{r['layout']}"
        acc = summary.setdefault(key, {"n": 0, **{m: 0.0 for m in ("psnr", "ssim", "src_psnr", "seconds")}})
        acc["n"] += 1
        for m in ("psnr", "ssim", "src_psnr", "seconds"):
            acc[m] += r.get(m, 0.0)
        if "gaussians" in r:
            acc["gaussians"] = r["gaussians"]
    for acc in summary.values():
        for m in ("psnr", "ssim", "src_psnr", "seconds"):
            acc[m] /= acc["n"]
    print(f"\n{'held-out/layout':28} {'N':>8} {'PSNR gt':>8} {'SSIM gt':>8} {'src PSNR':>9} {'s/fit':>6}")
    for key, acc in summary.items():
        print(f"{key:28} {acc.get('gaussians', 0):8d} {acc['psnr']:8.2f} {acc['ssim']:8.3f} "
              f"{acc['src_psnr']:9.2f} {acc['seconds']:6.0f}")
    out = {"benchmark": "layout_ceiling", "settings": vars(args), "rows": rows, "summary": summary,
           "peak_rss_gb": peak_rss_gb()}
    line = json.dumps(out)
    if args.out:
        atomic_write_text(args.out, line + "\n")
    print(line)
    return out


if __name__ == "__main__":
    main()
