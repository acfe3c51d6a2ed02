"""How far a judge agrees with people, measured the way the field reports it.

:func:`judge_human_agreement` takes two tidy frames —

* ``judge``: one row per scored output, columns ``item``, ``model``, ``score``;
* ``human``: one row per rating, columns ``item``, ``model``, ``rater``, ``score`` —

and returns an :class:`Agreement` with, each as an :class:`Estimate` (value and a bootstrap interval
over *items*: all outputs and ratings of a resampled item travel together):

* ``instance_spearman`` / ``instance_kendall`` — the judge's score against the mean human score, pooled
  over every output both scored (VIEScore / ImagenHub's "instance level"; Kendall is τ-b);
* ``model_spearman`` / ``model_kendall`` — the same over per-model means (does the judge rank the models
  as people do?);
* ``inter_rater_spearman`` — Spearman between two raters over the outputs both rated, averaged over rater
  pairs (the ceiling a judge can be expected to reach);
* ``krippendorff_alpha`` — Krippendorff's α for the humans (interval by default, or ordinal), implemented
  here with numpy from the coincidence matrix (Krippendorff 2011, "Computing Krippendorff's
  Alpha-Reliability"); the test suite checks it against that paper's worked example.

``protocol="viescore"`` adds the VIEScore paper's own numbers (its ``analyze_json.ipynb``): one Spearman ρ
per model over its items, combined as tanh(mean ρ) (the notebook averages raw ρ, not atanh ρ), and for the
humans each rater against the mean of the others, tanh(mean) over raters, then over models. The paper
prepares judge scores with quirks of its own (``int()`` on each listed score, minimum, ÷10, clip to 0–1):
:func:`viescore_paper_scores` applies them to VIEScore's stored answers.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from itertools import combinations
from typing import Any

import numpy as np
import pandas as pd

from evalkit.errors import InvalidInputError

PROTOCOLS = ("instance", "viescore")
ALPHA_LEVELS = ("interval", "ordinal")
#: Fewer outputs rated by both judge and humans than this and the report says "too few human ratings".
MIN_OUTPUTS = 30


@dataclass(frozen=True)
class Estimate:
    """A statistic with a bootstrap percentile interval (None when undefined: too little data, a constant side)."""

    value: float | None
    ci_low: float | None = None
    ci_high: float | None = None

    def __str__(self) -> str:
        if self.value is None:
            return "n/a"
        if self.ci_low is None or self.ci_high is None:
            return f"{self.value:.3f}"
        return f"{self.value:.3f} [{self.ci_low:.3f}, {self.ci_high:.3f}]"


STATISTICS = (
    "instance_spearman",
    "instance_kendall",
    "model_spearman",
    "model_kendall",
    "inter_rater_spearman",
    "krippendorff_alpha",
)
VIESCORE_STATISTICS = ("viescore_spearman", "viescore_human_spearman")


@dataclass
class Agreement:
    """Result of :func:`judge_human_agreement`. ``as_dict()`` gives plain numbers (JSON-ready)."""

    protocol: str
    n_outputs: int  # outputs scored by the judge and rated by at least one person
    n_items: int
    n_models: int
    n_raters: int
    instance_spearman: Estimate
    instance_kendall: Estimate
    model_spearman: Estimate
    model_kendall: Estimate
    inter_rater_spearman: Estimate
    krippendorff_alpha: Estimate
    alpha_level: str = "interval"
    viescore_spearman: Estimate | None = None  # protocol="viescore": tanh(mean per-model ρ), judge vs humans
    viescore_human_spearman: Estimate | None = None  # …and each rater vs the others' mean
    ci: float = 0.95
    n_boot: int = 0
    seed: int = 0
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for name in (*STATISTICS, *VIESCORE_STATISTICS):
            est = getattr(self, name)
            out[name] = None if est is None else asdict(est)
        return out

    def __str__(self) -> str:
        lines = [
            f"judge–human agreement ({self.protocol}): {self.n_outputs} outputs, {self.n_items} items, "
            f"{self.n_models} models, {self.n_raters} raters; {self.ci:.0%} bootstrap intervals over items "
            f"({self.n_boot} resamples)"
        ]
        for name in STATISTICS:
            lines.append(f"  {name:<22} {getattr(self, name)}")
        for name in VIESCORE_STATISTICS:
            if getattr(self, name) is not None:
                lines.append(f"  {name:<22} {getattr(self, name)}")
        lines.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(lines)


# ---- input -------------------------------------------------------------------------------------------


def _frame(df: Any, columns: tuple[str, ...], what: str) -> pd.DataFrame:
    if not isinstance(df, pd.DataFrame):
        raise InvalidInputError(f"{what} must be a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise InvalidInputError(
            f"{what} is missing column(s) {', '.join(missing)} (have: {', '.join(map(str, df.columns))})",
            hint=f"{what} needs the columns {', '.join(columns)}",
        )
    out = df[list(columns)].copy()
    try:
        out["score"] = pd.to_numeric(out["score"], errors="raise").astype(float)
    except (ValueError, TypeError) as exc:
        raise InvalidInputError(f"{what} scores must be numbers ({exc})") from None
    out = out[np.isfinite(out["score"])]  # unscored outputs have no score: left out, never defaulted
    for c in columns:
        if c != "score":
            out[c] = out[c].astype(str)
    return out.reset_index(drop=True)


# ---- statistics ---------------------------------------------------------------------------------------


# scipy.stats is imported where it is used: this module loads with ``evalkit.scoring``'s face, which every CLI
# command imports (``evalkit score --help`` lists the judge presets), and scipy.stats costs ~0.7 s to import.
def _spearman(x: np.ndarray, y: np.ndarray) -> float | None:
    from scipy import stats

    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    return float(stats.spearmanr(x, y).statistic)


def _kendall(x: np.ndarray, y: np.ndarray) -> float | None:
    from scipy import stats

    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    return float(stats.kendalltau(x, y).statistic)


def _mean_or_none(values: Iterable[float | None]) -> float | None:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(vals)) if vals else None


def _tanh_mean(values: Iterable[float | None]) -> float | None:
    m = _mean_or_none(values)
    return None if m is None else float(np.tanh(m))


def krippendorff_alpha(units: Iterable[Iterable[float]], *, level: str = "interval") -> float | None:
    """Krippendorff's α for reliability data given as units (one list of the values people gave it each).

    Units with fewer than two values are not pairable and are ignored. ``level`` is ``interval``
    (δ = (c − k)²) or ``ordinal`` (δ from the value frequencies). None when undefined (fewer than two
    pairable values, or every value equal)."""
    return _alpha_from(*_coincidences(units), level=level)


def _coincidences(units: Iterable[Iterable[float]]) -> tuple[np.ndarray, np.ndarray]:
    """(values, per-unit coincidence matrices o_u[c, k] = pairs (c, k) within u / (m_u − 1))."""
    cleaned = [np.asarray([v for v in u if v is not None and math.isfinite(v)], dtype=float) for u in units]
    cleaned = [u for u in cleaned if len(u) >= 2]
    if not cleaned:
        return np.array([]), np.zeros((0, 0, 0))
    values = np.unique(np.concatenate(cleaned))
    per_unit = np.zeros((len(cleaned), len(values), len(values)))
    for i, u in enumerate(cleaned):
        counts = np.bincount(np.searchsorted(values, u), minlength=len(values)).astype(float)
        pairs = np.outer(counts, counts) - np.diag(counts)  # ordered pairs of different ratings
        per_unit[i] = pairs / (len(u) - 1)
    return values, per_unit


def _alpha_from(
    values: np.ndarray, per_unit: np.ndarray, *, level: str, weights: np.ndarray | None = None
) -> float | None:
    if level not in ALPHA_LEVELS:
        raise InvalidInputError(f"Krippendorff level must be one of {', '.join(ALPHA_LEVELS)}, got {level!r}")
    if len(values) == 0:
        return None
    o = per_unit.sum(axis=0) if weights is None else np.tensordot(weights, per_unit, axes=1)
    n_c = o.sum(axis=1)
    n = n_c.sum()
    if n < 2 or len(values) < 2:
        return None
    if level == "interval":
        delta = (values[:, None] - values[None, :]) ** 2
    else:
        cum = np.cumsum(n_c)
        lo = np.minimum.outer(np.arange(len(values)), np.arange(len(values)))
        hi = np.maximum.outer(np.arange(len(values)), np.arange(len(values)))
        between = cum[hi] - cum[lo] + n_c[lo]  # Σ n_g for g from c to k inclusive
        delta = (between - (n_c[:, None] + n_c[None, :]) / 2.0) ** 2
    d_o = float((o * delta).sum()) / n
    d_e = float((np.outer(n_c, n_c) * delta).sum()) / (n * (n - 1))
    if d_e == 0:
        return None
    return 1.0 - d_o / d_e


# ---- the main entry ------------------------------------------------------------------------------------


class _Data:
    """The joined data in arrays, so each bootstrap resample is index arithmetic."""

    def __init__(self, judge: pd.DataFrame, human: pd.DataFrame):
        # humans: one row per output, one column per rater (NaN where that rater did not rate it)
        wide = human.pivot_table(index=["item", "model"], columns="rater", values="score", aggfunc="mean")
        wide = wide[sorted(wide.columns, key=_rater_order)]
        self.raters = [str(r) for r in wide.columns]
        self.wide = wide.to_numpy(float)
        # the mean human score, summed in rater order in float64 (as VIEScore's notebook does: the last
        # digit of its published O correlations depends on it)
        total = np.zeros(len(wide))
        for col in self.wide.T:
            total = total + np.where(np.isfinite(col), col, 0.0)
        count = np.isfinite(self.wide).sum(axis=1)
        hmean = pd.Series(np.where(count > 0, total / np.maximum(count, 1), np.nan), index=wide.index, name="human")
        joined = judge.groupby(["item", "model"], sort=True)["score"].mean().rename("judge").to_frame()
        joined = joined.join(hmean.dropna(), how="inner").reset_index()
        self.joined = joined
        self.items = sorted(set(joined["item"]) | set(human["item"]))
        item_index = {it: i for i, it in enumerate(self.items)}
        self.models = sorted(joined["model"].unique())
        model_index = {m: i for i, m in enumerate(self.models)}
        self.j = joined["judge"].to_numpy(float)
        self.h = joined["human"].to_numpy(float)
        self.out_item = joined["item"].map(item_index).to_numpy(int)
        self.out_model = joined["model"].map(model_index).to_numpy(int)
        self.rows_of_item = [np.flatnonzero(self.out_item == i) for i in range(len(self.items))]
        self.wide_item = np.array([item_index[i] for i in wide.index.get_level_values("item")], dtype=int)
        self.wide_model = wide.index.get_level_values("model").astype(str).to_numpy()
        self.wide_rows_of_item = [np.flatnonzero(self.wide_item == i) for i in range(len(self.items))]
        self.alpha_values, self.alpha_units = _coincidences(list(row[np.isfinite(row)]) for row in self.wide)
        self.alpha_unit_of_row = np.cumsum(np.isfinite(self.wide).sum(axis=1) >= 2) - 1


def _rater_order(r: Any) -> tuple[int, float, str]:
    try:
        return (0, float(r), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(r))


def _statistics(d: _Data, out_rows: np.ndarray, wide_rows: np.ndarray, protocol: str, level: str) -> dict:
    j, h, model = d.j[out_rows], d.h[out_rows], d.out_model[out_rows]
    res: dict[str, float | None] = {"instance_spearman": _spearman(j, h), "instance_kendall": _kendall(j, h)}
    present = np.unique(model)
    if len(present) >= 3:
        jm = np.array([j[model == m].mean() for m in present])
        hm = np.array([h[model == m].mean() for m in present])
        res["model_spearman"], res["model_kendall"] = _spearman(jm, hm), _kendall(jm, hm)
    else:
        res["model_spearman"] = res["model_kendall"] = None
    wide = d.wide[wide_rows]
    pair_rho = []
    for a, b in combinations(range(wide.shape[1]), 2):
        ok = np.isfinite(wide[:, a]) & np.isfinite(wide[:, b])
        pair_rho.append(_spearman(wide[ok, a], wide[ok, b]))
    res["inter_rater_spearman"] = _mean_or_none(pair_rho)
    pairable = np.isfinite(wide).sum(axis=1) >= 2
    unit_ids = d.alpha_unit_of_row[wide_rows][pairable]
    weights = np.bincount(unit_ids, minlength=d.alpha_units.shape[0]).astype(float)
    res["krippendorff_alpha"] = _alpha_from(d.alpha_values, d.alpha_units, level=level, weights=weights)
    if protocol == "viescore":
        res.update(_viescore_protocol(d, out_rows, wide_rows))
    return res


def _viescore_protocol(d: _Data, out_rows: np.ndarray, wide_rows: np.ndarray) -> dict[str, float | None]:
    j, h, model = d.j[out_rows], d.h[out_rows], d.out_model[out_rows]
    judge_rho = [_spearman(j[model == m], h[model == m]) for m in np.unique(model)]
    wide, wmodel = d.wide[wide_rows], d.wide_model[wide_rows]
    per_model = []
    # over the models the judge scored, as the notebook loops over the judge's answer folders (ImagenHub's
    # Imagic has human ratings but no judge answers and is not part of the published Human Raters row)
    for m in sorted({d.models[i] for i in np.unique(model)}):
        w = wide[wmodel == m]
        rater_rho = []
        for r in range(w.shape[1]):
            others = np.delete(w, r, axis=1)
            ok = np.isfinite(w[:, r]) & np.isfinite(others).all(axis=1)
            if others.shape[1] == 0:
                continue
            # the mean of the other raters, summed in rater order (as the notebook does)
            other_mean = others[ok].sum(axis=1) / others.shape[1]
            rater_rho.append(_spearman(w[ok, r], other_mean))
        per_model.append(_tanh_mean(rater_rho))
    return {"viescore_spearman": _tanh_mean(judge_rho), "viescore_human_spearman": _tanh_mean(per_model)}


def judge_human_agreement(
    judge: pd.DataFrame,
    human: pd.DataFrame,
    *,
    protocol: str = "instance",
    n_boot: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
    alpha_level: str = "interval",
) -> Agreement:
    """Judge–human agreement (see the module docstring) with bootstrap intervals over items.

    ``judge``: ``item, model, score``; ``human``: ``item, model, rater, score``. Rows without a finite
    score are left out (an unscored output is missing, not zero). Several judge rows for one output are
    averaged. ``n_boot=0`` gives no intervals. Deterministic for a given ``seed``.
    """
    if protocol not in PROTOCOLS:
        raise InvalidInputError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    if alpha_level not in ALPHA_LEVELS:
        raise InvalidInputError(f"alpha_level must be one of {', '.join(ALPHA_LEVELS)}, got {alpha_level!r}")
    if not isinstance(n_boot, int) or n_boot < 0:
        raise InvalidInputError(f"n_boot must be an integer ≥ 0, got {n_boot!r}")
    if not 0.0 < ci < 1.0:
        raise InvalidInputError(f"ci must be between 0 and 1, got {ci}")
    j = _frame(judge, ("item", "model", "score"), "judge")
    h = _frame(human, ("item", "model", "rater", "score"), "human")
    d = _Data(j, h)
    notes: list[str] = []
    all_out = np.arange(len(d.j))
    all_wide = np.arange(len(d.wide))
    point = _statistics(d, all_out, all_wide, protocol, alpha_level)
    names = list(STATISTICS) + (list(VIESCORE_STATISTICS) if protocol == "viescore" else [])
    boots: dict[str, list[float]] = {k: [] for k in names}
    if n_boot > 0 and d.items:
        rng = np.random.default_rng(seed)
        n_items = len(d.items)
        for _ in range(n_boot):
            pick = rng.integers(0, n_items, n_items)
            out_rows = np.concatenate([d.rows_of_item[i] for i in pick])
            wide_rows = np.concatenate([d.wide_rows_of_item[i] for i in pick])
            for k, v in _statistics(d, out_rows, wide_rows, protocol, alpha_level).items():
                if v is not None and math.isfinite(v):
                    boots[k].append(v)
    lo_q, hi_q = (1.0 - ci) / 2.0, 1.0 - (1.0 - ci) / 2.0
    est: dict[str, Estimate] = {}
    for k in names:
        v = point.get(k)
        b = boots[k]
        if v is None or len(b) < max(10, n_boot // 2):
            est[k] = Estimate(v)
        else:
            est[k] = Estimate(v, float(np.quantile(b, lo_q)), float(np.quantile(b, hi_q)))
    if len(d.j) < MIN_OUTPUTS:
        notes.append(f"only {len(d.j)} outputs have both a judge score and a human rating (< {MIN_OUTPUTS})")
    if len(d.raters) < 2:
        notes.append("fewer than two raters: no inter-rater agreement")
    return Agreement(
        protocol=protocol,
        n_outputs=len(d.j),
        n_items=int(len(np.unique(d.out_item))),
        n_models=len(d.models),
        n_raters=len(d.raters),
        alpha_level=alpha_level,
        ci=ci,
        n_boot=n_boot,
        seed=seed,
        notes=notes,
        **est,
    )


# ---- VIEScore's stored answers --------------------------------------------------------------------------


def viescore_paper_scores(sc_scores: Any, pq_scores: Any) -> tuple[float | None, float | None, float | None]:
    """(SC, PQ, O) on 0–1 from a VIEScore answer's stored ``score`` lists, as the paper's notebook computes
    them: ``int()`` on each listed score, the minimum, ÷10, clipped to [0, 1], O = sqrt(SC·PQ). A missing
    or empty answer gives None (never a default)."""

    def one(raw: Any) -> float | None:
        if raw is None or (isinstance(raw, float) and math.isnan(raw)):
            return None
        value = json.loads(raw) if isinstance(raw, str) else raw
        if not isinstance(value, list):
            value = [value]
        if not value:
            return None
        return min(1.0, max(0.0, min(int(v) for v in value) / 10.0))

    sc, pq = one(sc_scores), one(pq_scores)
    o = math.sqrt(sc * pq) if sc is not None and pq is not None else None
    return sc, pq, o


__all__ = [
    "ALPHA_LEVELS",
    "Agreement",
    "Estimate",
    "MIN_OUTPUTS",
    "PROTOCOLS",
    "RunAgreement",
    "SWAP_CONSISTENCY_WARN",
    "human_scores",
    "judge_human_agreement",
    "run_agreement",
    "swap_consistency",
    "krippendorff_alpha",
    "viescore_paper_scores",
]


# ---- a run's judge against its human ratings -----------------------------------------------------------------

#: below this swap-consistency rate the report warns (evalkit's threshold; the literature reports position
#: bias flipping text judges' verdicts in up to 45 % of swaps — issue 16 / evaluation-anchors.md §0)
SWAP_CONSISTENCY_WARN = 0.8


def human_scores(ws: Any, run_id: str) -> pd.DataFrame:
    """The run's human *scores* (the Rater's scoring mode) as ``item, model, rater, score, operation, scale``.

    One score per (rater, output): the rater's latest. ``imagenhub`` scale: O = sqrt(SC · PR) on 0–1
    (ImagenHub's humaneval.py, geometric mean). ``1-5`` scale: O = sqrt(SC · quality) with SC =
    min(instruction, preservation) when both are given, else instruction — VIEScore's shape (SC includes
    over-editing). A rating without the needed parts gives no score (never a default)."""
    cols = ["item", "model", "rater", "score", "operation", "scale", "call_id"]
    r = ws.ratings(run_id, source="human")
    r = r[r["kind"] == "single"] if not r.empty else r
    if r.empty:
        return pd.DataFrame(columns=cols)
    r = r.drop_duplicates(subset=["call_id", "rater"], keep="last")
    calls = ws.calls(run_id).set_index("call_id")
    rows = []
    for x in r.to_dict("records"):
        if x["call_id"] not in calls.index:
            continue
        scale = x.get("scale") or "1-5"
        instr, qual, pres = (_num(x.get(k)) for k in ("instruction", "quality", "preservation"))
        if instr is None or qual is None:
            continue
        sc = instr if scale == "imagenhub" or pres is None else min(instr, pres)
        call = calls.loc[x["call_id"]]
        rows.append(
            {
                "item": str(x["case_id"]),
                "model": str(call["model_id"]),
                "rater": str(x["rater"]),
                "score": math.sqrt(sc * qual),
                "operation": str(call["operation"]),
                "scale": scale,
                "call_id": x["call_id"],
            }
        )
    return pd.DataFrame(rows, columns=cols)


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def swap_consistency(ws: Any, run_id: str) -> pd.DataFrame:
    """Per judge (rater and version): pairs asked in both display orders, how many kept their verdict, and
    the rate. Read from the ``swap_check`` the pairwise judge stores in each rating's detail."""
    cols = ["rater", "version", "pairs_checked", "consistent", "rate"]
    r = ws.ratings(run_id, source="judge")
    counts: dict[tuple[str, str], list[int]] = {}
    for x in r.to_dict("records") if not r.empty else []:
        try:
            d = json.loads(x.get("detail") or "{}")
        except ValueError:
            continue
        check = d.get("swap_check")
        if not isinstance(check, dict):
            continue
        c = counts.setdefault((str(x["rater"]), str(d.get("version"))), [0, 0])
        c[0] += 1
        c[1] += int(bool(check.get("consistent")))
    rows = [
        {"rater": k[0], "version": k[1], "pairs_checked": n, "consistent": ok, "rate": ok / n}
        for k, (n, ok) in sorted(counts.items())
    ]
    return pd.DataFrame(rows, columns=cols)


