"""StudentModule: the loss falls, every term is logged, the test report holds the student and its
baselines, PLY export, optimiser groups, starting from trained weights, checkpoint class checks."""

import json

import lightning as L
import pytest
import torch
from conftest import synthetic_batch, tiny_decoder, tiny_student
from torch.utils.data import DataLoader

from lyra.data.clip import Clip, ClipBatch
from lyra.eval import parallax_bin_labels
from lyra.losses.depth import depth_loss, normalize_depth
from lyra.losses.rendering import RenderingLoss
from lyra.models import load_decoder_weights
from lyra.models.student_inputs import source_depth_pairs
from lyra.render.gaussians import Gaussians


class Batches(torch.utils.data.Dataset):
    def __init__(self, n, **kw):
        self.items = [synthetic_batch(seed=i % 2, **kw) for i in range(n)]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def loader(n, **kw):
    return DataLoader(Batches(n, **kw), batch_size=None)


def trainer(tmp_path=None, **kw):
    return L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_checkpointing=False,
                     default_root_dir=tmp_path, **kw)


def loss_of(module, batch):
    with torch.no_grad():
        g = module(batch)
        r = module.render_targets(g, batch)
        return module.loss(r.rgb, batch.rgb.reshape(r.rgb.shape)).total


@pytest.mark.parametrize("dynamic", [False, True])
def test_training_reduces_loss(dynamic):
    module = tiny_student(dynamic)
    batch = synthetic_batch(dynamic=dynamic)
    before = loss_of(module, batch)
    t = trainer(max_steps=30, gradient_clip_val=1.0)
    t.fit(module, train_dataloaders=loader(30, dynamic=dynamic))
    assert loss_of(module, batch) < 0.7 * before
    assert {"train/loss", "train/mse", "train/lpips", "train/depth"} <= set(t.logged_metrics)


def heldout_batches(n: int) -> list[ClipBatch]:
    """Test batches the way the protocol makes them: view 1 held out, its frame 0 not scored."""
    out = []
    for i in range(n):
        b = synthetic_batch(seed=i)
        # Source frames at half brightness: the nearest-frame baseline must return one of them.
        src = Clip(latents=b.latents[0, :1], rgb=0.5 * b.rgb[0, :1], c2w=b.c2w[0, :1], K=b.K[0, :1], time=b.time[0, :1],
                   depth=b.depth[0, :1], gt_rgb=b.gt_rgb[0, :1], depth_is_metric=True)
        b.latents, b.src_c2w, b.src_K, b.src_time = b.latents[:, :1], b.src_c2w[:, :1], b.src_K[:, :1], b.src_time[:, :1]
        b.meta = [{"index": 100 + i, "heldout": [False, True], "heldout_name": "right", "truth_frames": [1, 2]}]
        b.sources = [src]
        out.append(b)
    return out


def test_test_report_holds_student_and_baselines_and_ply(tmp_path):
    module = tiny_student(export_ply=True, evaluation={"lpips_net": "alex", "baselines": ["nearest", "codec"]})
    trainer(tmp_path).test(module, dataloaders=DataLoader(heldout_batches(2), batch_size=None))
    scenes = json.loads((tmp_path / "test" / "scenes.json").read_text())
    summary = json.loads((tmp_path / "test" / "summary.json").read_text())
    assert [s["scene"] for s in scenes] == ["100", "101"] and all(s["heldout"] == "right" for s in scenes)
    assert {"fidelity", "source", "heldout", "truth"} <= set(scenes[0]["student"])
    assert {"nearest", "codec"} <= set(scenes[0])
    assert summary["num_scenes"] == 2
    mean = sum(s["student"]["truth"]["psnr"] for s in scenes) / 2
    assert summary["student/truth/psnr"] == pytest.approx(mean) == pytest.approx(summary["student/truth/psnr@right"])
    # ground truth equals the teacher here, so the codec ceiling is perfect; the nearest frame is a
    # half-bright source frame of the same (camera-independent) image
    gt = synthetic_batch().gt_rgb[0, 1, 1:]
    want = float(-10 * torch.log10(((0.5 * gt - gt) ** 2).flatten(-3).mean(-1)).mean())
    assert summary["codec/truth/psnr"] == 100.0 and summary["nearest/truth/psnr"] == pytest.approx(want, abs=1e-3)
    table = (tmp_path / "test" / "summary.md").read_text()
    assert "| student |" in table and "| nearest |" in table and "(right)" in table
    # Every truth frame with its parallax to the closest source view; pooled by parallax in the summary.
    for s in scenes:
        assert [f["frame"] for f in s["frames"]] == [1, 2]  # the batch's truth frames (no "frames" meta)
        assert sum(f["student_psnr"] for f in s["frames"]) / 2 == pytest.approx(s["student"]["truth"]["psnr"], abs=1e-4)
        assert all(f["nearest_psnr"] == pytest.approx(want, abs=1e-2) for f in s["frames"])
    frames = [f for s in scenes for f in s["frames"]]
    counts = {k.split("|", 1)[1]: v for k, v in summary.items() if k.startswith("frames|")}
    assert sum(counts.values()) == len(frames) == 4
    for label in counts:
        group = [f["student_psnr"] for f in frames
                 if label == parallax_bin_labels([1.0, 4.0])[int(f["parallax_px"] >= 1) + int(f["parallax_px"] >= 4)]]
        assert summary[f"student/truth/psnr|{label}"] == pytest.approx(sum(group) / len(group))
    assert "truth frames by parallax to the closest source view" in table
    plys = sorted((tmp_path / "test" / "ply").glob("*.ply"))
    assert [p.name for p in plys] == ["scene_100_without_right.ply", "scene_101_without_right.ply"]
    from lyra.render.ply import load_ply

    assert load_ply(plys[0]).num_gaussians == 1 * 5 * 4 * 4  # one source view, 5 frames, 4x4 latent pixels


