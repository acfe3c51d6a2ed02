"""The execution engine of a run: carries each remaining call through the steps in :mod:`evalkit.engine.runner`'s
docstring (planned → submitting → submitted → completed / failed / unknown), writing each step to the
workspace before the next one can spend money.

:class:`Execution` fans the calls out over per-provider queues and workers under one global semaphore,
per-provider semaphores and images-per-minute limiters; reserves each call's maximum price in the
:class:`~evalkit.engine.budget.Budget` before sending; waits out rate limits and transient polling trouble
(the runner's patience); collects accepted jobs on resume instead of re-sending them; serves
fingerprint cache hits from earlier runs; and stores outcomes, blobs and the usage ledger. Only
:func:`evalkit.engine.runner.arun` constructs it (after planning, budget and credential checks); the runner's
public API and result types stay in :mod:`evalkit.engine.runner`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from aiolimiter import AsyncLimiter

from evalkit.credentials import redact
from evalkit.engine.budget import Budget, Reservation
from evalkit.engine.control import StopController
from evalkit.engine.limits import ProviderLimits
from evalkit.engine.planning import PlannedCall
from evalkit.engine.sessions import SessionTurns
from evalkit.errors import BudgetExceededError, Category, EvalkitError, InvalidInputError, WorkspaceError
from evalkit.images import InputImage, load_image
from evalkit.progress import progress_bar
from evalkit.providers.base import EditOutcome, ImageEditProvider, PreparedRequest, QuotesPrices, capabilities_of
from evalkit.providers.retry import RetryPolicy
from evalkit.store import CallStatus, Workspace

#: planned calls read from the workspace at a time, per provider (the queues never hold the whole plan)
CHUNK = 256


class CallSource:
    """Makes a waiting call's stub from its workspace row when the call is about to run, so a run holds a
    few chunks of stubs — not one per planned call (flat memory at 100,000 calls)."""

    def __init__(
        self,
        run_id: str,
        cases: Mapping[str, Any],
        specs: Mapping[str, Any],
        inputs: dict[str, tuple] | None = None,
        ws: Workspace | None = None,
    ):
        """``cases`` maps case id → case (a session under its own id); ``ws`` reads a later turn's input."""
        self.run_id, self.cases, self.specs = run_id, cases, specs
        self.inputs = inputs if inputs is not None else {}
        self.ws = ws

    def stub(self, row: Mapping[str, Any]) -> PlannedCall | None:
        """The call of ``row`` (None when its case or model is no longer part of the run). A later turn of a
        session gets its parent's stored output as its input."""
        session_id = row.get("session_id")
        case = self.cases.get(session_id if session_id else row["case_id"])
        model = self.specs.get(row["model_id"])
        if case is None or model is None:
            return None
        if case.id not in self.inputs:
            self.inputs[case.id] = case.load_inputs()
        turn_input = None
        if row.get("parent_call_id"):
            if self.ws is None:
                raise EvalkitError(f"call {row['call_id']} is a later turn: its input needs the workspace")
            turn_input = _stored_output(self.ws, row["parent_call_id"])
        return PlannedCall(
            call_id=row["call_id"],
            run_id=self.run_id,
            case_id=row["case_id"],
            model=model,
            repeat=row["repeat"],
            operation=row["operation"],
            category=row["category"],
            seed=row["seed"],
            prior_cost_usd=row.get("cost_usd") or 0.0,  # a retried paid failure stays paid: the retry adds to it
            case=case,
            inputs=self.inputs[case.id],
            turn=row.get("turn"),
            session_id=session_id,
            parent_call_id=row.get("parent_call_id"),
            turn_input=turn_input,
        )


def _stored_output(ws: Workspace, call_id: str) -> InputImage:
    """A completed call's output as an input image: the very bytes the provider returned (and the blob store
    holds), so a session's next turn edits exactly what the model made."""
    row = ws.get_call(call_id)
    if row["status"] != CallStatus.COMPLETED or not row.get("output_sha256"):
        raise EvalkitError(f"call {call_id} has no output to continue its session from (status {row['status']})")
    data = ws.blob_path(row["output_sha256"], row["output_ext"]).read_bytes()
    return load_image(data, name=f"{row['case_id']}:{row['model_id']} output")


