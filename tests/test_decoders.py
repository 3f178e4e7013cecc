"""Gaussian decoders: shapes, activations, world-frame equivariance, zero-init conditioning,
diffusers-style save/load, and bad input."""

import pytest
import torch

from lyra.models.decoders import DynamicGaussianDecoder, GaussianDecoder, StaticGaussianDecoder
from lyra.render.cameras import look_at

from conftest import TINY_DECODER as TINY
from conftest import decoder_inputs as inputs

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


@pytest.mark.parametrize("dynamic", [False, True])
def test_depth_in_camera_units_makes_the_decoder_scale_equivariant(dynamic):
    """With depth_units='cameras' a scene scaled by k (cameras moved k times as far) gives the same
    Gaussians scaled by k; in world units it does not."""
    from lyra.models.decoders.static import camera_spread

    lat, c2w, K = inputs(V=2, T=5)
    scaled = c2w.clone()
    scaled[..., :3, 3] *= 3.0
    kw = {"time": torch.linspace(0, 1, 5).repeat(1, 2, 1), "target_time": torch.tensor([[0.0, 1.0]])} if dynamic else {}
    cls = DynamicGaussianDecoder if dynamic else StaticGaussianDecoder
    for units in ("cameras", "world"):
        torch.manual_seed(2)
        dec = cls(**{**TINY, "scale_mode": "footprint", "max_scale": 0.5}, depth_units=units).eval()
        torch.nn.init.normal_(dec.ray_embed.proj.weight, std=0.5)  # trained: the rays matter
        g0, g1 = dec(lat, c2w, K, **kw), dec(lat, scaled, K, **kw)
        same = torch.allclose(g1.means, 3.0 * g0.means, atol=1e-4, rtol=1e-4)
        assert same == (units == "cameras")
        if units == "cameras":
            torch.testing.assert_close(g1.scales, 3.0 * g0.scales, atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(g1.opacities, g0.opacities)
    torch.testing.assert_close(camera_spread(scaled), 3.0 * camera_spread(c2w))
    still = c2w[:, :1, :1].expand_as(c2w)  # cameras that do not move: unit 1, not 0
    assert torch.equal(camera_spread(still), torch.ones(1))
    with pytest.raises(ValueError, match="depth_units"):
        StaticGaussianDecoder(**TINY, depth_units="metres")


def mixed_raw(dec, tokens, lat):  # one scene of two trajectories: tokens -> body -> head
    return dec.decode_tokens(dec.mix_tokens(tokens, tuple(lat.shape[-3:]), 1, 2), lat, 1, 2)


def test_ray_embedding_starts_at_zero_and_rays_then_matter():
    torch.manual_seed(2)
    dec = StaticGaussianDecoder(**TINY).eval()
    lat, c2w, K = inputs()
    other = c2w.clone()
    other[..., :3, 3] += torch.randn_like(other[..., :3, 3]) * 0.2
    with torch.no_grad():
        r0 = mixed_raw(dec, dec.embed_tokens(lat, c2w, K), lat)
        r1 = mixed_raw(dec, dec.embed_tokens(lat, other, K), lat)
    torch.testing.assert_close(r0, r1)  # zero-initialised ray branch: cameras do not change raw outputs
    torch.nn.init.normal_(dec.ray_embed.proj.weight, std=0.1)
    with torch.no_grad():
        r1 = mixed_raw(dec, dec.embed_tokens(lat, other, K), lat)
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
    torch.nn.init.normal_(dyn.target_time_embed.weight, std=0.5)
    g = dyn(lat, c2w, K, time=time, target_time=torch.tensor([[0.0, 1.0]] * 2))
    assert not torch.allclose(g.means[:, 0], g.means[:, 1])
    with pytest.raises(ValueError, match="target_time"):
        dyn(lat, c2w, K)


@pytest.mark.parametrize("layout", [{}, {"gaussian_frames": "latent", "density": 2, "latent_frames_per_view": 2},
                                    {"gaussian_frames": "latent", "head_type": "conv", "head_width": 16}])
def test_dynamic_decoder_reads_the_latent_skip_like_the_static_one(layout):
    """With time branches at zero a dynamic decoder equals the static one, latent skip included
    (a dynamic decoder that dropped the skip lost all colour after the least-squares start)."""
    torch.manual_seed(8)
    cfg = {**TINY, **layout, "latent_skip": True}
    static = StaticGaussianDecoder(**cfg).eval()
    torch.nn.init.normal_(static.skip_head.weight, std=0.3)
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
        (lambda l, c, k: (l[..., :3], c, k), "divisible"),
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
    torch.nn.init.normal_(skip.skip_head.weight, std=0.1)
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
    torch.nn.init.normal_(dec.skip_head.weight, std=0.1)
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
    torch.testing.assert_close(dec.latent_skip_raw(changed), dec.latent_skip_raw(lat))
    assert not torch.allclose(g2.means, g.means)  # ... but the body still mixes it in
    dec.save_pretrained(tmp_path / "d")
    back = StaticGaussianDecoder.from_pretrained(tmp_path / "d")
    assert back.config.latent_frames_per_view == 2 and back(lat, c2w, K).num_gaussians == g.num_gaussians
    with pytest.raises(ValueError, match="latent_frames_per_view needs gaussian_frames='latent'"):
        StaticGaussianDecoder(**{**TINY, "latent_frames_per_view": 2})


def test_conv_head_mixes_neighbouring_latent_pixels_and_saves(tmp_path):
    torch.manual_seed(6)
    lat, c2w, K = inputs(B=1, V=2, T=5, h=8, w=8)
    base = {**TINY, "density": 2, "gaussian_frames": "latent", "patch_size": 1}
    outs = {}
    for kind in ("linear", "conv"):
        dec = StaticGaussianDecoder(**{**base, "head_type": kind, "head_width": 16}).eval()
        for conv in getattr(dec.head, "blocks", []):
            torch.nn.init.normal_(conv.weight, std=0.2)  # trained blocks are not the identity
        tokens = dec.embed_tokens(lat, c2w, K)
        changed = lat.clone()
        changed[0, 0, :, 0, 1, 1] += 3.0  # one latent pixel of one frame
        with torch.no_grad():
            # The same body tokens, so only the head can carry the latent pixel to its neighbours.
            r0 = mixed_raw(dec, tokens, lat)
            r1 = mixed_raw(dec, tokens, changed)
        outs[kind] = (r1 - r0).abs()[0, 0, 0].sum(-1)  # [gh, gw] change per Gaussian of that frame
        assert dec.readout.out_channels == 12
    assert outs["linear"].max() == 0  # the linear head reads tokens only
    moved = outs["conv"] > 0
    # Two 3x3 convolutions at latent resolution: latent pixel 1 reaches latent pixels 0-3 (Gaussians 0-7).
    assert moved[2:4, 2:4].all() and moved[6:8, 2:4].any()
    assert not moved[8:].any() and not moved[:, 8:].any()
    dec.save_pretrained(tmp_path / "c")
    back = StaticGaussianDecoder.from_pretrained(tmp_path / "c")
    assert back.config.head_type == "conv"
    torch.testing.assert_close(back(lat, c2w, K).means, dec(lat, c2w, K).means)
    with pytest.raises(ValueError, match="head_type"):
        StaticGaussianDecoder(**{**base, "head_type": "mlp"})


def test_least_squares_colour_start_zeroes_the_conv_heads_colour_readout():
    torch.manual_seed(7)
    dec = StaticGaussianDecoder(**{**TINY, "density": 2, "gaussian_frames": "latent", "latent_skip": True,
                                   "head_type": "conv", "head_width": 16})
    lat = torch.randn(3, 8, 3, 4, 4)  # [S, C, T', h, w]
    rgb = torch.rand(3, 9, 32, 32, 3)
    dec.fit_latent_skip(lat, rgb)
    assert dec.head.out.weight[:, 1:4].abs().max() == 0 and dec.head.out.bias[1:4].abs().max() == 0
    assert dec.skip_head.weight[:, 1:4].abs().max() > 0


def _plane_frames(P: int = 2, near_z: float = 2.5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A plane at z = 5 seen by two cameras looking down +z, the second one ``near_z`` closer."""
    from lyra.render.cameras import pixel_rays

    cams = torch.eye(4).repeat(1, P, 1, 1)
    cams[0, 1, 2, 3] = near_z
    K = torch.tensor([[8.0, 0, 4], [0, 8, 4], [0, 0, 1]]).repeat(1, P, 1, 1)
    o, d = pixel_rays(cams, K, 8, 8)
    means = (o + d * ((5 - o[..., 2:3]) / d[..., 2:3])).reshape(1, -1, 3)
    return means, cams, K


def test_copy_features_count_the_frames_that_see_a_gaussian_and_its_coarseness():
    from lyra.models.decoders.copies import copy_features

    means, cams, K = _plane_frames()
    f = copy_features(means, cams, K, (8, 8))
    count, coarse = f[0, :, 0].exp().reshape(2, 8, 8), f[0, :, 1].reshape(2, 8, 8)
    # The far camera's centre is inside the near one's view, its border is not.
    assert torch.allclose(count[0, 3:5, 3:5], torch.tensor(2.0)) and torch.allclose(count[0, 0, 0], torch.tensor(1.0))
    assert torch.allclose(count[1], torch.tensor(2.0))  # everything the near camera sees, the far one sees
    # Seen by a camera at half the distance, a far-frame Gaussian is 2x coarser than the finest copy.
    torch.testing.assert_close(coarse[0, 3:5, 3:5], torch.full((2, 2), torch.log(torch.tensor(2.0)).item()))
    assert coarse[0, 0, 0] == 0 and coarse[1].abs().max() == 0
    # A copy off the other frame's surface (beyond the tolerance) is not counted as seen there.
    moved = means.clone()
    moved[0, :64, 2] += 1.0  # the far frame's Gaussians 20 % behind the plane
    f2 = copy_features(moved, cams, K, (8, 8), tolerance=0.1)
    assert torch.allclose(f2[0, 64:, 0].exp(), torch.tensor(1.0))
    with pytest.raises(ValueError, match="not 2 frames of 8x8"):
        copy_features(means[:, :100], cams, K, (8, 8))


def test_copy_features_start_as_a_no_op_then_change_everything_but_depth(tmp_path):
    torch.manual_seed(8)
    base = {**TINY, "density": 2, "gaussian_frames": "latent", "latent_skip": True}
    plain = StaticGaussianDecoder(**base).eval()
    dec = StaticGaussianDecoder(**base, copy_features=True, copy_tolerance=0.2).eval()
    dec.load_state_dict(plain.state_dict(), strict=False)
    lat, c2w, K = inputs(B=1, V=2, T=5)
    g0, g = plain(lat, c2w, K), dec(lat, c2w, K)
    for name in ("means", "quats", "scales", "opacities", "colors"):
        torch.testing.assert_close(getattr(g, name), getattr(g0, name))
    torch.nn.init.normal_(dec.copy_mlp[2].weight, std=0.5)
    g1 = dec(lat, c2w, K)
    torch.testing.assert_close(g1.means, g0.means)  # depth is the input of the features, never their output
    assert not torch.allclose(g1.opacities, g0.opacities) and not torch.allclose(g1.scales, g0.scales)
    dec.save_pretrained(tmp_path / "c")
    back = StaticGaussianDecoder.from_pretrained(tmp_path / "c")
    assert back.config.copy_features and back.config.copy_tolerance == 0.2
    torch.testing.assert_close(back(lat, c2w, K).opacities, g1.opacities)
    # The dynamic decoder computes them per target time.
    dyn = DynamicGaussianDecoder(**base, copy_features=True).eval()
    time = torch.linspace(0, 1, 5).repeat(1, 2, 1)
    assert dyn(lat, c2w, K, time=time, target_time=torch.tensor([[0.0, 1.0]])).batch_shape == (1, 2)
    with pytest.raises(ValueError, match="copy_tolerance"):
        StaticGaussianDecoder(**base, copy_features=True, copy_tolerance=0)
