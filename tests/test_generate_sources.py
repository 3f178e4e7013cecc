"""`lyra generate` from an image, a prompt and a video with cameras (tiny random diffusers models loaded back
by path), bit-for-bit repeats, and `lightning predict --config configs/infer/*.yaml`."""

import json
import os

os.environ["HF_HUB_OFFLINE"] = "1"


import imageio.v3 as iio
import pytest
import torch
from conftest import CONFIGS, ROOT
from generate_fixtures import (
    BODY,
    FAST,
    PAPER_LAYOUT,
    TINY_CLIP,
    C,
    image_args,
    run_lyra,
    scene_bytes,
    video_inputs,
)

from lyra.cli import main as lightning_main
from lyra.render.camera_path import CameraPath
from lyra.render.formats import read_dynamic_index
from lyra.render.ply import load_ply


def test_generate_from_an_image_repeats_bit_for_bit(models, tmp_path):
    args = ["generate", "--image", str(models / "photo.png"), "--decoder", str(models / "static"), *image_args(models),
            *FAST]
    run_lyra([*args, "--out", str(tmp_path / "a"), "--seed", "7"])
    run_lyra([*args, "--out", str(tmp_path / "b"), "--seed", "7"])
    run_lyra([*args, "--out", str(tmp_path / "c"), "--seed", "8"])
    a = scene_bytes(tmp_path / "a")
    assert a == scene_bytes(tmp_path / "b") and a != scene_bytes(tmp_path / "c")
    meta = json.loads((tmp_path / "a" / "meta.json").read_text())
    assert meta["source"]["image"] == str(models / "photo.png") and meta["weights"]["codec"]["class"] == "DCTCodec"
    assert meta["teacher"]["generator"]["gen3c"]["num_inference_steps"] == 2 and meta["clip"]["trajectories"] == ["left", "zoom_out"]
    assert iio.imread(tmp_path / "a" / "input.png").shape == (32, 32, 3)  # the centre-cropped, resized input


def test_generate_with_a_decoder_that_reads_the_input_depth_and_pixels(models, tmp_path):
    # From an image, the depth is the GEN3C cache's (the monocular estimate at the input view) ...
    run_lyra(["generate", "--image", str(models / "photo.png"), "--decoder", str(models / "static_depth"),
          *image_args(models), *FAST, "--out", str(tmp_path / "image")])
    # ... from a procedural seed, the world's own; both reach the decoder through StudentModule.
    run_lyra(["generate", "--procedural", "1", "--decoder", str(models / "static_depth"), "--frames", "5", "--size", "32",
          "--trajectories", "left,up", "--out", str(tmp_path / "proc"), *FAST])
    for out in ("image", "proc"):
        g = load_ply(tmp_path / out / "scene.ply")
        # The grid's Gaussians (2 trajectories x 5 frames x 4 x 4), then one per input pixel.
        assert g.num_gaussians == 2 * 5 * 4 * 4 + 32 * 32 and torch.isfinite(g.means).all()


def test_generate_from_an_image_with_a_vae_pipeline_folder_and_offload(models, tmp_path):
    out = tmp_path / "vae"
    run_lyra(["generate", "--image", str(models / "photo.png"), "--decoder", str(models / "static_vae"),
          "--teacher", str(models / "pipe"), "--depth-model", str(models / "depth"), "--steps", "1", "--frames", "5",
          "--size", "32", "--trajectories", "up", "--offload", "--teacher-chunk", "1", "--render-chunk", "2",
          "--out", str(out), *FAST])
    meta = json.loads((out / "meta.json").read_text())
    assert meta["weights"]["codec"]["class"] == "DiffusersVideoVAE" and meta["weights"]["codec"]["latent_channels"] == 4
    assert meta["settings"]["offload"] and load_ply(out / "scene.ply").num_gaussians == 5 * 4 * 4


def test_generate_from_a_prompt(models, tmp_path):
    out = tmp_path / "prompt"
    run_lyra(["generate", "--prompt", "a red ball on a table", "--t2i", str(models / "t2i" / "pipeline"),
          "--t2i-steps", "1", "--decoder", str(models / "static"), *image_args(models), "--out", str(out), *FAST])
    meta = json.loads((out / "meta.json").read_text())
    assert meta["source"]["prompt"] == "a red ball on a table" and meta["clip"]["caption"] == "a red ball on a table"
    assert meta["teacher"]["generator"]["text_to_image"]["steps"] == 1
    image = iio.imread(out / "input.png")
    assert image.shape == (32, 32, 3) and image.std() > 0  # the pipeline drew it
    assert load_ply(out / "scene.ply").num_gaussians == 2 * 5 * 4 * 4


def test_generate_from_a_video_with_cameras(models, tmp_path):
    video, cams, arrays = video_inputs(tmp_path)
    out = tmp_path / "out"
    run_lyra(["generate", "--video", str(video), "--cameras", str(cams), "--decoder", str(models / "dynamic"), "--vae", "dct",
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
    video, cams, _ = video_inputs(tmp_path, depth=reads_video)
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
