"""Scoring a run: automatic image metrics, the pinned VLM judge, and arena rankings.

``score_run(ws, run_id, auto=True, judge=False, pairwise=False)`` writes scores next to each call:

* **auto** (:mod:`evalkit.scoring.auto`): offline metrics for every completed call, source ``auto``,
  version ``AUTO_METRICS_VERSION``. Already-scored calls are skipped, so re-running is free.
* **judge** (:mod:`evalkit.scoring.judge.client`): VIEScore as GEdit-Bench applies it, source ``judge``,
  version = judge model | prompt version | image encoding. Cached per (judge, prompt, images).
* **pairwise**: the judge picks the better of two edits per case; votes land in the ratings table,
  where :func:`rankings` fits Bradley–Terry strengths (with human votes, or separately).

Read scores back with ``Workspace.scores(run_id)`` (tidy: call, metric, value, source, version) and
rankings with ``rankings(ws, run_id, source=…)`` (Bradley–Terry, from the ratings table).
"""

from __future__ import annotations

import asyncio
import io
import os
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from evalkit.errors import EvalkitError, InvalidInputError
from evalkit.progress import progress_bar
from evalkit.scoring.agreement import Agreement, Estimate, judge_human_agreement, run_agreement, swap_consistency
from evalkit.store import CallStatus, Workspace

#: below this many calls, scoring runs in-process (a worker pool costs ~1 s to start)
_POOL_THRESHOLD = 40


@dataclass
class ScoreSummary:
    run_id: str
    auto_scored: int = 0
    auto_skipped: int = 0
    auto_failed_decode: int = 0
    judge: Any = None
    pairwise: Any = None
    notes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        parts = [f"scored run {self.run_id}: {self.auto_scored} calls with automatic metrics"]
        if self.auto_skipped:
            parts.append(f"{self.auto_skipped} already scored")
        if self.auto_failed_decode:
            parts.append(f"{self.auto_failed_decode} outputs did not decode")
        if self.judge is not None:
            j = self.judge
            parts.append(
                f"judge {j.version}: {j.scored} scored, {j.unscored} unscored, {j.requests_sent} requests "
                f"({j.requests_cached} cached)"
            )
        if self.pairwise is not None:
            p = self.pairwise
            parts.append(f"pairwise: {p.scored} pairs judged, {p.unscored} unscored")
        return "; ".join(parts + self.notes)


# ---- automatic metrics --------------------------------------------------------------------------------


#: metrics of a session's turn against the session's original image (how far the session has drifted from it),
#: stored as ``drift_<metric>``; the unprefixed metrics compare a turn with its own input (the previous output)
DRIFT_METRICS = ("ssim", "psnr", "l1")


def _score_case(
    task: tuple[bytes, bytes | None, list[tuple[str, str | None, str, tuple[int, int] | None, bytes | None]]],
) -> list[tuple[str, list]]:
    """Worker: all outputs of one case against its (decoded once) source; a session's turn also against the
    session's original (``drift_*``). Picklable for a process pool."""
    from evalkit.scoring.auto import auto_metrics, prepare_source

    source_bytes, mask_bytes, calls = task
    src = prepare_source(source_bytes)
    out = []
    originals: dict[bytes, Any] = {}
    for call_id, output_path, operation, requested, original in calls:
        metrics = auto_metrics(src, output_path, operation=operation, mask=mask_bytes, requested_size=requested)
        found = [(m.name, m.value, m.detail) for m in metrics]
        if original is not None:
            if original not in originals:
                originals[original] = prepare_source(original)
            for m in auto_metrics(originals[original], output_path, operation="general_edit"):
                if m.name in DRIFT_METRICS:
                    found.append((f"drift_{m.name}", m.value, f"vs the session's original image; {m.detail}"))
        out.append((call_id, found))
    return out


