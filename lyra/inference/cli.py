"""``lyra generate``: the command line of lyra.inference.pipeline (docs/generate.md)."""

from __future__ import annotations

import argparse
import math

from lyra.inference.pipeline import GenerateOptions, generate
from lyra.inference.video import DEFAULT_SCENE_DEPTH
from lyra.utils import args as types
from lyra.viz.video import FPS_RANGE


def _size(text: str) -> tuple[int, int]:  # "128" or "160x120" (width x height)
    try:
        w, h = (int(v) for v in text.lower().split("x")) if "x" in text.lower() else (int(text),) * 2
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be N or WxH in pixels (e.g. 128 or 160x96), got {text!r}")
    if not (8 <= w <= 4096 and 8 <= h <= 4096):
        raise argparse.ArgumentTypeError(f"size {w}x{h} must lie in [8, 4096] pixels per side")
    return w, h


def _times(text: str) -> list[float]:
    try:
        times = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        times = [math.nan]
    if not times or not all(0.0 <= t <= 1.0 for t in times):
        raise argparse.ArgumentTypeError(f"--times takes comma-separated scene times in [0, 1], got {text!r}")
    return times


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"a seed is a whole number in [0, 2^63), got {text!r}")
    return value


def _names(text: str) -> list[str]:
    return [v.strip().replace("-", "_") for v in text.split(",") if v.strip()]


