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

This module is the public side — validate, plan, record the run, summarise; the engine that carries
the calls through steps 2–6 is :mod:`evalkit.engine.execution`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pandas as pd

from evalkit.catalog import Catalog
from evalkit.engine.execution import CallSource, _Execution
from evalkit.engine.planning import BASE_SEED, PlannedCall, estimate, iter_plan
from evalkit.engine.reconcile import ReconcilePolicy
from evalkit.engine.settle import SettleReport, policy_from_env, settle_unknown
from evalkit.errors import EvalkitError, InvalidInputError
from evalkit.providers import create_provider
from evalkit.providers.base import ImageEditProvider
from evalkit.providers.retry import RetryPolicy
from evalkit.store.workspace import Workspace, check_id

#: WaveSpeed account levels: (max concurrent tasks, images per minute) — reference §1.7 (high confidence).
WAVESPEED_LEVELS = {"bronze": (3, 10), "silver": (100, 500), "gold": (2000, 3000), "ultra": (5000, 5000)}

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
    #: unknown submits settled from the provider's history in this call: matched / resubmit / unknown
    reconciled: dict[str, int] = field(default_factory=dict)
    #: the most the calls still ``unknown`` may have cost (their reservations)
    unknown_max_usd: float = 0.0

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
    reconcile_policy: ReconcilePolicy | None = None,
    settle_wait_s: float = 0.0,
) -> RunResult:
    """Run ``suite`` across ``models``; see the module docstring. In Jupyter: ``await evalkit.arun(...)``."""
    from evalkit import __version__
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
        # Planning is pure and deterministic, so it runs twice rather than holding every request for the
        # whole run: once for the estimate, once (below) to write the rows and keep a small stub per call.
        inputs: dict[str, tuple] = {}  # each case decoded once, shared by both passes and every call

        def plan() -> Iterator[PlannedCall]:
            return iter_plan(
                run_id, the_suite.cases, specs, providers, repeats=repeats, base_seed=base_seed, inputs=inputs
            )

        result = RunResult(run_id=run_id, workspace=str(ws.path), dry_run=dry_run)
        result.estimate = estimate(plan())
        per_model = result.estimate[result.estimate["model_id"] != "TOTAL"]
        if dry_run:  # no keys needed to see a plan
            result.planned = int(per_model["calls"].sum())
            result.not_applicable = int(per_model["not_applicable"].sum())
            result.wall_s = time.monotonic() - t0
            return result

        # a missing key stops the run before anything is written or spent (not one auth failure per call)
        for name in sorted(set(per_model.loc[per_model["calls"] > 0, "provider"])):
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
            _record_cases(ws, run_id, the_suite)

            def rows() -> Iterator[dict[str, Any]]:
                for pc in plan():
                    yield pc.row()
                    pc.release()

            ws.insert_calls(rows())
            # nothing is held per call: the engine reads the planned calls back from the workspace a chunk at a
            # time and rebuilds each request when it runs (planning is pure and deterministic)
            source = CallSource(run_id, {c.id: c for c in the_suite.cases}, {m.id: m for m in specs}, inputs)
            ws.update_run(run_id, status="running")
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
                name: given_limits.get(name) or default_provider_limits(name, getattr(p, "base_url", None))
                for name, p in providers.items()
            }
            execution = _Execution(
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
            )
            try:
                await execution.execute()
                if (
                    settle_wait_s > 0
                    and execution.counts.get("unknown", 0) > 0
                    and not controller.stop_submitting.is_set()
                    and any(getattr(p, "reconcilable", False) for p in providers.values())
                ):
                    # submits lost in this run (a 500 after sending, a dropped connection, a sync POST cut off):
                    # settle them from the history now, then collect / re-send what it proved
                    again = await settle_unknown(
                        ws, run_id, providers, endpoints, policy=policy, wait_for_settle_s=settle_wait_s
                    )
                    settled.decisions.extend(again.decisions)
                    if again.matched or again.resubmit:
                        execution.close_progress()
                        execution = _Execution(
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
                        )
                        await execution.execute()
            except asyncio.CancelledError:
                ws.update_run(run_id, status="interrupted", wall_s=time.monotonic() - t0)
                raise
            finally:
                execution.close_progress()
            status = {None: "completed", "budget": "budget_exhausted", "interrupted": "interrupted"}.get(
                controller.reason, "stopped"
            )
            wall = time.monotonic() - t0
            ws.update_run(
                run_id, status=status, wall_s=wall, simulated=int(execution.simulated), note=execution.stop_message
            )
            summary = summarise(ws, run_id, wall_s=wall, stop_reason=controller.reason, estimate_df=result.estimate)
            if settled.decisions:
                summary.reconciled = {k: v for k, v in settled.as_dict().items() if k != "reasons"}
            return summary
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
    res.unknown_max_usd = float(agg.get("unknown_max_usd", 0.0) or 0.0)
    return res


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
        rows.append(
            {
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
            }
        )
    ws.put_cases(run_id, rows)
