"""One training process per run directory: an exclusive lock on ``RUN_DIR/.lock``.

The lock is an advisory ``flock`` held for the whole run by the main process; it goes away
with the process, so a killed run never leaves a stale lock. The file names the holder (pid,
host, start time) for the error message of a second process.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from ..settings import SettingError

try:
    import fcntl
except ImportError:  # no flock (Windows): runs are not locked
    fcntl = None

LOCK_NAME = ".lock"


class RunLock:
    """A held lock; :meth:`release` (or process exit) frees it."""

    def __init__(self, run_dir: Path, fd: int | None, created: bool) -> None:
        self.run_dir, self.fd, self.created = run_dir, fd, created

    @classmethod
    def acquire(cls, run_dir: str | Path) -> RunLock:
        """Lock ``run_dir`` (created if missing). Raises ``ValueError`` naming the holder when
        another process trains it."""
        run_dir = Path(run_dir)
        if run_dir.exists() and not run_dir.is_dir():
            raise SettingError(f"run_dir {run_dir} is a file, not a directory; choose another "
                               "run_dir", "run_dir")
        created = not run_dir.exists()
        run_dir.mkdir(parents=True, exist_ok=True)
        if fcntl is None:
            return cls(run_dir, None, created)
        path = run_dir / LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            holder = path.read_text().strip() or "another process"
            raise ValueError(f"{run_dir} is being trained by another process ({holder}); wait "
                             "for it to finish or stop it, then run again") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since "
                     f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
        return cls(run_dir, fd, created)

    def release(self) -> None:
        """Free the lock; a directory this lock created and nothing else used is removed."""
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None
            if self.created and [p.name for p in self.run_dir.iterdir()] == [LOCK_NAME]:
                (self.run_dir / LOCK_NAME).unlink()
                self.run_dir.rmdir()
