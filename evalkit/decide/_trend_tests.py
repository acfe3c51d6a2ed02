"""The tests behind `evalkit trends`: the latest run of one model against its baseline, one metric at a time.

Each function returns a :class:`Test`: the baseline and latest values, the change (relative for latency
and cost, in percentage points for success, absolute on the quality's scale), a 95 % bootstrap interval
of that change from a seeded ``numpy.random.Generator`` (deterministic), and a two-sided p-value
(None where nothing is tested). :func:`bh_qvalues` controls the false-discovery rate across the tests of
one call (Benjamini–Hochberg, ``scipy.stats.false_discovery_control``).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import stats

#: metric → (label, column or kind, percentile)
METRICS: dict[str, tuple[str, str, float | None]] = {
    "latency_p50": ("p50 latency", "total_ms", 50.0),
    "latency_p95": ("p95 latency", "total_ms", 95.0),
    "inference_p50": ("p50 inference", "inference_ms", 50.0),
    "cost": ("cost per attempted call", "prices", None),
    "success": ("success rate", "completed", None),
    "quality": ("quality", "quality", None),
}
LATENCY = ("latency_p50", "latency_p95", "inference_p50")


@dataclass(frozen=True)
class ModelCalls:
    """One model's calls in one run, as arrays: what every metric is computed from."""

    total_ms: np.ndarray  # completed calls with a value
    inference_ms: np.ndarray
    attempted: int  # completed, failed or unknown outcome
    completed: int
    prices: np.ndarray  # list prices of the attempted calls whose price is known


#: bootstrap resamples for the interval of a change
N_BOOT = 1000
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Test:
    """The latest run against the baseline for one model × metric."""

    baseline: float
    latest: float
    change: float  # relative (latency, cost), a rate difference (success) or absolute (quality)
    ci: tuple[float, float]
    p_value: float | None  # None: not tested (no data, or an exact comparison)
    n_baseline: int
    n_latest: int
    test: str
    #: the change points the way the test's shift does (Mann–Whitney: latest mostly above or below)
    agrees: bool = True


def _nan_test(name: str, n_base: int = 0, n_new: int = 0, base: float = math.nan, new: float = math.nan) -> Test:
    return Test(base, new, math.nan, (math.nan, math.nan), None, n_base, n_new, name)


def _interval(draws: np.ndarray) -> tuple[float, float]:
    draws = draws[np.isfinite(draws)]
    if draws.size == 0:
        return (math.nan, math.nan)
    tail = (1 - CONFIDENCE) / 2 * 100
    lo, hi = np.percentile(draws, [tail, 100 - tail])
    return (float(lo), float(hi))


