"""Scheduled runs as a time series: did a model change in the latest run, beyond noise and beyond a minimum?

:func:`trends` takes the runs of one suite (the last ``N``, or those since a date) and, per model of the
latest run × metric, tests the latest run against the **baseline** formed by the earlier runs of the window
(pooled). Metrics and tests (:mod:`evalkit.decide._trend_tests`):

==============  =================================  ========================================================
metric          value                              test of latest vs baseline; change (95 % bootstrap CI)
==============  =================================  ========================================================
latency_p50     p50 of ``total_ms`` (completed)     Mann–Whitney U over calls; relative change of the p50
latency_p95     p95 of ``total_ms``                 Mann–Whitney U over calls; relative change of the p95
inference_p50   p50 of ``inference_ms``             Mann–Whitney U over calls; relative change of the p50
cost            mean list price per attempted call  none: an exact relative change (prices do not jitter)
success         completed / attempted               Fisher's exact test on the counts; change in points
quality         mean over cases (tables' quality)   Wilcoxon signed-rank paired over shared cases; mean diff
==============  =================================  ========================================================

Cost is the list price (``price_usd``) per attempted call, as the tier rule's cost: the billed cost per
attempt would move with the failure rate, which ``success`` already tests. The baseline's per-case quality
is the mean of that case over the baseline runs. The p-values of all tests of one call are adjusted
together (Benjamini–Hochberg, ``q``-values); a change is **significant** when its q-value ≤ ``q`` (cost:
when it moves beyond ``cost_tolerance``). A significant change is an **alarm** only when it is a regression
of at least its minimum effect (:data:`MIN_EFFECT`: latency +20 %, success −5 pp, quality −0.3 on the
quality's scale), so a significant but tiny change is reported, not alarmed; :meth:`Trends.exit_code` is 1
when there is an alarm. A change beyond its minimum that is not significant is reported too (flagged, not
alarmed): too few calls to tell.

Runs count only when they are of the suite and of the latest run's suite version (fingerprint), have
status ``completed`` with every call finished, and served no call from the request cache (schedule runs
with ``--no-cache``); the others met in the window are listed in :attr:`Trends.skipped` with the reason.
"""

from __future__ import annotations

import difflib
import math
import os
import re
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from evalkit.decide import _trend_tests as T
from evalkit.decide import _trend_view as V
from evalkit.decide.quality import (
    AUTO_QUALITY,
    JUDGE_QUALITY,
    QualityLike,
    QualitySpec,
    as_quality,
    resolve_quality,
    scored_values,
)
from evalkit.decide.tables import case_quality
from evalkit.errors import InvalidInputError
from evalkit.store import ATTEMPTED_STATUSES, TERMINAL_STATUSES, CallStatus, Workspace

METRICS, LATENCY = T.METRICS, T.LATENCY
#: the smallest change that is an alarm, signed in the bad direction (latency relative, success in 0–1
#: points, quality absolute on its scale — for a lower-is-better quality the sign flips)
MIN_EFFECT: dict[str, float] = {**dict.fromkeys(LATENCY, 0.20), "success": -0.05, "quality": -0.3}
DEFAULT_LAST = 14
CALL_COLUMNS = ["model_id", "case_id", "status", "total_ms", "inference_ms", "price_usd", "cost_source", "simulated"]


ModelCalls = T.ModelCalls


@dataclass
class RunData:
    """What trends reads of one run."""

    run_id: str
    created_at: str
    calls: pd.DataFrame
    quality: pd.DataFrame  # model_id, case_id, value (per-case mean)
    simulated: bool
    _by_model: dict[str, ModelCalls] | None = None

    def of(self, model: str) -> ModelCalls:
        """The calls of one model (split once per run)."""
        if self._by_model is None:
            c = self.calls
            ids, status = c["model_id"].to_numpy(), c["status"].to_numpy()
            total, inference = c["total_ms"].to_numpy(float), c["inference_ms"].to_numpy(float)
            price = c["price_usd"].to_numpy(float)
            done = status == CallStatus.COMPLETED
            tried = np.isin(status, list(ATTEMPTED_STATUSES))
            self._by_model = {}
            for m in dict.fromkeys(ids):
                mine = ids == m
                self._by_model[str(m)] = ModelCalls(
                    total[mine & done & ~np.isnan(total)],
                    inference[mine & done & ~np.isnan(inference)],
                    int((mine & tried).sum()),
                    int((mine & done).sum()),
                    price[mine & tried & ~np.isnan(price)],
                )
        empty = np.array([])
        return self._by_model.get(model, ModelCalls(empty, empty, 0, 0, empty))


