"""What a VIEScore judgement becomes in the workspace: score rows (one per metric, the mean of the valid
passes when there are several) and ``judge_passes`` rows (every pass). Used by
:func:`evalkit.scoring.judge.batch.judge_run`, whose docstring describes what is stored.
"""

from __future__ import annotations

import json
import math
import statistics
from typing import Any

from evalkit.scoring.judge.client import JudgeReply, VIEScoreResult

VIESCORE_METRICS = (
    "viescore_sc",
    "viescore_pq",
    "viescore_o",
    "vie_editing_success",
    "vie_over_editing",
    "vie_naturalness",
    "vie_artifacts",
)
_SC_METRICS = ("viescore_sc", "vie_editing_success", "vie_over_editing")
_PQ_METRICS = ("viescore_pq", "vie_naturalness", "vie_artifacts")


def mean_rows(per_pass: list[list[dict[str, Any]]], asked: int) -> list[dict[str, Any]]:
    """One score row per metric from the rows of each pass: the mean of the valid passes (their values, SD
    and range in ``detail["passes"]``), else an unscored row with the first pass's reason."""
    by_metric: dict[str, list[tuple[int, dict[str, Any]]]] = {}
    for k, rows in enumerate(per_pass, start=1):
        for row in rows:
            by_metric.setdefault(row["metric"], []).append((k, row))
    out: list[dict[str, Any]] = []
    for items in by_metric.values():
        valid = [(k, r) for k, r in items if r["value"] is not None]
        values: list[float | None] = [None] * asked
        for k, r in valid:
            values[k - 1] = float(r["value"])
        base = dict((valid or items)[0][1])
        if valid:
            xs = [float(r["value"]) for _, r in valid]
            mean = math.fsum(xs) / len(xs)
            sd = statistics.stdev(xs) if len(xs) >= 2 else None
            spread = {"asked": asked, "judged": len(items), "valid": len(xs), "values": values, "sd": sd}
            spread["range"] = max(xs) - min(xs)
            base.update(value=mean, status="scored", reason=None)
        else:
            spread = {"asked": asked, "judged": len(items), "valid": 0, "values": values, "sd": None, "range": None}
        detail = json.loads(base["detail"]) if base.get("detail") else {}
        detail["passes"] = spread
        base["detail"] = json.dumps(detail, ensure_ascii=False, default=str)
        out.append(base)
    return out


def pass_rows(per_pass: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The ``judge_passes`` rows of one output: every metric of every pass that was judged."""
    rows = []
    for k, score_rows in enumerate(per_pass, start=1):
        for r in score_rows:
            detail = json.loads(r["detail"]) if r.get("detail") else {}
            rows.append(
                {
                    "metric": r["metric"],
                    "pass": k,
                    "value": r["value"],
                    "status": r["status"],
                    "reason": r["reason"],
                    "cache_key": detail.get("key") or detail.get("sc_key") or detail.get("pq_key"),
                }
            )
    return rows


def viescore_rows(
    run_id: str,
    call_id: str,
    version: str,
    result: VIEScoreResult,
    operation: str,
    *,
    no_instruction: bool,
    instruction_source: str | None = None,
) -> list[dict[str, Any]]:
    """Score rows for one call: a value for what was scored; value None + status "unscored" + reason for
    what was judged and failed; nothing for what the budget kept from being judged. ``instruction_source``
    ("case" | "operation", :func:`evalkit.scoring.judge.prompts.sc_instruction`) goes into the SC and
    overall rows' detail, so a score judged against an operation's fixed instruction says so."""
    rows: list[dict[str, Any]] = []

    def add(metric: str, value: float | None, reply: JudgeReply | None, reason: str | None, detail: Any) -> None:
        if reason == "budget":
            return
        rows.append(
            {
                "run_id": run_id,
                "call_id": call_id,
                "metric": metric,
                "source": "judge",
                "version": version,
                "value": value,
                "status": "scored" if value is not None else "unscored",
                "reason": None if value is not None else reason,
                "detail": json.dumps(detail, ensure_ascii=False, default=str),
            }
        )

    def info(reply: JudgeReply | None) -> dict[str, Any]:
        if reply is None:
            return {}
        return {
            "key": reply.key,
            "cached": reply.cached,
            "reasoning": (reply.parsed or {}).get("reasoning"),
            "detail": reply.detail,
            "response_model": reply.response_model,
        }

    if result.reason in ("bad_image", "missing_image"):
        for m in VIESCORE_METRICS:
            add(m, None, None, result.reason, {"detail": result.detail})
        return rows
    sc, pq = result.sc_reply, result.pq_reply
    if all(r is None or r.reason == "budget" for r in (sc, pq)):
        return rows  # nothing was judged: no rows at all (a later run with more budget fills them in)
    if result.sc_applies:
        sc_reason = sc.reason if sc is not None else "budget"
        sc_info = info(sc) | ({"instruction_source": instruction_source} if instruction_source else {})
    else:
        sc_reason = "no_instruction" if no_instruction else "not_applicable"
        sc_info = {"detail": f"VIEScore SC needs an edit instruction; this {operation!r} output has none: PQ only"}
    for metric, value in zip(_SC_METRICS, (result.sc, result.editing_success, result.over_editing), strict=True):
        add(metric, value, sc, sc_reason, sc_info)
    pq_reason = pq.reason if pq is not None else "budget"
    for metric, value in zip(_PQ_METRICS, (result.pq, result.naturalness, result.artifacts), strict=True):
        add(metric, value, pq, pq_reason, info(pq))
    o_reason = sc_reason if result.sc is None else pq_reason
    add(
        "viescore_o",
        result.o,
        None,
        o_reason,
        {"sc_key": sc.key if sc else None, "pq_key": pq.key if pq else None, "formula": "sqrt(SC*PQ)"}
        | ({"instruction_source": instruction_source} if result.sc_applies and instruction_source else {}),
    )
    return rows


__all__ = ["VIESCORE_METRICS", "mean_rows", "pass_rows", "viescore_rows"]