def test_weight_decay_skips_norms_biases_and_ssm_parameters():
    module = tiny_student(weight_decay=0.05)
    opt = module.configure_optimizers()["optimizer"]
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in module.decoder.named_parameters()}
    skipped = {names[id(p)].rsplit(".", 1)[-1] for p in no_decay["params"]}
    assert {"A_log", "D", "dt_bias", "bias"} <= skipped
    assert all(p.ndim >= 2 for p in decay["params"]) and all(p.ndim < 2 for p in no_decay["params"])
    norm = [n for n in names.values() if "norm" in n and n.endswith("weight")]
    assert norm and all(any(names[id(p)] == n for p in no_decay["params"]) for n in norm)


def test_cosine_schedule_ends_at_min_ratio():
    module = tiny_student(lr=1e-2, warmup_steps=2, lr_schedule="cosine", min_lr_ratio=0.1)
    t = trainer(max_steps=10)
    t.fit(module, train_dataloaders=loader(10))
    sched = t.lr_scheduler_configs[0].scheduler
    assert sched.lr_lambdas[0](0) == pytest.approx(0.5) and sched.lr_lambdas[0](2) == pytest.approx(1.0)
    assert sched.lr_lambdas[0](10) == pytest.approx(0.1)


def test_init_from_static_weights_starts_a_dynamic_decoder_identical(tmp_path):
    static = tiny_decoder(seed=1)
    static.save_pretrained(tmp_path / "static")
    dyn = tiny_decoder(dynamic=True, seed=2)
    missing = load_decoder_weights(dyn, tmp_path / "static")
    assert missing and all(k.startswith("time.") for k in missing)
    batch = synthetic_batch(dynamic=True)
    with torch.no_grad():
        g_static = static.eval()(batch.latents, batch.src_c2w, batch.src_K)
        g_dyn = dyn.eval()(batch.latents, batch.src_c2w, batch.src_K, time=batch.src_time,
                           target_time=batch.time.reshape(1, -1))
    torch.testing.assert_close(g_dyn.means[:, 0], g_static.means, atol=1e-5, rtol=1e-5)
    # ... and from a Lightning checkpoint, through the StudentModule setting
    module = tiny_student()
    t = trainer(tmp_path, max_steps=1)
    t.fit(module, train_dataloaders=loader(1))
    t.save_checkpoint(tmp_path / "s.ckpt")
    started = tiny_student(dynamic=True, init_from=str(tmp_path / "s.ckpt"))
    torch.testing.assert_close(started.decoder.head.proj.weight, module.decoder.head.proj.weight)
    assert started.hparams.init_from == str(tmp_path / "s.ckpt")


