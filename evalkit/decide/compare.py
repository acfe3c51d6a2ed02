"""Run-to-run drift checks: compare a scheduled run with an earlier one and flag regressions.

A nightly job runs the same suite, then asks "did any model get slower, dearer, flakier or worse since
the last run?" :func:`compare_runs` answers per model present in both runs, and
:meth:`Comparison.exit_code` is 1 when a threshold is crossed, so cron or CI can alert on it.

Metrics (per model, from the workspace; the runs may share one workspace):

* ``latency_p50`` / ``latency_p95`` — percentiles of ``total_ms`` (submit → image downloaded) over
  completed calls, numpy's linear method as in :mod:`evalkit.decide.tables`;
* ``cost`` — mean billed ``cost_usd`` per attempted call with a known cost;
* ``success`` — completed / attempted (completed, failed, unknown outcome), 0–1;
* ``quality`` — mean over cases of the per-case mean score (:func:`evalkit.decide.tables.case_quality`).

Next to the per-model table, each run's totals: what generation cost (the calls' billed ``cost_usd``) and
what judging it cost (the usage ledger's judge requests for the run; :attr:`Comparison.costs`).

Calls served from the request cache are left out of latency, cost and success: they copy an earlier
run's result, so they would hide exactly the drift this looks for. Schedule runs with ``--no-cache``.

Thresholds (``parse_fail_on``): ``"latency_p95=+20%,cost=+10%,success=-0.05,quality=-0.3"``. The sign
says which direction is a regression; ``%`` is relative to the base run's value, a bare number is an
absolute change in the metric's unit (ms, USD, a 0–1 rate, the quality's scale), ``pp`` is percentage
points (success only). A model crosses a threshold when its change goes *beyond* it in that direction.
"""

from __future__ import annotations

import difflib
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from evalkit.decide.quality import (
    AUTO_QUALITY,
    JUDGE_QUALITY,
    QualityLike,
    QualitySpec,
    as_quality,
    resolve_quality,
    scored_values,
)
from evalkit.decide.tables import (
    case_quality,
    percentile,
    run_is_simulated,
)
from evalkit.errors import InvalidInputError
from evalkit.store import ATTEMPTED_STATUSES, CallStatus, Workspace

METRICS = {
    "latency_p50": ("p50 latency", "ms"),
    "latency_p95": ("p95 latency", "ms"),
    "cost": ("mean cost per call", "USD"),
    "success": ("success rate", "rate"),
    "quality": ("quality", "score"),
}
ALIASES = {"success_rate": "success", "p50": "latency_p50", "p95": "latency_p95", "cost_usd": "cost"}
#: a reasonable nightly gate (the CLI's default is the caller's choice; see docs/scheduling.md)
SUGGESTED_FAIL_ON = "latency_p95=+25%,cost=+10%,success=-0.05,quality=-5%"
PREVIOUS = ("previous", "latest-before")
_SPEC = re.compile(r"^([+-])\s*(\d+(?:\.\d*)?|\.\d+)\s*(%|pp)?$")


@dataclass(frozen=True)
class Threshold:
    """A regression limit on one metric: ``change`` is signed (its sign is the bad direction)."""

    metric: str
    change: float
    unit: str = "abs"  # "%" (relative to the base value) | "abs" (metric's unit) | "pp" (percentage points)

    @property
    def limit(self) -> float:
        """The change in the comparison's terms: percent for ``%``, else absolute (pp → a 0–1 rate)."""
        return self.change / 100.0 if self.unit == "pp" else self.change

    def crossed(self, base: float, new: float) -> bool | None:
        """True when ``base → new`` goes beyond the limit; None when it cannot be judged (a value missing)."""
        if base is None or new is None or pd.isna(base) or pd.isna(new):
            return None
        delta = _pct(base, new) if self.unit == "%" else new - base
        if pd.isna(delta):
            return None
        return delta > self.limit if self.change > 0 else delta < self.limit

    def describe(self) -> str:
        sign = "+" if self.change > 0 else "-"
        unit = {"%": "%", "pp": " pp", "abs": ""}[self.unit]
        return f"{self.metric} {sign}{abs(self.change):g}{unit}"


def _pct(base: float, new: float) -> float:
    if base == 0:
        return 0.0 if new == 0 else math.copysign(math.inf, new)
    return (new - base) / abs(base) * 100.0


