"""An exclusive lock on a folder while one process works in it (``lightning fit`` on a run folder).

``FolderLock(folder).acquire()`` takes an ``fcntl.flock`` on ``folder/.lyra-run.lock`` and writes who
holds it (pid, host, start time, command). A second process asking for the same folder is refused at
once with a message naming the folder and the holder. The operating system drops the lock when the
holder exits, even when it is killed, so a crashed run never leaves a stale lock; the file itself
stays (deleting it could race with the next holder) and only says who held it last.

Without ``fcntl`` (Windows) the lock is a no-op. ``flock`` on some network file systems is local to
one machine.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

try:  # POSIX only; optional platform module
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

from lyra.utils.errors import LyraUsageError

LOCK_FILE = ".lyra-run.lock"


class FolderLock:
    """Args: folder: the folder to own (created if missing); what: the kind of work, for messages."""

    def __init__(self, folder: str | os.PathLike, what: str = "run") -> None:
        self.folder, self.what = Path(folder), what
        self.path = self.folder / LOCK_FILE
        self._fd: int | None = None

    def holder(self) -> str:
        """Who holds (or last held) the lock, as the holder wrote it."""
        try:
            info = json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return "another process"
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.get("started", 0)))
        return f"pid {info.get('pid')} on {info.get('host')}, started {started}: {info.get('command', '?')}"

    def acquire(self) -> "FolderLock":
        if fcntl is None or self._fd is not None:
            return self
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LyraUsageError(f"{self.folder} is in use by another {self.what} ({self.holder()}); two runs in one "
                                 "folder would mix their checkpoints and overwrite each other's config.yaml: wait for "
                                 "it to finish, or pass another --trainer.default_root_dir") from None
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                "command": " ".join(sys.argv[:1] + [a for a in sys.argv[1:]])[:500]}
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(info).encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
