"""Run the same edit cases across every registered model — resumable, budget-capped, never paying twice.

The life of one call, and what is on disk at each step (so a ``kill -9`` anywhere is safe):

1. ``planned`` — written for every (case, model, repeat) before anything is spent.
2. The call waits for a global slot, a per-provider slot and the provider's images-per-minute limiter.
3. Its maximum price is *reserved* in the :class:`~evalkit.engine.budget.Budget`; if that would cross the cap,
   the run stops submitting (calls already in flight finish).
4. ``submitting`` — committed just before the request is sent.
5. ``submitted`` + prediction id — committed the moment the provider accepts the job, before waiting
   for its result. On resume such a call is *polled*, never re-submitted.
6. ``completed`` (output file renamed into the blob store first, then the row) or ``failed``.

A call found in ``submitting`` on resume (the process died while sending it) has an unknown outcome:
it is marked ``unknown`` and not sent again unless ``resubmit_unknown=True`` (which may pay twice).
Its reservation stays counted against the budget.

A request identical to one completed in any earlier run (same model, parameters, input bytes, seed —
the fingerprint) is served from that result, unless ``no_cache=True``.

A *session* (a suite case with turns) is one call per turn; turn k's input is the same model's output of turn
k−1 (``parent_call_id``), so it is planned with the others but runs only once that turn has completed, and a
turn that ends without an output makes the later ones ``not_reached``. The budget starts a session only when
it can hold every remaining turn (``allow_partial_sessions=True``: turn by turn); a resume continues each
session from its last completed turn.

This module is the public side — validate, plan, record the run, summarise; the engine that carries
the calls through steps 2–6 is :mod:`evalkit.engine.execution`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from evalkit._version import __version__
from evalkit.catalog import Catalog
from evalkit.engine.control import StopController
from evalkit.engine.execution import CallSource, Execution
from evalkit.engine.limits import ProviderLimits, default_provider_limits
from evalkit.engine.planning import BASE_SEED, PlannedCall, estimate_with_sessions, iter_plan, quote_plan_prices
from evalkit.engine.reconcile import ReconcilePolicy
from evalkit.engine.settle import SettleReport, policy_from_env, settle_unknown
from evalkit.errors import EvalkitError, InvalidInputError
from evalkit.providers import create_provider
from evalkit.providers.availability import select_models
from evalkit.providers.base import ImageEditProvider, capabilities_of, ensure_credentials
from evalkit.providers.http import is_loopback_url, safe_url
from evalkit.providers.retry import RetryPolicy
from evalkit.store import CallStatus, Workspace, check_id

#: rounds of "settle unknown submits from the history, then collect / re-send" at the end of a run (settle_wait_s > 0)
SETTLE_ROUNDS = 5

#: how the runner waits out rate limits and transient polling trouble on top of the provider's own retries
DEFAULT_PATIENCE = RetryPolicy(max_attempts=8, base_s=1.0, factor=2.0, max_backoff_s=60.0)


@dataclass
class RunResult:
    """What a run did, as recorded in its workspace (:func:`summarise` rebuilds it from there)."""

    #: the run's id (pass it to ``--resume``, ``evalkit report``, ``Workspace.calls``)
    run_id: str
    #: the workspace directory holding its rows and images
    workspace: str
    #: calls the run is to make (every applicable case × model × repeat)
    planned: int = 0
    #: calls with an output
    completed: int = 0
    #: calls that failed (``failures_by_category`` says why)
    failed: int = 0
    #: calls not sent, because the run stopped (budget, Ctrl-C); a resume sends them
    skipped: int = 0
    #: (case, model) pairs the model cannot do; never sent
    not_applicable: int = 0
    #: calls whose outcome is unknown (the process died while sending); never re-sent automatically
    unknown: int = 0
    #: accepted jobs still running when the run stopped waiting: `--resume` polls them (never re-submits)
    pending: int = 0
    #: completed calls served from an identical earlier request (cost 0)
    cached: int = 0
    #: what the run's calls cost in USD, as recorded (a call of unknown cost adds nothing)
    cost_usd: float = 0.0
    #: wall-clock seconds of the run (of this invocation when just run; as recorded otherwise)
    wall_s: float = 0.0
    #: why the run stopped early: ``budget``, ``balance`` (a provider account ran dry), ``interrupted``,
    #: ``workspace_error``, or None
    stop_reason: str | None = None
    #: True when any output came from a local simulator (reports label it SIMULATED)
    simulated: bool = False
    #: True for ``dry_run=True``: only the plan and its estimate, nothing sent or written
    dry_run: bool = False
    #: the plan's estimate per model (calls, list and maximum price); None when summarised from the workspace
    estimate: pd.DataFrame | None = field(default=None, repr=False)
    #: failed calls per error category (auth, rate_limit, server, …)
    failures_by_category: dict[str, int] = field(default_factory=dict)
    #: unknown submits settled from the provider's history in this call: matched / resubmit / unknown
    reconciled: dict[str, int] = field(default_factory=dict)
    #: the most the calls still ``unknown`` may have cost (their reservations)
    unknown_max_usd: float = 0.0
    #: with ``quote_prices``: {"quoted": n, "failed": n, "errors": {model_id: why}} (None without)
    price_quotes: dict[str, Any] | None = None
    #: with ``models="all"``: providers left out for want of a key → the variable that would add them
    models_left_out: dict[str, str] = field(default_factory=dict)
    #: what stopped the run early, in words (what ran out, what was spent, how to continue); None otherwise
    stop_message: str | None = None
    #: later turns of sessions never sent because an earlier turn of theirs ended without an output
    not_reached: int = 0
    #: later turns of sessions waiting for an earlier turn that has not completed yet (it is pending or was not
    #: sent): a resume runs them once it has
    waiting: int = 0
    #: per (session, model): the turns and what one whole session costs (list and maximum); None without sessions
    session_estimate: pd.DataFrame | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("estimate", None)
        d.pop("session_estimate", None)
        d["cost_usd"] = round(self.cost_usd, 6)
        d["wall_s"] = round(self.wall_s, 3)
        return d


def _base_url(provider: ImageEditProvider) -> str | None:
    """A provider's base URL as recorded with the run: without user info, query or fragment (no credentials)."""
    url = getattr(provider, "base_url", None)
    return safe_url(url) if url else url


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:4]


