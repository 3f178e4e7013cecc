"""`lightning fit` against mistaken or hostile settings (issue 22, groups 5 and 8).

Checked: a second fit on a run folder that another process is using is refused at once, naming the
folder and that process, and writes nothing there; the lock goes when its holder exits (even killed)
and when a fit ends; learning rates, batch sizes and worker counts that training cannot use are
refused before anything is built, in one line naming the option; the file-size limit during a
checkpoint save is one line naming the run folder. The two end-to-end runs in subprocesses are slow.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import CONFIGS, ROOT

from lyra.cli import console_main, main
from lyra.utils.run_lock import LOCK_FILE, FolderLock

TINY = ["--model.init_args.decoder.init_args.body.width", "32", "--model.init_args.decoder.init_args.body.num_layers",
        "2", "--model.init_args.decoder.init_args.body.pattern", "MA"]
HOLD = ("import sys, time\nfrom lyra.utils.run_lock import FolderLock\n"
        "FolderLock(sys.argv[1], '`lightning fit`').acquire()\nprint('held', flush=True)\ntime.sleep(120)\n")


def cli_args(out: Path, *extra: str) -> list[str]:
    return ["--config", str(CONFIGS / "static.yaml"), "--config", str(CONFIGS / "stages/cpu_tiny.yaml"), *TINY,
            "--trainer.default_root_dir", str(out), "--trainer.max_time", "null", "--test_after_fit", "false",
            "--trainer.enable_progress_bar", "false", "--trainer.limit_val_batches", "0",
            "--data.init_args.num_workers", "0", *extra]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def one_error_line(capsys) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("lightning: error: ")]
    assert len(lines) == 1
    return lines[0]


def test_a_fit_on_a_folder_another_process_uses_is_refused(in_tmp, capsys):
    run = in_tmp / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], env=env(), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(SystemExit) as exc:
            console_main(["fit", *cli_args(run), "--trainer.max_steps", "1"])
        assert exc.value.code == 2
        line = one_error_line(capsys)
        assert f"{run} is in use by another `lightning fit` (pid {holder.pid}" in line and "default_root_dir" in line
        assert sorted(p.name for p in run.iterdir()) == [LOCK_FILE]  # no logs, config or checkpoint of ours
    finally:
        holder.kill()
        holder.wait()
    # The holder is gone (killed: no chance to clean up): the folder is free again, and free after our fit.
    main(["fit", *cli_args(run), "--trainer.max_steps", "1"])
    assert (run / "tb" / "version_0" / "checkpoints" / "last.ckpt").is_file()
    with FolderLock(run):
        pass


@pytest.mark.parametrize("option, value, must", [
    ("--model.init_args.lr", "-1", "a finite learning rate > 0"), ("--model.init_args.lr", "0", "> 0"),
    ("--data.init_args.batch_size", "0", "a whole number >= 1"), ("--data.init_args.num_workers", "-1", ">= 0"),
    ("--model.init_args.warmup_steps", "-5", ">= 0"),
])
def test_values_training_cannot_use_are_one_line_before_anything_is_built(in_tmp, capsys, option, value, must):
    with pytest.raises(SystemExit) as exc:
        console_main(["fit", *cli_args(in_tmp / "run"), f"{option}={value}", "--trainer.max_steps", "1"])
    assert exc.value.code == 2
    line = one_error_line(capsys)
    assert option in line and must in line and "Namespace(" not in line
    assert not (in_tmp / "run" / "tb").exists()


def test_an_error_inside_instantiation_is_reduced_to_its_reason(in_tmp, capsys):
    with pytest.raises(SystemExit) as exc:  # ClipDataModule refuses it; jsonargparse wraps that in the whole config
        console_main(["fit", *cli_args(in_tmp / "run"), "--data.init_args.target_frames=0", "--trainer.max_steps", "1"])
    assert exc.value.code == 2
    line = one_error_line(capsys)
    assert "target_frames" in line and "Union subtypes" not in line and "Namespace(" not in line


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


@pytest.mark.parametrize("subcommand", ["fit", "test"])
def test_a_pickle_given_as_ckpt_path_is_named_and_never_run(in_tmp, capsys, subcommand):
    torch.save({"state_dict": {}, "payload": _RunsCode()}, in_tmp / "evil.ckpt")
    with pytest.raises(SystemExit) as exc:
        console_main([subcommand, *cli_args(in_tmp / "run"), "--ckpt_path", str(in_tmp / "evil.ckpt")])
    assert exc.value.code == 2
    line = one_error_line(capsys)
    assert "evil.ckpt is not a lyra / Lightning checkpoint" in line and "pickled Python objects" in line
    assert not (in_tmp / "pwned").exists() and not (in_tmp / "run" / "tb").exists()


@pytest.mark.slow  # two trainings in subprocesses
def test_two_fits_started_on_one_folder_the_second_is_refused(tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "lyra.cli", "fit", *cli_args(run)]
    first = subprocess.Popen([*cmd, "--trainer.max_steps", "40"], cwd=tmp_path, env=env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not (run / LOCK_FILE).is_file() or f'"pid": {first.pid}' not in (run / LOCK_FILE).read_text():
            assert first.poll() is None and time.monotonic() < deadline, "the first fit never took its folder"
            time.sleep(0.1)
        second = subprocess.run([*cmd, "--trainer.max_steps", "1"], cwd=tmp_path, env=env(), capture_output=True,
                                text=True, timeout=600)
        assert first.poll() is None, "the first fit must still be running for this test to mean anything"
        assert second.returncode == 2 and f"in use by another `lightning fit` (pid {first.pid}" in second.stderr
        assert first.wait(timeout=900) == 0, first.stderr.read()[-3000:]
    finally:
        first.kill()
    assert (run / "tb" / "version_0" / "config.yaml").is_file()


@pytest.mark.slow  # a training in a subprocess (the file-size limit must not hit pytest itself)
def test_the_file_size_limit_during_a_checkpoint_save_is_one_line(tmp_path):
    code = ("import resource, sys\nsoft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)\n"
            "resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, hard))\n"
            "from lyra.cli import console_main\nconsole_main(sys.argv[1:])\n")
    run = tmp_path / "run"
    done = subprocess.run([sys.executable, "-c", code, "fit", *cli_args(run), "--trainer.max_steps", "1"], cwd=tmp_path,
                          env=env(), capture_output=True, text=True, timeout=900)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
    line = [x for x in done.stderr.splitlines() if x.startswith("lightning: error: ")]
    assert len(line) == 1 and f"in {run} failed: File too large" in line[0] and "ulimit -f" in line[0]


@pytest.mark.parametrize("option, value, reason", [
    ("--model.init_args.lr", "abc", "Expected a number. Got value: abc"),
    ("--trainer.max_steps", "1.5", "Expected a whole number. Got value: 1.5"),
    ("--data.init_args.batch_size", "x", "Expected a whole number. Got value: x"),
])
def test_values_the_parser_cannot_read_are_one_line_naming_the_option(in_tmp, capsys, option, value, reason):
    with pytest.raises(SystemExit) as exc:
        console_main(["fit", *cli_args(in_tmp / "run"), option, value])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"lightning: error: {option}: {reason} (lightning fit --help lists the options)" in err.splitlines()
    assert "usage:" not in err and "NestedArg" not in err  # not jsonargparse's usage dump and union tree
