"""Judging a whole run: :func:`judge_run` over a workspace's completed calls, and its :class:`JudgeSummary`.

The per-request work (cache, budget, retries, parsing) is :class:`evalkit.scoring.judge.Judge`'s; this
module chooses what to judge, bounds concurrency, and writes the results and the usage ledger.

What is stored
    viescore: ``ws.put_scores`` rows with source "judge", version :meth:`JudgeConfig.version`, metrics
    ``viescore_sc``, ``viescore_pq``, ``viescore_o``, ``vie_editing_success``, ``vie_over_editing``,
    ``vie_naturalness``, ``vie_artifacts``; unscored parts are rows with value None, status "unscored"
    and the reason; ``detail`` holds the cache key, the judge's reasoning and the answering snapshot.
    With ``passes`` = N > 1 each output is judged N times (pass k is its own request and cache entry); the
    score row's value is the mean of the valid passes (unscored passes are left out, never counted as 0;
    a metric no pass scored is an unscored row) and its ``detail["passes"]`` holds the pass values, their
    SD and range; every pass is a row of ``ws.judge_passes`` (:mod:`evalkit.scoring.judge.noise` measures
    the judge's noise from them).
    pairwise: ``ws.add_rating(kind="pair", source="judge", rater="judge:<model>")`` with ``detail``
    holding the version, which side was shown first, the raw verdict and the reasoning. Every request
    sent is a ``usage`` row (source "judge"). The judge's cache records are described in
    :mod:`evalkit.scoring.judge.client`.
"""

from __future__ import annotations

import asyncio
import functools
import json
import random
from collections import Counter
from collections.abc import Callable, Collection, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from evalkit.engine.budget import Budget
from evalkit.errors import ImageError, InvalidInputError, WorkspaceError
from evalkit.progress import progress_bar
from evalkit.scoring.judge.client import Judge, JudgeReply, PairwiseResult, VIEScoreResult, _Gate
from evalkit.scoring.judge.config import MODES
from evalkit.scoring.judge.noise import HEADLINE_METRIC, JudgeNoise, judge_noise
from evalkit.scoring.judge.prompts import OPERATION_INSTRUCTIONS, sc_instruction
from evalkit.scoring.judge.rows import VIESCORE_METRICS, mean_rows, pass_rows, viescore_rows
from evalkit.store import CallStatus, Workspace

#: the most judge passes accepted per output (each pass is one more paid request per prompt)
MAX_PASSES = 20


# ---- batch scoring over a run -------------------------------------------------------------------
@dataclass
class JudgeSummary:
    """What a :func:`judge_run` did."""

    run_id: str
    mode: str
    version: str
    items: int = 0  # calls (viescore) or pairs (pairwise) considered
    scored: int = 0
    unscored: int = 0
    skipped_budget: int = 0  # items not (fully) judged because the cap was reached
    pq_only: int = 0  # viescore items without SC (no instruction / operation without one)
    requests_sent: int = 0
    requests_cached: int = 0
    cost_usd: float = 0.0  # known cost of the requests sent
    cost_unknown_requests: int = 0
    budget_usd: float | None = None
    stopped_by_budget: bool = False
    ratings_written: int = 0
    ratings_existing: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    passes: int = 1  # judge passes per output (viescore)
    price_source: str | None = None  # where the judge's prices came from (None: unknown)
    noise: JudgeNoise | None = None  # the judge's spread between passes (viescore)

    @property
    def noise_sd(self) -> float | None:
        """The headline noise: median SD between passes of the overall VIEScore (None with one pass)."""
        return self.noise.sd(HEADLINE_METRIC) if self.noise is not None else None

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["noise"] = self.noise.as_dict() if self.noise is not None else None
        return out

    def judge_object(self) -> dict[str, Any]:
        """The ``judge`` object of ``evalkit score --json``: requests (sent), cached, scored, unscored,
        cost_usd (known cost of the requests sent), noise_sd (median SD between passes of viescore_o), …"""
        return {
            "mode": self.mode,
            "version": self.version,
            "passes": self.passes,
            "requests": self.requests_sent,
            "cached": self.requests_cached,
            "scored": self.scored,
            "unscored": self.unscored,
            "unscored_reasons": dict(self.reasons),
            "not_judged_budget": self.skipped_budget,
            "cost_usd": round(self.cost_usd, 10),
            "cost_unknown_requests": self.cost_unknown_requests,
            "price_source": self.price_source,
            "budget_usd": self.budget_usd,
            "stopped_by_budget": self.stopped_by_budget,
            "noise_sd": self.noise_sd,
            "noise": self.noise.as_dict() if self.noise is not None else None,
        }

    def __str__(self) -> str:
        parts = [
            f"judge {self.mode} on run {self.run_id} ({self.version}): {self.items} item(s), {self.scored} scored, "
            f"{self.unscored} unscored"
        ]
        if self.reasons:
            parts.append("(" + ", ".join(f"{k}: {v}" for k, v in sorted(self.reasons.items())) + ")")
        parts.append(
            f"; {self.requests_sent} request(s) sent, {self.requests_cached} from cache; judging cost "
            f"${self.cost_usd:.4f}"
        )
        if self.cost_unknown_requests:
            parts.append(f" + {self.cost_unknown_requests} request(s) of unknown cost")
            if self.price_source is None:
                parts.append(" (no judge prices: --judge-price IN/OUT)")
        if self.mode == "viescore" and self.noise is not None and self.passes > 1:
            parts.append(f"; judge noise {self.noise.describe()}")
        if self.stopped_by_budget:
            parts.append(f"; stopped at the ${self.budget_usd:.4f} budget ({self.skipped_budget} item(s) not judged)")
        if self.mode == "pairwise":
            parts.append(f"; {self.ratings_written} rating(s) written")
        return "".join(parts)


