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
    ) -> None:
        self._execute(
            "INSERT INTO usage(at, user_id, model_id, operation, cost_usd, cost_source, run_id, call_id, "
            "prediction_id, source) VALUES (?,?,?,?,?,?,?,?,?,?)",
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
