"""How :class:`~evalkit.decide.trends.Trends` is shown: the per-run series with intervals, the JSON object
and the terminal table (grouped by model so that it fits 100 columns without cutting a model id).

``trends`` imports this module, so it takes its ``Trends`` and ``Row`` without importing their types."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from evalkit.decide import _trend_tests as T
from evalkit.decide.tables import SIMULATED_NOTE, percentile

SERIES_COLUMNS = ["run_id", "created_at", "model", "metric", "value", "ci_low", "ci_high", "n", "flagged", "alarm"]


def _num(v: Any) -> float | None:
    if v is None:
        return None
    f = float(v)
    return f if math.isfinite(f) else None


def _one(metric: str, calls: T.ModelCalls, quality: pd.DataFrame, model: str, n_boot: int, rng) -> tuple:
    _, column, q = T.METRICS[metric]
    if metric in T.LATENCY:
        v = getattr(calls, column)
        value = percentile(v, float(q or 50))
        if v.size < 2:
            return (value, math.nan, math.nan, int(v.size))
        lo, hi = T._interval(T._resampled_percentile(v, float(q or 50), n_boot, rng))
        return (value, lo, hi, int(v.size))
    if metric == "quality":
        v = quality[quality["model_id"] == model]["value"].to_numpy(dtype=float)
        if v.size == 0:
            return (math.nan, math.nan, math.nan, 0)
        lo, hi = (math.nan, math.nan)
        if v.size > 1:
            lo, hi = T._interval(v[rng.integers(0, v.size, size=(n_boot, v.size))].mean(axis=1))
        return (float(v.mean()), lo, hi, int(v.size))
    if metric == "cost":
        p = calls.prices
        c = math.fsum(p) / p.size if p.size else math.nan
        return (c, c, c, int(p.size))
    n = calls.attempted
    if n == 0:
        return (math.nan, math.nan, math.nan, 0)
    rate = calls.completed / n
    lo, hi = T._interval(rng.binomial(n, rate, n_boot) / n)
    return (rate, lo, hi, n)


def series(tr: Any) -> pd.DataFrame:
    """One row per run × model × metric: value, 95 % bootstrap interval, n; ``flagged`` / ``alarm`` mark the
    latest run's reported changes and alarms."""
    rng = np.random.default_rng(tr.seed + 1)
    models = list(dict.fromkeys(r.model for r in tr.rows))
    metrics = list(dict.fromkeys(r.metric for r in tr.rows))
    flagged = {(r.model, r.metric) for r in tr.changes}
    alarms = {(r.model, r.metric) for r in tr.rows if r.alarm}
    rows = []
    for run in tr.runs:
        for model in models:
            for metric in metrics:
                v, lo, hi, n = _one(metric, run.of(model), run.quality, model, tr.n_boot, rng)
                rows.append(
                    [
                        run.run_id,
                        run.created_at,
                        model,
                        metric,
                        v,
                        lo,
                        hi,
                        n,
                        run.run_id == tr.latest and (model, metric) in flagged,
                        run.run_id == tr.latest and (model, metric) in alarms,
                    ]
                )
    return pd.DataFrame(rows, columns=SERIES_COLUMNS)


def _row_dict(r: Any) -> dict[str, Any]:
    t = r.test
    return {
        "model": r.model,
        "metric": r.metric,
        "kind": r.kind,
        "significant": r.significant,
        "over_min_effect": r.over_min_effect,
        "alarm": r.alarm,
        "verdict": r.verdict,
        "baseline": _num(t.baseline),
        "latest": _num(t.latest),
        "change": _num(t.change),
        "change_unit": _unit(r.metric),
        "ci": [_num(t.ci[0]), _num(t.ci[1])],
        "p_value": _num(t.p_value),
        "q_value": _num(r.q_value),
        "test": t.test,
        "n_baseline": t.n_baseline,
        "n_latest": t.n_latest,
    }


def _unit(metric: str) -> str:
    return {"success": "rate difference (0-1)", "quality": "score difference"}.get(metric, "relative (0.2 = +20%)")


