"""Rasterizer speed and memory: lyra's backends (plain PyTorch "torch", compiled CPU "cpp", gsplat's
CUDA kernels "gsplat") and a naive dense-tile autograd rasterizer.

    python benchmarks/rasterizer.py                         # random cubes, every backend this machine has
    python benchmarks/rasterizer.py --quick                 # 10k Gaussians only
    python benchmarks/rasterizer.py --student               # what the student emits (see below)
    python benchmarks/rasterizer.py --student --ckpt outputs/static/.../last.ckpt --config configs/static.yaml

Cubes: N Gaussians, isotropic scale 0.02, means uniform in a unit cube 1-2 m in front of one
camera with fx = fy = 0.78 * width; opacity 0.8 (saturating) and 0.1 (translucent: no early stop).
Student: the decoder of ``--config`` (at initialisation, or with ``--ckpt``'s weights) reads five
trajectories of a procedural test clip; its pixel-aligned Gaussians are rendered at the six
target views of one training step (one frame of each trajectory).
Each case runs in a fresh process so "peak RSS" is that whole process's peak (ru_maxrss), torch
import included. Times are the median of --repeats runs after one warm-up.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import resource
import statistics
import subprocess
import sys
import time

import torch


def make_scene(n: int, size: int, opacity: float, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    means = torch.rand(n, 3, generator=g) - 0.5
    means[:, 2] += 1.5  # x, y in [-0.5, 0.5], z in [1, 2]
    quats = torch.zeros(n, 4)
    quats[:, 0] = 1
    scales = torch.full((n, 3), 0.02)
    opac = torch.full((n,), opacity)
    colors = torch.rand(n, 3, generator=g)
    f = 0.78 * size
    K = torch.tensor([[[f, 0, size / 2], [0, f, size / 2], [0, 0, 1.0]]])
    return means, quats, scales, opac, colors, torch.eye(4)[None], K


def naive_dense_tile(means, quats, scales, opac, colors, viewmats, Ks, width, height, tile=16):
    """Baseline: per tile, a dense [pixels x Gaussians-in-tile] alpha matrix, cumprod, all in autograd."""
    from lyra.render.projection import project_gaussians

    p = project_gaussians(means, quats, scales, opac, viewmats, Ks, width, height)
    m2, con, op, rad, dep = p.means2d[0], p.conics[0], p.opacities[0], p.radii[0], p.depths[0]
    tw, th = math.ceil(width / tile), math.ceil(height / tile)
    valid = (rad > 0).all(-1)
    idx = valid.nonzero().squeeze(1)
    idx = idx[torch.argsort(dep[idx])]
    t = m2[idx].detach() / tile
    r = rad[idx].float() / tile
    x0, x1 = (t[:, 0] - r[:, 0]).floor().clamp(0, tw), (t[:, 0] + r[:, 0]).ceil().clamp(0, tw)
    y0, y1 = (t[:, 1] - r[:, 1]).floor().clamp(0, th), (t[:, 1] + r[:, 1]).ceil().clamp(0, th)
    out = torch.zeros(height, width, 3)
    rows = []
    for ty in range(th):
        for tx in range(tw):
            sel = idx[(x0 <= tx) & (tx < x1) & (y0 <= ty) & (ty < y1)]
            ys = torch.arange(ty * tile, min((ty + 1) * tile, height)) + 0.5
            xs = torch.arange(tx * tile, min((tx + 1) * tile, width)) + 0.5
            py, px = torch.meshgrid(ys, xs, indexing="ij")
            dx = m2[sel, 0][None, None] - px[..., None]
            dy = m2[sel, 1][None, None] - py[..., None]
            a, b, c = con[sel, 0], con[sel, 1], con[sel, 2]
            sigma = 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy
            alpha = torch.clamp(op[sel] * torch.exp(-sigma), max=0.999)
            alpha = torch.where((sigma >= 0) & (alpha >= 1 / 255), alpha, torch.zeros_like(alpha))
            T = torch.cumprod(torch.cat([torch.ones_like(alpha[..., :1]), 1 - alpha[..., :-1]], -1), -1)
            w = alpha * T * (T * (1 - alpha) > 1e-4)
            rows.append(((ty, tx), w @ colors[sel]))
    for (ty, tx), img in rows:
        out = out.index_put((torch.arange(ty * tile, ty * tile + img.shape[0])[:, None],
                             torch.arange(tx * tile, tx * tile + img.shape[1])[None]), img)
    return out


def student_scene(config: list[str], ckpt: str | None):
    """(means, quats, scales, opacities, colors, viewmats [6, 4, 4], Ks [6, 3, 3], size): the decoder's
    Gaussians for a procedural test clip's first five trajectories, and one frame of each of six."""
    from lyra.cli import LyraCLI
    from lyra.data.datamodule import SPLIT_OFFSETS
    from lyra.inference.clips import clip_batch
    from lyra.render.cameras import c2w_to_viewmat

    cli = LyraCLI(run=False, args=[a for c in config for a in ("--config", c)])
    model = cli.model.eval()
    if ckpt:
        model.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"])
    clip = cli.datamodule.teacher.make_clip(SPLIT_OFFSETS["test"])
    src = clip.select(views=list(range(5)))
    with torch.no_grad():
        g = model(clip_batch(src))[0]  # through the module: it also passes the input depth where the decoder reads it
    frame = clip.num_frames // 2
    return (g.means, g.quats, g.scales, g.opacities, g.colors, c2w_to_viewmat(clip.c2w[:, frame]), clip.K[:, frame],
            clip.image_size[0])


