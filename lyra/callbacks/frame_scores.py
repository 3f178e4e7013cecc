"""``FrameScores``: the evaluation protocol's truth frames one by one, for the student and every
baseline, so a run can be compared frame by frame with a published table.

``lightning test`` writes per-sample means (``scenes.json``, ``summary.json``; docs/evaluation.md)
and keeps every truth frame's PSNR / SSIM / LPIPS in each record (``per_frame``); this callback
writes them as rows, ``<log_dir>/test/frames.json`` and ``frames.csv``: one row per held-out truth
frame with its sample, held-out trajectory, frame index, the capture and image it shows when the
clip comes from a real capture (``lyra.data.captures.CaptureSource``), and each method's scores
against ground truth (the teacher's frames where a clip has none). Nothing is decoded or rendered
again: the rows are the report's own numbers.

    trainer:
      callbacks:
        - class_path: lyra.callbacks.FrameScores
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import lightning as L
import torch

from lyra.data.clip import ClipBatch
from lyra.utils.atomic import atomic_write_text


class FrameScores(L.Callback):
    """Per-frame scores of the student and its baselines on every truth frame (module doc).

    Args:
        filename: stem of the files written under ``<log_dir>/test/`` (``.json`` and ``.csv``).
    """

    def __init__(self, filename: str = "frames") -> None:
        super().__init__()
        self.filename = filename
        self.captures: dict[tuple[str, str], dict] = {}  # (scene, held-out name) -> the capture's meta

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.captures = {}

    def on_test_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: ClipBatch,
                          batch_idx: int, dataloader_idx: int = 0) -> None:
        for meta in batch.meta or []:
            held = meta.get("heldout") or []
            if meta.get("capture") and any(held):
                self.captures[(str(meta.get("index")), str(meta.get("heldout_name")))] = {
                    **meta["capture"], "heldout_view": held.index(True)}

    def rows(self, records: list[dict]) -> list[dict[str, Any]]:
        out = []
        for rec in records:
            per_frame = rec.get("per_frame")
            if not per_frame:
                continue
            capture = self.captures.get((rec["scene"], rec.get("heldout")), {})
            v = capture.get("heldout_view")
            methods = [m for m in per_frame if m not in ("frames", "against")]
            for i, f in enumerate(per_frame["frames"]):
                row: dict[str, Any] = {"scene": rec["scene"], "heldout": rec.get("heldout"), "frame": f,
                                       "against": per_frame["against"]}
                if capture and v is not None:
                    row.update(capture=capture["name"], capture_frame=capture["frames"][v][f],
                               image=capture["images"][v][f])
                for m in methods:
                    row.update({f"{m}_{k}": vals[i] for k, vals in per_frame[m].items()})
                out.append(row)
        return out

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        report = getattr(pl_module, "report", None)
        if report is None:
            raise ValueError("FrameScores writes the rows of the test report: the module must keep an EvalReport "
                             "as `report` (StudentModule does)")
        captures = self.captures
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            parts: list = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(parts, captures)
            captures = {k: v for part in parts for k, v in part.items()}
        self.captures = captures
        rows = self.rows(report.gather())
        if not trainer.is_global_zero or not rows:
            return
        out = Path(trainer.log_dir or trainer.default_root_dir) / "test"
        atomic_write_text(out / f"{self.filename}.json", json.dumps(rows, indent=1))
        columns = list(dict.fromkeys(k for r in rows for k in r))
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(out / f"{self.filename}.csv", text.getvalue())
