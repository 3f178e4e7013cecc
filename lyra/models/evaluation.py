"""The test protocol's bookkeeping: per-scene metrics to JSON and a summary table.

Two comparisons per scene (docs/evaluation.md):
- fidelity: renders vs the teacher's RGB decoding on every target frame (self-distillation);
- truth: renders vs ground-truth views on held-out trajectories (those not fed to the decoder),
  when the clip carries ground truth (procedural teachers).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import Tensor, nn

from lyra.data.clip import ClipBatch
from lyra.metrics.image import ImageMetrics
from lyra.utils.atomic import atomic_write_text

METRICS = ("psnr", "ssim", "lpips")


class TestReport(nn.Module):
    def __init__(self, out_dir: Path, lpips_net: str = "vgg") -> None:
        super().__init__()
        self.out_dir = Path(out_dir)
        self.metrics = ImageMetrics(lpips_net)
        self.records: list[dict] = []

    def add(self, batch: ClipBatch, rgb: Tensor, batch_idx: int, rank: int) -> None:  # rgb [B, V, F, H, W, 3]
        fid = self.metrics(rgb, batch.rgb)
        truth = self.metrics(rgb, batch.gt_rgb) if batch.gt_rgb is not None else None
        for b in range(batch.batch_size):
            rec = {"scene": f"r{rank}_b{batch_idx:04d}_{b}",
                   "caption": batch.captions[b] if b < len(batch.captions) else "",
                   "fidelity": {k: float(fid[k][b].mean()) for k in METRICS}}
            if truth is not None:
                views = batch.heldout[b] if batch.heldout is not None and batch.heldout[b].any() else None
                sel = (lambda t: t[b][views]) if views is not None else (lambda t: t[b])
                rec["truth"] = {k: float(sel(truth[k]).mean()) for k in METRICS}
                rec["truth_views"] = "held-out" if views is not None else "all target views"
            self.records.append(rec)

    def finish(self, strategy) -> dict[str, float]:
        records = self.records
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            gathered: list = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(gathered, records)
            records = [r for part in gathered for r in part]
        summary: dict[str, float] = {}
        for kind in ("fidelity", "truth"):
            rows = [r[kind] for r in records if kind in r]
            for k in METRICS:
                if rows:
                    summary[f"{kind}_{k}"] = sum(r[k] for r in rows) / len(rows)
        summary["num_scenes"] = float(len(records))
        if strategy.is_global_zero:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.out_dir / "scenes.json", json.dumps(records, indent=1))
            atomic_write_text(self.out_dir / "summary.json", json.dumps(summary, indent=1))
            table = format_table(summary)
            atomic_write_text(self.out_dir / "summary.md", table)
            print(table)
        return summary


def format_table(summary: dict[str, float]) -> str:
    lines = ["| comparison | PSNR (dB) | SSIM | LPIPS |", "|---|---|---|---|"]
    for kind, label in (("fidelity", "vs teacher RGB (all target frames)"), ("truth", "vs ground truth (held-out)")):
        if f"{kind}_psnr" in summary:
            lines.append(f"| {label} | {summary[f'{kind}_psnr']:.2f} | {summary[f'{kind}_ssim']:.3f} | "
                         f"{summary[f'{kind}_lpips']:.3f} |")
    lines.append(f"\n{int(summary['num_scenes'])} scenes")
    return "\n".join(lines) + "\n"
