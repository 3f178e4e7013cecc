"""Write-to-temp-then-rename, so a crash never leaves a half-written file behind."""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path
from typing import Iterator

from lyra.utils.errors import LyraUsageError, cannot_write

_WRITE_FAILURES = {
    errno.EFBIG: "the file-size limit (ulimit -f) is below what it needs: raise it or write less",
    errno.ENOSPC: "the disk is full: free space or write somewhere else",
    errno.EDQUOT: "the disk quota is used up: free space or write somewhere else",
    errno.EACCES: "check the folder's permissions, or write somewhere else",
    errno.EROFS: "the file system is read-only: write somewhere else",
}


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, keep_suffix: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is renamed onto ``path``.

    The temp file lives in the same directory so the final ``os.replace`` is atomic on POSIX.
    On any exception the temp file is removed and ``path`` is left untouched. ``keep_suffix``: the
    temporary name ends in ``path``'s suffix, for writers that pick the format from it (USD).
    """
    path = Path(path)
    if path.is_dir():
        raise LyraUsageError(f"{path} is a folder; pass a file name to write")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix if keep_suffix else ".tmp",
                                   dir=path.parent)
    except OSError as err:  # name the file asked for, not the temporary name
        raise cannot_write(path, err) from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp makes the file private (0600); give it the permissions a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, path)
    except OSError as err:
        tmp_path.unlink(missing_ok=True)
        if err.errno in _WRITE_FAILURES:  # name the file asked for, not the temporary name
            raise LyraUsageError(f"writing {path} failed: {err.strerror}; {_WRITE_FAILURES[err.errno]} ({path} "
                                 "is unchanged)") from err
        raise
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
