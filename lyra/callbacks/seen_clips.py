"""``SeenClips``: which samples every training step trained on, one JSON line per step.

A data-lineage log: for each step, the clip index of every sample and a digest of its target
cameras (so also which trajectories and frames were drawn). Compare two runs' logs to check that
a resumed run saw exactly the data an uninterrupted one did; a step that is redone after a crash
appears twice, and the later line is the one that counted.

    trainer:
      callbacks:
        - class_path: lyra.callbacks.seen_clips.SeenClips
          init_args: {path: outputs/static/seen.jsonl}

Lines are appended and flushed per step (a killed run keeps every line it wrote); each rank writes
its own file (``seen.rank1.jsonl`` ... beside ``path``) as ranks see different clips.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import lightning as L


class SeenClips(L.Callback):
    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = str(path)
        self._file = None

    def _target(self, rank: int) -> Path:
        p = Path(self.path)
        return p if rank == 0 else p.with_name(f"{p.stem}.rank{rank}{p.suffix}")

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        target = self._target(trainer.global_rank)
        target.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(target, "a", encoding="utf-8")  # noqa: SIM115  (closed in teardown)

    @staticmethod
    def describe(batch: Any) -> list[list]:
        """[clip index, number of source views, digest of the target cameras] per sample."""
        out = []
        for b, meta in enumerate(batch.meta or [{}] * batch.batch_size):
            digest = hashlib.sha1(batch.c2w[b].detach().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]
            out.append([meta.get("index"), int(batch.latents.shape[1]), digest])
        return out

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        if self._file is None:
            return
        rec = {"step": trainer.global_step, "epoch": trainer.current_epoch, "samples": self.describe(batch)}
        self._file.write(json.dumps(rec) + "\n")
        self._file.flush()

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
