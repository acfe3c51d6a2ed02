"""Sessions (iterative editing) read back per session: quality by turn, and each session as one unit.

A session is one (suite session, model, repeat) chain of turns. Its summary (:func:`session_table`):

* ``final_quality`` — the quality of its last turn (MagicBrush's final-turn setting); NaN unless every turn
  completed and the last one is scored;
* ``mean_quality`` — the mean quality of its scored turns (MagicBrush's all-turn setting);
* ``drift_ssim`` — SSIM of the last turn's output against the session's *original* image (automatic metric
  ``drift_ssim``): how much of the original survived the whole session;
* ``cost_usd`` / ``latency_ms`` — what the whole session cost and how long its turns took end to end (the sum
  of the turns' total times: a session's turns run one after the other).

:func:`session_model_table` has :func:`evalkit.decide.tables.model_table`'s columns with a *session* as the unit
(``calls`` = sessions attempted, ``completed`` = sessions whose every turn completed, ``mean_cost_usd`` = cost
per session, ``p50/p95_total_ms`` = latency per session, ``quality`` = final-turn quality), so the
cost–quality plot, the Pareto front and the tier rule work on it unchanged (``unit="session"``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from evalkit.decide.quality import DEFAULT_QUALITY, QualityLike, QualitySpec, resolve_quality, scored_values
from evalkit.store import ATTEMPTED_STATUSES, CallStatus, Workspace

#: columns of :func:`session_table`
SESSION_COLUMNS = [
    "session_id",
    "model_id",
    "provider",
    "repeat",
    "operation",
    "category",
    "turns",
    "turns_completed",
    "complete",
    "final_quality",
    "mean_quality",
    "drift_ssim",
    "cost_usd",
    "latency_ms",
]


def _turn_calls(ws: Workspace, run_id: str) -> pd.DataFrame:
    calls = ws.calls(run_id)
    return calls[calls["turn"].notna()].assign(turn=lambda d: d["turn"].astype(int))


def _turn_quality(ws: Workspace, run_id: str, quality: QualityLike) -> tuple[pd.Series, QualitySpec, pd.Series]:
    """Quality of each scored call (call_id → value), the spec used, and each call's drift_ssim."""
    scores = ws.scores(run_id)
    spec = resolve_quality(scores, quality)
    values = scored_values(scores, spec)
    per_call = values.groupby("call_id")["value"].mean() if not values.empty else pd.Series(dtype=float)
    drift = scores[(scores["metric"] == "drift_ssim") & (scores["source"] == "auto")] if not scores.empty else scores
    drift_per_call = drift.groupby("call_id")["value"].mean() if not drift.empty else pd.Series(dtype=float)
    return per_call, spec, drift_per_call


def session_table(ws: Workspace, run_id: str, quality: QualityLike = DEFAULT_QUALITY) -> pd.DataFrame:
    """One row per (session, model, repeat); see the module docstring. Empty for a run without sessions."""
    turns = _turn_calls(ws, run_id)
    per_call, spec, drift = _turn_quality(ws, run_id, quality)
    rows: list[dict[str, Any]] = []
    for (session_id, model_id, repeat), group in turns.groupby(["session_id", "model_id", "repeat"], sort=True):
        group = group.sort_values("turn")
        if (group["status"] == CallStatus.NOT_APPLICABLE).all():
            continue
        done = group[group["status"] == CallStatus.COMPLETED]
        complete = len(done) == len(group)
        last = group.iloc[-1]
        q = [per_call.get(c) for c in done["call_id"]]
        q = [v for v in q if v is not None and not pd.isna(v)]
        final = per_call.get(last["call_id"]) if complete else None
        rows.append(
            {
                "session_id": session_id,
                "model_id": model_id,
                "provider": last["provider"],
                "repeat": int(repeat),
                "operation": group.iloc[0]["operation"],
                "category": group.iloc[0]["category"],
                "turns": len(group),
                "turns_completed": len(done),
                "complete": complete,
                "final_quality": float(final) if final is not None and not pd.isna(final) else math.nan,
                "mean_quality": float(np.mean(q)) if q else math.nan,
                "drift_ssim": float(drift.get(last["call_id"], math.nan)) if complete else math.nan,
                "cost_usd": _session_cost(group),
                "latency_ms": float(done["total_ms"].sum()) if complete else math.nan,
            }
        )
    df = pd.DataFrame(rows, columns=SESSION_COLUMNS)
    df.attrs.update(run_id=run_id, quality=spec.as_dict(), unit="session")
    return df


