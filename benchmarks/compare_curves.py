"""Overlay learning curves of several ``benchmarks/quality.py`` runs: one panel per held-out
trajectory, one line per run, the baselines as flat lines; prints the table behind the plot.

    python benchmarks/compare_curves.py constant=outputs/q_constant cosine=outputs/q_cosine --out curves.png
    python benchmarks/compare_curves.py a=outputs/q_a b=outputs/q_b --x step --metric lpips --out lpips.png

Each argument is ``label=folder`` (a quality.py ``--out-dir``, read from its ``curve.json``). The
x axis is training minutes (what a CPU budget fixes; ``--x minutes``) or steps (what a schedule
fixes, the same on any machine; ``--x step``); the table gives both for every evaluation.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

BASELINES = {"nearest": ("nearest source frame", ":"), "codec": ("codec ceiling", "--"),
             "input_warp": ("input warped by the depth the student reads", "-."),
             "input_warp_exact": ("input warped by exact depth", (0, (3, 1, 1, 1)))}


def baseline_point(runs: dict[str, list[dict]], name: str) -> dict:
    """The last point of the first run that scored baseline ``name`` (baselines do not depend on the run)."""
    return next((pts[-1] for pts in runs.values() if any(k.startswith(name + "/") for k in pts[-1])),
                next(iter(runs.values()))[-1])


def load(folder: Path) -> list[dict]:
    data = json.loads((folder / "curve.json").read_text())
    return data["points"] if isinstance(data, dict) else data


def table(runs: dict[str, list[dict]]) -> str:
    held = sorted({k.split("@", 1)[1] for pts in runs.values() for k in pts[-1] if k.startswith("student/truth/psnr@")})
    lines = ["| run | minutes | step | " + " | ".join(held) + " | mean | source |",
             "|---|---|---|" + "---|" * (len(held) + 2)]
    for label, pts in runs.items():
        for p in pts:
            cells = [f"{p[f'student/truth/psnr@{h}']:.2f}" if f"student/truth/psnr@{h}" in p else "-" for h in held]
            lines.append(f"| {label} | {p['minutes']:.1f} | {p['step']} | " + " | ".join(cells)
                         + f" | {p['student/truth/psnr']:.2f} | {p['student/source/psnr']:.2f} |")
    for name in BASELINES:
        last = baseline_point(runs, name)
        if f"{name}/truth/psnr" not in last:
            continue
        cells = [f"{last[f'{name}/truth/psnr@{h}']:.2f}" if f"{name}/truth/psnr@{h}" in last else "-" for h in held]
        lines.append(f"| {name} | | | " + " | ".join(cells) + f" | {last.get(f'{name}/truth/psnr', float('nan')):.2f} | |")
    return "\n".join(lines)


def plot(runs: dict[str, list[dict]], path: Path, x: str = "minutes", metric: str = "psnr") -> None:
    import matplotlib  # optional (lyra[bench]): only the figure needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    held = sorted({k.split("@", 1)[1] for pts in runs.values() for k in pts[-1] if k.startswith("student/truth/psnr@")})
    fig, axes = plt.subplots(1, len(held), figsize=(4.2 * len(held), 3.8), dpi=110, squeeze=False)
    for ax, h in zip(axes[0], held):
        for i, (label, pts) in enumerate(runs.items()):
            ax.plot([p[x] for p in pts], [p.get(f"student/truth/{metric}@{h}") for p in pts], "o-",
                    color=f"C{i}", label=label)
        for name, (text, style) in BASELINES.items():
            last = baseline_point(runs, name)
            if f"{name}/truth/{metric}@{h}" in last:
                ax.axhline(last[f"{name}/truth/{metric}@{h}"], color="k", linestyle=style, linewidth=1, label=text)
        ax.set_title(f"held-out {h}")
        ax.set_xlabel("training minutes" if x == "minutes" else "training steps")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("PSNR vs ground truth (dB)" if metric == "psnr" else "LPIPS-VGG vs ground truth (lower is better)")
    # Below the panels, so that the legend never covers a curve.
    handles, labels = axes[0][-1].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="lower center", ncol=3, frameon=False)
    fig.tight_layout(rect=(0, 0.13, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png")
    tmp.replace(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="label=folder")
    ap.add_argument("--out", default=None, help="PNG to write")
    ap.add_argument("--x", choices=("minutes", "step"), default="minutes", help="x axis of the plot")
    ap.add_argument("--metric", choices=("psnr", "lpips", "ssim"), default="psnr", help="y axis of the plot")
    args = ap.parse_args(argv)
    runs = {}
    for spec in args.runs:
        label, sep, folder = spec.partition("=")
        if not sep:
            ap.error(f"{spec!r}: give label=folder")
        if not (Path(folder) / "curve.json").is_file():
            ap.error(f"{folder} has no curve.json (a benchmarks/quality.py --out-dir)")
        runs[label] = load(Path(folder))
    text = table(runs)
    print(text)
    if args.out:
        plot(runs, Path(args.out), args.x, args.metric)
    return text


if __name__ == "__main__":
    main()
