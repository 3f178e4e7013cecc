"""Progress lines when no terminal shows the bar (a run logging to a file), and the loud line when
max_time cuts the learning-rate schedule short."""

from __future__ import annotations

import io
import re

import lightning as L
from conftest import cli_args, synthetic_batch, tiny_student
from torch.utils.data import DataLoader

from lyra.callbacks import ProgressLog, ScheduleCutWarning
from lyra.cli import main


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def fit_and_test(callbacks, steps=3, **trainer_kw):
    module = tiny_student(lpips=False)
    batches = DataLoader([synthetic_batch(seed=i) for i in range(min(steps, 8))], batch_size=None)
    t = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_checkpointing=False,
                  max_steps=steps, callbacks=callbacks, **trainer_kw)
    t.fit(module, train_dataloaders=batches)
    return t


def test_lines_go_to_a_file_and_not_to_a_terminal():
    log, tty = io.StringIO(), Terminal()
    fit_and_test([ProgressLog(every_seconds=1e-6, stream=log), ProgressLog(every_seconds=1e-6, stream=tty)])
    lines = log.getvalue().splitlines()
    assert lines[0] == "[fit] started"
    steps = [line for line in lines if line.startswith("[fit] step")]
    assert len(steps) == 3 and re.match(r"\[fit\] step 3/3 \(100%\)  loss \d+\.\d{4}  \d+\.\d\d steps/s  elapsed", steps[-1])
    assert "left ~" in steps[0] and lines[-1].startswith("[fit] ended at step 3")
    assert tty.getvalue() == ""


def test_lines_are_spaced_in_time_with_the_first_and_last_always_printed():
    log = io.StringIO()
    fit_and_test([ProgressLog(every_seconds=3600, stream=log)], steps=4)
    steps = [line for line in log.getvalue().splitlines() if line.startswith("[fit] step")]
    assert [line.split()[2] for line in steps] == ["1/4", "4/4"]


def test_lightning_fit_logging_to_a_file_shows_progress(in_tmp, capsys):
    main(["fit", *cli_args(in_tmp / "run"), "--trainer.max_steps", "2"])
    err = capsys.readouterr().err
    assert "[fit] started" in err and re.search(r"\[fit\] step 2/2 \(100%\)  loss", err), err[-2000:]


def test_a_schedule_cut_by_max_time_is_announced():
    log = io.StringIO()
    t = fit_and_test([ScheduleCutWarning(stream=log)], steps=500, max_time={"seconds": 1})
    assert t.global_step < 500
    assert re.search(rf"max_time stopped training at step {t.global_step} of 500.*schedule was cut short", log.getvalue())
    log = io.StringIO()
    fit_and_test([ScheduleCutWarning(stream=log)], steps=2)
    assert log.getvalue() == ""
