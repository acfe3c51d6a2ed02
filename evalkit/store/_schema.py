"""The workspace database's schema: its tables, versioned migrations and the call table's columns.

``SCHEMA_VERSION`` is what this evalkit writes; :func:`migrate` brings an older database up to it (each
step in one transaction) and refuses a database written by a newer evalkit without changing it.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from evalkit.errors import WorkspaceError

SCHEMA_VERSION = 9
DB_NAME = "evalkit.sqlite"

# Each entry migrates the schema from version i to i+1 (never edit a released one: add the next). The
# calls.status values are the CallStatus values (evalkit/store/status.py).
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
        status TEXT NOT NULL,          -- CallStatus: planned | submitting | submitted | completed | failed |
                                       --   not_applicable | unknown
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
    # 1 → 2: single ratings say their scale: "1-5" (instruction/quality/preservation 1..5) or "imagenhub"
    # (ImagenHub's protocol: SC in `instruction`, PR in `quality`, each 0, 0.5 or 1). NULL = "1-5".
    "ALTER TABLE ratings ADD COLUMN scale TEXT",
    # 2 → 3: where each call's price came from — catalogue | quoted (the provider's pricing API for exactly
    # this request, `evalkit run --quote-prices`) | catalogue_quote_failed. NULL for calls planned before.
    """
    ALTER TABLE calls ADD COLUMN price_source TEXT
    """,
    # 3 → 4: the body each submit sent (compact: long strings as sha256), so an unknown outcome can be
    # recognised among the provider's predictions (evalkit.engine.reconcile)
    """
    ALTER TABLE calls ADD COLUMN sent_body TEXT
    """,
    # 4 → 5: the usage ledger's routing facts as typed columns instead of text inside `source` (tier,
    # role = default | provisional | alternative, fallbacks = JSON list of {model, category} tried before),
    # who asked (`client`: evalkit serve's peer, never a key) and what was held back before sending
    # (`reserved_usd`: a daily budget counts it while the cost is pending or unknown, across restarts)
    """
    ALTER TABLE usage ADD COLUMN tier TEXT;
    ALTER TABLE usage ADD COLUMN role TEXT;
    ALTER TABLE usage ADD COLUMN fallbacks TEXT;
    ALTER TABLE usage ADD COLUMN client TEXT;
    ALTER TABLE usage ADD COLUMN reserved_usd REAL;
    CREATE INDEX usage_at ON usage(at)
    """,
    # 5 → 6: every judge pass of a score (``evalkit score --judge-passes N``): the score row holds the mean of
    # the valid passes, these rows hold each pass (value NULL when that pass was unscored), so the judge's own
    # noise can be measured (evalkit.scoring.judge.noise)
    """
    CREATE TABLE judge_passes (
        run_id TEXT NOT NULL,
        call_id TEXT NOT NULL,
        metric TEXT NOT NULL,
        version TEXT NOT NULL,
        pass INTEGER NOT NULL,         -- 1..N
        value REAL,                    -- NULL when this pass was unscored
        status TEXT NOT NULL,          -- scored | unscored
        reason TEXT,
        cache_key TEXT,                -- the judge_cache entry of this pass's request
        created_at TEXT NOT NULL,
        PRIMARY KEY (call_id, metric, version, pass)
    );
    CREATE INDEX judge_passes_run ON judge_passes(run_id)
    """,
    # 6 → 7: each case's captions (suite.toml source_caption / target_caption), read by the semantic
    # metrics (CLIP-T, CLIP directional similarity); NULL when the suite gives none
    """
    ALTER TABLE cases ADD COLUMN source_caption TEXT;
    ALTER TABLE cases ADD COLUMN target_caption TEXT
    """,
    # 7 → 8: when `evalkit gc` deleted the run's output images (rows, metrics, scores and votes are kept);
    # NULL = its outputs are all there (evalkit.store.retention)
    """
    ALTER TABLE runs ADD COLUMN outputs_collected_at TEXT
    """,
    # 8 → 9: sessions of turns (iterative editing): a turn's call says which turn it is (1-based), the session
    # (suite case) it belongs to and the call whose output is its input; a case row says the same of a turn
    """
    ALTER TABLE calls ADD COLUMN turn INTEGER;
    ALTER TABLE calls ADD COLUMN session_id TEXT;
    ALTER TABLE calls ADD COLUMN parent_call_id TEXT;
    CREATE INDEX calls_parent ON calls(parent_call_id);
    ALTER TABLE cases ADD COLUMN session_id TEXT;
    ALTER TABLE cases ADD COLUMN turn INTEGER
    """,
]
#: scales of single ratings and their allowed values
RATING_SCALES = {"1-5": (1, 2, 3, 4, 5), "imagenhub": (0, 0.5, 1)}

CALL_COLUMNS = (
    "call_id run_id case_id model_id provider operation category repeat seed fingerprint status reason prediction_id "
    "attempt created_at submitting_at submitted_at completed_at submit_ms queue_ms inference_ms download_ms total_ms "
    "price_usd reserved_usd cost_usd cost_source error_category error_message error_code output_sha256 output_ext "
    "width height format requested_width requested_height nsfw content_filtered input_resized simulated cached_from "
    "params notes metadata price_source sent_body turn session_id parent_call_id"
).split()


def migrate(conn: sqlite3.Connection, lock: threading.RLock, path: Path) -> None:
    """Bring the database at ``path`` (open as ``conn``) up to :data:`SCHEMA_VERSION`."""
    with lock:
        conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        version = int(row[0]) if row else 0
        if version > SCHEMA_VERSION:
            raise WorkspaceError(
                f"workspace {path} was written by a newer evalkit "
                f"(schema {version}; this evalkit reads ≤ {SCHEMA_VERSION})",
                hint="upgrade evalkit (pip install -U evalkit) or use another workspace; nothing was changed",
            )
        for target in range(version, SCHEMA_VERSION):
            conn.execute("BEGIN IMMEDIATE")
            try:
                for stmt in _MIGRATIONS[target].split(";"):
                    if stmt.strip():
                        conn.execute(stmt)
                conn.execute(
                    "INSERT INTO meta(key, value) VALUES('schema_version', ?) "
                    "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    (str(target + 1),),
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
