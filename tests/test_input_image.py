"""The decoder's input-image Gaussians: one per input pixel, at its depth, coloured by it."""

import pytest
import torch
from conftest import decoder_inputs, synthetic_batch, tiny_decoder, tiny_student

from lyra.data.clip import Clip, ClipBatch
from lyra.models.decoders import StaticGaussianDecoder
from lyra.models.decoders.activations import colour_logits
from lyra.render.cameras import c2w_to_viewmat, world_to_pixels
from lyra.render.renderer import GaussianRenderer

H = W = 32  # decoder_inputs: 4x4 latents, space factor 8


def smooth_image(B=1):
    yy, xx = torch.meshgrid(torch.linspace(0, 1, H), torch.linspace(0, 1, W), indexing="ij")
    return torch.stack([yy, xx, 0.25 + 0.5 * yy * xx], -1).expand(B, H, W, 3).clone()


def pixel_part(g, n=H * W):
    return g.select(slice(-n, None))


def test_colour_logits_invert_the_colour_activation():
    c = torch.rand(100, 3) * 0.96 + 0.02
    torch.testing.assert_close(0.5 * torch.tanh(colour_logits(c)) + 0.5, c, atol=1e-5, rtol=0)
    assert torch.isfinite(colour_logits(torch.tensor([0.0, 1.0]))).all()  # black and white stay reachable


def test_input_pixels_start_on_their_rays_at_the_input_depth_with_the_image_colours():
    lat, c2w, K = decoder_inputs(V=2, T=5)
    dec = tiny_decoder(input_depth=True, input_image_gaussians=True)
    depth = 2.0 + torch.rand(1, H, W)
    depth[:, :3] = 0  # sky rows
    image = smooth_image()
    with torch.no_grad():
        g = dec(lat, c2w, K, input_depth=depth, input_image=image)
    grid = tiny_decoder(input_depth=True)
    assert g.num_gaussians == grid(lat, c2w, K, input_depth=depth).num_gaussians + H * W
    pix = pixel_part(g)
    uv, z = world_to_pixels(pix.means, c2w_to_viewmat(c2w[:, 0, 0]), K[:, 0, 0])
    v, u = torch.meshgrid(torch.arange(H) + 0.5, torch.arange(W) + 0.5, indexing="ij")
    torch.testing.assert_close(uv[0], torch.stack([u, v], -1).reshape(-1, 2), atol=1e-3, rtol=0)
    known = depth[0].reshape(-1) > 0
    torch.testing.assert_close(z[0][known], depth[0].reshape(-1)[known], rtol=1e-4, atol=0)
    dist = (pix.means[0] - c2w[0, 0, 0, :3, 3]).norm(dim=-1)
    torch.testing.assert_close(dist[~known], torch.full_like(dist[~known], 20.0))  # sky: at far
    torch.testing.assert_close(pix.colors[0], image[0].reshape(-1, 3).clamp(0.01, 0.99), atol=1e-5, rtol=0)
    torch.testing.assert_close(pix.opacities, torch.full_like(pix.opacities, 0.9))


def test_input_pixels_render_the_input_image_back():
    lat, c2w, K = decoder_inputs(V=2, T=5)
    dec = tiny_decoder(input_depth=True, input_image_gaussians=True)
    image = smooth_image()
    with torch.no_grad():
        pix = pixel_part(dec(lat, c2w, K, input_depth=torch.full((1, H, W), 3.0), input_image=image))
        r = GaussianRenderer(backend="torch", background=(1.0, 1.0, 1.0))(pix, c2w[:, 0, :1], K[:, 0, :1], H, W)
    inner = (r.rgb[0, 0] - image[0])[2:-2, 2:-2].abs()  # the border blends with the background
    assert float(inner.mean()) < 0.03 and float(inner.max()) < 0.08


def test_input_pixel_corrections_start_at_zero_and_learn():
    lat, c2w, K = decoder_inputs(V=2, T=5)
    dec = tiny_decoder(input_depth=True, input_image_gaussians=True)
    depth, image = torch.full((1, H, W), 3.0), smooth_image()
    g = dec(lat, c2w, K, input_depth=depth, input_image=image)
    (pixel_part(g).colors.sum() + pixel_part(g).scales.sum()).backward()
    assert dec.input_pixels.correction.weight.grad.abs().sum() > 0
    with torch.no_grad():
        dec.input_pixels.correction.bias[1:4] += 0.5  # a trained colour correction moves every pixel
        moved = pixel_part(dec(lat, c2w, K, input_depth=depth, input_image=image)).colors
    assert (moved > pixel_part(g).colors.detach()).all()


