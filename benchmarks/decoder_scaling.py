"""Static decoder cost as the number of trajectories grows: forward and forward+backward time and
peak memory for V = 1..6 at a fixed clip length and resolution (rendering excluded).

    python benchmarks/decoder_scaling.py                   # CPU width 128, 4 layers, 6 x 17 x 128 x 128
    python benchmarks/decoder_scaling.py --reference       # Lyra's width 512, 16 layers, d_state 256, 9 frames
    python benchmarks/decoder_scaling.py --device cuda --reference --frames 121 --size 176 320
    python benchmarks/decoder_scaling.py --smoke           # seconds; only checks that it runs

Inputs: random latents of the codec's shape (DCTCodec: 128 channels, 4x time, 8x space; with
``--reference`` Lyra's 16-channel VAE shape) and the six Lyra trajectories' cameras around a
scene; the cost does not depend on the latents' values. Each V runs in a fresh process: peak memory
on CPU is that process's peak RSS minus its RSS before the first forward (activations, gradients,
autograd buffers), on CUDA ``max_memory_allocated`` minus the allocation before it. Times are the
median of ``--repeats`` runs after one warm-up; the loss for backward is the sum of every Gaussian
field, so backward covers the whole decoder. Mamba-2 is linear in tokens; the attention blocks are
quadratic but cheap at these token counts, so the columns per trajectory should stay about flat.
"""

from __future__ import annotations

# ruff: noqa: E402  (the environment must be set before torch loads OpenMP)
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # spin-waiting threads slow a shared machine down

import argparse
import json
import statistics
import subprocess
import sys
import time

import torch
from _common import current_rss_gb, machine_line, num_params, peak_rss_gb

from lyra.models import BodyConfig, StaticGaussianDecoder
from lyra.render.cameras import intrinsics_from_fov, look_at
from lyra.render.trajectories import LYRA_TRAJECTORIES, make_trajectory

REFERENCE = {"width": 512, "layers": 16, "pattern": "MMMMMMMA", "d_state": 256, "headdim": 64,
             "latent_channels": 16, "frames": 9}
SMALL = {"width": 128, "layers": 4, "pattern": "MMMA", "d_state": 64, "headdim": 32,
         "latent_channels": 128, "frames": 17}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reference", action="store_true", help="Lyra's decoder size, on a shorter clip")
    ap.add_argument("--views", type=int, nargs="+", default=[1, 2, 3, 4, 5, 6])
    ap.add_argument("--frames", type=int, default=None, help="default 17 (9 with --reference)")
    ap.add_argument("--size", type=int, nargs="+", default=[128], help="H [W] of the clip")
    ap.add_argument("--latent-channels", type=int, default=None, help="default 128 (16 with --reference)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--smoke", action="store_true",
                    help="tiny sizes in one process (a few seconds): checks that it runs; memory is cumulative")
    ap.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)  # internal: measure one V
    g = ap.add_argument_group("decoder body (default: the preset)")
    g.add_argument("--width", type=int, default=0)
    g.add_argument("--layers", type=int, default=0)
    g.add_argument("--pattern", default="", help="M = bidirectional Mamba-2, A = attention")
    g.add_argument("--d-state", type=int, default=0)
    g.add_argument("--headdim", type=int, default=0, help="Mamba-2 and attention head dim")
    g.add_argument("--density", type=int, default=1, help="Gaussians per latent pixel along each side")
    g.add_argument("--no-checkpointing", action="store_true", help="disable gradient checkpointing")
    args = ap.parse_args(argv)
    preset = REFERENCE if args.reference else SMALL
    for key in ("width", "layers", "pattern", "d_state", "headdim"):
        if not getattr(args, key):  # not given on the command line
            setattr(args, key, preset[key])
    args.frames = args.frames or preset["frames"]
    args.latent_channels = args.latent_channels or preset["latent_channels"]
    if args.smoke:
        args.views, args.frames, args.size, args.repeats = [1, 2], 5, [32], 1
        args.width, args.layers, args.pattern, args.d_state, args.headdim = 32, 2, "MA", 16, 16
    if len(args.size) == 1:
        args.size = args.size * 2
    bad = [v for v in args.views if not 1 <= v <= len(LYRA_TRAJECTORIES)]
    if bad:
        raise ValueError(f"--views must lie in 1..{len(LYRA_TRAJECTORIES)} (one per Lyra trajectory), got {bad}")
    if (args.frames - 1) % 4 or any(s % 16 for s in args.size):
        raise ValueError(f"--frames must be 1 + 4k and --size a multiple of 16 (codec 4x time, 8x space, patch 2); "
                         f"got {args.frames} and {args.size}")
    return args


