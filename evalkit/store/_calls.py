"""The ``calls`` table: one row per (case, model, repeat) and its life, written before money is spent.

Each step of a call (:class:`~evalkit.store.status.CallStatus`) is committed before the next one can
spend: ``submitting`` before the request goes out, ``submitted`` with the provider's id before waiting.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pandas as pd

from evalkit.errors import Category, InvalidInputError
from evalkit.store._db import utcnow
from evalkit.store._runs import RunsMixin
from evalkit.store._schema import CALL_COLUMNS
from evalkit.store.status import CallStatus

#: what the engine reads of a waiting call to rebuild its request (see evalkit.engine.execution.CallSource)
_STUB_COLUMNS = (
    "call_id, case_id, model_id, repeat, seed, operation, category, cost_usd, turn, session_id, parent_call_id"
)


class CallsMixin(RunsMixin):
    """Calls: insert the plan, record each step, read them back (rows, DataFrames, SQL aggregates)."""

    def insert_calls(self, rows: Iterable[Mapping[str, Any]]) -> int:
        """Insert planned/not-applicable calls; existing call ids are left untouched (resume)."""
        n = 0
        now = utcnow()
        with self.transaction() as conn:
            for r in rows:
                cur = conn.execute(
                    "INSERT OR IGNORE INTO calls(call_id, run_id, case_id, model_id, provider, operation, category, "
                    "repeat, seed, fingerprint, status, reason, created_at, price_usd, reserved_usd, requested_width, "
                    "requested_height, params, notes, price_source, turn, session_id, parent_call_id) "
                    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
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
                        r.get("status", CallStatus.PLANNED),
                        r.get("reason"),
                        now,
                        r.get("price_usd"),
                        r.get("reserved_usd"),
                        r.get("requested_width"),
                        r.get("requested_height"),
                        json.dumps(r.get("params")) if r.get("params") is not None else None,
                        json.dumps(list(r.get("notes") or [])),
                        r.get("price_source"),
                        r.get("turn"),
                        r.get("session_id"),
                        r.get("parent_call_id"),
                    ),
                )
                n += cur.rowcount
        return n

    def mark_submitting(
        self,
        call_id: str,
        *,
        reserved_usd: float,
        fingerprint: str | None = None,
        price_usd: float | None = None,
        price_source: str | None = None,
    ) -> None:
        """Recorded before the request goes out: a crash after this point is never blindly re-sent.

        ``price_usd``/``price_source``, when given, replace the planned price (a resumed run may have
        quoted it since)."""
        self._execute(
            "UPDATE calls SET status = ?, submitting_at = ?, reserved_usd = ?, attempt = attempt + 1, "
            "fingerprint = COALESCE(?, fingerprint), price_usd = COALESCE(?, price_usd), "
            "price_source = COALESCE(?, price_source) WHERE call_id = ?",
            (CallStatus.SUBMITTING, utcnow(), reserved_usd, fingerprint, price_usd, price_source, call_id),
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
            "UPDATE calls SET status = ?, prediction_id = ?, submitted_at = ?, error_category = NULL, "
            "error_message = NULL, error_code = NULL, cost_usd = NULL, cost_source = NULL, completed_at = NULL, "
            "metadata = ? WHERE call_id = ?",
            (CallStatus.SUBMITTED, prediction_id, utcnow(), meta, call_id),
        )

    def note_unknown(self, call_id: str, reason: str) -> None:
        """Keep (or make) a call ``unknown`` with why its history cannot settle it. The first recorded
        moment of the unknown outcome (``completed_at``, the end of its submit window) is kept."""
        rows = self._query("SELECT error_message FROM calls WHERE call_id = ?", (call_id,))
        before = (rows[0][0] or "") if rows else ""
        before = before.split(" — history: ")[0]
        message = f"{before} — history: {reason}" if before else reason
        self._execute(
            "UPDATE calls SET status = ?, error_category = ?, error_message = ?, cost_usd = NULL, "
            "cost_source = 'unknown' WHERE call_id = ?",
            (CallStatus.UNKNOWN, str(Category.UNKNOWN_OUTCOME), message, call_id),
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
            "UPDATE calls SET status = ?, prediction_id = ?, submitted_at = ? WHERE call_id = ?",
            (CallStatus.SUBMITTED, prediction_id, utcnow(), call_id),
        )

    def reset_call(self, call_id: str) -> None:
        """Back to planned (a failure worth retrying, or a submit proven not accepted)."""
        self._execute(
            "UPDATE calls SET status = ?, prediction_id = NULL, error_category = NULL, error_message = NULL, "
            "error_code = NULL WHERE call_id = ?",
            (CallStatus.PLANNED, call_id),
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
        (each with its ``rowid``): the engine feeds its queues from here a chunk at a time. A later turn of a
        session is not among them: it runs when its parent completes (:meth:`session_continuations`)."""
        rows = self._query(
            f"SELECT rowid, {_STUB_COLUMNS} FROM calls "
            "WHERE run_id = ? AND provider = ? AND status = ? AND rowid > ? AND parent_call_id IS NULL "
            "ORDER BY rowid LIMIT ?",
            (run_id, provider, CallStatus.PLANNED, after_rowid, limit),
        )
        return [dict(r) for r in rows]

    def session_continuations(self, run_id: str) -> list[dict[str, Any]]:
        """Later turns still ``planned`` whose parent turn has completed: where a resumed run picks each
        session up again (at most one per session chain)."""
        rows = self._query(
            f"SELECT c.rowid, {', '.join('c.' + col for col in _STUB_COLUMNS.split(', '))} FROM calls c "
            "JOIN calls p ON p.call_id = c.parent_call_id "
            "WHERE c.run_id = ? AND c.status = ? AND p.status = ? ORDER BY c.rowid",
            (run_id, CallStatus.PLANNED, CallStatus.COMPLETED),
        )
        return [dict(r) for r in rows]

    def next_turn(self, call_id: str) -> dict[str, Any] | None:
        """The call whose input is ``call_id``'s output (the session's next turn) when it is still to run, or
        None. A turn marked ``not_reached`` earlier (its parent was retried or settled since) is planned again."""
        rows = self._query(
            f"SELECT rowid, status, {_STUB_COLUMNS} FROM calls WHERE parent_call_id = ? AND status IN (?, ?)",
            (call_id, CallStatus.PLANNED, CallStatus.NOT_REACHED),
        )
        if not rows:
            return None
        row = dict(rows[0])
        if row.pop("status") == CallStatus.NOT_REACHED:
            self._execute(
                "UPDATE calls SET status = ?, reason = NULL, completed_at = NULL WHERE call_id = ?",
                (CallStatus.PLANNED, row["call_id"]),
            )
        return row

    def later_turns_reserved_usd(self, call_id: str) -> float:
        """What the later turns of ``call_id``'s session chain, still to run, hold as their planned maximum price:
        the money a session needs beyond this turn to finish."""
        rows = self._query(
            "WITH RECURSIVE later(call_id, reserved, status) AS ("
            " SELECT call_id, reserved_usd, status FROM calls WHERE parent_call_id = ?"
            " UNION ALL SELECT c.call_id, c.reserved_usd, c.status FROM calls c"
            " JOIN later l ON c.parent_call_id = l.call_id"
            ") SELECT COALESCE(SUM(reserved), 0) FROM later WHERE status IN (?, ?)",
            (call_id, CallStatus.PLANNED, CallStatus.NOT_REACHED),
        )
        return float(rows[0][0])

    def mark_not_reached(self, run_id: str, reason: str, *, after: str | None = None) -> int:
        """Every later turn of the session chain after ``after`` (or, with None, of every chain whose
        parent ended without an output) becomes ``not_reached`` with ``reason``; returns how many."""
        n = 0
        with self.transaction() as conn:
            if after is not None:
                frontier = [after]
                while frontier:
                    rows = conn.execute(
                        f"SELECT call_id FROM calls WHERE parent_call_id IN ({','.join('?' * len(frontier))}) "
                        "AND status = ?",
                        (*frontier, CallStatus.PLANNED),
                    ).fetchall()
                    frontier = [r[0] for r in rows]
                    for cid in frontier:
                        conn.execute(
                            "UPDATE calls SET status = ?, reason = ?, completed_at = ? WHERE call_id = ?",
                            (CallStatus.NOT_REACHED, reason, utcnow(), cid),
                        )
                    n += len(frontier)
                return n
            ended = (CallStatus.FAILED, CallStatus.UNKNOWN, CallStatus.NOT_APPLICABLE, CallStatus.NOT_REACHED)
            while True:
                rows = conn.execute(
                    "SELECT c.call_id, p.call_id, p.status, p.error_category FROM calls c "
                    "JOIN calls p ON p.call_id = c.parent_call_id "
                    f"WHERE c.run_id = ? AND c.status = ? AND p.status IN ({','.join('?' * len(ended))})",
                    (run_id, CallStatus.PLANNED, *ended),
                ).fetchall()
                if not rows:
                    return n
                for cid, parent, status, category in rows:
                    why = reason.format(parent=parent, status=status, category=category or status)
                    conn.execute(
                        "UPDATE calls SET status = ?, reason = ?, completed_at = ? WHERE call_id = ?",
                        (CallStatus.NOT_REACHED, why, utcnow(), cid),
                    )
                n += len(rows)

    def planned_counts(self, run_id: str) -> dict[str, int]:
        """Calls still ``planned``, per provider."""
        rows = self._query(
            "SELECT provider, COUNT(*) FROM calls WHERE run_id = ? AND status = ? GROUP BY provider",
            (run_id, CallStatus.PLANNED),
        )
        return {r[0]: int(r[1]) for r in rows}

    def committed_usd(self, run_id: str) -> tuple[float, int]:
        """What the run's finished calls count against its budget (a cost nobody reported counts at what was
        reserved for it), and how many they are."""
        row = self._query(
            "SELECT COALESCE(SUM(COALESCE(cost_usd, reserved_usd, 0)), 0), COUNT(*) FROM calls "
            "WHERE run_id = ? AND status IN (?, ?, ?)",
            (run_id, CallStatus.COMPLETED, CallStatus.FAILED, CallStatus.UNKNOWN),
        )[0]
        return float(row[0]), int(row[1])

    def completion_times(self, model_id: str, limit: int = 256, *, simulated: bool | None = None) -> list[float]:
        """Seconds the model's most recent completed calls (any run, cache hits excluded) took on the provider's
        side (its reported inference time), oldest first: what the poll pacer learns from."""
        only = "" if simulated is None else f"AND simulated = {int(simulated)} "
        rows = self._query(
            "SELECT inference_ms FROM calls WHERE model_id = ? AND status = ? AND inference_ms > 0 "
            f"AND (cost_source IS NULL OR cost_source != 'cache') {only}ORDER BY completed_at DESC LIMIT ?",
            (model_id, CallStatus.COMPLETED, limit),
        )
        return [float(r[0]) / 1000 for r in reversed(rows)]

    def get_call(self, call_id: str) -> dict[str, Any]:
        rows = self._query("SELECT * FROM calls WHERE call_id = ?", (call_id,))
        if not rows:
            raise InvalidInputError(f"no call {call_id!r}")
        return dict(rows[0])

    def find_completed(self, fingerprint: str, exclude_call: str | None = None) -> dict[str, Any] | None:
        """A completed call with this request fingerprint (from any run), for the request cache."""
        rows = self._query(
            "SELECT * FROM calls WHERE fingerprint = ? AND status = ? AND output_sha256 IS NOT NULL "
            "AND call_id != ? ORDER BY completed_at LIMIT 1",
            (fingerprint, CallStatus.COMPLETED, exclude_call or ""),
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
            if (
                r["status"] == CallStatus.UNKNOWN
            ):  # may have been billed: the most it can have cost is what was reserved
                out["unknown_max_usd"] += float(r["reserved"])
            out["by_status"][r["status"]] = out["by_status"].get(r["status"], 0) + r["n"]
            if r["status"] == CallStatus.SUBMITTED and r["has_id"]:
                out["pending"] += r["n"]
            if r["cached"]:
                out["cached"] += r["n"]
            if r["status"] == CallStatus.FAILED:
                key = r["error_category"] or "unknown"
                out["failures_by_category"][key] = out["failures_by_category"].get(key, 0) + r["n"]
            out["cost_usd"] += float(r["cost"])
        # later turns of sessions still waiting for an earlier turn (one accepted and still running, or one not
        # yet sent): not "skipped" calls of their own — they run when that turn completes
        out["waiting"] = int(
            self._query(
                "SELECT COUNT(*) FROM calls c JOIN calls p ON p.call_id = c.parent_call_id "
                "WHERE c.run_id = ? AND c.status = ? AND p.status != ?",
                (run_id, CallStatus.PLANNED, CallStatus.COMPLETED),
            )[0][0]
        )
        return out

    def spent_usd(self, run_id: str) -> float:
        row = self._query("SELECT COALESCE(SUM(cost_usd), 0) FROM calls WHERE run_id = ?", (run_id,))
        return float(row[0][0])
