"""Held-out quality of the student against training time, beside the baselines: a learning curve.

    python benchmarks/quality.py                                   # configs/static.yaml: its 360 steps, <= 30 min
    python benchmarks/quality.py --minutes 60 --max-steps 1500 --heldout spiral zoom_out up  # a longer schedule
    python benchmarks/quality.py --config configs/static.yaml -- --model.init_args.lr 1e-3
    python benchmarks/quality.py --smoke                           # seconds; only checks that it runs

It trains exactly what ``lightning fit --config <config>`` trains (the same ``StudentModule``,
``ClipDataModule`` and ``Trainer``; arguments after ``--`` go to the CLI unchanged) and scores it
with the evaluation protocol of ``lightning test`` (``lyra.eval``, docs/evaluation.md) every
``--every`` minutes of training time, on ``--test-scenes`` test scenes, once per held-out
trajectory: the student against ground truth on the held-out trajectory (frames 4, 8, 12, 16 of
17), its source-view score, and the baselines (nearest source frame, codec ceiling, the input
image warped by its depth, and with ``--per-scene`` per-scene optimisation). Writes ``curve.json`` and ``curve.png`` to ``--out-dir``,
prints the final table, then one JSON line.
"""

from __future__ import annotations

# ruff: noqa: E402  (the environment must be set before torch loads OpenMP)
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # spin-waiting threads slow a shared machine down

import argparse
import json
from pathlib import Path

import torch
from _common import machine_line, peak_rss_gb

from lyra.callbacks.learning_curve import LearningCurve
from lyra.cli import LyraCLI
from lyra.eval.report import EvalConfig
from lyra.eval.summary import format_table
from lyra.utils.atomic import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", action="append", default=None,
                    help="student config(s), merged in order (default configs/static.yaml)")
    ap.add_argument("--minutes", type=float, default=30.0, help="training budget, minutes of training time")
    ap.add_argument("--max-steps", type=int, default=None,
                    help="also stop after this many steps (default: the config's trainer.max_steps, where its "
                         "cosine schedule ends; -1: only --minutes, needs lr_schedule constant)")
    ap.add_argument("--every", type=float, default=5.0, help="minutes of training between evaluations")
    ap.add_argument("--heldout", nargs="+", default=["spiral", "up"], help="held-out trajectories")
    ap.add_argument("--test-scenes", type=int, default=4)
    ap.add_argument("--per-scene", action="store_true", help="also fit every test scene (slow upper bound)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out-dir", default="outputs/bench/quality")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, 2 steps (seconds): checks that it runs")
    ap.add_argument("--oracle-depth", nargs=2, type=float, default=None, metavar=("BIAS", "NOISE"),
                    help="diagnostic, not a method: Gaussians at the clip's true depth times exp(error), the "
                         "error's std BIAS per source frame plus NOISE per Gaussian (0 0: exact depth); "
                         "benchmarks/_oracle_depth.py")
    argv = list(argv if argv is not None else os.sys.argv[1:])
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1:]
    args = ap.parse_args(argv)
    args.config = args.config or [str(ROOT / "configs" / "static.yaml")]
    if args.smoke:
        args.config = args.config + [str(ROOT / "configs" / "stages" / "cpu_tiny.yaml")]
        args.max_steps, args.every, args.test_scenes, args.heldout = 2, 0.0, 1, ["up"]
        extra = ["--model.init_args.decoder.init_args.body.width", "32",
                 "--model.init_args.decoder.init_args.body.num_layers", "2",
                 "--model.init_args.decoder.init_args.body.pattern", "MA", *extra]
    return args, extra


def build(args: argparse.Namespace, extra: list[str]) -> LyraCLI:
    out = Path(args.out_dir)
    cli_args = [a for c in args.config for a in ("--config", c)]
    cli_args += ["--trainer.max_time", "null", "--trainer.max_epochs", "-1", "--trainer.limit_val_batches", "0",
                 "--trainer.default_root_dir", str(out), "--trainer.enable_progress_bar", "false",
                 "--data.init_args.num_test_clips", str(args.test_scenes),
                 "--data.init_args.num_train_clips", "1000000",
                 "--data.init_args.test_heldout", json.dumps(args.heldout), "--test_after_fit", "false"]
    if args.max_steps is not None:
        cli_args += ["--trainer.max_steps", str(args.max_steps)]
    return LyraCLI(run=False, args=cli_args + extra)


def main(argv: list[str] | None = None) -> dict:
    args, extra = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.oracle_depth is not None:
        import _oracle_depth

        _oracle_depth.install(*args.oracle_depth)
    print(machine_line(args.threads), flush=True)
    cli = build(args, extra)
    model, trainer = cli.model, cli.trainer
    baselines = ["nearest", "codec", "input_warp", "input_warp_exact"] + (["per_scene"] if args.per_scene else [])
    evaluation = EvalConfig(lpips_net=model.eval_config.lpips_net, baselines=baselines,
                            scene_fit=model.eval_config.scene_fit)
    curve = LearningCurve(args.out_dir, every_minutes=args.every, budget_minutes=args.minutes, evaluation=evaluation)
    trainer.callbacks.append(curve)
    n_params = sum(p.numel() for p in model.decoder.parameters())
    print(f"# configs {args.config} {' '.join(extra)}\n# decoder {type(model.decoder).__name__}, "
          f"{n_params / 1e6:.2f} M parameters; budget {args.minutes} min of training", flush=True)
    trainer.fit(model, datamodule=cli.datamodule)
    final = curve.points[-1]
    print("\n" + format_table(final))
    steps = final["step"]
    out = {"benchmark": "quality", "configs": args.config, "extra": extra, "oracle_depth": args.oracle_depth,
           "steps": steps,
           "train_minutes": final["minutes"], "s_per_step": 60 * final["minutes"] / max(steps, 1),
           "final": final, "curve": curve.points, "peak_rss_gb": peak_rss_gb(), "threads": args.threads,
           "load_average": os.getloadavg()[0]}
    line = json.dumps(out)
    atomic_write_text(Path(args.out_dir) / "result.json", line + "\n")
    print(line)
    return out


if __name__ == "__main__":
    main()
