"""Shared tiny settings and builders for the CPU test suite.

Anything two test files need lives here: the tiny decoder body, synthetic clips and batches,
and the path of the repository's configs. Fixtures are at the bottom.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lyra.data.captures import write_colmap, write_llff, write_realestate10k, write_transforms_json
from lyra.data.captures.synthetic import film_procedural
from lyra.data.clip import ClipBatch
from lyra.losses.rendering import RenderingLoss
from lyra.models.blocks import BodyConfig
from lyra.models.decoders import DynamicGaussianDecoder, StaticGaussianDecoder
from lyra.models.student import StudentModule
from lyra.render.cameras import look_at, make_intrinsics
from lyra.render.renderer import GaussianRenderer

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"

TINY_BODY = BodyConfig(width=32, num_layers=2, pattern="MA", d_state=8, headdim=16, attn_headdim=16, chunk_size=8)
TINY_DECODER = dict(latent_channels=8, body=TINY_BODY, far=20.0)


def tiny_decoder(dynamic: bool = False, seed: int = 0, **overrides) -> StaticGaussianDecoder:
    torch.manual_seed(seed)
    return (DynamicGaussianDecoder if dynamic else StaticGaussianDecoder)(**{**TINY_DECODER, **overrides})


def decoder_inputs(B=1, V=2, T=5, h=4, w=4, C=8, seed=0):
    """Random latents [B, V, C, T', h, w] with cameras around the origin looking at it."""
    g = torch.Generator().manual_seed(seed)
    Tl = 1 + (T - 1) // 4
    lat = torch.randn(B, V, C, Tl, h, w, generator=g)
    eye = torch.randn(B, V, T, 3, generator=g) * 0.3 + torch.tensor([0, 0, -3.0])
    c2w = look_at(eye, torch.zeros(B, V, T, 3))
    K = make_intrinsics(40.0, 40.0, 16.0, 16.0).expand(B, V, T, 3, 3)
    return lat, c2w, K


def synthetic_batch(seed=0, B=1, V=2, T=5, H=32, W=32, dynamic=False) -> ClipBatch:
    """A two-colour plane seen from V short trajectories, with metric depth and ground truth."""
    g = torch.Generator().manual_seed(seed)
    h, w = H // 8, W // 8
    eye = torch.randn(B, V, T, 3, generator=g) * 0.2 + torch.tensor([0, 0, -3.0])
    c2w = look_at(eye, torch.zeros(B, V, T, 3))
    K = make_intrinsics(30.0, 30.0, W / 2, H / 2).expand(B, V, T, 3, 3).clone()
    rgb = torch.ones(B, V, T, H, W, 3) * torch.tensor([0.9, 0.3, 0.2])
    rgb[..., : W // 2, :] = torch.tensor([0.1, 0.4, 0.8])
    time = torch.linspace(0, 1, T).expand(B, V, T).clone() if dynamic else torch.zeros(B, V, T)
    F = [0, 2, 4]
    return ClipBatch(latents=torch.randn(B, V, 8, 2, h, w, generator=g), src_c2w=c2w, src_K=K, src_time=time,
                     rgb=rgb[:, :, F], c2w=c2w[:, :, F], K=K[:, :, F], time=time[:, :, F],
                     depth=torch.full((B, V, 3, H, W), 3.0), gt_rgb=rgb[:, :, F], depth_is_metric=True,
                     input_rgb=rgb[:, 0], captions=["plane"] * B)


def tiny_student(dynamic: bool = False, lpips: bool = True, decoder=None, **kwargs) -> StudentModule:
    loss = RenderingLoss(lpips_weight=0.5 if lpips else 0.0, lpips_net="alex", depth_weight=0.05)
    kwargs.setdefault("lr", 3e-3)
    kwargs.setdefault("warmup_steps", 2)
    return StudentModule(decoder or tiny_decoder(dynamic), GaussianRenderer(backend="torch"), loss, **kwargs)


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Run in an empty working directory (configs write outputs/ relative to it)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


CAPTURE_WRITERS = {
    "colmap_text": lambda folder, capture: write_colmap(folder, capture),
    "colmap_binary": lambda folder, capture: write_colmap(folder, capture, binary=True),
    "llff": write_llff,
    "realestate10k": lambda folder, capture: write_realestate10k(folder / "clip.txt", capture),
    "transforms_json": write_transforms_json,
}


@pytest.fixture(scope="session")
def filmed_capture(tmp_path_factory):
    """A procedural world filmed along a spiral: 30 frames of 64 x 96 with sparse points, exact depth
    and a marker blob at a known world point (lyra.data.captures.synthetic)."""
    return film_procedural(tmp_path_factory.mktemp("filmed") / "frames", num_frames=30, height=64, width=96,
                           marker=True)


@pytest.fixture(scope="session")
def capture_folders(filmed_capture, tmp_path_factory):
    """The filmed capture written in every format lyra reads: {format: folder}."""
    root = tmp_path_factory.mktemp("captures")
    for name, write in CAPTURE_WRITERS.items():
        write(root / name, filmed_capture.capture)
    return {name: root / name for name in CAPTURE_WRITERS}
