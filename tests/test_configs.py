"""Configs keep their promises: every YAML builds, every documented overlay stack builds what it
says (model and data), codec facts are linked, documented commands name files that exist, and
the CPU configs run end to end (fit + test) on tiny sizes."""

import json
import re
import shlex
import sys
from pathlib import Path

import pytest
import torch
from conftest import CONFIGS, ROOT

from lyra.callbacks import FrameScores
from lyra.cli import LyraCLI, expand_config_bases, main
from lyra.data.captures import CaptureSource
from lyra.data.codecs import DCTCodec
from lyra.data.datamodule import ClipDataModule
from lyra.data.generators import ProceduralGenerator
from lyra.data.shards import ShardWriter
from lyra.models import (
    DynamicGaussianDecoder,
    StaticGaussianDecoder,
    StudentModule,
    TeacherModule,
)

CPU = ["static.yaml", "dynamic.yaml"]
GPU = ["gpu/static_reference.yaml", "gpu/dynamic_reference.yaml"]
SIZE_STAGES = {"1_176x320_17f.yaml": (17, 176, 320), "2_49f.yaml": (49, 176, 320), "3_352x640.yaml": (49, 352, 640),
               "4_704x1280.yaml": (49, 704, 1280), "5_121f.yaml": (121, 704, 1280)}
STAGES = sorted(p.name for p in (CONFIGS / "stages").glob("*.yaml"))
INFER = sorted(f"infer/{p.name}" for p in (CONFIGS / "infer").glob("*.yaml"))
CAPTURES = ["captures.yaml", "eval/capture.yaml"]
ON_CPU = ["--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.strategy", "auto",
          "--trainer.precision", "32-true"]
# The reference body is 58 M parameters; stacking tests build it at a fraction of the width.
SMALL_BODY = ["--model.init_args.decoder.init_args.body.width", "64", "--model.init_args.decoder.init_args.body.headdim",
              "32", "--model.init_args.decoder.init_args.body.attn_headdim", "32",
              "--model.init_args.decoder.init_args.body.d_state", "16"]


def build(*args):
    return LyraCLI(run=False, args=list(args), save_config_kwargs={"overwrite": True})


def configs(*names):
    return [a for n in names for a in ("--config", str(CONFIGS / n))]


def test_config_folder_is_covered():
    found = {str(p.relative_to(CONFIGS)) for p in CONFIGS.rglob("*.yaml")}
    assert found == {*CPU, *GPU, "generate.yaml", "gpu/generate_gen3c.yaml", "base/student_cpu.yaml",
                     "base/student_gpu.yaml", *(f"stages/{s}" for s in STAGES), *INFER, *CAPTURES}
    assert len(STAGES) == 8


@pytest.mark.parametrize("name", CPU)
def test_cpu_config_builds_what_it_says(name, in_tmp):
    cli = build(*configs(name, "stages/cpu_tiny.yaml"))
    model, data = cli.model, cli.datamodule
    assert isinstance(model, StudentModule) and isinstance(data, ClipDataModule)
    dynamic = name == "dynamic.yaml"
    assert type(model.decoder) is (DynamicGaussianDecoder if dynamic else StaticGaussianDecoder)
    assert data.teacher.generator.dynamic is dynamic
    codec = data.teacher.codec
    assert isinstance(codec, DCTCodec)
    # linked from the codec, not written in the decoder config
    assert model.decoder.config.latent_channels == codec.latent_channels == 128
    assert (model.decoder.config.time_factor, model.decoder.config.space_factor) == (codec.time_factor, codec.space_factor)
    assert model.decoder.body.width == 96 and model.decoder.body.pattern == "MMMA"
    assert (data.teacher.num_frames, data.teacher.height, data.teacher.width) == (9, 64, 64)  # from clip:
    assert str(cli.trainer.default_root_dir).endswith(name.removesuffix(".yaml"))
    batch = next(iter(data.train_dataloader()))
    targets = 2 if dynamic else 3  # dynamic.yaml renders 2 of the trajectories per training step
    assert tuple(batch.latents.shape) == (1, 3, 128, 3, 8, 8) and tuple(batch.rgb.shape) == (1, targets, 2, 64, 64, 3)
    g = model(batch)  # the built pieces fit together
    assert g.batch_shape == ((1, 4) if dynamic else (1,))  # one Gaussian set per target view


def test_a_linked_codec_setting_follows_the_codec(in_tmp):
    cli = build(*configs("static.yaml", "stages/cpu_tiny.yaml"),
                "--data.init_args.teacher.init_args.codec.init_args.latent_channels", "48")
    assert cli.model.decoder.config.latent_channels == 48