def cameras(views: int, frames: int, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``views`` Lyra trajectories around a unit-scale scene: c2w [1, V, T, 4, 4], K [1, V, T, 3, 3]."""
    center = torch.zeros(3)
    start = look_at(torch.tensor([0.0, -1.0, -3.0]), center)
    g = torch.Generator().manual_seed(0)
    c2w = torch.stack([make_trajectory(k, start, center, frames, scene_scale=1.0, generator=g)
                       for k in LYRA_TRAJECTORIES[:views]])
    K = intrinsics_from_fov(60.0, width, height).expand(views, frames, 3, 3)
    return c2w[None], K[None].clone()


def measure_one(args: argparse.Namespace, views: int) -> dict:
    device = torch.device(args.device)
    torch.manual_seed(0)
    H, W = args.size
    body = BodyConfig(width=args.width, num_layers=args.layers, pattern=args.pattern, d_state=args.d_state,
                      headdim=args.headdim, attn_headdim=args.headdim)
    decoder = StaticGaussianDecoder(latent_channels=args.latent_channels, body=body, density=args.density)
    if not args.no_checkpointing:
        decoder.enable_gradient_checkpointing()
    decoder = decoder.to(device).train()
    c2w, K = (t.to(device) for t in cameras(views, args.frames, H, W))
    latents = torch.randn(1, views, args.latent_channels, 1 + (args.frames - 1) // 4, H // 8, W // 8, device=device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def run(backward: bool) -> None:
        with torch.set_grad_enabled(backward):
            g = decoder(latents, c2w, K)
            if backward:
                (g.means.sum() + g.quats.sum() + g.scales.sum() + g.opacities.sum() + g.colors.sum()).backward()
                decoder.zero_grad(set_to_none=True)
        sync()

    def timed(backward: bool) -> tuple[float, float]:  # (median seconds, peak GB above the start)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
        ts = []
        for _ in range(args.repeats + 1):
            t0 = time.perf_counter()
            run(backward)
            ts.append(time.perf_counter() - t0)
        peak = (torch.cuda.max_memory_allocated(device) - base) / 1024**3 if device.type == "cuda" \
            else peak_rss_gb() - base_rss
        return statistics.median(ts[1:]), peak

    base_rss = current_rss_gb()
    fwd_s, fwd_gb = timed(False)
    fwd_bwd_s, fwd_bwd_gb = timed(True)  # after the forward runs: this process's peak now is backward's
    tokens = views * latents.shape[3] * (H // 16) * (W // 16)
    return {"views": views, "tokens": tokens, "gaussians": views * args.frames * (H // 8 * args.density) * (W // 8 * args.density),
            "fwd_s": fwd_s, "fwd_bwd_s": fwd_bwd_s, "fwd_peak_gb": fwd_gb, "fwd_bwd_peak_gb": fwd_bwd_gb,
            "params_m": num_params(decoder) / 1e6}


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.one is not None:
        print(json.dumps(measure_one(args, args.one)))
        return []
    forwarded = list(argv if argv is not None else sys.argv[1:])  # the child parses the same settings
    print(machine_line(args.threads))
    print(f"# {'reference' if args.reference else 'small CPU'} decoder: width {args.width}, {args.layers} layers "
          f"'{args.pattern}', d_state {args.d_state}, headdim {args.headdim}, gradient checkpointing "
          f"{'off' if args.no_checkpointing else 'on'}; clip {args.frames} frames at {args.size[0]}x{args.size[1]}, "
          f"{args.latent_channels} latent channels; device {args.device}; median of {args.repeats}")
    print(f"{'V':>2} {'tokens':>7} {'Gaussians':>10} {'fwd s':>8} {'fwd+bwd s':>10} {'fwd+bwd s/V':>12} "
          f"{'x V=1 per V':>12} {'fwd GB':>8} {'fwd+bwd GB':>11}", flush=True)
    rows: list[dict] = []
    for v in args.views:
        if args.smoke:  # one process: quick, but the memory columns then hold the running peak
            r = measure_one(args, v)
        else:
            out = subprocess.run([sys.executable, __file__, *forwarded, "--one", str(v)], capture_output=True,
                                 text=True)
            if out.returncode != 0:
                raise RuntimeError(f"measuring V={v} failed:\n{out.stderr.strip()[-2000:]}")
            r = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(r)
        per_view = r["fwd_bwd_s"] / v
        rel = per_view / (rows[0]["fwd_bwd_s"] / rows[0]["views"])
        print(f"{v:>2} {r['tokens']:>7} {r['gaussians']:>10} {r['fwd_s']:8.3f} {r['fwd_bwd_s']:10.3f} "
              f"{per_view:12.3f} {rel:12.2f} {r['fwd_peak_gb']:8.3f} {r['fwd_bwd_peak_gb']:11.3f}", flush=True)
    print(f"# {rows[0]['params_m']:.2f} M parameters; load average now {os.getloadavg()[0]:.2f}")
    print(json.dumps({"benchmark": "decoder_scaling", "reference": args.reference, "device": args.device,
                      "frames": args.frames, "size": args.size, "width": args.width, "layers": args.layers,
                      "d_state": args.d_state, "threads": args.threads, "rows": rows}))
    return rows


if __name__ == "__main__":
    main()
