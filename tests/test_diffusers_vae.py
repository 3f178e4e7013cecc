"""DiffusersVideoVAE on tiny randomly initialised VAEs saved to disk and loaded back by path."""

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before diffusers / huggingface_hub read it

import pytest  # noqa: E402
import torch  # noqa: E402
from diffusers import (  # noqa: E402
    AutoencoderKLCogVideoX,
    AutoencoderKLCosmos,
    AutoencoderKLHunyuanVideo,
    AutoencoderKLLTXVideo,
    AutoencoderKLWan,
)

from lyra.data.codecs import SUPPORTED_VAES, DiffusersVideoVAE, VideoCodec  # noqa: E402


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _ltx():
    vae = AutoencoderKLLTXVideo(
        latent_channels=8, block_out_channels=(16,) * 4, decoder_block_out_channels=(16,) * 4,
        layers_per_block=(1,) * 5, decoder_layers_per_block=(1,) * 5, timestep_conditioning=True,
        scaling_factor=0.8)
    vae.latents_mean.copy_(torch.linspace(-0.2, 0.3, 8))  # persistent buffers: saved and reloaded
    vae.latents_std.copy_(torch.linspace(0.5, 2.0, 8))
    return vae


# family -> (tiny builder, (channels, time factor, space factor), two valid frame counts)
TINY = {
    "AutoencoderKLWan": (lambda: AutoencoderKLWan(
        base_dim=8, z_dim=4, num_res_blocks=1, latents_mean=[0.1, -0.2, 0.3, 0.0],
        latents_std=[1.5, 0.5, 2.0, 1.0]), (4, 4, 8), (1, 5)),
    "AutoencoderKLCogVideoX": (lambda: AutoencoderKLCogVideoX(
        block_out_channels=(16,) * 4, latent_channels=4, layers_per_block=1, norm_num_groups=4,
        sample_height=32, sample_width=32, scaling_factor=0.7), (4, 4, 8), (1, 9)),
    "AutoencoderKLLTXVideo": (_ltx, (8, 8, 32), (1, 9)),
    "AutoencoderKLCosmos": (lambda: AutoencoderKLCosmos(
        latent_channels=4, encoder_block_out_channels=(16,) * 4, decode_block_out_channels=(16,) * 4,
        attention_resolutions=(), resolution=32, num_layers=1,
        latents_mean=[0.05 * i for i in range(8)], latents_std=[0.5 + 0.1 * i for i in range(8)]), (4, 8, 8), (1, 17)),
    "AutoencoderKLHunyuanVideo": (lambda: AutoencoderKLHunyuanVideo(
        latent_channels=4, block_out_channels=(8, 16, 16, 16), layers_per_block=1, norm_num_groups=4,
        mid_block_add_attention=False), (4, 4, 8), (1, 5)),
}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):  # family -> directory written by save_pretrained
    torch.manual_seed(0)
    out = {}
    for name, (build, _, _) in TINY.items():
        out[name] = tmp_path_factory.mktemp(name)
        build().save_pretrained(out[name])
    return out


def _rgb(num_frames, seed=0):  # [1, T, 32, 32, 3]
    return torch.rand(1, num_frames, 32, 32, 3, generator=torch.Generator().manual_seed(seed))


def _manual_normalise(name, vae, z):  # raw posterior mode [B, C, T', h, w] -> normalised
    cfg, col = vae.config, lambda v: torch.as_tensor(v, dtype=torch.float32).view(1, -1, 1, 1, 1)
    if name == "AutoencoderKLWan":
        return (z - col(cfg.latents_mean)) / col(cfg.latents_std)
    if name == "AutoencoderKLLTXVideo":
        return (z - col(vae.latents_mean)) * cfg.scaling_factor / col(vae.latents_std)
    if name == "AutoencoderKLCosmos":
        table = lambda v: torch.tensor(v).view(1, cfg.latent_channels, -1, 1, 1)  # noqa: E731
        frames = torch.arange(z.shape[2]).clamp_max(1)  # the tiny table has 2 frame columns
        return (z - table(cfg.latents_mean)[:, :, frames]) / table(cfg.latents_std)[:, :, frames]
    return z * cfg.scaling_factor


