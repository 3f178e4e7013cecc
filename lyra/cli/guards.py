"""Guards of the ``lightning`` command against hostile or mistaken runs.

- ``lock_run_folder``: one ``lightning fit`` per run folder (``trainer.default_root_dir``) at a time. The
  folder check that refuses to overwrite another run's checkpoints runs once, at start; without a lock
  two runs started together both pass it and then mix their checkpoints and lose a ``config.yaml``.
  The lock is taken before that check and held until the command ends (``release_run_folders``).
- ``check_training_values``: values the optimizer or data loader would reject deep inside training
  (``lr=-1``: torch's "Invalid learning rate") or that jsonargparse reports inside a config dump
  (``batch_size 0``) are refused before anything is built, naming the option.
- ``console_main``'s helper ``one_line``: an error raised while instantiating the config arrives
  wrapped in jsonargparse's "Does not validate against any of the Union subtypes" with the whole
  config; the line that says what is wrong is taken out of it.
- ``parse_error_line``: jsonargparse's own parse errors (``--model.init_args.lr abc``) print the whole
  usage and a tree of union alternatives; the option and the reason are taken out of them.
"""

from __future__ import annotations

import errno
import math
import os
import re
from typing import Any

from lyra.utils.errors import LyraUsageError, describe
from lyra.utils.run_lock import FolderLock

_held: list[FolderLock] = []
_last_folder: list[str] = []  # the run folder of the latest fit, for messages after its lock is released


def lock_run_folder(trainer: Any) -> None:
    """Lock ``trainer.default_root_dir`` for this process (rank 0 only; other ranks share its run)."""
    folder = str(trainer.default_root_dir)
    # Before fit the strategy has not set its ranks yet: the processes a launcher started say theirs in
    # the environment (Lightning's subprocess launcher, torchrun, SLURM).
    launched = any(os.environ.get(k, "0") != "0" for k in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"))
    if launched or not trainer.is_global_zero or "://" in folder:  # object stores have no file locks
        return
    _held.append(FolderLock(folder, "`lightning fit`").acquire())
    _last_folder[:] = [folder]


def release_run_folders() -> None:
    while _held:
        _held.pop().release()


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# option -> (what it must be, test); checked when the config sets it
_CHECKS = {
    "model.init_args.lr": ("a finite learning rate > 0", lambda v: _number(v) and math.isfinite(v) and v > 0),
    "model.init_args.weight_decay": ("a finite number >= 0", lambda v: _number(v) and math.isfinite(v) and v >= 0),
    "model.init_args.warmup_steps": ("a whole number >= 0", lambda v: isinstance(v, int) and not isinstance(v, bool)
                                     and v >= 0),
    "data.init_args.batch_size": ("a whole number >= 1", lambda v: isinstance(v, int) and not isinstance(v, bool)
                                  and v >= 1),
    "data.init_args.num_workers": ("a whole number >= 0", lambda v: isinstance(v, int) and not isinstance(v, bool)
                                   and v >= 0),
}


def check_training_values(cfg: Any) -> None:
    """Refuse values of ``_CHECKS`` that the config sets to something training cannot use."""
    for key, (must, ok) in _CHECKS.items():
        try:
            value = cfg.get(key)
        except (AttributeError, KeyError, TypeError):
            continue
        if value is not None and not ok(value):
            raise LyraUsageError(f"--{key} is {value!r}; it must be {must}")


def one_line(err: BaseException) -> str:
    """The message of ``err``; for jsonargparse's union-validation wrapper, the reason it lists."""
    text = str(err)
    if "Does not validate against any of the Union subtypes" in text and "Errors:" in text:
        reasons = [line.strip()[2:] for line in text.split("Errors:", 1)[1].splitlines()
                   if line.strip().startswith("- ") and "Expected a <class 'NoneType'>" not in line]
        if reasons:
            return reasons[0]
    if isinstance(err, OSError) and err.filename is None and err.errno in (errno.EFBIG, errno.ENOSPC) and _last_folder:
        return f"writing the run's files in {_last_folder[0]} failed: {describe(err)}"  # torch.save names no file
    return describe(err)


_TYPE_WORDS = {"int": "a whole number", "float": "a number", "bool": "true or false", "str": "a string"}


def parse_error_line(message: str, prog: str = "lightning") -> str:
    """jsonargparse's parse error as one line: the full option name and the innermost reason."""
    keys: list[str] = []
    reason = ""
    for raw in message.splitlines():
        line = raw.strip().removeprefix("- ").strip()
        key = re.match(r'Parser key "([^"]+)":?', line)
        if key:
            keys.append(key.group(1))
        elif line.startswith("Problem with given class_path") and keys:
            keys.append("init_args")
        elif keys and not reason and not line.startswith(("Does not validate", "Subtypes:", "Errors:")):
            reason = line
    if not keys:
        first = next((x.strip() for x in message.splitlines() if x.strip()), message)
        return f"{first} ({prog} --help lists the options)"
    option = ".".join(k for k in keys if k)
    reason = reason or message.splitlines()[0].strip()
    for typ, words in _TYPE_WORDS.items():
        reason = reason.replace(f"Expected a <class '{typ}'>", f"Expected {words}")
    return f"--{option}: {reason} ({prog} --help lists the options)"