def auto_score_run(
    ws: Workspace, run_id: str, *, workers: int | None = None, force: bool = False, progress: bool = True
) -> ScoreSummary:
    """Automatic metrics for every completed call of ``run_id`` that is not scored yet."""
    from evalkit.scoring.auto import AUTO_METRICS_VERSION

    calls = ws.calls(run_id)
    done = calls[calls.status == CallStatus.COMPLETED]
    scored = {cid for cid, _ in ws.scored_keys(run_id, "auto", AUTO_METRICS_VERSION)} if not force else set()
    todo = done[~done.call_id.isin(scored)]
    summary = ScoreSummary(run_id=run_id, auto_skipped=len(done) - len(todo))
    if todo.empty:
        return summary
    tasks = []
    outputs = calls.set_index("call_id")["output_path"]
    for case_id, group in todo.groupby("case_id", sort=False):
        inputs, mask = ws.case_images(run_id, case_id)
        items = []
        later: list[tuple] = []  # a session's later turns: each against its own input, the previous output
        for r in group.itertuples():
            req = (
                (int(r.requested_width), int(r.requested_height))
                if pd.notna(r.requested_width) and pd.notna(r.requested_height)
                else None
            )
            original = inputs[0] if pd.notna(r.turn) else None
            item = (r.call_id, r.output_path, r.operation, req, original)
            if isinstance(r.parent_call_id, str):
                later.append((r.parent_call_id, item))
            else:
                items.append(item)
        if items:
            tasks.append((inputs[0], mask, items))
        for parent, item in later:
            parent_output = outputs.get(parent)
            if isinstance(parent_output, str):
                with open(parent_output, "rb") as f:
                    tasks.append((f.read(), _fitting_mask(mask, parent_output), [item]))
    workers = workers if workers is not None else min(2, os.cpu_count() or 1)
    bar = progress_bar(len(todo), f"auto metrics {run_id}", enabled=progress)
    try:
        if workers > 1 and len(todo) >= _POOL_THRESHOLD:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                for result in pool.map(_score_case, tasks):
                    _write_auto(ws, run_id, result, AUTO_METRICS_VERSION, summary, bar)
        else:
            for task in tasks:
                _write_auto(ws, run_id, _score_case(task), AUTO_METRICS_VERSION, summary, bar)
    finally:
        if bar is not None:
            bar.close()
    return summary


def _fitting_mask(mask: bytes | None, image_path: str) -> bytes | None:
    """A turn's mask (drawn on the session's original) when it fits the image it is compared with, else None."""
    if mask is None:
        return None
    from PIL import Image

    with Image.open(image_path) as img, Image.open(io.BytesIO(mask)) as m:
        return mask if img.size == m.size else None


def _write_auto(ws: Workspace, run_id: str, result: list, version: str, summary: ScoreSummary, bar: Any) -> None:
    rows = []
    for call_id, metrics in result:
        for name, value, detail in metrics:
            if value is None:
                continue  # not applicable to this call (e.g. size_error without a requested size)
            rows.append(
                {
                    "run_id": run_id,
                    "call_id": call_id,
                    "metric": name,
                    "source": "auto",
                    "version": version,
                    "value": value,
                    "status": "scored",
                    "detail": detail or None,
                }
            )
            if name == "decodes" and value == 0:
                summary.auto_failed_decode += 1
        summary.auto_scored += 1
        if bar is not None:
            bar.update(1)
    ws.put_scores(rows)


# ---- the judge --------------------------------------------------------------------------------------------


async def ajudge_score_run(
    ws: Workspace,
    run_id: str,
    *,
    mode: str = "viescore",
    judge_overrides: Mapping[str, Any] | None = None,
    concurrency: int = 4,
    budget_usd: float | None = None,
    pairs_per_case: int | None = None,
    progress: bool = True,
    judge_preset: str | None = None,
    swap_fraction: float = 0.0,
) -> Any:
    from evalkit.scoring.judge import Judge, JudgeConfig, judge_run

    overrides = dict(judge_overrides or {})
    if judge_preset:
        overrides.setdefault("preset", judge_preset)
    config = JudgeConfig.from_env(**overrides)
    async with Judge(config) as judge:
        return await judge_run(
            ws,
            run_id,
            judge,
            mode=mode,
            concurrency=concurrency,
            budget_usd=budget_usd,
            pairs_per_case=pairs_per_case,
            progress=progress,
            swap_fraction=swap_fraction,
        )


