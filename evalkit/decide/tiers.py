"""Per-tier default models: for each price tier × operation, the model a product should use, and why.

Tier definitions (constraints) are loaded by :mod:`evalkit.decide.tier_config` (bundled ``tiers.toml``,
overridden by a workspace ``tiers.toml`` or ``--tiers FILE``).

The rule, per tier × operation
------------------------------
1. **Allowed**: the model's provider / vendor is in the tier's ``allowed_providers`` /
   ``allowed_vendors`` (when given; an unknown vendor is not allowed when vendors are restricted).
2. **Meets the constraints**: mean list price per edit ≤ ``max_cost_usd`` (an unknown price cannot
   be checked, so it fails), p95 total latency ≤ ``max_latency_p95_ms``, success rate ≥
   ``min_success_rate`` — all measured on this operation's calls (definitions in
   :mod:`evalkit.decide.tables`).
3. **Enough evidence**: at least ``min_calls`` completed calls and a scored quality.
4. Among models passing 1–3, the **best** is the one with the highest mean quality. But if a
   *cheaper* passing model is not significantly worse, the cheapest such model is the default, and
   the rationale says so. "Significantly" is a **one-sided Wilcoxon signed-rank test** (scipy,
   ``zero_method="pratt"``) on the per-case quality differences best − cheaper over the cases both
   have scored, at level ``alpha`` (0.05). Why this test: it is *paired* (each case is its own
   control, so case difficulty cancels out), needs no normality (judge scores are bounded, discrete
   and skewed), is robust to one outlier case, is exact for small samples without ties, and is
   deterministic (no resampling seed). Pratt's treatment keeps exact ties (common with 0–10 judge
   scores) in the ranking, which is more conservative than dropping them. Each cheaper model is
   tested separately without a multiplicity correction; a correction would only make switching to
   the cheaper model easier. With no shared scored case the best cannot be shown better, so the rule
   still prefers the cheaper model, and the rationale says the comparison had no data.
   **The judge's noise**: when the quality is a judge metric scored with several passes per output
   (``evalkit score --judge-passes N``), the per-case values are pass means, and a cheaper model is
   also preferred when the best *is* significantly better but its mean paired advantage is below the
   judge's noise on that operation — the median over outputs of the SD between passes
   (:mod:`evalkit.scoring.judge.noise`); the rationale says so. With one pass there is no noise figure
   and the rule is the test alone.
5. Status: ``ok`` when a default exists; ``insufficient_evidence`` when models meet the constraints
   but none has enough completed calls or any scored quality (``default`` is null; ``provisional``
   names the best of them, to read with care); ``no_eligible_model`` with the reason (e.g. "all
   models exceed $0.03 per edit").

tier_defaults.json (schema ``evalkit.tier_defaults/1``)
-------------------------------------------------------
Written by :func:`write_tier_defaults`, read by a product's model selector: look up
``tiers[<tier>].operations[<operation>]``; use ``default`` only when ``status == "ok"``::

    {
      "schema": "evalkit.tier_defaults/1",
      "run_id": "2026-…", "generated_at": "2026-…Z",      # ISO 8601 UTC
      "simulated": false,                                 # true: local server outputs, NOT model outputs
      "quality": {"metric": "viescore_o", "source": "judge", "version": "…", "higher_is_better": true},
      "rule": {"test": "wilcoxon_signed_rank_one_sided_pratt", "alpha": 0.05,
               "latency_percentile": "numpy linear (type 7)", "cost": "mean list price per edit (USD)"},
      "tiers": {
        "<tier>": {
          "description": "…",
          "constraints": {"max_cost_usd": 0.05, "max_latency_p95_ms": 60000, "allowed_vendors": null,
                          "allowed_providers": ["wavespeed"], "min_success_rate": 0.9, "min_calls": 10},
          "operations": {
            "<operation>": {
              "default": "<model id>" | null,
              "status": "ok" | "insufficient_evidence" | "no_eligible_model",
              "provisional": "<model id>" | null,     # best candidate when evidence is insufficient
              "cost_usd": 0.02,                       # of the default (or provisional); null if none
              "latency_p95_ms": 8123.0,
              "success_rate": 0.96,
              "completed": 24,
              "quality": 7.4, "quality_ci": [7.1, 7.7], "n": 24,   # n = cases with a scored quality
              "judge_noise_sd": 0.4 | null,           # added within /1: median SD between judge passes
              "rationale": "one or two sentences",
              "alternatives": [{"model": "…", "cost_usd": …, "latency_p95_ms": …, "quality": …,
                                "rationale": "one line",
                                # added within schema /1 (readers must not require them):
                                "eligibility": "eligible" | "insufficient_evidence" | "excluded",
                                "quality_ci": [lo, hi], "n": 24, "completed": 24, "success_rate": 0.96}]
            }}}}}

Numbers that do not exist (unknown price, no quality, fewer than two cases for an interval) are
``null``, never NaN. Alternatives list every other model run on the operation: eligible ones by
quality first, then those short of evidence, then excluded ones with the constraint they fail.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from evalkit.decide.quality import DEFAULT_QUALITY, QualityLike, QualitySpec
from evalkit.decide.tables import case_quality, format_ms, format_usd, model_table, run_is_simulated
from evalkit.decide.tier_config import Tier, TierConfigError, load_tiers
from evalkit.errors import InvalidInputError
from evalkit.scoring.judge.noise import judge_noise
from evalkit.store import Workspace, utcnow

SCHEMA = "evalkit.tier_defaults/1"
TEST_NAME = "wilcoxon_signed_rank_one_sided_pratt"


@dataclass
class Alternative:
    model: str
    cost_usd: float | None
    latency_p95_ms: float | None
    quality: float | None
    rationale: str
    #: eligible (meets every constraint with enough evidence) | insufficient_evidence | excluded
    eligibility: str = "eligible"
    quality_ci: tuple[float | None, float | None] = (None, None)
    n: int | None = None
    completed: int | None = None
    success_rate: float | None = None


@dataclass
class OperationDecision:
    operation: str
    status: str
    default: str | None
    provisional: str | None
    cost_usd: float | None
    latency_p95_ms: float | None
    success_rate: float | None
    completed: int | None
    quality: float | None
    quality_ci: tuple[float | None, float | None]
    n: int | None
    rationale: str
    alternatives: list[Alternative] = field(default_factory=list)
    #: the judge's noise on this operation (median SD between passes of the quality metric); None unmeasured
    judge_noise_sd: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "default": self.default,
            "status": self.status,
            "provisional": self.provisional,
            "cost_usd": _num(self.cost_usd),
            "latency_p95_ms": _num(self.latency_p95_ms),
            "success_rate": _num(self.success_rate),
            "completed": self.completed,
            "quality": _num(self.quality),
            "quality_ci": [_num(self.quality_ci[0]), _num(self.quality_ci[1])],
            "n": self.n,
            "judge_noise_sd": _num(self.judge_noise_sd),
            "rationale": self.rationale,
            "alternatives": [
                {
                    "model": a.model,
                    "cost_usd": _num(a.cost_usd),
                    "latency_p95_ms": _num(a.latency_p95_ms),
                    "quality": _num(a.quality),
                    "rationale": a.rationale,
                    "eligibility": a.eligibility,
                    "quality_ci": [_num(a.quality_ci[0]), _num(a.quality_ci[1])],
                    "n": a.n,
                    "completed": a.completed,
                    "success_rate": _num(a.success_rate),
                }
                for a in self.alternatives
            ],
        }


@dataclass
class TierDecision:
    """Defaults for every tier × operation of one run (see the module docstring for the JSON shape)."""

    run_id: str
    generated_at: str
    simulated: bool
    quality: QualitySpec
    alpha: float
    tiers: dict[str, Tier]
    operations: dict[str, dict[str, OperationDecision]]  # tier -> operation -> decision

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "run_id": self.run_id,
            "generated_at": self.generated_at,
            "simulated": self.simulated,
            "quality": self.quality.as_dict(),
            "rule": {
                "test": TEST_NAME,
                "alpha": self.alpha,
                "latency_percentile": "numpy linear (type 7)",
                "cost": "mean list price per edit (USD)",
                "judge_noise": (
                    "a cheaper model is preferred when the best's mean paired advantage is below the median SD "
                    "between judge passes on the operation"
                ),
            },
            "tiers": {
                name: {
                    "description": tier.description,
                    "constraints": tier.constraints(),
                    "operations": {op: d.to_dict() for op, d in self.operations[name].items()},
                }
                for name, tier in self.tiers.items()
            },
        }

    def to_frame(self) -> pd.DataFrame:
        """One row per tier × operation, for notebooks."""
        rows = [
            {
                "tier": t,
                "operation": op,
                "status": d.status,
                "default": d.default or d.provisional,
                "cost_usd": d.cost_usd,
                "latency_p95_ms": d.latency_p95_ms,
                "quality": d.quality,
                "n": d.n,
                "rationale": d.rationale,
            }
            for t, ops in self.operations.items()
            for op, d in ops.items()
        ]
        df = pd.DataFrame(
            rows,
            columns=[
                "tier",
                "operation",
                "status",
                "default",
                "cost_usd",
                "latency_p95_ms",
                "quality",
                "n",
                "rationale",
            ],
        )
        df.attrs.update(run_id=self.run_id, simulated=self.simulated, quality=self.quality.as_dict())
        return df


def _num(v: Any) -> float | None:
    if v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


@dataclass(frozen=True)
class PairedTest:
    """Is ``better`` significantly better than ``other``? (one-sided Wilcoxon signed-rank, Pratt zeros)"""

    n_pairs: int
    mean_diff: float
    p_value: float

    def significant(self, alpha: float) -> bool:
        return self.n_pairs > 0 and self.p_value < alpha


def paired_test(per_case: pd.DataFrame, better: str, other: str, spec: QualitySpec) -> PairedTest:
    """Compare two models on the cases both have a scored quality for (per-case means)."""
    a = per_case[per_case["model_id"] == better].set_index("case_id")["value"]
    b = per_case[per_case["model_id"] == other].set_index("case_id")["value"]
    shared = a.index.intersection(b.index)
    if len(shared) == 0:
        return PairedTest(0, math.nan, 1.0)
    diff = (a.loc[shared] - b.loc[shared]).to_numpy(dtype=float)
    if not spec.higher_is_better:
        diff = -diff
    if np.all(diff == 0):
        return PairedTest(len(shared), 0.0, 1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = float(stats.wilcoxon(diff, zero_method="pratt", alternative="greater").pvalue)
    return PairedTest(len(shared), float(diff.mean()), p if math.isfinite(p) else 1.0)


# -- per-model checks --------------------------------------------------------------------------------


@dataclass
class _Candidate:
    model: str
    row: pd.Series
    vendor: str | None
    not_allowed: list[str]
    failures: dict[str, str]  # constraint kind -> reason
    short_evidence: str | None

    @property
    def meets(self) -> bool:
        return not self.not_allowed and not self.failures

    @property
    def ready(self) -> bool:
        return self.meets and self.short_evidence is None

    @property
    def cost(self) -> float:
        return float(self.row["mean_cost_usd"])

    @property
    def quality(self) -> float:
        return float(self.row["quality"])


def _check(model: str, row: pd.Series, vendor: str | None, tier: Tier) -> _Candidate:
    not_allowed, failures = [], {}
    if tier.allowed_providers is not None and row["provider"] not in tier.allowed_providers:
        not_allowed.append(f"provider {row['provider']} not in allowed_providers ({', '.join(tier.allowed_providers)})")
    if tier.allowed_vendors is not None and vendor not in tier.allowed_vendors:
        who = f"vendor {vendor}" if vendor else "vendor unknown"
        not_allowed.append(f"{who} not in allowed_vendors ({', '.join(tier.allowed_vendors)})")
    cost, p95, rate = row["mean_cost_usd"], row["p95_total_ms"], row["success_rate"]
    if tier.max_cost_usd is not None:
        if pd.isna(cost):
            failures["cost"] = f"price unknown (cannot check max ${tier.max_cost_usd:g} per edit)"
        elif cost > tier.max_cost_usd + 1e-12:
            failures["cost"] = f"costs {format_usd(cost)} per edit > max ${tier.max_cost_usd:g}"
    if tier.max_latency_p95_ms is not None:
        if pd.isna(p95):
            failures["latency"] = "no latency measured (no completed call)"
        elif p95 > tier.max_latency_p95_ms:
            failures["latency"] = f"p95 latency {format_ms(p95)} > max {format_ms(tier.max_latency_p95_ms)}"
    if not pd.isna(rate) and rate < tier.min_success_rate:
        failures["success"] = f"success rate {rate:.0%} < min {tier.min_success_rate:.0%}"
    shortfalls = []
    if row["completed"] < tier.min_calls:
        shortfalls.append(f"only {int(row['completed'])} completed call(s) (< min_calls {tier.min_calls})")
    if pd.isna(row["quality"]):
        shortfalls.append("no scored quality")
    return _Candidate(model, row, vendor, not_allowed, failures, "; ".join(shortfalls) or None)


def _no_eligible_reason(cands: list[_Candidate], tier: Tier, operation: str) -> str:
    allowed = [c for c in cands if not c.not_allowed]
    if not cands:
        return f"no model was run on {operation}"
    if not allowed:
        limits = [
            f"providers {', '.join(tier.allowed_providers)}" if tier.allowed_providers else "",
            f"vendors {', '.join(tier.allowed_vendors)}" if tier.allowed_vendors else "",
        ]
        return f"no model from the allowed {' and '.join(x for x in limits if x)} was run on {operation}"
    common = []
    if all("cost" in c.failures for c in allowed):
        unknown = any("unknown" in c.failures["cost"] for c in allowed)
        common.append(
            f"all models exceed ${tier.max_cost_usd:g} per edit" + (" or have no known price" if unknown else "")
        )
    if all("latency" in c.failures for c in allowed):
        common.append(f"all models exceed the p95 latency limit of {format_ms(tier.max_latency_p95_ms)}")
    if all("success" in c.failures for c in allowed):
        common.append(f"all models succeed less often than {tier.min_success_rate:.0%}")
    if common:
        return "; ".join(common)
    return "no model meets every constraint: " + "; ".join(
        f"{c.model}: {', '.join(c.failures.values())}" for c in allowed
    )


def _stats(c: _Candidate) -> dict[str, Any]:
    r = c.row
    p95 = _num(r["p95_total_ms"])
    return dict(
        cost_usd=_num(r["mean_cost_usd"]),
        latency_p95_ms=None if p95 is None else round(p95, 3),
        success_rate=_num(r["success_rate"]),
        completed=int(r["completed"]),
        quality=_num(r["quality"]),
        quality_ci=(_num(r["quality_ci_low"]), _num(r["quality_ci_high"])),
        n=int(r["quality_n"]),
    )


def _q(v: float | None) -> str:
    return "—" if v is None or pd.isna(v) else f"{v:.3g}"


def _ci_phrase(row: pd.Series) -> str:
    """ ", 95% CI lo–hi" — or nothing when the interval is missing (fewer than two scored cases)."""
    lo, hi = row["quality_ci_low"], row["quality_ci_high"]
    return "" if pd.isna(lo) or pd.isna(hi) else f", 95% CI {_q(lo)}–{_q(hi)}"


def _price(v: float | None) -> str:
    """A price for a rationale: "price unknown" rather than format_usd's terse "price ?"."""
    return "price unknown" if v is None or pd.isna(v) else format_usd(v)