def _resampled_percentile(values: np.ndarray, q: float, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """The ``q`` percentile (numpy's linear method) of ``n_boot`` resamples of ``values`` with replacement.

    Drawn exactly without building the resamples: a resample's indices are ``floor(n·U)`` for ``n`` uniform
    ``U``, so its k-th smallest index is ``floor(n·U₍ₖ₎)`` with the k-th order statistic ``U₍ₖ₎ ~ Beta(k+1,
    n−k)`` (0-based k), and the next one is ``U₍ₖ₎ + (1 − U₍ₖ₎)·Beta(1, n−k−1)``. O(n_boot) instead of
    O(n_boot·n): the baseline of 30 nightly runs has thousands of calls per model."""
    x = np.sort(values)
    n = x.size
    pos = (n - 1) * q / 100.0
    lo = int(math.floor(pos))
    frac = pos - lo
    u_lo = rng.beta(lo + 1, n - lo, n_boot)
    i_lo = np.minimum((u_lo * n).astype(np.int64), n - 1)
    if frac == 0 or lo + 1 >= n:
        return x[i_lo]
    u_hi = u_lo + (1.0 - u_lo) * rng.beta(1, n - lo - 1, n_boot)
    i_hi = np.minimum((u_hi * n).astype(np.int64), n - 1)
    return x[i_lo] * (1 - frac) + x[i_hi] * frac


def latency_test(
    baseline: np.ndarray, latest: np.ndarray, q: float, *, n_boot: int = N_BOOT, rng: np.random.Generator
) -> Test:
    """Mann–Whitney U (two-sided) of the latest run's per-call latencies against the baseline's; the change
    is the relative change of the ``q`` percentile, with a bootstrap interval over calls of both."""
    name = "mann_whitney_u"
    if baseline.size == 0 or latest.size == 0:
        return _nan_test(name, baseline.size, latest.size)
    b = float(np.percentile(baseline, q))
    n = float(np.percentile(latest, q))
    change = (n - b) / b if b > 0 else math.nan
    res = stats.mannwhitneyu(latest, baseline, alternative="two-sided")
    p = float(res.pvalue)
    shift = float(res.statistic) / (latest.size * baseline.size) - 0.5  # > 0: the latest calls rank higher
    agrees = not (change * shift < 0)
    if baseline.size < 2 or latest.size < 2 or not b > 0:
        return Test(b, n, change, (math.nan, math.nan), p, baseline.size, latest.size, name, agrees)
    bb = _resampled_percentile(baseline, q, n_boot, rng)
    nb = _resampled_percentile(latest, q, n_boot, rng)
    with np.errstate(divide="ignore", invalid="ignore"):
        ci = _interval((nb - bb) / bb)
    return Test(b, n, change, ci, p, baseline.size, latest.size, name, agrees)


def success_test(
    base_ok: int, base_n: int, new_ok: int, new_n: int, *, n_boot: int = N_BOOT, rng: np.random.Generator
) -> Test:
    """Fisher's exact test (two-sided) on the 2×2 counts; the change is the difference of the rates, with a
    parametric bootstrap interval (binomial draws at each observed rate)."""
    name = "fisher_exact"
    if base_n == 0 or new_n == 0:
        return _nan_test(name, base_n, new_n)
    b, n = base_ok / base_n, new_ok / new_n
    p = float(stats.fisher_exact([[new_ok, new_n - new_ok], [base_ok, base_n - base_ok]]).pvalue)
    draws = rng.binomial(new_n, n, n_boot) / new_n - rng.binomial(base_n, b, n_boot) / base_n
    return Test(b, n, n - b, _interval(draws), min(p, 1.0), base_n, new_n, name)


def quality_test(baseline: np.ndarray, latest: np.ndarray, *, n_boot: int = N_BOOT, rng: np.random.Generator) -> Test:
    """Wilcoxon signed-rank (two-sided, Pratt's zeros — as the tier rule) on paired per-case qualities; the
    change is the mean difference latest − baseline, with a bootstrap interval over cases."""
    name = "wilcoxon_signed_rank"
    if baseline.size == 0:
        return _nan_test(name)
    diff = latest - baseline
    b, n = float(baseline.mean()), float(latest.mean())
    if np.all(diff == 0):
        p = 1.0
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            p = float(stats.wilcoxon(diff, zero_method="pratt", alternative="two-sided").pvalue)
        p = p if math.isfinite(p) else 1.0
    ci = (math.nan, math.nan)
    if diff.size >= 2:
        idx = rng.integers(0, diff.size, size=(n_boot, diff.size))
        ci = _interval(diff[idx].mean(axis=1))
    return Test(b, n, float(diff.mean()), ci, p, diff.size, diff.size, name)


def cost_change(baseline: float, latest: float, n_base: int, n_new: int) -> Test:
    """Cost per attempted call: an exact relative change (prices do not jitter), no test and no interval."""
    if not (math.isfinite(baseline) and math.isfinite(latest)):
        return _nan_test("exact", n_base, n_new, baseline, latest)
    if math.isclose(latest, baseline, rel_tol=1e-9, abs_tol=1e-12):  # the same prices, summed in another order
        change = 0.0
    elif baseline == 0:
        change = math.inf
    else:
        change = (latest - baseline) / baseline
    return Test(baseline, latest, change, (change, change), None, n_base, n_new, "exact")


def bh_qvalues(p_values: list[float]) -> list[float]:
    """Benjamini–Hochberg adjusted p-values (q-values), in the order given."""
    if not p_values:
        return []
    return [float(q) for q in stats.false_discovery_control(np.asarray(p_values, dtype=float), method="bh")]