def test_grid_depths_ignore_the_input_pixels():
    lat, c2w, K = decoder_inputs(V=2, T=5)
    depth = torch.full((1, H, W), 3.0)
    plain = tiny_decoder(input_depth=True)
    dec = tiny_decoder(input_depth=True, input_image_gaussians=True)
    with torch.no_grad():
        a = plain.gaussian_depths(plain(lat, c2w, K, input_depth=depth), c2w, (H, W))
        b = dec.gaussian_depths(dec(lat, c2w, K, input_depth=depth, input_image=smooth_image()), c2w, (H, W))
    torch.testing.assert_close(a, b)  # the same seed: the grid part is unchanged by the extra layer


def test_input_image_errors_and_config_round_trip(tmp_path):
    lat, c2w, K = decoder_inputs(V=2, T=5)
    depth = torch.full((1, H, W), 3.0)
    with pytest.raises(ValueError, match="input_depth=True too"):
        tiny_decoder(input_image_gaussians=True)
    dec = tiny_decoder(input_depth=True, input_image_gaussians=True)
    with pytest.raises(ValueError, match="needs `input_image`"):
        dec(lat, c2w, K, input_depth=depth)
    with pytest.raises(ValueError, match="needs `input_image`"):
        tiny_decoder(input_depth=True)(lat, c2w, K, input_depth=depth, input_image=smooth_image())
    with pytest.raises(ValueError, match=r"input_image must be \[B, H, W, 3\]"):
        dec(lat, c2w, K, input_depth=depth, input_image=smooth_image()[:, :16])
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        dec(lat, c2w, K, input_depth=depth, input_image=smooth_image() * 255)
    dec.save_pretrained(tmp_path / "dec")
    back = StaticGaussianDecoder.from_pretrained(tmp_path / "dec")
    assert back.config.input_image_gaussians and back.input_pixels is not None
    torch.testing.assert_close(back.input_pixels.correction.bias, dec.input_pixels.correction.bias)


def test_clip_batch_carries_the_first_source_frame():
    b = synthetic_batch()
    src = Clip(latents=b.latents[0], rgb=torch.rand(2, 5, H, W, 3), c2w=b.src_c2w[0], K=b.src_K[0], time=b.src_time[0])
    batch = ClipBatch.collate([(src, src.select(frames=[2, 4]))])
    assert torch.equal(batch.input_rgb[0], src.rgb[0])  # trajectory 0, every frame (static decoders read frame 0)


def test_student_reads_the_input_image_and_trains_its_pixels():
    batch = synthetic_batch()
    batch.src_depth = torch.full((1, 2, 5, H, W), 3.0)
    student = tiny_student(lpips=False, decoder=tiny_decoder(input_depth=True, input_image_gaussians=True))
    before = student.decoder.input_pixels.correction.weight.detach().clone()
    out, _, g = student._step(batch, "train")
    colours = pixel_part(g).colors.detach()[0].reshape(H, W, 3)
    torch.testing.assert_close(colours, batch.input_rgb[0, 0], atol=1e-5, rtol=0)  # the clip's frame, uncorrected
    out.total.backward()
    torch.optim.Adam(student.parameters(), lr=1e-2).step()
    assert not torch.equal(before, student.decoder.input_pixels.correction.weight)


def test_init_from_across_the_input_image_setting(tmp_path):
    from lyra.models import load_decoder_weights

    grid_only = tiny_decoder(input_depth=True)
    grid_only.save_pretrained(tmp_path / "grid")
    with_pixels = tiny_decoder(input_depth=True, input_image_gaussians=True, seed=1)
    missing = load_decoder_weights(with_pixels, tmp_path / "grid")  # the pixel layer starts fresh (a no-op)
    assert missing and all(k.startswith("input_pixels.") for k in missing)
    torch.testing.assert_close(with_pixels.readout.weight, grid_only.readout.weight)
    with_pixels.save_pretrained(tmp_path / "pixels")
    with pytest.raises(ValueError, match="input_image_gaussians: true"):
        load_decoder_weights(tiny_decoder(input_depth=True), tmp_path / "pixels")