def _below_noise(t: PairedTest, alpha: float, noise_sd: float | None) -> bool:
    """Significantly better, but by less than the judge's own noise (median SD between its passes)."""
    return noise_sd is not None and t.significant(alpha) and t.mean_diff < noise_sd


def _decide(
    operation: str,
    cands: list[_Candidate],
    tier: Tier,
    per_case: pd.DataFrame,
    spec: QualitySpec,
    alpha: float,
    noise_sd: float | None = None,
) -> OperationDecision:
    sign = 1.0 if spec.higher_is_better else -1.0
    ready = [c for c in cands if c.ready]
    meets = [c for c in cands if c.meets]
    rationale_for: dict[str, str] = {}
    if ready:
        best = min(ready, key=lambda c: (-sign * c.quality, c.cost, c.model))  # ties: the cheaper, then by name
        tests = {c.model: paired_test(per_case, best.model, c.model, spec) for c in ready if c is not best}
        tied_cheaper = [
            c
            for c in ready
            if c is not best
            and c.cost < best.cost
            and (not tests[c.model].significant(alpha) or _below_noise(tests[c.model], alpha, noise_sd))
        ]
        head = f"{len(ready)} model(s) meet every constraint of tier {tier.name} with enough evidence"
        if tied_cheaper:
            chosen = min(tied_cheaper, key=lambda c: (c.cost, -sign * c.quality, c.model))
            t = tests[chosen.model]
            evidence = (
                f"Wilcoxon one-sided p={t.p_value:.2g} on {t.n_pairs} shared case(s)"
                if t.n_pairs
                else "no shared scored case to compare"
            )
            if _below_noise(t, alpha, noise_sd):
                why_not = (
                    f"{best.model} is significantly better ({evidence}) but its advantage of {t.mean_diff:.3g} is "
                    f"below the judge's noise on {operation} (median SD {noise_sd:.3g} between judge passes)"
                )
                short = (
                    f"highest {spec.metric} {_q(best.quality)}, but its advantage {t.mean_diff:.3g} over "
                    f"{chosen.model} is below the judge's noise ({noise_sd:.3g})"
                )
            else:
                why_not = f"{best.model} is not significantly better ({evidence})"
                short = (
                    f"highest {spec.metric} {_q(best.quality)}, but not significantly better than "
                    f"{chosen.model} ({evidence})"
                )
            rationale = (
                f"{chosen.model} chosen over the top-scoring {best.model} ({spec.metric} {_q(chosen.quality)} vs "
                f"{_q(best.quality)}): {why_not} and costs "
                f"{_price(best.cost)} vs {_price(chosen.cost)} per edit. {head}."
            )
            rationale_for[best.model] = f"{short} at {_price(best.cost)} vs {_price(chosen.cost)} per edit"
        else:
            chosen = best
            cheaper = [c for c in ready if c.cost < best.cost]
            if pd.isna(best.cost):
                why = "its price is unknown, so no model could be shown to be cheaper"
            elif cheaper:
                why = f"is significantly better than every cheaper eligible model (Wilcoxon one-sided p < {alpha:g})"
            else:
                why = "no eligible model is cheaper"
            if noise_sd is not None and cheaper and not pd.isna(best.cost):
                why += f", by more than the judge's noise on {operation} (median SD {noise_sd:.3g} between passes)"
            rationale = (
                f"{best.model} has the highest {spec.metric} ({_q(best.quality)}{_ci_phrase(best.row)}, "
                f"n={int(best.row['quality_n'])}) "
                f"and {why}. {head}."
            )
        for c in ready:
            if c is chosen or c.model in rationale_for:
                continue
            vs_best = tests.get(c.model)
            if vs_best is not None and vs_best.significant(alpha):
                within = (
                    f", by {vs_best.mean_diff:.3g}: less than the judge's noise ({noise_sd:.3g}), but "
                    f"costs {_price(c.cost)} vs {_price(chosen.cost)}"
                    if _below_noise(vs_best, alpha, noise_sd)
                    else ""
                )
                rationale_for[c.model] = (
                    f"eligible; significantly below {best.model} ({spec.metric} {_q(c.quality)} vs "
                    f"{_q(best.quality)}, p={vs_best.p_value:.2g}, n={vs_best.n_pairs}){within}"
                )
            elif c.cost >= chosen.cost:
                rationale_for[c.model] = (
                    f"eligible; {spec.metric} {_q(c.quality)} not significantly below the best, but "
                    f"costs {_price(c.cost)} vs {_price(chosen.cost)}"
                )
            else:
                rationale_for[c.model] = f"eligible; {spec.metric} {_q(c.quality)}"
        return _decision(operation, "ok", chosen, None, rationale, cands, rationale_for, sign, noise_sd)
    if meets:
        scored = [c for c in meets if not pd.isna(c.row["quality"])]
        provisional = max(scored, key=lambda c: (sign * c.quality, -c.cost)) if scored else None
        shorts = "; ".join(f"{c.model}: {c.short_evidence}" for c in meets)
        if provisional is None:
            rationale = (
                f"insufficient evidence: no scored {spec.label} on {operation} "
                f"for the models meeting the constraints ({shorts})"
            )
        else:
            rationale = (
                f"insufficient evidence: {len(meets)} model(s) meet the constraints but none has enough "
                f"({shorts}); the best of them so far is {provisional.model} ({spec.metric} {_q(provisional.quality)})"
            )
        return _decision(
            operation, "insufficient_evidence", None, provisional, rationale, cands, rationale_for, sign, noise_sd
        )
    return _decision(
        operation,
        "no_eligible_model",
        None,
        None,
        _no_eligible_reason(cands, tier, operation),
        cands,
        rationale_for,
        sign,
        noise_sd,
    )


