"""The usage ledger: one row per paid (or possibly paid) request, from runs, single edits, the judge and
``evalkit serve``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pandas as pd

from evalkit.store._db import Connection, utcnow

USAGE_COLUMNS = (
    "usage_id at user_id model_id operation cost_usd cost_source run_id call_id prediction_id source "
    "tier role fallbacks client reserved_usd"
).split()


def usage_charge(cost_usd: float | None, reserved_usd: float | None) -> float:
    """What one ledger row counts against a spending cap: its cost once known, else what was held back for it
    (a pending or unknown outcome may have been billed up to its reservation)."""
    if cost_usd is not None:
        return float(cost_usd)
    return float(reserved_usd or 0.0)


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
        tier: str | None = None,
        role: str | None = None,
        fallbacks: Sequence[dict[str, Any]] | None = None,
        client: str | None = None,
        reserved_usd: float | None = None,
    ) -> int:
        """Append one row; returns its ``usage_id``. A request whose result is still awaited is recorded with
        ``cost_source="pending"`` first and settled by :meth:`settle_usage` (a crash leaves it pending:
        possibly paid, outcome unknown — never missing). ``fallbacks``: the attempts of the same routed edit
        that came before this one, as ``{"model", "category"}`` objects (stored as JSON)."""
        cur = self._execute(
            "INSERT INTO usage(at, user_id, model_id, operation, cost_usd, cost_source, run_id, call_id, "
            "prediction_id, source, tier, role, fallbacks, client, reserved_usd) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                utcnow(),
                user_id,
                model_id,
                operation,
                cost_usd,
                cost_source,
                run_id,
                call_id,
                prediction_id,
                source,
                tier,
                role,
                json.dumps(list(fallbacks)) if fallbacks is not None else None,
                client,
                reserved_usd,
            ),
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

    def usage(self, *, since: str | None = None, source: str | None = None) -> pd.DataFrame:
        """The ledger, one row per request (``fallbacks`` decoded to a list). ``since``: an ISO UTC time
        (rows at or after it); ``source``: only rows of that source (``serve``, ``run``, ``judge``, …)."""
        where, args = [], []
        if since is not None:
            where.append("at >= ?")
            args.append(since)
        if source is not None:
            where.append("source = ?")
            args.append(source)
        sql = "SELECT * FROM usage" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY usage_id"
        rows = [dict(r) for r in self._query(sql, tuple(args))]
        for r in rows:
            r["fallbacks"] = json.loads(r["fallbacks"]) if r.get("fallbacks") else []
        return pd.DataFrame(rows, columns=USAGE_COLUMNS)

    def usage_spent(self, *, since: str, source: str) -> tuple[float, dict[str, float]]:
        """What rows of ``source`` at or after ``since`` count against a spending cap (see :func:`usage_charge`):
        the total and the total per ``client``. Read at start-up so a restart does not reset a day's budget."""
        total = 0.0
        per_client: dict[str, float] = {}
        for r in self._query(
            "SELECT client, cost_usd, reserved_usd FROM usage WHERE at >= ? AND source = ?", (since, source)
        ):
            charge = usage_charge(r["cost_usd"], r["reserved_usd"])
            total += charge
            if r["client"] is not None:
                per_client[r["client"]] = per_client.get(r["client"], 0.0) + charge
        return total, per_client
