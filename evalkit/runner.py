"""Run the same edit cases across every registered model — resumable, budget-capped, never paying twice.

The life of one call, and what is on disk at each step (so a ``kill -9`` anywhere is safe):

1. ``planned`` — written for every (case, model, repeat) before anything is spent.
2. The call waits for a global slot, a per-provider slot and the provider's images-per-minute limiter.
3. Its maximum price is *reserved* in the :class:`~evalkit.budget.Budget`; if that would cross the cap,
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
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pandas as pd
from aiolimiter import AsyncLimiter

from evalkit.budget import Budget, Reservation
from evalkit.catalog import Catalog, ModelSpec
from evalkit.credentials import redact
from evalkit.errors import BudgetExceededError, Category, EvalkitError, InvalidInputError, WorkspaceError
from evalkit.planning import BASE_SEED, PlannedCall, estimate, plan_calls
from evalkit.providers import create_provider
from evalkit.providers.base import EditOutcome, ImageEditProvider
from evalkit.providers.retry import RetryPolicy
from evalkit.store import Workspace, check_id

#: WaveSpeed account levels: (max concurrent tasks, images per minute) — reference §1.7 (high confidence).
WAVESPEED_LEVELS = {"bronze": (3, 10), "silver": (100, 500), "gold": (2000, 3000), "ultra": (5000, 5000)}

#: errors of an accepted job worth polling again within the run (a TIMEOUT already waited the whole poll
#: schedule, so it is left `submitted` for `--resume` instead)
_TRANSIENT = (Category.RATE_LIMIT, Category.SERVER, Category.NETWORK)

#: how the runner waits out rate limits and transient polling trouble on top of the provider's own retries
DEFAULT_PATIENCE = RetryPolicy(max_attempts=8, base_s=1.0, factor=2.0, max_backoff_s=60.0)


@dataclass(frozen=True)
class ProviderLimits:
    max_concurrent: int | None = None
    images_per_minute: float | None = None


def default_provider_limits(name: str, base_url: str | None) -> ProviderLimits:
    """Per-provider defaults. A provider pointed at a loopback server (a local simulator) gets none."""
    if base_url and (urlsplit(base_url).hostname or "") in ("127.0.0.1", "localhost", "::1"):
        return ProviderLimits()
    if name == "wavespeed":
        level = os.environ.get("EVALKIT_WAVESPEED_LEVEL", "bronze").lower()
        conc, per_min = WAVESPEED_LEVELS.get(level, WAVESPEED_LEVELS["bronze"])
        return ProviderLimits(conc, per_min)
    if name == "stability":
        return ProviderLimits(10, 600)  # Stability allows 150 requests / 10 s; stay well below
    if name == "huggingface":
        return ProviderLimits(4, None)
    if name == "local":
        return ProviderLimits(max(1, (os.cpu_count() or 2)), None)
    return ProviderLimits()


def parse_provider_limits(spec: str | None) -> dict[str, ProviderLimits]:
    """``"wavespeed=100/500,stability=10"`` → limits (concurrent[/images per minute])."""
    out: dict[str, ProviderLimits] = {}
    for part in filter(None, (p.strip() for p in (spec or "").split(","))):
        try:
            name, value = part.split("=", 1)
            conc, _, rate = value.partition("/")
            out[name.strip()] = ProviderLimits(int(conc) if conc else None, float(rate) if rate else None)
        except ValueError:
            raise InvalidInputError(
                f"bad provider limit {part!r}", hint="write NAME=CONCURRENT[/IMAGES_PER_MINUTE], e.g. wavespeed=100/500"
            ) from None
    return out


@dataclass
class RunResult:
    run_id: str
    workspace: str
    planned: int = 0
    completed: int = 0
    failed: int = 0
    skipped: int = 0
    not_applicable: int = 0
    unknown: int = 0
    #: accepted jobs still running when the run stopped waiting: `--resume` polls them (never re-submits)
    pending: int = 0
    cached: int = 0
    cost_usd: float = 0.0
    wall_s: float = 0.0
    stop_reason: str | None = None
    simulated: bool = False
    dry_run: bool = False
    estimate: pd.DataFrame | None = field(default=None, repr=False)
    failures_by_category: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("estimate", None)
        d["cost_usd"] = round(self.cost_usd, 6)
        d["wall_s"] = round(self.wall_s, 3)
        return d


class StopController:
    """Ctrl-C handling: the first interrupt stops submitting and gives in-flight calls a grace period;
    a second one stops waiting for them (their rows stay resumable)."""

    def __init__(self) -> None:
        self.stop_submitting = asyncio.Event()
        self.abandon = asyncio.Event()
        self.reason: str | None = None

    def request_stop(self, reason: str) -> None:
        if not self.stop_submitting.is_set():
            self.reason = reason
            self.stop_submitting.set()

    def interrupt(self) -> None:
        if self.stop_submitting.is_set() and self.reason == "interrupted":
            self.abandon.set()
        self.request_stop("interrupted")


def _safe_url(url: str | None) -> str | None:
    """A base URL without any userinfo (never store credentials)."""
    if not url:
        return url
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:4]


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
    no_cache: bool = False,
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
) -> RunResult:
    """Run ``suite`` across ``models``; see the module docstring. In Jupyter: ``await evalkit.arun(...)``."""
    from evalkit import __version__
    from evalkit.suites import load_suite

    t0 = time.monotonic()
    if not isinstance(concurrency, int) or isinstance(concurrency, bool) or concurrency < 1:
        raise InvalidInputError(f"concurrency must be a whole number ≥ 1, got {concurrency!r}")
    if budget_usd is not None and (not isinstance(budget_usd, (int, float)) or budget_usd != budget_usd or budget_usd < 0):
        raise InvalidInputError(f"budget must be a number of USD ≥ 0, got {budget_usd!r}")
    if not isinstance(repeats, int) or isinstance(repeats, bool) or repeats < 1:
        raise InvalidInputError(f"repeats must be a whole number ≥ 1, got {repeats!r}")
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
    if suite is None:
        raise InvalidInputError("no suite given", hint="pass --suite NAME|PATH (see `evalkit suites`)")
    the_suite = load_suite(suite)
    catalog = catalog or Catalog.load(ws.path)
    specs = catalog.select(models)
    if not specs:
        raise InvalidInputError(f"no models selected by {models!r}", hint="use --models all or a list of ids")
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
        planned = plan_calls(run_id, the_suite.cases, specs, providers, repeats=repeats, base_seed=base_seed)
        result = RunResult(run_id=run_id, workspace=str(ws.path), dry_run=dry_run)
        result.estimate = estimate(planned)
        if dry_run:  # no keys needed to see a plan
            result.planned = sum(pc.status == "planned" for pc in planned)
            result.not_applicable = sum(pc.status == "not_applicable" for pc in planned)
            result.wall_s = time.monotonic() - t0
            return result

        # a missing key stops the run before anything is written or spent (not one auth failure per call)
        for name in sorted({pc.model.provider for pc in planned if pc.status == "planned"}):
            check = getattr(providers[name], "ensure_credentials", None)
            if check is not None:
                check()
        config = {
            "suite": the_suite.name,
            "concurrency": concurrency,
            "base_seed": base_seed,
            "no_cache": no_cache,
            "provider_base_urls": {n: _safe_url(getattr(p, "base_url", None)) for n, p in providers.items()},
            "provider_limits": {k: asdict(v) for k, v in (provider_limits or {}).items()},
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
            _record_cases(ws, run_id, the_suite, planned)
            ws.insert_calls(pc.row() for pc in planned)
            ws.update_run(run_id, status="running")
            execution = _Execution(
                ws=ws, run_id=run_id, planned=planned, providers=providers, budget_usd=budget_usd,
                concurrency=concurrency, limits=provider_limits or {}, no_cache=no_cache, progress=progress,
                grace_period_s=grace_period_s, resubmit_unknown=resubmit_unknown, retry_failed=retry_failed,
                controller=controller, patience=patience or DEFAULT_PATIENCE,
            )
            try:
                await execution.execute()
            except asyncio.CancelledError:
                ws.update_run(run_id, status="interrupted", wall_s=time.monotonic() - t0)
                raise
            finally:
                execution.close_progress()
            status = {None: "completed", "budget": "budget_exhausted", "interrupted": "interrupted"}.get(
                controller.reason, "stopped")
            wall = time.monotonic() - t0
            ws.update_run(run_id, status=status, wall_s=wall, simulated=int(execution.simulated),
                          note=execution.stop_message)
            return summarise(ws, run_id, wall_s=wall, stop_reason=controller.reason, estimate_df=result.estimate)
    finally:
        for p in providers.values():
            with contextlib.suppress(Exception):
                await p.aclose()


def run(*args: Any, **kwargs: Any) -> RunResult:
    """Synchronous :func:`arun` for scripts and the CLI. Ctrl-C stops submitting and keeps everything done."""
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
        controller = kwargs.pop("controller", None) or StopController()
        loop = asyncio.get_running_loop()
        installed = False
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGINT, controller.interrupt)
            loop.add_signal_handler(signal.SIGTERM, controller.interrupt)
            installed = True
        try:
            return await arun(*args, controller=controller, **kwargs)
        finally:
            if installed:
                loop.remove_signal_handler(signal.SIGINT)
                loop.remove_signal_handler(signal.SIGTERM)

    return asyncio.run(main())


def summarise(ws: Workspace, run_id: str, *, wall_s: float | None = None, stop_reason: str | None = None,
              estimate_df: pd.DataFrame | None = None) -> RunResult:
    """Counts and cost of a run as recorded in the workspace."""
    run = ws.get_run(run_id)
    agg = ws.call_counts(run_id)  # aggregated in SQL: a 10,000-call run is not loaded to count it
    counts = agg["by_status"]
    res = RunResult(run_id=run_id, workspace=str(ws.path))
    res.not_applicable = counts.get("not_applicable", 0)
    res.planned = int(sum(counts.values()) - res.not_applicable)
    res.completed = counts.get("completed", 0)
    res.failed = counts.get("failed", 0)
    res.unknown = counts.get("unknown", 0)
    res.pending = agg["pending"]
    res.skipped = int(sum(counts.get(s, 0) for s in ("planned", "submitting", "submitted"))) - res.pending
    res.cached = agg["cached"]
    res.cost_usd = agg["cost_usd"]
    res.wall_s = float(wall_s if wall_s is not None else (run.get("wall_s") or 0.0))
    res.stop_reason = stop_reason
    res.simulated = bool(run.get("simulated"))
    res.estimate = estimate_df
    res.failures_by_category = agg["failures_by_category"]
    return res


def _record_cases(ws: Workspace, run_id: str, suite: Any, planned: Sequence[PlannedCall]) -> None:
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
        rows.append({
            "case_id": case.id, "operation": case.operation, "category": case.category, "prompt": case.prompt,
            "language": case.language, "input_sha256": shas, "mask_sha256": mask_sha, "target_width": tw,
            "target_height": th, "tags": list(case.tags), "params": dict(case.params or {}),
        })
    ws.put_cases(run_id, rows)


class _Execution:
    """Fan-out of one run's remaining calls: per-provider queues and workers, one global semaphore."""

    def __init__(self, *, ws: Workspace, run_id: str, planned: Sequence[PlannedCall], providers: Mapping[str, ImageEditProvider],
                 budget_usd: float | None, concurrency: int, limits: Mapping[str, ProviderLimits], no_cache: bool,
                 progress: bool | Callable[[dict[str, Any]], None], grace_period_s: float, resubmit_unknown: bool,
                 retry_failed: bool, controller: StopController, patience: RetryPolicy = DEFAULT_PATIENCE):
        if concurrency < 1:
            raise InvalidInputError(f"concurrency must be ≥ 1, got {concurrency}")
        self.ws, self.run_id, self.providers = ws, run_id, providers
        self.by_id = {pc.call_id: pc for pc in planned if pc.status == "planned"}
        self.global_sem = asyncio.Semaphore(concurrency)
        self.concurrency = concurrency
        self.limits = {name: limits.get(name) or default_provider_limits(name, getattr(p, "base_url", None))
                       for name, p in providers.items()}
        self.no_cache, self.grace_period_s = no_cache, grace_period_s
        self.resubmit_unknown, self.retry_failed = resubmit_unknown, retry_failed
        self.controller = controller
        self.patience = patience
        self.budget = Budget(budget_usd)
        self.simulated = False
        self.stop_message: str | None = None
        self.spool = ws.run_spool(run_id, clean=True)
        self.counts = {"completed": 0, "failed": 0, "unknown": 0}
        self._progress_cb = progress if callable(progress) else None
        self._bar = None
        self._want_bar = progress is True

    # ---- progress -----------------------------------------------------------------------------
    def _open_progress(self, total: int, initial: int) -> None:
        if not self._want_bar or os.environ.get("TQDM_DISABLE"):
            return
        from tqdm.auto import tqdm

        import sys

        quiet = not getattr(sys.stderr, "isatty", lambda: False)()  # a log file: update every few seconds, not per call
        self._bar = tqdm(total=total, initial=initial, desc=f"run {self.run_id}", unit="call", dynamic_ncols=True,
                         mininterval=5.0 if quiet else 0.2)
        self._refresh_progress()

    def _refresh_progress(self) -> None:
        info = {"done": self.counts["completed"], "failed": self.counts["failed"], "unknown": self.counts["unknown"],
                "cost_usd": round(self.budget.spent_usd, 4), "in_flight_reserved_usd": round(self.budget.reserved_usd, 4)}
        if self._bar is not None:
            self._bar.set_postfix(ok=info["done"], failed=info["failed"], cost=f"${info['cost_usd']:.3f}", refresh=False)
        if self._progress_cb is not None:
            self._progress_cb(info)

    def _tick(self) -> None:
        if self._bar is not None:
            self._bar.update(1)
        self._refresh_progress()

    def close_progress(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    # ---- main ---------------------------------------------------------------------------------
    async def execute(self) -> None:
        rows = {r["call_id"]: r for r in self.ws.call_rows(self.run_id)}
        to_resume: list[tuple[PlannedCall, dict[str, Any]]] = []
        queues: dict[str, deque[PlannedCall]] = defaultdict(deque)
        done_before = 0
        for call_id, pc in self.by_id.items():
            row = rows.get(call_id)
            status = row["status"] if row else "planned"
            if status in ("completed", "failed", "unknown"):
                # a cost nobody reported (unknown outcome, or a provider that does not say) counts at the
                # most it could have been, as it did when the call ran
                cost = row["cost_usd"]
                self.budget.record_spent(cost if cost is not None else (row["reserved_usd"] or 0.0))
                if status == "failed" and self.retry_failed and _retryable(row["error_category"]):
                    self.ws.reset_call(call_id)
                    pc.prior_cost_usd = row["cost_usd"] or 0.0  # a paid failure stays paid: the retry adds to it
                    queues[pc.model.provider].append(pc)
                    continue
                if status == "unknown" and self.resubmit_unknown:
                    self.ws.reset_call(call_id)
                    queues[pc.model.provider].append(pc)
                    continue
                done_before += 1
                self.counts[status] += 1
            elif status == "submitted" and row["prediction_id"]:
                to_resume.append((pc, row))
            elif status in ("submitting", "submitted"):
                if self.resubmit_unknown:
                    self.ws.reset_call(call_id)
                    queues[pc.model.provider].append(pc)
                else:
                    self._mark_unknown(pc, row)
                    done_before += 1
            else:
                queues[pc.model.provider].append(pc)
        del rows  # the queues hold what is left to do; don't keep a row per call for the whole run
        total = len(self.by_id)
        self._open_progress(total, done_before)

        tasks = [asyncio.create_task(self._resume_call(pc, row)) for pc, row in to_resume]
        for name, q in queues.items():
            lim = self.limits[name]
            n_workers = min(self.concurrency, lim.max_concurrent or self.concurrency, max(1, len(q)))
            provider_sem = asyncio.Semaphore(lim.max_concurrent or self.concurrency)
            limiter = AsyncLimiter(lim.images_per_minute, 60) if lim.images_per_minute else None
            for _ in range(n_workers):
                tasks.append(asyncio.create_task(self._worker(name, q, provider_sem, limiter)))
        if not tasks:
            return
        stop_wait = asyncio.create_task(self.controller.stop_submitting.wait())
        all_done = asyncio.gather(*tasks, return_exceptions=True)
        try:
            await asyncio.wait({stop_wait, all_done}, return_when=asyncio.FIRST_COMPLETED)
            if not all_done.done():  # stopping: give in-flight calls a grace period
                abandon = asyncio.create_task(self.controller.abandon.wait())
                await asyncio.wait({all_done, abandon}, timeout=self.grace_period_s, return_when=asyncio.FIRST_COMPLETED)
                abandon.cancel()
                if not all_done.done():
                    for t in tasks:
                        t.cancel()
                    await asyncio.gather(*tasks, return_exceptions=True)
            results = all_done.result() if all_done.done() and not all_done.cancelled() else []
        except asyncio.CancelledError:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        finally:
            stop_wait.cancel()
        for r in results or []:
            if isinstance(r, BaseException) and not isinstance(r, asyncio.CancelledError):
                raise r

    async def _worker(self, provider_name: str, queue: deque[PlannedCall], provider_sem: asyncio.Semaphore,
                      limiter: AsyncLimiter | None) -> None:
        provider = self.providers[provider_name]
        while queue and not self.controller.stop_submitting.is_set():
            pc = queue.popleft()
            if not self.no_cache and self._serve_from_cache(pc):
                continue
            async with provider_sem, self.global_sem:
                if limiter is not None:
                    await limiter.acquire()
                if self.controller.stop_submitting.is_set():
                    queue.appendleft(pc)
                    return
                try:
                    reservation = self.budget.reserve(pc.prepared.reserve_usd, pc.call_id)
                except BudgetExceededError as exc:
                    self.stop_message = str(exc)
                    self.controller.request_stop("budget")
                    queue.appendleft(pc)
                    return
                try:
                    self.ws.mark_submitting(pc.call_id, reserved_usd=pc.prepared.reserve_usd,
                                            fingerprint=pc.prepared.fingerprint)
                except WorkspaceError as exc:
                    self.budget.settle(reservation, 0.0)
                    self._workspace_failed(exc)
                    return
                request = replace(pc.request, spool_dir=self.spool) if pc.request.spool_dir is None else pc.request
                outcome = await self._with_patience(provider, pc, request, submit=True)
                if _refused(outcome) and self.controller.stop_submitting.is_set():
                    # never accepted, and the run is stopping: it simply stays planned
                    self.budget.settle(reservation, 0.0)
                    self.ws.reset_call(pc.call_id)
                    queue.appendleft(pc)
                    return
                await self._store(pc, outcome, reservation)

    async def _with_patience(self, provider: ImageEditProvider, pc: PlannedCall, request: Any, *, submit: bool,
                             prediction_id: str | None = None) -> EditOutcome:
        """One call, slowed down — never failed — by rate limits and transient polling trouble.

        A submit refused with ``rate_limit`` (provably not accepted) waits and goes again; an accepted
        job whose polls or download failed transiently is polled again via ``resume()``. Both back off
        per :attr:`patience` (the provider has already retried each request a few times). When the
        patience runs out the outcome is recorded as it is: a rate-limit failure, or a resumable job
        left ``submitted`` for ``--resume``.
        """
        async def on_submitted(pid: str, _pc: PlannedCall = pc) -> None:
            self.ws.mark_submitted(_pc.call_id, pid)

        attempt = 0
        if submit:
            outcome = await _guarded(pc, provider.edit(request, on_submitted=on_submitted))
        else:
            outcome = await _guarded(pc, provider.resume(request, prediction_id))
        while attempt + 1 < self.patience.max_attempts and not self.controller.abandon.is_set():
            err = outcome.error
            refused = _refused(outcome)
            collectable = _still_running(outcome) and err is not None and err.category in _TRANSIENT
            if not (refused or collectable):
                break
            attempt += 1
            if refused:
                if self.controller.stop_submitting.is_set():
                    break  # stopping: a call that was never accepted just stays planned
                self.ws.reset_call(pc.call_id)  # provably not accepted: a crash while waiting loses nothing
            await asyncio.sleep(self.patience.backoff_s(attempt))
            if refused:
                self.ws.mark_submitting(pc.call_id, reserved_usd=pc.prepared.reserve_usd, fingerprint=pc.prepared.fingerprint)
                outcome = await _guarded(pc, provider.edit(request, on_submitted=on_submitted))
            else:
                outcome = await _guarded(pc, provider.resume(request, outcome.prediction_id))
        return outcome

    async def _resume_call(self, pc: PlannedCall, row: dict[str, Any]) -> None:
        provider = self.providers[pc.model.provider]
        if not getattr(provider, "resumable", False):
            self._mark_unknown(pc, row)
            self._tick()
            return
        reservation = self.budget.hold(row["reserved_usd"] or pc.prepared.reserve_usd, pc.call_id)
        request = replace(pc.request, spool_dir=self.spool)
        async with self.global_sem:
            outcome = await self._with_patience(provider, pc, request, submit=False, prediction_id=row["prediction_id"])
        if outcome.prediction_id is None:
            outcome.prediction_id = row["prediction_id"]
        await self._store(pc, outcome, reservation)

    # ---- bookkeeping ------------------------------------------------------------------------
    def _serve_from_cache(self, pc: PlannedCall) -> bool:
        hit = self.ws.find_completed(pc.prepared.fingerprint, exclude_call=pc.call_id)
        if hit is None:
            return False
        keep = ("prediction_id", "submit_ms", "queue_ms", "inference_ms", "download_ms", "total_ms", "output_sha256",
                "output_ext", "width", "height", "format", "nsfw", "content_filtered", "input_resized", "simulated",
                "metadata")
        fields = {k: hit[k] for k in keep}
        fields.update(status="completed", cost_usd=0.0, cost_source="cache", cached_from=hit["call_id"],
                      fingerprint=pc.prepared.fingerprint)
        if isinstance(fields["metadata"], str):
            import json

            fields["metadata"] = json.loads(fields["metadata"])
        self.ws.finish_call(pc.call_id, fields)
        self.simulated = self.simulated or bool(hit["simulated"])
        self.counts["completed"] += 1
        self._tick()
        return True

    async def _store(self, pc: PlannedCall, outcome: EditOutcome, reservation: Reservation) -> None:
        unknown = (not outcome.ok) and outcome.error is not None and outcome.error.category == Category.UNKNOWN_OUTCOME
        if unknown and outcome.prediction_id is None:
            recorded = self.ws.get_call(pc.call_id).get("prediction_id")
            if recorded:  # the job was accepted before things went wrong: collect it later, never re-send
                outcome.prediction_id, outcome.resumable = recorded, True
                unknown = False
        resumable = _still_running(outcome) and getattr(self.providers[pc.model.provider], "resumable", False)
        if unknown or resumable or outcome.cost_usd is None:
            # may be billed (yet), or billed at a price nobody told us: count the most it can cost
            billed = reservation.amount_usd
        else:
            billed = outcome.cost_usd
        self.budget.settle(reservation, billed)
        self.simulated = self.simulated or outcome.simulated
        if resumable:
            # accepted and still collectable (we stopped waiting, polls failed, or the download failed):
            # the row stays `submitted` with its prediction id, so `--resume` finishes it without paying again
            self.counts["pending"] = self.counts.get("pending", 0) + 1
            self._tick()
            return
        try:
            # the output's fsync + rename into the blob store runs in a thread, not on the event loop; if the
            # run is cancelled meanwhile, the row stays `submitted` and a resume collects the output again
            fields = await asyncio.to_thread(self._fields, pc, outcome, unknown)
            self.ws.finish_call(pc.call_id, fields)
            if outcome.ok or (outcome.cost_usd or 0) > 0:
                self.ws.record_usage(model_id=pc.model.id, operation=pc.operation, cost_usd=fields["cost_usd"],
                                     cost_source=fields["cost_source"], source="run", run_id=self.run_id,
                                     call_id=pc.call_id, prediction_id=outcome.prediction_id)
        except WorkspaceError as exc:
            self._workspace_failed(exc)
            return
        key = "completed" if outcome.ok else ("unknown" if unknown else "failed")
        self.counts[key] += 1
        self._tick()

    def _fields(self, pc: PlannedCall, o: EditOutcome, unknown: bool) -> dict[str, Any]:
        lat = o.latency
        fields: dict[str, Any] = {
            "status": "completed" if o.ok else ("unknown" if unknown else "failed"),
            "prediction_id": o.prediction_id,
            "submit_ms": lat.submit_ms, "queue_ms": lat.queue_ms, "inference_ms": lat.inference_ms,
            "download_ms": lat.download_ms, "total_ms": lat.total_ms,
            "cost_usd": _add_cost(pc.prior_cost_usd, None if unknown else (
                o.cost_usd if o.cost_usd is not None else (None if o.cost_source == "unknown" else 0.0))),
            "cost_source": "unknown" if unknown else o.cost_source,
            "nsfw": int(o.nsfw), "content_filtered": int(o.content_filtered),
            "input_resized": int(o.input_resized or (pc.prepared.input_resized if pc.prepared else False)),
            "simulated": int(o.simulated),
            "metadata": _jsonable(o.metadata),
        }
        if o.ok:
            ext = _ext(o.format)
            if o.image_path is not None:
                ref = self.ws.put_blob_file(o.image_path, ext, o.image_sha256)
            else:
                ref = self.ws.put_blob(o.image or b"", ext)
            fields.update(output_sha256=ref.sha256, output_ext=ref.ext, width=o.width, height=o.height, format=o.format)
        else:
            err = o.error
            fields.update(error_category=str(err.category) if err else "task_failed",
                          error_message=err.message if err else "failed",
                          error_code=None if err is None or err.code is None else str(err.code))
            if o.image_path is not None:
                with contextlib.suppress(OSError):
                    Path(o.image_path).unlink()
        return fields

    def _mark_unknown(self, pc: PlannedCall, row: dict[str, Any]) -> None:
        self.ws.finish_call(pc.call_id, {
            "status": "unknown", "cost_usd": None, "cost_source": "unknown",
            "error_category": str(Category.UNKNOWN_OUTCOME),
            "error_message": "the run stopped while this request was being submitted (or its provider cannot resume jobs), "
                             "so whether it was accepted is unknown; it was not sent again. "
                             "Re-run with --resubmit-unknown to send it again (this may pay twice).",
        })
        self.budget.record_spent(row.get("reserved_usd") or 0.0)
        self.counts["unknown"] += 1

    def _workspace_failed(self, exc: WorkspaceError) -> None:
        self.stop_message = str(exc)
        self.controller.request_stop("workspace_error")


def _still_running(outcome: EditOutcome) -> bool:
    """A job the provider accepted whose result can still be collected without paying again."""
    return not outcome.ok and outcome.prediction_id is not None and outcome.resumable


def _refused(outcome: EditOutcome) -> bool:
    """A submit the provider provably did not accept because of its rate limit."""
    return (not outcome.ok and outcome.prediction_id is None and outcome.error is not None
            and outcome.error.category == Category.RATE_LIMIT)


async def _guarded(pc: PlannedCall, call: Any) -> EditOutcome:
    """A provider call whose unexpected error becomes a recorded outcome, not a crashed run.

    A provider reports failures as outcomes; an exception escaping it is a bug or a library surprise,
    raised at a moment we cannot know — possibly after the submit was sent. So it is an *unknown
    outcome* (never re-sent automatically); if the job's id was recorded, the call stays resumable."""
    try:
        return await call
    except EvalkitError as exc:
        return EditOutcome.failure(pc.model.id, exc.category, str(exc))
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - see the docstring
        return EditOutcome.failure(pc.model.id, Category.UNKNOWN_OUTCOME,
                                   f"unexpected {type(exc).__name__} from the {pc.model.provider} provider: "
                                   f"{redact(str(exc))[:300]}; not sent again")


def _add_cost(prior: float, cost: float | None) -> float | None:
    """A call's total cost over its attempts (None stays None only when nothing was paid before)."""
    if cost is None:
        return prior or None
    return prior + cost


def _retryable(category: str | None) -> bool:
    return category in ("rate_limit", "server", "network", "timeout")



def _ext(fmt: str | None) -> str:
    f = (fmt or "png").lower()
    return {"jpeg": "jpg", "jpg": "jpg", "png": "png", "webp": "webp", "gif": "gif"}.get(f, "bin")


def _jsonable(d: Mapping[str, Any]) -> dict[str, Any]:
    import json

    return json.loads(json.dumps(dict(d or {}), default=str))
