"""The evaluation protocol's pieces: held-out sampling, frames, baselines."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from lyra.data.clip import Clip, ClipBatch
from lyra.data.codecs import DCTCodec
from lyra.data.generators import ProceduralGenerator
from lyra.eval import (
    SceneFitConfig,
    fit_scene,
    heldout_split,
    nearest_source_frames,
    source_duplicates,
    target_frames,
)
from lyra.eval.baselines import init_on_rays, input_image_warp, source_parallax, timed_fit
from lyra.eval.report import EvalConfig, EvalReport
from lyra.eval.summary import format_table, summarize
from lyra.models.decoders import perturb_depth
from lyra.models.teacher import TeacherModule
from lyra.render.cameras import (
    c2w_to_viewmat,
    intrinsics_from_fov,
    look_at,
    world_to_pixels,
)
from lyra.render.renderer import GaussianRenderer


def toy_clip(views: int = 3, frames: int = 5, size: int = 16, names=("left", "right", "spiral")) -> Clip:
    g = torch.Generator().manual_seed(0)
    eyes = torch.randn(views, frames, 3, generator=g) * 0.3 + torch.tensor([0.0, -0.5, -3.0])
    eyes[:, 0] = eyes[0, 0]  # every trajectory starts at the same view, as Lyra's do
    c2w = look_at(eyes, torch.zeros(3))
    K = intrinsics_from_fov(60.0, size, size).expand(views, frames, 3, 3).clone()
    return Clip(latents=torch.zeros(views, 4, 2, size // 8, size // 8), rgb=torch.rand(views, frames, size, size, 3),
                c2w=c2w, K=K, time=torch.zeros(views, frames), depth=1 + 4 * torch.rand(views, frames, size, size),
                gt_rgb=torch.rand(views, frames, size, size, 3), depth_is_metric=True,
                meta={"trajectories": list(names[:views])})


def test_target_frames_are_evenly_spaced_and_checked():
    assert target_frames(17, 5).tolist() == [0, 4, 8, 12, 16]
    assert target_frames(9, 5).tolist() == [0, 2, 4, 6, 8]
    with pytest.raises(ValueError, match="target frames"):
        target_frames(3, 4)


def test_heldout_split_by_name_and_index():
    clip = toy_clip()
    src, tgt = heldout_split(clip, "right", 3)
    torch.testing.assert_close(src.c2w, clip.c2w[[0, 2]])  # the other views, all frames, in order
    assert src.num_frames == 5 and tgt.num_views == 3 and tgt.num_frames == 3
    torch.testing.assert_close(tgt.gt_rgb, clip.gt_rgb[:, [0, 2, 4]])
    assert tgt.meta["heldout"] == [False, True, False] and tgt.meta["heldout_name"] == "right"
    assert tgt.meta["truth_frames"] == [1, 2]  # frame 0 is every trajectory's shared start view
    assert heldout_split(clip, 2, 3)[1].meta["heldout_name"] == "spiral"
    with pytest.raises(ValueError, match="not in this clip's trajectories"):
        heldout_split(clip, "up", 3)
    with pytest.raises(ValueError, match="does not exist"):
        heldout_split(clip, 5, 3)


def test_truth_frames_skip_the_source_frames_a_time_reversed_clip_shares_last():
    clip = toy_clip()
    clip.time[:] = torch.linspace(0, 1, 5)
    assert heldout_split(clip, "right", 3)[1].meta["truth_frames"] == [1, 2]
    # Reversed (stored re-reversed): the shared start view is the last frame, at the last time.
    rev = replace(clip, c2w=clip.c2w.flip(1), K=clip.K.flip(1))
    assert source_duplicates(rev, 1, torch.tensor([0, 2, 4])) == [False, False, True]
    assert heldout_split(rev, "right", 3)[1].meta["truth_frames"] == [0, 1]
    # The same camera at another scene time is a novel view of a moving scene ...
    moved = replace(rev, time=rev.time.clone())
    moved.time[1, 4] = 0.9
    assert heldout_split(moved, "right", 3)[1].meta["truth_frames"] == [0, 1, 2]
    # ... and another camera at the same time too.
    nudged = replace(rev, c2w=rev.c2w.clone())
    nudged.c2w[1, 4, 0, 3] += 1e-3
    assert source_duplicates(nudged, 1, torch.tensor([4])) == [False]


def test_nearest_source_frame_finds_the_matching_camera():
    clip = toy_clip(views=3, frames=6)
    src = clip.c2w.reshape(-1, 4, 4)
    pick = torch.tensor([7, 0, 13])
    query = src[pick].clone()
    query[:, :3, 3] += 1e-3  # a hair off, so an exact-match shortcut would not do
    assert nearest_source_frames(src, query).tolist() == pick.tolist()


@pytest.mark.parametrize("s", [4, 8])
def test_scene_fit_init_sits_on_the_decoder_rays_at_the_true_depth(s):
    clip = toy_clip(size=16)
    clip.depth[0, 0, :4, :4] = 0  # unknown (sky): must start far away, never at the camera centre
    p = init_on_rays(clip, SceneFitConfig(frame_stride=2, pixel_stride=s))
    n_grid = (16 // s) ** 2
    assert p["means"].shape == (3 * 3 * n_grid, 3)  # 3 views x frames 0, 2, 4
    uv, z = world_to_pixels(p["means"][:n_grid], c2w_to_viewmat(clip.c2w[0, 0]), clip.K[0, 0])
    centres = (torch.arange(16 // s) + 0.5) * s  # the centre of every s x s block: a decoder's own rays
    v, u = torch.meshgrid(centres, centres, indexing="ij")
    torch.testing.assert_close(uv, torch.stack([u, v], -1).reshape(-1, 2), atol=1e-3, rtol=0)
    want = clip.depth[0, 0, s // 2::s, s // 2::s].reshape(-1)
    known = want > 0
    torch.testing.assert_close(z[known], want[known], atol=1e-4, rtol=1e-4)
    far = 2 * float(clip.depth[:, ::2, s // 2::s, s // 2::s].max())
    torch.testing.assert_close(z[~known], torch.full_like(z[~known], far), atol=1e-3, rtol=1e-4)
    assert all(torch.isfinite(t).all() for t in p.values())


def test_scene_fit_initial_scale_and_opacity_are_settings():
    clip = toy_clip(size=16)
    base = init_on_rays(clip, SceneFitConfig(frame_stride=2, pixel_stride=4))
    p = init_on_rays(clip, SceneFitConfig(frame_stride=2, pixel_stride=4, init_scale=0.25, init_opacity=0.9))
    torch.testing.assert_close(p["log_scales"], base["log_scales"] + math.log(0.5))  # half of the default half block
    torch.testing.assert_close(torch.sigmoid(p["opacity_logits"]), torch.full_like(p["opacity_logits"], 0.9))
    torch.testing.assert_close(torch.sigmoid(base["opacity_logits"]), torch.full_like(p["opacity_logits"], 0.7311),
                               atol=1e-4, rtol=0)
    for bad in ({"init_scale": 0.0}, {"init_opacity": 1.0}):
        with pytest.raises(ValueError, match="init_scale must be > 0 and init_opacity in"):
            init_on_rays(clip, SceneFitConfig(**bad))


def test_scene_fit_refuses_clips_without_metric_depth_and_improves_the_source_fit():
    clip = toy_clip(size=16)
    clip.depth_is_metric = False
    with pytest.raises(ValueError, match="metric depth"):
        init_on_rays(clip, SceneFitConfig())
    clip.depth_is_metric = True
    renderer = GaussianRenderer(backend="torch", render_mode="RGB")
    cfg = SceneFitConfig(steps=0, frame_stride=1, pixel_stride=4)
    before = fit_scene(clip, renderer, cfg)
    after = fit_scene(clip, renderer, SceneFitConfig(steps=30, frame_stride=1, pixel_stride=4, views_per_step=4))

    def err(g):
        r = renderer(g, clip.c2w.reshape(1, -1, 4, 4), clip.K.reshape(1, -1, 3, 3), 16, 16).rgb
        return float((r[0] - clip.rgb.reshape(-1, 16, 16, 3)).abs().mean())

    assert err(after) < err(before)


def test_scene_fit_runs_inside_inference_mode_as_lightning_test_calls_it():
    """`lightning test` scores under torch.inference_mode, on clips made there: the fit must still train."""
    renderer = GaussianRenderer(backend="torch", render_mode="RGB")
    cfg = SceneFitConfig(steps=5, frame_stride=2, pixel_stride=4, views_per_step=2)
    with torch.inference_mode():
        clip = toy_clip(size=16)
        g, seconds = timed_fit(clip, renderer, cfg)
    start = init_on_rays(toy_clip(size=16), cfg)
    assert seconds > 0 and not torch.allclose(g.colors[0], torch.sigmoid(start["color_logits"]))


def test_source_parallax_is_the_image_motion_to_the_closest_source_view():
    K = intrinsics_from_fov(60.0, 32, 32)
    f = float(K[0, 0])
    src = look_at(torch.tensor([[0.0, 0.0, -4.0], [3.0, 0.0, -4.0]]), torch.tensor([[0.0, 0.0, 0.0], [3.0, 0.0, 0.0]]))
    depth = torch.full((3, 32, 32), 4.0)  # a fronto-parallel plane 4 units away
    # The same camera; one slid sideways by 0.1 along the plane (every point moves f * 0.1 / 4 px);
    # one slid by 1.5, halfway between the two sources (f * 1.5 / 4 px from either).
    query = look_at(torch.tensor([[0.0, 0.0, -4.0], [0.1, 0.0, -4.0], [1.5, 0.0, -4.0]]),
                    torch.tensor([[0.0, 0.0, 0.0], [0.1, 0.0, 0.0], [1.5, 0.0, 0.0]]))
    px = source_parallax(src, K.expand(2, 3, 3), query, K.expand(3, 3, 3), depth)
    torch.testing.assert_close(px, torch.tensor([0.0, f * 0.1 / 4, f * 1.5 / 4]), atol=1e-3, rtol=1e-4)
    # Unknown depth (0) takes the median known depth; none known at all is refused.
    holes = depth.clone()
    holes[:, :16] = 0
    torch.testing.assert_close(source_parallax(src, K.expand(2, 3, 3), query, K.expand(3, 3, 3), holes), px)
    with pytest.raises(ValueError, match="known depth"):
        source_parallax(src, K.expand(2, 3, 3), query, K.expand(3, 3, 3), torch.zeros(3, 32, 32))


def test_summary_pools_truth_frames_by_parallax():
    def rec(scene, frames):
        return {"scene": scene, "heldout": "spiral", "student": {"truth": {"psnr": 0.0}},
                "frames": [{"frame": i, "parallax_px": p, "student_psnr": s, "nearest_psnr": n}
                           for i, (p, s, n) in enumerate(frames)]}

    records = [rec("a", [(0.2, 20.0, 30.0), (2.0, 21.0, 22.0)]), rec("b", [(0.9, 22.0, 28.0), (9.0, 18.0, 15.0)])]
    summary = summarize(records, (1.0, 4.0))
    assert (summary["frames|<1px"], summary["frames|1-4px"], summary["frames|>=4px"]) == (2, 1, 1)
    assert summary["student/truth/psnr|<1px"] == 21.0 and summary["nearest/truth/psnr|<1px"] == 29.0
    assert summary["student/truth/psnr|>=4px"] == 18.0 and summary["nearest/truth/psnr|1-4px"] == 22.0
    assert not any("|" in k for k in summarize(records, ()))  # no bins: no split
    table = format_table(summary)
    rows = [line for line in table.splitlines() if line.startswith("| <1px") or line.startswith("| >=4px")]
    assert rows == ["| <1px | 2 | 21.00 | 29.00 |", "| >=4px | 1 | 18.00 | 15.00 |"]
    assert table.index("| <1px") < table.index("| 1-4px") < table.index("| >=4px")
    with pytest.raises(ValueError, match="parallax_bins"):
        EvalConfig(parallax_bins=(4.0, 1.0))


def test_scene_fit_with_zero_learning_rates_keeps_those_parameters():
    clip = toy_clip(views=3, frames=5, size=16)
    src, _ = heldout_split(clip, "spiral", 3)
    cfg = SceneFitConfig(steps=3, frame_stride=2, pixel_stride=4, lr_means=0.0, lr_scales=0.0, lr_quats=0.0,
                         lr_opacities=0.0)
    start = init_on_rays(src, cfg)
    g = fit_scene(src, GaussianRenderer(backend="torch", render_mode="RGB"), cfg)
    torch.testing.assert_close(g.means[0], start["means"])
    torch.testing.assert_close(g.scales[0], start["log_scales"].exp())
    torch.testing.assert_close(g.opacities[0], torch.sigmoid(start["opacity_logits"]))
    assert not torch.allclose(g.colors[0], torch.sigmoid(start["color_logits"]))  # only the colours moved


def test_input_warp_reproduces_the_input_view_and_copies_into_its_holes():
    clip = toy_clip(views=2, frames=3, size=32)
    ramp = torch.linspace(0, 1, 32)
    clip.rgb[..., 0], clip.rgb[..., 1] = ramp, ramp[:, None]  # smooth, so resampling changes little
    clip.depth = torch.full_like(clip.depth, 3.0)
    clip.depth[0, 0, :4] = 0  # sky rows: lifted far away, not dropped
    src, K0 = clip, clip.K[0, 0]
    same, no_holes = input_image_warp(src, clip.c2w[0, :1], K0[None])
    same = same[0]
    assert not no_holes.any()
    assert (same[4:] - clip.rgb[0, 0, 4:]).abs().mean() < 0.02  # seen from its own camera: itself
    turned = clip.c2w[0, 0].clone()
    turned[:3, :3] = turned[:3, :3] @ torch.linalg.matrix_exp(torch.tensor(  # 40 degrees about y
        [[0.0, 0, 0.7], [0, 0, 0], [-0.7, 0, 0]]))
    out, reported = input_image_warp(src, turned[None], K0[None])
    out = out[0]
    nearest = clip.rgb.reshape(-1, 32, 32, 3)[nearest_source_frames(clip.c2w.reshape(-1, 4, 4), turned[None])[0]]
    holes = (out == nearest).all(-1)
    assert holes.float().mean() > 0.2 and (~holes).float().mean() > 0.2  # part warped, part copied
    assert torch.equal(reported[0], holes)  # the holes it reports are where it copied
    clip.depth = None
    with pytest.raises(ValueError, match="lifts the input image with its depth"):
        input_image_warp(clip, turned[None], K0[None])


def heldout_sample(size: int = 32) -> ClipBatch:
    """A procedural scene (exact depth, ground truth) with its spiral held out, as the test split makes it."""
    teacher = TeacherModule(ProceduralGenerator(seed=0, num_views=3, trajectories=["left", "zoom_out", "spiral"]),
                            DCTCodec(latent_channels=8), 5, size, size)
    return ClipBatch.collate([heldout_split(teacher.make_clip(0), "spiral", 3)], keep_sources=True)


def test_input_warp_lifts_the_depth_the_student_read_and_the_report_splits_by_region():
    batch = heldout_sample()
    read = perturb_depth(batch.src_depth[:, 0, :1, :, :].flatten(0, 1), 0.2, [7]).reshape(1, 1, 32, 32)
    report = EvalReport(EvalConfig(lpips_net="alex", baselines=["nearest", "input_warp", "input_warp_exact"]))
    rec = report.add(batch, batch.rgb, input_depth=read)[0]  # the teacher's own frames as the "student"
    assert rec["input_warp"]["truth"]["psnr"] < rec["input_warp_exact"]["truth"]["psnr"]  # what depth errors cost
    truth = batch.meta[0]["truth_frames"]  # the held-out trajectory's target frames but frame 0 (a source frame)
    warped, holes = input_image_warp(batch.sources[0], batch.c2w[0, 2, truth], batch.K[0, 2, truth], depth=read[0])
    assert rec["input_warp"]["truth"]["psnr"] == pytest.approx(report._scores(warped, batch.gt_rgb[0, 2, truth])["psnr"])
    regions = rec["regions"]
    assert regions["holes_fraction"] == pytest.approx(float(holes.float().mean()))
    assert 0.0 < regions["holes_fraction"] < 0.5
    # Pooled over both regions, each method's squared error is its whole-frame error.
    for method in ("student", "nearest", "input_warp", "input_warp_exact"):
        f, part = regions["holes_fraction"], regions[method]
        mse = (1 - f) * 10 ** (-part["covered"]["psnr"] / 10) + f * 10 ** (-part["holes"]["psnr"] / 10)
        frame_mse = [10 ** (-p / 10) for p in [rec[method]["truth"]["psnr"]]]
        assert mse == pytest.approx(frame_mse[0], rel=0.15) and 0 < part["holes"]["lpips"] < 1
    # In the holes the warp is the nearest frame: the same scores.
    assert regions["input_warp"]["holes"]["psnr"] == pytest.approx(regions["nearest"]["holes"]["psnr"])
    # Without the student's depth, both warps lift the clip's: the same row twice.
    exact = EvalReport(EvalConfig(lpips_net="alex", baselines=["input_warp", "input_warp_exact"])).add(batch, batch.rgb)[0]
    assert exact["input_warp"]["truth"] == exact["input_warp_exact"]["truth"]
    summary = summarize([rec])
    assert summary["regions/student/holes/psnr@spiral"] == regions["student"]["holes"]["psnr"]
    table = format_table(summary)
    assert "has holes (spiral" in table and "input_warp (the depth the student reads)" in table
