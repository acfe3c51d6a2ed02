"""Run locks: one process executes a given run at a time (a lock file naming its owner).

The lock file ``.run-<run>.lock`` holds three lines: the owner's pid, when it took the lock (unix
seconds) and the host it runs on, then (Linux) the process's start time, which tells a reused pid from
the owner. Whether a lock left behind may be taken over (:func:`lock_is_stale`):

* owner on **this host**: stale exactly when its process is gone (or the pid now belongs to another
  process) — never because of its age, so a run lasting days keeps its lock;
* owner on **another host** (a workspace on a shared disk): its process cannot be asked, so the lock is
  stale only after ``other_host_stale_after_s`` (48 h by default);
* a lock file that cannot be read is stale once it is a minute old (a newer one may be being written).
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from evalkit.errors import WorkspaceError
from evalkit.store._db import Connection, check_id, translate_error

#: a lock from another host is taken over only after this long (its process cannot be checked from here)
OTHER_HOST_STALE_AFTER_S = 48 * 3600.0
#: an unreadable lock file younger than this may still be being written by its owner
_UNREADABLE_GRACE_S = 60.0


@dataclass(frozen=True)
class LockHolder:
    """Who holds a run's lock, read from its lock file."""

    run_id: str
    pid: int | None
    hostname: str | None
    since: float | None  # unix seconds
    process_start: str | None = None

    @property
    def on_this_host(self) -> bool:
        return self.hostname is None or self.hostname == _hostname()

    def describe(self) -> str:
        if self.pid is None:
            return "unreadable lock file"
        since = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(self.since)) if self.since is not None else "?"
        where = "this host" if self.on_this_host else (self.hostname or "?")
        return f"pid {self.pid} on {where} since {since}"


def _hostname() -> str:
    return socket.gethostname() or "localhost"


def _process_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux /proc); None where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else None  # field 22 of stat; fields[0] is field 3


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return False
    return True


def read_lock(lock: Path, run_id: str = "") -> LockHolder | None:
    """The holder named by a lock file (pid None when it cannot be read); None when there is no file."""
    try:
        lines = lock.read_text().split("\n")
    except FileNotFoundError:
        return None
    except OSError:
        return LockHolder(run_id, None, None, None)
    try:
        pid, since = int(lines[0]), float(lines[1])
    except (ValueError, IndexError):
        return LockHolder(run_id, None, None, None)
    host = lines[2].strip() if len(lines) > 2 and lines[2].strip() else None
    start = lines[3].strip() if len(lines) > 3 and lines[3].strip() else None
    return LockHolder(run_id, pid, host, since, start)


def lock_is_stale(
    lock: Path, *, other_host_stale_after_s: float = OTHER_HOST_STALE_AFTER_S, now: float | None = None
) -> bool:
    """May this lock file be taken over? (the rule in the module docstring)"""
    now = time.time() if now is None else now
    holder = read_lock(lock)
    if holder is None:
        return True
    if holder.pid is None:
        try:
            return now - lock.stat().st_mtime > _UNREADABLE_GRACE_S
        except OSError:
            return True
    if not holder.on_this_host:
        return holder.since is None or now - holder.since > other_host_stale_after_s
    if not _pid_alive(holder.pid):
        return True
    if holder.process_start is not None:
        current = _process_start(holder.pid)
        if current is not None and current != holder.process_start:
            return True  # the pid was reused by another process
    return False


class LocksMixin(Connection):
    """The per-run lock."""

    def _lock_path(self, run_id: str) -> Path:
        return self.path / f".run-{check_id(run_id, 'run id')}.lock"

    @contextlib.contextmanager
    def run_lock(self, run_id: str, *, other_host_stale_after_s: float = OTHER_HOST_STALE_AFTER_S) -> Iterator[None]:
        """Only one process executes a given run at a time (see the module docstring for staleness)."""
        lock = self._lock_path(run_id)
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            if lock_is_stale(lock, other_host_stale_after_s=other_host_stale_after_s):
                lock.unlink(missing_ok=True)
                try:
                    fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                except FileExistsError:  # another process took it over first
                    raise self._held_error(run_id, lock) from None
            else:
                raise self._held_error(run_id, lock) from None
        except OSError as exc:
            raise translate_error(exc, self.path) from None
        pid = os.getpid()
        with os.fdopen(fd, "w") as fh:
            fh.write(f"{pid}\n{time.time()}\n{_hostname()}\n{_process_start(pid) or ''}\n")
        try:
            yield
        finally:
            lock.unlink(missing_ok=True)

    def _held_error(self, run_id: str, lock: Path) -> WorkspaceError:
        holder = read_lock(lock, run_id)
        who = holder.describe() if holder else "another process"
        return WorkspaceError(
            f"run {run_id!r} is being executed by another process ({who}; lock {lock})",
            hint="wait for it to finish; delete the lock file only if that process is gone",
        )

    def lock_holders(self) -> dict[str, LockHolder]:
        """Every run whose lock file exists and is not stale: run id → who holds it (`evalkit runs`)."""
        out: dict[str, LockHolder] = {}
        for lock in sorted(self.path.glob(".run-*.lock")):
            run_id = lock.name[len(".run-") : -len(".lock")]
            holder = read_lock(lock, run_id)
            if holder is not None and not lock_is_stale(lock):
                out[run_id] = holder
        return out