@dataclass
class RunAgreement:
    """:func:`run_agreement`'s result: which judge, what it left unscored, how far it agrees with people."""

    run_id: str
    metric: str
    version: str | None
    preset: str | None
    prompt_version: str | None
    judge_scored: int
    unscored: dict[str, int]
    human_ratings: int
    overall: Agreement | None
    by_operation: dict[str, Agreement]
    swap: list[dict[str, Any]]
    expected_instance_spearman: float | None
    expected_source: str | None
    other_versions: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k not in ("overall", "by_operation")}
        out["overall"] = self.overall.as_dict() if self.overall else None
        out["by_operation"] = {k: a.as_dict() for k, a in self.by_operation.items()}
        return out

    def __str__(self) -> str:
        lines = [
            f"run {self.run_id}: judge {self.version or '(none)'} — preset {self.preset or '(none)'}, "
            f"{self.judge_scored} {self.metric} scores, unscored: "
            + (", ".join(f"{k} {v}" for k, v in sorted(self.unscored.items())) or "none")
            + f"; {self.human_ratings} human score(s)"
        ]
        if self.overall is not None:
            lines.append("overall:\n" + str(self.overall))
        for op, a in sorted(self.by_operation.items()):
            lines.append(
                f"{op}: {a.n_outputs} outputs, instance Spearman {a.instance_spearman}, model Kendall {a.model_kendall}"
            )
        for s in self.swap:
            lines.append(
                f"swap consistency {s['rater']}: {s['consistent']}/{s['pairs_checked']} = {s['rate']:.0%} "
                f"({s['version']})"
            )
        lines.extend(f"WARNING: {w}" for w in self.warnings)
        return "\n".join(lines)