async def arun(
    suite: str | os.PathLike | None = None,
    models: str | Sequence[str] = "all",
    *,
    repeats: int = 1,
    concurrency: int = 16,
    budget_usd: float | None = None,
    workspace: Workspace | str | os.PathLike | None = None,
    run_id: str | None = None,
    resume: bool = False,
    no_cache: bool | None = None,
    dry_run: bool = False,
    base_seed: int = BASE_SEED,
    provider_options: Mapping[str, Mapping[str, Any]] | None = None,
    provider_limits: Mapping[str, ProviderLimits] | None = None,
    catalog: Catalog | None = None,
    progress: bool | Callable[[dict[str, Any]], None] = True,
    grace_period_s: float = 15.0,
    resubmit_unknown: bool = False,
    retry_failed: bool = False,
    controller: StopController | None = None,
    patience: RetryPolicy | None = None,
    reconcile_policy: ReconcilePolicy | None = None,
    settle_wait_s: float = 0.0,
    quote_prices: bool | None = None,
    allow_partial_sessions: bool = False,
) -> RunResult:
    """Run ``suite`` across ``models``; see the module docstring. In Jupyter: ``await evalkit.arun(...)``.

    A session (a case with turns) runs turn by turn on each model's own previous output; the budget starts a
    session only when it can hold all its turns, unless ``allow_partial_sessions=True``.

    ``quote_prices=True`` asks each provider's pricing API (WaveSpeed ``POST /api/v3/model/pricing``) once per
    distinct (model, parameters) of the plan before anything is sent, and uses the quotes for the estimate,
    the budget reservations and each call's recorded cost; a failed quote keeps the catalogue price and says so
    (``RunResult.price_quotes``, the call's notes and ``price_source``).

    A resumed run keeps the settings it was started with that decide what is paid and recorded — its
    suite, models, repeats, seeds, budget, ``quote_prices`` and ``no_cache`` (stored in the run's config) —
    unless this call passes ``budget_usd``, ``quote_prices`` or ``no_cache`` explicitly (None = the run's)."""
    from evalkit.suites import load_suite

    t0 = time.monotonic()
    if not isinstance(concurrency, int) or isinstance(concurrency, bool) or concurrency < 1:
        raise InvalidInputError(f"concurrency must be a whole number ≥ 1, got {concurrency!r}")
    if budget_usd is not None and (
        not isinstance(budget_usd, (int, float)) or budget_usd != budget_usd or budget_usd < 0
    ):
        raise InvalidInputError(f"budget must be a number of USD ≥ 0, got {budget_usd!r}")
    if not isinstance(repeats, int) or isinstance(repeats, bool) or repeats < 1:
        raise InvalidInputError(f"repeats must be a whole number ≥ 1, got {repeats!r}")
    # a suite with mistakes is refused (every problem listed) before the workspace is created or touched
    given_suite = load_suite(suite) if suite is not None else None
    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    controller = controller or StopController()
    existing = None
    if run_id is not None:
        check_id(run_id, "run id")
        with contextlib.suppress(InvalidInputError):
            existing = ws.get_run(run_id)
    if resume and existing is None:
        raise InvalidInputError(
            f"cannot resume: no run {run_id!r} in {ws.path}" if run_id else "--resume needs a run id",
            hint="`evalkit runs` lists the runs in this workspace",
        )
    if existing is not None:  # resume (explicitly, or by re-running the same command with the same --run-id)
        cfg = existing["config"]
        suite = suite or existing["suite_path"]
        models = existing["models"]
        repeats = existing["repeats"]
        base_seed = cfg.get("base_seed", base_seed)
        if budget_usd is None:
            budget_usd = existing["budget_usd"]
        # what decides the recorded cost (quoted vs catalogue price) and whether a request is paid again
        # (the cache) stays as the run was started, unless given explicitly now
        if quote_prices is None:
            quote_prices = bool(cfg.get("quote_prices", False))
        if no_cache is None:
            no_cache = bool(cfg.get("no_cache", False))
    quote_prices, no_cache = bool(quote_prices), bool(no_cache)
    if suite is None:
        raise InvalidInputError("no suite given", hint="pass --suite NAME|PATH (see `evalkit suites`)")
    the_suite = given_suite if given_suite is not None else load_suite(suite)
    catalog = catalog or Catalog.load(ws.path)
    # "all" means every model that can be called: its provider has a key (env or provider_options)
    selection = select_models(catalog, models, provider_options)
    specs = selection.models
    if not specs:
        raise InvalidInputError(f"no models selected by {models!r}", hint="use --models all or a list of ids")
    if selection.note() and progress is True:
        print(selection.note(), file=sys.stderr, flush=True)
    if existing is not None and existing["suite_fingerprint"] != the_suite.fingerprint:
        raise InvalidInputError(
            f"suite {the_suite.name!r} changed since run {run_id!r} started (files or suite.toml differ), "
            "so its results would not be comparable",
            hint="start a new run (without --resume / with another --run-id); the cache still avoids paying twice",
        )
    run_id = run_id or new_run_id()
    check_id(run_id, "run id")

    popts = {k: dict(v) for k, v in (provider_options or {}).items()}
    providers: dict[str, ImageEditProvider] = {}
    for name in sorted({m.provider for m in specs}):
        providers[name] = create_provider(name, **popts.get(name, {}))

    try:
        # Planning is pure and deterministic, so it runs twice rather than holding every request for the
        # whole run: once for the estimate, once (below) to write the rows and keep a small stub per call.
        inputs: dict[str, tuple] = {}  # each case decoded once, shared by both passes and every call

        def plan() -> Iterator[PlannedCall]:
            return iter_plan(
                run_id, the_suite.cases, specs, providers, repeats=repeats, base_seed=base_seed, inputs=inputs
            )

        result = RunResult(
            run_id=run_id, workspace=str(ws.path), dry_run=dry_run, models_left_out=dict(selection.left_out)
        )
        if quote_prices:  # before the estimate: every later planning pass prices by the quotes
            result.price_quotes = await asyncio.to_thread(quote_plan_prices, plan(), providers)
        result.estimate, per_session = estimate_with_sessions(plan())
        result.session_estimate = per_session if not per_session.empty else None
        per_model = result.estimate[result.estimate["model_id"] != "TOTAL"]
        if dry_run:  # no keys needed to see a plan
            result.planned = int(per_model["calls"].sum())
            result.not_applicable = int(per_model["not_applicable"].sum())
            result.wall_s = time.monotonic() - t0
            return result

        # a missing key stops the run before anything is written or spent (not one auth failure per call)
        for name in sorted(set(per_model.loc[per_model["calls"] > 0, "provider"])):
            ensure_credentials(providers[name])
        config = {
            "suite": the_suite.name,
            "concurrency": concurrency,
            "base_seed": base_seed,
            "no_cache": no_cache,
            "provider_base_urls": {n: _base_url(p) for n, p in providers.items()},
            "provider_limits": {k: asdict(v) for k, v in (provider_limits or {}).items()},
            "quote_prices": bool(quote_prices),
            "allow_partial_sessions": bool(allow_partial_sessions),
        }
        if existing is None:
            ws.create_run(
                run_id,
                suite_name=the_suite.name,
                suite_path=str(the_suite.path),
                suite_fingerprint=the_suite.fingerprint,
                catalog_fingerprint=catalog.fingerprint(),
                models=[m.id for m in specs],
                repeats=repeats,
                budget_usd=budget_usd,
                config=config,
                evalkit_version=__version__,
            )
        elif budget_usd != existing["budget_usd"]:
            ws.update_run(run_id, budget_usd=budget_usd)
        with ws.run_lock(run_id):
            _record_cases(ws, run_id, the_suite)

            def rows() -> Iterator[dict[str, Any]]:
                for pc in plan():
                    yield pc.row()
                    pc.release()

            ws.insert_calls(rows())
            # nothing is held per call: the engine reads the planned calls back from the workspace a chunk at a
            # time and rebuilds each request when it runs (planning is pure and deterministic)
            source = CallSource(run_id, {c.id: c for c in the_suite.cases}, {m.id: m for m in specs}, inputs, ws=ws)
            ws.update_run(run_id, status="running")
            _seed_pacers(ws, providers, specs)
            policy = reconcile_policy or policy_from_env()
            endpoints = {m.id: m.endpoint for m in specs}
            settled = SettleReport()
            if existing is not None:
                # unknown submits (and submits a crash interrupted) are settled from the provider's history first:
                # a listed prediction is collected, a proven-unaccepted submit is sent again, the rest stay unknown
                settled = await settle_unknown(
                    ws, run_id, providers, endpoints, policy=policy, wait_for_settle_s=settle_wait_s
                )
            given_limits = provider_limits or {}
            limits = {
                name: given_limits.get(name)
                or default_provider_limits(catalog.provider(name), getattr(p, "base_url", None))
                for name, p in providers.items()
            }
            execution = Execution(
                ws=ws,
                run_id=run_id,
                source=source,
                providers=providers,
                budget_usd=budget_usd,
                concurrency=concurrency,
                limits=limits,
                no_cache=no_cache,
                progress=progress,
                grace_period_s=grace_period_s,
                resubmit_unknown=resubmit_unknown,
                retry_failed=retry_failed,
                controller=controller,
                patience=patience or DEFAULT_PATIENCE,
                allow_partial_sessions=allow_partial_sessions,
                quote_prices=quote_prices,
            )
            try:
                await execution.execute()
                for _round in range(SETTLE_ROUNDS):
                    if not (
                        settle_wait_s > 0
                        and execution.counts.get(CallStatus.UNKNOWN, 0) > 0
                        and not controller.stop_submitting.is_set()
                        and any(capabilities_of(p).reconcilable for p in providers.values())
                    ):
                        break
                    # submits lost in this run (a 500 after sending, a dropped connection, a sync POST cut off):
                    # settle them from the history now, then collect / re-send what it proved (a re-sent one may
                    # be lost again: a few rounds)
                    again = await settle_unknown(
                        ws, run_id, providers, endpoints, policy=policy, wait_for_settle_s=settle_wait_s
                    )
                    settled.decisions.extend(again.decisions)
                    if not (again.matched or again.resubmit):
                        break
                    execution.close_progress()
                    execution = Execution(
                        ws=ws,
                        run_id=run_id,
                        source=source,
                        providers=providers,
                        budget_usd=budget_usd,
                        concurrency=concurrency,
                        limits=limits,
                        no_cache=no_cache,
                        progress=progress,
                        grace_period_s=grace_period_s,
                        resubmit_unknown=resubmit_unknown,
                        retry_failed=False,
                        controller=controller,
                        patience=patience or DEFAULT_PATIENCE,
                        allow_partial_sessions=allow_partial_sessions,
                        quote_prices=quote_prices,
                    )
                    await execution.execute()
            except asyncio.CancelledError:
                ws.update_run(run_id, status="interrupted", wall_s=time.monotonic() - t0)
                raise
            finally:
                execution.close_progress()
            reason = controller.reason or ("balance" if execution.dry_accounts else None)
            status = {
                None: "completed",
                "budget": "budget_exhausted",
                "balance": "balance_exhausted",
                "interrupted": "interrupted",
            }.get(reason, "stopped")
            wall = time.monotonic() - t0
            ws.update_run(
                run_id, status=status, wall_s=wall, simulated=int(execution.simulated), note=execution.stop_message
            )
            done = summarise(ws, run_id, wall_s=wall, stop_reason=reason, estimate_df=result.estimate)
            done.session_estimate = result.session_estimate
            done.models_left_out = dict(selection.left_out)
            done.price_quotes = result.price_quotes
            done.stop_message = execution.stop_message
            if execution.dry_accounts:
                done.stop_message = _dry_message(execution.dry_accounts, done)
                ws.update_run(run_id, note=done.stop_message)
            if settled.decisions:
                done.reconciled = {k: v for k, v in settled.as_dict().items() if k != "reasons"}
            return done
    finally:
        for p in providers.values():
            with contextlib.suppress(Exception):
                await p.aclose()


