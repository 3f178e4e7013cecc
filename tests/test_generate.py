"""`lyra generate` and `lightning predict --config configs/infer/*.yaml`: every source (procedural seed,
image, prompt, video + cameras) end to end with tiny random diffusers models and tiny decoders saved to
temporary folders and loaded back by path; custom camera paths (lyra JSON, nerfstudio); magnitudes;
bit-for-bit repeats; the output folder's layout; and bad inputs refused, named, before any long work,
with no output folder left behind."""

import json
import re
import os

os.environ["HF_HUB_OFFLINE"] = "1"

import math

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from plyfile import PlyData

from lyra.cli import main as lightning_main
from lyra.data.codecs import DCTCodec
from lyra.data.generators import ProceduralGenerator
from lyra.data.procedural import ProceduralWorld
from lyra.inference.clips import clip_batch, make_clip
from lyra.inference.outputs import OUTPUT_MARKER
from lyra.inference.paths import load_camera_path, parse_magnitude
from lyra.inference.teachers import ProceduralTeacher
from lyra.models import StudentModule, TeacherModule
from lyra.render.camera_path import CameraPath, load_nerfstudio_camera_path
from lyra.render.cameras import intrinsics_from_fov, look_at
from lyra.render.formats import read_dynamic_index
from lyra.render.ply import load_ply
from lyra.render.trajectories import make_trajectory
from lyra.tools import main

from conftest import CONFIGS, ROOT, tiny_decoder

C = 8  # latent channels of the tiny decoders and of the DCT codec they read
STANDARD_PLY = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0", "scale_1",
                "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
BODY = ["--model.init_args.decoder.init_args.body.width", "32", "--model.init_args.decoder.init_args.body.num_layers",
        "2", "--model.init_args.decoder.init_args.body.pattern", "MA", "--model.init_args.decoder.init_args.body.d_state",
        "8", "--model.init_args.decoder.init_args.body.headdim", "16",
        "--model.init_args.decoder.init_args.body.attn_headdim", "16", "--model.init_args.decoder.init_args.body.chunk_size",
        "8", "--model.init_args.decoder.init_args.latent_channels", str(C)]
TINY_CLIP = ["--clip.num_frames", "5", "--clip.height", "32", "--clip.width", "32"]
# The Gaussian layout of conftest.tiny_decoder (the paper's), where the CPU configs use another.
# A YAML overlay rather than flags: under the configs' omegaconf+ parser mode a `null` flag arrives as
# the string "None".
PAPER_LAYOUT = ["--config", "model:\n  init_args:\n    decoder:\n      init_args:\n        density: 1\n"
                "        gaussian_frames: all\n        latent_frames_per_view: null\n        latent_skip: false\n"]
FAST = ["--quiet", "--orbit-frames", "4"]


def _run(argv):
    assert main(argv) == 0


def _error(capsys, argv) -> str:  # a clean exit 2 with the message on stderr
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    return capsys.readouterr().err


def _no_output(path):  # neither the folder nor a hidden temporary one
    assert not path.exists()
    assert not [p for p in path.parent.iterdir() if p.name.startswith(f".{path.name}.")]


def _scene_bytes(folder) -> dict[str, bytes]:
    scene = folder / "scene.ply"
    if scene.is_file():
        return {"scene.ply": scene.read_bytes()}
    return {p.name: p.read_bytes() for p in sorted((folder / "scene").iterdir())}