def add_generate_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    g = sub.add_parser("generate", help="image / prompt / video / procedural seed -> teacher -> decoder -> Gaussians "
                                        "(scene.ply or a dynamic scene folder, videos, cameras, meta.json)",
                       description="Generate a 3D (or 4D) Gaussian scene; docs/generate.md.")
    src = g.add_argument_group("source (exactly one)")
    src.add_argument("--procedural", type=_seed, metavar="SEED", help="the embedded procedural teacher's scene SEED (CPU, no weights)")
    src.add_argument("--image", metavar="FILE", help="an RGB image (GEN3C-style teacher: --teacher, --depth-model)")
    src.add_argument("--prompt", metavar="TEXT", help="text -> image (--t2i) -> as --image")
    src.add_argument("--video", metavar="FILE", help="a monocular video with --cameras (one trajectory)")
    src.add_argument("--cameras", metavar="FILE.npz", help="the video's cameras: c2w [T,4,4] (OpenCV camera-to-world), "
                                                           "K [T,3,3] pixels, optional depth [T,H,W], time [T]")
    g.add_argument("--decoder", required=True, metavar="PATH",
                   help="decoder: save_pretrained folder, Lightning .ckpt, or a run folder such as outputs/dynamic")
    g.add_argument("--out", metavar="DIR", help="output folder (default outputs/generate/<source>)")
    g.add_argument("--overwrite", action="store_true",
                   help="replace --out if it exists and lyra wrote it (only once the new run is done)")
    g.add_argument("--force", action="store_true",
                   help="accept a camera file whose intrinsics or depth look wrong for the video (see the error)")
    g.add_argument("--seed", type=_seed, default=0, help="seed of every random draw (diffusion noise, magnitudes); "
                                                        "the same seed repeats a CPU run bit for bit")
    w = g.add_argument_group("teacher weights (local folders; nothing is downloaded)")
    w.add_argument("--teacher", metavar="DIR", help="WanTransformer3DModel folder, or a pipeline folder with transformer/ (and vae/)")
    w.add_argument("--vae", metavar="DIR|dct", help="the teacher's video VAE folder, or 'dct' (default: <teacher>/vae)")
    w.add_argument("--depth-model", metavar="DIR", help="transformers depth-estimation folder (Depth Anything, DPT, ...)")
    w.add_argument("--t2i", metavar="DIR", help="diffusers text-to-image pipeline folder (for --prompt)")
    w.add_argument("--steps", type=types.positive_int, default=30, help="video diffusion steps (default 30)")
    w.add_argument("--guidance", type=types.finite_float, default=5.0, help="video diffusion guidance scale (default 5)")
    w.add_argument("--t2i-steps", type=types.positive_int, default=30, help="text-to-image steps (default 30)")
    w.add_argument("--t2i-guidance", type=types.finite_float, default=7.5,
                   help="text-to-image guidance scale (default 7.5)")
    c = g.add_argument_group("cameras")
    c.add_argument("--trajectories", type=_names, metavar="A,B,..",
                   help="Lyra families to generate along (default all six: left,right,up,zoom_in,zoom_out,spiral; "
                        "none when only --camera-path is given)")
    c.add_argument("--camera-path", action="append", default=[], metavar="FILE",
                   help="a camera path (lyra JSON or nerfstudio camera_path.json) as one more trajectory; repeatable")
    c.add_argument("--anchor", action="store_true",
                   help="attach each camera path's first camera to the teacher's start view (else poses are used as-is)")
    c.add_argument("--path-scale", type=types.positive_float, default=1.0,
                   help="with --anchor: camera-path translations x this x the scene scale (default 1)")
    c.add_argument("--magnitude", metavar="M|NAME=M,..",
                   help="travel of the families as a fraction of the scene scale, for all ('0.3') or per family "
                        "('left=0.3,spiral=0.5'); default: drawn from Lyra's ranges")
    c.add_argument("--fov", type=types.FOV,
                   help="horizontal field of view in degrees, 1..170 (default: the decoder's training teacher, 60)")
    c.add_argument("--frames", type=types.positive_int, help="frames per trajectory (default: the decoder's training clips)")
    c.add_argument("--size", type=_size, help="N or WxH pixels (default: the decoder's training clips)")
    d = g.add_argument_group("dynamic scenes")
    d.add_argument("--times", type=_times, metavar="T0,T1,..", help="scene times in [0, 1] to output a Gaussian set at "
                                                                     "(default: the times of the input frames)")
    d.add_argument("--num-times", type=types.positive_int, metavar="N",
                   help="N evenly spaced times in [0, 1] instead of --times")
    d.add_argument("--scene-depth", type=types.positive_float, default=DEFAULT_SCENE_DEPTH,
                   help=f"video with depth: scale the world so its median depth is this (default {DEFAULT_SCENE_DEPTH})")
    d.add_argument("--world-scale", type=types.positive_float, help="video: scale the cameras' world by this instead")
    o = g.add_argument_group("outputs")
    o.add_argument("--orbit-frames", type=types.positive_int, default=48, help="frames of orbit.mp4 (default 48)")
    o.add_argument("--orbit-degrees", type=types.float_in(1.0, 360.0, "orbit-degrees"), default=60.0,
                   help="orbit swing in degrees around the first camera's target (360: full circle; default 60)")
    o.add_argument("--fps", type=types.float_in(*FPS_RANGE, "fps (frames per second)"), default=24.0)
    o.add_argument("--background", choices=("white", "black"), default="white")
    o.add_argument("--quiet", action="store_true", help="no progress bars")
    m = g.add_argument_group("device and memory")
    m.add_argument("--device", type=types.device, help="torch device (default: cuda if available, else cpu)")
    m.add_argument("--dtype", default="float32", help="teacher weights dtype (float32, bfloat16, float16)")
    m.add_argument("--offload", action="store_true",
                   help="keep the decoder on the CPU while the teacher runs (and move it back after decoding)")
    m.add_argument("--decode-chunk", type=types.positive_int, metavar="N",
                   help="dynamic decoders: target times per decoder pass")
    m.add_argument("--teacher-chunk", type=types.positive_int, metavar="N", help="trajectories per codec / transformer call")
    m.add_argument("--render-chunk", type=types.positive_int, default=8, metavar="N",
                   help="cameras per rasterizer call (default 8)")
    g.set_defaults(func=run)
    return g


def run(args: argparse.Namespace) -> None:
    opts = GenerateOptions(
        decoder=args.decoder, out=args.out, procedural=args.procedural, image=args.image, prompt=args.prompt,
        video=args.video, cameras=args.cameras, teacher=args.teacher, vae=args.vae, depth_model=args.depth_model,
        t2i=args.t2i, steps=args.steps, guidance=args.guidance, t2i_steps=args.t2i_steps,
        t2i_guidance=args.t2i_guidance, trajectories=args.trajectories, camera_paths=list(args.camera_path),
        anchor=args.anchor, path_scale=args.path_scale, magnitude=args.magnitude, fov=args.fov, frames=args.frames,
        size=args.size, times=args.times, num_times=args.num_times, scene_depth=args.scene_depth,
        world_scale=args.world_scale, orbit_frames=args.orbit_frames, orbit_degrees=args.orbit_degrees, fps=args.fps,
        background=args.background, overwrite=args.overwrite, device=args.device, dtype=args.dtype,
        offload=args.offload, decode_chunk=args.decode_chunk, render_chunk=args.render_chunk,
        teacher_chunk=args.teacher_chunk, seed=args.seed, progress=not args.quiet, force=args.force)
    generate(opts)