def run(
    suite: str | os.PathLike | None = None,
    models: str | Sequence[str] = "all",
    *,
    repeats: int = 1,
    concurrency: int = 16,
    budget_usd: float | None = None,
    workspace: Workspace | str | os.PathLike | None = None,
    run_id: str | None = None,
    resume: bool = False,
    no_cache: bool | None = None,
    dry_run: bool = False,
    base_seed: int = BASE_SEED,
    provider_options: Mapping[str, Mapping[str, Any]] | None = None,
    provider_limits: Mapping[str, ProviderLimits] | None = None,
    catalog: Catalog | None = None,
    progress: bool | Callable[[dict[str, Any]], None] = True,
    grace_period_s: float = 15.0,
    resubmit_unknown: bool = False,
    retry_failed: bool = False,
    controller: StopController | None = None,
    patience: RetryPolicy | None = None,
    reconcile_policy: ReconcilePolicy | None = None,
    settle_wait_s: float = 0.0,
    quote_prices: bool | None = None,
    allow_partial_sessions: bool = False,
) -> RunResult:
    """Synchronous :func:`arun` (same parameters) for scripts and the CLI.

    Ctrl-C stops submitting and keeps everything done; a second Ctrl-C stops waiting for calls in flight."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise EvalkitError(
            "evalkit.run() cannot be called inside a running event loop (e.g. a Jupyter notebook)",
            hint="use `await evalkit.arun(...)` there",
        )

    async def main() -> RunResult:
        ctl = controller or StopController()
        loop = asyncio.get_running_loop()
        installed = False
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGINT, ctl.interrupt)
            loop.add_signal_handler(signal.SIGTERM, ctl.interrupt)
            installed = True
        try:
            return await arun(
                suite,
                models,
                repeats=repeats,
                concurrency=concurrency,
                budget_usd=budget_usd,
                workspace=workspace,
                run_id=run_id,
                resume=resume,
                no_cache=no_cache,
                dry_run=dry_run,
                base_seed=base_seed,
                provider_options=provider_options,
                provider_limits=provider_limits,
                catalog=catalog,
                progress=progress,
                grace_period_s=grace_period_s,
                resubmit_unknown=resubmit_unknown,
                retry_failed=retry_failed,
                controller=ctl,
                patience=patience,
                reconcile_policy=reconcile_policy,
                settle_wait_s=settle_wait_s,
                quote_prices=quote_prices,
                allow_partial_sessions=allow_partial_sessions,
            )
        finally:
            if installed:
                loop.remove_signal_handler(signal.SIGINT)
                loop.remove_signal_handler(signal.SIGTERM)

    return asyncio.run(main())


def summarise(
    ws: Workspace,
    run_id: str,
    *,
    wall_s: float | None = None,
    stop_reason: str | None = None,
    estimate_df: pd.DataFrame | None = None,
) -> RunResult:
    """Counts and cost of a run as recorded in the workspace."""
    run = ws.get_run(run_id)
    agg = ws.call_counts(run_id)  # aggregated in SQL: a 10,000-call run is not loaded to count it
    counts = agg["by_status"]
    res = RunResult(run_id=run_id, workspace=str(ws.path))
    res.not_applicable = counts.get(CallStatus.NOT_APPLICABLE, 0)
    res.not_reached = counts.get(CallStatus.NOT_REACHED, 0)
    res.planned = int(sum(counts.values()) - res.not_applicable)
    res.completed = counts.get(CallStatus.COMPLETED, 0)
    res.failed = counts.get(CallStatus.FAILED, 0)
    res.unknown = counts.get(CallStatus.UNKNOWN, 0)
    res.pending = agg["pending"]
    res.waiting = int(agg.get("waiting", 0))
    res.skipped = (
        int(sum(counts.get(s, 0) for s in (CallStatus.PLANNED, CallStatus.SUBMITTING, CallStatus.SUBMITTED)))
        - res.pending
        - res.waiting
    )
    res.cached = agg["cached"]
    res.cost_usd = agg["cost_usd"]
    res.wall_s = float(wall_s if wall_s is not None else (run.get("wall_s") or 0.0))
    res.stop_reason = stop_reason
    res.simulated = bool(run.get("simulated"))
    res.estimate = estimate_df
    res.failures_by_category = agg["failures_by_category"]
    res.unknown_max_usd = float(agg.get("unknown_max_usd", 0.0) or 0.0)
    return res


def _seed_pacers(ws: Workspace, providers: Mapping[str, ImageEditProvider], specs: Sequence[Any]) -> None:
    """Give each provider's poll pacer (if it has one) the catalogue's latency prior and the completion times
    earlier runs in this workspace saw, so even the first wave of tasks is polled near when it finishes."""
    for m in specs:
        provider = providers.get(m.provider)
        pacer = getattr(provider, "pacer", None)
        if pacer is None:
            continue
        # a local simulator is not the real model: no catalogue prior, and only earlier simulated runs count
        simulated = is_loopback_url(getattr(provider, "base_url", None) or "")
        if not simulated:
            pacer.set_prior(m.id, m.typical_latency_s)
        pacer.seed(m.id, ws.completion_times(m.id, simulated=simulated))


def _dry_message(dry: Mapping[str, str], res: RunResult) -> str:
    """What ran out, what was spent, and how to go on."""
    names = ", ".join(sorted(dry))
    said = next(iter(dry.values())).split(" — ", 1)[0]  # the provider's words, without the hint repeated below
    return (
        f"the {names} account{'s' if len(dry) > 1 else ''} ran out of balance ({said}); "
        f"${res.cost_usd:.4f} spent in this run; {res.skipped} call(s) left planned, none failed for it — "
        f"top up, then `evalkit run --resume {res.run_id}`"
    )


def _record_cases(ws: Workspace, run_id: str, suite: Any) -> None:
    """Copy each case's inputs into the blob store, so the workspace alone can draw every grid."""
    done: set[str] = set()
    rows = []
    for case in suite.cases:
        if case.id in done:
            continue
        done.add(case.id)
        images, mask = case.load_inputs()
        shas = [ws.put_blob(i.data, i.format).sha256 for i in images]
        mask_sha = ws.put_blob(mask.data, mask.format).sha256 if mask is not None else None
        tw, th = case.target_size if case.target_size else (None, None)
        row = {
            "case_id": case.id,
            "operation": case.operation,
            "category": case.category,
            "prompt": case.prompt,
            "language": case.language,
            "input_sha256": shas,
            "mask_sha256": mask_sha,
            "target_width": tw,
            "target_height": th,
            "tags": list(case.tags),
            "params": dict(case.params or {}),
            "source_caption": case.source_caption,
            "target_caption": case.target_caption,
        }
        if not case.is_session:
            rows.append(row)
            continue
        # a session: one row per turn (the id its calls carry), each with the session's original image as its
        # input — a later turn's real input is the model's own previous output (its call's parent_call_id)
        for k, t in enumerate(case.turns, start=1):
            turn_mask = case.turn_mask(k)
            rows.append(
                row
                | {
                    "case_id": case.turn_id(k),
                    "operation": t.operation,
                    "prompt": t.prompt,
                    "mask_sha256": ws.put_blob(turn_mask.data, turn_mask.format).sha256 if turn_mask else None,
                    "params": dict(t.params or {}),
                    "session_id": case.id,
                    "turn": k,
                }
            )
    ws.put_cases(run_id, rows)