def quality_by_turn(ws: Workspace, run_id: str, quality: QualityLike = DEFAULT_QUALITY) -> pd.DataFrame:
    """Mean quality per model and turn (rows: models, columns: turn 1, 2, …): where a model starts to drift."""
    turns = _turn_calls(ws, run_id)
    per_call, spec, _ = _turn_quality(ws, run_id, quality)
    turns = turns.assign(quality=turns["call_id"].map(per_call))
    table = turns.pivot_table(index="model_id", columns="turn", values="quality", aggfunc="mean")
    table.attrs.update(run_id=run_id, quality=spec.as_dict())
    return table


def session_quality(ws: Workspace, run_id: str, quality: QualityLike = DEFAULT_QUALITY) -> pd.DataFrame:
    """Per (model, session) final-turn quality, shaped like :func:`evalkit.decide.tables.case_quality` (the
    session id as ``case_id``): the paired comparisons of the tier rule run on sessions with it."""
    s = session_table(ws, run_id, quality)
    s = s[s["final_quality"].notna()]
    per = (
        s.groupby(["model_id", "session_id", "operation", "category"], sort=False)["final_quality"]
        .agg(value="mean", n_scored="count")
        .reset_index()
        .rename(columns={"session_id": "case_id"})
    )
    return per[["model_id", "case_id", "operation", "category", "value", "n_scored"]]


def session_model_table(
    ws: Workspace, run_id: str, *, quality: QualityLike = DEFAULT_QUALITY, by: str | None = None
) -> pd.DataFrame:
    """:func:`evalkit.decide.tables.model_table` with a session as the unit (see the module docstring)."""
    from evalkit.decide.tables import _value_note, bootstrap_ci, model_table, percentile

    template = model_table(ws, run_id, quality=quality, by=by).iloc[0:0]
    s = session_table(ws, run_id, quality)
    keys = ["model_id"] + ([by] if by else [])
    rows = []
    for key, g in s.groupby(keys, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        done = g[g["complete"]]
        finals = done["final_quality"].dropna().to_numpy(dtype=float)
        lo, hi = bootstrap_ci(finals)
        q = float(finals.mean()) if finals.size else math.nan
        cost = math.fsum(g["cost_usd"]) / len(g) if len(g) else math.nan
        rows.append(
            dict(zip(keys, key, strict=True))
            | {
                "provider": g["provider"].iloc[0],
                "calls": len(g),
                "completed": len(done),
                "failed": len(g) - len(done),
                "not_applicable": 0,
                "success_rate": len(done) / len(g),
                "mean_cost_usd": cost,
                "total_cost_usd": math.fsum(g["cost_usd"]),
                "p50_total_ms": percentile(done["latency_ms"], 50),
                "p95_total_ms": percentile(done["latency_ms"], 95),
                "p50_inference_ms": math.nan,
                "p95_inference_ms": math.nan,
                "quality": q,
                "quality_ci_low": lo,
                "quality_ci_high": hi,
                "quality_n": int(finals.size),
                "unscored": int(len(done) - finals.size),
                "value_per_usd": q / cost if finals.size and cost > 0 else math.nan,
                "value_note": _value_note(q, cost),
                "mean_turn_quality": float(g["mean_quality"].mean()),
                "drift_ssim": float(done["drift_ssim"].mean()) if len(done) else math.nan,
            }
        )
    df = pd.DataFrame(rows, columns=[*template.columns, "mean_turn_quality", "drift_ssim"])
    higher = bool(template.attrs.get("quality", {}).get("higher_is_better", True))
    df = df.sort_values(["quality", "model_id"], ascending=[not higher, True], na_position="last", kind="stable")
    df = df.reset_index(drop=True)
    df.attrs.update(template.attrs)
    df.attrs["unit"] = "session"
    return df


def _session_cost(turns: pd.DataFrame) -> float:
    """What a session cost: the sum over its attempted turns, unknown (NaN) when any attempted turn's cost is
    unknown — never $0 for a price nobody reported. Turns never sent (not reached, still planned) cost nothing."""
    attempted = turns[turns["status"].isin([str(s) for s in ATTEMPTED_STATUSES])]["cost_usd"]
    if attempted.isna().any():
        return math.nan
    return math.fsum(attempted.astype(float))
