"""Run locks: one process executes a given run at a time (a lock file holding its owner's pid)."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

from evalkit.errors import WorkspaceError
from evalkit.store._db import Connection, check_id, translate_error


class LocksMixin(Connection):
    """The per-run lock."""

    @contextlib.contextmanager
    def run_lock(self, run_id: str, *, stale_after_s: float = 6 * 3600) -> Iterator[None]:
        """Only one process executes a given run at a time (a lock file holding the owner's pid)."""
        check_id(run_id, "run id")
        lock = self.path / f".run-{run_id}.lock"
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            if _lock_is_stale(lock, stale_after_s):
                lock.unlink(missing_ok=True)
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            else:
                raise WorkspaceError(
                    f"run {run_id!r} is being executed by another process (lock {lock})",
                    hint="wait for it to finish; delete the lock file only if that process is gone",
                ) from None
        except OSError as exc:
            raise translate_error(exc, self.path) from None
        with os.fdopen(fd, "w") as fh:
            fh.write(f"{os.getpid()}\n{time.time()}\n")
        try:
            yield
        finally:
            lock.unlink(missing_ok=True)


def _lock_is_stale(lock: Path, stale_after_s: float) -> bool:
    try:
        pid_s, ts_s = lock.read_text().split()[:2]
        pid, ts = int(pid_s), float(ts_s)
    except (OSError, ValueError):
        return True
    if time.time() - ts > stale_after_s:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False
