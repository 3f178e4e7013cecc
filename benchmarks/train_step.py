"""Where one training step's time goes, for a student config (the same modules ``lightning fit`` builds).

    python benchmarks/train_step.py                                     # configs/static.yaml
    python benchmarks/train_step.py --config configs/dynamic.yaml --steps 6
    python benchmarks/train_step.py -- --model.init_args.loss.init_args.lpips_size 64

Per step, in order: data (the next batch from the data module's train loader), decoder forward,
render forward (``GaussianRenderer``), loss forward (LPIPS separately), the whole backward, the
optimiser step. The backward is split by re-running each part alone on detached inputs: render
backward (rasterizer) and LPIPS backward; the decoder's backward is the rest. Also prints what the
decoder emits (Gaussians, mean opacity, footprint in pixels), which sets the rasterizer's cost.
Medians over ``--steps`` steps after one warm-up step; one JSON line at the end.
"""

from __future__ import annotations

# ruff: noqa: E402  (the environment must be set before torch loads OpenMP)
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from _common import machine_line, peak_rss_gb

from lyra.cli import LyraCLI

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("data", "decoder_fwd", "render_fwd", "lpips_fwd", "other_loss_fwd", "backward", "render_bwd", "lpips_bwd",
         "decoder_bwd", "optimizer", "total")


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", action="append", default=None, help="default configs/static.yaml")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--smoke", action="store_true")
    argv = list(argv if argv is not None else os.sys.argv[1:])
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1:]
    args = ap.parse_args(argv)
    args.config = args.config or [str(ROOT / "configs" / "static.yaml")]
    if args.smoke:
        args.config.append(str(ROOT / "configs" / "stages" / "cpu_tiny.yaml"))
        args.steps = 1
    return args, extra


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def main(argv: list[str] | None = None) -> dict:
    args, extra = parse_args(argv)
    torch.set_num_threads(args.threads)
    print(machine_line(args.threads), flush=True)
    cli = LyraCLI(run=False, args=[*(a for c in args.config for a in ("--config", c)),
                                   "--data.init_args.num_workers", "0", *extra])
    model, dm = cli.model.train(), cli.datamodule
    model.trainer = cli.trainer  # configure_optimizers reads the trainer's max_steps
    opt = model.configure_optimizers()["optimizer"]
    loader = iter(dm.train_dataloader())
    loss = model.loss
    times: dict[str, list[float]] = {k: [] for k in PARTS}
    stats: list[dict] = []
    for step in range(args.steps + 1):
        t = {}
        t0 = time.perf_counter()
        batch = next(loader)
        t["data"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        g = model(batch)
        sync()
        t["decoder_fwd"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        r = model.render_targets(g, batch)
        sync()
        t["render_fwd"] = time.perf_counter() - t0
        target = batch.rgb.reshape(r.rgb.shape)
        B, V, F = batch.rgb.shape[:3]
        depth = batch.depth.reshape(B, V * F, *batch.depth.shape[-2:]) if batch.depth is not None else None
        t0 = time.perf_counter()
        lpips_only = loss.lpips(*loss._lpips_inputs(r.rgb, target)).mean() if loss.lpips is not None else None
        t["lpips_fwd"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        out = loss(r.rgb, target, r.depth, depth, r.alpha, g.opacities, depth_is_metric=batch.depth_is_metric)
        t["other_loss_fwd"] = max(0.0, time.perf_counter() - t0 - t["lpips_fwd"])
        del lpips_only
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        out.total.backward()
        sync()
        t["backward"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(model.decoder.parameters(), 1.0)
        opt.step()
        t["optimizer"] = time.perf_counter() - t0
        # The backward's parts, each alone on detached inputs with a matching upstream gradient.
        gd = g.detach()
        leaves = [gd.means, gd.quats, gd.scales, gd.opacities, gd.colors]
        for x in leaves:
            x.requires_grad_(True)
        r2 = model.render_targets(gd, batch)
        seed = (r2.rgb * torch.randn_like(r2.rgb)).sum() + (r2.depth * torch.randn_like(r2.depth)).sum()
        t0 = time.perf_counter()
        seed.backward()
        t["render_bwd"] = time.perf_counter() - t0
        if loss.lpips is not None:
            x = r.rgb.detach().requires_grad_(True)
            lp = loss.lpips(*loss._lpips_inputs(x, target)).mean()
            t0 = time.perf_counter()
            lp.backward()
            t["lpips_bwd"] = time.perf_counter() - t0
        else:
            t["lpips_bwd"] = 0.0
        t["decoder_bwd"] = max(0.0, t["backward"] - t["render_bwd"] - t["lpips_bwd"])
        t["total"] = t["data"] + t["decoder_fwd"] + t["render_fwd"] + t["lpips_fwd"] + t["other_loss_fwd"] + \
            t["backward"] + t["optimizer"]
        with torch.no_grad():
            H = batch.rgb.shape[-3]
            fx = batch.K[..., 0, 0].mean()
            dist = (g.means[0] - batch.src_c2w[0, :, :, :3, 3].reshape(-1, 3).mean(0)).norm(dim=-1)
            px = (g.scales[0].mean(-1) / dist.clamp_min(1e-3) * fx).flatten()
            stats.append({"gaussians": g.num_gaussians, "target_views": int(B * V * F),
                          "mean_opacity": float(g.opacities.mean()), "median_scale_px": float(px.median()),
                          "mean_alpha": float(r.alpha.mean()), "image": H})
        if step > 0:  # the first step warms caches and allocators up
            for k in PARTS:
                times[k].append(t[k])
        print(f"step {step}: " + "  ".join(f"{k} {t[k]:.2f}" for k in PARTS), flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"\n# {args.config} {' '.join(extra)}")
    print(f"# {stats[-1]}")
    print(f"{'part':16} {'s':>7} {'share':>6}")
    for k in PARTS:
        if k in ("backward",):
            continue
        print(f"{k:16} {med[k]:7.3f} {med[k] / med['total']:6.1%}")
    res = {"benchmark": "train_step", "configs": args.config, "extra": extra, "median_s": med, "stats": stats[-1],
           "peak_rss_gb": peak_rss_gb(), "threads": args.threads, "load_average": os.getloadavg()[0]}
    print(json.dumps(res))
    return res


if __name__ == "__main__":
    main()
