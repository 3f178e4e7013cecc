"""Video codec throughput (frames/s) and DCTCodec round-trip PSNR on procedural clips.

    python benchmarks/codec.py                       # 6x17x128x128 clips, 16..192 channels
    python benchmarks/codec.py --worlds 4 --size 176 320 --device cuda
    python benchmarks/codec.py --vae /path/to/vae    # also time a diffusers VAE (local folder)

Clips come from ProceduralWorld (one scene per world seed, 6 trajectories each). PSNR is per
trajectory clip (mean and worst) between the clip and decode(encode(clip)); throughput is the
best of ``--repeats`` timed runs over all clips at once, after one warm-up run.
"""

from __future__ import annotations

import argparse
import time

import torch

from lyra.data.codecs import (
    DEFAULT_LATENT_CHANNELS,
    DCTCodec,
    DiffusersVideoVAE,
    VideoCodec,
)
from lyra.data.procedural import ProceduralWorld
from lyra.metrics import psnr


def best_time(fn, repeats: int, device: torch.device) -> float:
    fn()  # warm-up (kernel selection, allocator)
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best


@torch.no_grad()
def measure(codec: VideoCodec, clips: torch.Tensor, repeats: int) -> dict:  # clips [N, T, H, W, 3]
    device = clips.device
    z = codec.encode(clips)
    out = codec.decode(z)
    frames = clips.shape[0] * clips.shape[1]
    N, T, H, W, _ = clips.shape
    p = psnr(out.float().reshape(N, T * H, W, 3), clips.float().reshape(N, T * H, W, 3))  # one PSNR per clip
    return dict(
        enc_fps=frames / best_time(lambda: codec.encode(clips), repeats, device),
        dec_fps=frames / best_time(lambda: codec.decode(z), repeats, device),
        psnr_mean=p.mean().item(), psnr_min=p.min().item(), latent_rms=z.float().pow(2).mean().sqrt().item(),
        latent_shape=tuple(z.shape[1:]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--channels", type=int, nargs="+", default=[16, 32, 48, 64, 96, 128, 192])
    ap.add_argument("--worlds", type=int, default=2, help="procedural scenes (6 trajectory clips each)")
    ap.add_argument("--frames", type=int, default=17)
    ap.add_argument("--size", type=int, nargs="+", default=[128], help="H [W] of the clips")
    ap.add_argument("--dynamic", action="store_true", help="moving objects in the scenes")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--vae", default=None, help="local diffusers VAE folder to time as well")
    ap.add_argument("--vae-dtype", default="float32")
    args = ap.parse_args()
    height, width = (args.size * 2)[:2]
    device = torch.device(args.device)

    t0 = time.perf_counter()
    clips = torch.cat([ProceduralWorld(seed=s, dynamic=args.dynamic).sample_clip(args.frames, height, width)["rgb"]
                       for s in range(args.worlds)]).to(device)
    print(f"# {clips.shape[0]} clips of {args.frames}x{height}x{width} from {args.worlds} procedural worlds "
          f"(rendered in {time.perf_counter() - t0:.1f} s); device={device}, torch threads={torch.get_num_threads()}")
    print(f"{'codec':<22} {'latent C,T,h,w':<18} {'encode fps':>11} {'decode fps':>11} "
          f"{'PSNR mean':>10} {'PSNR min':>9} {'latent rms':>11}")
    codecs: list[tuple[str, VideoCodec]] = [
        (f"DCTCodec({c}){'*' if c == DEFAULT_LATENT_CHANNELS else ''}", DCTCodec(c)) for c in args.channels]
    if args.vae:
        vae = DiffusersVideoVAE(args.vae, dtype=args.vae_dtype)
        codecs.append((vae.family, vae))
    for name, codec in codecs:
        r = measure(codec.to(device), clips, args.repeats)
        print(f"{name:<22} {str(r['latent_shape']):<18} {r['enc_fps']:>11.1f} {r['dec_fps']:>11.1f} "
              f"{r['psnr_mean']:>10.2f} {r['psnr_min']:>9.2f} {r['latent_rms']:>11.2f}")
    print(f"# * = DEFAULT_LATENT_CHANNELS ({DEFAULT_LATENT_CHANNELS})")


if __name__ == "__main__":
    main()