def test_init_from_refuses_what_does_not_fit(tmp_path):
    tiny_decoder(dynamic=True).save_pretrained(tmp_path / "dyn")
    with pytest.raises(ValueError, match="dynamic decoder"):
        load_decoder_weights(tiny_decoder(), tmp_path / "dyn")
    tiny_decoder(input_depth=True).save_pretrained(tmp_path / "depth")
    with pytest.raises(ValueError, match="reads the input image's depth"):
        load_decoder_weights(tiny_decoder(dynamic=True), tmp_path / "depth")
    assert load_decoder_weights(tiny_decoder(input_depth=True), tmp_path / "depth") == []
    assert load_decoder_weights(tiny_decoder(dynamic=True, input_depth=True), tmp_path / "depth")  # time embeds start fresh
    with pytest.raises(ValueError, match="does not read the input depth.*dynamic_without_input_video"):
        load_decoder_weights(tiny_decoder(dynamic=True, input_depth=True), tmp_path / "dyn")
    tiny_decoder(density=2).save_pretrained(tmp_path / "dense")
    with pytest.raises(ValueError, match="shape mismatches"):
        load_decoder_weights(tiny_decoder(), tmp_path / "dense")
    (tmp_path / "junk.ckpt").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="not a readable Lightning checkpoint"):
        load_decoder_weights(tiny_decoder(), tmp_path / "junk.ckpt")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_decoder_weights(tiny_decoder(), tmp_path / "nothing")


def test_checkpoint_of_another_decoder_class_is_refused(tmp_path):
    module = tiny_student()
    t = trainer(tmp_path, max_steps=1)
    t.fit(module, train_dataloaders=loader(1))
    t.save_checkpoint(tmp_path / "m.ckpt")
    other = tiny_student(dynamic=True)
    with pytest.raises(ValueError, match="StaticGaussianDecoder"):
        other.on_load_checkpoint(torch.load(tmp_path / "m.ckpt", weights_only=False))


def test_rendering_loss_takes_plain_images():
    g = torch.Generator().manual_seed(0)
    rgb, target = torch.rand(2, 3, 16, 16, 3, generator=g), torch.rand(2, 3, 16, 16, 3, generator=g)
    plain = RenderingLoss()  # MSE + depth: needs no LPIPS weights
    out = plain(rgb, target)
    assert set(out.terms) == {"mse"} and out.total == pytest.approx(float(((rgb - target) ** 2).mean()))
    depth, target_depth = torch.rand(2, 3, 16, 16) + 1, torch.rand(2, 3, 16, 16) + 1
    target_depth[..., :4] = 0  # unknown depth is skipped
    out = plain(rgb, target, depth, target_depth, depth_is_metric=True)
    assert out.total == pytest.approx(float(out.terms["mse"] + 0.05 * out.terms["depth"]))
    with pytest.raises(ValueError, match="rendered depth"):
        plain(rgb, target, None, target_depth)
    with pytest.raises(ValueError, match="\\[..., H, W, 3\\]"):
        plain(rgb, target[..., :2])
    # A per-pixel weight: the MSE of the weighted pixels, normalised by the weights.
    weight = torch.ones(2, 3, 16, 16)
    weight[..., :8] = 0
    se = ((rgb - target) ** 2).mean(-1)
    assert plain(rgb, target, pixel_weight=weight).terms["mse"] == pytest.approx(float(se[..., 8:].mean()))
    assert plain(rgb, target, pixel_weight=torch.full((2, 3, 16, 16), 7.0)).terms["mse"] == pytest.approx(float(se.mean()))
    full = RenderingLoss(lpips_weight=0.5, lpips_net="alex", lpips_size=32, opacity_regularizer=True)
    big, big_target = torch.rand(2, 48, 48, 3, generator=g), torch.rand(2, 48, 48, 3, generator=g)
    out = full(big, big_target, opacities=torch.full((2, 10), 0.25))
    assert set(out.terms) == {"mse", "lpips", "opacity"}
    torch.testing.assert_close(out.total, out.terms["mse"] + 0.5 * out.terms["lpips"] + 0.1 * 0.25)


def test_lpips_size_downsamples_before_lpips():
    loss = RenderingLoss(lpips_weight=1.0, lpips_net="alex", mse_weight=0.0, lpips_size=32)
    a, b = loss._lpips_inputs(torch.rand(2, 64, 96, 3), torch.rand(2, 64, 96, 3))
    assert a.shape == b.shape == (2, 32, 48, 3)


def test_depth_loss_is_scale_shift_invariant_unless_metric():
    g = torch.Generator().manual_seed(0)
    d = torch.rand(2, 8, 8, generator=g) + 1
    assert depth_loss(3 * d + 2, d) < 1e-6
    assert depth_loss(3 * d + 2, d, metric=True) > 0.5
    assert depth_loss(d.flip(-1), d) > 0.1
    n = normalize_depth(d, torch.ones_like(d, dtype=torch.bool))
    torch.testing.assert_close(n.flatten(-2).abs().mean(-1), torch.ones(2), atol=1e-4, rtol=0)


