"""The workspace: one SQLite database (WAL mode) plus content-addressed image files.

Layout of a workspace directory::

    evalkit.sqlite        runs, cases, calls, scores, judge passes, ratings, judge cache, usage ledger (versioned)
    blobs/ab/abcdef….png  every image (inputs and outputs), named by the sha256 of its bytes
    spool/                outputs being downloaded (moved into blobs/ when complete)
    catalog/*.toml        the user's catalogue additions/overrides
    tiers.toml            the user's tier definitions (optional)

Durability: a blob is written to a temporary file and renamed into place *before* the row that names
it is committed, so a ``kill -9`` at any moment leaves either no row or a row whose file exists.
SQLite runs in WAL mode with ``synchronous=NORMAL`` (durable across a process crash) and a
``busy_timeout`` so two processes can share a workspace. Readers return tidy pandas DataFrames.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from pathlib import Path

from evalkit.errors import WorkspaceError
from evalkit.store._calls import CallsMixin
from evalkit.store._db import default_workspace_path, translate_error
from evalkit.store._judge_cache import JudgeCacheMixin
from evalkit.store._locks import LocksMixin
from evalkit.store._ratings import RatingsMixin
from evalkit.store._schema import DB_NAME, migrate
from evalkit.store._scores import ScoresMixin
from evalkit.store._usage import UsageMixin


class Workspace(RatingsMixin, CallsMixin, UsageMixin, ScoresMixin, JudgeCacheMixin, LocksMixin):
    """A directory holding everything evalkit records. Safe to share between processes.

    One SQLite connection; each table family's methods come from its module's mixin (runs and cases,
    calls, usage ledger, scores, ratings, judge cache, locks) and the blob store's.
    """

    def __init__(self, path: str | os.PathLike | None = None, *, create: bool = True):
        self.path = Path(path) if path is not None else default_workspace_path()
        self._lock = threading.RLock()
        try:
            if create:
                for sub in ("blobs", "spool", "catalog"):
                    (self.path / sub).mkdir(parents=True, exist_ok=True)
            elif not (self.path / DB_NAME).exists():
                raise WorkspaceError(
                    f"no evalkit workspace at {self.path}", hint="run `evalkit run` or pass --workspace"
                )
        except OSError as exc:
            raise translate_error(exc, self.path) from None
        self.db_path = self.path / DB_NAME
        try:
            self._conn = sqlite3.connect(self.db_path, timeout=30.0, isolation_level=None, check_same_thread=False)
            self._conn.row_factory = sqlite3.Row
            self._conn.execute("PRAGMA busy_timeout = 30000")
            mode = self._conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":  # e.g. a read-only directory
                pass
            self._conn.execute("PRAGMA synchronous = NORMAL")
            self._conn.execute("PRAGMA foreign_keys = ON")
            migrate(self._conn, self._lock, self.path)
            if create:
                self._clean_stale_temp_files()
        except sqlite3.Error as exc:
            raise translate_error(exc, self.db_path) from None

    # ---- infrastructure ---------------------------------------------------------------------
    def __repr__(self) -> str:
        return f"Workspace({str(self.path)!r})"

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._conn.close()

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def schema_version(self) -> int:
        return int(self._query("SELECT value FROM meta WHERE key='schema_version'")[0][0])
