"""The ``scores`` table: one value (or an explicit "unscored") per (call, metric, source, version); and the
``judge_passes`` table: each judge pass behind a judge score (the score is the mean of its valid passes)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

from evalkit.store._db import Connection, utcnow


class ScoresMixin(Connection):
    """Write scores (upsert) and read them as a tidy DataFrame."""

    def put_scores(self, rows: Iterable[Mapping[str, Any]]) -> int:
        n = 0
        now = utcnow()
        with self.transaction() as conn:
            for r in rows:
                value = r.get("value")
                status = r.get("status") or ("scored" if value is not None else "unscored")
                conn.execute(
                    "INSERT INTO scores(run_id, call_id, metric, source, version, value, status, reason, detail, "
                    "created_at) VALUES (?,?,?,?,?,?,?,?,?,?) ON CONFLICT(call_id, metric, source, version) DO UPDATE "
                    "SET value = excluded.value, status = excluded.status, reason = excluded.reason, "
                    "detail = excluded.detail, created_at = excluded.created_at",
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
            "s.status, s.reason, s.detail FROM scores s JOIN calls c ON c.call_id = s.call_id WHERE s.run_id = ? "
            "ORDER BY s.rowid",
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

    def put_judge_passes(self, run_id: str, call_id: str, version: str, rows: Iterable[Mapping[str, Any]]) -> int:
        """Replace the passes of one call's judge scores at ``version`` by ``rows`` (metric, pass, value,
        status, reason, cache_key): afterwards the table holds exactly the passes the score row averages."""
        now = utcnow()
        rows = list(rows)
        with self.transaction() as conn:
            metrics = sorted({r["metric"] for r in rows})
            for metric in metrics:
                conn.execute(
                    "DELETE FROM judge_passes WHERE call_id = ? AND metric = ? AND version = ?",
                    (call_id, metric, version),
                )
            for r in rows:
                value = r.get("value")
                conn.execute(
                    "INSERT INTO judge_passes(run_id, call_id, metric, version, pass, value, status, reason, "
                    "cache_key, created_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
                    (
                        run_id,
                        call_id,
                        r["metric"],
                        version,
                        int(r["pass"]),
                        None if value is None else float(value),
                        r.get("status") or ("scored" if value is not None else "unscored"),
                        r.get("reason"),
                        r.get("cache_key"),
                        now,
                    ),
                )
        return len(rows)

    def judge_passes(self, run_id: str) -> pd.DataFrame:
        """Tidy judge passes: one row per (call, metric, version, pass), with the call's model, case and operation."""
        rows = self._query(
            "SELECT p.call_id, c.model_id, c.case_id, c.operation, p.metric, p.version, p.pass, p.value, p.status, "
            "p.reason, p.cache_key FROM judge_passes p JOIN calls c ON c.call_id = p.call_id WHERE p.run_id = ? "
            "ORDER BY p.call_id, p.metric, p.pass",
            (run_id,),
        )
        return pd.DataFrame(
            [dict(r) for r in rows],
            columns=[
                "call_id",
                "model_id",
                "case_id",
                "operation",
                "metric",
                "version",
                "pass",
                "value",
                "status",
                "reason",
                "cache_key",
            ],
        )
