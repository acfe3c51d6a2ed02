"""Cost–quality tables, Pareto fronts and failure tables over one run of a workspace.

Every number here is derived from the workspace (``Workspace.calls`` and ``Workspace.scores``) by the
rules below, so a reader can recompute any cell by hand:

* **calls** = calls that were attempted: status ``completed``, ``failed`` or ``unknown`` (an unknown
  outcome is a submit whose fate is unknown: it counts against the model like a failure, since a
  product would have had no image either). ``not_applicable`` calls (the model cannot do the
  operation) and calls never run (``planned`` — e.g. a budget stop) are not attempts; the first are
  counted in ``not_applicable``.
* **success_rate** = completed / calls (NaN without attempts).
* **mean_cost_usd** = mean list price (``price_usd``) of the attempted calls whose price is known —
  what one edit request costs. NaN when no price is known ("price unknown").
  **total_cost_usd** = sum of ``cost_usd`` over the group's calls: what this run actually paid
  (0 for calls served from the cache; unknown costs are left out of the sum).
* **Latency** percentiles (``p50_total_ms``, ``p95_total_ms``, ``p50_inference_ms``,
  ``p95_inference_ms``) are over completed calls with a value, by ``numpy.percentile`` with its
  default ``linear`` method (Hyndman & Fan type 7: p = x[k] + (x[k+1]-x[k])·f at rank (n-1)·q).
* **quality** uses one score: a metric from one source at one version (:class:`QualitySpec`). When no
  version is named, the one written most recently for that metric and source is used (a re-score
  supersedes an older one); the table's ``attrs["quality"]`` records which. Per case, a model's
  quality is the mean of its scored calls (repeats); ``quality`` is the mean over cases, so each
  case weighs the same, and ``quality_n`` is the number of cases. The 95% interval
  (``quality_ci_low``/``quality_ci_high``) is a percentile bootstrap over cases
  (``scipy.stats.bootstrap``, ``N_BOOTSTRAP`` resamples, seed ``BOOTSTRAP_SEED`` — deterministic);
  NaN with fewer than two cases.
* **unscored** = completed calls of the group without a scored value for that quality (an
  ``unscored`` row, e.g. a judge reply that did not parse, or no row at all).
* **value_per_usd** = quality / mean_cost_usd. It is undefined (NaN) for free models (cost 0) and for
  unknown prices, and ``value_note`` says which — it is never a division by zero.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from typing import Any, Final

import numpy as np
import pandas as pd
from scipy import stats

from evalkit.decide.quality import (
    DEFAULT_QUALITY,
    QualityLike,
    QualitySpec,
    resolve_quality,
    scored_values,
)
from evalkit.errors import InvalidInputError
from evalkit.store import ATTEMPTED_STATUSES, CallStatus, Workspace

SIMULATED_NOTE = "SIMULATED — local server outputs, not model outputs"
#: calls that ended badly: failed, or with an unknown outcome
FAILED_STATUSES = (CallStatus.FAILED, CallStatus.UNKNOWN)
N_BOOTSTRAP = 2000
BOOTSTRAP_SEED = 0
PERCENTILE_METHOD: Final = "linear"
GROUPINGS = (None, "operation", "category")


def run_is_simulated(ws: Workspace, run_id: str, calls: pd.DataFrame | None = None) -> bool:
    """A run is simulated when the run says so or any of its calls came from a local server."""
    if bool(ws.get_run(run_id).get("simulated")):
        return True
    calls = ws.calls(run_id) if calls is None else calls
    return bool(calls["simulated"].any()) if len(calls) else False


def bootstrap_ci(
    values: Sequence[float], *, n_resamples: int = N_BOOTSTRAP, seed: int = BOOTSTRAP_SEED, confidence: float = 0.95
) -> tuple[float, float]:
    """Percentile-bootstrap interval of the mean (NaN, NaN with fewer than two values)."""
    arr = np.asarray(list(values), dtype=float)
    if arr.size < 2:
        return (math.nan, math.nan)
    if np.all(arr == arr[0]):
        return (float(arr[0]), float(arr[0]))
    res = stats.bootstrap(
        (arr,),
        np.mean,
        n_resamples=n_resamples,
        confidence_level=confidence,
        method="percentile",
        rng=np.random.default_rng(seed),
        vectorized=True,
    )
    return (float(res.confidence_interval.low), float(res.confidence_interval.high))


def percentile(values: Iterable[float], q: float) -> float:
    """numpy's default (linear, type 7) percentile of the non-missing values; NaN when there are none."""
    arr = np.asarray([v for v in values if v is not None and not pd.isna(v)], dtype=float)
    return float(np.percentile(arr, q, method=PERCENTILE_METHOD)) if arr.size else math.nan