@dataclass(frozen=True)
class Row:
    model: str
    metric: str
    test: T.Test
    q_value: float | None
    significant: bool
    kind: str | None  # regression | improvement | None (no change or no data)
    over_min_effect: bool
    verdict: str

    @property
    def alarm(self) -> bool:
        return self.kind == "regression" and self.significant and self.over_min_effect

    @property
    def flagged(self) -> bool:
        return self.kind is not None and (self.significant or self.over_min_effect)


@dataclass
class Trends:
    suite: str
    runs: list[RunData]  # oldest first; the last is the latest run
    rows: list[Row]
    skipped: list[dict[str, str]]
    quality: QualitySpec | None
    q: float
    min_effect: dict[str, float]
    cost_tolerance: float
    notes: list[str] = field(default_factory=list)
    n_boot: int = T.N_BOOT
    seed: int = 0

    @property
    def latest(self) -> str:
        return self.runs[-1].run_id

    @property
    def simulated(self) -> bool:
        return any(r.simulated for r in self.runs)

    @property
    def changes(self) -> list[Row]:
        return [r for r in self.rows if r.flagged]

    def exit_code(self) -> int:
        """1 when a regression is significant and at least its minimum effect (cron/CI alert), else 0."""
        return 1 if any(r.alarm for r in self.rows) else 0

    def series(self) -> pd.DataFrame:
        """Per run × model × metric: the value and its 95 % interval (bootstrap over calls or cases)."""
        return V.series(self)

    def to_dict(self) -> dict[str, Any]:
        return V.to_dict(self)

    def render(self) -> str:
        return V.render(self)


# -- choosing the runs ----------------------------------------------------------------------------------


def _load(ws: Workspace, run: dict[str, Any]) -> RunData:
    calls = pd.DataFrame(ws.call_rows(run["run_id"], columns=CALL_COLUMNS), columns=CALL_COLUMNS)
    return RunData(run["run_id"], run["created_at"], calls, pd.DataFrame(), bool(run.get("simulated")))


def _skip_reason(data: RunData) -> str | None:
    cached = int((data.calls["cost_source"] == "cache").sum())
    if cached:
        return f"{cached} call(s) served from the request cache (schedule runs with --no-cache)"
    unfinished = int((~data.calls["status"].isin([*TERMINAL_STATUSES, CallStatus.NOT_APPLICABLE])).sum())
    if unfinished:
        return f"incomplete: {unfinished} call(s) never finished"
    return None


def select_runs(
    ws: Workspace, suite: str, *, last: int | None = DEFAULT_LAST, since: str | None = None, until: str | None = None
) -> tuple[list[RunData], list[dict[str, str]]]:
    """The counted runs of ``suite`` (oldest first) and the skipped ones met on the way, with their reasons;
    ``until`` (a run id) leaves out the runs created after it (a report's history as of its run)."""
    runs = ws.runs()
    mine = runs[runs["suite_name"] == suite].sort_values("created_at", kind="stable")
    if mine.empty:
        known = sorted(str(s) for s in runs["suite_name"].dropna().unique())
        close = difflib.get_close_matches(suite, known, n=1)
        raise InvalidInputError(
            f"no run of suite {suite!r} in workspace {ws.path}",
            hint=(f"did you mean {close[0]!r}? " if close else "")
            + (f"suites with runs: {', '.join(known)}" if known else "run one with `evalkit run --suite NAME`"),
        )
    if since is not None:
        mine = mine[mine["created_at"] >= since]
    if until is not None:
        mine = mine[mine["created_at"] <= ws.get_run(until)["created_at"]]
    counted: list[RunData] = []
    skipped: list[dict[str, str]] = []
    fingerprint: str | None = None
    for _, r in mine.iloc[::-1].iterrows():
        if last is not None and len(counted) >= last:
            break
        info = ws.get_run(str(r["run_id"]))
        reason = None
        if info["status"] != "completed":
            reason = f"status {info['status']}"
        elif counted and info.get("suite_fingerprint") != fingerprint:
            reason = "another version of the suite (its files changed since)"
        data = None
        if reason is None:
            data = _load(ws, info)
            reason = _skip_reason(data)
        if reason is not None or data is None:
            skipped.append({"run_id": info["run_id"], "created_at": info["created_at"], "reason": str(reason)})
            continue
        if not counted:
            fingerprint = info.get("suite_fingerprint")
        counted.append(data)
    if not counted:
        why = "; ".join(f"{s['run_id']}: {s['reason']}" for s in skipped[:5])
        raise InvalidInputError(
            f"no run of suite {suite!r} counts for trends" + (f" since {since}" if since else ""),
            hint=f"skipped: {why}" if why else "widen --since",
        )
    oldest = counted[-1].created_at
    return counted[::-1], [s for s in skipped if s["created_at"] >= oldest]


