"""``LyraCLI``: LightningCLI with lyra's config composition and run checks; ``main`` and the ``lightning``
console entry (``console_main``: one-line errors, exit status 2)."""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from typing import Any

from jsonargparse import Namespace, set_parsing_settings
from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import (
    LightningArgumentParser,
    LightningCLI,
)

from lyra.callbacks.progress_log import ProgressLog, ScheduleCutWarning
from lyra.cli.composition import (
    ClipSize,
    _cache_config,
    _codec_spec,
    _default,
    _import,
    check_clip_size_for,
    check_decoder_class,
    codec_spec_from_config,
    expand_config_bases,
)
from lyra.cli.guards import (
    check_training_values,
    lock_run_folder,
    one_line,
    parse_error_line,
    release_run_folders,
)
from lyra.cli.runs import (
    SPECIAL_CKPT_PATHS,
    RunConfigSnapshot,
    check_checkpoint_file,
    refuse_overwriting_a_run,
    require_last_checkpoint,
)
from lyra.models.teacher import TeacherModule
from lyra.utils.errors import LyraUsageError, run_reporting_errors

# Set by console_main (the `lightning` command): parse errors become one line, not a usage dump.
_ONE_LINE_PARSE_ERRORS: list[bool] = []


class LyraCLI(LightningCLI):
    """LightningCLI over any LightningModule / LightningDataModule (subclass mode), with lyra's
    config composition (``_base_``, ``omegaconf+`` interpolation, the ``clip`` size, codec links)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("save_config_callback", RunConfigSnapshot)
        kwargs.setdefault("model_class", LightningModule)
        kwargs.setdefault("datamodule_class", LightningDataModule)
        kwargs.setdefault("subclass_mode_model", True)
        kwargs.setdefault("subclass_mode_data", True)
        kwargs.setdefault("parser_kwargs", {"parser_mode": "omegaconf+"})
        # Always present, not configurable: plain progress lines when no terminal shows the bar, and
        # a loud line when max_time cuts the learning-rate schedule short.
        defaults = dict(kwargs.get("trainer_defaults") or {})
        extra = defaults.get("callbacks") or []
        defaults["callbacks"] = [*(extra if isinstance(extra, list) else [extra]), ProgressLog(), ScheduleCutWarning()]
        kwargs["trainer_defaults"] = defaults
        # Configs write ${clip.num_frames}; under a subcommand the tree is fit.clip..., so absolute
        # references are made relative at load time (jsonargparse's setting for exactly this).
        set_parsing_settings(omegaconf_absolute_to_relative_paths=True)
        super().__init__(*args, **kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("--test_after_fit", type=bool, default=False,
                            help="after `fit`, run `test` with the final weights (fit subcommand only)")
        parser.add_class_arguments(ClipSize, "clip", fail_untyped=True, sub_configs=True)
        parser.add_argument("--student_patch_size", type=int, default=2,
                            help="predict with a teacher: the patch_size of the student decoder the clips are for; "
                                 "sizes it cannot read are refused before generation (other subcommands read it "
                                 "from the decoder config)")

    def before_instantiate_classes(self) -> None:
        """Link the codec's facts into the decoder settings (jsonargparse's link_arguments drops
        targets nested in a subclass of a subclass, as model.init_args.decoder.init_args.* is);
        refuse a decoder config naming the interface and clip sizes the decoder cannot take."""
        cfg = self.config.get(self.subcommand) if self.subcommand else self.config
        decoder = cfg.get("model.init_args.decoder")
        check_decoder_class(decoder)
        check_training_values(cfg)  # lr, batch_size, ...: named before anything is built (lyra.cli.guards)
        self._check_clip_sizes(cfg)
        if decoder is None or not decoder.get("init_args"):
            return
        spec = codec_spec_from_config(cfg.get("data"))
        if spec is None:
            return
        for name, value in spec.items():
            decoder.init_args[name] = value

    def _check_clip_sizes(self, cfg: Any) -> None:

        def side(ns: Any, key: str) -> Any:
            return ns.get(key) if isinstance(ns, Namespace) else None

        model, data = cfg.get("model"), cfg.get("data")
        cls = _import(model.class_path) if isinstance(model, Namespace) and model.get("class_path") else None
        if isinstance(cls, type) and issubclass(cls, TeacherModule):  # predict: the teacher makes the clips
            codec = _codec_spec(model.get("init_args.codec"))
            init = model.get("init_args")
            sizes = {k: side(init, k) for k in ("height", "width")}
            if codec is not None:
                check_clip_size_for(codec, cfg.get("student_patch_size") or 2, sizes,
                                "--student_patch_size says which decoder the clips are for")
            return
        decoder = cfg.get("model.init_args.decoder")
        init = data.get("init_args") if isinstance(data, Namespace) else None
        if not isinstance(decoder, Namespace) or not decoder.get("class_path") or init is None:
            return
        patch = side(decoder.get("init_args"), "patch_size") or _default(_import(decoder.class_path), "patch_size")
        if init.get("source") == "shards":
            described = _cache_config(init) or {}
            raw = described.get("codec") or {}
            codec = {**raw, "name": str(raw.get("class", "")).rpartition(".")[2]}
            sizes = {k: described.get(k, init.get(k)) for k in ("height", "width")}
        else:
            codec = _codec_spec(init.get("teacher.init_args.codec"))
            teacher = init.get("teacher.init_args")
            sizes = {k: side(teacher, k) for k in ("height", "width")}
        if codec and "space_factor" in codec and isinstance(patch, int):
            check_clip_size_for(codec, patch, sizes, "model.init_args.decoder.init_args.patch_size")

    # ---- checkpoints of the run -------------------------------------------------------------------

    def _ckpt_path(self) -> Any:
        return self.config.get(self.subcommand, {}).get("ckpt_path")

    def _check_ckpt_path(self, new_run_allowed: bool) -> None:
        """A file given as --ckpt_path was checked at parse time; here what needs the trainer."""
        ckpt = self._ckpt_path()
        if ckpt is None and new_run_allowed:
            refuse_overwriting_a_run(self.trainer)
        elif ckpt == "last":
            require_last_checkpoint(self.trainer)

    def before_fit(self) -> None:
        lock_run_folder(self.trainer)  # one fit per run folder, taken before the folder is checked
        self._check_ckpt_path(new_run_allowed=True)

    def before_validate(self) -> None:
        self._check_ckpt_path(new_run_allowed=False)

    def before_test(self) -> None:
        self._check_ckpt_path(new_run_allowed=False)

    def before_predict(self) -> None:
        self._check_ckpt_path(new_run_allowed=False)

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        if args is None:
            args = sys.argv[1:]
        if isinstance(args, (list, tuple)):
            args = expand_config_bases(list(args))
        if _ONE_LINE_PARSE_ERRORS:
            subs = parser._subcommands_action.choices.values() if parser._subcommands_action else ()
            for p in (parser, *subs):
                p.exit_on_error = False
        with warnings.catch_warnings():
            # The args handed on are sys.argv's with every `_base_` expanded, not a second source of options:
            # LightningCLI's warning about args beside sys.argv (with the whole config in it) does not apply.
            warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
            try:
                super().parse_arguments(parser, args)
            except argparse.ArgumentError as err:
                names = parser._subcommands_action.choices if parser._subcommands_action else {}
                sub = next((a for a in (args or []) if a in names), "")
                raise LyraUsageError(parse_error_line(str(err), f"lightning {sub}".strip())) from err
        # LightningCLI reads the checkpoint's hyperparameters right after parsing: check the file first.
        subcommand = self.config.get("subcommand")
        ckpt = self.config.get(subcommand, {}).get("ckpt_path") if subcommand else None
        if ckpt is not None and ckpt not in SPECIAL_CKPT_PATHS and not str(ckpt).startswith("registry:"):
            check_checkpoint_file(ckpt)

    def _parse_ckpt_path(self) -> None:
        """LightningCLI would lay a checkpoint's saved hyperparameters over the config, silently undoing
        options the user passed (``--model.init_args.export_ply false``, an evaluation's settings).
        In lyra the config given is the run's description: it is used as given, and the decoder's
        settings are checked against the checkpoint when it loads (``lyra.models.checkpoints``)."""

    def after_fit(self) -> None:
        if self.config.get(self.subcommand, {}).get("test_after_fit"):
            self.trainer.test(self.model, datamodule=self.datamodule)


def main(args: list[str] | None = None) -> None:
    # Nothing in lyra may download weights at run time; fail loudly instead of hanging on a hub.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        LyraCLI(save_config_kwargs={"overwrite": True}, args=args)
    finally:
        release_run_folders()


def console_main(args: list[str] | None = None) -> None:
    """The ``lightning`` command: ``main`` with one-line errors and exit status 2 (``--debug``: traceback)."""
    from_argv = args is None  # LightningCLI warns when given args while sys.argv holds them too
    args = list(sys.argv[1:] if from_argv else args)
    debug = "--debug" in args
    args = [a for a in args if a != "--debug"]
    if from_argv:
        sys.argv[1:] = args
    if not debug:
        _ONE_LINE_PARSE_ERRORS.append(True)
    try:
        code = run_reporting_errors(lambda: main(None if from_argv else args), "lightning", debug, one_line)
    finally:
        if not debug:
            _ONE_LINE_PARSE_ERRORS.pop()
    if code:
        sys.exit(code)