def textured_image(seed=0):  # 2 x 2-pixel random blocks: detail at the scale the splats' low-pass blurs
    g = torch.Generator().manual_seed(seed)
    blocks = 0.1 + 0.8 * torch.rand(1, H // 2, W // 2, 3, generator=g)
    return blocks.repeat_interleave(2, 1).repeat_interleave(2, 2)


def input_view_error(dec, lat, c2w, K, depth, image):
    with torch.no_grad():
        pix = pixel_part(dec(lat, c2w, K, input_depth=depth, input_image=image))
        r = GaussianRenderer(backend="torch", background=(1.0, 1.0, 1.0))(pix, c2w[:, 0, :1], K[:, 0, :1], H, W)
    return float((r.rgb[0, 0] - image[0])[2:-2, 2:-2].square().mean()), pix


def test_colour_fit_makes_the_input_pixels_reproduce_their_own_view_step_by_step():
    lat, c2w, K = decoder_inputs(V=2, T=5)
    depth, image = 3.0 + 0.2 * torch.rand(1, H, W), textured_image()
    errors, parts = [], []
    for steps in (0, 1, 2):
        dec = tiny_decoder(input_depth=True, input_image_gaussians=True, input_colour_fit=steps,
                           scale_mode="footprint")  # the configs' splats: half a pixel wide
        err, pix = input_view_error(dec, lat, c2w, K, depth, image)
        errors.append(err)
        parts.append(pix)
    assert errors[2] < errors[1] < errors[0] and errors[2] < 0.7 * errors[0], errors
    for fitted in parts[1:]:  # only the colours change; they stay colours
        for name in ("means", "scales", "opacities", "quats"):
            torch.testing.assert_close(getattr(fitted, name), getattr(parts[0], name))
        assert float(fitted.colors.min()) >= 0 and float(fitted.colors.max()) <= 1
        assert not torch.allclose(fitted.colors, parts[0].colors)


def test_fit_colours_to_view_leaves_what_it_cannot_improve():
    """A flat image already renders as itself away from the border: the fit keeps it there."""
    lat, c2w, K = decoder_inputs(V=2, T=5)
    flat = torch.full((1, H, W, 3), 0.4)
    dec = tiny_decoder(input_depth=True, input_image_gaussians=True, input_colour_fit=2, scale_mode="footprint")
    _, pix = input_view_error(dec, lat, c2w, K, torch.full((1, H, W), 3.0), flat)
    inner = pix.colors[0].reshape(H, W, 3)[3:-3, 3:-3]
    torch.testing.assert_close(inner, torch.full_like(inner, 0.4), atol=2e-3, rtol=0)


def test_colour_fit_keeps_the_corrections_learning_and_checks_its_setting():
    lat, c2w, K = decoder_inputs(V=2, T=5)
    dec = tiny_decoder(input_depth=True, input_image_gaussians=True, input_colour_fit=2)
    g = dec(lat, c2w, K, input_depth=torch.full((1, H, W), 3.0), input_image=textured_image())
    pixel_part(g).colors.sum().backward()  # the colour correction still gets a gradient through the fit
    assert dec.input_pixels.correction.weight.grad[:, 1:4].abs().sum() > 0
    with pytest.raises(ValueError, match="input_image_gaussians=True too"):
        tiny_decoder(input_depth=True, input_colour_fit=2)
    with pytest.raises(ValueError, match="colour_fit must be >= 0"):
        tiny_decoder(input_depth=True, input_image_gaussians=True, input_colour_fit=-1)


def test_input_border_is_a_fraction_of_each_side():
    from lyra.models.decoders.input_image import border_pixels
    assert border_pixels(0.1875, 128, 128) == (24, 24) and border_pixels(0.1875, 32, 64) == (12, 6)
    lat, c2w, K = decoder_inputs(V=2, T=5)
    counts = []
    for border in (0.0, 0.25):
        dec = tiny_decoder(input_depth=True, input_image_gaussians=True, input_border=border)
        with torch.no_grad():
            counts.append(dec(lat, c2w, K, input_depth=torch.full((1, H, W), 3.0),
                              input_image=textured_image()).num_gaussians)
    assert counts[1] - counts[0] == 48 * 48 - 32 * 32  # 8 px on every side of 32


def test_input_border_continues_the_frame_edge_beyond_it():
    lat, c2w, K = decoder_inputs(V=2, T=5)
    P, depth, image = 4, 3.0 + torch.rand(1, H, W), textured_image()
    plain = tiny_decoder(input_depth=True, input_image_gaussians=True, scale_mode="footprint")
    bordered = tiny_decoder(input_depth=True, input_image_gaussians=True, scale_mode="footprint",
                            input_border=P / W)  # a fraction of the frame: 4 px at 32 px
    with torch.no_grad():
        a = plain(lat, c2w, K, input_depth=depth, input_image=image)
        b = bordered(lat, c2w, K, input_depth=depth, input_image=image)
    ring = (H + 2 * P) * (W + 2 * P) - H * W
    assert b.num_gaussians == a.num_gaussians + ring
    torch.testing.assert_close(pixel_part(b).means, pixel_part(a).means)  # the input pixels stay last, unchanged
    edge = b.select(slice(-H * W - ring, -H * W))
    uv, z = world_to_pixels(edge.means, c2w_to_viewmat(c2w[:, 0, 0]), K[:, 0, 0])
    u, v = uv[0, :, 0], uv[0, :, 1]
    assert bool(((u < 0) | (u > W) | (v < 0) | (v > H)).all())  # all beyond the frame, none on it
    assert float(u.min()) > -P and float(u.max()) < W + P and float(v.min()) > -P and float(v.max()) < H + P
    # each continues its nearest edge pixel: that pixel's z-depth and colour
    iu = u.floor().long().clamp(0, W - 1)
    iv = v.floor().long().clamp(0, H - 1)
    torch.testing.assert_close(z[0], depth[0, iv, iu], rtol=1e-4, atol=0)
    torch.testing.assert_close(edge.colors[0], image[0, iv, iu].clamp(0.01, 0.99), atol=1e-5, rtol=0)


def test_input_border_fills_what_a_zoomed_out_view_sees_past_the_frame():
    lat, c2w, K = decoder_inputs(V=2, T=5)
    depth, image = torch.full((1, H, W), 3.0), textured_image()
    back = c2w[:, 0, :1].clone()
    back[..., :3, 3] -= 0.6 * back[..., :3, 2]  # the input camera, moved back along its axis
    coverage = []
    for P in (0, 6):
        dec = tiny_decoder(input_depth=True, input_image_gaussians=True, scale_mode="footprint", input_border=P / W)
        with torch.no_grad():
            pix = dec(lat, c2w, K, input_depth=depth, input_image=image).select(slice(-(H + 2 * P) * (W + 2 * P), None))
            r = GaussianRenderer(backend="torch", background=(1.0, 1.0, 1.0))(pix, back, K[:, 0, :1], H, W)
        coverage.append(r.alpha[0, 0])
    outside = coverage[0] < 0.5  # where the frame alone leaves the background
    assert outside.float().mean() > 0.1
    assert float(coverage[1][outside].mean()) > 0.9


def test_input_border_needs_the_input_pixels():
    with pytest.raises(ValueError, match="input_border works on the input image's Gaussians"):
        tiny_decoder(input_depth=True, input_border=0.1)
    for bad in (-0.1, 24, float("nan")):  # a fraction of the frame, not pixels
        with pytest.raises(ValueError, match="border must be a fraction of the frame"):
            tiny_decoder(input_depth=True, input_image_gaussians=True, input_border=bad)


def test_without_colour_correction_the_pixels_keep_the_frames_colours():
    lat, c2w, K = decoder_inputs(V=2, T=5)
    depth, image = torch.full((1, H, W), 3.0), smooth_image()
    dec = tiny_decoder(input_depth=True, input_image_gaussians=True, input_colour_correction=False)
    with torch.no_grad():
        dec.input_pixels.correction.bias[1:4] += 0.5  # what a trained colour correction would add ...
        dec.input_pixels.correction.bias[0] += 0.2  # ... and a depth correction, which still applies
    g = dec(lat, c2w, K, input_depth=depth, input_image=image)
    pix = pixel_part(g)
    torch.testing.assert_close(pix.colors[0], image[0].reshape(-1, 3).clamp(0.01, 0.99), atol=1e-5, rtol=0)
    _, z = world_to_pixels(pix.means, c2w_to_viewmat(c2w[:, 0, 0]), K[:, 0, 0])
    assert float(z.min()) > 3.0 * 1.05  # exp(0.5 tanh(0.2)) = x1.10
    (pix.colors.sum() + pix.means.sum()).backward()
    grad = dec.input_pixels.correction.weight.grad
    assert grad[:, 1:4].abs().sum() == 0 and grad[:, 0].abs().sum() > 0
