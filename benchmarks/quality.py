"""Held-out quality of the static student after a fixed CPU wall-clock budget, with two baselines.

    python benchmarks/quality.py                      # 60 min of training, 4 test scenes
    python benchmarks/quality.py --minutes 8 --test-scenes 3 --opt-steps 60
    python benchmarks/quality.py --smoke              # seconds; only checks that it runs

Protocol (all on the procedural teacher, DCTCodec latents, default 6 x 17 frames at 128 x 128):
- training: fresh scenes every step (clip indices 0, 1, 2, ...). The decoder reads 5 of the 6
  trajectories (a random 5 per step); targets are random frames of random trajectories of all 6,
  matched against the teacher RGB (codec decoding) with MSE + LPIPS-VGG + metric depth (sky excluded).
- test: scenes from the test index range (2,000,000 + k: disjoint world seeds). Input = the first
  five trajectories (left, right, up, zoom_in, zoom_out) with all frames; HELD OUT = the 6th
  (``--heldout``, default spiral). Scored on every ``--eval-stride``-th frame of the held-out
  trajectory, frame 0 excluded (all trajectories share it): PSNR / SSIM (11-px Gaussian) / LPIPS-VGG
  against ground truth (exact renders) and against the teacher RGB; ``src`` = PSNR vs teacher on
  the source trajectories' frames at the same stride (how well the input is reproduced).
- baselines on the same scenes and frames: ``per-scene`` Gaussians initialised from the source
  views' metric depth and fitted with Adam (L1) to the source teacher RGB (the upper bound;
  seconds per scene reported); ``nearest`` the teacher frame of the nearest source camera;
  ``teacher`` the teacher's own decoding of the held-out frames (codec ceiling, not a 3D method).
Prints a table, then one JSON line (also written to ``--out`` if given).
"""

from __future__ import annotations

# ruff: noqa: E402  (the environment must be set before torch loads OpenMP)
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # spin-waiting threads slow a shared machine down

import argparse
import json
import math
import time

import torch
from _common import (SceneOptConfig, add_decoder_args, build_decoder, eval_frames, machine_line,
                     nearest_source_frames, num_params, optimise_scene, peak_rss_gb, split_heldout)

from lyra.data.clip import Clip, ClipBatch
from lyra.data.codecs import DCTCodec
from lyra.data.datamodule import SPLIT_OFFSETS
from lyra.data.generators.procedural import ProceduralGenerator
from lyra.data.procedural import SKY_DEPTH
from lyra.losses.rendering import RenderingLoss
from lyra.metrics.image import ImageMetrics, psnr
from lyra.models.decoders import GaussianDecoder
from lyra.models.teacher import TeacherModule
from lyra.render.gaussians import Gaussians
from lyra.render.trajectories import LYRA_TRAJECTORIES
from lyra.utils.atomic import atomic_write_text

METHODS = ("student", "per-scene", "nearest", "teacher")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=60.0, help="training wall-clock budget")
    ap.add_argument("--max-steps", type=int, default=None, help="stop training earlier after this many steps")
    ap.add_argument("--size", type=int, default=128, help="H = W of the clips")
    ap.add_argument("--frames", type=int, default=17)
    ap.add_argument("--heldout", default="spiral", choices=LYRA_TRAJECTORIES, help="trajectory held out at test")
    ap.add_argument("--batch", type=int, default=1, help="scenes per step")
    ap.add_argument("--target-views", type=int, default=4, help="trajectories (of 6) rendered per scene and step")
    ap.add_argument("--target-frames", type=int, default=1, help="frames rendered per target trajectory")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=20, help="linear warm-up steps, then cosine (by time) to lr/10")
    ap.add_argument("--weight-decay", type=float, default=0.01)
    ap.add_argument("--lpips-weight", type=float, default=0.5)
    ap.add_argument("--depth-weight", type=float, default=0.05)
    add_decoder_args(ap, width=128, layers=4, pattern="MMMA", d_state=64, headdim=32, far=50.0)
    ap.add_argument("--test-scenes", type=int, default=4)
    ap.add_argument("--eval-stride", type=int, default=4)
    ap.add_argument("--opt-steps", type=int, default=150, help="per-scene baseline: Adam steps per scene")
    ap.add_argument("--opt-views", type=int, default=2, help="per-scene baseline: source frames per step")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--log-every", type=int, default=10)
    ap.add_argument("--out", default=None, help="also write the JSON result here")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes and budgets (a few seconds): checks it runs")
    args = ap.parse_args(argv)
    if args.smoke:
        args.minutes, args.max_steps, args.size, args.frames, args.test_scenes = 10.0, 2, 64, 5, 1
        args.width, args.layers, args.pattern, args.d_state, args.headdim = 32, 2, "MA", 16, 16
        args.opt_steps, args.eval_stride, args.target_views, args.log_every = 2, 2, 2, 1
    if not 1 <= args.target_views <= 6 or not 1 <= args.target_frames <= args.frames:
        raise ValueError(f"--target-views must lie in [1, 6] and --target-frames in [1, --frames]; got "
                         f"{args.target_views} and {args.target_frames}")
    return args