def parse_fail_on(spec: str) -> dict[str, Threshold]:
    """``"latency_p95=+20%,cost=+10%,success=-5%,quality=-0.3"`` → {metric: Threshold}."""
    if not isinstance(spec, str) or not spec.strip():
        raise InvalidInputError("empty --fail-on spec", hint=f"e.g. {SUGGESTED_FAIL_ON}")
    out: dict[str, Threshold] = {}
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        name, eq, value = part.partition("=")
        name = ALIASES.get(name.strip(), name.strip())
        if not eq:
            raise InvalidInputError(f"bad threshold {part!r}: expected METRIC=CHANGE", hint=f"e.g. {SUGGESTED_FAIL_ON}")
        if name not in METRICS:
            close = difflib.get_close_matches(name, list(METRICS), n=1)
            raise InvalidInputError(
                f"unknown metric {name!r} in {part!r}",
                hint=(f"did you mean {close[0]!r}? " if close else "") + f"metrics: {', '.join(METRICS)}",
            )
        m = _SPEC.match(value.strip())
        if not m:
            hint = (
                "start with + or -: the sign says which direction is a regression"
                if re.match(r"^\d", value.strip())
                else "write e.g. +20% (relative), -0.05 (absolute) or -5pp"
            )
            raise InvalidInputError(f"bad change {value.strip()!r} for {name}", hint=hint)
        sign, number, unit = m.groups()
        amount = float(number)
        if amount == 0:
            raise InvalidInputError(f"a zero change for {name} flags every run", hint="use a non-zero limit, e.g. +10%")
        if unit == "pp" and name != "success":
            raise InvalidInputError(
                f"pp (percentage points) only applies to success, not {name}",
                hint="use % (relative) or an absolute number",
            )
        if name in out:
            raise InvalidInputError(f"{name} is given twice in {spec!r}")
        out[name] = Threshold(name, amount if sign == "+" else -amount, unit or "abs")
    if not out:
        raise InvalidInputError("empty --fail-on spec", hint=f"e.g. {SUGGESTED_FAIL_ON}")
    return out


@dataclass(frozen=True)
class Breach:
    model_id: str
    metric: str
    base: float
    new: float
    delta: float
    delta_pct: float
    threshold: Threshold

    def describe(self) -> str:
        return (
            f"{self.model_id}: {self.metric} {_fmt(self.metric, self.base)} → {_fmt(self.metric, self.new)} "
            f"({_change(self.delta, self.delta_pct, self.metric)}; limit {self.threshold.describe()})"
        )


