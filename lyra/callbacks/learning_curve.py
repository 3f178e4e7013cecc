"""``LearningCurve``: the evaluation protocol every few minutes of training, as JSON and a PNG.

It scores the student on the data module's test split (held-out trajectories, docs/evaluation.md)
with the same ``EvalReport`` as ``lightning test``, at the start, every ``every_minutes`` of
*training* time (its own evaluation time is not counted) and at the end, so a curve reads as
"quality after t minutes of training on this machine". Baselines are scored once and drawn as
flat lines. With ``budget_minutes`` it also ends the fit after that much training time.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import lightning as L
import torch

from lyra.eval.report import EvalConfig, EvalReport
from lyra.eval.summary import summarize
from lyra.utils.atomic import atomic_path, atomic_write_text

BASELINE_STYLE = {"nearest": ("nearest source frame", "--"), "per_scene": ("per-scene optimisation", ":"),
                  "codec": ("codec ceiling", "-."), "input_warp": ("input warped by the depth the student reads", (0, (1, 1))),
                  "input_warp_exact": ("input warped by exact depth", (0, (3, 1, 1, 1)))}


class LearningCurve(L.Callback):
    """Args:
        out_dir: where ``curve.json`` and ``curve.png`` go.
        every_minutes: training minutes between evaluations (0: only at start and end).
        budget_minutes: stop the fit after this many training minutes (None: the trainer decides).
        evaluation: the report's settings (baselines, LPIPS backbone); the module's by default.

    The module must score batches like ``StudentModule.score`` (the protocol of ``lightning test``).
    """

    def __init__(self, out_dir: str, every_minutes: float = 5.0, budget_minutes: float | None = None,
                 evaluation: EvalConfig | None = None) -> None:
        super().__init__()
        self.out_dir = Path(out_dir)
        self.every, self.budget, self.evaluation = every_minutes, budget_minutes, evaluation
        self.points: list[dict] = []
        self._batches: list | None = None
        self._report: EvalReport | None = None
        self._start = self._paused = 0.0
        self._next = 0.0

    # ---- timing -------------------------------------------------------------------------------

    def train_minutes(self) -> float:
        return (time.perf_counter() - self._start - self._paused) / 60

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start, self._paused = time.perf_counter(), 0.0
        self._evaluate(trainer, pl_module)
        self._next = self.every if self.every > 0 else float("inf")

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        minutes = self.train_minutes()
        if self.budget is not None and minutes >= self.budget:
            trainer.should_stop = True
        elif minutes >= self._next:
            self._evaluate(trainer, pl_module)
            self._next += self.every

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.points or self.points[-1]["step"] != trainer.global_step:
            self._evaluate(trainer, pl_module)

    # ---- evaluation ---------------------------------------------------------------------------

    @torch.no_grad()
    def _evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        minutes = self.train_minutes()
        t0 = time.perf_counter()
        if self._batches is None:
            # The test split through the data module's own protocol, read once and kept.
            self._batches = list(trainer.datamodule.dataset("test"))
            self._report = EvalReport(self.evaluation or getattr(pl_module, "eval_config", None))
        report = self._report.to(pl_module.device)
        report.reset()
        was_training = pl_module.training
        pl_module.eval()
        for batch in self._batches:
            pl_module.score(batch.to(pl_module.device), report)
        pl_module.train(was_training)
        summary = summarize(report.records, report.config.parallax_bins)
        point = {"minutes": minutes, "step": trainer.global_step, "eval_seconds": time.perf_counter() - t0, **summary}
        self.points.append(point)
        self._write()
        held = sorted({k.split("@", 1)[1] for k in summary if k.startswith("student/truth/psnr@")})

        def baselines(h: str) -> str:
            return ", ".join(f"{name} {summary[f'{name}/truth/psnr@{h}']:.2f}" for name in ("nearest", "input_warp")
                             if f"{name}/truth/psnr@{h}" in summary)

        print(f"eval at {point['minutes']:.1f} min, step {point['step']}: "
              + "  ".join(f"{h} {summary[f'student/truth/psnr@{h}']:.2f} dB ({baselines(h)})" for h in held)
              + f"  source {summary.get('student/source/psnr', float('nan')):.2f} dB"
              + f"  ({point['eval_seconds']:.0f} s)", flush=True)
        self._paused += time.perf_counter() - t0

    def _write(self) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.out_dir / "curve.json", json.dumps(self.points, indent=1))
        try:
            plot_curve(self.points, self.out_dir / "curve.png")
        except ImportError:
            pass  # matplotlib is optional (pip install 'lyra[bench]'); the JSON holds everything


def plot_curve(points: list[dict], path: Path, title: str = "") -> None:
    """PSNR vs ground truth on each held-out trajectory against training minutes, with the
    baselines as flat lines."""
    import matplotlib  # optional (lyra[bench]): only the figure needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    last = points[-1]
    held = sorted({k.split("@", 1)[1] for k in last if k.startswith("student/truth/psnr@")})
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    minutes = [p["minutes"] for p in points]
    for i, h in enumerate(held):
        color = f"C{i}"
        ax.plot(minutes, [p.get(f"student/truth/psnr@{h}") for p in points], "o-", color=color,
                label=f"student, held-out {h}")
        for name, (label, style) in BASELINE_STYLE.items():
            value = last.get(f"{name}/truth/psnr@{h}")
            if value is not None:
                ax.axhline(value, color=color, linestyle=style, linewidth=1, label=f"{label} ({h})")
    ax.set_xlabel("training minutes")
    ax.set_ylabel("PSNR vs ground truth (dB)")
    ax.set_title(title or "held-out trajectories")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
