"""Resuming a run: the training stream continues where the checkpoint left it (same clips, same
order, also with DataLoader workers and clip reuse), `--ckpt_path last` finds the run's checkpoint
(or says clearly that there is none), and a killed `lightning fit` resumed with `--ckpt_path last`
ends with the weights of an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import CONFIGS, ROOT

from lyra.cli import LyraCLI, main
from lyra.data.codecs import DCTCodec
from lyra.data.datamodule import ClipDataModule
from lyra.data.generators import ClipGenerator, GeneratedClip
from lyra.models.teacher import TeacherModule

V, T = 3, 5


class Tagged(ClipGenerator):
    """Cheap clips whose cameras say what they are: c2w translation = (view, frame, index)."""

    def generate(self, index: int, num_frames: int, height: int, width: int) -> GeneratedClip:
        g = torch.Generator().manual_seed(index)
        c2w = torch.eye(4).repeat(V, num_frames, 1, 1)
        c2w[..., 0, 3] = torch.arange(V, dtype=torch.float32)[:, None]
        c2w[..., 1, 3] = torch.arange(num_frames, dtype=torch.float32)
        c2w[..., 2, 3] = float(index)
        K = torch.tensor([[8.0, 0, 4], [0, 8.0, 4], [0, 0, 1]]).expand(V, num_frames, 3, 3).clone()
        rgb = torch.rand(V, num_frames, height, width, 3, generator=g)
        return GeneratedClip(c2w=c2w, K=K, time=torch.zeros(V, num_frames), rgb=rgb, caption=str(index))


def data(**kwargs) -> ClipDataModule:
    teacher = TeacherModule(Tagged(), DCTCodec(latent_channels=24), num_frames=T, height=8, width=8)
    args = dict(teacher=teacher, num_views=(1, V), target_frames=2, batch_size=1, num_train_clips=11,
                num_val_clips=0, num_test_clips=1)
    return ClipDataModule(**{**args, **kwargs})


def samples(batches) -> list[tuple]:
    """What each batch trains on: its clips and the exact views and frames drawn from them."""
    return [(tuple(int(c) for c in b.captions), tuple(b.c2w[..., :3, 3].reshape(-1).tolist())) for b in batches]


# num_workers 2 with 11 clips: the workers hold 6 and 5 clips, so one runs out first; reuse 2 loads
# windows of 2 clips and uses each twice, interleaved.
CASES = [dict(num_workers=0), dict(num_workers=2), dict(num_workers=2, batch_size=2, train_clip_reuse=2),
         dict(num_workers=2, train_clip_reuse=3), dict(num_workers=0, batch_size=2, train_clip_reuse=2)]


@pytest.mark.parametrize("settings", CASES, ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items()))
def test_train_stream_resumes_mid_epoch_with_the_same_samples_in_the_same_order(settings):
    full = samples(data(**settings).train_dataloader())
    assert len(full) == len(data(**settings).train_dataloader()) >= 5
    for stop in (1, 2, len(full) // 2 + 1, len(full) - 1, len(full)):
        loader = data(**settings).train_dataloader()
        it = iter(loader)
        head = samples(next(it) for _ in range(stop))
        state = loader.state_dict()  # what Lightning stores in the checkpoint (loops.fit_loop.combined_loader)
        del it
        json.dumps(state)  # plain data: checkpoints load with weights_only
        fresh = data(**settings).train_dataloader()
        fresh.load_state_dict(state)
        assert head + samples(fresh) == full, f"resumed after {stop} batches"
        assert samples(fresh) != [] or stop == len(full)
        # The next epoch starts from its beginning again.
        assert sorted(i for s in samples(fresh) for i in s[0]) == sorted(i for s in full for i in s[0])


def test_state_counts_batches_consumed_not_batches_prefetched_by_workers():
    loader = data(num_workers=2).train_dataloader()
    it = iter(loader)
    next(it)
    time.sleep(1.0)  # workers prefetch several batches meanwhile
    assert loader.state_dict()["batches"] == 1


@pytest.mark.parametrize("change,name", [(dict(num_workers=0), "num_workers"), (dict(batch_size=2), "batch_size"),
                                         (dict(train_clip_reuse=2), "train_clip_reuse"),
                                         (dict(num_train_clips=9), "num_train_clips"), (dict(seed=3), "seed")])
def test_resuming_with_another_data_layout_is_refused_naming_the_setting(change, name):
    loader = data(num_workers=2).train_dataloader()
    it = iter(loader)
    next(it), next(it)
    state = loader.state_dict()
    del it
    other = data(**{"num_workers": 2, **change}).train_dataloader()
    other.load_state_dict(state)
    with pytest.raises(ValueError, match=rf"{name}.*checkpoint"):
        iter(other)


# ---- the CLI: one folder per run, `--ckpt_path last` ----------------------------------------------

TINY = ["--model.init_args.decoder.init_args.body.width", "32", "--model.init_args.decoder.init_args.body.num_layers",
        "2", "--model.init_args.decoder.init_args.body.pattern", "MA"]


def cli_args(out: Path, *extra: str) -> list[str]:
    return ["--config", str(CONFIGS / "static.yaml"), "--config", str(CONFIGS / "stages/cpu_tiny.yaml"), *TINY,
            "--trainer.default_root_dir", str(out), "--trainer.max_time", "null", "--test_after_fit", "false",
            "--trainer.enable_progress_bar", "false", *extra]


def test_resume_with_nothing_to_resume_is_an_error_naming_the_folder(in_tmp):
    with pytest.raises(FileNotFoundError, match=r"--ckpt_path last.*no last checkpoint.*run1.*tb.*version_0"):
        LyraCLI(args=["fit", *cli_args(in_tmp / "run1"), "--trainer.max_steps", "1", "--ckpt_path", "last"])
    assert not list((in_tmp / "run1").rglob("*.ckpt")), "nothing may train from step 0 instead"


def test_checkpoints_of_a_run_go_to_one_folder_that_ckpt_path_last_finds(in_tmp):
    """Two invocations in one run folder: the second (--ckpt_path last) finds the first's last.ckpt
    (the shipped configs log to a fixed version: no new version_N folder per invocation)."""
    out = in_tmp / "run"
    common = cli_args(out, "--trainer.limit_val_batches", "0", "--data.init_args.num_workers", "0")
    main(["fit", *common, "--trainer.max_steps", "1"])
    ckpts = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.ckpt"))
    assert "tb/version_0/checkpoints/last.ckpt" in ckpts
    first = torch.load(out / "tb/version_0/checkpoints/last.ckpt", weights_only=True)
    # The first invocation ended its epoch (max_steps): the resumed one continues with the next epoch.
    main(["fit", *common, "--trainer.max_steps", "2", "--trainer.max_epochs", "2", "--ckpt_path", "last"])
    state = torch.load(out / "tb/version_0/checkpoints/last.ckpt", weights_only=True)
    # Step 1 was restored, not redone: a fresh 2-step run would end in the first run's epoch.
    assert (state["global_step"], state["epoch"]) == (2, first["epoch"] + 1)
    assert not (out / "tb" / "version_1").exists()
    # A new run into a folder that holds another run's checkpoints would overwrite them: refused.
    with pytest.raises(FileExistsError, match=r"last.ckpt.*--ckpt_path last.*--trainer.default_root_dir"):
        main(["fit", *common, "--trainer.max_steps", "1"])


# ---- kill -9 and resume: same weights, same clips -----------------------------------------------------

STEPS, KILL_AFTER = 6, 3


def _fit_cmd(tmp: Path, out: Path, *extra: str) -> list[str]:
    overlay = tmp / f"resume-{out.name}.yaml"
    overlay.write_text(yaml.safe_dump({"trainer": {"callbacks": [
        {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
         "init_args": {"save_last": True, "every_n_train_steps": 1}},
        {"class_path": "lyra.callbacks.seen_clips.SeenClips", "init_args": {"path": str(out / "seen.jsonl")}}]}}))
    return [sys.executable, "-m", "lyra.cli", "fit", *cli_args(out), "--config", str(overlay),
            "--trainer.max_steps", str(STEPS), "--trainer.limit_val_batches", "0",
            "--data.init_args.num_workers", "2", "--data.init_args.train_clip_reuse", "2",
            "--data.init_args.num_views", "[1, 3]", *extra]


def _seen(out: Path) -> dict[int, list]:
    seen: dict[int, list] = {}
    for line in (out / "seen.jsonl").read_text().splitlines():
        rec = json.loads(line)
        seen[rec["step"]] = rec["samples"]  # a step redone after the kill replaces the lost one
    return seen


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return {k: v for k, v in torch.load(path, weights_only=True)["state_dict"].items() if k.startswith("decoder.")}


@pytest.mark.slow
def test_fit_killed_with_sigkill_resumes_to_the_weights_and_clips_of_an_uninterrupted_run(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    full = tmp_path / "full"
    done = subprocess.run(_fit_cmd(tmp_path, full), cwd=tmp_path, env=env, capture_output=True, timeout=600)
    assert done.returncode == 0, done.stderr.decode()[-4000:]

    run = tmp_path / "killed"
    proc = subprocess.Popen(_fit_cmd(tmp_path, run), cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 300
    while not ((run / "seen.jsonl").is_file() and KILL_AFTER in _seen(run)):
        assert proc.poll() is None, proc.stderr.read().decode()[-4000:]
        assert time.monotonic() < deadline, f"step {KILL_AFTER} not reached in 300 s"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the trainer and its DataLoader workers, mid-run
    proc.wait()
    killed_at = torch.load(run / "tb/version_0/checkpoints/last.ckpt", weights_only=True)["global_step"]
    assert KILL_AFTER <= killed_at < STEPS, "the kill must land mid-run for this test to mean anything"

    resumed = subprocess.run(_fit_cmd(tmp_path, run, "--ckpt_path", "last"), cwd=tmp_path, env=env,
                             capture_output=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr.decode()[-4000:]
    assert b"Restoring states from the checkpoint" in resumed.stdout + resumed.stderr

    a, b = _weights(full / "tb/version_0/checkpoints/last.ckpt"), _weights(run / "tb/version_0/checkpoints/last.ckpt")
    assert a.keys() == b.keys() and len(a) > 10
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=1e-6, rtol=0, msg=k)
    assert _seen(run) == _seen(full) and sorted(_seen(full)) == list(range(STEPS))
