"""TeacherModule + ClipGenerator: determinism, the decode-what-you-encode contract, freezing, config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from lyra.data.clip import Clip
from lyra.data.codecs import DCTCodec
from lyra.data.generators import ClipGenerator, GeneratedClip, ProceduralGenerator
from lyra.data.generators.procedural import sky_as_unknown
from lyra.data.procedural import ProceduralWorld
from lyra.models.teacher import TeacherModule

ROOT = Path(__file__).resolve().parents[1]
T, H, W = 5, 32, 32


def small_teacher(**gen_kwargs) -> TeacherModule:
    gen = ProceduralGenerator(seed=3, num_views=2, num_objects=(2, 3), **gen_kwargs)
    return TeacherModule(gen, DCTCodec(latent_channels=48), num_frames=T, height=H, width=W)


class LatentGenerator(ClipGenerator):
    """Makes latents directly, like a diffusion model denoising in latent space."""

    def __init__(self, channels: int = 48, latent_frames: int = 2, seed: int = 0) -> None:
        super().__init__(seed)
        self.channels, self.latent_frames = channels, latent_frames

    def generate(self, index: int, num_frames: int, height: int, width: int) -> GeneratedClip:
        g = torch.Generator().manual_seed(self.base_seed + index)
        z = torch.randn(2, self.channels, self.latent_frames, height // 8, width // 8, generator=g)
        eye = torch.eye(4).expand(2, num_frames, 4, 4).clone()
        K = torch.tensor([[20.0, 0, 16], [0, 20.0, 16], [0, 0, 1]]).expand(2, num_frames, 3, 3).clone()
        return GeneratedClip(c2w=eye, K=K, time=torch.zeros(2, num_frames), latents=z, caption=f"clip {index}")


def test_procedural_generator_is_deterministic_per_index():
    gen = ProceduralGenerator(seed=5, num_views=2, num_objects=(2, 3))
    a, b, c = gen.generate(1, T, H, W), gen.generate(1, T, H, W), gen.generate(2, T, H, W)
    assert torch.equal(a.rgb, b.rgb) and torch.equal(a.c2w, b.c2w) and torch.equal(a.depth, b.depth)
    assert not torch.equal(a.rgb, c.rgb)
    assert a.meta["world_seed"] == 6 and a.depth_is_metric and torch.equal(a.gt_rgb, a.rgb)
    json.dumps(gen.describe())  # goes into shard manifests


def test_make_clip_decodes_its_own_latents_and_keeps_exact_pixels():
    teacher = small_teacher()
    clip = teacher.make_clip(4)
    gen = teacher.generator.generate(4, T, H, W)
    assert clip.latents.shape == (2, 48, 2, H // 8, W // 8) and clip.rgb.shape == (2, T, H, W, 3)
    assert torch.equal(clip.latents, teacher.codec.encode(gen.rgb))
    assert torch.equal(clip.rgb, teacher.codec.decode(clip.latents))  # what the student must match
    assert torch.equal(clip.gt_rgb, gen.rgb) and torch.equal(clip.depth, gen.depth) and clip.depth_is_metric
    assert not torch.equal(clip.rgb, clip.gt_rgb)  # 48 channels are lossy: rgb really is a decoding
    assert clip.meta["index"] == 4 and clip.caption == gen.caption
    assert torch.equal(teacher.make_clip(4).rgb, clip.rgb)


def test_latent_generators_skip_the_encoder():
    teacher = TeacherModule(LatentGenerator(), DCTCodec(latent_channels=48), num_frames=T, height=H, width=W)
    clip = teacher.make_clip(7)
    z = teacher.generator.generate(7, T, H, W).latents
    assert torch.equal(clip.latents, z) and torch.equal(clip.rgb, teacher.codec.decode(z))
    assert clip.gt_rgb is None and clip.depth is None
    wrong = TeacherModule(LatentGenerator(channels=16), DCTCodec(latent_channels=48), num_frames=T, height=H, width=W)
    with pytest.raises(ValueError, match="pair the generator with its own codec"):
        wrong.make_clip(0)


def test_generator_that_ignores_the_requested_size_is_rejected():
    class Stubborn(ProceduralGenerator):
        def generate(self, index, num_frames, height, width):
            return super().generate(index, num_frames, 2 * height, width)

    teacher = TeacherModule(Stubborn(num_views=1, num_objects=(1, 1)), DCTCodec(), num_frames=T, height=H, width=W)
    with pytest.raises(ValueError, match="must honour the request"):
        teacher.make_clip(0)
    with pytest.raises(ValueError, match="multiple of space_factor"):
        TeacherModule(ProceduralGenerator(), DCTCodec(), num_frames=T, height=30, width=W)


def test_teacher_is_frozen_and_never_sharded():
    teacher = TeacherModule(LatentGenerator(), DCTCodec(latent_channels=48), num_frames=T, height=H, width=W)
    teacher.generator.proj = torch.nn.Linear(3, 3)  # a weight, as real generators have
    teacher.requires_grad_(False)
    teacher.train()
    assert not teacher.training and not teacher.generator.training
    small = small_teacher()
    small.train()
    assert not small.training
    assert all(not p.requires_grad for p in small.parameters())
    before = {k: v.clone() for k, v in small.state_dict().items()}
    small.configure_model()
    assert all(torch.equal(before[k], v) for k, v in small.state_dict().items())


def test_predict_step_returns_clips_for_indices():
    teacher = small_teacher()
    clips = teacher.predict_step(torch.tensor([0, 2]), 0)
    assert [c.meta["index"] for c in clips] == [0, 2] and all(isinstance(c, Clip) for c in clips)


def test_time_reversed_clips_reverse_poses_too():
    teacher = small_teacher(dynamic=True, time_reversal="extra_clips")
    fwd, rev = teacher.generator.generate(0, T, H, W), teacher.generator.generate(1, T, H, W)
    assert fwd.meta["world_seed"] == rev.meta["world_seed"] and rev.meta["time_reversed"]
    assert torch.equal(rev.time, fwd.time) and bool((rev.time.diff(dim=1) > 0).all())  # re-reversed: 0 -> 1
    assert torch.equal(rev.c2w, fwd.c2w.flip(1))  # poses run backwards with the frames
    # Each stored frame is what its own camera sees at its own time (re-render frame 1 exactly).
    world = ProceduralWorld(fwd.meta["world_seed"], dynamic=True, num_objects=(2, 3))
    rgb, depth = world.render(rev.c2w[:, 1], rev.K[:, 1], H, W, rev.time[:, 1])
    assert torch.equal(rgb, rev.rgb[:, 1]) and torch.equal(sky_as_unknown(depth), rev.depth[:, 1])
    assert not torch.equal(rev.rgb, fwd.rgb.flip(1))  # not merely the forward video played backwards
    with pytest.raises(ValueError, match="only applies to dynamic"):
        ProceduralGenerator(time_reversal="extra_clips")


def test_generate_config_builds_the_documented_defaults(tmp_path, monkeypatch):
    from lyra.callbacks import ClipWriter
    from lyra.cli import LyraCLI

    monkeypatch.chdir(tmp_path)
    config = yaml.safe_load((ROOT / "configs/generate.yaml").read_text())
    assert config.pop("return_predictions") is False  # a `predict` subcommand option; clips stream to disk
    (tmp_path / "generate.yaml").write_text(yaml.safe_dump(config))
    cli = LyraCLI(run=False, args=["--config", str(tmp_path / "generate.yaml")])
    model = cli.model
    assert isinstance(model, TeacherModule) and isinstance(model.generator, ProceduralGenerator)
    assert isinstance(model.codec, DCTCodec) and (model.num_frames, model.height, model.width) == (17, 128, 128)
    assert len(model.generator.trajectories) == 6 and len(cli.datamodule.clip_indices) == 8
    writers = [cb for cb in cli.trainer.callbacks if isinstance(cb, ClipWriter)]
    assert len(writers) == 1 and writers[0].output_dir == "outputs/clips"
    assert cli.trainer.accelerator.__class__.__name__ == "CPUAccelerator"


def test_lightning_predict_writes_the_cache(tmp_path, monkeypatch):
    from lyra.cli import main
    from lyra.data.shards import ShardReader

    monkeypatch.chdir(tmp_path)
    main(["predict", "--config", str(ROOT / "configs/generate.yaml"), "--data.init_args.num_clips", "3",
          "--model.init_args.num_frames", "5", "--model.init_args.height", "32", "--model.init_args.width", "32",
          "--trainer.callbacks.init_args.clips_per_shard", "2", "--trainer.enable_progress_bar", "false"])
    reader = ShardReader(tmp_path / "outputs/clips")
    assert reader.indices == [0, 1, 2] and reader.manifest["complete"] and len(reader.manifest["shards"]) == 2
    teacher = TeacherModule(ProceduralGenerator(seed=0), DCTCodec(), num_frames=5, height=32, width=32)
    ref = Clip.from_numpy_dict(teacher.make_clip(2).to_numpy_dict())
    assert torch.equal(reader.load(2).latents, ref.latents) and torch.equal(reader.load(2).rgb, ref.rgb)


def test_procedural_sky_depth_is_stored_as_unknown():
    from lyra.data.procedural import SKY_DEPTH

    gen = ProceduralGenerator(seed=3, num_views=1, num_objects=(2, 3)).generate(0, T, H, W)
    world = ProceduralWorld(gen.meta["world_seed"], num_objects=(2, 3))
    _, depth = world.render(gen.c2w, gen.K, H, W)
    sky = depth >= SKY_DEPTH
    assert sky.any() and (~sky).any()
    assert (gen.depth[sky] == 0).all() and torch.equal(gen.depth[~sky], depth[~sky])
