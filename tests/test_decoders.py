"""Gaussian decoders: shapes, activations, world-frame equivariance, zero-init conditioning,
diffusers-style save/load, and bad input."""

import pytest
import torch
from conftest import TINY_DECODER as TINY
from conftest import decoder_inputs as inputs

from lyra.models.decoders import (
    DynamicGaussianDecoder,
    GaussianDecoder,
    StaticGaussianDecoder,
)
from lyra.render.cameras import look_at


def test_static_decoder_shapes_and_activation_ranges():
    torch.manual_seed(0)
    dec = StaticGaussianDecoder(**TINY)
    lat, c2w, K = inputs(B=2, V=2, T=5)
    g = dec(lat, c2w, K)
    assert g.batch_shape == (2,) and g.num_gaussians == 2 * 5 * 4 * 4  # one per latent pixel per frame
    assert (g.opacities > 0).all() and (g.opacities < 1).all()
    assert (g.scales > 0).all() and (g.scales <= 0.3 + 1e-6).all()
    assert ((g.colors >= 0) & (g.colors <= 1)).all()
    torch.testing.assert_close(g.quats.norm(dim=-1), torch.ones(2, g.num_gaussians))
    # Every Gaussian lies on its pixel's ray within [near, far] of the camera centre.
    d = (g.means.reshape(2, 2, 5, 16, 3) - c2w[:, :, :, None, :3, 3]).norm(dim=-1)
    assert (d >= 0.1 - 1e-4).all() and (d <= 20.0 + 1e-3).all()


