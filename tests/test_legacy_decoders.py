"""Decoders saved before the decoder was split into parts still load, decode the same Gaussians, and
settings since removed are refused with the way forward (tests/data/legacy_decoder/README.md)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lyra.models import (
    DynamicGaussianDecoder,
    GaussianDecoder,
    load_decoder,
    load_decoder_weights,
)
from lyra.models.checkpoints import read_checkpoint
from lyra.render.cameras import look_at, make_intrinsics

LEGACY = Path(__file__).parent / "data" / "legacy_decoder"


def legacy_inputs():
    """The inputs the fixture's expected outputs were computed on (the same seeds and draws)."""
    g = torch.Generator().manual_seed(1)
    B, V, T, H, W = 1, 2, 5, 16, 16
    lat = torch.randn(B, V, 4, 2, 2, 2, generator=g)
    eye = torch.randn(B, V, T, 3, generator=g) * 0.3 + torch.tensor([0, 0, -3.0])
    c2w = look_at(eye, torch.zeros(B, V, T, 3))
    K = make_intrinsics(20.0, 20.0, 8.0, 8.0).expand(B, V, T, 3, 3)
    depth = 2.5 + torch.rand(B, T, H, W, generator=g)
    image = torch.rand(B, T, H, W, 3, generator=g)
    time = torch.linspace(0, 1, T).expand(B, V, T).contiguous()
    return dict(latents=lat, c2w=c2w, K=K, time=time, target_time=torch.tensor([[0.1, 0.9]]), input_depth=depth,
                input_image=image)


def assert_decodes_like_before(decoder):
    with torch.no_grad():
        g = decoder.eval()(**legacy_inputs())
    expected = load_file(LEGACY / "expected_outputs.safetensors")
    for name, value in g.to_dict().items():
        torch.testing.assert_close(value, expected[name], atol=2e-5, rtol=1e-5)


def old_checkpoint(path: Path) -> Path:
    """A Lightning checkpoint as the one-class decoder's StudentModule wrote it."""
    state = load_file(LEGACY / "diffusion_pytorch_model.safetensors")
    config = json.loads((LEGACY / "config.json").read_text())
    torch.save({"state_dict": {f"decoder.{k}": v for k, v in state.items()}, "global_step": 3,
                "lyra_decoder": {"class": config["_class_name"], "config": config}}, path)
    return path


def test_a_folder_of_the_old_layout_loads_and_decodes_the_same_gaussians():
    decoder = GaussianDecoder.from_pretrained(LEGACY)
    assert type(decoder) is DynamicGaussianDecoder and "head_type" not in decoder.config
    assert_decodes_like_before(decoder)


def test_an_old_checkpoint_starts_a_run_and_loads_for_generation(tmp_path):
    ckpt = old_checkpoint(tmp_path / "old.ckpt")
    fresh = DynamicGaussianDecoder.from_config(GaussianDecoder.from_pretrained(LEGACY).config)
    assert load_decoder_weights(fresh, ckpt) == []
    assert_decodes_like_before(fresh)
    decoder, info = load_decoder(ckpt)
    assert info.kind == "checkpoint" and info.trained_on == {}
    assert_decodes_like_before(decoder)


@pytest.mark.parametrize("setting,value,experiment", [("head_type", "conv", "E8"), ("depth_units", "cameras", "E17"),
                                                      ("grid_cells", "unseen", "E23")])
def test_a_removed_setting_that_changed_the_decoder_is_refused_with_the_way_forward(tmp_path, setting, value,
                                                                                     experiment):
    folder = tmp_path / "old"
    shutil.copytree(LEGACY, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, setting: value}))
    with pytest.raises(ValueError, match=rf"{setting}='{value}'.*no longer has.*docs/experiments.md, {experiment}"):
        GaussianDecoder.from_pretrained(folder)


def test_a_pickle_that_carries_code_is_named_and_never_run(tmp_path):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"state_dict": {}, "payload": Payload()}, tmp_path / "evil.ckpt")
    with pytest.raises(ValueError, match=r"evil.ckpt is not a lyra / Lightning checkpoint.*could run code"):
        read_checkpoint(tmp_path / "evil.ckpt")
    (tmp_path / "text.ckpt").write_text("hello")
    with pytest.raises(ValueError, match=r"text.ckpt is not a readable Lightning checkpoint"):
        read_checkpoint(tmp_path / "text.ckpt")
    assert not marker.exists()