def to_dict(tr: Any) -> dict[str, Any]:
    s = series(tr)
    s = s.astype(object).where(s.notna(), None)
    return {
        "suite": tr.suite,
        "latest_run": tr.latest,
        "baseline_runs": [r.run_id for r in tr.runs[:-1]],
        "simulated": tr.simulated,
        "skipped": tr.skipped,
        "quality": tr.quality.as_dict() if tr.quality else None,
        "q": tr.q,
        "min_effect": tr.min_effect,
        "cost_tolerance": tr.cost_tolerance,
        "notes": tr.notes,
        "changes": [_row_dict(r) for r in tr.changes],
        "rows": [_row_dict(r) for r in tr.rows],
        "series": s.to_dict(orient="records"),
        "exit_code": tr.exit_code(),
    }


def fmt_value(metric: str, v: float) -> str:
    if v is None or not math.isfinite(v):
        return "—"
    if metric in ("latency_p50", "latency_p95", "inference_p50"):
        return f"{v:,.0f} ms"
    if metric == "cost":
        return f"${v:.4f}"
    if metric == "success":
        return f"{v:.1%}"
    return f"{v:.3g}"


def fmt_change(metric: str, t: T.Test) -> str:
    if not math.isfinite(t.change):
        return "—"
    if metric == "success":
        one = lambda x: f"{x * 100:+.1f}"  # noqa: E731
        unit = " pp"
    elif metric == "quality":
        one = lambda x: f"{x:+.2f}"  # noqa: E731
        unit = ""
    else:
        if math.isinf(t.change):
            return "new cost"
        one = lambda x: f"{x * 100:+.1f}"  # noqa: E731
        unit = "%"
    ci = "" if metric == "cost" or not all(math.isfinite(x) for x in t.ci) else f" [{one(t.ci[0])}, {one(t.ci[1])}]"
    return f"{one(t.change)}{unit}{ci}"


def render(tr: Any) -> str:
    """A plain-text report for terminals and cron mail (every line ≤ 100 columns)."""
    n_base = len(tr.runs) - 1
    lines = [
        f"evalkit trends: suite {tr.suite} — latest {tr.latest} vs {n_base} earlier run(s)"
        + (f"; quality = {tr.quality.label}" if tr.quality else "")
    ]
    if tr.simulated:
        lines.append(SIMULATED_NOTE)
    head = ["metric", "baseline", "latest", "change [95% CI]", "q", "verdict"]
    models = list(dict.fromkeys(r.model for r in tr.rows))
    body = {
        m: [
            [
                r.metric,
                fmt_value(r.metric, r.test.baseline),
                fmt_value(r.metric, r.test.latest),
                fmt_change(r.metric, r.test),
                "exact"
                if r.metric == "cost" and r.verdict not in ("no data", "no baseline")
                else ("—" if r.q_value is None else f"{r.q_value:.2g}"),
                r.verdict,
            ]
            for r in tr.rows
            if r.model == m
        ]
        for m in models
    }
    every = [head] + [row for rows in body.values() for row in rows]
    widths = [max(len(x[i]) for x in every) for i in range(len(head))]

    def line(cells: list[str]) -> str:
        return ("  " + "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True))).rstrip()

    lines.append(line(head))
    for m in models:
        lines.append(m)
        lines += [line(row) for row in body[m]]
    if tr.skipped:
        lines.append(f"skipped {len(tr.skipped)} run(s):")
        lines += [f"  {s['run_id']}: {s['reason']}" for s in tr.skipped]
    lines += [f"note: {n}" for n in tr.notes]
    alarms = [r for r in tr.rows if r.alarm]
    n_tests = sum(r.q_value is not None for r in tr.rows)
    e = tr.min_effect
    lines.append(f"significant: q ≤ {tr.q:g} (Benjamini–Hochberg over {n_tests} tests)")
    lines.append(
        f"alarm: a significant regression of at least latency +{e['latency_p95']:.0%}, success "
        f"{e['success'] * 100:+.0f} pp, quality {e['quality']:+g}; cost ±{tr.cost_tolerance:.0%}"
    )
    if alarms:
        lines.append(f"{len(alarms)} regression(s):")
        lines += [
            f"  - {r.model}: {T.METRICS[r.metric][0]} {fmt_value(r.metric, r.test.baseline)} → "
            f"{fmt_value(r.metric, r.test.latest)} ({fmt_change(r.metric, r.test)})"
            for r in alarms
        ]
    else:
        lines.append("no regressions")
    return "\n".join(lines)
