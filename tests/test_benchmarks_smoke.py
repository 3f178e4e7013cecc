"""Keep the student benchmarks from rotting: each script runs end to end with ``--smoke`` (tiny
sizes, seconds) and prints a well-formed result; the baseline helpers they share do what they say."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lyra.data.clip import Clip
from lyra.render.cameras import c2w_to_viewmat, intrinsics_from_fov, look_at, world_to_pixels

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _load_common():
    spec = importlib.util.spec_from_file_location("_bench_common", BENCH / "_common.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


common = _load_common()


def _run(script: str, *args: str) -> tuple[dict, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, str(BENCH / script), *args], capture_output=True, text=True,
                         cwd=BENCH.parent, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1]), out.stdout


def test_quality_smoke_runs_and_reports_every_method():
    res, text = _run("quality.py", "--smoke")
    assert res["train"]["steps"] == 2 and res["train"]["scenes_seen"] == 2
    assert set(res["results"]) == {"student", "per-scene", "nearest", "teacher"}
    for method, r in res["results"].items():
        assert 0 < r["psnr_gt"] < 100 and 0 <= r["lpips_gt"] and -1 <= r["ssim_gt"] <= 1, (method, r)
        assert all(math.isfinite(v) for v in r.values()), (method, r)
    # Every method but the teacher itself is also scored against the teacher.
    assert "psnr_teacher" not in res["results"]["teacher"]
    assert all("psnr_teacher" in res["results"][m] for m in ("student", "per-scene", "nearest"))
    assert "held-out trajectory 'spiral'" in text and "per-scene" in text


def test_decoder_scaling_smoke_doubles_tokens_with_views():
    res, text = _run("decoder_scaling.py", "--smoke")
    rows = res["rows"]
    assert [r["views"] for r in rows] == [1, 2]
    assert rows[1]["tokens"] == 2 * rows[0]["tokens"] and rows[1]["gaussians"] == 2 * rows[0]["gaussians"]
    assert all(r["fwd_s"] > 0 and r["fwd_bwd_s"] > 0 and r["fwd_bwd_peak_gb"] >= 0 for r in rows)
    assert "fwd+bwd s" in text


def _toy_clip(views: int = 2, frames: int = 5, size: int = 16) -> Clip:
    g = torch.Generator().manual_seed(0)
    eyes = torch.randn(views, frames, 3, generator=g) * 0.3 + torch.tensor([0.0, -0.5, -3.0])
    c2w = look_at(eyes, torch.zeros(3))
    K = intrinsics_from_fov(60.0, size, size).expand(views, frames, 3, 3).clone()
    return Clip(latents=torch.zeros(views, 4, 2, size // 8, size // 8), rgb=torch.rand(views, frames, size, size, 3),
                c2w=c2w, K=K, time=torch.zeros(views, frames), depth=1 + 4 * torch.rand(views, frames, size, size),
                depth_is_metric=True)


def test_depth_init_points_reproject_to_their_pixels_and_depths():
    clip = _toy_clip()
    s = 4
    p = common.init_from_depth(clip, frame_stride=2, pixel_stride=s)
    frames = torch.arange(0, clip.num_frames, 2)
    n_grid = (clip.image_size[0] // s) ** 2
    assert p["means"].shape == (clip.num_views * len(frames) * n_grid, 3)
    # The first grid block belongs to view 0, frame 0: it must land on pixel centres s//2 + 0.5 + s*i at
    # exactly the stored camera z-depth.
    pts = p["means"][:n_grid]
    uv, z = world_to_pixels(pts, c2w_to_viewmat(clip.c2w[0, 0]), clip.K[0, 0])
    centres = torch.arange(s // 2, clip.image_size[0], s) + 0.5
    want_v, want_u = torch.meshgrid(centres, centres, indexing="ij")
    torch.testing.assert_close(uv, torch.stack([want_u, want_v], -1).reshape(-1, 2), atol=1e-3, rtol=0)
    torch.testing.assert_close(z, clip.depth[0, 0, s // 2::s, s // 2::s].reshape(-1), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(torch.sigmoid(p["color_logits"][:n_grid]),
                               clip.rgb[0, 0, s // 2::s, s // 2::s].reshape(-1, 3).clamp(0.02, 0.98))


def test_depth_init_refuses_clips_without_metric_depth():
    clip = _toy_clip()
    clip.depth_is_metric = False
    with pytest.raises(ValueError, match="metric depth"):
        common.init_from_depth(clip, 2, 4)


def test_nearest_source_frame_finds_the_matching_camera():
    clip = _toy_clip(views=3, frames=6)
    src = clip.c2w.reshape(-1, 4, 4)
    pick = torch.tensor([7, 0, 13])
    query = src[pick].clone()
    query[:, :3, 3] += 1e-3  # a hair off, so an exact-match shortcut would not do
    assert common.nearest_source_frames(src, query).tolist() == pick.tolist()


def test_eval_frames_skip_the_shared_first_frame():
    assert common.eval_frames(17, 4) == [4, 8, 12, 16]
    with pytest.raises(ValueError, match="eval-stride"):
        common.eval_frames(3, 4)


def test_split_heldout_keeps_the_other_views_in_order():
    clip = _toy_clip(views=3)
    src, held = common.split_heldout(clip, 1)
    torch.testing.assert_close(src.c2w, clip.c2w[[0, 2]])
    torch.testing.assert_close(held.rgb, clip.rgb[[1]])
    with pytest.raises(ValueError, match="held-out view"):
        common.split_heldout(clip, 3)