def _decision(
    operation: str,
    status: str,
    chosen: _Candidate | None,
    provisional: _Candidate | None,
    rationale: str,
    cands: list[_Candidate],
    rationale_for: dict[str, str],
    sign: float,
    noise_sd: float | None = None,
) -> OperationDecision:
    shown = chosen or provisional
    numbers = (
        _stats(shown)
        if shown
        else dict(
            cost_usd=None,
            latency_p95_ms=None,
            success_rate=None,
            completed=None,
            quality=None,
            quality_ci=(None, None),
            n=None,
        )
    )

    def order(c: _Candidate) -> tuple:
        group = 0 if c.ready else (1 if c.meets else 2)
        q = c.row["quality"]
        return (group, 0 if not pd.isna(q) else 1, -sign * (q if not pd.isna(q) else 0.0), c.model)

    alternatives = []
    for c in sorted(cands, key=order):
        if shown is not None and c.model == shown.model:
            continue
        if c.model in rationale_for:
            why = rationale_for[c.model]
        elif c.meets:
            why = f"meets the constraints but {c.short_evidence}"
        else:
            why = "excluded: " + "; ".join([*c.not_allowed, *c.failures.values()])
        s = _stats(c)
        alternatives.append(
            Alternative(
                c.model,
                s["cost_usd"],
                s["latency_p95_ms"],
                s["quality"],
                why,
                eligibility="eligible" if c.ready else "insufficient_evidence" if c.meets else "excluded",
                quality_ci=s["quality_ci"],
                n=s["n"],
                completed=s["completed"],
                success_rate=s["success_rate"],
            )
        )
    return OperationDecision(
        operation=operation,
        status=status,
        default=chosen.model if chosen else None,
        provisional=provisional.model if provisional else None,
        rationale=rationale,
        alternatives=alternatives,
        judge_noise_sd=noise_sd,
        **numbers,
    )


