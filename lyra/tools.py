"""The ``lyra`` command: render a Gaussian PLY along a camera path, make a demo scene, export paths.

    lyra demo-scene --out scene.ply
    lyra render --ply scene.ply --trajectory spiral --out video.mp4 --sheet sheet.png
    lyra render --ply outputs/generate/procedural_0/scene --out 4d.mp4   # dynamic folder: camera and time move
    lyra render --ply DIR --time-sweep --out t.mp4      # camera fixed, time 0 -> 1 (--bullet-time T: time fixed)
    lyra camera-path --ply scene.ply --trajectory left --out path.json
    lyra convert scene.ply scene.splat           # or .spz, .usda, .usdc, .usdz; the suffix picks the format
    lyra convert scene_folder/ scene.usdz        # a dynamic scene folder -> one USD with time samples
    lyra view scene.ply                          # web viewer on http://127.0.0.1:8080 (docs/viewer.md: protection)
    lyra generate --procedural 0 --decoder outputs/dynamic   # a scene from the main job's decoder (docs/generate.md)

Cameras follow lyra.render.cameras (OpenCV axes, world up = -y). ``--camera-path`` takes lyra's
camera-path JSON or nerfstudio's camera_path.json. Without it the camera is placed from the
Gaussians: it looks at the median of the means from 20 degrees above, far enough that the sphere
holding 95 % of the means fits the view; trajectory magnitudes are the middle of Lyra's ranges
times that distance. A dynamic scene folder plays camera and time together (the path's ``time``,
else 0 -> 1); ``--time-sweep`` holds the camera, ``--bullet-time T`` holds the time.

Errors: every expected failure (a file, a permission, a parse, a size limit, a device) prints one line,
``lyra <command>: error: ...``, naming the file or argument and the fix, and exits 2; ``lyra --debug
...`` shows the traceback. ``lyra --limit NAME=N ...`` raises a size limit (docs/limits.md).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor

from lyra.data.cache_cli import add_cache_parser
from lyra.inference.cli import add_generate_parser
from lyra.inference.paths import load_camera_path, resample
from lyra.inference.render import render_frames
from lyra.render.camera_path import CameraPath
from lyra.render.formats import (
    load_dynamic_scene,
    load_scene,
    save_dynamic_scene,
    save_scene,
)
from lyra.render.framing import (
    TRAJECTORIES,
    auto_camera_path,
    frame_scene,
    render_path,
)
from lyra.render.gaussians import Gaussians
from lyra.render.ply import load_ply, save_ply
from lyra.render.renderer import BACKGROUNDS
from lyra.render.usd import USD_SUFFIXES, load_usd, save_usd
from lyra.utils import args as types
from lyra.utils.errors import LyraUsageError, run_reporting_errors
from lyra.utils.limits import LIMITS, check_render_budget, env_name, set_limits
from lyra.viz.demo_scene import demo_scene
from lyra.viz.video import FPS_RANGE, write_contact_sheet, write_video

MAX_SIZE = 4096


# ---- command line -----------------------------------------------------------------------------------


def _size(text: str) -> tuple[int, int]:  # "128" or "160x120" (width x height)
    try:
        w, h = (int(v) for v in text.lower().split("x")) if "x" in text.lower() else (int(text),) * 2
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be N or WxH in pixels (e.g. 128 or 160x120), got {text!r}")
    if not (2 <= w <= MAX_SIZE and 2 <= h <= MAX_SIZE) or w % 2 or h % 2:
        raise argparse.ArgumentTypeError(
            f"size {w}x{h} is not allowed: width and height must be even (H.264 needs it) and in [2, {MAX_SIZE}]")
    return w, h


def _trajectory(text: str) -> str:
    kind = text.replace("-", "_")
    if kind not in TRAJECTORIES:
        raise argparse.ArgumentTypeError(f"unknown trajectory {text!r}; choose one of {', '.join(TRAJECTORIES)}")
    return kind


def _add_camera_args(p: argparse.ArgumentParser) -> None:
    # Defaults are None so that, with --camera-path, only what the user asked for overrides the file.
    p.add_argument("--trajectory", type=_trajectory, default=None,
                   help=f"one of {', '.join(TRAJECTORIES)} (default orbit)")
    p.add_argument("--frames", type=types.positive_int, default=None, help="number of frames (default 24)")
    p.add_argument("--size", type=_size, default=None, help="N or WxH, even (default 128)")
    p.add_argument("--fov", type=types.FOV, default=60.0, help="horizontal field of view in degrees (default 60)")
    p.add_argument("--magnitude", type=types.finite_float, default=None,
                   help="travel of a Lyra trajectory in units of the camera distance (default: middle of its range)")


def _load_gaussians(path: Path) -> Gaussians:
    if not path.is_file():
        raise FileNotFoundError(f"PLY file {str(path)!r} does not exist; make one with `lyra demo-scene --out {path}`")
    return load_ply(path)  # a damaged or hostile file is a ValueError naming it


def _camera_path(args: argparse.Namespace, gaussians: Gaussians | None, render: bool = True) -> CameraPath:
    """The path asked for; its frame count and size are checked against the limits before it is built."""
    check = check_render_budget if render else (lambda n, w, h, what: check_render_budget(n, 1, 1, what))
    explicit = getattr(args, "camera_path", None)
    if explicit is not None:
        if args.trajectory is not None:
            raise LyraUsageError("pass either --camera-path or --trajectory, not both")

        loaded = load_camera_path(explicit)
        w, h = args.size or (loaded.width, loaded.height)
        check(args.frames or len(loaded), w, h, f"lyra {args.command} --camera-path {explicit}")
        return resample(loaded, args.frames or len(loaded), h, w)
    w, h = args.size or (128, 128)
    check(args.frames or 24, w, h, f"lyra {args.command}")
    if gaussians is not None:
        center, distance = frame_scene(gaussians.means, args.fov, w, h)
    else:
        center, distance = torch.tensor(args.center, dtype=torch.float32), args.distance
    return auto_camera_path(args.trajectory or "orbit", center, distance, args.frames or 24, w, h, args.fov,
                            args.magnitude)


def _check_even(path: CameraPath) -> None:
    if path.width % 2 or path.height % 2:
        raise LyraUsageError(f"the camera path is {path.width}x{path.height}; mp4 needs even sizes: pass --size")


def _write_render(args: argparse.Namespace, frames: Tensor, summary: str) -> None:  # frames [T, H, W, 3]
    """Write the video (read back before it replaces --out) and the sheet; warn when nothing is in view."""
    background = torch.tensor(BACKGROUNDS[args.background])
    if all(float((frame - background).abs().amax()) < 1.0 / 255 for frame in frames):  # stops at the first content
        print(f"lyra render: warning: every frame of {args.out} shows only the {args.background} background: nothing "
              f"of {args.ply} is in view (no Gaussians in front of the cameras, or too small, faint or large to "
              "draw); check the scene (lyra view) or the camera path", file=sys.stderr)
    write_video(args.out, frames, fps=args.fps)
    if args.sheet:
        write_contact_sheet(args.sheet, frames)
    print(f"wrote {args.out} ({summary})" + (f" and {args.sheet}" if args.sheet else ""))


def _device(args: argparse.Namespace) -> str:
    return args.device or ("cuda" if torch.cuda.is_available() else "cpu")


def _cmd_render(args: argparse.Namespace) -> None:
    if Path(args.ply).is_dir():
        return _render_dynamic(args)
    if args.time_sweep or args.bullet_time is not None:
        raise LyraUsageError(f"--time-sweep and --bullet-time play a dynamic scene, but {args.ply!r} is one scene "
                             "file; pass a dynamic scene folder (t000.ply ... + index.json, as `lyra generate` writes)")
    gaussians = _load_gaussians(Path(args.ply))
    path = _camera_path(args, gaussians)
    _check_even(path)
    frames = render_path(gaussians, path, BACKGROUNDS[args.background], device=_device(args))
    _write_render(args, frames, f"{len(path)} frames, {path.width}x{path.height}")


def _render_dynamic(args: argparse.Namespace) -> None:
    """4D playback of a dynamic scene folder: frame f shows the Gaussian set nearest in time to the
    frame's scene time. Default: the camera path's ``time`` (else 0 -> 1 over the frames) with the
    camera moving; ``--time-sweep``: the path's first camera, time 0 -> 1; ``--bullet-time T``: time T."""

    if args.time_sweep and args.bullet_time is not None:
        raise LyraUsageError("pass --time-sweep (camera fixed, time runs) or --bullet-time T (time fixed), not both")
    if args.bullet_time is not None and not 0.0 <= args.bullet_time <= 1.0:
        raise LyraUsageError(f"--bullet-time takes a scene time in [0, 1], got {args.bullet_time}")
    sets, times = load_dynamic_scene(args.ply)
    path = _camera_path(args, sets[0])
    _check_even(path)
    n = len(path)
    if args.time_sweep:
        path = CameraPath(path.c2w[:1].expand(n, 4, 4), path.K[:1].expand(n, 3, 3), path.width, path.height,
                          torch.linspace(0.0, 1.0, n) if n > 1 else torch.zeros(1))
    elif args.bullet_time is not None:
        path = CameraPath(path.c2w, path.K, path.width, path.height, torch.full((n,), float(args.bullet_time)))
    elif path.time is None:
        path = CameraPath(path.c2w, path.K, path.width, path.height,
                          torch.linspace(0.0, 1.0, n) if n > 1 else torch.zeros(1))
    frames = render_frames(sets, times, path.c2w, path.K, path.height, path.width, path.time,
                           BACKGROUNDS[args.background], device=_device(args))
    mode = "time sweep" if args.time_sweep else (f"bullet time t={args.bullet_time:g}" if args.bullet_time is not None
                                                 else "camera and time")
    _write_render(args, frames, f"{n} frames, {path.width}x{path.height}, {len(sets)} time steps, {mode}")