@pytest.mark.parametrize("name", list(TINY))
def test_round_trip_shapes_and_normalisation(saved, name):
    codec = DiffusersVideoVAE(saved[name])
    (channels, tf, sf), (_, num_frames) = TINY[name][1], TINY[name][2]
    assert isinstance(codec, VideoCodec) and codec.family == name and codec.causal_first_frame
    assert (codec.latent_channels, codec.time_factor, codec.space_factor) == (channels, tf, sf)
    vae = codec.vae
    with torch.no_grad():
        assert codec.decode(codec.encode(_rgb(1))).shape == (1, 1, 32, 32, 3)
        rgb = _rgb(num_frames, seed=1)
        z = codec.encode(rgb)
        assert z.shape == (1, channels, 1 + (num_frames - 1) // tf, 32 // sf, 32 // sf)
        raw = vae.encode(rgb.permute(0, 4, 1, 2, 3) * 2 - 1).latent_dist.mode()
        expected = _manual_normalise(name, vae, raw)
        assert not torch.allclose(expected, raw, atol=1e-3)  # the normalisation is not an identity
        torch.testing.assert_close(z, expected, atol=1e-5, rtol=1e-4)  # also: posterior mode, not a sample
        out = codec.decode(z)
        assert out.shape == rgb.shape and out.min() >= 0 and out.max() <= 1
        kwargs = {"temb": torch.zeros(1)} if name == "AutoencoderKLLTXVideo" else {}
        pixels = ((vae.decode(raw, **kwargs).sample + 1) / 2).clamp(0, 1).permute(0, 2, 3, 4, 1)
        torch.testing.assert_close(out, pixels, atol=1e-4, rtol=1e-4)


def test_unknown_class_and_missing_config_errors(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKL"}))
    with pytest.raises(ValueError, match="AutoencoderKL'.*" + ".*".join(SUPPORTED_VAES)):
        DiffusersVideoVAE(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no config.json.*" + ".*".join(SUPPORTED_VAES)):
        DiffusersVideoVAE(empty)
    with pytest.raises(FileNotFoundError, match="no VAE directory"):
        DiffusersVideoVAE(tmp_path / "does-not-exist")
    (empty / "config.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="JSON object"):
        DiffusersVideoVAE(empty)
    with pytest.raises(TypeError, match="not a supported video autoencoder"):
        DiffusersVideoVAE(torch.nn.Linear(2, 2))
    with pytest.raises(TypeError, match="local directory"):
        DiffusersVideoVAE(3)


def test_pipeline_folder_model_instance_dtype_and_switches(saved, tmp_path):
    name = "AutoencoderKLHunyuanVideo"
    pipeline = tmp_path / "pipeline"
    (pipeline / "vae").mkdir(parents=True)
    for f in saved[name].iterdir():
        (pipeline / "vae" / f.name).write_bytes(f.read_bytes())
    codec = DiffusersVideoVAE(pipeline, dtype="bfloat16", enable_tiling=True, enable_slicing=True)
    assert codec.vae.dtype == torch.bfloat16
    assert codec.vae.use_tiling and codec.vae.use_slicing
    assert not any(p.requires_grad for p in codec.parameters())
    plain = DiffusersVideoVAE(TINY[name][0]())
    assert plain.vae.dtype == torch.float32 and not plain.vae.use_tiling and not plain.vae.use_slicing
    with pytest.raises(ValueError, match="floating torch dtype"):
        DiffusersVideoVAE(saved[name], dtype="int8")


def test_frame_rules_and_input_validation(saved):
    cog = DiffusersVideoVAE(saved["AutoencoderKLCogVideoX"])
    assert cog.valid_frame_counts(40) == [1, 9, 17, 25, 33]
    with pytest.raises(ValueError, match=r"1 \+ 8k.*\[1, 9, 17\]"):
        cog.encode(_rgb(5))
    with pytest.raises(ValueError, match="latent frame"):
        cog.decode(torch.zeros(1, 4, 2, 4, 4))
    wan = DiffusersVideoVAE(saved["AutoencoderKLWan"])
    with pytest.raises(ValueError, match="width 60"):
        wan.encode(torch.rand(1, 5, 32, 60, 3))
    with pytest.raises(ValueError, match="channels"):
        wan.decode(torch.zeros(1, 16, 2, 4, 4))
    with pytest.raises(ValueError, match="NaN"):
        wan.decode(torch.full((1, 4, 2, 4, 4), float("nan")))