# -- the tests ----------------------------------------------------------------------------------------


def parse_min_effect(spec: str | None) -> dict[str, float]:
    """``"latency=+20%,success=-5pp,quality=-0.3"`` (any subset; ``latency`` sets all three latency metrics,
    or name one) → the full :data:`MIN_EFFECT` map with those replaced."""
    out = dict(MIN_EFFECT)
    for part in (p.strip() for p in (spec or "").split(",") if p.strip()):
        name, _, value = part.partition("=")
        name, value = name.strip(), value.strip().replace(" ", "")
        keys = list(LATENCY) if name == "latency" else [name]
        m = re.fullmatch(r"([+-]?)(\d+(?:\.\d*)?|\.\d+)(%|pp)?", value)
        if any(k not in MIN_EFFECT for k in keys) or not m:
            raise InvalidInputError(
                f"bad minimum effect {part!r}",
                hint="write e.g. latency=+20%,success=-5pp,quality=-0.3 (metrics: latency, "
                + ", ".join(MIN_EFFECT)
                + ")",
            )
        sign, number, unit = m.groups()
        amount = float(number) / (100.0 if unit in ("%", "pp") else 1.0)
        if keys[0] in LATENCY and unit != "%":
            raise InvalidInputError(f"a latency minimum is relative: write {name}=+{number}%")
        for k in keys:
            out[k] = math.copysign(amount, MIN_EFFECT[k]) if not sign else (amount if sign == "+" else -amount)
    return out


def _quality_spec(ws: Workspace, latest: str, quality: QualityLike | None) -> QualitySpec | None:
    scores = ws.scores(latest)
    if quality is not None:
        return resolve_quality(scores, as_quality(quality))
    for candidate in (JUDGE_QUALITY, AUTO_QUALITY):
        spec = resolve_quality(scores, candidate)
        if not scored_values(scores, spec).empty:
            return spec
    return None


def _attach_quality(ws: Workspace, runs: list[RunData], spec: QualitySpec, notes: list[str]) -> None:
    """Each run's per-case quality: the latest run's version of it, else the run's own latest version."""
    for r in runs:
        scores = ws.scores(r.run_id)
        own = spec
        if scored_values(scores, spec).empty:
            own = resolve_quality(scores, replace(spec, version=None))
            if own.version is not None:
                notes.append(f"{r.run_id}: quality version {own.version} (latest run: {spec.version})")
        per_case, _ = case_quality(ws, r.run_id, own, scores)
        r.quality = per_case[["model_id", "case_id", "value"]]


def _test(metric: str, model: str, base: list[RunData], new: RunData, n_boot: int, rng: np.random.Generator):
    _, column, q = METRICS[metric]
    if metric in LATENCY:
        b = np.concatenate([getattr(r.of(model), column) for r in base]) if base else np.array([])
        return T.latency_test(b, getattr(new.of(model), column), float(q or 50), n_boot=n_boot, rng=rng)
    now = new.of(model)
    if metric == "cost":
        pb = np.concatenate([r.of(model).prices for r in base]) if base else np.array([])
        mean = lambda a: math.fsum(a) / a.size if a.size else math.nan  # noqa: E731
        return T.cost_change(mean(pb), mean(now.prices), int(pb.size), int(now.prices.size))
    if metric == "success":
        ok, n = sum(r.of(model).completed for r in base), sum(r.of(model).attempted for r in base)
        return T.success_test(ok, n, now.completed, now.attempted, n_boot=n_boot, rng=rng)
    # quality: per case, the baseline's mean over its runs, paired with the latest run's cases
    if not base:
        return T.quality_test(np.array([]), np.array([]), n_boot=n_boot, rng=rng)
    qb = pd.concat([r.quality[r.quality["model_id"] == model] for r in base])
    qb = qb.groupby("case_id")["value"].mean()
    qn = new.quality[new.quality["model_id"] == model].set_index("case_id")["value"]
    shared = qn.index.intersection(qb.index)
    return T.quality_test(qb.loc[shared].to_numpy(float), qn.loc[shared].to_numpy(float), n_boot=n_boot, rng=rng)


def _bad_sign(metric: str, spec: QualitySpec | None) -> float:
    if metric in (*LATENCY, "cost"):
        return 1.0
    if metric == "quality" and spec is not None and not spec.higher_is_better:
        return 1.0
    return -1.0