def _cmd_demo_scene(args: argparse.Namespace) -> None:
    save_ply(args.out, demo_scene(args.n, seed=args.seed))
    print(f"wrote {args.out} ({args.n} Gaussians)")


def _cmd_camera_path(args: argparse.Namespace) -> None:
    gaussians = _load_gaussians(Path(args.ply)) if args.ply else None
    path = _camera_path(args, gaussians, render=False)
    path.save(args.out)
    print(f"wrote {args.out} ({len(path)} frames, {path.width}x{path.height})")


def _cmd_convert(args: argparse.Namespace) -> None:
    source, target = Path(args.input), Path(args.output)
    if source.resolve() == target.resolve():
        raise LyraUsageError(f"{target} is the input file; pass another output name")
    try:
        if source.is_dir():  # a dynamic scene folder: into one USD file with time samples
            if target.suffix.lower() not in USD_SUFFIXES:
                raise LyraUsageError(f"{source} is a dynamic scene folder; convert it to {'/'.join(USD_SUFFIXES)} "
                                     "(one file with time samples)")
            scenes, times = load_dynamic_scene(source)
            _refuse_empty(source, scenes)
            save_usd(target, scenes, times)
            back = load_usd(target)[0]
        elif source.suffix.lower() in USD_SUFFIXES and not target.suffix:  # a USD file into a scene folder
            scenes, times = load_usd(source)
            _refuse_empty(source, scenes)
            save_dynamic_scene(target, scenes, times if times is not None else [0.0])
            back = load_dynamic_scene(target)[0]
        else:
            scenes = [load_scene(source)]
            _refuse_empty(source, scenes)
            save_scene(target, scenes[0])
            back = [load_scene(target)]  # read back: never report a file lyra cannot open
    except ImportError as err:  # .spz without gsply, USD without usd-core: optional packages
        raise LyraUsageError(str(err)) from None
    if [g.num_gaussians for g in back] != [g.num_gaussians for g in scenes]:
        raise LyraUsageError(f"{target} reads back {[g.num_gaussians for g in back]} Gaussians, not the "
                             f"{[g.num_gaussians for g in scenes]} written; the file is damaged (disk full?)")
    print(f"wrote {target} ({len(scenes)} x {scenes[0].num_gaussians} Gaussians)" if len(scenes) > 1
          else f"wrote {target} ({scenes[0].num_gaussians} Gaussians)")