@dataclass
class Comparison:
    base_run: str
    new_run: str
    #: one row per (model in both runs, metric): base, new, delta, delta_pct, n_base, n_new, threshold, breached
    table: pd.DataFrame
    breaches: list[Breach] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    quality: QualitySpec | None = None
    thresholds: dict[str, Threshold] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    simulated: bool = False
    #: per run id: generation_usd (billed calls), judging_usd (judge requests), judge_requests,
    #: judge_unknown_cost (judge requests without a known cost)
    costs: dict[str, dict[str, Any]] = field(default_factory=dict)

    def exit_code(self) -> int:
        """1 when any threshold is crossed (for cron/CI alerts), else 0."""
        return 1 if self.breaches else 0

    def to_dict(self) -> dict[str, Any]:
        rows = self.table.replace({np.nan: None, np.inf: None, -np.inf: None}).to_dict(orient="records")
        return {
            "base_run": self.base_run,
            "new_run": self.new_run,
            "simulated": self.simulated,
            "quality": self.quality.as_dict() if self.quality else None,
            "thresholds": {k: t.describe() for k, t in self.thresholds.items()},
            "added": self.added,
            "removed": self.removed,
            "notes": self.notes,
            "rows": rows,
            "breaches": [b.describe() for b in self.breaches],
            "costs": self.costs,
            "exit_code": self.exit_code(),
        }

    def render(self) -> str:
        """A plain-text table for terminals and cron mail."""
        lines = [
            f"evalkit compare: base {self.base_run} → new {self.new_run}"
            + (f" (quality = {self.quality.label})" if self.quality else "")
        ]
        if self.simulated:
            lines.append("SIMULATED — local server outputs, not model outputs")
        for role, rid in (("base", self.base_run), ("new", self.new_run)):
            c = self.costs.get(rid)
            if c is not None:
                unknown = f" + {c['judge_unknown_cost']} of unknown cost" if c["judge_unknown_cost"] else ""
                lines.append(
                    f"{role} {rid}: generation ${c['generation_usd']:.4f}, judging ${c['judging_usd']:.4f} "
                    f"({c['judge_requests']} judge request(s){unknown})"
                )
        header = ["model", "metric", "base", "new", "change", "limit", ""]
        body = []
        for r in self.table.itertuples():
            status = "REGRESSION" if r.breached is True else ("ok" if r.breached is False else "")
            limit = r.threshold if isinstance(r.threshold, str) else ""
            body.append(
                [
                    r.model_id,
                    r.metric,
                    _fmt(r.metric, r.base),
                    _fmt(r.metric, r.new),
                    _change(r.delta, r.delta_pct, r.metric),
                    limit,
                    status,
                ]
            )
        if body:
            widths = [max(len(str(x)) for x in col) for col in zip(header, *body, strict=True)]
            for row in [header, *body]:
                lines.append("  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)).rstrip())
        else:
            lines.append("no model is in both runs")
        if self.added:
            lines.append(f"added in {self.new_run}: {', '.join(self.added)}")
        if self.removed:
            lines.append(f"removed since {self.base_run}: {', '.join(self.removed)}")
        lines += [f"note: {n}" for n in self.notes]
        if self.breaches:
            lines.append(f"{len(self.breaches)} regression(s):")
            lines += [f"  - {b.describe()}" for b in self.breaches]
        else:
            lines.append("no regressions" if self.thresholds else "no thresholds given (--fail-on): nothing checked")
        return "\n".join(lines)


def _fmt(metric: str, v: Any) -> str:
    if v is None or pd.isna(v):
        return "—"
    if metric.startswith("latency"):
        return f"{v:,.0f} ms"
    if metric == "cost":
        return f"${v:.4f}"
    if metric == "success":
        return f"{v:.1%}"
    return f"{v:.3f}"


def _change(delta: Any, pct: Any, metric: str) -> str:
    if delta is None or pd.isna(delta):
        return "—"
    absolute = {"success": f"{delta * 100:+.1f} pp", "cost": f"{delta:+.4f} USD"}.get(
        metric, f"{delta:+,.0f} ms" if metric.startswith("latency") else f"{delta:+.3f}"
    )
    rel = "" if pct is None or pd.isna(pct) else (" (new)" if math.isinf(pct) else f" ({pct:+.1f}%)")
    return absolute + rel


def previous_run_id(ws: Workspace, run_id: str, *, same_suite: bool = True) -> str | None:
    """The latest run created before ``run_id`` (of the same suite by default): the nightly baseline."""
    runs = ws.runs()
    me = ws.get_run(run_id)
    earlier = runs[(runs["created_at"] < me["created_at"]) & (runs["run_id"] != run_id)]
    if same_suite:
        earlier = earlier[earlier["suite_name"] == me.get("suite_name")]
    return None if earlier.empty else str(earlier.sort_values("created_at")["run_id"].iloc[-1])


def model_metrics(ws: Workspace, run_id: str, quality: QualitySpec) -> pd.DataFrame:
    """Per model: latency_p50, latency_p95, cost, success, quality and the call counts behind them."""
    calls = ws.calls(run_id)
    fresh = calls[calls["cost_source"] != "cache"]
    per_case, _ = case_quality(ws, run_id, quality)
    q = per_case.groupby("model_id")["value"].agg(["mean", "count"])
    rows = []
    for model in dict.fromkeys(calls["model_id"]):
        g = fresh[fresh["model_id"] == model]
        attempted = g[g["status"].isin(ATTEMPTED_STATUSES)]
        done = g[(g["status"] == CallStatus.COMPLETED) & g["total_ms"].notna()]
        lat = done["total_ms"].to_numpy(float)
        cost = attempted["cost_usd"].dropna().astype(float)
        rows.append(
            {
                "model_id": model,
                "latency_p50": percentile(lat, 50),
                "latency_p95": percentile(lat, 95),
                "cost": math.fsum(cost) / len(cost) if len(cost) else math.nan,
                "success": (attempted["status"] == CallStatus.COMPLETED).sum() / len(attempted)
                if len(attempted)
                else math.nan,
                "quality": float(q.loc[model, "mean"]) if model in q.index else math.nan,
                "n_latency": int(lat.size),
                "n_cost": int(len(cost)),
                "n_success": int(len(attempted)),
                "n_quality": int(q.loc[model, "count"]) if model in q.index else 0,
            }
        )
    return (
        pd.DataFrame(rows).set_index("model_id")
        if rows
        else pd.DataFrame(columns=[*METRICS, "n_latency", "n_cost", "n_success", "n_quality"])
    )


_N = {
    "latency_p50": "n_latency",
    "latency_p95": "n_latency",
    "cost": "n_cost",
    "success": "n_success",
    "quality": "n_quality",
}


def compare_runs(
    ws: Workspace | str | os.PathLike | None,
    base_run: str,
    new_run: str,
    *,
    quality: QualityLike | None = None,
    fail_on: dict[str, Threshold] | str | None = None,
) -> Comparison:
    """Compare ``new_run`` with ``base_run`` per model (see the module docstring).

    ``base_run`` may be ``"previous"`` (alias ``"latest-before"``): the latest earlier run of the same
    suite. ``quality`` defaults to the judge's VIEScore when both runs have it, else SSIM (auto).
    ``fail_on``: thresholds (a dict from :func:`parse_fail_on`, or its string); None checks nothing."""
    ws = ws if isinstance(ws, Workspace) else Workspace(ws, create=False)
    ws.get_run(new_run)
    if base_run in PREVIOUS:
        found = previous_run_id(ws, new_run)
        if found is None:
            raise InvalidInputError(
                f"no run of the same suite before {new_run!r} in {ws.path}",
                hint="name the base run explicitly (`evalkit runs` lists them)",
            )
        base_run = found
    base_info = ws.get_run(base_run)
    thresholds = parse_fail_on(fail_on) if isinstance(fail_on, str) else dict(fail_on or {})
    notes: list[str] = []
    spec_base, spec_new = _shared_quality(ws, base_run, new_run, quality)
    if spec_base.version and spec_new.version and spec_base.version != spec_new.version:
        notes.append(
            f"quality versions differ ({spec_base.version} vs {spec_new.version}): scores may not be comparable"
        )
    base, new = model_metrics(ws, base_run, spec_base), model_metrics(ws, new_run, spec_new)
    shared = [m for m in new.index if m in base.index]
    rows, breaches = [], []
    for model in shared:
        for metric in METRICS:
            b, n = float(base.loc[model, metric]), float(new.loc[model, metric])
            delta = n - b if not (pd.isna(b) or pd.isna(n)) else math.nan
            pct = _pct(b, n) if not pd.isna(delta) else math.nan
            t = thresholds.get(metric)
            crossed = t.crossed(b, n) if t else None
            rows.append(
                {
                    "model_id": model,
                    "metric": metric,
                    "base": b,
                    "new": n,
                    "delta": delta,
                    "delta_pct": pct,
                    "n_base": int(base.loc[model, _N[metric]]),
                    "n_new": int(new.loc[model, _N[metric]]),
                    "threshold": t.describe() if t else None,
                    "breached": crossed,
                }
            )
            if crossed and t is not None:
                breaches.append(Breach(model, metric, b, n, delta, pct, t))
    table = pd.DataFrame(
        rows,
        columns=["model_id", "metric", "base", "new", "delta", "delta_pct", "n_base", "n_new", "threshold", "breached"],
    ).astype({"threshold": object, "breached": object})
    for metric, t in thresholds.items():
        unjudged = table[(table["metric"] == metric) & table["breached"].isna()]["model_id"].tolist()
        if unjudged:
            notes.append(f"{t.describe()} not checked for {', '.join(unjudged)} (no value in one of the runs)")
    for rid in (base_run, new_run):
        calls = ws.calls(rid)
        cached = int((calls["cost_source"] == "cache").sum())
        if cached:
            notes.append(
                f"{cached} call(s) of {rid} were served from the cache and left out (schedule runs with --no-cache)"
            )
        status = ws.get_run(rid)["status"]
        if status != "completed":
            notes.append(f"run {rid} ended with status {status!r}")
    if base_info.get("suite_name") != ws.get_run(new_run).get("suite_name"):
        notes.append(
            f"the runs used different suites ({base_info.get('suite_name')} vs {ws.get_run(new_run).get('suite_name')})"
        )
    runs = ws.runs().set_index("run_id")
    costs = {
        rid: {
            "generation_usd": float(runs.loc[rid, "cost_usd"]),
            "judging_usd": float(runs.loc[rid, "judge_cost_usd"]),
            "judge_requests": int(runs.loc[rid, "judge_requests"]),
            "judge_unknown_cost": int(runs.loc[rid, "judge_unknown_cost"]),
        }
        for rid in (base_run, new_run)
    }
    return Comparison(
        base_run=base_run,
        new_run=new_run,
        costs=costs,
        table=table,
        breaches=breaches,
        added=[m for m in new.index if m not in base.index],
        removed=[m for m in base.index if m not in new.index],
        quality=spec_new,
        thresholds=thresholds,
        notes=notes,
        simulated=run_is_simulated(ws, base_run) or run_is_simulated(ws, new_run),
    )


def _shared_quality(
    ws: Workspace, base_run: str, new_run: str, quality: QualityLike | None
) -> tuple[QualitySpec, QualitySpec]:
    """One metric and source for both runs (versions resolved per run): the one named, else the judge's
    VIEScore when both runs have it, else SSIM (auto)."""
    scores = {rid: ws.scores(rid) for rid in (base_run, new_run)}
    if quality is not None:
        spec = as_quality(quality)
    elif all(not scored_values(s, resolve_quality(s, JUDGE_QUALITY)).empty for s in scores.values()):
        spec = JUDGE_QUALITY
    else:
        spec = AUTO_QUALITY
    return resolve_quality(scores[base_run], spec), resolve_quality(scores[new_run], spec)


__all__ = [
    "Threshold",
    "Breach",
    "Comparison",
    "parse_fail_on",
    "compare_runs",
    "previous_run_id",
    "model_metrics",
    "METRICS",
    "SUGGESTED_FAIL_ON",
]