def run_agreement(
    ws: Any,
    run_id: str,
    *,
    metric: str = "viescore_o",
    version: str | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> RunAgreement:
    """The run's judge scores (``metric``, one judge ``version`` — by default the one with most scores)
    against its human scores, overall and per operation, with unscored reasons, swap consistency and
    plain warnings (too few ratings; agreement below the literature for the judge's preset; swaps)."""
    from evalkit.scoring.judge.config import preset_for_version

    ws.get_run(run_id)
    scores = ws.scores(run_id)
    judged = scores[(scores["source"] == "judge") & (scores["metric"] == metric)] if not scores.empty else scores
    versions = judged["version"].value_counts() if not judged.empty else pd.Series(dtype=int)
    if version is None and len(versions):
        version = str(versions.index[0])
    if version is not None and not judged.empty:
        judged = judged[judged["version"] == version]
    ok = judged[judged["status"] == "scored"] if not judged.empty else judged
    unscored = (
        {
            str(k): int(v)
            for k, v in judged[judged["status"] != "scored"]["reason"].fillna("unknown").value_counts().items()
        }
        if not judged.empty
        else {}
    )
    preset = preset_for_version(version)
    humans = human_scores(ws, run_id)
    warnings: list[str] = []
    overall = None
    by_op: dict[str, Agreement] = {}
    if not ok.empty and not humans.empty:
        jf = pd.DataFrame({"item": ok["case_id"], "model": ok["model_id"], "score": ok["value"], "op": ok["operation"]})
        overall = judge_human_agreement(jf, humans, n_boot=n_boot, seed=seed)
        for op in sorted(set(jf["op"]) & set(humans["operation"])):
            by_op[op] = judge_human_agreement(
                jf[jf["op"] == op], humans[humans["operation"] == op], n_boot=n_boot, seed=seed
            )
    if humans.empty:
        warnings.append(
            "no human scores for this run: agreement with people is unknown — rate some outputs in the Rater's "
            "scoring mode (evalkit.report.Rater(..., mode='score'))"
        )
    elif overall is None or overall.n_outputs < MIN_OUTPUTS:
        n = 0 if overall is None else overall.n_outputs
        warnings.append(
            f"too few human ratings to say how far to trust the judge: {n} output(s) have both a judge score and "
            f"a human score (need at least {MIN_OUTPUTS})"
        )
    expected = preset.expected.instance_spearman if preset else None
    if overall is not None and expected is not None and overall.instance_spearman.value is not None:
        if overall.instance_spearman.value < expected:
            warnings.append(
                f"the judge agrees with people less than the literature reports for it: instance Spearman "
                f"{overall.instance_spearman} vs {expected:.3f} ({preset.expected.source if preset else ''})"
            )
    swap = swap_consistency(ws, run_id)
    for s in swap.to_dict("records"):
        if s["rate"] < SWAP_CONSISTENCY_WARN:
            warnings.append(
                f"position bias: {s['rater']} kept its verdict in only {s['rate']:.0%} of {s['pairs_checked']} "
                f"pairs asked in both orders (flips count as ties)"
            )
    return RunAgreement(
        run_id=run_id,
        metric=metric,
        version=version,
        preset=preset.name if preset else None,
        prompt_version=version.split("|")[1] if version and "|" in version else None,
        judge_scored=int(len(ok)),
        unscored=unscored,
        human_ratings=int(len(humans)),
        overall=overall,
        by_operation=by_op,
        swap=swap.to_dict("records"),
        expected_instance_spearman=expected,
        expected_source=preset.expected.source if preset else None,
        other_versions=[str(v) for v in versions.index if str(v) != version],
        warnings=warnings,
    )
