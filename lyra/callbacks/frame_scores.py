"""``FrameScores``: the evaluation protocol's truth frames scored one by one, for the student and
the baselines, so a run can be compared frame by frame with a published table.

``lightning test`` writes the per-sample means (``scenes.json``, ``summary.json``; docs/evaluation.md);
this callback adds ``<log_dir>/test/frames.json`` and ``frames.csv``: one row per held-out truth
frame with its sample, held-out trajectory, frame index, the capture and image it shows when the
clip comes from a real capture (``lyra.data.captures.CaptureSource``), and PSNR / SSIM / LPIPS of
the student and of each baseline against ground truth (the teacher's frames where a clip has none).

It decodes each test batch once more and renders only the held-out truth frames (the report keeps
only means): about one extra decoder pass per sample.

    trainer:
      callbacks:
        - class_path: lyra.callbacks.FrameScores
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal, Sequence

import lightning as L
import torch
from torch import Tensor

from lyra.data.clip import ClipBatch
from lyra.eval.baselines import input_image_warp, nearest_frame
from lyra.metrics.image import ImageMetrics
from lyra.utils.atomic import atomic_write_text

PER_FRAME_BASELINES = ("nearest", "input_warp")


class FrameScores(L.Callback):
    """Per-frame PSNR / SSIM / LPIPS of the student and baselines on every truth frame (module doc).

    Args:
        baselines: which baselines to score per frame beside the student (``nearest``,
            ``input_warp``; ``input_warp`` only for clips with depth).
        lpips_net: LPIPS backbone (the protocol's is ``"vgg"``).
        filename: stem of the files written under ``<log_dir>/test/`` (``.json`` and ``.csv``).
    """

    def __init__(self, baselines: Sequence[str] = PER_FRAME_BASELINES, lpips_net: Literal["vgg", "alex"] = "vgg",
                 filename: str = "frames") -> None:
        super().__init__()
        unknown = sorted(set(baselines) - set(PER_FRAME_BASELINES))
        if unknown:
            raise ValueError(f"FrameScores scores the baselines {list(PER_FRAME_BASELINES)} per frame, not {unknown}")
        self.baselines, self.lpips_net, self.filename = list(baselines), lpips_net, filename
        self.rows: list[dict[str, Any]] = []
        self.metrics: ImageMetrics | None = None

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.metrics = ImageMetrics(self.lpips_net).to(pl_module.device)
        self.rows = []

    @torch.no_grad()
    def on_test_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: ClipBatch,
                          batch_idx: int, dataloader_idx: int = 0) -> None:
        picked = self._truth_targets(batch)
        if picked is None:
            return
        truth_batch, views, truth = picked
        rgb = pl_module.render_targets(pl_module(truth_batch), truth_batch).rgb.reshape(truth_batch.rgb.shape)
        for b, meta in enumerate(batch.meta):
            self.rows += self._sample_rows(truth_batch, b, meta, views[b], truth, rgb[b, 0])

    @staticmethod
    def _truth_targets(batch: ClipBatch) -> tuple[ClipBatch, list[int], list[int]] | None:
        """The batch with only its held-out truth frames as targets ([B, 1, F_truth]), each sample's
        held-out view and the truth frames' positions among the targets; None when a sample holds none out."""
        views = [m.get("heldout", []).index(True) if any(m.get("heldout", [])) else None for m in batch.meta]
        if not views or None in views:
            return None
        truth = list(batch.meta[0].get("truth_frames", range(batch.rgb.shape[2])))
        rows = torch.arange(batch.batch_size)[:, None, None]
        v = torch.tensor(views)[:, None, None]
        t = torch.tensor(truth)[None, None, :]
        pick = {k: getattr(batch, k)[rows, v, t] for k in ("rgb", "c2w", "K", "time", "depth", "gt_rgb")
                if getattr(batch, k) is not None}
        return replace(batch, **pick), views, truth

    def _sample_rows(self, batch: ClipBatch, b: int, meta: dict, v: int, truth: list[int],
                     student: Tensor) -> list[dict[str, Any]]:  # student: [F_truth, H, W, 3]
        """One row per truth frame of sample ``b`` (``batch`` holds only its truth frames as targets)."""
        frames = list(meta.get("frames", range(max(truth) + 1)))
        ref = (batch.gt_rgb if batch.gt_rgb is not None else batch.rgb)[b, 0]
        c2w, K, time = batch.c2w[b, 0], batch.K[b, 0], batch.time[b, 0]
        preds = {"student": student}
        src = batch.sources[b] if batch.sources else None
        if src is not None and "nearest" in self.baselines:
            preds["nearest"] = nearest_frame(src, c2w.cpu()).to(ref.device)
        if src is not None and src.depth is not None and "input_warp" in self.baselines:
            preds["input_warp"] = input_image_warp(src, c2w.cpu(), K.cpu(), time.cpu()).to(ref.device)
        scores = {name: self.metrics(pred, ref) for name, pred in preds.items()}
        capture = meta.get("capture") or {}
        rows = []
        for i, t in enumerate(truth):
            f = frames[t]
            row: dict[str, Any] = {"scene": str(meta.get("index", b)), "heldout": meta.get("heldout_name", f"view{v}"),
                                   "frame": f, "against": "truth" if batch.gt_rgb is not None else "teacher"}
            if capture:
                row.update(capture=capture["name"], capture_frame=capture["frames"][v][f],
                           image=capture["images"][v][f])
            for name, s in scores.items():
                row.update({f"{name}_{k}": float(val[i]) for k, val in s.items()})
            rows.append(row)
        return rows

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        rows = self.rows
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            parts: list = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(parts, rows)
            rows = [r for part in parts for r in part]
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