def test_opacity_regularizer_only_when_enabled():
    batch = synthetic_batch()
    module = tiny_student(lpips=False)
    g = module(batch)
    r = module.render_targets(g, batch)
    target = batch.rgb.reshape(r.rgb.shape)
    on = RenderingLoss(opacity_regularizer=True)(r.rgb, target, opacities=g.opacities)
    off = RenderingLoss(opacity_regularizer=False)(r.rgb, target, opacities=g.opacities)
    assert "opacity" in on.terms and "opacity" not in off.terms
    torch.testing.assert_close(on.total - off.total, 0.1 * g.opacities.mean())


def test_prune_keep_keeps_the_most_opaque_fifth():
    module = tiny_student(prune_keep=0.2)
    g = module(synthetic_batch())
    full = module.decoder(synthetic_batch().latents, synthetic_batch().src_c2w, synthetic_batch().src_K)
    assert isinstance(g, Gaussians) and g.num_gaussians == round(0.2 * full.num_gaussians)


def test_gaussian_depth_term_compares_each_gaussian_with_its_pixel_depth():
    loss = RenderingLoss(mse_weight=1.0, depth_weight=0.0, gaussian_depth_weight=1.0)
    rgb = torch.rand(1, 2, 8, 8, 3)
    target_d = torch.full((1, 2, 5, 4, 4), 3.0)
    target_d[..., 0, 0] = 0  # unknown: not counted
    same = loss(rgb, rgb, gaussian_depth=torch.full_like(target_d, 3.0), gaussian_depth_target=target_d,
                depth_is_metric=True)
    assert same.terms["gaussian_depth"] == 0
    off = torch.full_like(target_d, 3.0)
    off[..., 0, 0] = 100.0  # wrong only where depth is unknown
    assert loss(rgb, rgb, gaussian_depth=off, gaussian_depth_target=target_d, depth_is_metric=True).terms[
        "gaussian_depth"] == 0
    twice = loss(rgb, rgb, gaussian_depth=2 * target_d, gaussian_depth_target=target_d, depth_is_metric=True)
    assert twice.terms["gaussian_depth"] == pytest.approx(float(torch.log(torch.tensor(2.0))), rel=1e-5)
    # non-metric depth: only the shape counts (scale and shift free)
    shaped = torch.rand(1, 2, 5, 4, 4) + 1
    assert loss(rgb, rgb, gaussian_depth=5 * shaped + 1, gaussian_depth_target=shaped).terms["gaussian_depth"] < 1e-5


def test_student_supervises_gaussian_depths_from_the_source_frames():
    module = tiny_student(lpips=False)
    module.loss = RenderingLoss(gaussian_depth_weight=1.0)
    batch = synthetic_batch()
    batch.src_depth = torch.full((1, 2, 5, 32, 32), 3.0)
    g = module(batch)
    z = module.decoder.gaussian_depths(g, batch.src_c2w, (32, 32))
    t = trainer(max_steps=40)
    t.fit(module, train_dataloaders=DataLoader([batch] * 40, batch_size=None))
    z_after = module.decoder.gaussian_depths(module(batch), batch.src_c2w, (32, 32))
    assert "train/gaussian_depth" in t.logged_metrics
    assert (z_after - 3.0).abs().mean() < 0.5 * (z - 3.0).abs().mean()


def test_test_report_states_how_far_the_gaussians_are_from_the_clip_depth():
    from lyra.eval.report import EvalReport, format_table, summarize

    module = tiny_student(lpips=False).eval()
    batch = synthetic_batch(H=32, W=32)
    g = module(batch)
    own = module.decoder.gaussian_depths(g, batch.src_c2w, (32, 32))  # [1, V, F, 4, 4]
    s = 32 // own.shape[-1]
    batch.src_depth = own.repeat_interleave(s, -2).repeat_interleave(s, -1)  # the clip agrees with the student
    torch.testing.assert_close(module.depth_error(g, batch)["depth_log_error"], torch.zeros(1), atol=1e-5, rtol=0)
    batch.src_depth = 2 * batch.src_depth
    batch.src_depth[..., :8, :] = 0  # unknown depth does not count
    err = module.depth_error(g, batch)
    assert set(err) == {"depth_log_error"}  # no input depth read: nothing to compare it with
    torch.testing.assert_close(err["depth_log_error"], torch.log(torch.tensor([2.0])), atol=1e-5, rtol=0)
    report = EvalReport({"baselines": []})
    report.add(batch, module.render_targets(g, batch).rgb.reshape(batch.rgb.shape), geometry=err)
    summary = summarize(report.records)
    assert summary["student/geometry/depth_log_error"] == pytest.approx(float(err["depth_log_error"][0]))
    assert "Student geometry" in format_table(summary)
    batch.depth_is_metric = False  # relative depth has no scale to be off by
    assert module.depth_error(g, batch) is None