def test_benchmark_overlays_build_on_the_static_config(in_tmp):
    # benchmarks/configs/ keeps earlier defaults runnable for before/after figures (docs/benchmarks.md)
    for path in sorted((ROOT / "benchmarks" / "configs").glob("*.yaml")):
        cli = build("--config", str(CONFIGS / "static.yaml"), "--config", str(path), *configs("stages/cpu_tiny.yaml"))
        assert isinstance(cli.model, StudentModule), path
    cli = build(*configs("static.yaml"), "--config", str(ROOT / "benchmarks/configs/cpu_default_2026-11-25.yaml"))
    cfg = cli.model.decoder.config
    assert (cfg.density, cfg.gaussian_frames, cfg.latent_skip) == (1, "all", False)
    assert cli.datamodule.targets == "source" and cli.model.renderer.backend == "torch"
    now = build(*configs("static.yaml")).model.decoder.config
    assert (now.density, now.latent_frames_per_view) == (4, 2)  # the CPU layout since the 2-seed repeat
    cfg = build(*configs("static.yaml"), "--config", str(ROOT / "benchmarks/configs/cpu_default_2026-12-01.yaml")
                ).model.decoder.config
    assert (cfg.density, cfg.gaussian_frames, cfg.latent_frames_per_view) == (2, "latent", None)
    assert now.input_depth and now.input_depth_fill == 8  # the static CPU student reads the input depth ...
    cfg = build(*configs("static.yaml"), "--config", str(ROOT / "benchmarks/configs/static_without_input_depth.yaml")
                ).model.decoder.config
    assert not cfg.input_depth and not cfg.input_image_gaussians  # ... unless told not to (the paper's inputs)
    assert now.input_image_gaussians  # ... and adds a Gaussian per input pixel ...
    cfg = build(*configs("static.yaml"), "--config", str(ROOT / "benchmarks/configs/static_without_input_image.yaml")
                ).model.decoder.config
    assert cfg.input_depth and not cfg.input_image_gaussians  # ... unless told not to
    dyn = build(*configs("dynamic.yaml")).model.decoder.config
    assert dyn.input_depth and dyn.input_image_gaussians  # the dynamic one reads the input video ...
    cfg = build(*configs("dynamic.yaml"), "--config", str(ROOT / "benchmarks/configs/dynamic_without_input_video.yaml")
                ).model.decoder.config
    assert not cfg.input_depth and not cfg.input_image_gaussians  # ... unless told not to


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("base", CPU)
def test_every_stage_stacks_on_the_cpu_configs(base, stage, in_tmp):
    base_cli = build(*configs(base))
    cli = build(*configs(base, f"stages/{stage}"))
    assert cli.config != base_cli.config, f"{stage} changed nothing"
    if stage in SIZE_STAGES:
        t, h, w = SIZE_STAGES[stage]
        teacher = cli.datamodule.teacher
        assert (teacher.num_frames, teacher.height, teacher.width) == (t, h, w)
        assert cli.datamodule.expected_size == {"num_frames": t, "height": h, "width": w}
    if stage == "6_multi_trajectory.yaml":
        assert cli.datamodule.num_views == (1, 6)
    if stage == "7_pruning.yaml":
        assert cli.model.hparams.prune_keep == 0.2 and cli.model.loss.opacity_regularizer


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory):
    return write_tiny_cache(tmp_path_factory.mktemp("cache"), clips_per_shard=2)


def write_tiny_cache(root: Path, clips_per_shard: int) -> Path:
    """A clip cache of two 5-frame 32x32 clips, as a teacher writes it (manifest with its identity)."""
    teacher = TeacherModule(ProceduralGenerator(seed=0, num_views=2, num_objects=(2, 3)), DCTCodec(latent_channels=24),
                            num_frames=5, height=32, width=32)
    writer = ShardWriter(root, clips_per_shard=clips_per_shard)
    writer.prepare(teacher.describe(), range(2))
    writer.add([teacher.make_clip(i) for i in range(2)])
    writer.finish()
    return root


