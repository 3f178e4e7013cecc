"""The decoder's optional input depth: the warp, the noise model, the decoder and the student."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import decoder_inputs, synthetic_batch, tiny_decoder, tiny_student

from lyra.models.decoders.input_depth import (
    depth_features,
    fill_holes,
    hidden_from_input,
    landing_cells,
    perturb_depth,
    points_for_grid,
    warp_depth,
)
from lyra.models.student_inputs import hole_weights, input_coverage, input_depth
from lyra.render.cameras import c2w_to_viewmat, look_at, make_intrinsics, pixel_rays, world_to_pixels

H = W = 32


def _camera(eye, target=(0.0, 0.0, 0.0)):
    return look_at(torch.tensor(eye, dtype=torch.float32), torch.tensor(target, dtype=torch.float32))


K = make_intrinsics(30.0, 30.0, W / 2, H / 2)


def test_warp_into_its_own_camera_gives_the_depth_back():
    src = _camera([0.0, 0.0, -3.0])
    depth = 2.0 + torch.rand(1, H, W)
    out, _ = warp_depth(depth, src[None], K[None], src[None, None], K[None, None], (H, W))
    assert torch.allclose(out[0, 0], depth[0], rtol=1e-4)


@pytest.mark.parametrize("grid, stride, per_pixel", [((32, 32), 1, 16), ((16, 16), 1, 4), ((8, 8), 1, 1),
                                                     ((4, 4), 1, 1), ((4, 4), 2, 1 / 4)])
def test_points_for_grid_reads_enough_points_per_cell_or_one_per_stride_block(grid, stride, per_pixel):
    src = _camera([0.0, 0.0, -3.0])
    depth = 2.0 + torch.rand(1, H, W)
    points, known = points_for_grid(depth, src[None], K[None], grid, stride)
    assert points.shape[1] == H * W * per_pixel and known.all()
    if stride == 1:
        return
    # one point per 2 x 2 block: the centre of its pixel (1, 1), at that pixel's depth
    uv, z = world_to_pixels(points, c2w_to_viewmat(src)[None], K[None])
    centres = torch.stack(torch.meshgrid(torch.arange(1, H, 2) + 0.5, torch.arange(1, W, 2) + 0.5, indexing="xy"), -1)
    assert torch.allclose(uv[0], centres.reshape(-1, 2), atol=1e-4)
    assert torch.allclose(z[0], depth[0, 1::2, 1::2].reshape(-1), rtol=1e-4)


def test_a_strided_warp_onto_coarse_cells_matches_the_full_one_on_smooth_depth():
    src = _camera([0.0, 0.0, -3.0])
    plane = torch.full((1, H, W), 3.0)
    cams = torch.stack([src, _camera([0.4, -0.2, -3.2], (0.4, -0.2, 0.0))])[None]
    full = warp_depth(plane, src[None], K[None], cams, K.expand(1, 2, 3, 3), (4, 4))
    sparse = warp_depth(plane, src[None], K[None], cams, K.expand(1, 2, 3, 3), (4, 4), stride=2)
    assert torch.equal(full[0] > 0, sparse[0] > 0)
    assert torch.allclose(full[0], sparse[0], rtol=0.02)
    with pytest.raises(ValueError, match="stride"):
        warp_depth(plane, src[None], K[None], cams, K.expand(1, 2, 3, 3), (4, 4), stride=0)


def test_warp_moves_with_the_camera_and_leaves_unseen_cells_unknown():
    src = _camera([0.0, 0.0, -3.0])
    plane = torch.full((1, H, W), 3.0)  # the plane z = 0 in world, 3 in front of the source camera
    back = _camera([0.0, 0.0, -4.0])  # one unit further back: the plane is at depth 4, and covers less
    side = _camera([2.0, 0.0, -3.0], (2.0, 0.0, 0.0))  # slid sideways: the left part sees nothing
    out = warp_depth(plane, src[None], K[None], torch.stack([back, side])[None], K.expand(1, 2, 3, 3), (8, 8))[0][0]
    assert torch.allclose(out[0, 2:6, 2:6], torch.full((4, 4), 4.0), rtol=1e-4)
    assert (out[0, 0] == 0).all()  # the border beyond the plane's edge: nothing lands there
    assert torch.allclose(out[1][out[1] > 0], torch.tensor(3.0), rtol=1e-4)
    assert (out[1][:, 6:] == 0).all() and (out[1][:, :3] > 0).all()


def test_warp_keeps_the_nearest_surface_and_skips_unknown_pixels():
    src = _camera([0.0, 0.0, -3.0])
    depth = torch.full((1, H, W), 3.0)
    depth[0, 12:20, 12:20] = 1.5  # a near square in front of the plane
    depth[0, :4] = 0  # unknown rows project nothing
    side = _camera([0.3, 0.0, -3.0], (0.3, 0.0, 0.0))
    out = warp_depth(depth, src[None], K[None], torch.stack([src, side])[None], K.expand(1, 2, 3, 3), (H, W))[0][0]
    assert (out[0, :4] == 0).all()
    assert torch.allclose(out[0, 14, 14], torch.tensor(1.5))
    # From the side the square moves more than the plane behind it; where both land, the square wins.
    assert (out[1] == 1.5).sum() >= 8 * 6 and ((out[1] - 1.5).abs() < 1e-4).sum() == (out[1] == 1.5).sum()
    filled = torch.zeros_like(out, dtype=torch.bool)
    filled[0, 0, 0] = True
    feats = depth_features(out, filled)
    assert torch.equal(feats[..., 1], ((out > 0) & ~filled).float()) and (feats[..., 0][out == 0] == 0).all()
    assert torch.equal(feats[..., 2], filled.float())


def test_sky_is_told_apart_from_holes_and_holes_fill_from_the_background():
    src = _camera([0.0, 0.0, -3.0])
    depth = torch.full((1, H, W), 3.0)
    depth[0, 14:18, 14:18] = 1.0  # a near square: stepping sideways uncovers the plane behind it
    depth[0, :6] = 0  # sky above
    side = _camera([0.4, 0.0, -3.0], (0.4, 0.0, 0.0))
    def warp(fill):
        d, f = warp_depth(depth, src[None], K[None], side[None, None], K[None, None], (H, W), fill)
        return d[0, 0], f[0, 0]

    out, none = warp(0)
    assert not none.any() and (out[:6] == 0).all()  # the sky's rows: nothing known lands there
    hole = out == 0
    hole[:6] = False
    assert hole[8:24].any()  # the disocclusion beside the square
    got, filled = warp(4)
    assert (got[:6] == 0).all() and (warp(H)[0][:6] == 0).all()  # sky is never filled ...
    assert torch.equal(filled, hole & (got > 0))  # ... holes are
    assert torch.allclose(got[filled & (torch.arange(H)[:, None] > 8)], torch.tensor(3.0))  # the plane, not the square
    # A hole next to sky and to nothing known becomes sky, not ground.
    d, s = torch.zeros(1, 6, 6), torch.zeros(1, 6, 6, dtype=torch.bool)
    d[0, 4:] = 2.0
    s[0, :2] = True
    got, filled = fill_holes(d, s, 3)
    assert (got[0, 3] == 2.0).all() and (got[0, :3] == 0).all() and not filled[0, :3].any()


def test_warp_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="depth must be"):
        warp_depth(torch.ones(H, W), torch.eye(4)[None], K[None], torch.eye(4)[None, None], K[None, None], (4, 4))


def test_perturb_depth_is_smooth_fixed_per_seed_and_keeps_unknown():
    depth = torch.full((2, H, W), 5.0)
    depth[:, 0] = 0
    a, b = perturb_depth(depth, 0.1, [1, 2]), perturb_depth(depth, 0.1, [1, 2])
    assert torch.equal(a, b) and not torch.equal(a[0], a[1])
    assert (a[:, 0] == 0).all() and torch.equal(perturb_depth(depth, 0.0, [1, 2]), depth)
    err = (a[:, 1:] / 5.0).log()
    assert 0.02 < float(err.std()) < 0.3  # of the requested size ...
    assert float((err[:, :, 1:] - err[:, :, :-1]).abs().max()) < 0.1  # ... and smooth: neighbours agree
    with pytest.raises(ValueError, match="one seed per batch item"):
        perturb_depth(depth, 0.1, [1])


def _decoders(**kw):
    """The same weights with and without input depth (its embed starts at zero)."""
    plain = tiny_decoder(**kw)
    reader = tiny_decoder(input_depth=True, **kw)
    missing, unexpected = reader.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("depth_reader.") for k in missing)
    return plain, reader


def test_decoder_places_gaussians_at_the_input_depth_and_is_unchanged_where_it_is_unknown():
    lat, c2w, Ks = decoder_inputs(V=2, T=5, h=4, w=4)
    plain, reader = _decoders()
    unknown = torch.zeros(1, 32, 32)
    with torch.no_grad():
        g0, g1 = plain(lat, c2w, Ks), reader(lat, c2w, Ks, input_depth=unknown)
        assert torch.allclose(g0.means, g1.means, atol=1e-5) and torch.allclose(g0.colors, g1.colors)
        reader.readout.weight[:, 0] = 0  # distance channel 0: no correction of the input depth
        reader.readout.bias[0] = 0
        depth = 2.0 + torch.rand(1, 32, 32)
        g = reader(lat, c2w, Ks, input_depth=depth)
    got = reader.gaussian_depths(g, c2w, (32, 32))[:, 0, 0]  # trajectory 0, frame 0: the input camera
    want = warp_depth(depth, c2w[:, 0, 0], Ks[:, 0, 0], c2w[:, :1, :1], Ks[:, :1, :1], got.shape[-2:])[0][:, 0, 0]
    assert torch.allclose(got, want, rtol=1e-4)
    # Any correction stays within the configured range.
    reader.readout.bias.data[0] = 50.0
    with torch.no_grad():
        far = reader.gaussian_depths(reader(lat, c2w, Ks, input_depth=depth), c2w, (32, 32))[:, 0, 0]
    assert torch.allclose(far / want, torch.tensor(torch.e ** 0.5), rtol=1e-4)


def test_decoder_learns_from_the_input_depth():
    lat, c2w, Ks = decoder_inputs(V=2, T=5, h=4, w=4)
    _, reader = _decoders()
    g = reader(lat, c2w, Ks, input_depth=2.0 + torch.rand(1, 32, 32))
    (g.colors.sum() + g.means.sum()).backward()
    assert reader.depth_reader.embed.proj.weight.grad.abs().sum() > 0  # the embed can move off zero


def test_decoder_input_depth_errors_and_config_round_trip(tmp_path):
    lat, c2w, Ks = decoder_inputs(V=2, T=5, h=4, w=4)
    plain, reader = _decoders()
    with pytest.raises(ValueError, match="needs `input_depth`"):
        reader(lat, c2w, Ks)
    with pytest.raises(ValueError, match="built without input_depth"):
        plain(lat, c2w, Ks, input_depth=torch.ones(1, 32, 32))
    with pytest.raises(ValueError, match=r"input_depth must be \[B, H, W\]"):
        reader(lat, c2w, Ks, input_depth=torch.ones(1, 16, 16))
    with pytest.raises(ValueError, match="finite and >= 0"):
        reader(lat, c2w, Ks, input_depth=-torch.ones(1, 32, 32))
    with pytest.raises(ValueError, match="input_depth_fill must be >= 0"):
        tiny_decoder(input_depth=True, input_depth_fill=-1)
    with pytest.raises(ValueError, match="input_depth_token_stride must be >= 1"):
        tiny_decoder(input_depth=True, input_depth_token_stride=0)
    with pytest.raises(ValueError, match=r"needs `input_depth` \[B, T, H, W\]"):  # the dynamic one reads a video
        tiny_decoder(dynamic=True, input_depth=True)(lat, c2w, Ks, time=torch.zeros(c2w.shape[:3]),
                                                      target_time=torch.zeros(1, 1))
    reader.save_pretrained(tmp_path)
    back = type(reader).from_pretrained(tmp_path)
    assert back.config.input_depth and back.config.input_depth_range == 0.5
    assert torch.equal(back.depth_reader.embed.proj.weight, reader.depth_reader.embed.proj.weight)
    sparse = tiny_decoder(input_depth=True, input_depth_token_stride=2)
    sparse.save_pretrained(tmp_path / "sparse")
    assert type(sparse).from_pretrained(tmp_path / "sparse").depth_reader.token_stride == 2


def test_hidden_from_input_is_what_lies_behind_its_surface_or_outside_its_view():
    cam = _camera([0.0, 0.0, -3.0])  # looks at the world origin along +z: camera depth = world z + 3
    depth = torch.full((1, H, W), 3.0)
    depth[:, :, : W // 4] = 0.0  # the left quarter is sky
    pts = torch.tensor([[0.0, 0.0, -1.0],   # in front of the surface: shown empty
                        [0.0, 0.0, 0.0],    # on it
                        [0.0, 0.0, 0.2],    # within the margin behind it
                        [0.0, 0.0, 1.0],    # behind it: hidden
                        [9.0, 0.0, 1.0],    # outside the view: hidden
                        [0.0, 0.0, -4.0]])  # behind the camera: hidden
    origins, dirs = pixel_rays(cam[None], K[None], H, W)  # a point 4 deep on a ray through the sky
    ray = dirs[0, H // 2, 2]
    pts = torch.cat([pts, (origins[0, H // 2, 2] + ray * 4.0 / (ray @ cam[:3, 2]))[None]])  # shown (sky beyond it)
    got = hidden_from_input(pts[None], depth, cam[None], K[None], margin=0.1)[0]
    assert got.tolist() == [False, False, False, True, True, True, False]


def test_hidden_grid_opacity_opens_only_the_grid_gaussians_the_input_cannot_show():
    lat, c2w, Ks = decoder_inputs(V=2, T=5, h=4, w=4)
    _, reader = _decoders()
    opened = tiny_decoder(input_depth=True, hidden_grid_opacity=2.0)
    opened.load_state_dict(reader.state_dict())
    depth = torch.zeros(1, 32, 32)
    depth[:, :, :16] = 3.0  # the input sees a surface on its left half, sky on the right
    with torch.no_grad():
        a, b = reader(lat, c2w, Ks, input_depth=depth), opened(lat, c2w, Ks, input_depth=depth)
    hidden = hidden_from_input(a.means, depth, c2w[:, 0, 0], Ks[:, 0, 0])
    assert hidden.any() and (~hidden).any()
    torch.testing.assert_close(b.opacities[~hidden], a.opacities[~hidden])
    torch.testing.assert_close(torch.logit(b.opacities[hidden]), torch.logit(a.opacities[hidden]) + 2.0, rtol=0, atol=1e-3)
    torch.testing.assert_close(b.means, a.means)
    for bad in (-1.0, float("nan")):
        with pytest.raises(ValueError, match="hidden_grid_opacity must be a finite log-odds >= 0"):
            tiny_decoder(input_depth=True, hidden_grid_opacity=bad)
    with pytest.raises(ValueError, match="build the decoder with input_depth=True"):
        tiny_decoder(hidden_grid_opacity=1.0)


def test_student_reads_the_first_source_frame_with_noise_fixed_per_scene():
    batch = synthetic_batch()
    batch.src_depth = 2.0 + torch.rand(1, 2, 5, 32, 32)
    exact = tiny_student(lpips=False, decoder=tiny_decoder(input_depth=True))
    assert torch.equal(input_depth(batch, False), batch.src_depth[:, 0, 0])
    a, b = input_depth(batch, False, 0.1), input_depth(batch, False, 0.1)
    assert torch.equal(a, b) and not torch.allclose(a, batch.src_depth[:, 0, 0])
    # The field belongs to the scene, not to the views a sample happened to draw: other source
    # cameras for trajectory 1 (a later use of the same clip) give the same perturbed input depth.
    other = dataclasses.replace(batch, src_c2w=batch.src_c2w.clone())
    other.src_c2w[:, 1, :, :3, 3] += 0.3
    torch.testing.assert_close(input_depth(other, False, 0.1), a, rtol=0, atol=0)
    # ... and two scenes get two fields.
    scene2 = dataclasses.replace(batch, src_depth=batch.src_depth.flip(-1))
    ratio_a, ratio_b = a / batch.src_depth[:, 0, 0], input_depth(scene2, False, 0.1) / scene2.src_depth[:, 0, 0]
    assert not torch.allclose(ratio_a, ratio_b)
    assert exact(batch).num_gaussians > 0
    batch.src_depth = None
    with pytest.raises(ValueError, match="clips carry no depth"):
        exact(batch)
    with pytest.raises(ValueError, match="input_depth_noise"):
        tiny_student(lpips=False, input_depth_noise=-1.0)


def test_landing_cells_are_where_the_lifted_image_shows_something():
    depth = torch.full((1, H, W), 3.0)
    depth[:, :4] = 0  # sky rows: their rays land far out, still something to show
    cam = _camera((0.0, 0.0, -3.0))[None]
    same = landing_cells(depth, cam, K[None], cam[None], K[None, None], (16, 16))
    assert same.all()  # from its own camera the image covers every cell
    side = landing_cells(depth, cam, K[None], _camera((2.0, 0.0, -2.0))[None, None], K[None, None], (16, 16))
    assert 0.05 < float((~side).float().mean()) < 0.9  # turned away: holes beyond the image's edge


def test_student_weights_the_holes_of_its_input_frame():
    batch = synthetic_batch()
    batch.src_depth = 2.5 + torch.rand(1, 2, 5, 32, 32)
    dec = tiny_decoder(input_depth=True, input_image_gaussians=True)
    covered = input_coverage(dec, batch, (16, 16))
    assert covered.shape == (1, 6, 16, 16) and covered.any() and not covered.all()  # the views move: holes open
    weights = hole_weights(dec, batch, 4.0)
    assert weights.shape == (1, 6, 32, 32)
    assert torch.equal(weights == 5.0, (~covered).repeat_interleave(2, -2).repeat_interleave(2, -1))
    assert ((weights == 1.0) | (weights == 5.0)).all()
    plain = tiny_student(lpips=False, decoder=dec)
    weighted = tiny_student(lpips=False, decoder=dec, hole_weight=4.0)
    a, b = plain._step(batch, "train")[0].terms, weighted._step(batch, "train")[0].terms
    assert not torch.allclose(a["mse"], b["mse"])  # the holes weigh more
    with pytest.raises(ValueError, match="hole_weight needs a decoder that reads the input depth"):
        tiny_student(lpips=False, hole_weight=1.0)
