"""Soak run: N clips through `lightning predict` into a cache, then `lightning fit` over all of them
from the cache with 2 DataLoader workers (tiny sizes); memory is logged every 10 batches
(lyra.callbacks.memory_log.MemoryLog) and every clip a step trained on (SeenClips). Used by
tests/test_cache_remote.py; numbers in docs/benchmarks.md ("Soak").

    python tests/scripts/soak.py OUT_DIR [NUM_CLIPS]

Prints one JSON line (also written to OUT_DIR/soak.json): per stage the resident memory of the
main process (and its workers) after the first 10 batches and at the end, its peak, wall time.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"
SIZE = ["--clip.num_frames", "5", "--clip.height", "32", "--clip.width", "32"]
TINY_BODY = ["--model.init_args.decoder.init_args.body.width", "32",
             "--model.init_args.decoder.init_args.body.num_layers", "2",
             "--model.init_args.decoder.init_args.body.pattern", "MA"]


def run(cmd: list[str], cwd: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    start = time.monotonic()
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-3000:] + done.stderr[-6000:])
        raise SystemExit(f"failed: {' '.join(cmd)}")
    return time.monotonic() - start


def overlay(path: Path, callbacks: list[dict]) -> Path:
    path.write_text(yaml.safe_dump({"trainer": {"callbacks": callbacks}}))
    return path


def summary(log: Path, warmup: int = 10) -> dict:
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    start = next(x for x in lines if x["batches"] >= warmup)
    end = lines[-1]
    total = lambda x: round(x["rss_mb"] + (x["children_mb"] or 0), 1)  # noqa: E731
    return {"batches": end["batches"], "start_batch": start["batches"],
            "rss_start_mb": start["rss_mb"], "rss_end_mb": end["rss_mb"],
            "peak_start_mb": start["peak_mb"], "peak_end_mb": end["peak_mb"],
            "with_workers_start_mb": total(start), "with_workers_end_mb": total(end),
            "workers_max": max(x["children"] for x in lines)}


def main() -> None:
    out = Path(sys.argv[1]).resolve()
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    out.mkdir(parents=True, exist_ok=True)
    cache = out / "clips"
    gen = overlay(out / "soak-generate.yaml", [
        {"class_path": "lyra.callbacks.ClipWriter", "init_args": {"output_dir": str(cache), "clips_per_shard": 8}},
        {"class_path": "lyra.callbacks.memory_log.MemoryLog", "init_args": {"path": str(out / "predict.jsonl")}}])
    t_predict = run([sys.executable, "-m", "lyra.cli", "predict", "--config", str(CONFIGS / "generate.yaml"),
                     "--config", str(gen), *SIZE, "--model.init_args.generator.init_args.num_views", "2",
                     "--data.init_args.num_clips", str(n), "--trainer.enable_progress_bar", "false"], out)
    fit_cb = overlay(out / "soak-fit.yaml", [
        {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
         "init_args": {"save_last": True, "every_n_train_steps": 50}},
        {"class_path": "lyra.callbacks.seen_clips.SeenClips", "init_args": {"path": str(out / "seen.jsonl")}},
        {"class_path": "lyra.callbacks.memory_log.MemoryLog", "init_args": {"path": str(out / "fit.jsonl")}}])
    t_fit = run([sys.executable, "-m", "lyra.cli", "fit", "--config", str(CONFIGS / "static.yaml"),
                 "--config", str(CONFIGS / "stages/cpu_tiny.yaml"), "--config", str(fit_cb), *SIZE, *TINY_BODY,
                 "--data.init_args.source", "shards", "--data.init_args.shard_dir", str(cache),
                 "--data.init_args.teacher", "null", "--data.init_args.num_views", "2",
                 "--data.init_args.num_train_clips", "null", "--data.init_args.num_val_clips", "0",
                 "--data.init_args.num_test_clips", "0", "--data.init_args.num_workers", "2",
                 "--data.init_args.train_clip_reuse", "1", "--model.init_args.skip_init_clips", "0",
                 "--trainer.max_time", "null", "--trainer.max_steps", str(n), "--trainer.limit_val_batches", "0",
                 "--test_after_fit", "false",
                 "--trainer.default_root_dir", str(out / "run"), "--trainer.enable_progress_bar", "false"], out)
    seen = [json.loads(x) for x in (out / "seen.jsonl").read_text().splitlines()]
    result = {"clips": n, "predict": {**summary(out / "predict.jsonl"), "wall_s": round(t_predict, 1)},
              "fit": {**summary(out / "fit.jsonl"), "wall_s": round(t_fit, 1), "steps": len(seen),
                      "distinct_clips": len({s[0] for r in seen for s in r["samples"]})},
              "machine": f"{os.cpu_count()} cores, {os.uname().machine}", "date": time.strftime("%Y-%m-%d")}
    line = json.dumps(result)
    (out / "soak.json").write_text(line + "\n")
    print(line)


if __name__ == "__main__":
    main()