def case_quality(
    ws: Workspace, run_id: str, quality: QualityLike = DEFAULT_QUALITY, scores: pd.DataFrame | None = None
) -> tuple[pd.DataFrame, QualitySpec]:
    """Per (model, case) quality: the mean over the case's scored calls (repeats).

    Returns ``(frame, spec)``; the frame has columns model_id, case_id, operation, category, value,
    n_scored. Used for the table's intervals and for paired comparisons between models.
    """
    scores = ws.scores(run_id) if scores is None else scores
    spec = resolve_quality(scores, quality)
    rows = scored_values(scores, spec)
    cols = ["model_id", "case_id", "operation", "category", "value", "n_scored"]
    if rows.empty:
        return pd.DataFrame(columns=cols), spec
    rows = rows.assign(category=rows["category"].fillna(""))
    per_case = (
        rows.groupby(["model_id", "case_id", "operation", "category"], sort=False)["value"]
        .agg(value="mean", n_scored="count")
        .reset_index()
    )
    return per_case[cols], spec


def _mean_or_nan(s: pd.Series) -> float:
    """Mean with a correctly rounded sum (math.fsum), so eleven $0.04 calls average exactly $0.04."""
    s = s.dropna()
    return math.fsum(s.astype(float)) / len(s) if len(s) else math.nan


def _value_note(quality: float, cost: float) -> str:
    if pd.isna(quality):
        return "no scored quality"
    if pd.isna(cost):
        return "undefined: price unknown"
    if cost == 0:
        return "undefined: free model (cost $0)"
    return ""


