"""The dynamic decoder reads the input video: each target time the trajectory-0 frame nearest to it."""

import pytest
import torch
from conftest import decoder_inputs, synthetic_batch, tiny_decoder, tiny_student

from lyra.data.clip import Clip
from lyra.eval.baselines import input_image_warp
from lyra.render.cameras import (
    c2w_to_viewmat,
    intrinsics_from_fov,
    look_at,
    world_to_pixels,
)

H = W = 32  # decoder_inputs: 4x4 latents, space factor 8
T = 5


def input_video(B=2, seed=0):
    """Per frame a different colour and a different constant depth: which frame was read shows."""
    g = torch.Generator().manual_seed(seed)
    video = torch.rand(B, T, 1, 1, 3, generator=g).expand(B, T, H, W, 3).clone() * 0.9 + 0.05
    depth = (2.0 + 0.5 * torch.arange(T, dtype=torch.float32))[None, :, None, None].expand(B, T, H, W).clone()
    return video, depth


def test_each_target_time_lifts_the_input_frame_nearest_to_it():
    lat, c2w, K = decoder_inputs(B=2, V=2, T=T)
    time = torch.linspace(0, 1, T).expand(2, 2, T).clone()
    target = torch.tensor([[0.0, 0.5, 1.0], [0.3, 0.9, 0.1]])
    frames = [[0, 2, 4], [1, 4, 0]]
    video, depth = input_video()
    dec = tiny_decoder(dynamic=True, input_depth=True, input_image_gaussians=True)
    with torch.no_grad():
        g = dec(lat, c2w, K, time=time, target_time=target, input_depth=depth, input_image=video)
    assert g.batch_shape == (2, 3)
    pix = g.select(slice(-H * W, None))
    for b in range(2):
        for m, f in enumerate(frames[b]):
            uv, z = world_to_pixels(pix.means[b, m], c2w_to_viewmat(c2w[b, 0, f]), K[b, 0, f])
            torch.testing.assert_close(z, depth[b, f].reshape(-1), rtol=1e-4, atol=0)
            v, u = torch.meshgrid(torch.arange(H) + 0.5, torch.arange(W) + 0.5, indexing="ij")
            torch.testing.assert_close(uv, torch.stack([u, v], -1).reshape(-1, 2), atol=1e-3, rtol=0)
            torch.testing.assert_close(pix.colors[b, m], video[b, f].reshape(-1, 3), atol=1e-5, rtol=0)


def test_at_the_input_frame_time_it_equals_the_static_decoder_reading_that_frame():
    lat, c2w, K = decoder_inputs(B=1, V=2, T=T)
    time = torch.linspace(0, 1, T).expand(1, 2, T).clone()
    video, depth = input_video(B=1)
    settings = dict(input_depth=True, input_image_gaussians=True)
    dyn = tiny_decoder(dynamic=True, **settings).eval()
    static = tiny_decoder(**settings).eval()
    static.load_state_dict({k: v for k, v in dyn.state_dict().items() if "time" not in k})
    with torch.no_grad():
        g = dyn(lat, c2w, K, time=time, target_time=torch.tensor([[0.0, 1.0]]), input_depth=depth, input_image=video)
        gs = static(lat, c2w, K, input_depth=depth[:, 0], input_image=video[:, 0])
    for name in ("means", "colors", "opacities", "scales"):
        torch.testing.assert_close(getattr(g, name)[:, 0], getattr(gs, name), atol=1e-5, rtol=1e-5)
    # At time 1 the grid starts from the last frame's depth, the pixels from its colours.
    assert not torch.allclose(g.means[:, 1], gs.means, atol=1e-3)
    assert not torch.allclose(g.colors[:, 1, -H * W:], gs.colors[:, -H * W:])


def test_the_dynamic_decoder_checks_its_input_video():
    lat, c2w, K = decoder_inputs(B=1, V=2, T=T)
    time = torch.linspace(0, 1, T).expand(1, 2, T).clone()
    video, depth = input_video(B=1)
    dec = tiny_decoder(dynamic=True, input_depth=True, input_image_gaussians=True)
    tt = torch.tensor([[0.0]])
    with pytest.raises(ValueError, match=r"\[B, T, H, W\]"):
        dec(lat, c2w, K, time=time, target_time=tt, input_depth=depth[:, 0], input_image=video)
    with pytest.raises(ValueError, match="every frame of trajectory 0"):
        dec(lat, c2w, K, time=time, target_time=tt, input_depth=depth)
    with pytest.raises(ValueError, match=r"\[B, T, H, W, 3\]"):
        dec(lat, c2w, K, time=time, target_time=tt, input_depth=depth, input_image=video[:, 0])


def test_dynamic_student_reads_the_clip_video_and_trains_its_pixels():
    batch = synthetic_batch(dynamic=True)
    batch.src_depth = (2.5 + torch.arange(T, dtype=torch.float32))[None, None, :, None, None].expand(1, 2, T, H, W)
    dec = tiny_decoder(dynamic=True, input_depth=True, input_image_gaussians=True)
    student = tiny_student(dynamic=True, lpips=False, decoder=dec)
    before = dec.input_pixels.correction.weight.detach().clone()
    out, _, g = student._step(batch, "train")
    assert g.batch_shape == (1, 6)  # one set per target view, each at its own time
    # Target views sit at frames 0, 2, 4 of each trajectory: their sets read those input frames.
    pix = g.select(slice(-H * W, None))
    for m, f in enumerate([0, 2, 4, 0, 2, 4]):
        _, z = world_to_pixels(pix.means[0, m], c2w_to_viewmat(batch.src_c2w[0, 0, f]), batch.src_K[0, 0, f])
        torch.testing.assert_close(z, batch.src_depth[0, 0, f].reshape(-1), rtol=1e-4, atol=0)
    out.total.backward()
    torch.optim.Adam(student.parameters(), lr=1e-2).step()
    assert not torch.equal(before, dec.input_pixels.correction.weight)


def test_input_warp_lifts_the_input_video_frame_at_each_query_time():
    c2w = look_at(torch.tensor([0.0, 0.0, -3.0]), torch.zeros(3)).expand(1, 3, 4, 4).clone()
    K = intrinsics_from_fov(60.0, 16, 16).expand(1, 3, 3, 3).clone()
    colours = torch.tensor([[0.9, 0.1, 0.1], [0.1, 0.9, 0.1], [0.1, 0.1, 0.9]])
    rgb = colours[None, :, None, None, :].expand(1, 3, 16, 16, 3).clone()
    clip = Clip(latents=torch.zeros(1, 4, 1, 2, 2), rgb=rgb, c2w=c2w, K=K, time=torch.tensor([[0.0, 0.5, 1.0]]),
                depth=torch.full((1, 3, 16, 16), 3.0), depth_is_metric=True)
    query, Kq = c2w[0, [0, 0, 0]], K[0, [0, 0, 0]]
    out, _ = input_image_warp(clip, query, Kq, time=torch.tensor([0.6, 1.0, 0.1]))
    for q, f in enumerate([1, 2, 0]):
        torch.testing.assert_close(out[q, 4:-4, 4:-4], rgb[0, f, 4:-4, 4:-4], atol=0.02, rtol=0)
    still, _ = input_image_warp(clip, query, Kq)  # no time: the input image
    torch.testing.assert_close(still[:, 4:-4, 4:-4], rgb[0, [0, 0, 0], 4:-4, 4:-4], atol=0.02, rtol=0)
