"""``MemoryLog``: resident memory of a run over time, one JSON line every few batches.

For soak runs (tests/scripts/soak.py): memory that grows with the number of clips or steps shows up
as a rising ``rss_mb`` between the first and the last line. Each line holds the main process's
resident set (``rss_mb``), its peak so far (``peak_mb``, the kernel's high-water mark), and the
summed resident sets of its child processes (``children_mb``: DataLoader workers). Linux only
(``/proc``); elsewhere the numbers are null.

    trainer:
      callbacks:
        - class_path: lyra.callbacks.memory_log.MemoryLog
          init_args: {path: outputs/static/memory.jsonl, every: 10}
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import lightning as L


def _status_kb(pid: int, key: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            out += [int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
    except OSError:
        pass
    return out


def memory_mb(pid: int | None = None) -> dict[str, float | None]:
    """{rss_mb, peak_mb, children_mb} of a process (default: this one)."""
    pid = os.getpid() if pid is None else pid
    rss, peak = _status_kb(pid, "VmRSS"), _status_kb(pid, "VmHWM")
    kids = [_status_kb(c, "VmRSS") for c in _children(pid)]
    mb = lambda kb: None if kb is None else round(kb / 1024, 1)  # noqa: E731
    return {"rss_mb": mb(rss), "peak_mb": mb(peak), "children_mb": mb(sum(k for k in kids if k is not None)),
            "children": len(kids)}


class MemoryLog(L.Callback):
    """Args:
        path: the JSONL file (appended; rank r > 0 writes ``<stem>.rank<r><suffix>``).
        every: batches between lines (the first and last batch are always logged).
    """

    def __init__(self, path: str, every: int = 10) -> None:
        super().__init__()
        if every < 1:
            raise ValueError(f"every must be a positive int, got {every}")
        self.path, self.every = str(path), every
        self._count = 0

    def _write(self, trainer: L.Trainer, stage: str, **extra: Any) -> None:
        p = Path(self.path)
        if trainer.global_rank:
            p = p.with_name(f"{p.stem}.rank{trainer.global_rank}{p.suffix}")
        p.parent.mkdir(parents=True, exist_ok=True)
        with open(p, "a", encoding="utf-8") as f:
            f.write(json.dumps({"stage": stage, "batches": self._count, **extra, **memory_mb()}) + "\n")

    def _batch(self, trainer: L.Trainer, stage: str, **extra: Any) -> None:
        self._count += 1
        if self._count == 1 or self._count % self.every == 0:
            self._write(trainer, stage, **extra)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._batch(trainer, "fit", step=trainer.global_step)

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._batch(trainer, "predict")

    def on_train_end(self, trainer, pl_module) -> None:
        self._write(trainer, "fit", step=trainer.global_step, final=True)

    def on_predict_end(self, trainer, pl_module) -> None:
        self._write(trainer, "predict", final=True)