def model_table(
    ws: Workspace,
    run_id: str,
    *,
    quality: QualityLike = DEFAULT_QUALITY,
    by: str | None = None,
    n_bootstrap: int = N_BOOTSTRAP,
    seed: int = BOOTSTRAP_SEED,
) -> pd.DataFrame:
    """One row per model (and operation or category when ``by`` is given); see the module docstring.

    ``attrs`` carries ``run_id``, ``quality`` (metric, source, version, higher_is_better),
    ``simulated`` and ``by``, so plots and reports can label themselves.
    """
    if by not in GROUPINGS:
        raise InvalidInputError(f"by must be one of None, 'operation', 'category', got {by!r}")
    calls = ws.calls(run_id)
    scores = ws.scores(run_id)
    per_case, spec = case_quality(ws, run_id, quality, scores=scores)
    scored = scored_values(scores, spec)
    scored_calls = set(scored["call_id"])
    keys = ["model_id"] + ([by] if by else [])
    calls = calls.assign(category=calls["category"].fillna(""))
    rows: list[dict[str, Any]] = []
    for key, group in calls.groupby(keys, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        status = group["status"]
        attempted = group[status.isin(ATTEMPTED_STATUSES)]
        completed = group[status == CallStatus.COMPLETED]
        n_calls, n_done = len(attempted), len(completed)
        row: dict[str, Any] = dict(zip(keys, key, strict=True))
        row["provider"] = str(group["provider"].iloc[0])
        mask = pd.Series(True, index=per_case.index)
        for k, v in zip(keys, key, strict=True):
            mask &= per_case[k] == v
        case_values = per_case.loc[mask, "value"].to_numpy(dtype=float)
        q_mean = float(case_values.mean()) if case_values.size else math.nan
        lo, hi = bootstrap_ci(case_values, n_resamples=n_bootstrap, seed=seed)
        mean_cost = _mean_or_nan(attempted["price_usd"])
        row.update(
            calls=n_calls,
            completed=n_done,
            failed=int(attempted["status"].isin(FAILED_STATUSES).sum()),
            not_applicable=int((status == CallStatus.NOT_APPLICABLE).sum()),
            success_rate=(n_done / n_calls) if n_calls else math.nan,
            mean_cost_usd=mean_cost,
            total_cost_usd=math.fsum(group["cost_usd"].dropna().astype(float)),
            p50_total_ms=percentile(completed["total_ms"], 50),
            p95_total_ms=percentile(completed["total_ms"], 95),
            p50_inference_ms=percentile(completed["inference_ms"], 50),
            p95_inference_ms=percentile(completed["inference_ms"], 95),
            quality=q_mean,
            quality_ci_low=lo,
            quality_ci_high=hi,
            quality_n=int(case_values.size),
            unscored=int((~completed["call_id"].isin(scored_calls)).sum()),
            value_per_usd=(q_mean / mean_cost)
            if (not pd.isna(q_mean) and not pd.isna(mean_cost) and mean_cost > 0)
            else math.nan,
            value_note=_value_note(q_mean, mean_cost),
        )
        rows.append(row)
    columns = [
        *keys,
        "provider",
        "calls",
        "completed",
        "failed",
        "not_applicable",
        "success_rate",
        "mean_cost_usd",
        "total_cost_usd",
        "p50_total_ms",
        "p95_total_ms",
        "p50_inference_ms",
        "p95_inference_ms",
        "quality",
        "quality_ci_low",
        "quality_ci_high",
        "quality_n",
        "unscored",
        "value_per_usd",
        "value_note",
    ]
    df = pd.DataFrame(rows, columns=columns)
    sort_by = ([by] if by else []) + ["quality", "model_id"]
    ascending = ([True] if by else []) + [not spec.higher_is_better, True]
    df = df.sort_values(sort_by, ascending=ascending, na_position="last", kind="stable").reset_index(drop=True)
    df.attrs.update(
        run_id=run_id,
        quality=spec.as_dict(),
        simulated=run_is_simulated(ws, run_id, calls),
        by=by,
        percentile_method=PERCENTILE_METHOD,
        n_bootstrap=n_bootstrap,
        bootstrap_seed=seed,
    )
    return df


#: what a missing value looks like in a colour-scaled column: no colour (a gradient's "bad" colour is black)
NEUTRAL_CELL_CSS = "background-color: transparent; color: #777"


def style_table(df: pd.DataFrame) -> Any:
    """A pandas Styler for notebooks: money, ms and rates formatted; bars on quality, gradients on cost
    and p95 latency; the simulated warning as the caption. Missing values show "—" without colour.
    (HTML output; needs jinja2.)"""
    fmt = {
        "success_rate": "{:.0%}",
        "mean_cost_usd": "${:.4f}",
        "total_cost_usd": "${:.2f}",
        "p50_total_ms": "{:,.0f}",
        "p95_total_ms": "{:,.0f}",
        "p50_inference_ms": "{:,.0f}",
        "p95_inference_ms": "{:,.0f}",
        "quality": "{:.3f}",
        "quality_ci_low": "{:.3f}",
        "quality_ci_high": "{:.3f}",
        "value_per_usd": "{:,.1f}",
    }
    from matplotlib import colormaps

    def scale(name: str) -> Any:  # missing values get white, not the colour map's default "bad" black
        return colormaps[name].with_extremes(bad="white")

    styler = df.style.format({k: v for k, v in fmt.items() if k in df.columns}, na_rep="—")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns
        if "quality" in df and df["quality"].notna().any():
            styler = styler.bar(subset=["quality"], color="#8fbf8f")
        for col in ("mean_cost_usd", "p95_total_ms"):
            if col in df and df[col].notna().sum() > 1:
                styler = styler.background_gradient(subset=[col], cmap=scale("RdYlGn_r"))
        if "success_rate" in df and df["success_rate"].notna().sum() > 1:
            styler = styler.background_gradient(subset=["success_rate"], cmap=scale("RdYlGn"), vmin=0, vmax=1)
    scaled = [c for c in ("mean_cost_usd", "p95_total_ms", "success_rate") if c in df and df[c].isna().any()]
    if scaled:  # applied after the gradients, so it wins over their colour for NaN
        styler = styler.map(lambda v: NEUTRAL_CELL_CSS if pd.isna(v) else "", subset=scaled)
    q = df.attrs.get("quality") or {}
    caption = f"quality = {q.get('metric')} ({q.get('source')}, {q.get('version')})" if q else ""
    if df.attrs.get("simulated"):
        caption = f"{SIMULATED_NOTE}. {caption}"
    return styler.set_caption(caption) if caption else styler


def pareto_front(
    df: pd.DataFrame,
    x: str = "mean_cost_usd",
    y: str = "quality",
    *,
    minimize_x: bool = True,
    maximize_y: bool = True,
    label: str = "model_id",
) -> set[str]:
    """Labels of the rows no other row dominates (at least as good on both axes, better on one).

    Rows with a missing x or y are not on the front. Identical points are all kept. ``label`` is a
    column name (the index is used when there is no such column).
    """
    labels = df[label] if label in df.columns else pd.Series(df.index, index=df.index)
    xs = df[x].astype(float) * (1 if minimize_x else -1)
    ys = df[y].astype(float) * (-1 if maximize_y else 1)  # both axes now "smaller is better"
    ok = xs.notna() & ys.notna()
    pts = list(zip(xs[ok], ys[ok], labels[ok], strict=True))
    front = set()
    for xi, yi, name in pts:
        dominated = any(xj <= xi and yj <= yi and (xj < xi or yj < yi) for xj, yj, _ in pts)
        if not dominated:
            front.add(str(name))
    return front


# -- cells for grids and widgets -----------------------------------------------------------------------


def format_usd(v: float | None) -> str:
    if v is None or pd.isna(v):
        return "price ?"
    if v == 0:
        return "free"
    return f"${v:.3f}" if v >= 0.001 else f"${v:.5f}"


def format_ms(v: float | None) -> str:
    if v is None or pd.isna(v):
        return "— ms"
    return f"{v:.0f} ms" if v < 1000 else f"{v / 1000:.1f} s"


def format_score(v: float | None, spec: QualitySpec) -> str:
    return f"{spec.metric} —" if v is None or pd.isna(v) else f"{spec.metric} {v:.3g}"


def _short(text: Any, n: int = 48) -> str:
    s = " ".join(str(text or "").split())
    return s if len(s) <= n else s[: n - 1] + "…"


def comparison_cells(
    ws: Workspace,
    run_id: str,
    *,
    cases: Sequence[str] | None = None,
    models: Sequence[str] | None = None,
    quality: QualityLike = DEFAULT_QUALITY,
) -> pd.DataFrame:
    """One row per (case, model) for grids: the call shown, its state and a one-line caption.

    The call shown is the completed one with the lowest repeat, else the lowest repeat. ``state`` is
    ``ok`` | ``failed`` (error category in ``error_category``) | ``not_applicable`` (``reason``) |
    ``unknown`` (outcome unknown) | ``not_run`` (planned, never executed) | ``missing`` (no call).
    """
    calls = ws.calls(run_id)
    case_frame = ws.cases(run_id)
    scores = ws.scores(run_id)
    spec = resolve_quality(scores, quality)
    score_by_call = scored_values(scores, spec).groupby("call_id")["value"].mean().to_dict()
    all_cases = list(case_frame["case_id"]) if len(case_frame) else list(dict.fromkeys(calls["case_id"]))
    run_models = [m for m in ws.get_run(run_id)["models"] if m in set(calls["model_id"])]
    all_models = run_models + [m for m in dict.fromkeys(calls["model_id"]) if m not in run_models]
    case_list = _check_subset(cases, all_cases, "case")
    model_list = _check_subset(models, all_models, "model")
    calls = calls.assign(_done=(calls["status"] != CallStatus.COMPLETED).astype(int)).sort_values(
        ["_done", "repeat"], kind="stable"
    )
    chosen = calls.drop_duplicates(["case_id", "model_id"], keep="first").set_index(["case_id", "model_id"])
    rows = []
    for case_id in case_list:
        for model_id in model_list:
            row: dict[str, Any] = {"case_id": case_id, "model_id": model_id}
            if (case_id, model_id) not in chosen.index:
                rows.append(row | {"state": "missing", "caption": "no call"})
                continue
            c = chosen.loc[(case_id, model_id)]
            status = c["status"]
            state = {
                CallStatus.COMPLETED: "ok",
                CallStatus.FAILED: "failed",
                CallStatus.NOT_APPLICABLE: "not_applicable",
                CallStatus.UNKNOWN: "unknown",
            }.get(status, "not_run")
            score = score_by_call.get(c["call_id"], math.nan)
            if state == "ok":
                cached = " (cached)" if c["cost_source"] == "cache" else ""
                caption = (
                    f"{format_usd(c['price_usd'])}{cached} · {format_ms(c['total_ms'])} · {format_score(score, spec)}"
                )
            elif state == "failed":
                caption = f"failed: {c['error_category'] or 'unknown error'}"
            elif state == "not_applicable":
                caption = f"n/a: {_short(c['reason'] or 'not supported', 40)}"
            elif state == "unknown":
                caption = "unknown outcome (not re-sent)"
            else:
                caption = f"not run ({status})"
            rows.append(
                row
                | {
                    "call_id": c["call_id"],
                    "state": state,
                    "status": status,
                    "price_usd": c["price_usd"],
                    "cost_usd": c["cost_usd"],
                    "total_ms": c["total_ms"],
                    "score": score,
                    "error_category": c["error_category"],
                    "error_message": c["error_message"],
                    "reason": c["reason"],
                    "output_path": c["output_path"],
                    "caption": caption,
                }
            )
    columns = [
        "case_id",
        "model_id",
        "call_id",
        "state",
        "status",
        "price_usd",
        "cost_usd",
        "total_ms",
        "score",
        "error_category",
        "error_message",
        "reason",
        "output_path",
        "caption",
    ]
    df = pd.DataFrame(rows, columns=columns)
    df.attrs.update(
        run_id=run_id,
        quality=spec.as_dict(),
        simulated=run_is_simulated(ws, run_id),
        cases=case_list,
        models=model_list,
    )
    return df


def _check_subset(wanted: Sequence[str] | None, known: list[str], what: str) -> list[str]:
    if wanted is None:
        return known
    wanted = [wanted] if isinstance(wanted, str) else list(wanted)
    unknown = [w for w in wanted if w not in known]
    if unknown:
        raise InvalidInputError(f"unknown {what}(s) {unknown} in this run", hint=f"known: {', '.join(known[:20])}")
    return wanted


def failure_table(ws: Workspace, run_id: str) -> pd.DataFrame:
    """Failures per model and error category: count, share of the model's attempts, one example message."""
    calls = ws.calls(run_id)
    attempts = calls[calls["status"].isin(ATTEMPTED_STATUSES)].groupby("model_id").size()
    failed = calls[calls["status"].isin(FAILED_STATUSES)]
    failed = failed.assign(error_category=failed["error_category"].fillna("unknown_error"))
    cols = ["model_id", "error_category", "failures", "share_of_calls", "example"]
    if failed.empty:
        return pd.DataFrame(columns=cols)
    out = (
        failed.groupby(["model_id", "error_category"])
        .agg(
            failures=("call_id", "size"),
            example=("error_message", lambda s: _short(s.dropna().iloc[0], 120) if s.notna().any() else ""),
        )
        .reset_index()
    )
    out["share_of_calls"] = out["failures"] / out["model_id"].map(attempts)
    return out.sort_values(["failures", "model_id"], ascending=[False, True]).reset_index(drop=True)[cols]


__all__ = [
    "SIMULATED_NOTE",
    "case_quality",
    "model_table",
    "style_table",
    "pareto_front",
    "bootstrap_ci",
    "percentile",
    "run_is_simulated",
    "comparison_cells",
    "failure_table",
    "format_usd",
    "format_ms",
]