def _smooth_image(H, W, seed=0):  # [H, W, 3] uint8 low-frequency colours
    low = torch.rand(1, 3, 5, 5, generator=torch.Generator().manual_seed(seed))
    img = torch.nn.functional.interpolate(low, size=(H, W), mode="bicubic", align_corners=False).clamp(0, 1)
    return (img[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()


# ---- fixtures: a decoder trained for a few steps by `lightning fit`, tiny random diffusers models ----


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """`lightning fit --config configs/dynamic.yaml` at tiny sizes for 3 steps: a real run folder (checkpoints
    and the LightningCLI config.yaml that records the clip size), like the README's main job leaves."""
    root = tmp_path_factory.mktemp("run")
    lightning_main(["fit", "--config", str(CONFIGS / "dynamic.yaml"), *TINY_CLIP, *BODY,
                    "--data.init_args.teacher.init_args.generator.init_args.num_views", "3",
                    "--data.init_args.num_views", "3", "--data.init_args.target_frames", "1",
                    "--data.init_args.num_workers", "0", "--data.init_args.teacher.init_args.codec.init_args.latent_channels",
                    str(C), "--model.init_args.loss.init_args.lpips_weight", "0", "--test_after_fit", "false",
                    "--trainer.max_steps", "3", "--trainer.max_time", "null", "--trainer.limit_val_batches", "0",
                    "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
                    "--trainer.default_root_dir", str(root / "dynamic")])
    return root / "dynamic"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Tiny decoders and teacher models saved with save_pretrained, as a user's local folders would be."""
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config

    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    tiny_decoder(dynamic=False, latent_channels=C).save_pretrained(root / "static")
    tiny_decoder(dynamic=True, latent_channels=C, seed=1).save_pretrained(root / "dynamic")
    tiny_decoder(dynamic=True, latent_channels=C, seed=4, input_depth=True,
                 input_image_gaussians=True).save_pretrained(root / "dynamic_video")
    tiny_decoder(dynamic=False, latent_channels=4, seed=2).save_pretrained(root / "static_vae")
    tiny_decoder(dynamic=False, latent_channels=C, seed=3, input_depth=True,
                 input_image_gaussians=True).save_pretrained(root / "static_depth")

    def wan(cin, cout):
        return WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=16, in_channels=cin,
                                     out_channels=cout, text_dim=32, freq_dim=32, ffn_dim=64, num_layers=1)

    wan(2 * C + 1, C).save_pretrained(root / "wan")
    wan(2 * 4 + 1, 4).save_pretrained(root / "pipe" / "transformer")  # a pipeline folder: transformer/ + vae/
    AutoencoderKLWan(base_dim=8, z_dim=4, num_res_blocks=1).save_pretrained(root / "pipe" / "vae")
    backbone = Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                            patch_size=14, image_size=28, out_features=["stage1", "stage2"], reshape_hidden_states=False)
    DepthAnythingForDepthEstimation(DepthAnythingConfig(
        backbone_config=backbone, neck_hidden_sizes=[16, 32], fusion_hidden_size=16, head_hidden_size=8,
        reassemble_hidden_size=32, reassemble_factors=[1, 1])).save_pretrained(root / "depth")
    _tiny_text_to_image(root / "t2i")
    iio.imwrite(root / "photo.png", _smooth_image(48, 40))
    return root