async def judge_run(
    ws: Workspace,
    run_id: str,
    judge: Judge,
    *,
    mode: str = "viescore",
    concurrency: int = 4,
    budget_usd: float | None = None,
    pairs_per_case: int | None = None,
    seed: int = 0,
    progress: bool = True,
    retry_unscored: bool | Collection[str] = False,
    swap_fraction: float = 0.0,
    passes: int = 1,
) -> JudgeSummary:
    """Judge every completed call of a run (``viescore``: scores via ``ws.put_scores``) or pairs of
    completed calls of different models per case (``pairwise``: ratings via ``ws.add_rating``).

    Cached answers (any run, same judge version and images) are reused without a request; ``budget_usd``
    caps what new requests may cost (nothing is sent once the cap would be crossed); ``concurrency``
    bounds items in flight. ``pairs_per_case`` picks that many pairs per case, spread so every model
    appears about equally often over the run (default: all pairs); ``seed`` drives that choice and the
    display order. ``retry_unscored`` re-requests cached unscored answers (True, or a set of reasons such
    as ``{"timeout"}``) — a deliberate decision to pay again.

    ``swap_fraction`` (pairwise, 0–1): that share of pairs (seeded draw) is asked in both display orders,
    each order with its own cache key. Both answers agree → that verdict; they differ (a flip, or a verdict
    against a tie) → stored as a tie. The rating's ``detail`` holds ``swap_check`` = {consistent, choices,
    verdicts}; :func:`evalkit.scoring.agreement.swap_consistency` gives the rate per judge.

    ``passes`` (viescore, 1–:data:`MAX_PASSES`): judge each output that many times (see the module
    docstring); the summary's ``noise`` is the judge's spread between passes over the run.
    """
    if isinstance(passes, bool) or not isinstance(passes, int) or not 1 <= passes <= MAX_PASSES:
        raise InvalidInputError(
            f"judge passes must be an integer within 1–{MAX_PASSES}, got {passes!r}",
            hint="--judge-passes 3 (or EVALKIT_JUDGE_PASSES=3) judges each output three times",
        )
    if not isinstance(swap_fraction, (int, float)) or not 0.0 <= swap_fraction <= 1.0:
        raise InvalidInputError(f"swap_fraction must be within 0–1, got {swap_fraction!r}")
    if mode not in MODES:
        raise InvalidInputError(f"judge mode must be one of {', '.join(MODES)}, got {mode!r}")
    if not isinstance(concurrency, int) or concurrency < 1:
        raise InvalidInputError(f"concurrency must be an integer ≥ 1, got {concurrency!r}")
    if budget_usd is not None and (not isinstance(budget_usd, (int, float)) or budget_usd < 0):
        raise InvalidInputError(f"budget_usd must be ≥ 0, got {budget_usd!r}")
    if pairs_per_case is not None and (not isinstance(pairs_per_case, int) or pairs_per_case < 1):
        raise InvalidInputError(f"pairs_per_case must be an integer ≥ 1, got {pairs_per_case!r}")
    ws.get_run(run_id)  # a clear error for an unknown run
    summary = JudgeSummary(
        run_id,
        mode,
        judge.config.version(mode),
        budget_usd=budget_usd,
        passes=passes if mode == "viescore" else 1,
        price_source=judge.config.price_source if judge.config.prices_known else None,
    )
    gate = _Gate(Budget(budget_usd))
    batch = _Batch(ws, run_id, judge, gate, summary, retry_unscored)
    batch.swap_fraction = float(swap_fraction)
    batch.passes = summary.passes
    if mode == "viescore":
        jobs = batch.viescore_jobs()
    else:
        jobs = batch.pairwise_jobs(pairs_per_case, seed)
    summary.items = len(jobs) + summary.ratings_existing
    bar = progress_bar(len(jobs), f"judge {mode} {run_id}", unit="item", enabled=progress)
    sem = asyncio.Semaphore(concurrency)

    async def run_one(job: Callable[[], Any]) -> None:
        async with sem:
            await job()
        if bar is not None:
            bar.update(1)

    try:
        await asyncio.gather(*(run_one(j) for j in jobs))
    finally:
        if bar is not None:
            bar.close()
    summary.stopped_by_budget = gate.stopped
    if mode == "viescore":
        summary.noise = judge_noise(ws, run_id, summary.version)
    return summary