async def ascore_run(
    ws: Workspace | str | os.PathLike | None,
    run_id: str,
    *,
    auto: bool = True,
    judge: bool = False,
    pairwise: bool = False,
    judge_overrides: Mapping[str, Any] | None = None,
    concurrency: int = 4,
    budget_usd: float | None = None,
    pairs_per_case: int | None = None,
    workers: int | None = None,
    progress: bool = True,
    judge_preset: str | None = None,
    swap_fraction: float = 0.0,
) -> ScoreSummary:
    """Async :func:`score_run` (for notebooks: ``await evalkit.scoring.ascore_run(...)``).
    ``judge_preset`` (or ``EVALKIT_JUDGE_PRESET``) pins the judge (:mod:`evalkit.scoring.judge.presets`);
    ``swap_fraction`` asks that share of pairwise pairs in both orders (position-bias check)."""
    ws = ws if isinstance(ws, Workspace) else Workspace(ws, create=False)
    ws.get_run(run_id)  # a clear error for an unknown run
    if not (auto or judge or pairwise):
        raise InvalidInputError("nothing to score", hint="pass auto, judge and/or pairwise")
    summary = ScoreSummary(run_id=run_id)
    if auto:
        summary = await asyncio.to_thread(auto_score_run, ws, run_id, workers=workers, progress=progress)
    if judge:
        summary.judge = await ajudge_score_run(
            ws,
            run_id,
            mode="viescore",
            judge_overrides=judge_overrides,
            concurrency=concurrency,
            budget_usd=budget_usd,
            progress=progress,
            judge_preset=judge_preset,
        )
    if pairwise:
        summary.pairwise = await ajudge_score_run(
            ws,
            run_id,
            mode="pairwise",
            judge_overrides=judge_overrides,
            concurrency=concurrency,
            budget_usd=budget_usd,
            pairs_per_case=pairs_per_case,
            progress=progress,
            judge_preset=judge_preset,
            swap_fraction=swap_fraction,
        )
    return summary


def score_run(ws: Workspace | str | os.PathLike | None, run_id: str, **kwargs: Any) -> ScoreSummary:
    """Score a run (see the module docstring). Synchronous; in Jupyter use :func:`ascore_run`."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(ascore_run(ws, run_id, **kwargs))
    raise EvalkitError(
        "score_run() cannot run inside an event loop", hint="use `await evalkit.scoring.ascore_run(...)`"
    )


# ---- rankings ----------------------------------------------------------------------------------------------


def votes_from_ratings(ratings: pd.DataFrame) -> pd.DataFrame:
    """Pair ratings (left/right/tie/both_bad) as arena votes (model_a/model_b/winner)."""
    pairs = ratings[ratings["kind"] == "pair"]
    winner = pairs["choice"].map({"left": "a", "right": "b", "tie": "tie", "both_bad": "both_bad"})
    return pd.DataFrame(
        {
            "model_a": pairs["model_left"].values,
            "model_b": pairs["model_right"].values,
            "winner": winner.values,
            "case_id": pairs["case_id"].values,
            "rater": pairs["rater"].values,
            "source": pairs["source"].values,
        }
    )


def rankings(
    ws: Workspace, run_id: str, *, source: str | None = None, n_bootstrap: int = 200, seed: int = 0
) -> pd.DataFrame:
    """Bradley–Terry table of a run's pairwise votes (``source`` = human | judge | None for both)."""
    from evalkit.scoring.arena import RESULT_COLUMNS, bradley_terry

    votes = votes_from_ratings(ws.ratings(run_id, source=source))
    if votes.empty:
        return pd.DataFrame(columns=RESULT_COLUMNS)
    return bradley_terry(votes, n_bootstrap=n_bootstrap, seed=seed)


def agreement(ws: Workspace, run_id: str) -> dict[str, Any]:
    """How far the run's raters agree: among human raters (percent agreement, Fleiss/Cohen kappa on
    items rated by several people) and between the judge and the humans (Spearman and Kendall rank
    correlation of their Bradley–Terry strengths over the models both ranked). Parts without enough
    data are None."""
    from evalkit.scoring.arena import inter_rater_agreement, rank_agreement

    votes = votes_from_ratings(ws.ratings(run_id))
    human = votes[votes["source"] == "human"]
    out: dict[str, Any] = {"human_raters": None, "judge_vs_human": None}
    if not human.empty:
        out["human_raters"] = inter_rater_agreement(human)
    if not human.empty and (votes["source"] == "judge").any():
        h = rankings(ws, run_id, source="human")
        j = rankings(ws, run_id, source="judge")
        h_s = {m: s for m, s in zip(h["model"], h["strength"], strict=True) if s == s}
        j_s = {m: s for m, s in zip(j["model"], j["strength"], strict=True) if s == s}
        if len(set(h_s) & set(j_s)) >= 2:
            out["judge_vs_human"] = rank_agreement(j_s, h_s)
    return out


__all__ = [
    "Agreement",
    "Estimate",
    "ScoreSummary",
    "agreement",
    "judge_human_agreement",
    "run_agreement",
    "swap_consistency",
    "ascore_run",
    "auto_score_run",
    "rankings",
    "score_run",
    "votes_from_ratings",
    "ajudge_score_run",
]
