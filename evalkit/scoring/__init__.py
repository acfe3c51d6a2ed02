"""Scoring a run: automatic image metrics, the pinned VLM judge, and arena rankings.

``score_run(ws, run_id, auto=True, judge=False, pairwise=False)`` writes scores next to each call:

* **auto** (:mod:`evalkit.scoring.auto`): offline metrics for every completed call, source ``auto``,
  version ``AUTO_METRICS_VERSION``. Already-scored calls are skipped, so re-running is free.
* **semantic** (:mod:`evalkit.scoring.semantic`, the ``evalkit[semantic]`` extra): CLIP-I, CLIP-T, CLIP
  directional similarity and DINO through ONNX Runtime, source ``auto``, version ``semantic_version()``.
  Opt-in (``semantic=True`` / ``evalkit score --semantic``); a missing model is an error naming
  ``evalkit download-semantic``. Already-scored calls are skipped.
* **judge** (:mod:`evalkit.scoring.judge.client`): VIEScore as GEdit-Bench applies it, source ``judge``,
  version = judge model | prompt version | image encoding. Cached per (judge, prompt, images, pass).
  ``judge_passes=N`` (or ``EVALKIT_JUDGE_PASSES``) judges each output N times: the score is the mean of
  the valid passes and the summary reports the judge's noise (:mod:`evalkit.scoring.judge.noise`) and
  what judging cost (reported tokens × the judge's prices: ``judge_price=(IN, OUT)`` USD per 1M tokens,
  ``EVALKIT_JUDGE_USD_PER_1M_INPUT``/``_OUTPUT``, the preset's published price, or $0 on loopback).
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
from pathlib import Path
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
    semantic_scored: int = 0
    semantic_skipped: int = 0
    judge: Any = None
    pairwise: Any = None
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """For ``evalkit score --json``: the automatic counts, and a ``judge`` (and ``pairwise``) object with
        requests, cached, scored, unscored, cost_usd and noise_sd (:meth:`JudgeSummary.judge_object`)."""
        return {
            "run_id": self.run_id,
            "auto": {
                "scored": self.auto_scored,
                "skipped": self.auto_skipped,
                "failed_decode": self.auto_failed_decode,
            },
            "judge": self.judge.judge_object() if self.judge is not None else None,
            "pairwise": self.pairwise.judge_object() if self.pairwise is not None else None,
            "notes": list(self.notes),
        }

    def __str__(self) -> str:
        """A few short lines (each fits a 100-column terminal): the run, then one indented line per part."""
        parts = [f"scored run {self.run_id}: {self.auto_scored} calls with automatic metrics"]
        if self.auto_skipped:
            parts.append(f"{self.auto_skipped} already scored")
        if self.auto_failed_decode:
            parts.append(f"{self.auto_failed_decode} outputs did not decode")
        if self.semantic_scored or self.semantic_skipped:
            parts.append(
                f"semantic metrics: {self.semantic_scored} calls"
                + (f" ({self.semantic_skipped} already scored)" if self.semantic_skipped else "")
            )
        if self.judge is not None:
            j = self.judge
            cost = f"judging cost ${j.cost_usd:.4f}" + (
                f" + {j.cost_unknown_requests} request(s) of unknown cost" if j.cost_unknown_requests else ""
            )
            parts.append(f"judge {j.version}:")
            parts.append(
                f"  {j.scored} scored, {j.unscored} unscored, {j.requests_sent} requests ({j.requests_cached} cached), "
                + cost
            )
            if j.passes > 1 and j.noise is not None:
                noise = j.noise.describe().split("; ")
                parts += [f"  {j.passes} judge passes per output", f"  judge noise {noise[0]}"]
                parts += [f"  {more}" for more in noise[1:]]
        if self.pairwise is not None:
            p = self.pairwise
            parts.append(f"pairwise: {p.scored} pairs judged, {p.unscored} unscored")
        return "\n  ".join(parts + self.notes)


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
    rows = _auto_rows(run_id, result, version)
    for _call_id, metrics in result:
        if any(name == "decodes" and value == 0 for name, value, _ in metrics):
            summary.auto_failed_decode += 1
        summary.auto_scored += 1
        if bar is not None:
            bar.update(1)
    ws.put_scores(rows)


def _auto_rows(run_id: str, result: list, version: str) -> list[dict[str, Any]]:
    """Score rows (source ``auto``) for ``[(call_id, [(metric, value, detail), …]), …]``."""
    return [
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
        for call_id, metrics in result
        for name, value, detail in metrics
        if value is not None  # not applicable to this call (e.g. size_error without a requested size)
    ]


# ---- semantic metrics (evalkit[semantic]) ----------------------------------------------------------------


def semantic_score_run(
    ws: Workspace,
    run_id: str,
    *,
    encoders: Any = None,
    model_dir: str | os.PathLike | None = None,
    force: bool = False,
    progress: bool = True,
    summary: ScoreSummary | None = None,
) -> ScoreSummary:
    """CLIP-I / CLIP-T / CLIP directional / DINO for every completed call not scored at this version.

    ``encoders`` is a :class:`~evalkit.scoring.semantic.SemanticEncoders` (default: loaded from
    ``model_dir``, ``$EVALKIT_SEMANTIC_MODEL_DIR`` or the Hugging Face cache). Each case's source is
    embedded once and its outputs in batches; each case's rows are written as soon as it is done. Outputs
    that do not decode get no semantic rows (the pixel metrics record ``decodes = 0``)."""
    from evalkit.images import decode_output, to_rgb
    from evalkit.scoring.semantic import SemanticEncoders, SemanticItem, semantic_metrics, semantic_version

    version = semantic_version()
    summary = summary if summary is not None else ScoreSummary(run_id=run_id)
    calls = ws.calls(run_id)
    done = calls[calls.status == CallStatus.COMPLETED]
    scored = {cid for cid, _ in ws.scored_keys(run_id, "auto", version)} if not force else set()
    todo = done[~done.call_id.isin(scored)]
    summary.semantic_skipped = len(done) - len(todo)
    if todo.empty:
        return summary
    if encoders is None:
        encoders = SemanticEncoders.load(model_dir)
    cases = ws.cases(run_id).set_index("case_id")
    caption = lambda case_id, key: _text_or_none(cases.at[case_id, key]) if key in cases.columns else None  # noqa: E731
    bar = progress_bar(len(todo), f"semantic metrics {run_id}", enabled=progress)
    try:
        for case_id, group in todo.groupby("case_id", sort=False):
            inputs, _ = ws.case_images(run_id, case_id)
            source = to_rgb(decode_output(inputs[0]))
            items = []
            for r in group.itertuples():
                try:
                    out = to_rgb(decode_output(Path(r.output_path).read_bytes()))
                except (EvalkitError, OSError, TypeError, ValueError):
                    continue  # recorded as decodes = 0 by the pixel metrics
                items.append(
                    SemanticItem(
                        r.call_id,
                        out,
                        r.operation,
                        caption(case_id, "source_caption"),
                        caption(case_id, "target_caption"),
                    )
                )
            results = semantic_metrics(encoders, source, items)
            tuples = [(cid, [(m.name, m.value, m.detail) for m in metrics]) for cid, metrics in results]
            ws.put_scores(_auto_rows(run_id, tuples, version))
            summary.semantic_scored += len(results)
            if bar is not None:
                bar.update(len(group))
    finally:
        if bar is not None:
            bar.close()
    return summary


def _text_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


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
    judge_passes: int | None = None,
    judge_price: tuple[float, float] | str | None = None,
) -> Any:
    from evalkit.scoring.judge import Judge, JudgeConfig, judge_run
    from evalkit.scoring.judge.config import parse_price_pair

    overrides = dict(judge_overrides or {})
    if judge_preset:
        overrides.setdefault("preset", judge_preset)
    if judge_price is not None:
        pin, pout = parse_price_pair(judge_price) if isinstance(judge_price, str) else judge_price
        overrides.update(
            usd_per_1m_input_tokens=float(pin), usd_per_1m_output_tokens=float(pout), price_source="--judge-price"
        )
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
            passes=resolve_judge_passes(judge_passes) if mode == "viescore" else 1,
        )


def resolve_judge_passes(passes: int | None) -> int:
    """``passes``, else ``EVALKIT_JUDGE_PASSES``, else 1 (a bad value is a clear error)."""
    if passes is not None:
        return passes
    raw = os.environ.get("EVALKIT_JUDGE_PASSES", "").strip()
    if not raw:
        return 1
    try:
        return int(raw)
    except ValueError:
        raise InvalidInputError(
            f"EVALKIT_JUDGE_PASSES must be a whole number of passes, got {raw!r}", hint="e.g. EVALKIT_JUDGE_PASSES=3"
        ) from None


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
    judge_passes: int | None = None,
    judge_price: tuple[float, float] | str | None = None,
    semantic: bool = False,
    semantic_model_dir: str | os.PathLike | None = None,
) -> ScoreSummary:
    """Async :func:`score_run` (for notebooks: ``await evalkit.scoring.ascore_run(...)``).
    ``judge_preset`` (or ``EVALKIT_JUDGE_PRESET``) pins the judge (:mod:`evalkit.scoring.judge.presets`);
    ``swap_fraction`` asks that share of pairwise pairs in both orders (position-bias check);
    ``judge_passes`` (or ``EVALKIT_JUDGE_PASSES``, default 1) judges each output that many times;
    ``judge_price`` = (input, output) USD per 1M tokens, or ``"IN/OUT"``, overrides the judge's prices.
    ``semantic`` adds the CLIP/DINO metrics (:func:`semantic_score_run`; ``semantic_model_dir`` or
    ``$EVALKIT_SEMANTIC_MODEL_DIR`` for a local copy of the models)."""
    ws = ws if isinstance(ws, Workspace) else Workspace(ws, create=False)
    ws.get_run(run_id)  # a clear error for an unknown run
    if not (auto or judge or pairwise or semantic):
        raise InvalidInputError("nothing to score", hint="pass auto, semantic, judge and/or pairwise")
    summary = ScoreSummary(run_id=run_id)
    if semantic:  # before anything else, so a missing model fails fast with nothing half done
        from evalkit.scoring.semantic import SemanticEncoders

        encoders = await asyncio.to_thread(SemanticEncoders.load, semantic_model_dir)
    if auto:
        summary = await asyncio.to_thread(auto_score_run, ws, run_id, workers=workers, progress=progress)
    if semantic:
        await asyncio.to_thread(semantic_score_run, ws, run_id, encoders=encoders, progress=progress, summary=summary)
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
            judge_passes=judge_passes,
            judge_price=judge_price,
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
            judge_price=judge_price,
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
    "semantic_score_run",
    "rankings",
    "score_run",
    "votes_from_ratings",
    "ajudge_score_run",
    "resolve_judge_passes",
]
