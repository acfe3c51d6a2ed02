"""The usage ledger: one row per paid (or possibly paid) request, from runs, single edits and the judge."""

from __future__ import annotations

import pandas as pd

from evalkit.store._db import Connection, utcnow


class UsageMixin(Connection):
    """Append to and read the usage ledger."""

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
    ) -> int:
        """Append one row; returns its ``usage_id``. A request whose result is still awaited is recorded with
        ``cost_source="pending"`` first and settled by :meth:`settle_usage` (a crash leaves it pending:
        possibly paid, outcome unknown — never missing)."""
        cur = self._execute(
            "INSERT INTO usage(at, user_id, model_id, operation, cost_usd, cost_source, run_id, call_id, "
            "prediction_id, source) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (utcnow(), user_id, model_id, operation, cost_usd, cost_source, run_id, call_id, prediction_id, source),
        )
        assert cur.lastrowid is not None  # an INSERT into a rowid table
        return int(cur.lastrowid)

    def settle_usage(
        self,
        usage_id: int,
        *,
        cost_usd: float | None = None,
        cost_source: str | None = None,
        prediction_id: str | None = None,
        source: str | None = None,
    ) -> None:
        """Fill in what became known about a recorded request (its cost, prediction id, final source text)."""
        self._execute(
            "UPDATE usage SET cost_usd = ?, cost_source = COALESCE(?, cost_source), "
            "prediction_id = COALESCE(?, prediction_id), source = COALESCE(?, source) WHERE usage_id = ?",
            (cost_usd, cost_source, prediction_id, source, usage_id),
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
