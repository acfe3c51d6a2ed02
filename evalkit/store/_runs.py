"""The ``runs`` and ``cases`` tables: what was run (suite, models, budget, config) and each case's inputs."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

from evalkit.errors import InvalidInputError
from evalkit.store._blobs import BlobsMixin
from evalkit.store._db import check_id, utcnow
from evalkit.store.status import CallStatus


class RunsMixin(BlobsMixin):
    """Runs and their cases (a case's images are read from the blob store)."""

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
        allowed.add("outputs_collected_at")
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
            "SELECT r.run_id, r.created_at, r.status, r.suite_name, r.models, r.repeats, r.budget_usd, r.simulated, "
            "r.wall_s, "
            "SUM(c.status = ?) AS completed, SUM(c.status = ?) AS failed, "
            "SUM(c.status NOT IN (?, ?)) AS planned, COALESCE(SUM(c.cost_usd), 0) AS cost_usd, "
            "COALESCE(SUM(c.status = ?), 0) AS unknown, "
            "COALESCE(SUM(CASE WHEN c.status = ? THEN c.reserved_usd END), 0) AS unknown_max_usd "
            "FROM runs r LEFT JOIN calls c ON c.run_id = r.run_id GROUP BY r.run_id ORDER BY r.created_at",
            (
                CallStatus.COMPLETED,
                CallStatus.FAILED,
                CallStatus.NOT_APPLICABLE,
                CallStatus.NOT_REACHED,
                CallStatus.UNKNOWN,
                CallStatus.UNKNOWN,
            ),
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
        # what judging each run cost (the usage ledger's judge rows): requests sent, their known cost, and how
        # many had no known cost (no usage reported, or no judge prices)
        judged = {
            r[0]: (int(r[1]), float(r[2] or 0.0), int(r[3]))
            for r in self._query(
                "SELECT run_id, COUNT(*), SUM(cost_usd), SUM(cost_usd IS NULL) FROM usage WHERE source = 'judge' "
                "AND run_id IS NOT NULL GROUP BY run_id"
            )
        }
        df["judge_requests"] = [judged.get(r, (0, 0.0, 0))[0] for r in df["run_id"]]
        df["judge_cost_usd"] = [judged.get(r, (0, 0.0, 0))[1] for r in df["run_id"]]
        df["judge_unknown_cost"] = [judged.get(r, (0, 0.0, 0))[2] for r in df["run_id"]]
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
                    "mask_sha256, target_width, target_height, tags, params, source_caption, target_caption, "
                    "session_id, turn) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
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
                        r.get("source_caption"),
                        r.get("target_caption"),
                        r.get("session_id"),
                        r.get("turn"),
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