def run_one(impl: str, n: int, size: int, opacity: float, repeats: int, student: tuple | None = None) -> dict:
    from lyra.render.rasterization import rasterization

    torch.set_num_threads(max(1, torch.get_num_threads()))
    if student is not None:
        scene = student_scene(*student)
        size, n, opacity = scene[7], scene[0].shape[0], float(scene[3].mean())
    else:
        scene = make_scene(n, size, opacity)
    params = [t.clone().requires_grad_(True) for t in scene[:5]]

    def render():
        if impl in ("torch", "cpp", "gsplat"):
            dev = "cuda" if impl == "gsplat" else "cpu"
            return rasterization(*(p.to(dev) for p in params), scene[5].to(dev), scene[6].to(dev), size, size,
                                 backend=impl)[0]
        return naive_dense_tile(*params, scene[5], scene[6], size, size)

    def timed(backward: bool) -> float:
        ts = []
        for i in range(repeats + 1):
            t0 = time.perf_counter()
            if backward:
                render().sum().backward()
            else:
                with torch.no_grad():
                    render()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            ts.append(time.perf_counter() - t0)
        return statistics.median(ts[1:])

    fwd = timed(False)
    fwdbwd = timed(True)
    rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    out = {"impl": impl, "n": n, "size": size, "opacity": opacity, "fwd_s": fwd, "fwd_bwd_s": fwdbwd,
           "peak_rss_gb": rss_gb}
    if impl == "gsplat":
        out["peak_cuda_gb"] = torch.cuda.max_memory_allocated() / 1024**3
    return out


def available_impls() -> list[str]:
    from lyra.render.composite_cpp import cpp_compositor_available
    from lyra.render.rasterization import gsplat_cuda_available

    return ["torch"] + (["cpp"] if cpp_compositor_available() else []) + (["gsplat"] if gsplat_cuda_available() else [])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="only 10k Gaussians at 128x128")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--impls", nargs="+", default=None, help="default: every backend available here, plus naive")
    ap.add_argument("--no-naive", action="store_true", help="skip the naive baseline")
    ap.add_argument("--student", action="store_true", help="render what the student's decoder emits")
    ap.add_argument("--config", action="append", default=None, help="student config(s) (default configs/static.yaml)")
    ap.add_argument("--ckpt", default=None, help="trained student weights (default: at initialisation)")
    ap.add_argument("--one", nargs=4, metavar=("IMPL", "N", "SIZE", "OPACITY"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    config = args.config or ["configs/static.yaml"]
    student = (config, args.ckpt) if args.student else None
    if args.one:
        impl, n, size, op = args.one
        print(json.dumps(run_one(impl, int(n), int(size), float(op), args.repeats, student)))
        return
    impls = args.impls or available_impls() + ([] if args.no_naive or args.student else ["naive"])
    cases = [(0, 0, 0.0)] if args.student else [
        (n, size, op) for n, size in [(10_000, 128)] + ([] if args.quick else [(100_000, 256)]) for op in (0.8, 0.1)]
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}"
          + (f"; student {config} {'weights ' + args.ckpt if args.ckpt else 'at initialisation'}" if student else ""))
    print(f"{'impl':6} {'N':>7} {'res':>7} {'opacity':>7} {'fwd s':>8} {'fwd+bwd s':>10} {'peak RSS GB':>12}")
    rows = []
    for n, size, op in cases:
        for impl in impls:
            extra = [a for c in config for a in ("--config", c)] + (["--student"] if student else []) + \
                (["--ckpt", args.ckpt] if args.ckpt else [])
            out = subprocess.run([sys.executable, __file__, "--one", impl, str(n), str(size), str(op),
                                  "--repeats", str(args.repeats), *extra], capture_output=True, text=True)
            if out.returncode != 0:
                print(f"{impl:6} {n:>7} {size:>4}^2 {op:>7} failed: {out.stderr.strip().splitlines()[-1:]}")
                continue
            r = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append(r)
            print(f"{impl:6} {r['n']:>7} {r['size']:>4}^2 {r['opacity']:7.2f} {r['fwd_s']:8.3f} {r['fwd_bwd_s']:10.3f} "
                  f"{r['peak_rss_gb']:12.2f}", flush=True)
    print(json.dumps({"benchmark": "rasterizer", "student": bool(student), "rows": rows}))


if __name__ == "__main__":
    main()
