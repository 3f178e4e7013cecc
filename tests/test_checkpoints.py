"""Checkpoints and run files: what loads is what was trained (clear errors for broken files, other
decoders and changed settings), non-finite weights are never written, and config snapshots land in
the run's folder, never over the user's files; clip sizes the decoder cannot take stop a run
before anything is generated."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import CONFIGS, cli_args, synthetic_batch, tiny_decoder, tiny_student
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader

from lyra.cli import LyraCLI, main
from lyra.models import StudentModule, load_decoder_weights


@pytest.fixture(scope="module")
def static_ckpt(tmp_path_factory) -> Path:
    """last.ckpt of a 1-step `lightning fit` of configs/static.yaml (tiny)."""
    out = tmp_path_factory.mktemp("static_run")
    main(["fit", *cli_args(out), "--trainer.max_steps", "1"])
    return out / "tb" / "version_0" / "checkpoints" / "last.ckpt"


# ---- files that are not checkpoints ----------------------------------------------------------------


def _bad_files(tmp: Path, good: Path) -> dict[str, Path]:
    files = {"empty": tmp / "empty.ckpt", "text": tmp / "notes.ckpt", "truncated": tmp / "truncated.ckpt"}
    files["empty"].write_bytes(b"")
    files["text"].write_text("epoch 3, loss 0.12\n")
    files["truncated"].write_bytes(good.read_bytes()[: good.stat().st_size // 2])  # a crash mid-copy
    return files


@pytest.mark.parametrize("kind", ["empty", "text", "truncated"])
@pytest.mark.parametrize("subcommand", ["fit", "test"])
def test_a_file_that_is_not_a_checkpoint_is_a_clear_error_naming_it(kind, subcommand, static_ckpt, in_tmp):
    bad = _bad_files(in_tmp, static_ckpt)[kind]
    with pytest.raises(ValueError, match=rf"--ckpt_path {bad}.*(empty|not a PyTorch checkpoint)"):
        main([subcommand, *cli_args(in_tmp / "run"), "--trainer.max_steps", "1", "--ckpt_path", str(bad)])


def test_a_missing_checkpoint_file_is_a_clear_error(in_tmp):
    with pytest.raises(FileNotFoundError, match=r"--ckpt_path .*nowhere.ckpt does not exist"):
        main(["fit", *cli_args(in_tmp / "run"), "--ckpt_path", str(in_tmp / "nowhere.ckpt")])


# ---- checkpoints of another decoder, or other settings -------------------------------------------


def test_decoder_config_naming_the_interface_is_refused(in_tmp):
    with pytest.raises(ValueError, match=r"GaussianDecoder.*interface.*StaticGaussianDecoder.*DynamicGaussianDecoder"):
        LyraCLI(run=False, args=cli_args(in_tmp, "static.yaml", "--model.init_args.decoder.class_path",
                                         "lyra.models.GaussianDecoder"))


@pytest.mark.parametrize("metadata", [True, False], ids=["with_lyra_metadata", "without"])
def test_static_checkpoint_resumed_as_dynamic_is_an_error_naming_both_classes(metadata, static_ckpt, in_tmp):
    ckpt = static_ckpt
    if not metadata:  # a checkpoint written before lyra recorded the decoder class (or by other code)
        state = torch.load(static_ckpt, weights_only=True)
        del state["lyra_decoder"]
        ckpt = in_tmp / "plain.ckpt"
        torch.save(state, ckpt)
    for sub in ("fit", "test"):
        with pytest.raises(ValueError, match=r"StaticGaussianDecoder.*DynamicGaussianDecoder"):
            main([sub, *cli_args(in_tmp / sub, "dynamic.yaml"), "--trainer.max_steps", "2", "--ckpt_path", str(ckpt)])


@pytest.mark.parametrize("setting,value", [("far", "30.0"), ("near", "0.2"), ("scale_bias", "4.0")])
def test_a_changed_float_decoder_setting_is_refused_on_resume(setting, value, static_ckpt, in_tmp):
    with pytest.raises(ValueError, match=rf"decoder settings differ from the checkpoint.*{setting}"):
        main(["fit", *cli_args(in_tmp / "run"), "--trainer.max_steps", "2", "--ckpt_path", str(static_ckpt),
              f"--model.init_args.decoder.init_args.{setting}", value])


# ---- non-finite weights: never loaded, never written ------------------------------------------------


class Batches(torch.utils.data.Dataset):
    def __len__(self):
        return 64

    def __getitem__(self, i):
        return synthetic_batch(seed=i % 3)


def fit(module, out: Path, steps: int, ckpt_path=None, **kw):
    cb = ModelCheckpoint(dirpath=out, save_last=True, every_n_train_steps=1)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, max_steps=steps,
                        default_root_dir=out, callbacks=[cb], **kw)
    trainer.fit(module, train_dataloaders=DataLoader(Batches(), batch_size=None), ckpt_path=ckpt_path)
    return trainer


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tiny")
    fit(tiny_student(lpips=False), out, 2)
    return out / "last.ckpt"


def _corrupt(src: Path, dst: Path, how) -> Path:
    state = torch.load(src, weights_only=True)
    how(state)
    torch.save(state, dst)
    return dst


def _first_adam_state(state):
    return state["optimizer_states"][0]["state"][0]


CORRUPTIONS = {
    "nan_weight": (lambda s: s["state_dict"]["decoder.head.proj.weight"].view(-1).__setitem__(3, float("nan")),
                   r"decoder.head.proj.weight.*(NaN|non-finite)"),
    "inf_adam_moment": (lambda s: _first_adam_state(s)["exp_avg_sq"].view(-1).__setitem__(0, float("inf")),
                        r"optimizer state.*exp_avg_sq.*(Inf|non-finite)"),
    "nan_adam_moment": (lambda s: _first_adam_state(s)["exp_avg"].fill_(float("nan")),
                        r"optimizer state.*exp_avg.*(NaN|non-finite)"),
    "wrong_moment_shape": (lambda s: _first_adam_state(s).__setitem__("exp_avg", torch.zeros(1)),
                           r"optimizer state.*exp_avg.*shape \(1,\).*does not fit"),
    "missing_group": (lambda s: s["optimizer_states"][0]["param_groups"].pop(),
                      r"optimizer state.*2 parameter groups.*1"),
}


@pytest.mark.parametrize("case", list(CORRUPTIONS))
def test_a_corrupted_checkpoint_is_refused_at_load_and_last_ckpt_is_kept(case, tiny_ckpt, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    how, match = CORRUPTIONS[case]
    last = _corrupt(tiny_ckpt, run / "last.ckpt", how)
    before = last.read_bytes()
    with pytest.raises(ValueError, match=match) as err:
        fit(tiny_student(lpips=False), run, 4, ckpt_path=last)
    assert str(last) in str(err.value)
    assert last.read_bytes() == before, "a refused checkpoint must not be overwritten"
    assert sorted(p.name for p in run.iterdir()) == ["last.ckpt"]


class GoesNaN(StudentModule):
    """A student whose weights turn non-finite in the update of step ``bad_step`` (as a broken
    optimizer state or an overflow would make them), while the loss stays finite."""

    bad_step = 2

    def optimizer_step(self, *args, **kwargs):
        super().optimizer_step(*args, **kwargs)
        if self.global_step == self.bad_step:  # global_step counts the steps done before this one
            with torch.no_grad():
                self.decoder.tokens.latent_embed.proj.weight.view(-1)[5] = float("nan")


def test_non_finite_weights_stop_training_naming_step_and_parameter_and_are_never_written(tmp_path):
    module = tiny_student(lpips=False)
    module.__class__ = GoesNaN
    with pytest.raises(FloatingPointError, match=r"step 3.*decoder.tokens.latent_embed.proj.weight"):
        fit(module, tmp_path, 6)
    ckpts = sorted(tmp_path.glob("*.ckpt"))
    assert ckpts
    for p in ckpts:
        state = torch.load(p, weights_only=True)
        assert state["global_step"] <= 2, p.name
        assert all(torch.isfinite(v).all() for v in state["state_dict"].values()), f"{p.name} holds NaN weights"


def test_saving_non_finite_weights_is_refused(tmp_path):
    module = tiny_student(lpips=False)
    trainer = fit(module, tmp_path / "ok", 1)
    with torch.no_grad():
        module.decoder.head.proj.bias[0] = float("inf")
    with pytest.raises(FloatingPointError, match=r"decoder.head.proj.bias"):
        trainer.save_checkpoint(tmp_path / "bad.ckpt")
    assert not (tmp_path / "bad.ckpt").exists()


def test_init_from_non_finite_weights_is_refused(tiny_ckpt, tmp_path):
    bad = _corrupt(tiny_ckpt, tmp_path / "nan.ckpt", CORRUPTIONS["nan_weight"][0])
    with pytest.raises(ValueError, match=r"nan.ckpt.*head.proj.weight.*(NaN|non-finite)"):
        load_decoder_weights(tiny_decoder(), bad)
    folder = tmp_path / "pretrained"
    dec = tiny_decoder()
    with torch.no_grad():
        dec.head.proj.bias[1] = float("nan")
    dec.save_pretrained(folder)
    with pytest.raises(ValueError, match=r"pretrained.*head.proj.bias.*(NaN|non-finite)"):
        load_decoder_weights(tiny_decoder(), folder)


# ---- config snapshots ---------------------------------------------------------------------------


GEN_TINY = ["--clip.num_frames", "5", "--clip.height", "32", "--clip.width", "32", "--data.init_args.num_clips", "1",
            "--model.init_args.generator.init_args.num_views", "2", "--trainer.enable_progress_bar", "false"]


def test_predict_never_overwrites_config_yaml_in_the_working_directory(in_tmp):
    mine = in_tmp / "config.yaml"
    mine.write_text("my own notes\n")
    main(["predict", "--config", str(CONFIGS / "generate.yaml"), *GEN_TINY])
    assert mine.read_text() == "my own notes\n"
    snapshots = [p for p in in_tmp.rglob("config*.yaml") if p != mine]
    assert [p.relative_to(in_tmp).as_posix() for p in snapshots] == ["outputs/clips/config.predict.yaml"]
    assert "ProceduralGenerator" in snapshots[0].read_text()


def test_fit_snapshot_goes_to_the_run_folder(in_tmp):
    main(["fit", *cli_args(in_tmp / "run"), "--trainer.max_steps", "1"])
    assert (in_tmp / "run/tb/version_0/config.yaml").is_file()
    assert not (in_tmp / "config.yaml").exists()


# ---- clip sizes -----------------------------------------------------------------------------------


def test_a_size_the_decoder_cannot_take_is_refused_before_generation(in_tmp):
    msg = r"height 72.*multiple of 16.*space_factor 8.*patch_size 2.*64 or 80.*DCTCodec"
    with pytest.raises(ValueError, match=msg):
        main(["predict", "--config", str(CONFIGS / "generate.yaml"), *GEN_TINY, "--clip.height", "72"])
    assert not (in_tmp / "outputs").exists(), "nothing may be generated"
    with pytest.raises(ValueError, match=msg):
        LyraCLI(run=False, args=cli_args(in_tmp / "run", "static.yaml", "--clip.height", "72"))
    # A decoder with patch_size 1 takes any multiple of the codec's 8 pixels.
    cli = LyraCLI(run=False, args=cli_args(in_tmp / "run", "static.yaml", "--clip.height", "72",
                                           "--model.init_args.decoder.init_args.patch_size", "1"))
    assert cli.datamodule.teacher.height == 72
    main(["predict", "--config", str(CONFIGS / "generate.yaml"), *GEN_TINY, "--clip.height", "40", "--clip.width", "48",
          "--student_patch_size", "1"])
    assert (in_tmp / "outputs/clips/manifest.json").is_file()


def test_options_given_with_a_checkpoint_are_not_undone_by_its_saved_hyperparameters(static_ckpt, in_tmp):
    """LightningCLI lays a checkpoint's hyperparameters over the config; lyra uses the config as given:
    the checkpoint was trained with export_ply true, the test is asked for none."""
    out = in_tmp / "evaluation"
    main(["test", *cli_args(out, "static.yaml", "--model.init_args.export_ply", "false"), "--ckpt_path", str(static_ckpt)])
    assert (out / "tb/version_0/test/summary.json").is_file()
    assert not (out / "tb/version_0/test/ply").exists()