def _tiny_text_to_image(folder):
    """A random StableDiffusionPipeline with a CLIP text model and a byte-level CLIP tokenizer written by hand
    (every byte is a token, no merges): all of it built offline from configs."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = [chr(b) for b in bs] + [chr(256 + i) for i in range(256 - len(bs))]
    vocab = {c: i for i, c in enumerate(chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"])}
    folder.mkdir(parents=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=16)
    text = CLIPTextModel(CLIPTextConfig(hidden_size=16, intermediate_size=32, num_attention_heads=2, num_hidden_layers=1,
                                        vocab_size=len(vocab), max_position_embeddings=16, bos_token_id=len(vocab) - 2,
                                        eos_token_id=len(vocab) - 1, pad_token_id=len(vocab) - 1))
    unet = UNet2DConditionModel(sample_size=16, in_channels=4, out_channels=4, block_out_channels=(16, 32),
                                layers_per_block=1, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=16,
                                attention_head_dim=4, norm_num_groups=8)
    vae = AutoencoderKL(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=8)
    StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet, scheduler=DDIMScheduler(),
                            safety_checker=None, feature_extractor=None,
                            requires_safety_checker=False).save_pretrained(folder / "pipeline")
    return folder / "pipeline"


def _image_args(models):
    return ["--teacher", str(models / "wan"), "--vae", "dct", "--depth-model", str(models / "depth"), "--steps", "2",
            "--frames", "5", "--size", "32", "--trajectories", "left,zoom_out"]


# ---- camera paths --------------------------------------------------------------------------------------


def test_nerfstudio_camera_path_is_converted_to_opencv(tmp_path):
    # An OpenGL camera 5 units along +z looking back at the origin (its -z axis), y up: identity rotation.
    gl = [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 5, 0, 0, 0, 1]
    turned = [0, 0, 1, 5, 0, 1, 0, 0, -1, 0, 0, 0, 0, 0, 0, 1]  # 90 degrees about y, at x = 5 looking along -x
    f = tmp_path / "camera_path.json"
    f.write_text(json.dumps({"camera_type": "perspective", "render_height": 48, "render_width": 64, "seconds": 2,
                             "fps": 1, "camera_path": [{"camera_to_world": gl, "fov": 90, "aspect": 4 / 3},
                                                       {"camera_to_world": turned, "fov": 60, "aspect": 4 / 3}]}))
    path = load_nerfstudio_camera_path(f)
    assert (path.width, path.height, len(path)) == (64, 48, 2) and path.time is None
    c = path.c2w[0]
    assert torch.allclose(c[:3, 3], torch.tensor([0.0, 0.0, 5.0]))
    assert torch.allclose(c[:3, 2], torch.tensor([0.0, 0.0, -1.0]))  # OpenCV forward = OpenGL -z
    assert torch.allclose(c[:3, 1], torch.tensor([0.0, -1.0, 0.0]))  # OpenCV down = OpenGL -y
    assert torch.allclose(c[:3, 0], torch.tensor([1.0, 0.0, 0.0]))
    assert torch.allclose(path.c2w[1][:3, 2], torch.tensor([-1.0, 0.0, 0.0]), atol=1e-6)  # looks back at the origin
    # fov is vertical: focal = (H / 2) / tan(fov / 2); principal point at the centre
    assert path.K[0, 0, 0] == pytest.approx(24.0) and path.K[0, 1, 1] == pytest.approx(24.0)
    assert path.K[1, 1, 1] == pytest.approx(24.0 / math.tan(math.radians(30)), rel=1e-5)
    assert path.K[0, 0, 2] == 32.0 and path.K[0, 1, 2] == 24.0
    # the origin projects to the image centre of the first camera
    p = torch.linalg.inv(c) @ torch.tensor([0.0, 0.0, 0.0, 1.0])
    assert p[2] == pytest.approx(5.0) and p[0].abs() < 1e-6 and p[1].abs() < 1e-6
    assert torch.equal(load_camera_path(f).c2w, path.c2w)  # recognised from the content
    # render_time on every camera becomes the path's time
    d = json.loads(f.read_text())
    for cam, t in zip(d["camera_path"], (0.0, 0.5)):
        cam["render_time"] = t
    f.write_text(json.dumps(d))
    assert torch.equal(load_camera_path(f).time, torch.tensor([0.0, 0.5]))


@pytest.mark.parametrize("change, match", [
    (lambda d: d.update(camera_type="fisheye"), "fisheye"),
    (lambda d: d["camera_path"][0].update(fov=0), "fov"),
    (lambda d: d["camera_path"][0].update(camera_to_world=[1, 0, 0]), "16 numbers"),
    (lambda d: d["camera_path"][0].update(camera_to_world=[2, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1]), "rigid"),
    (lambda d: d.pop("render_width"), "render_width"),
    (lambda d: d.update(camera_path=[]), "camera_path"),
])
def test_bad_nerfstudio_paths_are_named(tmp_path, change, match):
    d = {"render_height": 8, "render_width": 8,
         "camera_path": [{"camera_to_world": [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1], "fov": 50}]}
    change(d)
    f = tmp_path / "ns.json"
    f.write_text(json.dumps(d))
    with pytest.raises(ValueError, match=match) as err:
        load_camera_path(f)
    assert str(f) in str(err.value)


def test_camera_path_formats_and_magnitudes(tmp_path):
    path = CameraPath(look_at(torch.tensor([[0.0, 0, -3], [1.0, 0, -3]]), torch.zeros(2, 3)),
                      intrinsics_from_fov(60, 16, 16), 16, 16, torch.tensor([0.0, 1.0]))
    path.save(tmp_path / "p.json")
    assert torch.equal(load_camera_path(tmp_path / "p.json").c2w, path.c2w)
    (tmp_path / "other.json").write_text(json.dumps({"frames": []}))
    with pytest.raises(ValueError, match="unknown camera path format"):
        load_camera_path(tmp_path / "other.json")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_camera_path(tmp_path / "nowhere.json")
    assert parse_magnitude("0.3") == 0.3 and parse_magnitude(None) is None
    assert parse_magnitude("left=0.3, zoom-in=0.5") == {"left": 0.3, "zoom_in": 0.5}
    for bad, match in (("sideways=0.2", "unknown trajectories"), ("-1", ">= 0"), ("left=x", "name=number"),
                       ("big", "a number")):
        with pytest.raises(ValueError, match=match):
            parse_magnitude(bad)


# ---- teachers, batch, predict_step ----------------------------------------------------------------------


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


# ---- lyra generate: procedural (CPU, no weights) --------------------------------------------------------


def test_generate_procedural_with_the_trained_decoder(trained_run, tmp_path, capsys):
    out = tmp_path / "scene0"
    _run(["generate", "--procedural", "0", "--decoder", str(trained_run), "--out", str(out), *FAST])
    printed = capsys.readouterr().out
    assert "peak memory: CPU RSS" in printed and f"lyra view {out / 'scene'}" in printed
    meta = json.loads((out / "meta.json").read_text())
    # the decoder is the run's final checkpoint; clip size and teacher from the decoder's own record
    decoder = meta["weights"]["decoder"]
    assert decoder["path"].endswith("final.ckpt") and decoder["kind"] == "checkpoint"
    assert decoder["sizes_from"] == "the decoder's record of its training clips"
    assert decoder["trained_on"]["num_frames"] == 5 and len(decoder["trained_on"]["generator"]["trajectories"]) == 3
    assert meta["clip"] == {**meta["clip"], "num_views": 3, "num_frames": 5, "height": 32, "width": 32}
    assert meta["clip"]["trajectories"] == ["left", "right", "up"]  # the training teacher's three views
    assert meta["times"] == [0.0, 0.25, 0.5, 0.75, 1.0] and meta["seed"] == 0
    assert set(meta["timings"]) == {"teacher", "decode", "export", "render"}
    assert all(s["seconds"] > 0 and s["cpu_peak_rss_mb"] > 100 for s in meta["timings"].values())
    assert meta["peak_memory"]["cpu_peak_rss_mb"] >= max(s["cpu_peak_rss_mb"] for s in meta["timings"].values())
    assert set(meta["fidelity_psnr"]) == {"left", "right", "up"}
    # the scene: one standard 3DGS PLY per time + index.json
    times, files = read_dynamic_index(out / "scene")
    assert times == meta["times"] and [f.name for f in files] == [f"t{i:03d}.ply" for i in range(5)]
    ply = PlyData.read(str(files[2]))
    assert [p.name for p in ply["vertex"].properties] == STANDARD_PLY
    # configs/dynamic.yaml's layout: 3 views x 2 latent frames (first and last) x 4 x 4 latent pixels x 4 x 4 Gaussians,
    # then one per pixel of the input video's frame at that time
    assert ply["vertex"].count == 3 * 2 * 4 * 4 * 4 * 4 + 32 * 32 == meta["num_gaussians"]
    # videos, sheet, camera paths
    assert iio.imread(out / "orbit.mp4").shape == (4, 32, 32, 3)
    assert iio.imread(out / "inputs.mp4").shape == (5, 3 * 32, 2 * 32, 3)  # rows: views; teacher | render
    assert iio.imread(out / "inputs.png").shape == (3 * 34 + 2, 8 * 34 + 2, 3)  # 4 frames x (teacher, render)
    cams = sorted(p.name for p in (out / "cameras").iterdir())
    assert cams == ["00_left.json", "01_right.json", "02_up.json", "orbit.json"]
    orbit = CameraPath.load(out / "cameras" / "orbit.json")
    assert len(orbit) == 4 and torch.equal(orbit.time, torch.linspace(0, 1, 4))
    # it renders (the scene in view, not an empty white frame)
    first = iio.imread(out / "inputs.mp4")[0, :32]
    assert np.abs(first[:, 32:].astype(float) - 255).mean() > 3
    # same seed, same bytes; nothing else left next to the output
    again = tmp_path / "again"
    _run(["generate", "--procedural", "0", "--decoder", str(trained_run), "--out", str(again), *FAST])
    assert _scene_bytes(again) == _scene_bytes(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again", "scene0"]
    # another scene seed, another scene
    other = tmp_path / "other"
    _run(["generate", "--procedural", "1", "--decoder", str(trained_run), "--out", str(other), *FAST])
    assert _scene_bytes(other) != _scene_bytes(out)


def test_generate_shows_a_progress_bar_for_each_long_stage(trained_run, tmp_path, capsys):
    """Without --quiet every long stage of a procedural run draws a tqdm bar on stderr (bars clear
    themselves when done); --quiet draws none."""
    from lyra.inference.progress import set_progress

    try:
        _run(["generate", "--procedural", "0", "--decoder", str(trained_run), "--out", str(tmp_path / "loud"),
              "--orbit-frames", "4"])
    finally:
        set_progress(True)
    err = capsys.readouterr().err
    for stage in ("teacher: ray-trace views", "teacher: encode", "teacher: decode", "orbit"):
        assert re.search(rf"{re.escape(stage)}: +\d+%\|", err), f"no progress bar for {stage!r}"
    _run(["generate", "--procedural", "0", "--decoder", str(trained_run), "--out", str(tmp_path / "quiet"), *FAST])
    assert "%|" not in capsys.readouterr().err


def test_lightning_predict_writes_the_same_scene_as_generate(trained_run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ckpt = next(trained_run.rglob("final.ckpt"))
    lightning_main(["predict", "--config", str(CONFIGS / "infer" / "procedural.yaml"), *TINY_CLIP, *BODY,
                    "--data.init_args.teacher.init_args.codec.init_args.latent_channels", str(C),
                    "--data.init_args.teacher.init_args.generator.init_args.trajectories", "[left, right, up]",
                    "--trainer.callbacks.init_args.output_dir", str(tmp_path / "predict"),
                    "--trainer.callbacks.init_args.orbit_frames", "4",
                    "--trainer.enable_progress_bar", "false", "--ckpt_path", str(ckpt)])
    out = tmp_path / "predict" / "scene_000000"
    meta = json.loads((out / "meta.json").read_text())
    assert meta["weights"]["checkpoint"] == str(ckpt) and meta["times"] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert {"orbit.mp4", "inputs.mp4", "inputs.png", "cameras", "scene"} <= {p.name for p in out.iterdir()}
    _run(["generate", "--procedural", "0", "--decoder", str(ckpt), "--out", str(tmp_path / "cli"), *FAST])
    assert _scene_bytes(out) == _scene_bytes(tmp_path / "cli")  # one path: same teacher, same predict_step


def test_generate_static_along_camera_paths_with_magnitude(models, tmp_path):
    world = ProceduralWorld(2)
    eye = world.center + torch.tensor([0.0, -1.0, -4.0])
    lyra_path = tmp_path / "path.json"
    CameraPath(look_at(torch.stack([eye, eye + torch.tensor([1.0, 0, 0])]), world.center.expand(2, 3)),
               intrinsics_from_fov(60, 32, 32), 32, 32).save(lyra_path)
    ns = tmp_path / "camera_path.json"  # a hand-written nerfstudio path: 2 cameras, 0.5 units apart along x
    ns.write_text(json.dumps({"render_height": 24, "render_width": 32, "camera_path": [
        {"camera_to_world": [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1], "fov": 50},
        {"camera_to_world": [1, 0, 0, 0.5, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1], "fov": 50}]}))
    out = tmp_path / "out"
    _run(["generate", "--procedural", "2", "--decoder", str(models / "static"), "--frames", "5", "--size", "32",
          "--trajectories", "left", "--magnitude", "left=0.1", "--camera-path", str(lyra_path),
          "--camera-path", str(ns), "--anchor", "--path-scale", "0.5", "--out", str(out), *FAST])
    g = load_ply(out / "scene.ply")
    assert g.num_gaussians == 3 * 5 * 4 * 4
    meta = json.loads((out / "meta.json").read_text())
    assert meta["clip"]["trajectories"] == ["left", "path_path", "path_camera_path"]  # files by name
    assert meta["weights"]["decoder"]["kind"] == "pretrained" and meta["times"] is None
    left = CameraPath.load(out / "cameras" / "00_left.json")
    travel = float((left.c2w[-1, :3, 3] - left.c2w[0, :3, 3]).norm())
    assert travel == pytest.approx(0.1 * world.scene_scale, rel=1e-4)
    anchored = CameraPath.load(out / "cameras" / "02_path_camera_path.json")
    assert torch.allclose(anchored.c2w[0], left.c2w[0], atol=1e-5)  # attached to the start view
    moved = float((anchored.c2w[-1, :3, 3] - anchored.c2w[0, :3, 3]).norm())
    assert moved == pytest.approx(0.5 * 0.5 * world.scene_scale, rel=1e-4)


# ---- lyra generate: image, prompt, video (tiny random diffusers models) -----------------------------------


def test_image_teacher_is_gen3c_from_image(models):
    from lyra.data.generators.gen3c import Gen3CGenerator
    from lyra.inference.teachers import ImageTeacher

    gen = Gen3CGenerator(models / "wan", DCTCodec(latent_channels=C), depth_path=models / "depth", num_inference_steps=2,
                         num_views=2, trajectories=["left", "spiral"])
    image = torch.from_numpy(_smooth_image(40, 48)).float() / 255
    ref = gen.from_image(image, 5, 32, 32, seed=4)
    ours = ImageTeacher(gen, images=[image], trajectories=["left", "spiral"], seed=4).generate(0, 5, 32, 32)
    assert torch.equal(ours.latents, ref.latents) and torch.equal(ours.c2w, ref.c2w) and torch.equal(ours.depth, ref.depth)


def test_generate_from_an_image_repeats_bit_for_bit(models, tmp_path):
    args = ["generate", "--image", str(models / "photo.png"), "--decoder", str(models / "static"), *_image_args(models),
            *FAST]
    _run([*args, "--out", str(tmp_path / "a"), "--seed", "7"])
    _run([*args, "--out", str(tmp_path / "b"), "--seed", "7"])
    _run([*args, "--out", str(tmp_path / "c"), "--seed", "8"])
    a = _scene_bytes(tmp_path / "a")
    assert a == _scene_bytes(tmp_path / "b") and a != _scene_bytes(tmp_path / "c")
    meta = json.loads((tmp_path / "a" / "meta.json").read_text())
    assert meta["source"]["image"] == str(models / "photo.png") and meta["weights"]["codec"]["class"] == "DCTCodec"
    assert meta["teacher"]["generator"]["gen3c"]["num_inference_steps"] == 2 and meta["clip"]["trajectories"] == ["left", "zoom_out"]
    assert iio.imread(tmp_path / "a" / "input.png").shape == (32, 32, 3)  # the centre-cropped, resized input


def test_generate_with_a_decoder_that_reads_the_input_depth_and_pixels(models, tmp_path):
    # From an image, the depth is the GEN3C cache's (the monocular estimate at the input view) ...
    _run(["generate", "--image", str(models / "photo.png"), "--decoder", str(models / "static_depth"),
          *_image_args(models), *FAST, "--out", str(tmp_path / "image")])
    # ... from a procedural seed, the world's own; both reach the decoder through StudentModule.
    _run(["generate", "--procedural", "1", "--decoder", str(models / "static_depth"), "--frames", "5", "--size", "32",
          "--trajectories", "left,up", "--out", str(tmp_path / "proc"), *FAST])
    for out in ("image", "proc"):
        g = load_ply(tmp_path / out / "scene.ply")
        # The grid's Gaussians (2 trajectories x 5 frames x 4 x 4), then one per input pixel.
        assert g.num_gaussians == 2 * 5 * 4 * 4 + 32 * 32 and torch.isfinite(g.means).all()


def test_generate_from_an_image_with_a_vae_pipeline_folder_and_offload(models, tmp_path):
    out = tmp_path / "vae"
    _run(["generate", "--image", str(models / "photo.png"), "--decoder", str(models / "static_vae"),
          "--teacher", str(models / "pipe"), "--depth-model", str(models / "depth"), "--steps", "1", "--frames", "5",
          "--size", "32", "--trajectories", "up", "--offload", "--teacher-chunk", "1", "--render-chunk", "2",
          "--out", str(out), *FAST])
    meta = json.loads((out / "meta.json").read_text())
    assert meta["weights"]["codec"]["class"] == "DiffusersVideoVAE" and meta["weights"]["codec"]["latent_channels"] == 4
    assert meta["settings"]["offload"] and load_ply(out / "scene.ply").num_gaussians == 5 * 4 * 4


def test_generate_from_a_prompt(models, tmp_path):
    out = tmp_path / "prompt"
    _run(["generate", "--prompt", "a red ball on a table", "--t2i", str(models / "t2i" / "pipeline"),
          "--t2i-steps", "1", "--decoder", str(models / "static"), *_image_args(models), "--out", str(out), *FAST])
    meta = json.loads((out / "meta.json").read_text())
    assert meta["source"]["prompt"] == "a red ball on a table" and meta["clip"]["caption"] == "a red ball on a table"
    assert meta["teacher"]["generator"]["text_to_image"]["steps"] == 1
    image = iio.imread(out / "input.png")
    assert image.shape == (32, 32, 3) and image.std() > 0  # the pipeline drew it
    assert load_ply(out / "scene.ply").num_gaussians == 2 * 5 * 4 * 4


def _video_inputs(folder, frames=9, size=(40, 48), depth=True, seed=5):
    """A moving procedural scene filmed along a sideways path: mp4 + the camera file a pose estimator writes."""
    world = ProceduralWorld(seed, dynamic=True)
    H, W = size
    K = intrinsics_from_fov(60, W, H)
    start = world.start_view(K, H, W, torch.Generator().manual_seed(seed))
    c2w = make_trajectory("left", start, world.center, frames, world.scene_scale, magnitude=0.2)
    time = torch.linspace(0, 1, frames)
    rgb, z = world.render(c2w, K.expand(frames, 3, 3), H, W, time)
    from lyra.viz import write_video

    write_video(folder / "clip.mp4", rgb, fps=8)
    arrays = {"c2w": c2w.double().numpy(), "K": K.expand(frames, 3, 3).numpy(), "time": time.numpy()}
    if depth:
        arrays["depth"] = torch.where(z >= 100, torch.zeros_like(z), z).numpy()
    np.savez(folder / "cams.npz", **arrays)
    return folder / "clip.mp4", folder / "cams.npz", arrays


def test_generate_from_a_video_with_cameras(models, tmp_path):
    video, cams, arrays = _video_inputs(tmp_path)
    out = tmp_path / "out"
    _run(["generate", "--video", str(video), "--cameras", str(cams), "--decoder", str(models / "dynamic"), "--vae", "dct",
          "--frames", "5", "--size", "32", "--times", "0,0.5,1", "--decode-chunk", "2", "--out", str(out), *FAST])
    meta = json.loads((out / "meta.json").read_text())
    times, files = read_dynamic_index(out / "scene")
    assert times == [0.0, 0.5, 1.0] and len(files) == 3 and meta["clip"]["trajectories"] == ["video"]
    assert meta["teacher"]["generator"]["video_frames"] == 9
    # the world was scaled so its median depth is 3.2, and the outputs scaled back to the file's units
    picked = [0, 2, 4, 6, 8]
    depth = torch.from_numpy(arrays["depth"][picked])
    scale = meta["clip"]["world_scale"]
    assert scale != 1.0 and scale == pytest.approx(3.2 / float(depth[:, :, 4:44][depth[:, :, 4:44] > 0].median()), rel=0.05)
    path = CameraPath.load(out / "cameras" / "00_video.json")
    assert torch.allclose(path.c2w, torch.from_numpy(arrays["c2w"][picked]).float(), atol=1e-4)
    assert torch.allclose(path.time, torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0]))
    g = load_ply(files[0])
    inside = ((g.means - path.c2w[0, :3, 3]) @ path.c2w[0, :3, 2])
    assert inside.median() > 0.1 / scale  # Gaussians lie in front of the camera, at the file's scale


@pytest.mark.parametrize("name", ["procedural.yaml", "video.yaml", "image.yaml"])
def test_infer_configs_build(name, capsys):
    with pytest.raises(SystemExit) as e:
        lightning_main(["predict", "--config", str(CONFIGS / "infer" / name), "--print_config"])
    assert e.value.code in (0, None)
    import yaml

    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["data"]["class_path"] == "lyra.inference.GenerateDataModule"
    assert cfg["trainer"]["callbacks"][0]["class_path"] == "lyra.inference.SceneWriter"
    assert cfg["model"]["init_args"]["decoder"]["class_path"].endswith("DynamicGaussianDecoder")
    assert cfg["return_predictions"] is False


@pytest.mark.parametrize("reads_video", [False, True])
def test_lightning_predict_video_config(models, tmp_path, monkeypatch, reads_video):
    """configs/infer/video.yaml on the main job's decoder (it reads the video's depth and pixels, so the camera
    file carries depth) and on one as the paper builds it (the camera file needs no depth)."""
    monkeypatch.chdir(tmp_path)
    video, cams, _ = _video_inputs(tmp_path, depth=reads_video)
    decoder = models / ("dynamic_video" if reads_video else "dynamic")
    plain = [] if reads_video else ["--config", str(ROOT / "benchmarks/configs/dynamic_without_input_video.yaml")]
    lightning_main(["predict", "--config", str(CONFIGS / "infer" / "video.yaml"), *TINY_CLIP, *BODY, *PAPER_LAYOUT, *plain,
                    "--data.init_args.teacher.init_args.codec.init_args.latent_channels", str(C),
                    "--data.init_args.teacher.init_args.generator.init_args.video", str(video),
                    "--data.init_args.teacher.init_args.generator.init_args.cameras", str(cams),
                    "--data.init_args.num_times", "2", "--data.init_args.time_chunk", "1",
                    "--model.init_args.init_from", str(decoder),
                    "--trainer.callbacks.init_args.output_dir", str(tmp_path / "predict"),
                    "--trainer.callbacks.init_args.orbit_frames", "4", "--trainer.enable_progress_bar", "false"])
    out = tmp_path / "predict" / "scene_000000"
    times, files = read_dynamic_index(out / "scene")
    assert times == [0.0, 1.0] and len(files) == 2
    meta = json.loads((out / "meta.json").read_text())
    assert meta["weights"]["init_from"] == str(decoder) and meta["clip"]["trajectories"] == ["video"]


# ---- bad input: named, before any long work, nothing left behind ------------------------------------------




def test_bad_inputs_are_named_before_any_work(models, tmp_path, capsys, no_long_work):
    out = tmp_path / "out"
    proc = ["generate", "--procedural", "0", "--out", str(out), *FAST]
    image = ["generate", "--out", str(out), "--decoder", str(models / "static"), *_image_args(models), *FAST]
    # decoders
    err = _error(capsys, [*proc, "--decoder", str(tmp_path / "nowhere")])
    assert "does not exist" in err and "lightning fit --config configs/dynamic.yaml" in err
    err = _error(capsys, [*proc, "--decoder", str(models / "depth")])
    assert "not a lyra Gaussian decoder" in err and str(models / "depth") in err
    (tmp_path / "empty").mkdir()
    assert "no *.ckpt" in _error(capsys, [*proc, "--decoder", str(tmp_path / "empty")])
    # sizes
    err = _error(capsys, [*proc, "--decoder", str(models / "static"), "--frames", "6", "--size", "32"])
    assert "6 frames" in err and "5, 9" in err and "--frames" in err
    # images: mode, size, format
    iio.imwrite(tmp_path / "grey.png", _smooth_image(48, 48)[..., 0])
    err = _error(capsys, [*image, "--image", str(tmp_path / "grey.png")])
    assert "greyscale" in err and "grey.png" in err
    iio.imwrite(tmp_path / "small.png", _smooth_image(16, 16))
    err = _error(capsys, [*image, "--image", str(tmp_path / "small.png")])
    assert "smaller than the 32x32 clip" in err and "small.png" in err
    rgba = np.concatenate([_smooth_image(48, 48), np.full((48, 48, 1), 100, np.uint8)], axis=-1)
    iio.imwrite(tmp_path / "alpha.png", rgba)
    assert "transparent" in _error(capsys, [*image, "--image", str(tmp_path / "alpha.png")])
    (tmp_path / "photo.tiff").write_bytes(b"II*\x00")
    assert "unknown image format '.tiff'" in _error(capsys, [*image, "--image", str(tmp_path / "photo.tiff")])
    # teacher folders
    err = _error(capsys, [*image, "--image", str(models / "photo.png"), "--depth-model", str(tmp_path / "nodepth")])
    assert "does not exist" in err and "nodepth" in err
    err = _error(capsys, ["generate", "--image", str(models / "photo.png"), "--decoder", str(models / "static"),
                          "--teacher", str(models / "pipe"), "--depth-model", str(models / "depth"), "--frames", "5",
                          "--size", "32", "--out", str(out)])
    assert "does not fit the decoder" in err and "latent_channels" in err  # a 4-channel VAE for an 8-channel decoder
    assert "--t2i" in _error(capsys, [*image, "--prompt", "a cat"])
    # videos and cameras
    video, cams, arrays = _video_inputs(tmp_path, frames=9, depth=False)
    vid = ["generate", "--video", str(video), "--decoder", str(models / "dynamic"), "--vae", "dct", "--frames", "5",
           "--size", "32", "--out", str(out), *FAST]
    np.savez(tmp_path / "short.npz", c2w=arrays["c2w"][:8], K=arrays["K"][:8])
    err = _error(capsys, [*vid, "--cameras", str(tmp_path / "short.npz")])
    assert "has 9 frames but" in err and "holds 8 cameras" in err and "short.npz" in err
    bent = arrays["c2w"].copy()
    bent[3, :3, :3] *= 1.1
    np.savez(tmp_path / "bent.npz", c2w=bent, K=arrays["K"])
    err = _error(capsys, [*vid, "--cameras", str(tmp_path / "bent.npz")])
    assert "c2w[3] is not a rigid camera-to-world pose" in err and "bent.npz" in err and "SVD" in err
    (tmp_path / "cams.json").write_text("{}")
    assert "unknown camera file format '.json'" in _error(capsys, [*vid, "--cameras", str(tmp_path / "cams.json")])
    assert "--cameras" in _error(capsys, vid)
    (tmp_path / "clip.gif").write_bytes(b"GIF89a")
    err = _error(capsys, ["generate", "--video", str(tmp_path / "clip.gif"), "--cameras", str(cams), "--decoder",
                          str(models / "dynamic"), "--vae", "dct", "--out", str(out)])
    assert "unknown video format '.gif'" in err
    # camera paths, sources, output folder
    (tmp_path / "weird.json").write_text(json.dumps({"poses": []}))
    err = _error(capsys, [*proc, "--decoder", str(models / "static"), "--camera-path", str(tmp_path / "weird.json")])
    assert "unknown camera path format" in err and "weird.json" in err
    assert "exactly one source" in _error(capsys, ["generate", "--procedural", "0", "--image", "x.png", "--decoder", "d"])
    assert "static decoder" in _error(capsys, [*proc, "--decoder", str(models / "static"), "--times", "0,1"])
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert "--overwrite" in _error(capsys, [*proc, "--decoder", str(models / "static")])
    assert (out / "keep.txt").read_text() == "mine"
    out.joinpath("keep.txt").unlink()
    out.rmdir()
    _no_output(out)


def test_a_failure_mid_run_leaves_no_output_folder(models, tmp_path, monkeypatch):
    from lyra.inference import pipeline

    def broken(*a, **k):
        raise RuntimeError("disk full")
    monkeypatch.setattr(pipeline, "write_views", broken)
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="disk full"):
        main(["generate", "--procedural", "0", "--decoder", str(models / "static"), "--frames", "5", "--size", "32",
              "--trajectories", "left", "--out", str(out), *FAST])
    _no_output(out)
    # and --overwrite keeps the old folder (one lyra wrote: it has the marker) until the new one is complete
    out.mkdir()
    (out / "old.txt").write_text("old")
    (out / OUTPUT_MARKER).write_text("")
    with pytest.raises(RuntimeError, match="disk full"):
        main(["generate", "--procedural", "0", "--decoder", str(models / "static"), "--frames", "5", "--size", "32",
              "--trajectories", "left", "--out", str(out), "--overwrite", *FAST])
    assert sorted(p.name for p in out.iterdir()) == [OUTPUT_MARKER, "old.txt"]


def test_a_decoder_that_reads_the_video_depth_needs_it_in_the_camera_file(models, tmp_path, capsys):
    video, cams, _ = _video_inputs(tmp_path, depth=False)
    out = tmp_path / "out"
    err = _error(capsys, ["generate", "--video", str(video), "--cameras", str(cams), "--decoder",
                          str(models / "dynamic_video"), "--vae", "dct", "--frames", "5", "--size", "32",
                          "--out", str(out), *FAST])
    assert "input_depth" in err and "depth" in err
    _no_output(out)
    video, cams, _ = _video_inputs(tmp_path, depth=True)
    _run(["generate", "--video", str(video), "--cameras", str(cams), "--decoder", str(models / "dynamic_video"),
          "--vae", "dct", "--frames", "5", "--size", "32", "--times", "0,1", "--out", str(out), *FAST])
    times, files = read_dynamic_index(out / "scene")
    assert times == [0.0, 1.0] and len(files) == 2
