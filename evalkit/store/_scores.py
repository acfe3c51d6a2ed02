"""The ``scores`` table: one value (or an explicit "unscored") per (call, metric, source, version)."""

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
