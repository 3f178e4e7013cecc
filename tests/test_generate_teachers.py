"""The teachers `lyra generate` builds, the clip batch it decodes, and `StudentModule.predict_step` in time chunks."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"


import pytest
import torch
from conftest import tiny_decoder
from generate_fixtures import C, smooth_image

from lyra.data.codecs import DCTCodec
from lyra.data.generators import ProceduralGenerator
from lyra.data.procedural import ProceduralWorld
from lyra.inference.clips import clip_batch, make_clip
from lyra.inference.teachers import ProceduralTeacher
from lyra.models import StudentModule, TeacherModule
from lyra.render.camera_path import CameraPath
from lyra.render.cameras import intrinsics_from_fov, look_at


@pytest.mark.parametrize("dynamic", [False, True])
def test_procedural_teacher_is_procedural_generator_and_scales_families(dynamic):
    names = ["left", "up", "spiral"]
    ref = ProceduralGenerator(seed=3, dynamic=dynamic, num_views=3, trajectories=names).generate(1, 5, 16, 16)
    ours = ProceduralTeacher(seed=3, dynamic=dynamic, trajectories=names).generate(1, 5, 16, 16)
    for key in ("c2w", "K", "time", "rgb", "depth"):
        assert torch.equal(getattr(ours, key), getattr(ref, key)), key
    # --magnitude up=0.5: only the up trajectory changes, and it moves by 0.5 x the scene scale
    scaled = ProceduralTeacher(seed=3, dynamic=dynamic, trajectories=names, magnitude="up=0.5").generate(1, 5, 16, 16)
    assert torch.equal(scaled.c2w[[0, 2]], ref.c2w[[0, 2]]) and not torch.allclose(scaled.c2w[1], ref.c2w[1])
    world = ProceduralWorld(4, dynamic=dynamic)
    travel = (scaled.c2w[1, -1, :3, 3] - scaled.c2w[1, 0, :3, 3]).norm()
    assert float(travel) == pytest.approx(0.5 * world.scene_scale, rel=1e-4)


def test_procedural_teacher_camera_paths_as_is_and_anchored():
    world = ProceduralWorld(0)
    start = world.start_view(intrinsics_from_fov(60, 16, 16), 16, 16, torch.Generator().manual_seed(0))
    eye = start[:3, 3]
    c2w = look_at(torch.stack([eye, eye + torch.tensor([0.5, 0.0, 0.0])]), world.center.expand(2, 3))
    path = CameraPath(c2w, intrinsics_from_fov(50, 32, 32), 32, 32)
    clip = ProceduralTeacher(seed=0, trajectories=[], camera_paths=[path]).generate(0, 3, 16, 16)
    assert clip.c2w.shape == (1, 3, 4, 4) and clip.rgb.shape == (1, 3, 16, 16, 3)
    assert torch.allclose(clip.c2w[0, 0], c2w[0], atol=1e-5) and torch.allclose(clip.c2w[0, -1], c2w[1], atol=1e-5)
    assert torch.allclose(clip.K[0, 0], intrinsics_from_fov(50, 16, 16))  # resized to the clip
    # anchored: relative to its first camera, attached to the start view, translation x path_scale x scene_scale
    anchored = ProceduralTeacher(seed=0, trajectories=["left"], camera_paths=[path], anchor=True,
                                 path_scale=2.0).generate(0, 3, 16, 16)
    assert torch.allclose(anchored.c2w[1, 0], anchored.c2w[0, 0], atol=1e-5)  # both start at the start view
    moved = (anchored.c2w[1, -1, :3, 3] - anchored.c2w[1, 0, :3, 3]).norm()
    assert float(moved) == pytest.approx(0.5 * 2.0 * world.scene_scale, rel=1e-4)


def test_make_clip_in_view_chunks_is_the_teachers_clip():
    teacher = TeacherModule(ProceduralTeacher(seed=1, trajectories=["left", "right", "up"]), DCTCodec(latent_channels=C),
                            5, 16, 16)
    whole, chunked = teacher.make_clip(0), make_clip(teacher, 0, view_chunk=1)
    assert torch.allclose(whole.latents, chunked.latents, atol=1e-5) and torch.allclose(whole.rgb, chunked.rgb, atol=1e-5)
    assert torch.equal(whole.c2w, chunked.c2w) and whole.meta["trajectories"] == ["left", "right", "up"]


@pytest.mark.parametrize("reads_video", [False, True])
def test_predict_step_decodes_time_chunks_like_one_pass(reads_video):
    teacher = TeacherModule(ProceduralTeacher(seed=1, dynamic=True, trajectories=["left", "up"]),
                            DCTCodec(latent_channels=C), 5, 16, 16)
    clip = teacher.make_clip(0)
    video = dict(input_depth=True, input_image_gaussians=True) if reads_video else {}
    decoder = tiny_decoder(dynamic=True, latent_channels=C, **video)
    torch.nn.init.normal_(decoder.time.target.weight)  # starts at zero (time-blind) in a fresh decoder
    module = StudentModule(decoder, input_depth_noise=0.2 if reads_video else 0.0).eval()
    times = [0.0, 0.3, 0.6, 1.0]
    one = module.predict_step(clip_batch(clip, times), 0)
    chunked = module.predict_step(clip_batch(clip, times, time_chunk=3), 0)
    assert one["gaussians"].batch_shape == (1, 4) and torch.equal(one["target_time"], torch.tensor([times]))
    assert torch.allclose(one["gaussians"].means, chunked["gaussians"].means, atol=1e-5)
    assert torch.allclose(one["gaussians"].colors, chunked["gaussians"].colors, atol=1e-5)
    assert not torch.allclose(one["gaussians"].colors[0, 0], one["gaussians"].colors[0, 3])  # times differ
    # without target_times in the meta, the target frames' times: exactly forward
    plain = module.predict_step(clip_batch(clip), 0)["gaussians"]
    assert plain.batch_shape == (1, 10)
    with torch.no_grad():  # generation reads the depth as given: no evaluation noise
        assert torch.equal(plain.means, module(clip_batch(clip), depth_noise=0.0).means)
        assert torch.equal(plain.means, module(clip_batch(clip)).means) != reads_video
    static = StudentModule(tiny_decoder(latent_channels=C)).eval().predict_step(clip_batch(clip), 0)
    assert static["target_time"] is None and static["gaussians"].batch_shape == (1,)


def test_image_teacher_is_gen3c_from_image(models):
    from lyra.data.generators.gen3c import Gen3CGenerator
    from lyra.inference.teachers import ImageTeacher

    gen = Gen3CGenerator(models / "wan", DCTCodec(latent_channels=C), depth_path=models / "depth", num_inference_steps=2,
                         num_views=2, trajectories=["left", "spiral"])
    image = torch.from_numpy(smooth_image(40, 48)).float() / 255
    ref = gen.from_image(image, 5, 32, 32, seed=4)
    ours = ImageTeacher(gen, images=[image], trajectories=["left", "spiral"], seed=4).generate(0, 5, 32, 32)
    assert torch.equal(ours.latents, ref.latents) and torch.equal(ours.c2w, ref.c2w) and torch.equal(ours.depth, ref.depth)