class _Batch:
    """The per-run work of :func:`judge_run`: building jobs, writing scores/ratings and the usage ledger."""

    def __init__(
        self,
        ws: Workspace,
        run_id: str,
        judge: Judge,
        gate: _Gate,
        summary: JudgeSummary,
        retry_unscored: bool | Collection[str],
    ):
        self.ws, self.run_id, self.judge, self.gate, self.summary = ws, run_id, judge, gate, summary
        self.retry_unscored = retry_unscored
        self.cases = _case_table(ws, run_id)
        self._sources: dict[str, bytes] = {}
        self.swap_fraction = 0.0
        self.passes = 1

    def source(self, case_id: str) -> bytes:
        if case_id not in self._sources:
            inputs, _ = self.ws.case_images(self.run_id, case_id)
            if not inputs:
                raise WorkspaceError(f"case {case_id!r} of run {self.run_id!r} has no input image")
            self._sources[case_id] = inputs[0]
        return self._sources[case_id]

    def completed_calls(self) -> list[dict[str, Any]]:
        return [c for c in self.ws.call_rows(self.run_id, [CallStatus.COMPLETED]) if c.get("output_sha256")]

    # -- viescore ------------------------------------------------------------------------------
    def viescore_jobs(self) -> list[Callable[[], Any]]:
        return [functools.partial(self._viescore_one, call) for call in self.completed_calls()]

    async def _viescore_one(self, call: dict[str, Any]) -> None:
        case = self.cases.get(call["case_id"], {})
        operation = call.get("operation") or case.get("operation") or "general_edit"
        instruction, instruction_source = sc_instruction(operation, case.get("prompt"))
        results: list[VIEScoreResult] = []
        # a session's later turn is judged on its own input: the same model's previous output
        parent = call.get("parent_call_id")
        encoded: dict[str, Any] = {}  # the output's images, encoded once for all its passes
        for k in range(1, self.passes + 1):  # one after the other: pass k+1 is asked once pass k is answered
            try:
                result = await self.judge._viescore(
                    self.ws.output_image(parent) if parent else self.source(call["case_id"]),
                    self.ws.output_image(call["call_id"]),
                    instruction,
                    cache=self.ws,
                    gate=self.gate,
                    retry_unscored=self.retry_unscored,
                    pass_index=k,
                    encoded_images=encoded,
                )
            except (ImageError, WorkspaceError, InvalidInputError) as exc:
                reason = "bad_image" if isinstance(exc, ImageError) else "missing_image"
                results = [VIEScoreResult("unscored", reason, sc_applies=instruction is not None, detail=str(exc))]
                break
            self._account(result.replies, call_id=call["call_id"])
            results.append(result)
        if not results[0].sc_applies:
            self.summary.pq_only += 1
        per_pass = [
            viescore_rows(
                self.run_id,
                call["call_id"],
                self.summary.version,
                r,
                operation,
                no_instruction=instruction is None,
                instruction_source=instruction_source,
            )
            for r in results
        ]
        rows = per_pass[0] if len(per_pass) == 1 and self.passes == 1 else mean_rows(per_pass, self.passes)
        if any(r.reason == "budget" for r in results):
            self.summary.skipped_budget += 1
        main = "viescore_o" if results[0].sc_applies else "viescore_pq"
        head = next((r for r in rows if r["metric"] == main), None)
        if head is not None:
            self._count(head["status"], head["reason"])
        if rows:
            self.ws.put_scores(rows)
        if results[0].reason not in ("bad_image", "missing_image"):
            self.ws.put_judge_passes(self.run_id, call["call_id"], self.summary.version, pass_rows(per_pass))

    # -- pairwise ------------------------------------------------------------------------------
    def pairwise_jobs(self, pairs_per_case: int | None, seed: int) -> list[Callable[[], Any]]:
        by_case: dict[str, dict[str, dict[str, Any]]] = {}
        for call in self.completed_calls():
            models = by_case.setdefault(call["case_id"], {})
            held = models.get(call["model_id"])
            if held is None or call["repeat"] < held["repeat"]:  # one output per model: its lowest repeat
                models[call["model_id"]] = call
        rater = f"judge:{self.judge.config.model}"
        existing = _existing_pairs(self.ws, self.run_id, rater, self.summary.version)
        rng = random.Random(seed)
        appearances: Counter[str] = Counter()
        jobs: list[Callable[[], Any]] = []
        for case_id in sorted(by_case):
            calls = by_case[case_id]
            pairs = _choose_pairs(sorted(calls), pairs_per_case, rng, appearances)
            for model_a, model_b in pairs:
                left, right = calls[model_a], calls[model_b]
                left_first = rng.random() < 0.5  # drawn in a fixed order, whatever the concurrency
                swap = self.swap_fraction > 0 and rng.random() < self.swap_fraction
                if (case_id, left["call_id"], right["call_id"]) in existing:
                    self.summary.ratings_existing += 1
                    self.summary.scored += 1
                    continue
                jobs.append(functools.partial(self._pairwise_one, case_id, left, right, left_first, rater, swap=swap))
        return jobs

    async def _pairwise_one(
        self,
        case_id: str,
        left: dict[str, Any],
        right: dict[str, Any],
        left_first: bool,
        rater: str,
        swap: bool = False,
    ) -> None:
        case = self.cases.get(case_id, {})
        operation = case.get("operation") or left.get("operation") or "general_edit"
        instruction = (case.get("prompt") or "").strip() or OPERATION_INSTRUCTIONS.get(operation, "")
        if not instruction:
            self._count("unscored", "no_instruction")
            return
        swap_check = None
        try:
            ask = [left_first, not left_first] if swap else [left_first]
            results = [
                await self.judge._pairwise(
                    self.source(case_id),
                    self.ws.output_image(left["call_id"]),
                    self.ws.output_image(right["call_id"]),
                    instruction,
                    left_first=lf,
                    cache=self.ws,
                    gate=self.gate,
                    retry_unscored=self.retry_unscored,
                    ordered=swap,
                )
                for lf in ask
            ]
        except (ImageError, WorkspaceError, InvalidInputError) as exc:
            reason = "bad_image" if isinstance(exc, ImageError) else "missing_image"
            results = [PairwiseResult("unscored", reason, detail=str(exc))]
        replies = [r.reply for r in results if r.reply is not None]
        if replies:
            self._account(replies)
        failed = next((r for r in results if r.status != "scored"), None)
        result = failed or results[0]
        if swap and failed is None:
            choices = [r.choice for r in results]
            consistent = choices[0] == choices[1]
            swap_check = {
                "consistent": consistent,
                "choices": choices,
                "verdicts": [r.verdict for r in results],
                "shown_first": [r.shown_first for r in results],
            }
            if not consistent:  # a verdict that depends on the display order says nothing: a tie
                result = PairwiseResult("scored", None, choice="tie", shown_first="both", verdict="order-dependent")
        if result.reason == "budget":
            self.summary.skipped_budget += 1
            return
        self._count(result.status, result.reason)
        if result.status != "scored":
            return
        detail = {
            "version": self.summary.version,
            "shown_first": result.shown_first,
            "verdict": result.verdict,
            "reasoning": result.reasoning,
            "key": result.reply.key if result.reply else None,
            "cached": bool(result.reply and result.reply.cached),
            "instruction": instruction,
        }
        if swap_check is not None:
            detail["swap_check"] = swap_check
            detail["keys"] = [r.reply.key if r.reply else None for r in results]
        self.ws.add_rating(
            run_id=self.run_id,
            case_id=case_id,
            rater=rater,
            source="judge",
            kind="pair",
            call_left=left["call_id"],
            call_right=right["call_id"],
            choice=result.choice,
            detail=json.dumps(detail, ensure_ascii=False),
        )
        self.summary.ratings_written += 1

    # -- accounting ----------------------------------------------------------------------------
    def _count(self, status: str, reason: str | None) -> None:
        if status == "scored":
            self.summary.scored += 1
        else:
            self.summary.unscored += 1
            self.summary.reasons[reason or "unknown"] = self.summary.reasons.get(reason or "unknown", 0) + 1

    def _account(self, replies: Iterable[JudgeReply], call_id: str | None = None) -> None:
        model = self.judge.config.model
        for r in replies:
            if r.cached:
                self.summary.requests_cached += 1
            if not r.sent:
                continue
            self.summary.requests_sent += 1
            if r.cost_usd is None:
                self.summary.cost_unknown_requests += 1
            else:
                self.summary.cost_usd += r.cost_usd
            self.ws.record_usage(
                model_id=model,
                operation=f"judge:{r.mode}",
                cost_usd=r.cost_usd,
                cost_source=r.cost_source,
                source="judge",
                run_id=self.run_id,
                call_id=call_id,
            )


