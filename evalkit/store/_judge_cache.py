"""The judge cache: a judge's verdict keyed by everything that determines it, so it is never paid for twice."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from evalkit.store._db import Connection, utcnow


class JudgeCacheMixin(Connection):
    """Get and put cached judge verdicts."""

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
            "INSERT OR REPLACE INTO judge_cache(key, judge_model, prompt_version, mode, encoding, status, reason, "
            "parsed, reply_raw, cost_usd, latency_ms, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
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