def test_skip_init_fits_the_colour_readout_before_the_first_step():
    from lyra.data import ClipDataModule, DCTCodec, ProceduralGenerator
    from lyra.models import TeacherModule

    teacher = TeacherModule(ProceduralGenerator(seed=0, num_views=2, num_objects=(2, 3)), DCTCodec(latent_channels=8),
                            num_frames=5, height=32, width=32)
    dm = ClipDataModule(teacher=teacher, num_views=2, target_frames=1, num_train_clips=4, num_val_clips=0,
                        num_test_clips=1)
    module = tiny_student(lpips=False, skip_init_clips=2, lr=1e-9)
    module.decoder = tiny_decoder(latent_skip=True, density=2)
    clip = teacher.make_clip(3)

    def colour_error():
        with torch.no_grad():
            g = module.decoder(clip.latents[None], clip.c2w[None], clip.K[None])
        block = torch.nn.functional.avg_pool2d(clip.rgb.reshape(-1, 32, 32, 3).permute(0, 3, 1, 2), 4)
        return float((g.colors[0].reshape(2, 5, 8, 8, 3) - block.permute(0, 2, 3, 1).reshape(2, 5, 8, 8, 3)).abs().mean())

    before = colour_error()
    trainer(max_steps=1).fit(module, datamodule=dm)
    after = colour_error()
    assert after < 0.5 * before, (before, after)
    with pytest.raises(ValueError, match="latent_skip"):
        tiny_decoder().fit_latent_skip(clip.latents, clip.rgb)


def test_dynamic_gaussian_depth_counts_only_source_frames_shot_at_the_target_time():
    module = tiny_student(dynamic=True, lpips=False)
    module.loss = RenderingLoss(gaussian_depth_weight=1.0)
    batch = synthetic_batch(dynamic=True)  # source times 0, .25, .5, .75, 1; targets at frames 0, 2, 4
    batch.src_depth = torch.full((1, 2, 5, 32, 32), 3.0)
    aligned, target = source_depth_pairs(module.decoder, module(batch), batch)
    M = 2 * 3  # two views x three target frames, one Gaussian set each
    assert aligned.shape == target.shape == (1, M, 2, 5, 4, 4)
    times = batch.time.reshape(-1).tolist()
    for m, t in enumerate(times):
        shot_then = [f for f in range(5) if abs(f / 4 - t) < 1e-6]
        assert (target[0, m, :, shot_then] == 3.0).all()
        others = [f for f in range(5) if f not in shot_then]
        assert (target[0, m, :, others] == 0).all()


def test_downscaled_targets_keep_cameras_consistent_and_train():
    batch = synthetic_batch()
    small = batch.downscale_targets(2)
    assert small.rgb.shape == (1, 2, 3, 16, 16, 3) and small.depth.shape == (1, 2, 3, 16, 16)
    torch.testing.assert_close(small.K[..., 0, 0], batch.K[..., 0, 0] / 2)
    torch.testing.assert_close(small.rgb, torch.nn.functional.avg_pool2d(
        batch.rgb.reshape(-1, 32, 32, 3).permute(0, 3, 1, 2), 2).permute(0, 2, 3, 1).reshape(small.rgb.shape))
    assert small.latents is batch.latents and small.src_K is batch.src_K
    module = tiny_student(lpips=False)
    g = module(batch)
    full, half = module.render_targets(g, batch), module.render_targets(g, small)
    down = torch.nn.functional.avg_pool2d(full.rgb.reshape(-1, 32, 32, 3).permute(0, 3, 1, 2), 2).permute(0, 2, 3, 1)
    assert (half.rgb.reshape(down.shape) - down).abs().mean() < 0.05  # the same scene at half size
    with pytest.raises(ValueError, match="cannot be downscaled"):
        batch.downscale_targets(3)
    module = tiny_student(lpips=False, train_downscale=2)
    t = trainer(max_steps=2)
    t.fit(module, train_dataloaders=loader(2))
    assert "train/mse" in t.logged_metrics