@pytest.mark.parametrize("stage", [None, *(s for s in STAGES if s != "cpu_tiny.yaml")])  # cpu_tiny: CPU configs only
@pytest.mark.parametrize("recipe", GPU)
def test_every_stage_stacks_on_the_gpu_recipes(recipe, stage, tiny_cache, in_tmp):
    names = [recipe] + ([f"stages/{stage}"] if stage else [])
    cli = build(*configs(*names), *ON_CPU, *SMALL_BODY, "--data.init_args.shard_dir", str(tiny_cache))
    model, data = cli.model, cli.datamodule
    assert type(model.decoder) is (DynamicGaussianDecoder if "dynamic" in recipe else StaticGaussianDecoder)
    assert model.decoder.config.latent_channels == 24  # linked from the cache's manifest
    assert model.decoder.body.num_layers == 16 and model.decoder.body.pattern == "MMMMMMMA"
    assert model.decoder.is_gradient_checkpointing and model.loss.lpips is not None
    assert data.source == "shards" and data.teacher is None
    t, h, w = SIZE_STAGES.get(stage, (121, 704, 1280))
    assert data.expected_size == {"num_frames": t, "height": h, "width": w}
    # The tiny cache holds 5-frame 32x32 clips: every stage must refuse it before training, naming the size.
    with pytest.raises(ValueError, match="another size"):
        data.setup("fit")


def test_gpu_recipe_trains_from_a_cache_of_the_right_size(tiny_cache, in_tmp):
    cli = build(*configs("gpu/static_reference.yaml"), *ON_CPU, *SMALL_BODY, "--data.init_args.shard_dir",
                str(tiny_cache), "--clip.num_frames", "5", "--clip.height", "32", "--clip.width", "32",
                "--data.init_args.num_val_clips", "0", "--data.init_args.num_workers", "0",
                "--data.init_args.num_views", "2", "--data.init_args.target_frames", "2")
    cli.datamodule.setup("fit")
    batch = next(iter(cli.datamodule.train_dataloader()))
    g = cli.model(batch)
    assert g.num_gaussians == 2 * 5 * 4 * 4


@pytest.mark.parametrize("stage", list(SIZE_STAGES))
def test_size_stages_stack_on_generate(stage, capsys):
    # predict configs carry predict-only options: check they resolve, and that the stage sets the size
    with pytest.raises(SystemExit) as e:
        main(["predict", *configs("generate.yaml", f"stages/{stage}"), "--print_config"])
    assert e.value.code in (0, None)
    out = capsys.readouterr().out
    t, h, w = SIZE_STAGES[stage]
    assert f"num_frames: {t}" in out and f"height: {h}" in out and f"width: {w}" in out


@pytest.mark.parametrize("path,cls", [("generate.yaml", "ProceduralGenerator"),
                                      ("gpu/generate_gen3c.yaml", "Gen3CGenerator")])
def test_predict_configs_parse(path, cls, capsys):
    # The GPU one names local weight directories that only a GPU machine has: check that it resolves
    # (classes, argument names and types). The procedural one runs for real in tests/test_teacher.py.
    with pytest.raises(SystemExit) as e:
        main(["predict", *configs(path), "--print_config"])
    assert e.value.code in (0, None)
    assert cls in capsys.readouterr().out


@pytest.mark.parametrize("path", INFER)
def test_inference_configs_resolve(path, capsys):
    # They name checkpoints and weight folders a trained run or a GPU machine has: check that they
    # resolve (classes, argument names, types); tests/test_generate.py runs the procedural one.
    with pytest.raises(SystemExit) as e:
        main(["predict", *configs(path), "--print_config"])
    assert e.value.code in (0, None)
    assert "StudentModule" in capsys.readouterr().out


def test_base_files_compose_and_refuse_cycles(tmp_path):
    expanded = expand_config_bases(["fit", "--config", str(CONFIGS / "static.yaml")])
    assert expanded.count("--config") == 2  # the base, then the file itself
    (tmp_path / "a.yaml").write_text("_base_: b.yaml\n")
    (tmp_path / "b.yaml").write_text("_base_: a.yaml\n")
    with pytest.raises(ValueError, match="includes itself"):
        expand_config_bases(["--config", str(tmp_path / "a.yaml")])
    (tmp_path / "c.yaml").write_text("_base_: missing.yaml\n")
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        expand_config_bases(["--config", str(tmp_path / "c.yaml")])


def test_missing_class_in_config_names_it(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"_base_: {CONFIGS / 'static.yaml'}\nmodel:\n  init_args:\n    decoder:\n"
                   "      class_path: lyra.models.decoders.NoSuchDecoder\n")
    with pytest.raises(SystemExit):
        build("--config", str(bad))
    assert "NoSuchDecoder" in capsys.readouterr().err