# -- public entry points -----------------------------------------------------------------------------


def _vendor_lookup(ws: Workspace, models: Iterable[str], vendors: Mapping[str, str] | None) -> dict[str, str | None]:
    out: dict[str, str | None] = {m: None for m in models}
    if vendors is not None:
        out.update({m: vendors.get(m) for m in out})
        return out
    from evalkit.catalog import Catalog
    from evalkit.errors import CatalogError

    try:
        catalog = Catalog.load(ws.path)
    except CatalogError:
        return out  # vendors stay unknown: a vendor-restricted tier then excludes them, saying "vendor unknown"
    for m in out:
        if m in catalog:
            out[m] = catalog.get(m).vendor
    return out


def _as_tiers(tiers: Any, ws: Workspace) -> dict[str, Tier]:
    if tiers is None:
        return load_tiers(workspace=ws.path)
    if isinstance(tiers, (str, os.PathLike)):
        return load_tiers(tiers)
    if isinstance(tiers, Tier):
        return {tiers.name: tiers}
    if isinstance(tiers, Mapping):
        if not all(isinstance(t, Tier) for t in tiers.values()):
            raise TierConfigError("(argument)", ["tiers must map names to Tier objects (use load_tiers)"])
        return dict(tiers)
    if isinstance(tiers, Iterable):
        out = {t.name: t for t in tiers}
        if not all(isinstance(t, Tier) for t in out.values()):
            raise TierConfigError("(argument)", ["tiers must be Tier objects (use load_tiers)"])
        return out
    raise InvalidInputError(f"tiers must be a path, a Tier or a dict of Tiers, got {type(tiers).__name__}")


