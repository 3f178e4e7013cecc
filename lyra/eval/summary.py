"""The evaluation report's summary: means over samples, per held-out trajectory, per parallax group
and per region, and the markdown table ``lightning test`` prints (docs/evaluation.md)."""

from __future__ import annotations

import bisect
import math
from collections import defaultdict
from typing import Sequence

from lyra.eval.regions import REGIONS

METRICS = ("psnr", "ssim", "lpips")
METHODS = ("student", "per_scene", "input_warp", "input_warp_exact", "nearest", "codec")
LABELS = {"input_warp": "input_warp (the depth the student reads)", "input_warp_exact": "input_warp (exact depth)"}


def parallax_bin_labels(edges: Sequence[float]) -> list[str]:
    """Names of the parallax groups between ``edges``: (1, 4) -> ["<1px", "1-4px", ">=4px"]."""
    if not edges:
        return []
    return [f"<{edges[0]:g}px", *(f"{a:g}-{b:g}px" for a, b in zip(edges, edges[1:])), f">={edges[-1]:g}px"]


def summarize(records: list[dict], parallax_bins: Sequence[float] = (1.0, 4.0)) -> dict[str, float]:
    """Means over records (each scene and held-out trajectory weighs the same) of every
    ``method/comparison/metric``, also per held-out trajectory as ``...@name``; of the split by
    region, ``regions/<method>/<covered|holes>/<psnr|lpips>`` and ``regions/holes_fraction`` (also
    ``@name``); and, over the truth frames pooled by parallax to the closest source view,
    ``student/truth/psnr|<bin>``, ``nearest/truth/psnr|<bin>`` and ``frames|<bin>`` (the count)."""
    sums: dict[str, list[float]] = defaultdict(list)
    labels, edges = parallax_bin_labels(parallax_bins), list(parallax_bins)
    for r in records:
        for method in METHODS:
            for comp, scores in r.get(method, {}).items():
                if not isinstance(scores, dict):
                    if comp == "seconds":
                        sums[f"{method}/seconds"].append(scores)
                    continue
                for k, val in scores.items():
                    sums[f"{method}/{comp}/{k}"].append(val)
                    if "heldout" in r:
                        sums[f"{method}/{comp}/{k}@{r['heldout']}"].append(val)
        regions = r.get("regions") or {}
        held = [""] + ([f"@{r['heldout']}"] if "heldout" in r else [])
        for suffix in held if regions else []:
            sums[f"regions/holes_fraction{suffix}"].append(regions["holes_fraction"])
            for method in METHODS:
                for region, scores in (regions.get(method) or {}).items():
                    for k, val in scores.items():
                        sums[f"regions/{method}/{region}/{k}{suffix}"].append(val)
        for f in r.get("frames", []) if labels else []:
            label = labels[bisect.bisect_right(edges, f["parallax_px"])]
            sums[f"frames|{label}"].append(1.0)
            for method in ("student", "nearest"):
                if f"{method}_psnr" in f:
                    sums[f"{method}/truth/psnr|{label}"].append(f[f"{method}_psnr"])
    summary = {k: (sum(v) if k.startswith("frames|") else sum(v) / len(v)) for k, v in sorted(sums.items())}
    summary["num_samples"] = float(len(records))
    summary["num_scenes"] = float(len({r["scene"] for r in records}))
    return summary


def _bin_start(label: str) -> float:  # "<1px" -> 0, "1-4px" -> 1, ">=4px" -> 4
    body = label.rstrip("px").lstrip("<>=")
    return 0.0 if label.startswith("<") else float(body.split("-")[0])