def _case_table(ws: Workspace, run_id: str) -> dict[str, dict[str, Any]]:
    df = ws.cases(run_id)
    if df.empty:
        return {}
    df = df.astype(object).where(df.notna(), None)  # a missing prompt is None, not NaN
    return {row["case_id"]: row for row in df.to_dict("records")}


def _existing_pairs(ws: Workspace, run_id: str, rater: str, version: str) -> set[tuple[str, str, str]]:
    df = ws.ratings(run_id, source="judge")
    out: set[tuple[str, str, str]] = set()
    for row in df.to_dict("records"):
        if row["rater"] != rater or row["kind"] != "pair":
            continue
        try:
            v = json.loads(row["detail"] or "{}").get("version")
        except ValueError:
            continue
        if v == version:
            out.add((row["case_id"], row["call_left"], row["call_right"]))
    return out


def _choose_pairs(
    models: list[str], k: int | None, rng: random.Random, appearances: Counter[str]
) -> list[tuple[str, str]]:
    """All pairs of ``models``, or ``k`` of them chosen so each model's appearance count over the run stays
    as even as possible (ties broken by a seeded shuffle)."""
    pairs = [(a, b) for i, a in enumerate(models) for b in models[i + 1 :]]
    if k is None or k >= len(pairs):
        appearances.update(m for p in pairs for m in p)
        return pairs
    rng.shuffle(pairs)
    chosen: list[tuple[str, str]] = []
    for _ in range(k):
        best = min(
            pairs, key=lambda p: (appearances[p[0]] + appearances[p[1]], max(appearances[p[0]], appearances[p[1]]))
        )
        pairs.remove(best)
        chosen.append(best)
        appearances.update(best)
    return chosen


__all__ = ["JudgeSummary", "MAX_PASSES", "VIESCORE_METRICS", "judge_run"]