# ---- training ------------------------------------------------------------------------------------

def training_batch(clips: list[Clip], args: argparse.Namespace, g: torch.Generator) -> ClipBatch:
    """Source: a random 5 of the 6 trajectories, all frames. Targets: random trajectories of all 6."""
    items = []
    for clip in clips:
        V, T = clip.num_views, clip.num_frames
        src_views = torch.randperm(V, generator=g)[: V - 1].sort().values
        tgt_views = torch.randperm(V, generator=g)[: args.target_views].sort().values
        frames = torch.randperm(T, generator=g)[: args.target_frames].sort().values
        items.append((clip.select(views=src_views), clip.select(views=tgt_views, frames=frames)))
    batch = ClipBatch.collate(items)
    if batch.depth is not None:
        # Sky has no surface: its placeholder depth (SKY_DEPTH) would pull sky Gaussians so far back
        # that max_scale makes them sub-pixel. Zero marks it invalid for the depth term.
        batch.depth = torch.where(batch.depth >= SKY_DEPTH, torch.zeros_like(batch.depth), batch.depth)
    return batch


def lr_factor(step: int, warmup: int, progress: float) -> float:
    """Linear warm-up by step, then cosine from 1 to 0.1 over the wall-clock budget (``progress`` in [0, 1])."""
    warm = min(1.0, (step + 1) / max(1, warmup))
    return warm * (0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, progress))))


