"""Fixtures and helpers of the `lyra generate` / `lightning predict` tests (test_generate_*.py): a decoder
trained for a few steps by `lightning fit`, tiny random diffusers / transformers models saved to local
folders (as a user's would be), and the command wrappers. Registered in conftest.py (pytest_plugins)."""

import json

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from conftest import CONFIGS, tiny_decoder

from lyra.cli import main as lightning_main
from lyra.data.procedural import ProceduralWorld
from lyra.render.cameras import intrinsics_from_fov
from lyra.render.trajectories import make_trajectory
from lyra.tools import main

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




def run_lyra(argv):
    assert main(argv) == 0


def lyra_error(capsys, argv) -> str:  # a clean exit 2 with the message on stderr
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    return capsys.readouterr().err


def no_output(path):  # neither the folder nor a hidden temporary one
    assert not path.exists()
    assert not [p for p in path.parent.iterdir() if p.name.startswith(f".{path.name}.")]


def scene_bytes(folder) -> dict[str, bytes]:
    scene = folder / "scene.ply"
    if scene.is_file():
        return {"scene.ply": scene.read_bytes()}
    return {p.name: p.read_bytes() for p in sorted((folder / "scene").iterdir())}


def smooth_image(H, W, seed=0):  # [H, W, 3] uint8 low-frequency colours
    low = torch.rand(1, 3, 5, 5, generator=torch.Generator().manual_seed(seed))
    img = torch.nn.functional.interpolate(low, size=(H, W), mode="bicubic", align_corners=False).clamp(0, 1)
    return (img[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """`lightning fit --config configs/dynamic.yaml` at tiny sizes for 3 steps: a real run folder whose
    checkpoints' decoder records the clips it trained on, like the README's main job leaves."""
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


@pytest.fixture(scope="session")
def models(tmp_path_factory):
    """Tiny decoders and teacher models saved with save_pretrained, as a user's local folders would be."""
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import (
        DepthAnythingConfig,
        DepthAnythingForDepthEstimation,
        Dinov2Config,
    )

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
    tiny_text_to_image(root / "t2i")
    iio.imwrite(root / "photo.png", smooth_image(48, 40))
    return root


def tiny_text_to_image(folder):
    """A random StableDiffusionPipeline with a CLIP text model and a byte-level CLIP tokenizer written by hand
    (every byte is a token, no merges): all of it built offline from configs."""
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
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


def image_args(models):
    return ["--teacher", str(models / "wan"), "--vae", "dct", "--depth-model", str(models / "depth"), "--steps", "2",
            "--frames", "5", "--size", "32", "--trajectories", "left,zoom_out"]


def video_inputs(folder, frames=9, size=(40, 48), depth=True, seed=5):
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
