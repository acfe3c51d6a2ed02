"""The one SQLite connection every part of the workspace writes through, and the store's small helpers.

:class:`Connection` holds the connection and its lock; each table family's module adds its methods in a
mixin over it, and :class:`~evalkit.store._workspace.Workspace` composes them.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from evalkit.errors import InvalidInputError, WorkspaceError

_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def utcnow() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def check_id(value: str, what: str) -> str:
    """Ids end up in file names and URLs: allow only a safe slug."""
    if not isinstance(value, str) or not _SAFE_ID.fullmatch(value) or ".." in value:
        raise InvalidInputError(
            f"{what} {value!r} is not a safe id", hint="use letters, digits, '.', '_' and '-' (max 128, no '..')"
        )
    return value


def default_workspace_path() -> Path:
    return Path(os.environ.get("EVALKIT_WORKSPACE") or "evalkit-workspace")


def translate_error(exc: Exception, path: Path) -> WorkspaceError:
    text = str(exc).lower()
    if "disk is full" in text or "database or disk is full" in text or getattr(exc, "errno", None) == errno.ENOSPC:
        return WorkspaceError(
            f"the workspace disk is full ({path}); nothing already written was lost",
            hint="free space (or move the workspace with --workspace) and re-run to resume",
        )
    if (
        "readonly" in text
        or "read-only" in text
        or getattr(exc, "errno", None) in (errno.EROFS, errno.EACCES, errno.EPERM)
    ):
        return WorkspaceError(
            f"the workspace {path} is read-only; nothing already written was lost",
            hint="point --workspace at a writable directory",
        )
    if "locked" in text or "busy" in text:
        return WorkspaceError(
            f"the workspace database {path} stayed locked by another process",
            hint="wait for it or use another workspace",
        )
    if "not a database" in text or "malformed" in text:
        return WorkspaceError(f"{path} is not a readable evalkit database ({exc})", hint="restore it from a backup")
    return WorkspaceError(f"workspace error at {path}: {exc}")


class Connection:
    """The workspace directory and its open database; the mixins' common base."""

    path: Path
    db_path: Path
    _conn: sqlite3.Connection
    _lock: threading.RLock

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise translate_error(exc, self.db_path) from None
            try:
                yield self._conn
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute("ROLLBACK")
                raise
            try:
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute("ROLLBACK")
                raise translate_error(exc, self.db_path) from None

    def _execute(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> sqlite3.Cursor:
        with self._lock:
            try:
                return self._conn.execute(sql, params)
            except sqlite3.IntegrityError:
                raise
            except sqlite3.Error as exc:
                raise translate_error(exc, self.db_path) from None

    def _query(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> list[sqlite3.Row]:
        return self._execute(sql, params).fetchall()
