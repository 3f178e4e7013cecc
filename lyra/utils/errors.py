"""One error style for every command: an expected failure is one line naming the file or argument and
the fix, printed as ``<prog>: error: ...`` with exit status 2; a traceback only with ``--debug``.

Expected failures are what a user's input can cause: a ``LyraUsageError`` (raised where lyra itself
knows what is wrong), a ``ValueError`` / ``TypeError`` from a reader, and operating-system errors
(missing file, permission, file-size limit, full disk, a folder where a file belongs). Anything else
is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno
import os
import sys
from typing import Callable

try:  # POSIX only
    import resource
except ImportError:  # pragma: no cover - Windows
    resource = None

DEBUG_ENV = "LYRA_DEBUG"  # set to 1 for tracebacks (what --debug does)

_OS_FIXES = {
    errno.EACCES: "check the permissions of the file and its folder, or write somewhere else",
    errno.EPERM: "check the permissions of the file and its folder, or write somewhere else",
    errno.EROFS: "the file system is read-only: write somewhere else",
    errno.EFBIG: "the file-size limit was reached (ulimit -f): raise it or write a smaller output; files written "
                 "before are intact",
    errno.ENOSPC: "the disk is full: free space or write somewhere else; files written before are intact",
    errno.EISDIR: "that is a folder: pass a file name",
    errno.ENOTDIR: "a part of that path is a file, not a folder",
    errno.ENOENT: "check the path",
    errno.EBUSY: "the path is in use (a mount point or the working directory?): pass another one",
}


def file_size_limit() -> int | None:
    """This process's file-size limit in bytes (``ulimit -f``), None when there is none: writers whose
    failures do not arrive as OSError (ffmpeg, usd-core) name it as the likely cause."""
    if resource is None:
        return None
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    return None if limit == resource.RLIM_INFINITY else int(limit)


def write_failure_hint() -> str:
    """What to check when a writer outside Python's OSError failed."""
    limit = file_size_limit()
    if limit is not None:
        return f"the file-size limit (ulimit -f) is {limit:,} bytes: raise it or write a smaller output"
    return "check the free space and the folder's permissions, or write somewhere else"


class LyraUsageError(ValueError):
    """A failure caused by the user's input, with a one-line message that names the file or argument
    and the fix. A ``ValueError``, so callers that catch reader errors catch it too."""


def cannot_write(path: object, err: OSError, label: str = "") -> LyraUsageError:
    """An output that could not even be started (its folder or temporary name refused): named as the
    user gave it (``label``: its option, e.g. ``"--out "``), never by the temporary name."""
    parent = os.path.dirname(os.fspath(path)) or "."
    return LyraUsageError(f"cannot write {label}{path}: {err.strerror} (in {parent}); check that folder's "
                          "permissions and free space, or write somewhere else")


EXPECTED_ERRORS = (ValueError, TypeError, OSError, OverflowError, RecursionError, MemoryError)


def describe(err: BaseException) -> str:
    """The one-line message of an expected failure."""
    if isinstance(err, OSError) and not isinstance(err, LyraUsageError) and err.errno is not None:
        where = err.filename if err.filename is not None else ""
        if err.filename2 is not None:
            where = f"{where} -> {err.filename2}"
        fix = _OS_FIXES.get(err.errno, "")
        text = f"{where}: {err.strerror}" if where else (err.strerror or str(err))
        return f"{text}; {fix}" if fix else text
    if isinstance(err, RecursionError):
        return "an input is nested too deeply to read (a JSON file with thousands of nested brackets?); fix the file"
    if isinstance(err, MemoryError):
        return ("ran out of memory; lower the sizes asked for (frames, image size, points) or the limits in "
                "docs/limits.md")
    text = str(err) or type(err).__name__
    if isinstance(err, KeyError) and err.args:  # KeyError's str() is the repr of its key
        text = str(err.args[0])
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def debug_enabled(flag: bool = False) -> bool:
    return flag or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def run_reporting_errors(run: Callable[[], object], prog: str, debug: bool = False,
                         message: Callable[[BaseException], str] = describe) -> int:
    """Call ``run``; an expected failure prints ``<prog>: error: <one line>`` (``message(err)``) to stderr
    and gives 2 (``--debug`` / LYRA_DEBUG=1 re-raise it for the traceback); Ctrl-C gives 130."""
    try:
        run()
    except KeyboardInterrupt:
        if debug_enabled(debug):
            raise
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except EXPECTED_ERRORS as err:
        if debug_enabled(debug):
            raise
        print(f"{prog}: error: {message(err)}", file=sys.stderr)
        return 2
    return 0
