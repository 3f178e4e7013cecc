"""The test's scenes as files: one PLY per scene (dynamic: per target time) beside the report."""

from __future__ import annotations

from pathlib import Path

from lyra.data.clip import ClipBatch
from lyra.render.gaussians import Gaussians
from lyra.render.ply import save_ply


def export_test_scenes(
    g: Gaussians,  # [B] (static) or [B, M] (dynamic: one set per target view)
    batch: ClipBatch,
    scene_ids: list[str],
    out: Path,  # the report's ply/ folder
) -> None:
    """``scene_<id>[_without_<held-out>].ply``, or for a dynamic scene a folder of
    ``t<m>_<time>.ply``, one per target time."""
    g = g.detach().to("cpu")
    for b in range(batch.batch_size):
        held = batch.meta[b].get("heldout_name") if batch.meta else None
        name = f"scene_{scene_ids[b] if scene_ids else b}" + (f"_without_{held}" if held else "")
        if len(g.batch_shape) == 2:
            for m, t in enumerate(batch.time[b].reshape(-1).tolist()):
                save_ply(out / name / f"t{m:03d}_{t:.3f}.ply", g[b, m])
        else:
            save_ply(out / f"{name}.ply", g[b])