def test_static_decoder_is_equivariant_to_the_world_frame():
    """Moving the whole world rigidly moves the Gaussians with it (cameras are made relative)."""
    torch.manual_seed(1)
    dec = StaticGaussianDecoder(**TINY).eval()
    lat, c2w, K = inputs(V=2, T=5)
    Rt = look_at(torch.tensor([1.0, -2.0, 0.5]), torch.tensor([0.3, 0.1, 2.0]))  # a rigid transform
    g0 = dec(lat, c2w, K)
    g1 = dec(lat, Rt @ c2w, K)
    moved = g0.means @ Rt[:3, :3].T + Rt[:3, 3]
    torch.testing.assert_close(g1.means, moved, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(g1.colors, g0.colors, atol=1e-5, rtol=1e-5)
    from lyra.render.rotations import quat_to_rotmat

    torch.testing.assert_close(quat_to_rotmat(g1.quats), Rt[:3, :3] @ quat_to_rotmat(g0.quats), atol=1e-4, rtol=1e-4)


def raw_of(dec, lat, c2w, K):  # one scene: tokens -> body -> head, before activation
    tokens = dec.tokens(lat, c2w, K)  # [1, V, L, D]
    V, L, D = tokens.shape[1:]
    Tl, h, w = lat.shape[-3:]
    p = dec.config.patch_size
    x = dec.blocks(tokens.reshape(1, V * L, D)).reshape(V, Tl, h // p, w // p, D).permute(0, 4, 1, 2, 3)
    return dec.head(x, lat, 1)


def test_ray_embedding_starts_at_zero_and_rays_then_matter():
    torch.manual_seed(2)
    dec = StaticGaussianDecoder(**TINY).eval()
    lat, c2w, K = inputs()
    other = c2w.clone()
    other[..., :3, 3] += torch.randn_like(other[..., :3, 3]) * 0.2
    with torch.no_grad():
        r0 = raw_of(dec, lat, c2w, K)
        r1 = raw_of(dec, lat, other, K)
    torch.testing.assert_close(r0, r1)  # zero-initialised ray branch: cameras do not change raw outputs
    torch.nn.init.normal_(dec.tokens.ray_embed.proj.weight, std=0.1)
    with torch.no_grad():
        r1 = raw_of(dec, lat, other, K)
    assert not torch.allclose(r0, r1)


def test_dynamic_decoder_one_set_per_target_time_and_static_at_init():
    torch.manual_seed(3)
    dyn = DynamicGaussianDecoder(**TINY).eval()
    lat, c2w, K = inputs(B=2)
    time = torch.linspace(0, 1, 5).expand(2, 2, 5)
    g = dyn(lat, c2w, K, time=time, target_time=torch.tensor([[0.0, 0.5, 1.0]] * 2))
    assert g.batch_shape == (2, 3)
    # Zero-initialised time branches: all target times equal the static decoder with the same weights.
    static = StaticGaussianDecoder(**TINY).eval()
    static.load_state_dict({k: v for k, v in dyn.state_dict().items() if "time" not in k})
    gs = static(lat, c2w, K)
    for m in range(3):
        torch.testing.assert_close(g.means[:, m], gs.means, atol=1e-5, rtol=1e-5)
    torch.nn.init.normal_(dyn.time.target.weight, std=0.5)
    g = dyn(lat, c2w, K, time=time, target_time=torch.tensor([[0.0, 1.0]] * 2))
    assert not torch.allclose(g.means[:, 0], g.means[:, 1])
    with pytest.raises(ValueError, match="target_time"):
        dyn(lat, c2w, K)


@pytest.mark.parametrize("layout", [{}, {"gaussian_frames": "latent", "density": 2, "latent_frames_per_view": 2}])
def test_dynamic_decoder_reads_the_latent_skip_like_the_static_one(layout):
    """With time branches at zero a dynamic decoder equals the static one, latent skip included
    (a dynamic decoder that dropped the skip lost all colour after the least-squares start)."""
    torch.manual_seed(8)
    cfg = {**TINY, **layout, "latent_skip": True}
    static = StaticGaussianDecoder(**cfg).eval()
    torch.nn.init.normal_(static.head.skip.weight, std=0.3)
    dyn = DynamicGaussianDecoder(**cfg).eval()
    dyn.load_state_dict(static.state_dict(), strict=False)
    lat, c2w, K = inputs(B=2, T=9)  # two scenes: each target time must read its own scene's latents
    gs = static(lat, c2w, K)
    g = dyn(lat, c2w, K, time=torch.linspace(0, 1, 9).expand(2, 2, 9), target_time=torch.tensor([[0.0, 1.0]] * 2))
    for m in range(2):
        torch.testing.assert_close(g.colors[:, m], gs.colors, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(g.means[:, m], gs.means, atol=1e-5, rtol=1e-5)


def test_save_pretrained_round_trip_and_wrong_class(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch.manual_seed(4)
    dec = StaticGaussianDecoder(**TINY).eval()
    dec.save_pretrained(tmp_path / "static")
    back = StaticGaussianDecoder.from_pretrained(tmp_path / "static").eval()
    lat, c2w, K = inputs()
    torch.testing.assert_close(back(lat, c2w, K).means, dec(lat, c2w, K).means)
    assert type(GaussianDecoder.from_pretrained(tmp_path / "static")) is StaticGaussianDecoder
    with pytest.raises(ValueError, match="StaticGaussianDecoder"):
        DynamicGaussianDecoder.from_pretrained(tmp_path / "static")
    with pytest.raises(FileNotFoundError, match="save_pretrained"):
        StaticGaussianDecoder.from_pretrained(tmp_path / "missing")


@pytest.mark.parametrize(
    "mutate,match",
    [
        (lambda l, c, k: (l[:, :, :4], c, k), "channels"),
        (lambda l, c, k: (l, c[:, :, :4], k[:, :, :4]), "do not fit a codec"),
        (lambda l, c, k: (l, torch.cat([c, c[:, :, :4]], 2), torch.cat([k, k[:, :, :4]], 2)), "latent frames"),
        (lambda l, c, k: (l.index_fill(0, torch.tensor([0]), float("nan")), c, k), "NaN"),
        (lambda l, c, k: (l, c.index_fill(0, torch.tensor([0]), float("inf")), k), "NaN or Inf"),
        (lambda l, c, k: (l[..., :3], c, k), "not a multiple of 16 pixels"),
    ],
)
def test_bad_inputs(mutate, match):
    dec = StaticGaussianDecoder(**TINY)
    with pytest.raises(ValueError, match=match):
        dec(*mutate(*inputs()))


@pytest.mark.parametrize("density", [2, 4])
def test_density_puts_k_by_k_gaussians_on_the_sub_pixel_rays(density, tmp_path):
    """density k: k x k Gaussians per latent pixel, each on the ray through its own block's centre."""
    dec = StaticGaussianDecoder(**{**TINY, "density": density}).eval()
    lat, c2w, K = inputs(B=1, V=2, T=5)
    g = dec(lat, c2w, K)
    assert g.num_gaussians == 2 * 5 * (4 * density) ** 2
    # Project every Gaussian into its own camera: it must sit on the centre of its block.
    from lyra.render.cameras import c2w_to_viewmat, world_to_pixels

    means = g.means.reshape(2, 5, 4 * density, 4 * density, 3)
    uv, _ = world_to_pixels(means[0, 0].reshape(-1, 3), c2w_to_viewmat(c2w[0, 0, 0]), K[0, 0, 0])
    step = 8 / density  # pixels per Gaussian: the codec's 8 px latent pixel split k ways
    centres = (torch.arange(4 * density) + 0.5) * step
    v, u = torch.meshgrid(centres, centres, indexing="ij")
    torch.testing.assert_close(uv, torch.stack([u, v], -1).reshape(-1, 2), atol=1e-3, rtol=0)
    dec.save_pretrained(tmp_path / "d")
    back = StaticGaussianDecoder.from_pretrained(tmp_path / "d")
    assert back.config.density == density
    torch.testing.assert_close(back.eval()(lat, c2w, K).means, g.means)


def test_density_must_divide_the_codec_factor():
    with pytest.raises(ValueError, match="density"):
        StaticGaussianDecoder(**{**TINY, "density": 3})


def test_gradient_checkpointing_is_a_switch_not_architecture(tmp_path):
    dec = StaticGaussianDecoder(**TINY)
    assert "gradient_checkpointing" not in dec.config
    dec.enable_gradient_checkpointing()
    assert dec.blocks.gradient_checkpointing and dec.is_gradient_checkpointing
    dec.save_pretrained(tmp_path / "d")
    assert not StaticGaussianDecoder.from_pretrained(tmp_path / "d").is_gradient_checkpointing


def test_footprint_scales_cover_half_a_block_at_any_distance():
    dec = StaticGaussianDecoder(**{**TINY, "scale_mode": "footprint", "density": 2})
    for p in dec.parameters():
        torch.nn.init.zeros_(p)  # raw outputs all zero: the activations' biases alone decide
    lat, c2w, K = inputs(B=1, V=1, T=5)
    g = dec(lat, c2w, K)
    dist = (g.means.reshape(5, -1, 3) - c2w[0, 0, :, None, :3, 3]).norm(dim=-1).reshape(-1)
    block_px = 8 / 2  # an 8x codec at density 2: one Gaussian per 4x4 pixels
    want = dist * block_px / 40.0 / 2  # fx = 40 px; half a block
    torch.testing.assert_close(g.scales[0], want[:, None].expand(-1, 3), atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="scale_mode"):
        StaticGaussianDecoder(**{**TINY, "scale_mode": "relative"})


def test_latent_skip_starts_as_a_no_op_then_carries_latents():
    torch.manual_seed(5)
    plain = StaticGaussianDecoder(**TINY).eval()
    skip = StaticGaussianDecoder(**{**TINY, "latent_skip": True}).eval()
    skip.load_state_dict(plain.state_dict(), strict=False)
    lat, c2w, K = inputs()
    torch.testing.assert_close(skip(lat, c2w, K).colors, plain(lat, c2w, K).colors)
    torch.nn.init.normal_(skip.head.skip.weight, std=0.1)
    a, b = skip(lat, c2w, K).colors, skip(lat * 2, c2w, K).colors
    assert not torch.allclose(a, b)


def test_gaussian_depths_lay_gaussians_back_on_their_grid():
    dec = StaticGaussianDecoder(**{**TINY, "density": 2}).eval()
    lat, c2w, K = inputs(B=2, V=2, T=5)
    g = dec(lat, c2w, K)
    z = dec.gaussian_depths(g, c2w, (32, 32))
    assert z.shape == (2, 2, 5, 8, 8)
    from lyra.render.cameras import c2w_to_viewmat, world_to_pixels

    uv, zz = world_to_pixels(g.means[1].reshape(2, 5, 64, 3)[1, 3], c2w_to_viewmat(c2w[1, 1, 3]), K[1, 1, 3])
    torch.testing.assert_close(z[1, 1, 3].reshape(-1), zz, atol=1e-4, rtol=1e-5)
    depth = torch.arange(32.0)[None, :].expand(1, 1, 5, 32, 32)  # depth = column index
    assert dec.grid_depth(depth)[0, 0, 0, 0].tolist() == [2.0 + 4 * i for i in range(8)]  # 4 px block centres


def test_latent_frame_layout_puts_gaussians_on_one_frame_per_latent_frame():
    dec = StaticGaussianDecoder(**{**TINY, "gaussian_frames": "latent", "density": 2}).eval()
    lat, c2w, K = inputs(B=1, V=2, T=9)
    assert dec.gaussian_frame_indices(9).tolist() == [0, 4, 8]  # the causal codec's lone first frame, then groups
    g = dec(lat, c2w, K)
    assert g.num_gaussians == 2 * 3 * 8 * 8
    z = dec.gaussian_depths(g, c2w, (32, 32))
    from lyra.render.cameras import c2w_to_viewmat, world_to_pixels

    uv, zz = world_to_pixels(g.means[0].reshape(2, 3, 64, 3)[1, 2], c2w_to_viewmat(c2w[0, 1, 8]), K[0, 1, 8])
    torch.testing.assert_close(z[0, 1, 2].reshape(-1), zz, atol=1e-4, rtol=1e-5)  # frame 8's rays
    centres = (torch.arange(8) + 0.5) * 4
    v, u = torch.meshgrid(centres, centres, indexing="ij")
    torch.testing.assert_close(uv, torch.stack([u, v], -1).reshape(-1, 2), atol=1e-3, rtol=0)
    assert dec.grid_depth(torch.ones(1, 2, 9, 32, 32)).shape == (1, 2, 3, 8, 8)


def test_latent_frames_per_view_keeps_the_first_and_last_latent_frames(tmp_path):
    dec = StaticGaussianDecoder(**{**TINY, "gaussian_frames": "latent", "density": 2,
                                   "latent_frames_per_view": 2, "latent_skip": True}).eval()
    assert dec.gaussian_frame_indices(17).tolist() == [0, 16]
    assert dec.gaussian_frame_indices(9).tolist() == [0, 8]
    lat, c2w, K = inputs(B=1, V=2, T=9)
    torch.nn.init.normal_(dec.head.skip.weight, std=0.1)
    g = dec(lat, c2w, K)
    assert g.num_gaussians == 2 * 2 * 8 * 8
    # The Gaussians of the last picked frame sit on frame 8's rays and read latent frame 2.
    from lyra.render.cameras import c2w_to_viewmat, world_to_pixels

    uv, _ = world_to_pixels(g.means[0].reshape(2, 2, 64, 3)[1, 1], c2w_to_viewmat(c2w[0, 1, 8]), K[0, 1, 8])
    centres = (torch.arange(8) + 0.5) * 4
    v, u = torch.meshgrid(centres, centres, indexing="ij")
    torch.testing.assert_close(uv, torch.stack([u, v], -1).reshape(-1, 2), atol=1e-3, rtol=0)
    changed = lat.clone()
    changed[:, :, :, 1] += 1.0  # the middle latent frame: read by the body, emits no Gaussians
    g2 = dec(changed, c2w, K)
    torch.testing.assert_close(dec.head.skip(dec.layout.latent_frames(changed, 3)[0]), dec.head.skip(dec.layout.latent_frames(lat, 3)[0]))
    assert not torch.allclose(g2.means, g.means)  # ... but the body still mixes it in
    dec.save_pretrained(tmp_path / "d")
    back = StaticGaussianDecoder.from_pretrained(tmp_path / "d")
    assert back.config.latent_frames_per_view == 2 and back(lat, c2w, K).num_gaussians == g.num_gaussians
    with pytest.raises(ValueError, match="latent_frames_per_view needs gaussian_frames='latent'"):
        StaticGaussianDecoder(**{**TINY, "latent_frames_per_view": 2})


def test_least_squares_colour_start_zeroes_the_heads_colour_readout():
    torch.manual_seed(7)
    dec = StaticGaussianDecoder(**{**TINY, "density": 2, "gaussian_frames": "latent", "latent_skip": True})
    lat = torch.randn(3, 8, 3, 4, 4)  # [S, C, T', h, w]
    rgb = torch.rand(3, 9, 32, 32, 3)
    err = dec.fit_latent_skip(lat, rgb)
    assert dec.readout.weight[:, 1:4].abs().max() == 0 and dec.readout.bias[1:4].abs().max() == 0
    assert dec.head.skip.weight[:, 1:4].abs().max() > 0 and err > 0
    with pytest.raises(ValueError, match="latent_skip=True"):
        StaticGaussianDecoder(**TINY).fit_latent_skip(lat, rgb)
