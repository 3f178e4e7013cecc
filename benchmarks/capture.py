"""Time and memory of reading a posed capture into a clip and of scoring a decoder on it with the
real-capture protocol (docs/evaluation.md, "Real captures"), on a synthetic capture in a temp dir.

    python benchmarks/capture.py              # a 100-frame COLMAP capture, clips of 6 x 17 frames at 256 px
    python benchmarks/capture.py --smoke      # 25 frames, 3 x 9 frames at 32 px (seconds)

The capture is a procedural world filmed along a spiral (``lyra.data.captures.synthetic``) at
``size x 1.5 size`` and written as a binary COLMAP model with its sparse points, in a child process
(not timed, and its ray tracer's memory stays out of the readings). Then, in this process:

1. read: ``CaptureSource`` reads and normalises the model, loads the 97 frames of the clip's window
   (centre crop, resize), projects the sparse depth, and ``TeacherModule`` encodes and decodes the
   frames with the DCT codec (one ``make_clip``);
2. score: ``lightning test --config configs/eval/capture.yaml`` at that size on the folder, with a
   freshly initialised decoder (the timing does not depend on the weights; the scores do, so they
   are not reported), baselines and per-frame scores included.

Peak memory is the process's peak resident set after each step (ru_maxrss: the second includes
the first). The last line printed is JSON.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from _common import machine_line, peak_rss_gb

from lyra.cli import main as lightning_main
from lyra.data.captures import CaptureSource, write_colmap
from lyra.data.captures.synthetic import film_procedural
from lyra.data.codecs import DCTCodec
from lyra.models import TeacherModule

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "eval" / "capture.yaml"


def film(frames: int, size: int, workdir: Path) -> None:
    filmed = film_procedural(workdir / "film", num_frames=frames, height=size, width=size * 3 // 2)
    write_colmap(workdir / "captures" / "scene", filmed.capture, binary=True)


def run(frames: int, size: int, views: int, clip_frames: int, workdir: Path) -> dict:
    subprocess.run([sys.executable, __file__, "--film", str(workdir), "--frames", str(frames), "--size", str(size)],
                   check=True)
    t0 = time.perf_counter()
    source = CaptureSource(str(workdir / "captures"), num_views=views, layout="split")
    clip = TeacherModule(source, DCTCodec(), num_frames=clip_frames, height=size, width=size).make_clip(0)
    read_s, read_peak = time.perf_counter() - t0, peak_rss_gb()
    t0 = time.perf_counter()
    lightning_main(["test", "--config", str(CONFIG), "--clip.num_frames", str(clip_frames), "--clip.height", str(size),
                    "--clip.width", str(size), "--data.init_args.root", str(workdir / "captures"),
                    "--data.init_args.teacher.init_args.generator.init_args.num_views", str(views),
                    "--data.init_args.num_views", str(views - 1), "--data.init_args.num_workers", "0",
                    "--trainer.default_root_dir", str(workdir / "run"), "--trainer.enable_progress_bar", "false"])
    score_s, score_peak = time.perf_counter() - t0, peak_rss_gb()
    test = next((workdir / "run").rglob("frames.json")).parent
    return {"capture_frames": frames, "clip": list(clip.rgb.shape[:4]), "points": int(len(source.capture(0).points)),
            "read_s": round(read_s, 2), "read_peak_rss_gb": round(read_peak, 2), "score_s": round(score_s, 2),
            "score_peak_rss_gb": round(score_peak, 2),
            "scored_frames": len(json.loads((test / "frames.json").read_text()))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=100, help="frames of the synthetic capture")
    p.add_argument("--size", type=int, default=256, help="clip height and width (frames are 1.5 x wider)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes: 25 frames, 3 x 9-frame clips at 32 px")
    p.add_argument("--film", default=None, help=argparse.SUPPRESS)  # the child process that writes the capture
    args = p.parse_args()
    frames, size, views, clip_frames = (25, 32, 3, 9) if args.smoke else (args.frames, args.size, 6, 17)
    if args.film:
        film(frames, size, Path(args.film))
        return
    print(machine_line(torch.get_num_threads()))
    with tempfile.TemporaryDirectory() as tmp:
        result = run(frames, size, views, clip_frames, Path(tmp))
    print(f"read {result['read_s']} s (peak RSS {result['read_peak_rss_gb']} GB), "
          f"score {result['score_s']} s (peak RSS {result['score_peak_rss_gb']} GB)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