def trends(
    ws: Workspace | str | os.PathLike | None,
    suite: str,
    *,
    last: int | None = DEFAULT_LAST,
    since: str | None = None,
    models: list[str] | None = None,
    metrics: list[str] | None = None,
    quality: QualityLike | None = None,
    q: float = 0.05,
    min_effect: dict[str, float] | str | None = None,
    cost_tolerance: float = 0.01,
    n_boot: int = T.N_BOOT,
    seed: int = 0,
    until: str | None = None,
) -> Trends:
    """The latest run of ``suite`` against the earlier runs of the window, per model × metric (see above).

    ``last``: how many counted runs (the latest included); ``since``: an ISO date or time (then every run
    since counts, ``last`` is ignored). ``quality``: by default the judge's VIEScore when the latest run has
    it, else SSIM. ``min_effect``: a map or a string for :func:`parse_min_effect`. ``until``: a run id — the
    series as of that run (runs created later are left out)."""
    ws = ws if isinstance(ws, Workspace) else Workspace(ws, create=False)
    if last is not None and last < 1:
        raise InvalidInputError(f"--last must be at least 1, got {last}")
    if not 0 < q < 1:
        raise InvalidInputError(f"q must be between 0 and 1, got {q}")
    if cost_tolerance < 0:
        raise InvalidInputError(f"the cost tolerance must be ≥ 0, got {cost_tolerance}")
    wanted = list(metrics or METRICS)
    bad = [m for m in wanted if m not in METRICS]
    if bad:
        raise InvalidInputError(f"unknown metric(s) {', '.join(bad)}", hint=f"metrics: {', '.join(METRICS)}")
    if since is not None:
        try:
            datetime.fromisoformat(since.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidInputError(f"--since {since!r} is not a date", hint="write e.g. 2026-11-01") from None
    effects = parse_min_effect(min_effect) if isinstance(min_effect, str) or min_effect is None else min_effect
    runs, skipped = select_runs(ws, suite, last=None if since else last, since=since, until=until)
    base, new = runs[:-1], runs[-1]
    in_latest = list(dict.fromkeys(new.calls["model_id"]))
    if models:
        unknown = [m for m in models if m not in in_latest]
        if unknown:
            raise InvalidInputError(
                f"model(s) {', '.join(unknown)} not in the latest run {new.run_id}", hint=f"its models: {in_latest}"
            )
    chosen = [m for m in in_latest if not models or m in models]
    notes: list[str] = []
    spec = _quality_spec(ws, new.run_id, quality) if "quality" in wanted else None
    if spec is not None:
        _attach_quality(ws, runs, spec, notes)
    elif "quality" in wanted:
        wanted.remove("quality")
        notes.append("no scored quality in the latest run: quality not tested (score the runs first)")
    if not base:
        notes.append(f"{new.run_id} is the only run counted: no baseline to compare with")
    rng = np.random.default_rng(seed)
    tests = {(m, k): _test(k, m, base, new, n_boot, rng) for m in chosen for k in wanted}
    tested = [key for key, t in tests.items() if t.p_value is not None]
    qvals = dict(zip(tested, T.bh_qvalues([tests[k].p_value for k in tested]), strict=True))
    rows = [_row(m, k, tests[(m, k)], qvals.get((m, k)), q, effects, cost_tolerance, spec) for m, k in tests]
    return Trends(suite, runs, rows, skipped, spec, q, effects, cost_tolerance, notes, n_boot, seed)


def _row(
    model: str,
    metric: str,
    t: T.Test,
    qv: float | None,
    q: float,
    effects: dict[str, float],
    tol: float,
    spec: QualitySpec | None,
) -> Row:
    if not math.isfinite(t.change):
        return Row(model, metric, t, qv, False, None, False, "no baseline" if t.n_baseline == 0 else "no data")
    bad = _bad_sign(metric, spec) * t.change > 0
    if metric == "cost":
        significant = over = abs(t.change) > tol
    else:  # a latency percentile moving against the rank test's shift is not called significant
        significant = qv is not None and qv <= q and t.agrees
        limit = abs(effects[metric])
        over = abs(t.change) >= limit - 1e-12
    kind = None if t.change == 0 else ("regression" if bad else "improvement")
    if significant and over:
        verdict = "REGRESSION" if bad else "improvement"
    elif significant:
        verdict = "small " + ("regression" if bad else "improvement")
    elif over and kind is not None:
        verdict = "not significant"
    else:
        verdict = "ok"
    return Row(model, metric, t, qv, significant, kind, over, verdict)


__all__ = ["METRICS", "MIN_EFFECT", "Row", "RunData", "Trends", "parse_min_effect", "select_runs", "trends"]