def format_table(summary: dict[str, float]) -> str:
    held = sorted({k.split("@", 1)[1] for k in summary if "@" in k})
    cols = [("truth", h) for h in held] or [("truth", None)]
    head = "| method | " + " | ".join(f"PSNR / SSIM / LPIPS vs truth ({h or 'held-out'})" for _, h in cols)
    head += " | PSNR source | PSNR fidelity |"
    lines = [head, "|" + "---|" * (len(cols) + 3)]
    for method in METHODS:
        if not any(k.startswith(method + "/") for k in summary):
            continue
        cells = []
        for comp, h in cols:
            suffix = f"@{h}" if h else ""
            vals = [summary.get(f"{method}/{comp}/{m}{suffix}") for m in METRICS]
            cells.append(" / ".join("-" if x is None else (f"{x:.2f}" if i == 0 else f"{x:.3f}")
                                    for i, x in enumerate(vals)))
        for comp in ("source", "fidelity"):
            x = summary.get(f"{method}/{comp}/psnr")
            cells.append("-" if x is None else f"{x:.2f}")
        lines.append(f"| {LABELS.get(method, method)} | " + " | ".join(cells) + " |")
    lines += _region_table(summary, [h for _, h in cols])
    if "student/clip/score" in summary:
        per_held = "".join(f", {h} {summary[f'student/clip/score@{h}']:.2f}" for h in held
                           if f"student/clip/score@{h}" in summary)
        lines.append(f"\nCLIP score, caption vs student renders (100 x max(cos, 0), samples with a caption): "
                     f"{summary['student/clip/score']:.2f}{per_held}")
    if "student/geometry/depth_log_error" in summary:
        err = summary["student/geometry/depth_log_error"]
        lines.append(f"\nStudent geometry: its Gaussians' depths in their source frames are off the clip's metric depth "
                     f"by a median |log ratio| of {err:.3f} (x{math.exp(err):.3f}), mean over samples")
    if "student/geometry/input_depth_log_error" in summary:
        lines.append(f"Where the input depth reaches: the input depth it read "
                     f"{summary['student/geometry/input_depth_log_error']:.3f}, its Gaussians "
                     f"{summary['student/geometry/depth_log_error_on_input']:.3f} (lower: it corrected its input)")
    groups = [k.split("|", 1)[1] for k in summary if k.startswith("frames|")]
    if groups:
        lines.append("\n| truth frames by parallax to the closest source view | frames | student PSNR | nearest PSNR |")
        lines.append("|---|---|---|---|")
        for lab in sorted(groups, key=_bin_start):
            cells = [f"{summary[f'{m}/truth/psnr|{lab}']:.2f}" if f"{m}/truth/psnr|{lab}" in summary else "-"
                     for m in ("student", "nearest")]
            lines.append(f"| {lab} | {int(summary[f'frames|{lab}'])} | " + " | ".join(cells) + " |")
    lines.append(f"\n{int(summary['num_scenes'])} scenes, {int(summary['num_samples'])} samples "
                 "(scene x held-out trajectory); protocol: docs/evaluation.md")
    return "\n".join(lines) + "\n"


def _region_table(summary: dict[str, float], held: list[str | None]) -> list[str]:
    """PSNR / LPIPS of every method on the pixels the lifted input covers and in its holes."""
    if "regions/holes_fraction" not in summary:
        return []
    suffixes = [f"@{h}" if h else "" for h in held]
    head = "| where the lifted input ... | " + " | ".join(
        f"covers ({h or 'held-out'}, {100 * (1 - summary[f'regions/holes_fraction{x}']):.1f} % of pixels) | "
        f"has holes ({h or 'held-out'}, {100 * summary[f'regions/holes_fraction{x}']:.1f} %)"
        for h, x in zip(held, suffixes)) + " |"
    lines = ["\nPSNR / LPIPS by region (regions/ in summary.json; docs/evaluation.md, \"Where the error is\"):\n",
             head, "|" + "---|" * (1 + 2 * len(held))]
    for method in METHODS:
        if not any(k.startswith(f"regions/{method}/") for k in summary):
            continue
        cells = []
        for x in suffixes:
            for region in REGIONS:
                vals = [summary.get(f"regions/{method}/{region}/{m}{x}") for m in ("psnr", "lpips")]
                cells.append("-" if vals[0] is None else f"{vals[0]:.2f} / {vals[1]:.3f}")
        lines.append(f"| {LABELS.get(method, method)} | " + " | ".join(cells) + " |")
    return lines