def documented_commands() -> list[tuple[str, list[str]]]:
    """Every `lightning <subcommand> ...` line of the README, docs/, configs/ and lyra/ docstrings; not the
    experiment notebook (docs/experiments.md), which keeps commands as they were run, including settings
    since removed."""
    docs = [d for d in (ROOT / "docs").glob("*.md") if d.name != "experiments.md"]
    files = [ROOT / "README.md", *docs, *CONFIGS.rglob("*.yaml"), *(ROOT / "lyra").rglob("*.py"),
             *(ROOT / "benchmarks").glob("*.py")]
    found = []
    for f in files:
        text = f.read_text().replace("\\\n", " ")
        text = re.sub(r"--(ckpt_path|model\.init_args\.init_from)[ =]\S+", "", text)  # files a run makes
        for m in re.finditer(r"lightning (fit|validate|test|predict)((?: +--[^\s`]+(?: +[^\s#`|&-][^\s#`|&]*)?)+)", text):
            clean = shlex.split(m.group(2))
            if "--config" in clean and not any(c in m.group(2) for c in "{<"):  # placeholders
                found.append((f"{f.relative_to(ROOT)}: {m.group(0).strip()}", [m.group(1), *clean]))
    return found


@pytest.mark.slow  # > 10 s on 2 cores: CI's second step (-m slow)
def test_documented_commands_name_files_that_exist(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    commands = documented_commands()
    assert len(commands) >= 10
    for where, argv in commands:
        for i, a in enumerate(argv):
            if a == "--config":
                assert (ROOT / argv[i + 1]).is_file(), f"{where} names a missing file {argv[i + 1]}"
        with pytest.raises(SystemExit) as e:
            main([*argv, "--print_config"])
        assert e.value.code in (0, None), where
        capsys.readouterr()


@pytest.mark.slow  # > 10 s on 2 cores: CI's second step (-m slow)
@pytest.mark.parametrize("name", CPU)
def test_fit_then_test_runs_on_cpu(name, in_tmp):
    """The shipped configs, shrunk by the cpu_tiny overlay, fit a few steps and run the test protocol."""
    out = in_tmp / "out"
    main(["fit", *configs(name, "stages/cpu_tiny.yaml"), "--trainer.max_steps", "3",
          "--trainer.val_check_interval", "3", "--trainer.max_time", "null", "--trainer.default_root_dir", str(out)])
    ckpts = list(out.rglob("*.ckpt"))
    assert ckpts, "fit must leave a checkpoint"
    summaries = list(out.rglob("summary.json"))
    assert summaries, "test_after_fit must write the test summary"
    summary = json.loads(summaries[0].read_text())
    assert summary["num_scenes"] == 1
    assert {"student/truth/psnr@up", "nearest/truth/psnr@up", "codec/truth/psnr@up", "student/source/psnr"} <= set(summary)
    assert list(out.rglob("events.out.tfevents*")), "TensorBoard logs expected"
    assert list(out.rglob("*.ply")), "test scenes are exported as PLY"
    assert list(out.rglob("val_orbit/*.mp4")), "validation writes a short orbit video"
    # `lightning test --ckpt_path` on the checkpoint works too.
    main(["test", *configs(name, "stages/cpu_tiny.yaml"), "--ckpt_path", str(ckpts[0]),
          "--trainer.default_root_dir", str(in_tmp / "out2")])
    assert list((in_tmp / "out2").rglob("summary.json"))
    assert torch.load(ckpts[0], weights_only=True)["state_dict"], "checkpoints load without unpickling objects"


def test_fit_from_a_cache_stops_at_a_corrupt_shard_naming_it(tmp_path, in_tmp):
    """A bit flipped after the cache was written (same size) stops training before that shard's
    clip reaches a step, with the shard's path and the repair command."""
    cache = write_tiny_cache(tmp_path / "cache", clips_per_shard=1)
    bad = cache / "shards" / "clips-0000000001.safetensors"
    blob = bytearray(bad.read_bytes())
    blob[-100] ^= 0x01  # inside a tensor: the header still parses
    bad.write_bytes(bytes(blob))
    cli = build(*configs("gpu/static_reference.yaml"), *ON_CPU, *SMALL_BODY, "--data.init_args.shard_dir", str(cache),
                "--clip.num_frames", "5", "--clip.height", "32", "--clip.width", "32",
                "--data.init_args.num_val_clips", "0", "--data.init_args.num_workers", "0",
                "--data.init_args.num_views", "2", "--data.init_args.target_frames", "1",
                "--data.init_args.num_train_clips", "2",
                "--model.init_args.decoder.init_args.body.num_layers", "2",
                "--model.init_args.decoder.init_args.body.pattern", "MA",
                "--model.init_args.loss.init_args.lpips_weight", "0",
                "--trainer.max_steps", "3", "--trainer.limit_val_batches", "0",
                "--trainer.default_root_dir", str(tmp_path / "run"), "--trainer.logger", "false",
                "--trainer.enable_progress_bar", "false")
    with pytest.raises(ValueError, match=rf"{bad.name}.*checksum mismatch.*lyra cache verify"):
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    assert cli.trainer.global_step <= 1  # clip 0 may train first; clip 1 never does


@pytest.mark.parametrize("name", CAPTURES)
def test_capture_configs_build_what_they_say(name, capture_folders, in_tmp):
    root = capture_folders["colmap_binary"]
    cli = build(*configs(name), "--data.init_args.root", str(root))
    model, data = cli.model, cli.datamodule
    assert isinstance(model, StudentModule) and type(model.decoder) is StaticGaussianDecoder
    assert isinstance(data, ClipDataModule) and data.test_heldout == [-1] and data.counts["test"] is None
    source = data.teacher.generator
    assert isinstance(source, CaptureSource) and source.root == str(root) and source.depth == "sparse"
    assert model.decoder.config.input_depth and model.hparams.input_depth_noise == 0.0  # the depth input_warp lifts
    assert model.decoder.config.latent_channels == data.teacher.codec.latent_channels
    evaluation = name == "eval/capture.yaml"
    assert source.layout == ("split" if evaluation else "interleaved")
    assert any(isinstance(c, FrameScores) for c in cli.trainer.callbacks) is evaluation
    assert {"nearest", "input_warp"} <= set(model.eval_config.baselines)
    # One capture: the protocol scores its first window; training cuts four from it.
    assert data.split_indices("test") == list(range(2_000_000, 2_000_000 + (1 if evaluation else 4)))


@pytest.mark.slow  # > 10 s on 2 cores: CI's second step (-m slow)
def test_fit_and_test_on_a_capture_folder_through_the_capture_configs(capture_folders, in_tmp):
    """Train a few steps on a folder of captures (configs/captures.yaml), then score the checkpoint on
    it with the real-capture protocol (configs/eval/capture.yaml), shrunk by the cpu_tiny overlay."""
    root = in_tmp / "captures"
    root.mkdir()
    for name in ("colmap_binary", "transforms_json"):
        (root / name).symlink_to(capture_folders[name], target_is_directory=True)
    tiny = [*configs("stages/cpu_tiny.yaml"), "--data.init_args.root", str(root), "--data.init_args.test_heldout",
            "[-1]", "--data.init_args.num_test_clips", "null", "--data.init_args.num_workers", "0"]
    main(["fit", *configs("captures.yaml"), *tiny, "--trainer.max_steps", "2", "--trainer.val_check_interval", "2",
          "--trainer.max_time", "null", "--trainer.default_root_dir", str(in_tmp / "fit")])
    ckpt = next((in_tmp / "fit").rglob("last.ckpt"))
    main(["test", *configs("eval/capture.yaml"), *tiny, "--trainer.default_root_dir", str(in_tmp / "test"),
          "--ckpt_path", str(ckpt)])
    test = next((in_tmp / "test").rglob("summary.json")).parent
    summary = json.loads((test / "summary.json").read_text())
    assert summary["num_scenes"] == 2
    for key in ("student/truth/psnr@sub2", "nearest/truth/psnr@sub2", "input_warp/truth/psnr@sub2",
                "codec/truth/psnr@sub2"):
        assert 0 < summary[key] < 100, key
    rows = json.loads((test / "frames.json").read_text())
    assert {r["capture"] for r in rows} == {"colmap_binary", "transforms_json"}
    assert len(rows) == 2 * 4  # truth frames 2, 4, 6, 8 of the held-out last part (9 frames, 5 targets)
    assert all(r["image"].startswith("frame_") and 0 < r["student_psnr"] < 100 for r in rows)


def test_cli_from_argv_does_not_warn_about_its_expanded_args(monkeypatch, recwarn):
    # `lightning fit --config configs/dynamic.yaml` hands LightningCLI sys.argv with `_base_` expanded;
    # Lightning's "args beside sys.argv" warning (with the whole YAML in it) must not reach the log.
    monkeypatch.setattr(sys, "argv", ["lightning", *configs("dynamic.yaml")])
    LyraCLI(run=False, save_config_kwargs={"overwrite": True})
    assert not [w for w in recwarn if "args parameter" in str(w.message)]
