import math

import pytest
import torch
import torch.nn.functional as F

from lyra.data.codecs import DEFAULT_LATENT_CHANNELS, DCTCodec, VideoCodec
from lyra.render.cameras import intrinsics_from_fov, look_at, pixel_rays
from lyra.render.trajectories import make_trajectory


def _soft_checker(a, b, period, blur):  # smooth 0/1 tiles; blur = texture-space pixel footprint
    s = torch.sin(math.pi * a / period) * torch.sin(math.pi * b / period)
    return 0.5 + 0.5 * torch.tanh(s / (4 * blur / period + 0.05))


def textured_clip(num_frames=9, size=64, seed=0, kind="spiral", supersample=2):  # [T, H, W, 3]
    """A small ray-cast scene: checkered floor, shaded checkered spheres, sky; camera on a Lyra path."""
    g = torch.Generator().manual_seed(seed)
    rnd = lambda *s: torch.rand(*s, generator=g)  # noqa: E731
    eye, centre = torch.tensor([0.0, -1.5, -4.5]) + 0.3 * (rnd(3) - 0.5), torch.tensor([0.0, 0.5, 0.0])
    c2w = make_trajectory(kind, look_at(eye, centre), centre, num_frames, scene_scale=3.0, generator=g)
    n = size * supersample
    K = intrinsics_from_fov(60.0, n, n)
    o, d = pixel_rays(c2w, K.expand(num_frames, 3, 3), n, n)  # [T, n, n, 3]
    pix = 1.0 / K[0, 0]
    to_light = F.normalize(torch.tensor([0.4, -1.0, -0.3]), dim=0)
    rgb = (torch.tensor([0.55, 0.7, 0.95]) - 0.3 * (-d[..., 1:2]).clamp(0, 1)).expand(num_frames, n, n, 3)
    t = (1.0 - o[..., 1]) / d[..., 1]  # floor y = 1 (world up is -y)
    hit = (d[..., 1] > 1e-6) & (t > 0)
    p = o + t[..., None] * d
    tile = _soft_checker(p[..., 0], p[..., 2], 1.0, t * pix / d[..., 1].clamp_min(0.05))[..., None]
    rgb = torch.where(hit[..., None], (rnd(3) * 0.5 + 0.3) * tile + (rnd(3) * 0.5 + 0.2) * (1 - tile), rgb)
    depth = torch.where(hit, t, torch.full_like(t, float("inf")))
    for i in range(4):
        r = float(0.4 + 0.4 * rnd(()))
        ctr = torch.tensor([float(rnd(()) - 0.5) * 3, 1.0 - r, float(rnd(()) - 0.5) * 3])
        b = ((o - ctr) * d).sum(-1)
        disc = b * b - ((o - ctr) ** 2).sum(-1) + r * r
        t = -b - disc.clamp_min(0).sqrt()
        hit = (disc > 0) & (t > 0) & (t < depth)
        nrm = F.normalize(o + t[..., None] * d - ctr, dim=-1)
        u, v = torch.atan2(nrm[..., 0], nrm[..., 2]) * r, torch.acos(nrm[..., 1].clamp(-1, 1)) * r
        albedo = (rnd(3) * 0.6 + 0.3) * (0.5 + 0.5 * _soft_checker(u, v, 0.4 + 0.2 * i, t * pix)[..., None])
        shade = 0.3 + 0.7 * (nrm * to_light).sum(-1, keepdim=True).clamp_min(0)
        rgb = torch.where(hit[..., None], albedo * shade, rgb)
        depth = torch.where(hit, t, depth)
    rgb = F.avg_pool2d(rgb.clamp(0, 1).permute(0, 3, 1, 2), supersample)
    return rgb.permute(0, 2, 3, 1).contiguous()


def psnr(a, b):  # [B, ...] x2 -> [B]
    return -10 * torch.log10((a - b).pow(2).flatten(1).mean(1))


