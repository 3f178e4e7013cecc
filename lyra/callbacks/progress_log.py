"""``ProgressLog``: plain progress lines when no terminal shows the progress bar.

Lightning's progress bar draws only on a terminal: ``lightning fit ... > fit.log`` (nohup, SLURM, CI)
shows nothing between the model summary and the end. When stderr is not a terminal this callback
prints one line every ``every_seconds`` (and at the first and last step) for fit, validate, test
and predict: the step or batch, the loss, the rate and the time left. On a terminal it stays quiet
and the bar draws as usual. ``lightning`` adds it to every run (lyra.cli).

``ScheduleCutWarning`` says loudly when ``trainer.max_time`` ended training before ``max_steps``: the
learning-rate schedule was cut short, so the weights are not those of the configured run.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

import lightning as L


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


class ProgressLog(L.Callback):
    """Args:
        every_seconds: seconds between two lines.
        stream: where to print (default ``sys.stderr``, where the bar would draw).
        always: print also on a terminal (beside the bar).
    """

    def __init__(self, every_seconds: float = 30.0, stream: TextIO | None = None, always: bool = False) -> None:
        if not every_seconds > 0:
            raise ValueError(f"every_seconds must be > 0, got {every_seconds}")
        self.every_seconds, self._stream, self.always = every_seconds, stream, always
        self._start = self._last = 0.0

    @property
    def stream(self) -> TextIO:
        return self._stream if self._stream is not None else sys.stderr

    def _active(self, trainer: L.Trainer) -> bool:
        if not trainer.is_global_zero:
            return False
        isatty = getattr(self.stream, "isatty", None)
        return self.always or not (callable(isatty) and isatty())

    def _begin(self, trainer: L.Trainer, stage: str) -> None:
        self._start = self._last = time.monotonic()
        if self._active(trainer):
            print(f"[{stage}] started", file=self.stream, flush=True)

    def _line(self, trainer: L.Trainer, stage: str, done: int, total: int | None, unit: str, extra: str = "",
              last: bool = False) -> None:
        now = time.monotonic()
        if not self._active(trainer) or (not last and done > 1 and now - self._last < self.every_seconds):
            return
        self._last = now
        elapsed = now - self._start
        rate = done / elapsed if elapsed > 0 else 0.0
        of = f"/{total} ({100 * done / total:.0f}%)" if total else ""
        left = f"  left ~{_duration((total - done) / rate)}" if total and rate > 0 and done < total else ""
        plural = "batches" if unit == "batch" else f"{unit}s"
        print(f"[{stage}] {unit} {done}{of}{extra}  {rate:.2f} {plural}/s  elapsed {_duration(elapsed)}{left}",
              file=self.stream, flush=True)

    @staticmethod
    def _total_batches(value: Any) -> int | None:
        values = value if isinstance(value, (list, tuple)) else [value]
        finite = [int(v) for v in values if isinstance(v, (int, float)) and v != float("inf")]
        return sum(finite) if finite else None

    # ---- fit ------------------------------------------------------------------------------------------------

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._begin(trainer, "fit")

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        total = trainer.max_steps if trainer.max_steps and trainer.max_steps > 0 else None
        loss = trainer.callback_metrics.get("train/loss")
        extra = f"  loss {float(loss):.4f}" if loss is not None else ""
        self._line(trainer, "fit", trainer.global_step, total, "step", extra, last=trainer.global_step == total)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._active(trainer):
            print(f"[fit] ended at step {trainer.global_step} after {_duration(time.monotonic() - self._start)}",
                  file=self.stream, flush=True)

    # ---- evaluation and prediction ----------------------------------------------------------------------------

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._begin(trainer, "test")

    def on_test_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                          batch_idx: int, dataloader_idx: int = 0) -> None:
        total = self._total_batches(trainer.num_test_batches)
        self._line(trainer, "test", batch_idx + 1, total, "batch", last=batch_idx + 1 == total)

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._begin(trainer, "predict")

    def on_predict_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                             batch_idx: int, dataloader_idx: int = 0) -> None:
        total = self._total_batches(trainer.num_predict_batches)
        self._line(trainer, "predict", batch_idx + 1, total, "batch", last=batch_idx + 1 == total)

    def on_validation_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        if trainer.state.fn == "validate":  # inside fit, the fit lines carry on
            total = self._total_batches(trainer.num_val_batches)
            self._line(trainer, "validate", batch_idx + 1, total, "batch", last=batch_idx + 1 == total)


class ScheduleCutWarning(L.Callback):
    """A loud line when ``max_time`` stopped training before ``max_steps`` (the schedule was cut)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        max_steps = trainer.max_steps if trainer.max_steps and trainer.max_steps > 0 else None
        timers = [cb for cb in trainer.callbacks if isinstance(cb, L.pytorch.callbacks.Timer)]
        timed_out = any(t.time_remaining() is not None and t.time_remaining() <= 0 for t in timers)
        if max_steps and trainer.global_step < max_steps and timed_out and trainer.is_global_zero:
            print(f"WARNING: trainer.max_time stopped training at step {trainer.global_step} of {max_steps}: the "
                  "learning-rate schedule was cut short, so these weights are not the configured run's. The machine "
                  "was slower or busier than the schedule assumes; raise trainer.max_time, or lower trainer.max_steps "
                  "to what it allows", file=self._stream if self._stream is not None else sys.stderr, flush=True)