def choose_defaults(
    ws: Workspace,
    run_id: str,
    tiers: Any = None,
    *,
    quality: QualityLike = DEFAULT_QUALITY,
    alpha: float = 0.05,
    vendors: Mapping[str, str] | None = None,
    unit: str = "call",
) -> TierDecision:
    """Pick the default model for every tier × operation of a run (rule in the module docstring).

    ``unit="session"`` decides on the run's sessions instead of its calls: a session (all turns of one model on
    one suite session) is the unit — quality is its final turn's, success a session whose every turn completed,
    and a tier's cost and latency limits apply to the whole session (:mod:`evalkit.decide.sessions`).

    ``tiers``: None (workspace ``tiers.toml`` or the bundled file), a path, a Tier, or a dict/list of
    Tiers. ``vendors`` maps model id → vendor; by default the catalogue (with the workspace's
    additions) is asked, and models it does not know have an unknown vendor.
    """
    if not 0.0 < alpha < 1.0:
        raise InvalidInputError(f"alpha must be between 0 and 1, got {alpha}")
    if unit not in ("call", "session"):
        raise InvalidInputError(f"unit must be 'call' or 'session', got {unit!r}")
    tier_map = _as_tiers(tiers, ws)
    if unit == "session":
        from evalkit.decide.sessions import session_model_table, session_quality

        table = session_model_table(ws, run_id, quality=quality, by="operation")
        _, spec = case_quality(ws, run_id, quality)
        per_case = session_quality(ws, run_id, spec)
        if table.empty:
            raise InvalidInputError(
                f"run {run_id!r} has no sessions to decide on", hint="use --unit call, or run a suite with sessions"
            )
    else:
        table = model_table(ws, run_id, quality=quality, by="operation")
        per_case, spec = case_quality(ws, run_id, quality)
    # the judge's spread between passes of this metric (None with one pass per output, or not a judge metric)
    noise = judge_noise(ws, run_id, spec.version) if spec.source == "judge" else None
    vendor_of = _vendor_lookup(ws, table["model_id"].unique(), vendors)
    decisions: dict[str, dict[str, OperationDecision]] = {}
    operations = sorted(table["operation"].unique())
    for name, tier in tier_map.items():
        decisions[name] = {}
        for op in operations:
            rows = table[(table["operation"] == op) & (table["calls"] > 0)]
            cands = [_check(r["model_id"], r, vendor_of.get(r["model_id"]), tier) for _, r in rows.iterrows()]
            noise_sd = noise.sd(spec.metric, op) if noise is not None else None
            decisions[name][op] = _decide(
                op, cands, tier, per_case[per_case["operation"] == op], spec, alpha, noise_sd=noise_sd
            )
    return TierDecision(
        run_id=run_id,
        generated_at=utcnow(),
        simulated=run_is_simulated(ws, run_id),
        quality=spec,
        alpha=alpha,
        tiers=tier_map,
        operations=decisions,
    )


def write_tier_defaults(decision: TierDecision, path: str | os.PathLike) -> Path:
    """Write ``tier_defaults.json`` (atomically: a reader never sees half a file). Returns the path.

    ``path`` is the file, or a folder (an existing directory or a name without a suffix) to write
    ``tier_defaults.json`` into."""
    target = Path(path)
    if target.is_dir() or not target.suffix:
        target = target / "tier_defaults.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(decision.to_dict(), indent=2, allow_nan=False, ensure_ascii=False)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tier_defaults-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


__all__ = [
    "Tier",
    "TierConfigError",
    "TierDecision",
    "OperationDecision",
    "Alternative",
    "PairedTest",
    "load_tiers",
    "choose_defaults",
    "paired_test",
    "write_tier_defaults",
    "SCHEMA",
]
