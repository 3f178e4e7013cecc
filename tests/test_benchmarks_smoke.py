"""Keep the benchmarks from rotting: each script runs end to end with ``--smoke`` (tiny sizes,
seconds) and prints a well-formed result."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch
from conftest import ROOT

BENCH = ROOT / "benchmarks"


def _run(script: str, *args: str, cwd=None) -> tuple[dict, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, str(BENCH / script), *args], capture_output=True, text=True,
                         cwd=cwd or ROOT, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1]), out.stdout


@pytest.mark.slow  # > 10 s on 2 cores: CI's second step (-m slow)
def test_quality_smoke_trains_through_the_cli_and_writes_a_curve(tmp_path):
    res, text = _run("quality.py", "--smoke", "--out-dir", str(tmp_path))
    assert res["steps"] == 2 and len(res["curve"]) == 2  # evaluated at the start and at the end
    assert [p["step"] for p in res["curve"]] == [0, 2]
    final = res["final"]
    for key in ("student/truth/psnr@up", "student/source/psnr", "nearest/truth/psnr@up", "codec/truth/psnr@up",
                "input_warp/truth/psnr@up"):
        assert 0 < final[key] <= 100 and math.isfinite(final[key]), key
    # baselines do not change while the student trains
    assert res["curve"][0]["nearest/truth/psnr@up"] == final["nearest/truth/psnr@up"]
    assert (tmp_path / "curve.json").is_file() and (tmp_path / "curve.png").stat().st_size > 1000
    assert "| student |" in text and "| nearest |" in text


@pytest.mark.slow  # > 10 s on 2 cores: CI's second step (-m slow)
def test_decoder_scaling_smoke_doubles_tokens_with_views():
    res, text = _run("decoder_scaling.py", "--smoke")
    rows = res["rows"]
    assert [r["views"] for r in rows] == [1, 2]
    assert rows[1]["tokens"] == 2 * rows[0]["tokens"] and rows[1]["gaussians"] == 2 * rows[0]["gaussians"]
    assert all(r["fwd_s"] > 0 and r["fwd_bwd_s"] > 0 and r["fwd_bwd_peak_gb"] >= 0 for r in rows)
    assert "fwd+bwd s" in text


@pytest.mark.slow  # > 10 s on 2 cores: CI's second step (-m slow)
def test_layout_ceiling_smoke_fits_one_layout_and_scores_it_beside_the_baselines():
    res, text = _run("layout_ceiling.py", "--strides", "16", "--frame-strides", "4", "--scenes", "1", "--steps", "2",
                     "--heldout", "up", "--size", "64", "--threads", "1")
    rows = {r["layout"]: r for r in res["rows"]}
    assert set(rows) == {"nearest", "codec", "fs4_s16"}
    fit = rows["fs4_s16"]
    assert fit["gaussians"] == 5 * 5 * (64 // 16) ** 2  # 5 source views x frames 0, 4, .., 16 x 4 x 4 blocks
    assert all(math.isfinite(r["psnr"]) and 0 < r["psnr"] < 100 for r in rows.values())
    assert rows["codec"]["psnr"] > fit["psnr"]  # two Adam steps stay far below the teacher's own decoding
    assert "up/fs4_s16" in res["summary"] and "PSNR gt" in text
    # --fit: one row per parameter group, named after it
    res, _ = _run("layout_ceiling.py", "--strides", "16", "--frame-strides", "4", "--scenes", "1", "--steps", "2",
                  "--heldout", "up", "--size", "64", "--threads", "1", "--fit", "all", "colors")
    assert {r["layout"] for r in res["rows"]} == {"nearest", "codec", "fs4_s16_fit_all", "fs4_s16_fit_colors"}


def test_compare_curves_tables_and_plots_two_runs(tmp_path):
    for label, shift in (("a", 0.0), ("b", 1.5)):
        pts = [{"minutes": m, "step": 10 * m, "student/truth/psnr@up": 15 + m + shift, "student/truth/psnr": 15 + m + shift,
                "student/source/psnr": 18 + m, "nearest/truth/psnr@up": 21.0, "nearest/truth/psnr": 21.0,
                "codec/truth/psnr@up": 30.0, "codec/truth/psnr": 30.0} for m in (0, 2)]
        (tmp_path / label).mkdir()
        (tmp_path / label / "curve.json").write_text(json.dumps({"points": pts}))
    out = subprocess.run([sys.executable, str(BENCH / "compare_curves.py"), f"a={tmp_path / 'a'}", f"b={tmp_path / 'b'}",
                          "--out", str(tmp_path / "cmp.png")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    rows = [r for r in out.stdout.splitlines() if r.startswith("| b |")]
    assert rows == ["| b | 0.0 | 0 | 16.50 | 16.50 | 18.00 |", "| b | 2.0 | 20 | 18.50 | 18.50 | 20.00 |"]
    assert "| nearest | | | 21.00 | 21.00 | |" in out.stdout
    assert (tmp_path / "cmp.png").stat().st_size > 1000
    out = subprocess.run([sys.executable, str(BENCH / "compare_curves.py"), f"a={tmp_path / 'a'}", "--x", "step",
                          "--metric", "psnr", "--out", str(tmp_path / "steps.png")], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and (tmp_path / "steps.png").stat().st_size > 1000, out.stderr


def test_oracle_depth_puts_gaussians_at_the_clip_depth_with_the_errors_asked_for(monkeypatch):
    from conftest import synthetic_batch, tiny_student

    monkeypatch.syspath_prepend(str(BENCH))
    from _oracle_depth import with_clip_depth

    student = tiny_student(lpips=False)
    batch = synthetic_batch(T=5, H=64, W=64)
    batch.src_depth = 2.0 + torch.rand(1, 2, 5, 64, 64)
    batch.src_depth[..., :8, :8] = 0  # unknown depth: the decoder's own distance stays
    g = student(batch)
    dec = student.decoder
    truth, before = dec.grid_depth(batch.src_depth), dec.gaussian_depths(g, batch.src_c2w, (64, 64))
    exact = dec.gaussian_depths(with_clip_depth(student, g, batch, 0.0, 0.0), batch.src_c2w, (64, 64))
    known = truth > 0
    torch.testing.assert_close(exact[known], truth[known], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(exact[~known], before[~known])
    noisy = dec.gaussian_depths(with_clip_depth(student, g, batch, 0.0, 0.2), batch.src_c2w, (64, 64))
    err = (noisy[known] / truth[known]).log()
    assert 0.15 < err.std() < 0.25 and err.mean().abs() < 0.05
    again = dec.gaussian_depths(with_clip_depth(student, g, batch, 0.0, 0.2), batch.src_c2w, (64, 64))
    assert torch.equal(again, noisy)  # fixed per scene, as a decoder's errors are


@pytest.mark.slow  # > 10 s on 2 cores: CI's second step (-m slow)
def test_capture_smoke_reads_and_scores_a_synthetic_capture():
    res, text = _run("capture.py", "--smoke")
    assert res["capture_frames"] == 25 and res["clip"] == [3, 9, 32, 32]
    assert res["read_s"] > 0 and res["score_s"] > 0 and res["score_peak_rss_gb"] >= res["read_peak_rss_gb"] > 0
    assert res["scored_frames"] == 4  # truth frames 2, 4, 6, 8 of the held-out part
    assert "| student |" in text and "| input_warp (the depth the student reads) |" in text


@pytest.mark.slow  # > 10 s on 2 cores: CI's second step (-m slow)
def test_lifted_input_render_smoke_reproduces_the_warp_with_the_warps_renderer():
    res, text = _run("lifted_input_render.py", "--smoke", "--fit-colours")
    psnr = res["covered_psnr"]
    assert len(psnr) == 10 and all(0 < v < 100 for v in psnr.values())
    assert res["covered_psnr_frame_mean"].keys() == psnr.keys()
    # The same lifted points through the warp's renderer are the warp: the rows are comparable.
    assert abs(psnr["not 3DGS: 0.4 px, eps2d 0.01, alpha-normalised (the warp's renderer)"]
               - psnr["input_warp (point splats, exact depth)"]) < 0.05
    assert "| the lifted input frame, rendered as |" in text
