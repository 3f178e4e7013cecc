"""StudentModule + RenderingLoss on synthetic clips: the loss falls, every term is logged, the
test protocol writes per-scene JSON and a summary, PLY export, and checkpoint class checks."""

import json

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from lyra.data.clip import ClipBatch
from lyra.losses.depth import depth_loss, normalize_depth
from lyra.losses.rendering import RenderingLoss
from lyra.models.decoders import DynamicGaussianDecoder, StaticGaussianDecoder
from lyra.models.student import StudentModule
from lyra.render.cameras import look_at, make_intrinsics

TINY = dict(latent_channels=8, width=32, num_layers=2, pattern="MA", d_state=8, headdim=16, attn_headdim=16,
            chunk_size=8, gradient_checkpointing=False, far=10.0)


def synthetic_batch(seed=0, B=1, V=2, T=5, H=32, W=32, dynamic=False):
    g = torch.Generator().manual_seed(seed)
    h, w = H // 8, W // 8
    eye = torch.randn(B, V, T, 3, generator=g) * 0.2 + torch.tensor([0, 0, -3.0])
    c2w = look_at(eye, torch.zeros(B, V, T, 3))
    K = make_intrinsics(30.0, 30.0, W / 2, H / 2).expand(B, V, T, 3, 3).clone()
    # Target: a two-colour image split by a vertical edge, consistent with a plane.
    rgb = torch.ones(B, V, T, H, W, 3) * torch.tensor([0.9, 0.3, 0.2])
    rgb[..., : W // 2, :] = torch.tensor([0.1, 0.4, 0.8])
    time = torch.linspace(0, 1, T).expand(B, V, T).clone() if dynamic else torch.zeros(B, V, T)
    F = [0, 2, 4]
    return ClipBatch(latents=torch.randn(B, V, 8, 2, h, w, generator=g), src_c2w=c2w, src_K=K, src_time=time,
                     rgb=rgb[:, :, F], c2w=c2w[:, :, F], K=K[:, :, F], time=time[:, :, F],
                     depth=torch.full((B, V, 3, H, W), 3.0), gt_rgb=rgb[:, :, F], depth_is_metric=True,
                     captions=["plane"] * B)


class Batches(torch.utils.data.Dataset):
    def __init__(self, n, **kw):
        self.items = [synthetic_batch(seed=i % 2, **kw) for i in range(n)]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def loader(n, **kw):
    return DataLoader(Batches(n, **kw), batch_size=None)


def make_module(dynamic=False, **kw):
    torch.manual_seed(0)
    dec = (DynamicGaussianDecoder if dynamic else StaticGaussianDecoder)(**TINY)
    loss = RenderingLoss(lpips_weight=0.5, lpips_net="alex", depth_weight=0.05, backend="torch")
    return StudentModule(dec, loss, lr=3e-3, warmup_steps=2, eval_lpips_net="alex", **kw)


@pytest.mark.parametrize("dynamic", [False, True])
def test_training_reduces_loss(dynamic):
    module = make_module(dynamic)
    batch = synthetic_batch(dynamic=dynamic)
    with torch.no_grad():
        before, terms, _ = module.loss(module(batch), batch)
    assert set(terms) == {"mse", "lpips", "depth"}
    trainer = L.Trainer(max_steps=30, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, gradient_clip_val=1.0)
    trainer.fit(module, train_dataloaders=loader(30, dynamic=dynamic))
    with torch.no_grad():
        after, _, _ = module.loss(module(batch), batch)
    assert after < 0.7 * before, (before, after)
    assert {"train/loss", "train/mse", "train/lpips", "train/depth"} <= set(trainer.logged_metrics)


def test_test_protocol_writes_json_and_ply(tmp_path):
    module = make_module(export_ply=True)
    trainer = L.Trainer(accelerator="cpu", logger=False, default_root_dir=tmp_path, enable_progress_bar=False)
    trainer.test(module, dataloaders=loader(2))
    scenes = json.loads((tmp_path / "test" / "scenes.json").read_text())
    summary = json.loads((tmp_path / "test" / "summary.json").read_text())
    assert len(scenes) == 2 and {"fidelity", "truth"} <= set(scenes[0])
    assert summary["num_scenes"] == 2 and 0 < summary["fidelity_psnr"] < 60
    assert summary["fidelity_psnr"] == pytest.approx(sum(s["fidelity"]["psnr"] for s in scenes) / 2)
    plys = sorted((tmp_path / "test" / "ply").glob("*.ply"))
    assert len(plys) == 2
    from lyra.render.ply import load_ply

    assert load_ply(plys[0]).num_gaussians == 2 * 5 * 4 * 4


def test_checkpoint_of_another_decoder_class_is_refused(tmp_path):
    module = make_module()
    trainer = L.Trainer(max_steps=1, accelerator="cpu", logger=False, default_root_dir=tmp_path,
                        enable_progress_bar=False)
    trainer.fit(module, train_dataloaders=loader(1))
    ckpt = tmp_path / "m.ckpt"
    trainer.save_checkpoint(ckpt)
    other = make_module(dynamic=True)
    with pytest.raises(ValueError, match="StaticGaussianDecoder"):
        other.on_load_checkpoint(torch.load(ckpt, weights_only=False))


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
    dec = StaticGaussianDecoder(**TINY)
    on = RenderingLoss(lpips_weight=0, opacity_regularizer=True, backend="torch")
    off = RenderingLoss(lpips_weight=0, opacity_regularizer=False, backend="torch")
    g = dec(batch.latents, batch.src_c2w, batch.src_K)
    t_on, terms_on, _ = on(g, batch)
    t_off, terms_off, _ = off(g, batch)
    assert "opacity" in terms_on and "opacity" not in terms_off
    torch.testing.assert_close(t_on - t_off, 0.1 * g.opacities.mean())