@pytest.fixture(scope="module")
def clips():  # [3, 9, 64, 64, 3]
    return torch.stack([textured_clip(9, 64, seed=s, kind=k) for s, k in enumerate(("left", "spiral", "zoom_in"))])


@pytest.mark.parametrize("num_frames", [1, 5, 9, 17])
def test_shapes_follow_causal_formula(num_frames):
    codec = DCTCodec()
    rgb = torch.rand(2, num_frames, 32, 48, 3)
    z = codec.encode(rgb)
    assert z.shape == (2, DEFAULT_LATENT_CHANNELS, 1 + (num_frames - 1) // 4, 4, 6)
    assert codec.latent_shape(num_frames, 32, 48) == tuple(z.shape[1:])
    assert codec.decode(z).shape == rgb.shape


def test_frame_bookkeeping_causal_and_not():
    causal, grouped = DCTCodec(16), DCTCodec(16, time_factor=4, causal_first_frame=False)
    assert causal.valid_frame_counts(20) == [1, 5, 9, 13, 17]
    assert grouped.valid_frame_counts(20) == [4, 8, 12, 16, 20]
    for t in causal.valid_frame_counts(64):
        assert causal.pixel_frames(causal.latent_frames(t)) == t
    assert grouped.latent_frames(16) == 4 and grouped.pixel_frames(3) == 12
    assert grouped.encode(torch.rand(1, 8, 16, 16, 3)).shape == (1, 16, 2, 2, 2)
    assert DCTCodec(8, time_factor=8, space_factor=16).latent_shape(17, 32, 64) == (8, 3, 2, 4)


def test_invalid_frame_count_lists_neighbours():
    codec = DCTCodec()
    with pytest.raises(ValueError, match=r"10 frames.*1 \+ 4k.*\[5, 9, 13, 17\]"):
        codec.latent_frames(10)
    with pytest.raises(ValueError, match=r"\[5, 9, 13, 17\]"):
        codec.encode(torch.rand(1, 10, 16, 16, 3))
    with pytest.raises(ValueError, match=r"multiple of 4"):
        DCTCodec(causal_first_frame=False).latent_frames(9)
    with pytest.raises(TypeError):
        codec.latent_frames(9.0)


def test_bad_inputs_name_the_fix():
    codec = DCTCodec(16)
    with pytest.raises(ValueError, match=r"height 30 .*\[24, 32\]"):
        codec.encode(torch.rand(1, 5, 30, 16, 3))
    with pytest.raises(ValueError, match=r"\[B, T, H, W, 3\]"):
        codec.encode(torch.rand(5, 16, 16, 3))
    with pytest.raises(ValueError, match="channels-first"):
        codec.encode(torch.rand(1, 5, 3, 16, 16))
    with pytest.raises(TypeError, match="/ 255"):
        codec.encode(torch.randint(0, 255, (1, 5, 16, 16, 3), dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"\(x \+ 1\) / 2"):
        codec.encode(torch.rand(1, 5, 16, 16, 3) * 2 - 1)
    bad = torch.rand(1, 5, 16, 16, 3)
    bad[0, 2, 3, 4, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        codec.encode(bad)
    z = codec.encode(torch.rand(1, 5, 16, 16, 3))
    with pytest.raises(ValueError, match="16"):
        codec.decode(torch.zeros(1, 8, 2, 2, 2))
    with pytest.raises(ValueError, match="NaN or Inf"):
        codec.decode(z.index_fill(2, torch.tensor([1]), float("inf")))
    with pytest.raises(ValueError, match="latents"):
        codec.decode(z[0])
    with pytest.raises(ValueError, match="exceeds"):
        DCTCodec(3 * 4 * 64 + 1)
    with pytest.raises(ValueError, match="positive"):
        DCTCodec(0)


def test_weight_free_and_deterministic(clips):
    a, b = DCTCodec(), DCTCodec()
    assert list(a.parameters()) == [] and a.state_dict() == {}
    assert torch.equal(a.encode(clips), b.encode(clips))
    assert torch.equal(a.decode(a.encode(clips)), b.decode(b.encode(clips)))


def test_default_keeps_30db_and_more_channels_help(clips):
    scores = {c: psnr(DCTCodec(c).decode(DCTCodec(c).encode(clips)), clips).mean().item()
              for c in (16, 64, DEFAULT_LATENT_CHANNELS)}
    assert scores[DEFAULT_LATENT_CHANNELS] >= 30.0, scores
    assert scores[16] < scores[64] < scores[DEFAULT_LATENT_CHANNELS]
    full = DCTCodec(3 * 4 * 64)  # every coefficient: lossless up to float error
    assert torch.allclose(full.decode(full.encode(clips)), clips, atol=1e-5)


def test_encode_is_linear_and_decode_a_projection(clips):
    codec = DCTCodec()
    x, y = clips[0:1], clips[1:2]
    zx, zy = codec.encode(x), codec.encode(y)
    assert torch.allclose(codec.encode((x + y) / 2), (zx + zy) / 2, atol=1e-5)
    assert codec.encode(torch.full_like(x, 0.5)).abs().max() < 1e-6
    mid = 0.25 + 0.5 * x  # far from 0 and 1, so the output clamp never acts
    z = codec.encode(mid)
    assert torch.allclose(codec.encode(codec.decode(z)), z, atol=1e-4)
    # orthogonal projection: the residual is orthogonal to everything the codec can represent
    residual = codec.decode_linear(zx) - x
    assert (residual * (codec.decode_linear(zy) - 0.5)).sum().abs() < 1e-3 * residual.norm() * (y - 0.5).norm()


def test_output_is_clamped_but_linear_decode_is_not():
    codec = DCTCodec(32)
    z = 20 * torch.randn(1, 32, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    raw, out = codec.decode_linear(z), codec.decode(z)
    assert raw.min() < 0 and raw.max() > 1
    assert out.min() >= 0 and out.max() <= 1
    assert torch.equal(out, raw.clamp(0, 1))


def test_gradients_flow_through_encode_and_decode(clips):
    codec = DCTCodec()
    rgb = (0.25 + 0.5 * clips[:1]).requires_grad_(True)
    target = torch.rand_like(rgb)
    loss = (codec.decode(codec.encode(rgb)) - target).pow(2).mean()
    loss.backward()
    assert torch.isfinite(rgb.grad).all() and rgb.grad.abs().sum() > 0
    z = codec.encode(clips[:1]).requires_grad_(True)
    codec.decode_linear(z).mean().backward()
    assert z.grad.abs().sum() > 0


def test_lowest_frequencies_first_and_unit_scale_latents(clips):
    codec = DCTCodec()
    kept = {tuple(k) for k in codec.channel_index.tolist()}  # (colour, temporal, row freq, col freq)
    assert codec.channel_index[0].tolist() == [0, 0, 0, 0]  # luma DC leads
    for c, j, u, v in kept:  # the kept set is closed towards lower frequencies (zig-zag prefix)
        for lower in ((c, j - 1, u, v), (c, j, u - 1, v), (c, j, u, v - 1)):
            assert min(lower) < 0 or lower in kept, (c, j, u, v)
    z = codec.encode(clips)
    rms = z.pow(2).mean(dim=(0, 2, 3, 4)).sqrt()
    assert 0.3 < z.pow(2).mean().sqrt() < 3.0
    assert rms.min() > 0.03 and rms.max() < 10.0


def test_dtype_and_subclass_contract(clips):
    codec = DCTCodec(16)
    assert codec.encode(clips[:1].double()).dtype == torch.float64
    assert isinstance(codec, VideoCodec) and "latent_channels=16" in repr(codec)
    with pytest.raises(TypeError):
        VideoCodec()