#: errors that may pass if tried again later: a failed call with one of these is re-sent by `--retry-failed`;
#: an accepted job whose polls failed with one is polled again within the run — except TIMEOUT, which
#: already waited the whole poll schedule, so that job is left `submitted` for `--resume` instead
TRANSIENT_CATEGORIES = frozenset({Category.RATE_LIMIT, Category.SERVER, Category.NETWORK, Category.TIMEOUT})


class _Slot:
    """One call's place among the calls running at the provider: its provider's semaphore and the global one.

    Held from before the submit until the provider's task has finished — released then by the provider's
    ``on_finished`` hook when it has one (``reports_finished``), else when the call is done — so fetching a
    finished task's output never keeps the next task from starting. Releasing twice is a no-op."""

    __slots__ = ("_sems", "_held")

    def __init__(self, *sems: asyncio.Semaphore):
        self._sems, self._held = sems, 0

    async def acquire(self) -> None:
        try:
            for sem in self._sems:
                await sem.acquire()
                self._held += 1
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        while self._held:
            self._held -= 1
            self._sems[self._held].release()


class Execution(SessionTurns):
    """Fan-out of one run's remaining calls: per-provider queues and workers, one global semaphore.

    A session's turns are carried by :class:`~evalkit.engine.sessions.SessionTurns` (its budget hold, its next
    turn, the turns not reached)."""

    def __init__(
        self,
        *,
        ws: Workspace,
        run_id: str,
        source: CallSource,
        providers: Mapping[str, ImageEditProvider],
        budget_usd: float | None,
        concurrency: int,
        limits: Mapping[str, ProviderLimits],
        no_cache: bool,
        progress: bool | Callable[[dict[str, Any]], None],
        grace_period_s: float,
        resubmit_unknown: bool,
        retry_failed: bool,
        controller: StopController,
        patience: RetryPolicy,
        allow_partial_sessions: bool = False,
        quote_prices: bool = False,
    ):
        """``limits`` holds every provider's limits, defaults already filled in by the runner. A session is
        only started when the budget can hold all its remaining turns, unless ``allow_partial_sessions``.
        ``quote_prices``: a session's later turn, whose request exists only once the turn before has run, is
        quoted then (the plan's quotes priced it on the original image)."""
        if concurrency < 1:
            raise InvalidInputError(f"concurrency must be ≥ 1, got {concurrency}")
        self.ws, self.run_id, self.providers = ws, run_id, providers
        self.source = source
        #: per provider: the rowid of the last planned call read into its queue (None once all are read)
        self._cursor: dict[str, int | None] = {}
        self.global_sem = asyncio.Semaphore(concurrency)
        self.concurrency = concurrency
        self.limits = dict(limits)
        self.no_cache, self.grace_period_s, self.quote_prices = no_cache, grace_period_s, quote_prices
        self.resubmit_unknown, self.retry_failed = resubmit_unknown, retry_failed
        self.controller = controller
        self.patience = patience
        self.budget = Budget(budget_usd)
        self.simulated = False
        self.stop_message: str | None = None
        #: providers whose account ran dry in this run → what the provider said; their workers stopped
        #: submitting and their untried calls stay planned (a resume after a top-up sends them)
        self.dry_accounts: dict[str, str] = {}
        self.spool = ws.run_spool(run_id, clean=True)
        self.counts: dict[str, int] = {CallStatus.COMPLETED: 0, CallStatus.FAILED: 0, CallStatus.UNKNOWN: 0}
        self._progress_cb = progress if callable(progress) else None
        self._bar = None
        self._want_bar = progress is True
        # sessions (evalkit.engine.sessions): next turns, turns running, budget holds
        self.allow_partial_sessions = allow_partial_sessions
        self._next_turns = {}
        self._turns_running = {}
        self._turn_done = {}
        self._session_holds = {}
        #: a call could not be reserved: only the sessions begun go on (then the run stops for the budget)
        self._budget_full = False

    # ---- progress -----------------------------------------------------------------------------
    def _open_progress(self, total: int, initial: int) -> None:
        self._bar = progress_bar(total, f"run {self.run_id}", initial=initial, enabled=self._want_bar)
        if self._bar is not None:
            self._refresh_progress()

    def _refresh_progress(self) -> None:
        info = {
            "done": self.counts[CallStatus.COMPLETED],
            "failed": self.counts[CallStatus.FAILED],
            "unknown": self.counts[CallStatus.UNKNOWN],
            "cost_usd": round(self.budget.spent_usd, 4),
            "in_flight_reserved_usd": round(self.budget.reserved_usd, 4),
        }
        if self._bar is not None:
            self._bar.set_postfix(
                ok=info["done"], failed=info["failed"], cost=f"${info['cost_usd']:.3f}", refresh=False
            )
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
        # what finished calls count against the budget, aggregated in SQL (a 100,000-call run is not loaded)
        spent, done_before = self.ws.committed_usd(self.run_id)
        self.budget.record_spent(spent)
        counts = self.ws.call_counts(self.run_id)["by_status"]
        for status in (CallStatus.COMPLETED, CallStatus.FAILED, CallStatus.UNKNOWN):
            self.counts[status] += counts.get(status, 0)
        # only calls that need something other than a plain submit are read here (usually few)
        wanted = [CallStatus.SUBMITTING, CallStatus.SUBMITTED]
        if self.retry_failed:
            wanted.append(CallStatus.FAILED)
        if self.resubmit_unknown:
            wanted.append(CallStatus.UNKNOWN)
        to_resume: list[tuple[PlannedCall, dict[str, Any]]] = []
        for row in self.ws.call_rows(
            self.run_id,
            statuses=wanted,
            columns=(
                "call_id",
                "case_id",
                "model_id",
                "repeat",
                "seed",
                "operation",
                "category",
                "status",
                "prediction_id",
                "cost_usd",
                "reserved_usd",
                "price_usd",
                "price_source",
                "error_category",
                "turn",
                "session_id",
                "parent_call_id",
            ),
        ):
            status = row["status"]
            if status == CallStatus.FAILED:
                if row["error_category"] in TRANSIENT_CATEGORIES:
                    self.ws.reset_call(row["call_id"])  # back to planned: its queue reads it again, prior cost kept
                    done_before -= 1
                    self.counts[CallStatus.FAILED] -= 1
                continue
            if status == CallStatus.UNKNOWN:
                self.ws.reset_call(row["call_id"])
                done_before -= 1
                self.counts[CallStatus.UNKNOWN] -= 1
                continue
            pc = self.source.stub(row)
            if pc is None:
                continue
            if status == CallStatus.SUBMITTED and row["prediction_id"]:
                to_resume.append((pc, row))
            elif self.resubmit_unknown:
                self.ws.reset_call(row["call_id"])
            else:
                self._mark_unknown(pc, row)
                done_before += 1
        # a session whose turn ended without an output (in an earlier process) goes no further: its later turns
        # are not reached (planned again should that turn be retried or settled and complete)
        self.ws.mark_not_reached(self.run_id, "not reached: the turn before ({parent}) ended {category}")
        planned = self.ws.planned_counts(self.run_id)
        total = done_before + len(to_resume) + sum(planned.values())
        self._open_progress(total, done_before)
        queues: dict[str, deque[PlannedCall]] = {name: deque() for name, n in planned.items() if n}
        self._next_turns = {name: deque() for name in queues}
        self._cursor = dict.fromkeys(queues, 0)
        self._turns_running = dict.fromkeys(queues, 0)
        self._turn_done = {name: asyncio.Event() for name in queues}
        # sessions an earlier process left between two turns continue first
        for row in self.ws.session_continuations(self.run_id):
            pc = self.source.stub(row)
            if pc is not None and pc.model.provider in queues:
                self._next_turns[pc.model.provider].append(pc)
        for pc, _row in to_resume:
            if pc.turn is not None and pc.model.provider in queues:
                self._turns_running[pc.model.provider] += 1  # its next turn is queued when it completes

        tasks = [asyncio.create_task(self._resume_call(pc, row)) for pc, row in to_resume]
        for name, q in queues.items():
            lim = self.limits[name]
            slots = min(self.concurrency, lim.max_concurrent or self.concurrency)
            # a provider that says when its task finished frees the call's slot then (see _Slot): as many
            # workers again fetch finished outputs while the slots run the next tasks
            early = capabilities_of(self.providers[name]).reports_finished
            n_workers = min(slots * (2 if early else 1), max(1, planned[name]))
            provider_sem = asyncio.Semaphore(lim.max_concurrent or self.concurrency)
            limiter = AsyncLimiter(lim.images_per_minute, 60) if lim.images_per_minute else None
            for i in range(n_workers):
                tasks.append(asyncio.create_task(self._worker(name, q, provider_sem, limiter, ramp=i)))
        if not tasks:
            return
        stop_wait: asyncio.Future[Any] = asyncio.create_task(self.controller.stop_submitting.wait())
        all_done: asyncio.Future[Any] = asyncio.gather(*tasks, return_exceptions=True)
        try:
            await asyncio.wait({stop_wait, all_done}, return_when=asyncio.FIRST_COMPLETED)
            if not all_done.done():  # stopping: give in-flight calls a grace period
                abandon: asyncio.Future[Any] = asyncio.create_task(self.controller.abandon.wait())
                await asyncio.wait(
                    {all_done, abandon}, timeout=self.grace_period_s, return_when=asyncio.FIRST_COMPLETED
                )
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

    async def _worker(
        self,
        provider_name: str,
        queue: deque[PlannedCall],
        provider_sem: asyncio.Semaphore,
        limiter: AsyncLimiter | None,
        ramp: int = 0,
    ) -> None:
        # worker i starts i turns of the event loop after the first: at the start of a run each submit goes out
        # as soon as it is built, instead of every worker building its call before the first request can leave
        for _ in range(ramp):
            await asyncio.sleep(0)
        next_turns = self._next_turns[provider_name]
        while not self.controller.stop_submitting.is_set() and provider_name not in self.dry_accounts:
            if next_turns:  # sessions begun go first: their later turns are held in the budget already
                pc = next_turns.popleft()
            else:
                if not self._budget_full and not queue:
                    self._refill(provider_name, queue)
                if self._budget_full or not queue:
                    if self._turns_running.get(provider_name, 0) > 0:
                        # a session turn still running will queue its next turn: wait for it, then look again
                        done = self._turn_done[provider_name]
                        done.clear()
                        await done.wait()
                        continue
                    if self._budget_full and not self._sessions_in_progress():
                        self.controller.request_stop("budget")  # the sessions begun are done: the run stops
                    return
                pc = queue.popleft()
            if pc.turn is None:
                if not await self._run_call(provider_name, pc, queue, provider_sem, limiter):
                    return
                continue
            self._turns_running[provider_name] += 1
            try:
                go_on = await self._run_call(provider_name, pc, queue, provider_sem, limiter)
            finally:
                self._turns_running[provider_name] -= 1
                self._turn_done[provider_name].set()
            if not go_on:
                return

    async def _run_call(
        self,
        provider_name: str,
        pc: PlannedCall,
        queue: deque[PlannedCall],
        provider_sem: asyncio.Semaphore,
        limiter: AsyncLimiter | None,
    ) -> bool:
        """Carry one call from planned to its outcome; False when this worker should stop (the call is back
        at the front of its queue, still planned)."""
        provider = self.providers[provider_name]
        try:
            pc.build(provider)
        except EvalkitError as exc:  # the pair cannot run any more (e.g. the catalogue changed since planning)
            self.ws.finish_call(pc.call_id, {"status": CallStatus.NOT_APPLICABLE, "reason": exc.message})
            self._end_session(pc, f"turn {pc.turn} is not applicable: {exc.message}")
            return True
        if self.quote_prices and pc.parent_call_id and isinstance(provider, QuotesPrices):
            await self._quote_turn(pc, provider)
        if not self.no_cache and self._serve_from_cache(pc):
            pc.release()
            return True
        slot = _Slot(provider_sem, self.global_sem)
        await slot.acquire()
        try:
            if limiter is not None:
                await limiter.acquire()
            if self.controller.stop_submitting.is_set() or provider_name in self.dry_accounts:
                self._put_back(pc, queue)
                return False
            request, prepared = pc.built
            try:
                reservation = self._reserve(pc, prepared.reserve_usd)
            except BudgetExceededError as exc:
                self._release_session_hold(pc)
                queue.appendleft(pc)  # not a session's next turn any more: nothing more starts
                self.stop_message = str(exc)
                self._budget_full = True
                if not self._sessions_in_progress(pc):
                    self.controller.request_stop("budget")
                    return False
                # the sessions begun hold what they need to finish: the workers go on with their later turns
                # only, and the run stops once they are done
                return True
            try:
                self.ws.mark_submitting(pc.call_id, **_submitting_fields(pc.prepared))
            except WorkspaceError as exc:
                self.budget.settle(reservation, 0.0)
                self._release_session_hold(pc)
                self._workspace_failed(exc)
                return False
            if request.spool_dir is None:
                request = replace(request, spool_dir=self.spool)
            outcome = await self._with_patience(provider, pc, request, submit=True, slot=slot)
            if _refused(outcome) and self.controller.stop_submitting.is_set():
                # never accepted, and the run is stopping: it simply stays planned
                self.budget.settle(reservation, 0.0)
                self.ws.reset_call(pc.call_id)
                self._put_back(pc, queue)
                return False
            if _out_of_balance(outcome):
                # the account ran dry: nothing was created, so the call stays planned (not failed); this
                # provider stops submitting, calls in flight finish, and a resume after a top-up sends the rest
                self.budget.settle(reservation, 0.0)
                self.ws.reset_call(pc.call_id)
                self._put_back(pc, queue)
                err = outcome.error
                self.dry_accounts.setdefault(provider_name, redact(err.message if err else "out of balance"))
                return False
            await self._store(pc, outcome, reservation)
            pc.release()  # done: don't hold its request for the rest of the run
        finally:
            slot.release()
        return True

    def _refill(self, provider_name: str, queue: deque[PlannedCall]) -> None:
        """Read the provider's next chunk of planned calls into its queue (synchronously: no other worker
        can read the same chunk meanwhile)."""
        cursor = self._cursor.get(provider_name)
        if cursor is None:
            return
        rows = self.ws.planned_chunk(self.run_id, provider_name, after_rowid=cursor, limit=CHUNK)
        if not rows:
            self._cursor[provider_name] = None
            return
        self._cursor[provider_name] = rows[-1]["rowid"]
        for row in rows:
            pc = self.source.stub(row)
            if pc is not None:
                queue.append(pc)

    async def _with_patience(
        self,
        provider: ImageEditProvider,
        pc: PlannedCall,
        request: Any,
        *,
        submit: bool,
        prediction_id: str | None = None,
        slot: _Slot | None = None,
    ) -> EditOutcome:
        """One call, slowed down — never failed — by rate limits and transient polling trouble.

        A submit refused with ``rate_limit`` (provably not accepted) waits and goes again; an accepted
        job whose polls or download failed transiently is polled again via ``resume()``. Both back off
        per :attr:`patience` (the provider has already retried each request a few times). When the
        patience runs out the outcome is recorded as it is: a rate-limit failure, or a resumable job
        left ``submitted`` for ``--resume``.
        """

        async def on_submitted(pid: str, _pc: PlannedCall = pc) -> None:
            self.ws.mark_submitted(_pc.call_id, pid)

        async def on_sending(body: Any, _pc: PlannedCall = pc) -> None:
            self.ws.record_sent_body(_pc.call_id, body)

        # a provider that lists its predictions reports the body it sends: an unknown outcome can then be
        # recognised in its history (evalkit.engine.reconcile) instead of staying unknown
        can = capabilities_of(provider)
        hooks: dict[str, Any] = {"on_submitted": on_submitted}
        if can.reconcilable:
            hooks["on_sending"] = on_sending
        if slot is not None and can.reports_finished:
            hooks["on_finished"] = slot.release

        attempt = 0
        if submit:
            outcome = await _guarded(pc, provider.edit(request, **hooks))
        else:
            assert prediction_id is not None, "a resumed call has its prediction id"
            outcome = await _guarded(pc, provider.resume(request, prediction_id))
        while attempt + 1 < self.patience.max_attempts and not self.controller.abandon.is_set():
            err = outcome.error
            refused = _refused(outcome)
            collectable = (
                _still_running(outcome)
                and err is not None
                and err.category in TRANSIENT_CATEGORIES
                and err.category != Category.TIMEOUT
            )
            if not (refused or collectable):
                break
            attempt += 1
            if refused:
                if self.controller.stop_submitting.is_set():
                    break  # stopping: a call that was never accepted just stays planned
                self.ws.reset_call(pc.call_id)  # provably not accepted: a crash while waiting loses nothing
            await asyncio.sleep(self.patience.backoff_s(attempt))
            if refused:
                self.ws.mark_submitting(pc.call_id, **_submitting_fields(pc.prepared))
                outcome = await _guarded(pc, provider.edit(request, **hooks))
            else:
                assert outcome.prediction_id is not None  # not refused: the job was accepted
                outcome = await _guarded(pc, provider.resume(request, outcome.prediction_id))
        return outcome

    async def _resume_call(self, pc: PlannedCall, row: dict[str, Any]) -> None:
        name = pc.model.provider
        if pc.turn is None or name not in self._turn_done:
            await self._collect(pc, row)
            return
        try:  # a session turn: the provider's workers wait for the next turn it queues
            await self._collect(pc, row)
        finally:
            self._turns_running[name] -= 1
            self._turn_done[name].set()

    async def _collect(self, pc: PlannedCall, row: dict[str, Any]) -> None:
        provider = self.providers[pc.model.provider]
        if not capabilities_of(provider).resumable:
            self._mark_unknown(pc, row)
            self._end_session(pc, f"turn {pc.turn} ({pc.call_id}) has an unknown outcome")
            self._tick()
            return
        request, prepared = pc.build(provider).built
        reservation = self.budget.hold(row["reserved_usd"] or prepared.reserve_usd, pc.call_id)
        request = replace(request, spool_dir=self.spool)
        async with self.global_sem:
            outcome = await self._with_patience(provider, pc, request, submit=False, prediction_id=row["prediction_id"])
        if outcome.prediction_id is None:
            outcome.prediction_id = row["prediction_id"]
        _priced_at_submit(outcome, row)
        await self._store(pc, outcome, reservation)
        pc.release()

    # ---- bookkeeping ------------------------------------------------------------------------
    async def _quote_turn(self, pc: PlannedCall, provider: QuotesPrices) -> None:
        """Quote a later turn's own request — its input is the turn before's output, whose size can change the
        price — unless the provider holds a quote for it already (``mark_submitting`` records the price)."""
        if pc.built[1].price_source == "quoted":
            return
        request, prepared = pc.built
        await asyncio.to_thread(provider.quote_prices, [prepared])
        pc.prepared = self.providers[pc.model.provider].prepare(request)

    def _serve_from_cache(self, pc: PlannedCall) -> bool:
        fingerprint = pc.built[1].fingerprint
        hit = self.ws.find_completed(fingerprint, exclude_call=pc.call_id)
        if hit is None:
            return False
        keep = (
            "prediction_id",
            "submit_ms",
            "queue_ms",
            "inference_ms",
            "download_ms",
            "total_ms",
            "output_sha256",
            "output_ext",
            "width",
            "height",
            "format",
            "nsfw",
            "content_filtered",
            "input_resized",
            "simulated",
            "metadata",
        )
        fields = {k: hit[k] for k in keep}
        fields.update(
            status=CallStatus.COMPLETED,
            cost_usd=0.0,
            cost_source="cache",
            cached_from=hit["call_id"],
            fingerprint=fingerprint,
        )
        if isinstance(fields["metadata"], str):
            import json

            fields["metadata"] = json.loads(fields["metadata"])
        self.ws.finish_call(pc.call_id, fields)
        self.simulated = self.simulated or bool(hit["simulated"])
        self.counts[CallStatus.COMPLETED] += 1
        self._continue_session(pc)
        self._tick()
        return True

    async def _store(self, pc: PlannedCall, outcome: EditOutcome, reservation: Reservation) -> None:
        unknown = (not outcome.ok) and outcome.error is not None and outcome.error.category == Category.UNKNOWN_OUTCOME
        if unknown and outcome.prediction_id is None:
            recorded = self.ws.get_call(pc.call_id).get("prediction_id")
            if recorded:  # the job was accepted before things went wrong: collect it later, never re-send
                outcome.prediction_id, outcome.resumable = recorded, True
                unknown = False
        resumable = _still_running(outcome) and capabilities_of(self.providers[pc.model.provider]).resumable
        if unknown or resumable or outcome.cost_usd is None:
            # may be billed (yet), or billed at a price nobody told us: count the most it can cost
            billed = reservation.amount_usd
        else:
            billed = outcome.cost_usd
        self.budget.settle(reservation, billed)
        self.simulated = self.simulated or outcome.simulated
        if resumable:
            # accepted and still collectable (we stopped waiting, polls failed, or the download failed):
            # the row stays `submitted` with its prediction id, so `--resume` finishes it without paying again (and
            # then continues its session). If the on_submitted hook could not write the id, it is written now: a
            # row left `submitting` would be an unknown outcome on resume (and --resubmit-unknown would pay twice)
            try:
                pid = outcome.prediction_id
                if pid is not None and not self.ws.get_call(pc.call_id).get("prediction_id"):
                    self.ws.mark_submitted(pc.call_id, pid)
            except WorkspaceError as exc:
                self._workspace_failed(exc)
                return
            self._release_session_hold(pc)
            self.counts["pending"] = self.counts.get("pending", 0) + 1
            self._tick()
            return
        try:
            # the output's fsync + rename into the blob store runs in a thread, not on the event loop; if the
            # run is cancelled meanwhile, the row stays `submitted` and a resume collects the output again
            fields = await asyncio.to_thread(self._fields, pc, outcome, unknown)
            self.ws.finish_call(pc.call_id, fields)
            if outcome.ok or (outcome.cost_usd or 0) > 0:
                self.ws.record_usage(
                    model_id=pc.model.id,
                    operation=pc.operation,
                    cost_usd=fields["cost_usd"],
                    cost_source=fields["cost_source"],
                    source="run",
                    run_id=self.run_id,
                    call_id=pc.call_id,
                    prediction_id=outcome.prediction_id,
                )
        except WorkspaceError as exc:
            self._release_session_hold(pc)
            self._workspace_failed(exc)
            return
        key = _final_status(outcome, unknown)
        self.counts[key] += 1
        if key == CallStatus.COMPLETED:
            self._continue_session(pc)
        else:
            err = outcome.error
            what = f"{err.category}: {err.message}" if err is not None else str(key)
            self._end_session(pc, f"turn {pc.turn} ({pc.call_id}) ended {key} ({what[:300]})")
        self._tick()

    def _fields(self, pc: PlannedCall, o: EditOutcome, unknown: bool) -> dict[str, Any]:
        lat = o.latency
        fields: dict[str, Any] = {
            "status": _final_status(o, unknown),
            "prediction_id": o.prediction_id,
            "submit_ms": lat.submit_ms,
            "queue_ms": lat.queue_ms,
            "inference_ms": lat.inference_ms,
            "download_ms": lat.download_ms,
            "total_ms": lat.total_ms,
            "cost_usd": _add_cost(
                pc.prior_cost_usd,
                None
                if unknown
                else (o.cost_usd if o.cost_usd is not None else (None if o.cost_source == "unknown" else 0.0)),
            ),
            "cost_source": "unknown" if unknown else o.cost_source,
            "nsfw": int(o.nsfw),
            "content_filtered": int(o.content_filtered),
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
            fields.update(
                error_category=str(err.category) if err else "task_failed",
                error_message=err.message if err else "failed",
                error_code=None if err is None or err.code is None else str(err.code),
            )
            if o.image_path is not None:
                with contextlib.suppress(OSError):
                    Path(o.image_path).unlink()
        return fields

    def _mark_unknown(self, pc: PlannedCall, row: dict[str, Any]) -> None:
        self.ws.finish_call(
            pc.call_id,
            {
                "status": CallStatus.UNKNOWN,
                "cost_usd": None,
                "cost_source": "unknown",
                "error_category": str(Category.UNKNOWN_OUTCOME),
                "error_message": "the run stopped while this request was being submitted "
                "(or its provider cannot resume jobs), "
                "so whether it was accepted is unknown; it was not sent again. "
                "Re-run with --resubmit-unknown to send it again (this may pay twice).",
            },
        )
        self.budget.record_spent(row.get("reserved_usd") or 0.0)
        self.counts[CallStatus.UNKNOWN] += 1

    def _workspace_failed(self, exc: WorkspaceError) -> None:
        self.stop_message = str(exc)
        self.controller.request_stop("workspace_error")


def _final_status(outcome: EditOutcome, unknown: bool) -> CallStatus:
    if outcome.ok:
        return CallStatus.COMPLETED
    return CallStatus.UNKNOWN if unknown else CallStatus.FAILED


def _still_running(outcome: EditOutcome) -> bool:
    """A job the provider accepted whose result can still be collected without paying again."""
    return not outcome.ok and outcome.prediction_id is not None and outcome.resumable


def _out_of_balance(outcome: EditOutcome) -> bool:
    """A submit refused because the provider account has no balance left (nothing was created)."""
    return (
        not outcome.ok
        and outcome.prediction_id is None
        and outcome.error is not None
        and outcome.error.category == Category.BALANCE
    )


def _refused(outcome: EditOutcome) -> bool:
    """A submit the provider provably did not accept because of its rate limit."""
    return (
        not outcome.ok
        and outcome.prediction_id is None
        and outcome.error is not None
        and outcome.error.category == Category.RATE_LIMIT
    )


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
        return EditOutcome.failure(
            pc.model.id,
            Category.UNKNOWN_OUTCOME,
            f"unexpected {type(exc).__name__} from the {pc.model.provider} provider: "
            f"{redact(str(exc))[:300]}; not sent again",
        )


def _submitting_fields(p: PreparedRequest | None) -> dict[str, Any]:
    """What mark_submitting records: the reservation, the request's identity and its price (and source)."""
    assert p is not None, "a call is built before it is submitted"
    return {
        "reserved_usd": p.reserve_usd,
        "fingerprint": p.fingerprint,
        "price_usd": p.price_usd,
        "price_source": p.price_source,
    }


def _priced_at_submit(outcome: EditOutcome, row: Mapping[str, Any]) -> None:
    """A job collected on resume costs the price it was submitted at (recorded with ``submitting``): the price
    the provider billed it at, not what the same request prices at now (a new quote, or the catalogue's list
    price when this resume was told not to quote). A cost the provider reported itself is kept."""
    price, source = row.get("price_usd"), row.get("price_source")
    if price is None or source is None or outcome.cost_source not in ("quoted", "list_price"):
        return
    if not outcome.cost_usd:  # nothing paid (a failed task): nothing to price
        return
    outcome.cost_usd = float(price)
    outcome.cost_source = "quoted" if source == "quoted" else "list_price"


def _add_cost(prior: float, cost: float | None) -> float | None:
    """A call's total cost over its attempts (None stays None only when nothing was paid before)."""
    if cost is None:
        return prior or None
    return prior + cost


def _ext(fmt: str | None) -> str:
    f = (fmt or "png").lower()
    return {"jpeg": "jpg", "jpg": "jpg", "png": "png", "webp": "webp", "gif": "gif"}.get(f, "bin")


def _jsonable(d: Mapping[str, Any]) -> dict[str, Any]:
    import json

    return json.loads(json.dumps(dict(d or {}), default=str))
