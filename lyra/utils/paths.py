"""Paths that files name, confined to a folder; outputs that never overlap inputs.

A file that names other files (a dynamic scene's ``index.json``, a cache's shard records, the file
name the viewer's browser sends) is only trusted to name files *inside* its own folder:
``resolve_inside`` refuses absolute names, any ``..`` component, and symlinks whose target leaves
the folder, before anything is opened. ``check_outputs_apart`` refuses an output folder that equals,
contains or lies inside an input, before anything is written or deleted.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Mapping, Sequence

from lyra.utils.errors import LyraUsageError


def _is_within(path: Path, root: Path) -> bool:  # both resolved
    return path == root or root in path.parents


def resolve_inside(root: str | os.PathLike, name: object, what: str) -> Path:
    """``root / name`` resolved (symlinks followed), refused unless it stays inside ``root``.

    Args:
        root: the folder the naming file lives in (or the folder it may write to).
        name: the relative name the file gives (``"t000.ply"``, ``"sub/x.json"``).
        what: the naming file or field, for the message (``"scene/index.json"``).

    Raises:
        LyraUsageError: ``name`` is not a non-empty string, is absolute, has a ``..`` component, or
            resolves (through a symlink) outside ``root``.
    """
    if not isinstance(name, str) or not name.strip():
        raise LyraUsageError(f"{what}: {name!r} is not a file name; name a file inside {root}")
    if "\x00" in name:
        raise LyraUsageError(f"{what}: {name!r} holds a NUL byte; name a file inside {root}")
    posix, windows = PurePosixPath(name), PureWindowsPath(name)
    if posix.is_absolute() or windows.is_absolute() or windows.drive or name.startswith("~"):
        raise LyraUsageError(f"{what}: {name!r} is an absolute path; only names relative to {root} are read or "
                             "written (a file may not point outside its folder)")
    if ".." in posix.parts or ".." in windows.parts:
        raise LyraUsageError(f"{what}: {name!r} has a '..' component; only names inside {root} are read or written "
                             "(a file may not point outside its folder)")
    real_root = Path(root).resolve()
    target = (real_root / posix).resolve()
    if not _is_within(target, real_root):
        raise LyraUsageError(f"{what}: {name!r} is a symlink (or lies under one) that leads to {target}, outside "
                             f"{real_root}; copy the file into the folder instead of linking it")
    return target


def check_outputs_apart(
    out: str | os.PathLike,
    option: str,
    inputs: Mapping[str, str | os.PathLike | Sequence[str | os.PathLike] | None],
) -> Path:
    """Refuse an output folder that equals, contains or lies inside any input, or contains the working
    directory (replacing it would delete the inputs, or fail half way); returns ``out`` resolved.

    Args:
        out: the output folder (it may not exist yet).
        option: its option name for the message (``"--out"``).
        inputs: option name -> input path, or a list of them for an option given several times (files or
            folders; None entries are skipped).
    """
    real_out = Path(out).resolve()
    here = Path.cwd().resolve()
    if _is_within(here, real_out):
        raise LyraUsageError(f"{option} {out} is the working directory or one of its parents ({real_out}); lyra "
                             f"writes a new folder and replaces {option} at the end: pass a folder name such as "
                             "outputs/scene")
    pairs = [(name, v) for name, value in inputs.items()
             for v in (value if isinstance(value, (list, tuple)) else [value]) if v is not None]
    for name, value in pairs:
        real_in = Path(value).resolve()
        if _is_within(real_out, real_in) or _is_within(real_in, real_out):
            relation = ("is" if real_out == real_in else "contains" if _is_within(real_in, real_out) else "lies inside")
            raise LyraUsageError(f"{option} {out} {relation} the input {name} {value}; writing (or --overwrite) there "
                                 f"would replace the input: pass an {option} outside every input")
    return real_out