def train(args: argparse.Namespace, teacher: TeacherModule, decoder: GaussianDecoder, loss: RenderingLoss) -> dict:
    opt = torch.optim.AdamW(decoder.parameters(), lr=args.lr, betas=(0.9, 0.999), weight_decay=args.weight_decay)
    g = torch.Generator().manual_seed(args.seed)
    budget = args.minutes * 60
    start = time.perf_counter()
    step, index, data_s, history = 0, 0, 0.0, []
    decoder.train()
    while step == 0 or (time.perf_counter() - start < budget and (args.max_steps is None or step < args.max_steps)):
        t0 = time.perf_counter()
        clips = [teacher.make_clip(index + b) for b in range(args.batch)]  # fresh scenes every step
        index += args.batch
        batch = training_batch(clips, args, g)
        data_s += time.perf_counter() - t0
        for group in opt.param_groups:
            group["lr"] = args.lr * lr_factor(step, args.warmup, (time.perf_counter() - start) / max(budget, 1e-9))
        gauss = decoder(batch.latents, batch.src_c2w, batch.src_K)
        total, terms, _ = loss(gauss, batch)
        if not torch.isfinite(total):
            raise FloatingPointError(f"non-finite loss at step {step}: { {k: float(v) for k, v in terms.items()} }; "
                                     "lower --lr")
        opt.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(decoder.parameters(), 1.0)
        opt.step()
        step += 1
        history.append(float(total.detach()))
        if step % args.log_every == 0:
            elapsed = time.perf_counter() - start
            recent = history[-args.log_every:]
            print(f"step {step:5d}  {elapsed / 60:6.1f} min  loss {sum(recent) / len(recent):.4f}  "
                  + "  ".join(f"{k} {float(v.detach()):.4f}" for k, v in terms.items())
                  + f"  s/step {elapsed / step:.1f} (data {data_s / step:.1f})  load {os.getloadavg()[0]:.1f}",
                  flush=True)
    elapsed = time.perf_counter() - start
    tail = history[-max(1, len(history) // 10):]
    return {"steps": step, "scenes_seen": index, "minutes": elapsed / 60, "s_per_step": elapsed / step,
            "data_s_per_step": data_s / step, "final_loss": sum(tail) / len(tail)}


# ---- evaluation ----------------------------------------------------------------------------------

def render_frames(
    renderer: RenderingLoss,
    gauss: Gaussians,  # batch [1]
    c2w: torch.Tensor,  # [F, 4, 4]
    K: torch.Tensor,  # [F, 3, 3]
    size: int,
) -> torch.Tensor:  # [F, H, W, 3]
    """Renders a few cameras at a time so evaluation memory stays flat."""
    return torch.cat([renderer.render(gauss, c2w[i:i + 4][None], K[i:i + 4][None], size, size)[0][0]
                      for i in range(0, c2w.shape[0], 4)])


@torch.no_grad()
def evaluate(args: argparse.Namespace, teacher: TeacherModule, decoder: GaussianDecoder,
             renderer: RenderingLoss) -> dict:
    metrics = ImageMetrics("vgg")
    heldout = LYRA_TRAJECTORIES.index(args.heldout)
    frames = eval_frames(args.frames, args.eval_stride)
    scores: dict[str, dict[str, list[float]]] = {m: {} for m in METHODS}
    opt_cfg = SceneOptConfig(steps=args.opt_steps, views_per_step=args.opt_views, seed=args.seed)
    decoder.eval()

    def add(method: str, key: str, values: torch.Tensor) -> None:
        scores[method].setdefault(key, []).extend(values.reshape(-1).tolist())

    for k in range(args.test_scenes):
        clip = teacher.make_clip(SPLIT_OFFSETS["test"] + k)
        src, held = split_heldout(clip, heldout)
        c2w, K, gt, tgt = held.c2w[0, frames], held.K[0, frames], held.gt_rgb[0, frames], held.rgb[0, frames]
        src_c2w, src_K = src.c2w[:, frames].reshape(-1, 4, 4), src.K[:, frames].reshape(-1, 3, 3)
        src_rgb = src.rgb[:, frames].reshape(-1, *src.rgb.shape[2:])
        preds, seconds = {}, {}
        t0 = time.perf_counter()
        gauss = decoder(src.latents[None], src.c2w[None], src.K[None])
        preds["student"] = render_frames(renderer, gauss, c2w, K, args.size)
        seconds["student"] = time.perf_counter() - t0
        add("student", "src_psnr", psnr(render_frames(renderer, gauss, src_c2w, src_K, args.size), src_rgb))
        t0 = time.perf_counter()
        with torch.enable_grad():
            fitted = optimise_scene(src, renderer, opt_cfg)
        preds["per-scene"] = render_frames(renderer, fitted, c2w, K, args.size)
        seconds["per-scene"] = time.perf_counter() - t0
        add("per-scene", "src_psnr", psnr(render_frames(renderer, fitted, src_c2w, src_K, args.size), src_rgb))
        t0 = time.perf_counter()
        nearest = nearest_source_frames(src.c2w.reshape(-1, 4, 4), c2w)
        preds["nearest"] = src.rgb.reshape(-1, *src.rgb.shape[2:])[nearest]
        seconds["nearest"] = time.perf_counter() - t0
        preds["teacher"], seconds["teacher"] = tgt, 0.0
        for method, pred in preds.items():
            for ref_name, ref in (("gt", gt), ("teacher", tgt))[: 1 if method == "teacher" else 2]:
                for name, v in metrics(pred, ref).items():
                    add(method, f"{name}_{ref_name}", v)
            add(method, "seconds_per_scene", torch.tensor(seconds[method]))
        print(f"test scene {k}: " + "  ".join(f"{m} {float(psnr(p, gt).mean()):.2f} dB" for m, p in preds.items())
              + f"  (per-scene fit {seconds['per-scene']:.0f} s)", flush=True)
    return {m: {key: sum(v) / len(v) for key, v in s.items()} for m, s in scores.items()}


def print_table(results: dict, args: argparse.Namespace) -> None:
    print(f"\nheld-out trajectory '{args.heldout}', frames {eval_frames(args.frames, args.eval_stride)} of "
          f"{args.frames}, {args.test_scenes} test scenes, {args.size}x{args.size}")
    print(f"{'method':10} {'PSNR gt':>8} {'SSIM gt':>8} {'LPIPS gt':>9} {'PSNR tch':>9} {'SSIM tch':>9} "
          f"{'LPIPS tch':>10} {'src PSNR':>9} {'s/scene':>8}")
    for m, r in results.items():
        def col(key: str, width: int, fmt: str) -> str:
            return f"{r[key]:{width}{fmt}}" if key in r else f"{'-':>{width}}"

        print(f"{m:10} {col('psnr_gt', 8, '.2f')} {col('ssim_gt', 8, '.3f')} {col('lpips_gt', 9, '.3f')} "
              f"{col('psnr_teacher', 9, '.2f')} {col('ssim_teacher', 9, '.3f')} {col('lpips_teacher', 10, '.3f')} "
              f"{col('src_psnr', 9, '.2f')} {col('seconds_per_scene', 8, '.1f')}")


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    print(machine_line(args.threads), flush=True)
    teacher = TeacherModule(ProceduralGenerator(seed=0), DCTCodec(), args.frames, args.size, args.size)
    decoder = build_decoder(args, teacher.codec.latent_channels)
    loss = RenderingLoss(lpips_weight=args.lpips_weight, depth_weight=args.depth_weight, backend="torch")
    print(f"# student: {num_params(decoder) / 1e6:.2f} M parameters, width {args.width}, {args.layers} layers "
          f"'{args.pattern}', d_state {args.d_state}; lr {args.lr}, batch {args.batch}, "
          f"{args.target_views}x{args.target_frames} target frames per scene", flush=True)
    train_stats = train(args, teacher, decoder, loss)
    print(f"# trained {train_stats['steps']} steps on {train_stats['scenes_seen']} scenes in "
          f"{train_stats['minutes']:.1f} min ({train_stats['s_per_step']:.1f} s/step)", flush=True)
    renderer = RenderingLoss(lpips_weight=0.0, depth_weight=0.0, backend="torch")
    results = evaluate(args, teacher, decoder, renderer)
    print_table(results, args)
    out = {"benchmark": "quality", "settings": {k: v for k, v in vars(args).items() if k != "out"},
           "train": train_stats, "results": results, "peak_rss_gb": peak_rss_gb(),
           "load_average": os.getloadavg()[0], "threads": args.threads}
    line = json.dumps(out)
    if args.out:
        atomic_write_text(args.out, line + "\n")
    print(line)
    return out


if __name__ == "__main__":
    main()
