"""Scores of the evaluation protocol: the student and its baselines on the same frames.

Per test sample (one scene, one held-out trajectory; see :mod:`lyra.data.splits`):

- ``student``: ``truth`` = renders vs ground truth on the held-out trajectory's truth frames;
  ``heldout`` = the same frames vs the teacher's RGB; ``source`` = renders vs the teacher's RGB
  on the source trajectories' target frames (how well the input is reproduced: a low source
  score means capacity or layout, a high source score with a low truth score means geometry);
  ``fidelity`` = vs the teacher's RGB on every target frame (the self-distillation number);
- ``nearest``: the teacher frame of the nearest source camera, ``truth`` and ``heldout``;
- ``codec``: the teacher's own decoding vs ground truth on the truth frames (the ceiling);
- ``input_warp``: the input image lifted with the depth the student reads and rendered at the
  truth frames' cameras, the nearest source frame in its holes, ``truth`` and ``heldout`` (the
  baseline a student that reads the input depth must beat); ``input_warp_exact``: the same lifted
  with the clip's exact depth;
- ``per_scene`` (opt-in, slow): Gaussians fitted to the source views, scored like the student.

With a warp baseline, each record also splits every method's PSNR and LPIPS between the pixels the
lifted input covers and its holes (``regions``, :mod:`lyra.eval.regions`), with the holes' share.

Where the held-out frames' depth is metric (procedural teachers), each record also lists its
truth ``frames`` with their parallax to the closest source view
(:func:`~lyra.eval.baselines.source_parallax`, pixels) and the student's and the nearest frame's
PSNR there; the summary pools them by parallax (``parallax_bins``): copying a source frame is
nearly exact on near-duplicates of source views and fails on novel ones, so the split shows where
a student's 3D pays off.

With ``clip_model`` and ``clip_weights`` set, samples with a caption also get ``student/clip/score``:
the CLIP score (:mod:`lyra.metrics.clip_score`) of the caption against every rendered target frame.

``EvalReport`` collects records, gathers them across ranks and writes ``scenes.json``,
``summary.json`` and ``summary.md``; ``lightning test`` and the benchmarks both use it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Sequence

import torch
from torch import Tensor, nn

from lyra.data.clip import ClipBatch
from lyra.eval.baselines import (
    BASELINES,
    SceneFitConfig,
    input_image_warp,
    nearest_frame,
    source_parallax,
    timed_fit,
)
from lyra.eval.regions import region_scores
from lyra.eval.summary import format_table, summarize
from lyra.metrics.clip_score import CLIPScore
from lyra.metrics.image import ImageMetrics
from lyra.render.renderer import GaussianRenderer
from lyra.utils.atomic import atomic_write_text

log = logging.getLogger(__name__)


@dataclass
class EvalConfig:
    """Settings of the evaluation report.

    Args:
        lpips_net: LPIPS backbone of the metric (the protocol: ``"vgg"``).
        baselines: which of ``nearest``, ``codec``, ``input_warp`` (lifted with the depth the student
            reads), ``input_warp_exact`` (with the clip's exact depth), ``per_scene`` to score beside
            the student (``per_scene`` fits every test scene with Adam: slow; the warps need clips
            with depth, and split every method's score by where the lifted input has holes).
        scene_fit: settings of the per-scene baseline.
        clip_model: open_clip architecture (e.g. ``"ViT-B-32"``) of the CLIP score between each
            sample's caption and its renders (``student/clip/score``); needs ``clip_weights``.
        clip_weights: local checkpoint file of ``clip_model`` (nothing is downloaded); unset, the
            CLIP score is skipped (one message when the clips carry captions).
        clip_pretrained_tag: the open_clip pretrained tag those weights come from (e.g.
            ``"laion2b_s34b_b79k"``), read for its image preprocessing only; needed only where the
            architecture's published weights disagree on it (an error says so).
        parallax_bins: increasing edges, in pixels of parallax to the closest source view, of the
            groups the summary pools truth frames into (``(1, 4)``: under 1 px, a near-duplicate
            of a source view; 1-4 px; 4 px and more, a novel view). Empty: no split.
    """

    lpips_net: Literal["vgg", "alex"] = "vgg"
    baselines: Sequence[str] = ("nearest", "codec")
    scene_fit: SceneFitConfig = field(default_factory=SceneFitConfig)
    clip_model: str | None = None
    clip_weights: str | None = None
    clip_pretrained_tag: str | None = None
    parallax_bins: Sequence[float] = (1.0, 4.0)

    def __post_init__(self) -> None:
        edges = list(self.parallax_bins)
        if any(e <= 0 for e in edges) or edges != sorted(set(edges)):
            raise ValueError(f"parallax_bins must be increasing positive pixel counts, got {edges}")
        if isinstance(self.scene_fit, dict):
            self.scene_fit = SceneFitConfig(**self.scene_fit)
        unknown = sorted(set(self.baselines) - set(BASELINES))
        if unknown:
            raise ValueError(f"unknown baselines {unknown}; choose from {list(BASELINES)}")
        if self.clip_weights is not None and not self.clip_model:
            raise ValueError(f"evaluation.clip_weights is set ({self.clip_weights}) but evaluation.clip_model is not; "
                             "set clip_model to the open_clip architecture of those weights (e.g. ViT-B-32)")


class EvalReport(nn.Module):
    def __init__(self, config: EvalConfig | dict | None = None) -> None:
        super().__init__()
        self.config = EvalConfig(**config) if isinstance(config, dict) else (config or EvalConfig())
        self.metrics = ImageMetrics(self.config.lpips_net)
        self.fit_renderer = GaussianRenderer(backend="auto", render_mode="RGB")
        self.records: list[dict] = []
        self._baseline_cache: dict[tuple, dict] = {}
        # Built (and its weights file checked) here, before any evaluation work.
        self.clip: CLIPScore | None = None
        if self.config.clip_weights is not None:
            self.clip = CLIPScore(self.config.clip_model, self.config.clip_weights, self.config.clip_pretrained_tag)
        self._clip_skip_noted = False

    def _note_clip_skipped(self) -> None:
        """Say once per report (on rank 0) that captions are there but the CLIP score is off."""
        if self._clip_skip_noted:
            return
        self._clip_skip_noted = True
        if torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_rank() != 0:
            return
        what = "evaluation.clip_weights" if self.config.clip_model else "evaluation.clip_model and evaluation.clip_weights"
        log.warning("CLIP score skipped: the test clips carry captions but no CLIP weights are configured. To score "
                    "renders against their prompts, set %s (model.init_args.evaluation in the config): an open_clip "
                    "architecture such as ViT-B-32 and a local checkpoint file of it (docs/evaluation.md, 'Prompts').",
                    what)

    def _scores(self, pred: Tensor, ref: Tensor) -> dict[str, float]:  # [F, H, W, 3] -> frame means
        return _means(self._frame_scores(pred, ref))

    def _frame_scores(self, pred: Tensor, ref: Tensor) -> dict[str, list[float]]:  # [F, H, W, 3] -> per frame
        return {k: v.reshape(-1).tolist() for k, v in self.metrics(pred, ref).items()}

    def _frames(self, batch: ClipBatch, b: int, v: int, truth: list[int], student_psnr: list[float],
                nearest_psnr: list[float] | None) -> list[dict] | None:
        """Per truth frame: its parallax to the closest source view and both PSNRs (None where the
        held-out frames' depth is not metric, so the parallax would have no scale)."""
        src = batch.sources[b] if batch.sources else None
        if (src is None or batch.depth is None or not batch.depth_is_metric or batch.gt_rgb is None
                or not (batch.depth[b, v, truth] > 0).any()):
            return None
        px = source_parallax(src.c2w.reshape(-1, 4, 4).to(batch.c2w), src.K.reshape(-1, 3, 3).to(batch.K),
                             batch.c2w[b, v, truth], batch.K[b, v, truth], batch.depth[b, v, truth])
        frames = batch.meta[b].get("frames", list(range(batch.rgb.shape[2])))
        return [{"frame": frames[t], "parallax_px": float(px[i]), "student_psnr": student_psnr[i],
                 **({"nearest_psnr": nearest_psnr[i]} if nearest_psnr is not None else {})}
                for i, t in enumerate(truth)]

    @torch.no_grad()
    def add(
        self,
        batch: ClipBatch,
        rgb: Tensor,  # [B, V, F, H, W, 3] student renders of every target frame
        scene_ids: Sequence[str] | None = None,
        geometry: dict[str, Tensor] | None = None,  # name -> [B] depth errors (StudentModule.depth_error), NaN: none
        input_depth: Tensor | None = None,  # [B, T or 1, H, W] trajectory 0's depth as the student read it
    ) -> list[dict]:
        B, V, F, H, W, _ = batch.rgb.shape
        new = []
        for b in range(B):
            meta = batch.meta[b] if batch.meta else {}
            rec = {"scene": scene_ids[b] if scene_ids else str(meta.get("index", b)),
                   "caption": batch.captions[b] if b < len(batch.captions) else ""}
            student = {"fidelity": self._scores(rgb[b].flatten(0, 1), batch.rgb[b].flatten(0, 1))}
            known = {k: float(v[b]) for k, v in (geometry or {}).items() if torch.isfinite(v[b])}
            if known:
                student["geometry"] = known
            heldout = meta.get("heldout")
            if heldout is not None and any(heldout):
                v = heldout.index(True)
                truth = meta.get("truth_frames", list(range(F)))
                src_views = [i for i in range(V) if not heldout[i]]
                rec["heldout"] = meta.get("heldout_name", f"view{v}")
                student["source"] = self._scores(rgb[b, src_views].flatten(0, 1), batch.rgb[b, src_views].flatten(0, 1))
                # per truth frame against ground truth (else the teacher's frames): records' ``per_frame``
                per_frame = self._frame_scores(rgb[b, v, truth], (batch.gt_rgb if batch.gt_rgb is not None
                                                                   else batch.rgb)[b, v, truth])
                student["heldout"] = (_means(per_frame) if batch.gt_rgb is None
                                      else self._scores(rgb[b, v, truth], batch.rgb[b, v, truth]))
                if batch.gt_rgb is not None:
                    student["truth"] = _means(per_frame)
                depth = None if input_depth is None else input_depth[b]
                base = self._baselines(batch, b, v, truth, rec["scene"], rec["heldout"], depth)
                rec.update({k: val for k, val in base.items() if not k.startswith("_")})
                frames = batch.meta[b].get("frames", list(range(F)))
                rec["per_frame"] = {"frames": [frames[t] for t in truth], "against": "truth" if batch.gt_rgb is not None
                                    else "heldout", "student": per_frame, **base.get("_per_frame", {})}
                if "_holes" in base:  # where the error is: what the lifted input covers, and its holes
                    against = batch.gt_rgb[b, v, truth] if batch.gt_rgb is not None else batch.rgb[b, v, truth]
                    holes = base["_holes"].to(against.device)
                    rec["regions"] = {"holes_fraction": float(holes.float().mean()),
                                      "against": "truth" if batch.gt_rgb is not None else "heldout",
                                      "student": region_scores(rgb[b, v, truth], against, holes, self.metrics.lpips),
                                      **base["_regions"]}
                frames = self._frames(batch, b, v, truth, per_frame["psnr"], base.get("_nearest_truth_psnr"))
                if frames is not None:
                    rec["frames"] = frames
            if (rec["caption"] or "").strip():
                if self.clip is not None:  # the prompt against every rendered target frame
                    student["clip"] = {"score": float(self.clip(rgb[b].flatten(0, 1), rec["caption"]).mean())}
                else:
                    self._note_clip_skipped()
            rec["student"] = student
            new.append(rec)
        self.records.extend(new)
        return new

    def _baselines(self, batch: ClipBatch, b: int, v: int, truth: list[int], scene: str, held: str,
                   input_depth: Tensor | None = None) -> dict:  # input_depth [T or 1, H, W] as the student read it
        key = (scene, held)
        if key in self._baseline_cache:  # baselines do not change while a student trains
            return self._baseline_cache[key]
        out: dict[str, dict] = {}
        preds: dict[str, Tensor] = {}  # each baseline's frames, for the split by region
        gt = batch.gt_rgb[b, v, truth] if batch.gt_rgb is not None else None
        teacher = batch.rgb[b, v, truth]
        src = batch.sources[b] if batch.sources else None
        c2w, K = batch.c2w[b, v, truth], batch.K[b, v, truth]
        H, W = batch.rgb.shape[-3:-1]
        for name in self.config.baselines:
            if name == "codec" and gt is not None:
                preds["codec"] = teacher
            elif name == "nearest" and src is not None:
                preds["nearest"] = nearest_frame(src, c2w.cpu()).to(teacher.device)
            elif name in ("input_warp", "input_warp_exact") and src is not None and src.depth is not None:
                # input_warp lifts the depth the student read; input_warp_exact the clip's own
                depth = input_depth if name == "input_warp" and input_depth is not None else None
                pred, holes = input_image_warp(src, c2w.cpu(), K.cpu(), batch.time[b, v, truth].cpu(),
                                               None if depth is None else depth.cpu())
                preds[name] = pred.to(teacher.device)
                if name == "input_warp" or "_holes" not in out:
                    out["_holes"] = holes
            elif name == "per_scene" and src is not None and src.depth is not None and src.depth_is_metric:
                out["per_scene"] = self._per_scene(batch, b, src, c2w, K, teacher)
                preds["per_scene"] = out["per_scene"].pop("_pred")
        against = gt if gt is not None else teacher
        out["_per_frame"] = {m: self._frame_scores(p, against) for m, p in preds.items()}
        for m, p in preds.items():  # means: vs the teacher's frames (heldout), and vs ground truth (truth)
            scores = out.setdefault(m, {})
            if m != "codec":
                scores["heldout"] = self._scores(p, teacher) if gt is not None else _means(out["_per_frame"][m])
            if gt is not None:
                scores["truth"] = _means(out["_per_frame"][m])
        if "nearest" in preds and gt is not None:  # per frame, for the parallax split (not a record field)
            out["_nearest_truth_psnr"] = out["_per_frame"]["nearest"]["psnr"]
        if "_holes" in out:
            holes = out["_holes"].to(against.device)
            out["_regions"] = {m: region_scores(p, against, holes, self.metrics.lpips) for m, p in preds.items()}
        self._baseline_cache[key] = out
        return out

    def _per_scene(self, batch: ClipBatch, b: int, src, c2w: Tensor, K: Tensor, teacher: Tensor) -> dict:
        """The per-scene fit's record (its held-out frames under ``_pred``), source views scored too."""
        H, W = batch.rgb.shape[-3:-1]
        g, seconds = timed_fit(src, self.fit_renderer, self.config.scene_fit)
        g = g.to(teacher.device)
        heldout = batch.meta[b]["heldout"]
        sv = [i for i in range(len(heldout)) if not heldout[i]]
        src_pred = self.fit_renderer(g, batch.c2w[b, sv].reshape(1, -1, 4, 4), batch.K[b, sv].reshape(1, -1, 3, 3),
                                     H, W).rgb[0]
        return {"seconds": seconds, "source": self._scores(src_pred, batch.rgb[b, sv].flatten(0, 1)),
                "_pred": self.fit_renderer(g, c2w[None], K[None], H, W).rgb[0]}

    def reset(self) -> None:
        self.records = []

    def gather(self) -> list[dict]:
        records = self.records
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            parts: list = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(parts, records)
            records = [r for part in parts for r in part]
        return records

    def write(self, out_dir: str | Path, records: list[dict]) -> dict[str, float]:
        summary = summarize(records, self.config.parallax_bins)
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "scenes.json", json.dumps(records, indent=1))
        atomic_write_text(out / "summary.json", json.dumps(summary, indent=1))
        atomic_write_text(out / "summary.md", format_table(summary))
        return summary


def _means(per_frame: dict[str, list[float]]) -> dict[str, float]:
    return {k: sum(v) / len(v) for k, v in per_frame.items()}