def _refuse_empty(source: Path, scenes: list[Gaussians]) -> None:
    if any(g.num_gaussians == 0 for g in scenes):
        raise LyraUsageError(f"{source} holds no Gaussians; there is nothing to convert")


def _cmd_view(args: argparse.Namespace) -> None:
    try:
        from lyra.viewer import (
            view_scene,  # optional (lyra[viewer]): viser is only needed to view
        )
    except ImportError as err:
        raise LyraUsageError(f"lyra view needs viser ({err}); install it with pip install 'lyra[viewer]'") from None
    # "Ctrl-C to stop" must hold also when the shell started us with SIGINT ignored (a background
    # job of a non-interactive shell, e.g. a CI script): Python then installs no handler of its own.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        view_scene(args.scene, host=args.host, port=args.port, path_out=args.path_out, path_size=args.path_size,
                   save_dir=args.save_dir, allow_remote=args.allow_remote)
    except KeyboardInterrupt:  # Ctrl-C while the viewer was still starting: it has stopped; a normal exit
        pass


def build_parser() -> argparse.ArgumentParser:
    parser = types.OneLineParser(prog="lyra", description="Lyra tools: render Gaussian scenes on any device.")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error (else one line)")
    parser.add_argument("--limit", action="append", default=[], metavar="NAME=N",
                        help=f"raise a size limit for this run ({', '.join(LIMITS)}; docs/limits.md)")
    sub = parser.add_subparsers(dest="command", required=True)

    r = sub.add_parser("render", help="render a 3DGS PLY (or a dynamic scene folder) along a camera path to an mp4")
    r.add_argument("--ply", required=True,
                   help="3DGS PLY file (lyra.render.save_ply layout), or a dynamic scene folder "
                        "(index.json + one PLY per time)")
    r.add_argument("--out", required=True, help="output video, .mp4")
    r.add_argument("--sheet", default=None, help="optional PNG contact sheet of evenly spaced frames")
    r.add_argument("--camera-path", default=None,
                   help="camera path JSON (`lyra camera-path`, `lyra view`) or nerfstudio camera_path.json, "
                        "instead of --trajectory")
    r.add_argument("--time-sweep", action="store_true",
                   help="dynamic folder: the camera stays at the path's first camera while time runs 0 -> 1")
    r.add_argument("--bullet-time", type=types.finite_float, default=None, metavar="T",
                   help="dynamic folder: time stays at T in [0, 1] while the camera moves")
    r.add_argument("--background", choices=sorted(BACKGROUNDS), default="white")
    r.add_argument("--fps", type=types.float_in(*FPS_RANGE, "fps (frames per second)"), default=24.0)
    r.add_argument("--device", type=types.device, default=None,
                   help="torch device (default: cuda if available, else cpu)")
    _add_camera_args(r)
    r.set_defaults(func=_cmd_render)

    d = sub.add_parser("demo-scene", help="write a small procedural Gaussian scene (snowman, tree, ring, ground)")
    d.add_argument("--out", required=True, help="output PLY")
    d.add_argument("--n", type=types.positive_int, default=20000, help="number of Gaussians (default 20000)")
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(func=_cmd_demo_scene)

    c = sub.add_parser("camera-path", help="export a trajectory as camera path JSON")
    c.add_argument("--out", required=True, help="output JSON")
    c.add_argument("--ply", default=None, help="frame this scene (else use --center and --distance)")
    c.add_argument("--center", type=types.finite_float, nargs=3, default=(0.0, 0.0, 0.0), metavar=("X", "Y", "Z"))
    c.add_argument("--distance", type=types.positive_float, default=3.0, help="camera distance from --center (default 3)")
    _add_camera_args(c)
    c.set_defaults(func=_cmd_camera_path)

    v = sub.add_parser("convert", help="convert a scene between .ply, .splat, .spz and USD (.usda/.usdc/.usdz) "
                                       "(docs/viewer.md)")
    v.add_argument("input", help="scene file: .ply, .splat, .spz, .usda/.usdc/.usdz; or a dynamic scene folder "
                                 "(index.json + one file per time) to write as USD time samples")
    v.add_argument("output", help="output file, its suffix picks the format; a path without suffix writes a "
                                  "dynamic USD as a scene folder")
    v.set_defaults(func=_cmd_convert)

    w = sub.add_parser("view", help="serve a scene file or dynamic scene folder in a web viewer (viser)")
    w.add_argument("scene", help=".ply/.splat/.spz file, or a folder with index.json (docs/viewer.md)")
    w.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only; another needs --allow-remote)")
    w.add_argument("--allow-remote", action="store_true",
                   help="allow --host other than loopback: anyone on that network can see the scene and save paths")
    w.add_argument("--port", type=types.port, default=8080, help="TCP port, 1..65535 (default 8080)")
    w.add_argument("--save-dir", default=None,
                   help="the only folder 'Save path' writes to (default: the scene's folder)")
    w.add_argument("--path-out", default="camera_path.json",
                   help="file name (inside --save-dir) 'Save path' writes the keyframes to")
    w.add_argument("--path-size", type=_size, default=None,
                   help="image size of the saved path, N or WxH (default: the browser's view size)")
    w.set_defaults(func=_cmd_view)

    add_cache_parser(sub)
    add_generate_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``lyra`` command; an expected failure prints one line and exits 2 (``--debug``: traceback)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "render" and not str(args.out).lower().endswith(".mp4"):
        parser.error(f"--out must name an .mp4 file, got {args.out!r}")
    if getattr(args, "sheet", None) and not str(args.sheet).lower().endswith(".png"):
        parser.error(f"--sheet must name a .png file, got {args.sheet!r}")
    saved = {env_name(name): os.environ.get(env_name(name)) for name in LIMITS}  # --limit holds for this run only

    def run() -> None:
        set_limits(args.limit)
        for option in ("out", "sheet") if args.command == "render" else ():  # before minutes of rendering
            if getattr(args, option, None) and Path(getattr(args, option)).is_dir():
                raise LyraUsageError(f"--{option} {getattr(args, option)} is a folder; pass a file name to write")
        args.func(args)

    try:
        code = run_reporting_errors(run, f"lyra {args.command}", args.debug)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    if code:
        sys.exit(code)
    return 0


if __name__ == "__main__":
    sys.exit(main())
