"""A run's folder: where its checkpoints go, resuming it, never overwriting another run, checking a
``--ckpt_path`` before anything is built, and the config snapshot written into it."""

from __future__ import annotations

import os
import re
import zipfile
from pathlib import Path

import fsspec
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import (
    SaveConfigCallback,
)

from lyra.models.checkpoints import read_checkpoint
from lyra.utils.atomic import atomic_write_text

SPECIAL_CKPT_PATHS = ("last", "best", "hpc", "registry")  # --ckpt_path values Lightning resolves itself


def checkpoint_dirs(trainer: Trainer) -> list[str]:
    """Where the trainer's ModelCheckpoints write, as Lightning resolves it at setup: the callback's
    ``dirpath``, else ``<logger save_dir>/<name>/<version>/checkpoints``, else
    ``<default_root_dir>/checkpoints``."""
    dirs: list[str] = []
    for cb in trainer.checkpoint_callbacks:
        if not isinstance(cb, ModelCheckpoint):
            continue
        if cb.dirpath is not None:
            d = str(cb.dirpath)
        elif trainer.loggers:
            logger = trainer.loggers[0]
            save_dir = logger.save_dir if logger.save_dir is not None else trainer.default_root_dir
            version = logger.version if isinstance(logger.version, str) else f"version_{logger.version}"
            d = os.path.join(save_dir, str(logger.name), version, "checkpoints")
        else:
            d = os.path.join(trainer.default_root_dir, "checkpoints")
        if d not in dirs:
            dirs.append(d)
    return dirs


def _ckpts(folder: str, last_only: bool = False) -> list[str]:
    fs, path = fsspec.core.url_to_fs(folder)
    if not fs.isdir(path):
        return []
    names = sorted(Path(p).name for p in fs.ls(path, detail=False))
    pattern = r"^last(-\d+)?\.ckpt$" if last_only else r"\.ckpt$"
    return [n for n in names if re.search(pattern, n)]


_LOCATION = ("checkpoints go to <logger folder>/checkpoints: with a logger that starts a new version_N folder "
             "per invocation, a resumed run looks in an empty one; give the logger a fixed version (the shipped "
             "configs use trainer.logger.init_args.version: 0) or a ModelCheckpoint dirpath")


def require_last_checkpoint(trainer: Trainer) -> None:
    """``--ckpt_path last`` must find a last checkpoint: Lightning only warns and trains from step 0."""
    dirs = checkpoint_dirs(trainer)
    if not any(_ckpts(d, last_only=True) for d in dirs):
        where = ", ".join(dirs) or "(no ModelCheckpoint callback is configured)"
        raise FileNotFoundError(f"--ckpt_path last: no last checkpoint (last.ckpt) in {where}, so there is nothing to "
                                f"resume. Check --trainer.default_root_dir (the run's folder), pass the checkpoint file "
                                f"itself, or start a new run without --ckpt_path. Note: {_LOCATION}")


def refuse_overwriting_a_run(trainer: Trainer) -> None:
    """A new run (no ``--ckpt_path``) in a folder holding another run's checkpoints would overwrite them."""
    for d in checkpoint_dirs(trainer):
        found = _ckpts(d)
        if found:
            raise FileExistsError(f"{d} holds checkpoints of an earlier run ({', '.join(found[:4])}"
                                  f"{', ...' if len(found) > 4 else ''}); a new run there would overwrite them. Resume "
                                  f"it with --ckpt_path last, start a new run in another folder with "
                                  f"--trainer.default_root_dir <folder>, or delete {d}")


def check_checkpoint_file(path: str | os.PathLike, option: str = "--ckpt_path") -> None:
    """A checkpoint file must exist and be what ``torch.save`` writes (a zip archive); anything else
    used to surface as EOFError / KeyError / miniz errors from deep inside torch.load."""
    fs, p = fsspec.core.url_to_fs(str(path))
    fix = ("pass a checkpoint written by `lightning fit` (e.g. <run>/tb/version_0/checkpoints/last.ckpt), or `last` "
           "to resume the run in --trainer.default_root_dir")
    if not fs.exists(p):
        raise FileNotFoundError(f"{option} {path} does not exist; {fix}")
    if fs.isdir(p):
        return  # a distributed (sharded) checkpoint is a folder: Lightning's strategy reads it
    if not fs.size(p):
        raise ValueError(f"{option} {path} is empty (0 bytes): its writing was cut short or it is not a checkpoint; "
                         "use another checkpoint of the run (its checkpoints/ folder keeps last.ckpt and the "
                         f"periodic ones), or {fix}")
    with fs.open(p, "rb") as f:
        head = f.read(64)
        f.seek(0)
        is_zip = zipfile.is_zipfile(f)
    if not is_zip:
        text = all(32 <= b < 127 or b in b"\t\r\n" for b in head)
        kind = "a text file" if text else "truncated (a copy or write cut short) or another format"
        raise ValueError(f"{option} {path} is not a PyTorch checkpoint (torch.save writes a zip archive; this file is "
                         f"{kind}); use another checkpoint of the run, or {fix}")
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    if "file" in protocols:
        # Lightning would stop on a pickle carrying Python objects with torch's long "Weights only load
        # failed" traceback; read it the way lyra does (weights only, storage mapped, nothing run) first.
        read_checkpoint(p, mmap=True)


def run_folder(trainer: Trainer) -> str:
    """The run's output folder: the logger's (``trainer.log_dir``); when that is the working directory
    (no logger and no default_root_dir), the output folder of a callback that writes one
    (``ClipWriter.output_dir``), else ``./lightning_logs``. Never the working directory itself."""
    log_dir = trainer.log_dir  # broadcast from rank 0: every rank must call it
    if log_dir is not None and "://" in str(log_dir):
        return str(log_dir)
    here = Path.cwd().resolve()
    if log_dir is not None and Path(log_dir).resolve() != here:
        return str(log_dir)
    for cb in trainer.callbacks:
        out = getattr(cb, "output_dir", None)
        if isinstance(out, (str, os.PathLike)) and "://" not in str(out) and Path(out).resolve() != here:
            return str(out)
    return str(here / "lightning_logs")


class RunConfigSnapshot(SaveConfigCallback):
    """Saves the parsed config in the run's folder (``run_folder``), temp-then-rename: ``config.yaml``
    for fit, ``config.<subcommand>.yaml`` for validate / test / predict, so evaluating a run never
    replaces the config it was trained with, and nothing lands in the working directory."""

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self.already_saved:
            return
        folder = run_folder(trainer)
        fn = trainer.state.fn.value if trainer.state.fn is not None else stage
        name = "config.yaml" if fn == "fit" else f"config.{fn}.yaml"
        if trainer.is_global_zero:
            text = self.parser.dump(self.config, skip_none=False)
            if "://" in folder:
                fs, path = fsspec.core.url_to_fs(f"{folder.rstrip('/')}/{name}")
                if fs.exists(path) and not self.overwrite:
                    raise RuntimeError(f"{folder}/{name} exists; not overwriting a previous run's config")
                fs.pipe_file(path, text.encode())
            else:
                path = Path(folder) / name
                if path.exists() and not self.overwrite:
                    raise RuntimeError(f"{path} exists; not overwriting a previous run's config (delete it, or pick "
                                       "another --trainer.default_root_dir)")
                atomic_write_text(path, text)
            self.save_config(trainer, pl_module, stage)
            self.already_saved = True
        self.already_saved = trainer.strategy.broadcast(self.already_saved)
