"""The judge's own noise: how far its repeated passes over the same output disagree.

``evalkit score --judge --judge-passes N`` asks the judge N times per output (each pass its own request
and cache entry) and stores every pass in the workspace's ``judge_passes`` table; the score is the mean of
the valid passes. From those passes, per metric (and per metric and operation):

* ``median_sd`` — the median over outputs of the standard deviation between an output's valid passes
  (sample SD, ``ddof=1``), over the outputs with at least two valid passes;
* ``share_disagree`` — the share of those outputs whose passes differ by ≥ :data:`DISAGREE_POINTS`
  points (largest − smallest valid pass, on the 0–10 scale).

Unscored passes are left out (never counted as 0). With one pass per output there is no figure (None).
The tier rule (:mod:`evalkit.decide.tiers`) prefers a cheaper model when the best's advantage on an
operation is below ``median_sd`` there.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from evalkit.store import Workspace

#: passes that differ by at least this many points (0–10 scale) "disagree"
DISAGREE_POINTS = 2.0
#: the metric the headline figure (``noise_sd``) is about: the overall VIEScore, the usual quality column
HEADLINE_METRIC = "viescore_o"


@dataclass(frozen=True)
class NoiseFigure:
    """The spread between passes over a set of outputs (those with ≥ 2 valid passes)."""

    outputs: int
    median_sd: float | None
    share_disagree: float | None

    def describe(self) -> str:
        if self.median_sd is None:
            return "no output has two valid passes"
        return (
            f"median SD {self.median_sd:.3g} between passes over {self.outputs} output(s); "
            f"{self.share_disagree:.0%} differ by ≥ {DISAGREE_POINTS:g} points"
        )


@dataclass
class JudgeNoise:
    """The judge's noise in one run at one judge version (see the module docstring)."""

    version: str | None
    passes: int  # the most passes any output has
    by_metric: dict[str, NoiseFigure] = field(default_factory=dict)
    by_operation: dict[str, dict[str, NoiseFigure]] = field(default_factory=dict)  # metric -> operation -> figure

    def sd(self, metric: str = HEADLINE_METRIC, operation: str | None = None) -> float | None:
        """The median SD between passes of ``metric`` (on ``operation`` when given); None without a figure."""
        fig = self.by_metric.get(metric) if operation is None else self.by_operation.get(metric, {}).get(operation)
        return None if fig is None else fig.median_sd

    @property
    def measured(self) -> bool:
        return any(f.median_sd is not None for f in self.by_metric.values())

    def describe(self, metric: str = HEADLINE_METRIC) -> str:
        if self.passes < 2:
            return "one pass per output: the judge's noise is not measured (--judge-passes N, N ≥ 2, measures it)"
        fig = self.by_metric.get(metric)
        return f"{metric}: " + (fig.describe() if fig else "no valid passes") + f" ({self.passes} passes)"

    def as_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "passes": self.passes,
            "disagree_points": DISAGREE_POINTS,
            "by_metric": {m: asdict(f) for m, f in self.by_metric.items()},
            "by_operation": {m: {op: asdict(f) for op, f in ops.items()} for m, ops in self.by_operation.items()},
        }


def _figure(values: pd.DataFrame) -> NoiseFigure:
    """``values``: columns call_id, value (valid passes only)."""
    grouped = values.groupby("call_id")["value"]
    counts = grouped.count()
    multi = counts[counts >= 2].index
    if len(multi) == 0:
        return NoiseFigure(0, None, None)
    sub = values[values["call_id"].isin(multi)].groupby("call_id")["value"]
    sds = sub.std(ddof=1)
    spread = sub.max() - sub.min()
    return NoiseFigure(
        outputs=len(multi),
        median_sd=float(np.median(sds.to_numpy(dtype=float))),
        share_disagree=float((spread >= DISAGREE_POINTS - 1e-9).mean()),
    )


def noise_from_passes(passes: pd.DataFrame, version: str | None = None) -> JudgeNoise:
    """:class:`JudgeNoise` from a ``Workspace.judge_passes`` frame. ``version`` picks the judge version
    (default: the one with the most passes in the frame)."""
    if passes.empty:
        return JudgeNoise(version, 0)
    if version is None:
        version = str(passes.groupby("version")["pass"].count().idxmax())
    rows = passes[passes["version"] == version]
    if rows.empty:
        return JudgeNoise(version, 0)
    out = JudgeNoise(version, int(rows["pass"].max()))
    valid = rows[(rows["status"] == "scored") & rows["value"].notna()]
    valid = valid.assign(value=valid["value"].astype(float), operation=valid["operation"].fillna("general_edit"))
    for metric, m_rows in valid.groupby("metric", sort=True):
        out.by_metric[str(metric)] = _figure(m_rows)
        out.by_operation[str(metric)] = {str(op): _figure(o_rows) for op, o_rows in m_rows.groupby("operation")}
    return out


def judge_noise(ws: Workspace, run_id: str, version: str | None = None) -> JudgeNoise:
    """The judge's noise in ``run_id`` (see :func:`noise_from_passes`)."""
    return noise_from_passes(ws.judge_passes(run_id), version)


__all__ = ["DISAGREE_POINTS", "HEADLINE_METRIC", "JudgeNoise", "NoiseFigure", "judge_noise", "noise_from_passes"]
