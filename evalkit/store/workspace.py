"""The workspace: one SQLite database (WAL mode) plus content-addressed image files.

Layout of a workspace directory::

    evalkit.sqlite        runs, cases, calls, scores, ratings, judge cache, usage ledger (versioned schema)
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
import errno
import hashlib
import json
import os
import re
import shutil
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from evalkit.errors import Category, InvalidInputError, WorkspaceError

SCHEMA_VERSION = 2
DB_NAME = "evalkit.sqlite"
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

# Each entry migrates the schema from version i to i+1.
_MIGRATIONS: list[str] = [
    """
    CREATE TABLE runs (
        run_id TEXT PRIMARY KEY,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        status TEXT NOT NULL,
        suite_name TEXT,
        suite_path TEXT,
        suite_fingerprint TEXT,
        catalog_fingerprint TEXT,
        models TEXT NOT NULL,          -- JSON list of model ids
        repeats INTEGER NOT NULL,
        budget_usd REAL,
        config TEXT NOT NULL,          -- JSON (no secrets)
        simulated INTEGER NOT NULL DEFAULT 0,
        evalkit_version TEXT,
        wall_s REAL,
        note TEXT
    );
    CREATE TABLE cases (
        run_id TEXT NOT NULL REFERENCES runs(run_id),
        case_id TEXT NOT NULL,
        operation TEXT NOT NULL,
        category TEXT,
        prompt TEXT,
        language TEXT,
        input_sha256 TEXT NOT NULL,    -- JSON list
        mask_sha256 TEXT,
        target_width INTEGER,
        target_height INTEGER,
        tags TEXT,                     -- JSON list
        params TEXT,                   -- JSON object
        PRIMARY KEY (run_id, case_id)
    );
    CREATE TABLE calls (
        call_id TEXT PRIMARY KEY,
        run_id TEXT NOT NULL REFERENCES runs(run_id),
        case_id TEXT NOT NULL,
        model_id TEXT NOT NULL,
        provider TEXT NOT NULL,
        operation TEXT NOT NULL,
        category TEXT,
        repeat INTEGER NOT NULL,
        seed INTEGER,
        fingerprint TEXT,
        status TEXT NOT NULL,          -- planned | submitting | submitted | completed | failed | not_applicable | unknown
        reason TEXT,                   -- why not applicable / skipped
        prediction_id TEXT,
        attempt INTEGER NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL,
        submitting_at TEXT,
        submitted_at TEXT,
        completed_at TEXT,
        submit_ms REAL, queue_ms REAL, inference_ms REAL, download_ms REAL, total_ms REAL,
        price_usd REAL,                -- list price of the request (what an edit like this costs)
        reserved_usd REAL,             -- what the budget held back before submitting
        cost_usd REAL,                 -- what this call cost this run (0 when served from cache)
        cost_source TEXT,              -- list_price | reported | unknown | free | cache
        error_category TEXT, error_message TEXT, error_code TEXT,
        output_sha256 TEXT, output_ext TEXT,
        width INTEGER, height INTEGER, format TEXT,
        requested_width INTEGER, requested_height INTEGER,
        nsfw INTEGER NOT NULL DEFAULT 0,
        content_filtered INTEGER NOT NULL DEFAULT 0,
        input_resized INTEGER NOT NULL DEFAULT 0,
        simulated INTEGER NOT NULL DEFAULT 0,
        cached_from TEXT,
        params TEXT,                   -- JSON of the sent parameters (image placeholders only)
        notes TEXT,                    -- JSON list: how the request was adapted
        metadata TEXT,                 -- JSON: selected response fields
        UNIQUE (run_id, case_id, model_id, repeat)
    );
    CREATE INDEX calls_run ON calls(run_id, status);
    CREATE INDEX calls_fingerprint ON calls(fingerprint, status);
    CREATE TABLE scores (
        run_id TEXT NOT NULL,
        call_id TEXT NOT NULL REFERENCES calls(call_id),
        metric TEXT NOT NULL,
        source TEXT NOT NULL,          -- auto | judge | human
        version TEXT NOT NULL,
        value REAL,                    -- NULL when unscored
        status TEXT NOT NULL,          -- scored | unscored
        reason TEXT,
        detail TEXT,
        created_at TEXT NOT NULL,
        PRIMARY KEY (call_id, metric, source, version)
    );
    CREATE INDEX scores_run ON scores(run_id);
    CREATE TABLE ratings (
        rating_id INTEGER PRIMARY KEY AUTOINCREMENT,
        run_id TEXT NOT NULL,
        case_id TEXT NOT NULL,
        rater TEXT NOT NULL,
        source TEXT NOT NULL,          -- human | judge
        kind TEXT NOT NULL,            -- pair | single
        call_left TEXT, call_right TEXT,
        model_left TEXT, model_right TEXT,
        choice TEXT,                   -- left | right | tie | both_bad (pair)
        call_id TEXT,                  -- (single)
        instruction INTEGER, quality INTEGER, preservation INTEGER,   -- 1..5 (single)
        detail TEXT,
        created_at TEXT NOT NULL
    );
    CREATE INDEX ratings_run ON ratings(run_id);
    CREATE TABLE judge_cache (
        key TEXT PRIMARY KEY,          -- sha256(judge model, prompt version, mode, encoding, image hashes, instruction)
        judge_model TEXT NOT NULL,
        prompt_version TEXT NOT NULL,
        mode TEXT NOT NULL,
        encoding TEXT NOT NULL,
        status TEXT NOT NULL,          -- scored | unscored
        reason TEXT,
        parsed TEXT,                   -- JSON
        reply_raw TEXT,
        cost_usd REAL,
        latency_ms REAL,
        created_at TEXT NOT NULL
    );
    CREATE TABLE usage (
        usage_id INTEGER PRIMARY KEY AUTOINCREMENT,
        at TEXT NOT NULL,
        user_id TEXT,
        model_id TEXT NOT NULL,
        operation TEXT,
        cost_usd REAL,
        cost_source TEXT,
        run_id TEXT,
        call_id TEXT,
        prediction_id TEXT,
        source TEXT NOT NULL           -- generate_image_edit | run | judge
    );
    """,
    # 1 → 2: the body each submit sent (compact: long strings as sha256), so an unknown outcome can be
    # recognised among the provider's predictions (evalkit.engine.reconcile)
    """
    ALTER TABLE calls ADD COLUMN sent_body TEXT;
    """,
]

CALL_COLUMNS = (
    "call_id run_id case_id model_id provider operation category repeat seed fingerprint status reason prediction_id "
    "attempt created_at submitting_at submitted_at completed_at submit_ms queue_ms inference_ms download_ms total_ms "
    "price_usd reserved_usd cost_usd cost_source error_category error_message error_code output_sha256 output_ext "
    "width height format requested_width requested_height nsfw content_filtered input_resized simulated cached_from "
    "params notes metadata sent_body"
).split()

TERMINAL_STATUSES = ("completed", "failed", "not_applicable", "unknown")


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


def _translate_sqlite_error(exc: Exception, path: Path) -> WorkspaceError:
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


@dataclass(frozen=True)
class BlobRef:
    sha256: str
    ext: str
    path: Path


class Workspace:
    """A directory holding everything evalkit records. Safe to share between processes."""

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
            raise _translate_sqlite_error(exc, self.path) from None
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
            self._migrate()
            if create:
                self._clean_stale_temp_files()
        except sqlite3.Error as exc:
            raise _translate_sqlite_error(exc, self.db_path) from None

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

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise _translate_sqlite_error(exc, self.db_path) from None
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
                raise _translate_sqlite_error(exc, self.db_path) from None

    def _execute(self, sql: str, params: Iterable[Any] | Mapping[str, Any] = ()) -> sqlite3.Cursor:
        with self._lock:
            try:
                return self._conn.execute(sql, params)
            except sqlite3.IntegrityError:
                raise
            except sqlite3.Error as exc:
                raise _translate_sqlite_error(exc, self.db_path) from None

    def _query(self, sql: str, params: Iterable[Any] | Mapping[str, Any] = ()) -> list[sqlite3.Row]:
        return self._execute(sql, params).fetchall()

    def _migrate(self) -> None:
        with self._lock:
            self._conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
            row = self._conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            version = int(row[0]) if row else 0
            if version > SCHEMA_VERSION:
                raise WorkspaceError(
                    f"workspace {self.path} was written by a newer evalkit (schema {version}; this evalkit reads ≤ {SCHEMA_VERSION})",
                    hint="upgrade evalkit (pip install -U evalkit) or use another workspace; nothing was changed",
                )
            for target in range(version, SCHEMA_VERSION):
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    for stmt in _MIGRATIONS[target].split(";"):
                        if stmt.strip():
                            self._conn.execute(stmt)
                    self._conn.execute(
                        "INSERT INTO meta(key, value) VALUES('schema_version', ?) "
                        "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                        (str(target + 1),),
                    )
                    self._conn.execute("COMMIT")
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise

    @property
    def schema_version(self) -> int:
        return int(self._query("SELECT value FROM meta WHERE key='schema_version'")[0][0])

    # ---- blobs ------------------------------------------------------------------------------
    def blob_path(self, sha256: str, ext: str) -> Path:
        if not re.fullmatch(r"[0-9a-f]{64}", sha256 or "") or not re.fullmatch(r"[a-z0-9]{1,5}", ext or ""):
            raise InvalidInputError(f"not a blob reference: {sha256!r}.{ext!r}")
        return self.path / "blobs" / sha256[:2] / f"{sha256}.{ext}"

    def find_blob(self, sha256: str) -> Path | None:
        if not re.fullmatch(r"[0-9a-f]{64}", sha256 or ""):
            return None
        folder = self.path / "blobs" / sha256[:2]
        for p in folder.glob(f"{sha256}.*") if folder.is_dir() else ():
            return p
        return None

    def put_blob(self, data: bytes, ext: str) -> BlobRef:
        """Store bytes under their sha256 (atomically; a no-op when already present)."""
        sha = hashlib.sha256(data).hexdigest()
        final = self.blob_path(sha, ext)
        if final.exists():
            return BlobRef(sha, ext, final)
        tmp = self._tmp_dir / f"{uuid.uuid4().hex}.part"
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, final)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise _translate_sqlite_error(exc, self.path) from None
        return BlobRef(sha, ext, final)

    def put_blob_file(self, path: str | os.PathLike, ext: str, sha256: str | None = None) -> BlobRef:
        """Move a finished file (e.g. a spooled download) into the blob store."""
        src = Path(path)
        if sha256 is None:
            h = hashlib.sha256()
            with open(src, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
            sha256 = h.hexdigest()
        final = self.blob_path(sha256, ext)
        try:
            if final.exists():
                src.unlink(missing_ok=True)
            else:
                final.parent.mkdir(parents=True, exist_ok=True)
                with open(src, "rb") as fh:
                    os.fsync(fh.fileno())
                os.replace(src, final)
        except OSError as exc:
            raise _translate_sqlite_error(exc, self.path) from None
        return BlobRef(sha256, ext, final)

    def read_blob(self, sha256: str) -> bytes:
        p = self.find_blob(sha256)
        if p is None:
            raise WorkspaceError(f"image {sha256[:12]}… is missing from {self.path / 'blobs'}")
        return p.read_bytes()

    @property
    def spool_dir(self) -> Path:
        return self.path / "spool"

    @property
    def _tmp_dir(self) -> Path:
        """Where blobs are written before being renamed into place (same filesystem as blobs/)."""
        d = self.spool_dir / ".tmp"
        d.mkdir(parents=True, exist_ok=True)
        return d

    def _clean_stale_temp_files(self, older_than_s: float = 3600.0) -> None:
        """Half-written blobs left by a killed process (a live writer finishes in seconds)."""
        d = self.spool_dir / ".tmp"
        if not d.is_dir():
            return
        cutoff = time.time() - older_than_s
        for p in d.glob("*.part"):
            with contextlib.suppress(OSError):
                if p.stat().st_mtime < cutoff:
                    p.unlink()

    # ---- runs -------------------------------------------------------------------------------
    def create_run(
        self,
        run_id: str,
        *,
        suite_name: str | None,
        suite_path: str | None,
        suite_fingerprint: str | None,
        catalog_fingerprint: str | None,
        models: list[str],
        repeats: int,
        budget_usd: float | None,
        config: Mapping[str, Any],
        evalkit_version: str = "",
    ) -> None:
        check_id(run_id, "run id")
        now = utcnow()
        try:
            self._execute(
                "INSERT INTO runs(run_id, created_at, updated_at, status, suite_name, suite_path, suite_fingerprint, "
                "catalog_fingerprint, models, repeats, budget_usd, config, evalkit_version) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    run_id,
                    now,
                    now,
                    "created",
                    suite_name,
                    suite_path,
                    suite_fingerprint,
                    catalog_fingerprint,
                    json.dumps(models),
                    repeats,
                    budget_usd,
                    json.dumps(dict(config), default=str),
                    evalkit_version,
                ),
            )
        except sqlite3.IntegrityError:
            raise InvalidInputError(
                f"run {run_id!r} already exists in {self.path}", hint="use --resume to continue it, or another --run-id"
            ) from None

    def get_run(self, run_id: str) -> dict[str, Any]:
        rows = self._query("SELECT * FROM runs WHERE run_id = ?", (run_id,))
        if not rows:
            known = [r[0] for r in self._query("SELECT run_id FROM runs ORDER BY created_at DESC LIMIT 5")]
            hint = f"recent runs: {', '.join(known)}" if known else "no runs yet: start one with `evalkit run`"
            raise InvalidInputError(f"no run {run_id!r} in workspace {self.path}", hint=hint)
        d = dict(rows[0])
        d["models"] = json.loads(d["models"])
        d["config"] = json.loads(d["config"])
        return d

    def update_run(self, run_id: str, **fields: Any) -> None:
        if not fields:
            return
        fields["updated_at"] = utcnow()
        allowed = {"status", "simulated", "wall_s", "note", "updated_at", "budget_usd", "config", "models"}
        bad = set(fields) - allowed
        if bad:
            raise ValueError(f"cannot update run fields {bad}")
        if "config" in fields:
            fields["config"] = json.dumps(fields["config"], default=str)
        if "models" in fields:
            fields["models"] = json.dumps(fields["models"])
        cols = ", ".join(f"{k} = ?" for k in fields)
        self._execute(f"UPDATE runs SET {cols} WHERE run_id = ?", (*fields.values(), run_id))

    def runs(self) -> pd.DataFrame:
        rows = self._query(
            "SELECT r.run_id, r.created_at, r.status, r.suite_name, r.models, r.repeats, r.budget_usd, r.simulated, r.wall_s, "
            "SUM(c.status = 'completed') AS completed, SUM(c.status = 'failed') AS failed, "
            "SUM(c.status NOT IN ('not_applicable')) AS planned, COALESCE(SUM(c.cost_usd), 0) AS cost_usd, "
            "COALESCE(SUM(c.status = 'unknown'), 0) AS unknown, "
            "COALESCE(SUM(CASE WHEN c.status = 'unknown' THEN c.reserved_usd END), 0) AS unknown_max_usd "
            "FROM runs r LEFT JOIN calls c ON c.run_id = r.run_id GROUP BY r.run_id ORDER BY r.created_at"
        )
        df = pd.DataFrame(
            [dict(r) for r in rows],
            columns=[
                "run_id",
                "created_at",
                "status",
                "suite_name",
                "models",
                "repeats",
                "budget_usd",
                "simulated",
                "wall_s",
                "completed",
                "failed",
                "planned",
                "cost_usd",
                "unknown",
                "unknown_max_usd",
            ],
        )
        if not df.empty:
            df["models"] = df["models"].map(lambda s: len(json.loads(s)))
            df["simulated"] = df["simulated"].astype(bool)
        return df

    def latest_run_id(self) -> str | None:
        rows = self._query("SELECT run_id FROM runs ORDER BY created_at DESC LIMIT 1")
        return rows[0][0] if rows else None

    # ---- cases ------------------------------------------------------------------------------
    def put_cases(self, run_id: str, rows: Iterable[Mapping[str, Any]]) -> None:
        with self.transaction() as conn:
            for r in rows:
                conn.execute(
                    "INSERT OR IGNORE INTO cases(run_id, case_id, operation, category, prompt, language, input_sha256, "
                    "mask_sha256, target_width, target_height, tags, params) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                    (
                        run_id,
                        r["case_id"],
                        r["operation"],
                        r.get("category"),
                        r.get("prompt"),
                        r.get("language"),
                        json.dumps(list(r["input_sha256"])),
                        r.get("mask_sha256"),
                        r.get("target_width"),
                        r.get("target_height"),
                        json.dumps(list(r.get("tags") or [])),
                        json.dumps(dict(r.get("params") or {})),
                    ),
                )

    def cases(self, run_id: str) -> pd.DataFrame:
        rows = self._query("SELECT * FROM cases WHERE run_id = ? ORDER BY rowid", (run_id,))
        df = pd.DataFrame([dict(r) for r in rows])
        if not df.empty:
            for col in ("input_sha256", "tags", "params"):
                df[col] = df[col].map(json.loads)
        return df

    def case_images(self, run_id: str, case_id: str) -> tuple[list[bytes], bytes | None]:
        rows = self._query(
            "SELECT input_sha256, mask_sha256 FROM cases WHERE run_id = ? AND case_id = ?", (run_id, case_id)
        )
        if not rows:
            raise InvalidInputError(f"no case {case_id!r} in run {run_id!r}")
        inputs = [self.read_blob(s) for s in json.loads(rows[0]["input_sha256"])]
        mask = self.read_blob(rows[0]["mask_sha256"]) if rows[0]["mask_sha256"] else None
        return inputs, mask

    # ---- calls ------------------------------------------------------------------------------
    def insert_calls(self, rows: Iterable[Mapping[str, Any]]) -> int:
        """Insert planned/not-applicable calls; existing call ids are left untouched (resume)."""
        n = 0
        now = utcnow()
        with self.transaction() as conn:
            for r in rows:
                cur = conn.execute(
                    "INSERT OR IGNORE INTO calls(call_id, run_id, case_id, model_id, provider, operation, category, repeat, seed, "
                    "fingerprint, status, reason, created_at, price_usd, reserved_usd, requested_width, requested_height, params, notes) "
                    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (
                        r["call_id"],
                        r["run_id"],
                        r["case_id"],
                        r["model_id"],
                        r["provider"],
                        r["operation"],
                        r.get("category"),
                        r["repeat"],
                        r.get("seed"),
                        r.get("fingerprint"),
                        r.get("status", "planned"),
                        r.get("reason"),
                        now,
                        r.get("price_usd"),
                        r.get("reserved_usd"),
                        r.get("requested_width"),
                        r.get("requested_height"),
                        json.dumps(r.get("params")) if r.get("params") is not None else None,
                        json.dumps(list(r.get("notes") or [])),
                    ),
                )
                n += cur.rowcount
        return n

    def mark_submitting(self, call_id: str, *, reserved_usd: float, fingerprint: str | None = None) -> None:
        """Recorded before the request goes out: a crash after this point is never blindly re-sent."""
        self._execute(
            "UPDATE calls SET status = 'submitting', submitting_at = ?, reserved_usd = ?, attempt = attempt + 1, "
            "fingerprint = COALESCE(?, fingerprint) WHERE call_id = ?",
            (utcnow(), reserved_usd, fingerprint, call_id),
        )

    def record_sent_body(self, call_id: str, compact_body: Any) -> None:
        """The body a submit is about to send (compact form), written before it goes out."""
        self._execute(
            "UPDATE calls SET sent_body = ? WHERE call_id = ?", (json.dumps(compact_body, sort_keys=True), call_id)
        )

    def adopt_prediction(self, call_id: str, prediction_id: str, *, note: str | None = None) -> None:
        """An unknown submit found in the provider's history: the call becomes ``submitted`` with that id
        (error and unknown cost cleared), so the engine collects it like any accepted job."""
        meta = json.dumps({"reconciled": note or True})
        self._execute(
            "UPDATE calls SET status = 'submitted', prediction_id = ?, submitted_at = ?, error_category = NULL, "
            "error_message = NULL, error_code = NULL, cost_usd = NULL, cost_source = NULL, completed_at = NULL, "
            "metadata = ? WHERE call_id = ?",
            (prediction_id, utcnow(), meta, call_id),
        )

    def note_unknown(self, call_id: str, reason: str) -> None:
        """Keep (or make) a call ``unknown`` with why its history cannot settle it. The first recorded
        moment of the unknown outcome (``completed_at``, the end of its submit window) is kept."""
        rows = self._query("SELECT error_message FROM calls WHERE call_id = ?", (call_id,))
        before = (rows[0][0] or "") if rows else ""
        before = before.split(" — history: ")[0]
        message = f"{before} — history: {reason}" if before else reason
        self._execute(
            "UPDATE calls SET status = 'unknown', error_category = ?, error_message = ?, cost_usd = NULL, "
            "cost_source = 'unknown' WHERE call_id = ?",
            (str(Category.UNKNOWN_OUTCOME), message, call_id),
        )

    def claimed_prediction_ids(self, provider: str) -> set[str]:
        """Every prediction id some call of ``provider`` owns (any run): never handed to a second call."""
        rows = self._query(
            "SELECT DISTINCT prediction_id FROM calls WHERE provider = ? AND prediction_id IS NOT NULL "
            "AND (cost_source IS NULL OR cost_source != 'cache')",
            (provider,),
        )
        return {r[0] for r in rows}

    def mark_submitted(self, call_id: str, prediction_id: str) -> None:
        """The provider accepted the job: its id is written before anything waits for the result."""
        self._execute(
            "UPDATE calls SET status = 'submitted', prediction_id = ?, submitted_at = ? WHERE call_id = ?",
            (prediction_id, utcnow(), call_id),
        )

    def reset_call(self, call_id: str) -> None:
        """Back to planned (a failure worth retrying, or a submit proven not accepted)."""
        self._execute(
            "UPDATE calls SET status = 'planned', prediction_id = NULL, error_category = NULL, error_message = NULL, "
            "error_code = NULL WHERE call_id = ?",
            (call_id,),
        )

    def mark_status(
        self,
        call_id: str,
        status: str,
        *,
        reason: str | None = None,
        error_category: str | None = None,
        error_message: str | None = None,
    ) -> None:
        self._execute(
            "UPDATE calls SET status = ?, reason = COALESCE(?, reason), error_category = COALESCE(?, error_category), "
            "error_message = COALESCE(?, error_message), completed_at = CASE WHEN ? IN ('failed','unknown') THEN ? ELSE completed_at END "
            "WHERE call_id = ?",
            (status, reason, error_category, error_message, status, utcnow(), call_id),
        )

    def finish_call(self, call_id: str, fields: Mapping[str, Any]) -> None:
        """Write a call's final state (completed or failed) in one statement."""
        allowed = set(CALL_COLUMNS) - {"call_id", "run_id", "case_id", "model_id", "created_at"}
        bad = set(fields) - allowed
        if bad:
            raise ValueError(f"unknown call fields {sorted(bad)}")
        values = {
            k: (json.dumps(v, default=str) if k in ("params", "notes", "metadata") and v is not None else v)
            for k, v in fields.items()
        }
        values.setdefault("completed_at", utcnow())
        cols = ", ".join(f"{k} = ?" for k in values)
        self._execute(f"UPDATE calls SET {cols} WHERE call_id = ?", (*values.values(), call_id))

    def call_rows(
        self, run_id: str, statuses: Iterable[str] | None = None, columns: Sequence[str] | None = None
    ) -> list[dict[str, Any]]:
        """The run's call rows (optionally only those in ``statuses``, only ``columns``), in plan order."""
        what = "*"
        if columns:
            bad = [c for c in columns if not re.fullmatch(r"[a-z_][a-z0-9_]*", c)]
            if bad:
                raise InvalidInputError(f"not column names: {bad}")
            what = ", ".join(columns)
        if statuses:
            st = list(statuses)
            rows = self._query(
                f"SELECT {what} FROM calls WHERE run_id = ? AND status IN ({','.join('?' * len(st))}) ORDER BY rowid",
                (run_id, *st),
            )
        else:
            rows = self._query(f"SELECT {what} FROM calls WHERE run_id = ? ORDER BY rowid", (run_id,))
        return [dict(r) for r in rows]

    def planned_chunk(self, run_id: str, provider: str, *, after_rowid: int, limit: int) -> list[dict[str, Any]]:
        """The next ``limit`` calls of ``provider`` still ``planned``, in plan order after ``after_rowid``
        (each with its ``rowid``): the engine feeds its queues from here a chunk at a time."""
        rows = self._query(
            "SELECT rowid, call_id, case_id, model_id, repeat, seed, operation, category, cost_usd FROM calls "
            "WHERE run_id = ? AND provider = ? AND status = 'planned' AND rowid > ? ORDER BY rowid LIMIT ?",
            (run_id, provider, after_rowid, limit),
        )
        return [dict(r) for r in rows]

    def planned_counts(self, run_id: str) -> dict[str, int]:
        """Calls still ``planned``, per provider."""
        rows = self._query(
            "SELECT provider, COUNT(*) FROM calls WHERE run_id = ? AND status = 'planned' GROUP BY provider", (run_id,)
        )
        return {r[0]: int(r[1]) for r in rows}

    def committed_usd(self, run_id: str) -> tuple[float, int]:
        """What the run's finished calls count against its budget (a cost nobody reported counts at what was
        reserved for it), and how many they are."""
        row = self._query(
            "SELECT COALESCE(SUM(COALESCE(cost_usd, reserved_usd, 0)), 0), COUNT(*) FROM calls "
            "WHERE run_id = ? AND status IN ('completed', 'failed', 'unknown')",
            (run_id,),
        )[0]
        return float(row[0]), int(row[1])

    def get_call(self, call_id: str) -> dict[str, Any]:
        rows = self._query("SELECT * FROM calls WHERE call_id = ?", (call_id,))
        if not rows:
            raise InvalidInputError(f"no call {call_id!r}")
        return dict(rows[0])

    def find_completed(self, fingerprint: str, exclude_call: str | None = None) -> dict[str, Any] | None:
        """A completed call with this request fingerprint (from any run), for the request cache."""
        rows = self._query(
            "SELECT * FROM calls WHERE fingerprint = ? AND status = 'completed' AND output_sha256 IS NOT NULL "
            "AND call_id != ? ORDER BY completed_at LIMIT 1",
            (fingerprint, exclude_call or ""),
        )
        return dict(rows[0]) if rows else None

    def calls(self, run_id: str | None = None) -> pd.DataFrame:
        """One tidy row per call (all runs when ``run_id`` is None)."""
        if run_id is None:
            rows = self._query("SELECT * FROM calls ORDER BY rowid")
        else:
            self.get_run(run_id)
            rows = self._query("SELECT * FROM calls WHERE run_id = ? ORDER BY rowid", (run_id,))
        df = pd.DataFrame([dict(r) for r in rows], columns=CALL_COLUMNS)
        for col in ("nsfw", "content_filtered", "input_resized", "simulated"):
            df[col] = df[col].fillna(0).astype(bool)
        df["output_path"] = [
            str(self.blob_path(s, e)) if isinstance(s, str) and isinstance(e, str) else None
            for s, e in zip(df["output_sha256"], df["output_ext"], strict=True)
        ]
        return df

    def output_image(self, call_id: str) -> bytes:
        row = self.get_call(call_id)
        if not row.get("output_sha256"):
            raise InvalidInputError(f"call {call_id!r} has no output (status {row['status']})")
        return self.blob_path(row["output_sha256"], row["output_ext"]).read_bytes()

    def call_counts(self, run_id: str) -> dict[str, Any]:
        """A run's call counts and money, aggregated in SQL (cheap for runs of any size)."""
        rows = self._query(
            "SELECT status, (prediction_id IS NOT NULL) AS has_id, cost_source = 'cache' AS cached, error_category, "
            "COUNT(*) AS n, COALESCE(SUM(cost_usd), 0) AS cost, COALESCE(SUM(reserved_usd), 0) AS reserved "
            "FROM calls WHERE run_id = ? GROUP BY status, has_id, cached, error_category",
            (run_id,),
        )
        out: dict[str, Any] = {
            "by_status": {},
            "pending": 0,
            "cached": 0,
            "cost_usd": 0.0,
            "failures_by_category": {},
            "unknown_max_usd": 0.0,
        }
        for r in rows:
            if r["status"] == "unknown":  # may have been billed: the most it can have cost is what was reserved
                out["unknown_max_usd"] += float(r["reserved"])
            out["by_status"][r["status"]] = out["by_status"].get(r["status"], 0) + r["n"]
            if r["status"] == "submitted" and r["has_id"]:
                out["pending"] += r["n"]
            if r["cached"]:
                out["cached"] += r["n"]
            if r["status"] == "failed":
                key = r["error_category"] or "unknown"
                out["failures_by_category"][key] = out["failures_by_category"].get(key, 0) + r["n"]
            out["cost_usd"] += float(r["cost"])
        return out

    def spent_usd(self, run_id: str) -> float:
        row = self._query("SELECT COALESCE(SUM(cost_usd), 0) FROM calls WHERE run_id = ?", (run_id,))
        return float(row[0][0])

    # ---- usage ledger -----------------------------------------------------------------------
    def record_usage(
        self,
        *,
        model_id: str,
        operation: str | None,
        cost_usd: float | None,
        cost_source: str | None,
        source: str,
        user_id: str | None = None,
        run_id: str | None = None,
        call_id: str | None = None,
        prediction_id: str | None = None,
    ) -> None:
        self._execute(
            "INSERT INTO usage(at, user_id, model_id, operation, cost_usd, cost_source, run_id, call_id, prediction_id, source) "
            "VALUES (?,?,?,?,?,?,?,?,?,?)",
            (utcnow(), user_id, model_id, operation, cost_usd, cost_source, run_id, call_id, prediction_id, source),
        )

    def usage(self) -> pd.DataFrame:
        return pd.DataFrame(
            [dict(r) for r in self._query("SELECT * FROM usage ORDER BY usage_id")],
            columns=[
                "usage_id",
                "at",
                "user_id",
                "model_id",
                "operation",
                "cost_usd",
                "cost_source",
                "run_id",
                "call_id",
                "prediction_id",
                "source",
            ],
        )

    # ---- scores -----------------------------------------------------------------------------
    def put_scores(self, rows: Iterable[Mapping[str, Any]]) -> int:
        n = 0
        now = utcnow()
        with self.transaction() as conn:
            for r in rows:
                value = r.get("value")
                status = r.get("status") or ("scored" if value is not None else "unscored")
                conn.execute(
                    "INSERT INTO scores(run_id, call_id, metric, source, version, value, status, reason, detail, created_at) "
                    "VALUES (?,?,?,?,?,?,?,?,?,?) ON CONFLICT(call_id, metric, source, version) DO UPDATE SET "
                    "value = excluded.value, status = excluded.status, reason = excluded.reason, detail = excluded.detail, "
                    "created_at = excluded.created_at",
                    (
                        r["run_id"],
                        r["call_id"],
                        r["metric"],
                        r["source"],
                        r["version"],
                        None if value is None else float(value),
                        status,
                        r.get("reason"),
                        r.get("detail"),
                        now,
                    ),
                )
                n += 1
        return n

    def scored_keys(self, run_id: str, source: str, version: str) -> set[tuple[str, str]]:
        rows = self._query(
            "SELECT call_id, metric FROM scores WHERE run_id = ? AND source = ? AND version = ?",
            (run_id, source, version),
        )
        return {(r[0], r[1]) for r in rows}

    def scores(self, run_id: str) -> pd.DataFrame:
        """Tidy scores: one row per (call, metric, source, version), with the call's model and case."""
        rows = self._query(
            "SELECT s.call_id, c.model_id, c.case_id, c.operation, c.category, s.metric, s.value, s.source, s.version, "
            "s.status, s.reason, s.detail FROM scores s JOIN calls c ON c.call_id = s.call_id WHERE s.run_id = ? ORDER BY s.rowid",
            (run_id,),
        )
        return pd.DataFrame(
            [dict(r) for r in rows],
            columns=[
                "call_id",
                "model_id",
                "case_id",
                "operation",
                "category",
                "metric",
                "value",
                "source",
                "version",
                "status",
                "reason",
                "detail",
            ],
        )

    def rankings(self, run_id: str, *, source: str | None = None) -> pd.DataFrame:
        """Bradley–Terry strengths (with bootstrap 95% intervals) from the run's pairwise votes."""
        from evalkit.scoring import rankings  # scoring builds on the store; imported only when asked

        return rankings(self, run_id, source=source)

    # ---- ratings ----------------------------------------------------------------------------
    def add_rating(
        self,
        *,
        run_id: str,
        case_id: str,
        rater: str,
        source: str = "human",
        kind: str = "pair",
        call_left: str | None = None,
        call_right: str | None = None,
        choice: str | None = None,
        call_id: str | None = None,
        instruction: int | None = None,
        quality: int | None = None,
        preservation: int | None = None,
        detail: str | None = None,
    ) -> int:
        if kind == "pair":
            if choice not in ("left", "right", "tie", "both_bad"):
                raise InvalidInputError(f"pair choice must be left, right, tie or both_bad, got {choice!r}")
            if not call_left or not call_right or call_left == call_right:
                raise InvalidInputError("a pair rating needs two different calls")
        elif kind == "single":
            if not call_id:
                raise InvalidInputError("a single rating needs call_id")
            for name, v in (("instruction", instruction), ("quality", quality), ("preservation", preservation)):
                if v is not None and not (isinstance(v, int) and 1 <= v <= 5):
                    raise InvalidInputError(f"{name} must be an integer 1–5, got {v!r}")
        else:
            raise InvalidInputError(f"rating kind must be pair or single, got {kind!r}")
        models = {}
        for key, cid in (("model_left", call_left), ("model_right", call_right)):
            if cid:
                row = self.get_call(cid)
                if row["run_id"] != run_id or row["case_id"] != case_id:
                    raise InvalidInputError(f"call {cid!r} is not in run {run_id!r} case {case_id!r}")
                models[key] = row["model_id"]
        cur = self._execute(
            "INSERT INTO ratings(run_id, case_id, rater, source, kind, call_left, call_right, model_left, model_right, choice, "
            "call_id, instruction, quality, preservation, detail, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                run_id,
                case_id,
                rater,
                source,
                kind,
                call_left,
                call_right,
                models.get("model_left"),
                models.get("model_right"),
                choice,
                call_id,
                instruction,
                quality,
                preservation,
                detail,
                utcnow(),
            ),
        )
        return int(cur.lastrowid)

    def ratings(self, run_id: str, source: str | None = None) -> pd.DataFrame:
        sql, params = "SELECT * FROM ratings WHERE run_id = ?", [run_id]
        if source:
            sql += " AND source = ?"
            params.append(source)
        rows = self._query(sql + " ORDER BY rating_id", params)
        return pd.DataFrame(
            [dict(r) for r in rows],
            columns=[
                "rating_id",
                "run_id",
                "case_id",
                "rater",
                "source",
                "kind",
                "call_left",
                "call_right",
                "model_left",
                "model_right",
                "choice",
                "call_id",
                "instruction",
                "quality",
                "preservation",
                "detail",
                "created_at",
            ],
        )

    # ---- judge cache ------------------------------------------------------------------------
    def judge_cache_get(self, key: str) -> dict[str, Any] | None:
        rows = self._query("SELECT * FROM judge_cache WHERE key = ?", (key,))
        if not rows:
            return None
        d = dict(rows[0])
        d["parsed"] = json.loads(d["parsed"]) if d["parsed"] else None
        return d

    def judge_cache_put(self, record: Mapping[str, Any]) -> None:
        r = dict(record)
        self._execute(
            "INSERT OR REPLACE INTO judge_cache(key, judge_model, prompt_version, mode, encoding, status, reason, parsed, "
            "reply_raw, cost_usd, latency_ms, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                r["key"],
                r["judge_model"],
                r["prompt_version"],
                r["mode"],
                r["encoding"],
                r["status"],
                r.get("reason"),
                json.dumps(r.get("parsed")) if r.get("parsed") is not None else None,
                r.get("reply_raw"),
                r.get("cost_usd"),
                r.get("latency_ms"),
                r.get("created_at") or utcnow(),
            ),
        )

    # ---- locks ------------------------------------------------------------------------------
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
            raise _translate_sqlite_error(exc, self.path) from None
        with os.fdopen(fd, "w") as fh:
            fh.write(f"{os.getpid()}\n{time.time()}\n")
        try:
            yield
        finally:
            lock.unlink(missing_ok=True)

    def run_spool(self, run_id: str, *, clean: bool = False) -> Path:
        """The run's spool folder; ``clean`` removes half-downloaded files left by a crash (call it under
        the run lock — their calls are polled again on resume)."""
        d = self.spool_dir / check_id(run_id, "run id")
        if clean:
            shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True, exist_ok=True)
        return d


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


__all__ = ["Workspace", "BlobRef", "SCHEMA_VERSION", "check_id", "utcnow", "default_workspace_path", "Category"]
