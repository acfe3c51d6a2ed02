"""What "quality" means in a table, a tier choice, a comparison or a report: the one home of the rule.

A quality is one metric from one source (``auto`` | ``judge`` | ``human``) at one version
(:class:`QualitySpec`). It is written ``"METRIC[:SOURCE][@VERSION]"`` (the version after ``@`` because judge
versions contain ``|`` and may contain ``:``). Unless one is named, a run is ranked by the judge's overall
VIEScore when it has one (:data:`JUDGE_QUALITY`), else by SSIM (:data:`AUTO_QUALITY`), which measures
preservation only — :func:`choose_quality` says which and why.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

import pandas as pd

from evalkit.errors import InvalidInputError
from evalkit.store import Workspace

#: automatic metrics where a smaller number is the better edit (evalkit.scoring.auto)
LOWER_IS_BETTER = frozenset({"l1", "l1_outside_mask", "aspect_ratio_error", "size_error", "clipping", "noise_sigma"})


AUTO_CAVEAT = (
    "No judge scores in this run, so quality is {metric} ({source}): a pixel metric against the source image. "
    "It measures how much of the source was preserved, not whether the instruction was followed — an "
    "unchanged output scores best. Score the run with the VLM judge before choosing models on quality."
)


@dataclass(frozen=True)
class QualitySpec:
    """Which score counts as "quality": one metric from one source (auto | judge | human), one version."""

    metric: str
    source: str = "auto"
    version: str | None = None
    higher_is_better: bool = True

    @property
    def label(self) -> str:
        return f"{self.metric} ({self.source})"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


QualityLike = QualitySpec | tuple | str


#: the judge's overall VIEScore, when a run has it: what the field reports for instruction edits
JUDGE_QUALITY = QualitySpec("viescore_o", "judge")
#: the automatic fallback (preservation only: an unchanged output scores best)
AUTO_QUALITY = QualitySpec("ssim", "auto")
#: the static default of functions that take a quality argument
DEFAULT_QUALITY = AUTO_QUALITY


def as_quality(quality: QualityLike) -> QualitySpec:
    """Accept ``QualitySpec``, ``(metric, source[, version])`` or ``"metric[:source][@version]"``."""
    if isinstance(quality, QualitySpec):
        return quality
    if isinstance(quality, str):
        spec = parse_quality(quality)
        if spec is None:
            raise InvalidInputError("quality is empty", hint='e.g. "viescore_o:judge" or "ssim"')
        return spec
    parts: tuple
    if isinstance(quality, tuple) and 1 <= len(quality) <= 3:
        parts = quality
    else:
        raise InvalidInputError(
            f"quality must be (metric, source[, version]) or 'metric:source', got {quality!r}",
            hint='e.g. quality=("ssim", "auto") or quality=("viescore_o", "judge")',
        )
    metric = str(parts[0])
    source = str(parts[1]) if len(parts) > 1 else "auto"
    version = str(parts[2]) if len(parts) > 2 and parts[2] is not None else None
    if source not in ("auto", "judge", "human"):
        raise InvalidInputError(f"quality source must be auto, judge or human, got {source!r}")
    return QualitySpec(metric, source, version, metric not in LOWER_IS_BETTER)


def resolve_quality(scores: pd.DataFrame, quality: QualityLike) -> QualitySpec:
    """Fill in the version: the most recently written one for that metric and source (None if no scores)."""
    spec = as_quality(quality)
    if spec.version is not None:
        return spec
    rows = scores[(scores["metric"] == spec.metric) & (scores["source"] == spec.source)]
    if rows.empty:
        return spec
    return replace(spec, version=str(rows["version"].iloc[-1]))


def scored_values(scores: pd.DataFrame, spec: QualitySpec) -> pd.DataFrame:
    """The scored rows (value present) of one quality: columns call_id, model_id, case_id, …, value."""
    rows = scores[(scores["metric"] == spec.metric) & (scores["source"] == spec.source)]
    if spec.version is not None:
        rows = rows[rows["version"] == spec.version]
    rows = rows[(rows["status"] == "scored") & rows["value"].notna()]
    return rows.assign(value=rows["value"].astype(float))


# -- quality ------------------------------------------------------------------------------------------


def parse_quality(text: str | None) -> QualitySpec | None:
    """``"metric[:source][@version]"`` → QualitySpec; empty → None (choose automatically).

    The version comes after ``@`` because judge versions contain ``|`` and may contain ``:``."""
    text = (text or "").strip()
    if not text:
        return None
    head, at, version = text.partition("@")
    metric, _, source = head.partition(":")
    if not metric.strip() or (at and not version.strip()):
        raise InvalidInputError(
            f"bad quality spec {text!r}", hint="write METRIC[:SOURCE][@VERSION], e.g. viescore_o:judge"
        )
    spec = as_quality((metric.strip(), source.strip() or "auto", version.strip() or None))
    return spec


def quality_string(quality: QualityLike | None) -> str:
    """The inverse of :func:`parse_quality` (what build_report passes to the notebook)."""
    if quality is None:
        return ""
    spec = as_quality(quality)
    return f"{spec.metric}:{spec.source}" + (f"@{spec.version}" if spec.version else "")


def choose_quality(ws: Workspace, run_id: str, quality: QualityLike | None = None) -> tuple[QualitySpec, str]:
    """The quality a report ranks by, and a sentence saying why.

    Named explicitly: it must have scored values in the run (else InvalidInputError listing what is
    scored). Otherwise the judge's overall VIEScore when the run has it, else SSIM (auto) with a
    warning that it measures preservation, else SSIM with nothing scored (the report then says so)."""
    scores = ws.scores(run_id)
    if quality is not None:
        spec = as_quality(quality)
        spec = resolve_quality(scores, spec)
        if scored_values(scores, spec).empty:
            have = sorted({f"{m}:{s}" for m, s in zip(scores["metric"], scores["source"], strict=True)})
            raise InvalidInputError(
                f"run {run_id!r} has no scored values for quality {spec.label}"
                + (f" version {spec.version}" if spec.version else ""),
                hint=f"scored in this run: {', '.join(have[:15])}"
                if have
                else "score the run first (evalkit.scoring.score_run)",
            )
        return spec, f"Quality is {spec.label}, as requested."
    for candidate in (JUDGE_QUALITY, AUTO_QUALITY):
        spec = resolve_quality(scores, candidate)
        if not scored_values(scores, spec).empty:
            if spec.source == "judge":
                why = (
                    f"Quality is the VLM judge's overall VIEScore ({spec.metric}, 0–10; judge {spec.version}), "
                    "the measure GEdit-Bench and model cards use for instruction-based edits."
                )
            else:
                why = AUTO_CAVEAT.format(metric=spec.metric, source=spec.source)
            return spec, why
    return AUTO_QUALITY, "The run has no scores yet: quality columns are empty and no tier default can be chosen."


__all__ = [
    "AUTO_CAVEAT",
    "AUTO_QUALITY",
    "DEFAULT_QUALITY",
    "JUDGE_QUALITY",
    "LOWER_IS_BETTER",
    "QualityLike",
    "QualitySpec",
    "as_quality",
    "choose_quality",
    "parse_quality",
    "quality_string",
    "resolve_quality",
    "scored_values",
]
