"""The WaveSpeed simulator's task queue: creating a prediction from an accepted submit (latency, output
format, render job, price, task faults), account-level slots (``max_concurrent`` processing, the rest
waiting FIFO as "created"), running and finishing a task, sync-mode waits, and the billing ledger
(completed tasks only, at the price the pricing API quotes: the catalogue's, or a drifted one)."""

from __future__ import annotations

import asyncio
import functools
import math
import random
import time
import uuid
from typing import TYPE_CHECKING, Any

from starlette.responses import JSONResponse, Response

from evalkit.catalog.spec import ModelSpec
from evalkit.images import InputImage
from evalkit.sim.faults import FaultBook
from evalkit.sim.wavespeed.catalog import SimCatalog
from evalkit.sim.wavespeed.images import RenderJob
from evalkit.sim.wavespeed.schema import output_size
from evalkit.sim.wavespeed.state import (
    CONTENT_TYPES,
    DEFAULT_LATENCY_MS,
    TASK_ERRORS,
    UNLIMITED_BALANCE_USD,
    BillingEntry,
    Prediction,
    SimConfig,
    SimState,
    SubmitRecord,
    iso_now,
)


def _ignore_result(task: asyncio.Task) -> None:
    """A pre-render's result is kept by the output cache; a failure shows again when the output is downloaded."""
    if not task.cancelled():
        task.exception()


class InsufficientBalance(Exception):
    """A submit the account cannot pay for: answered 403 "Insufficient balance", no task created."""

    def __init__(self, price_usd: float, available_usd: float):
        super().__init__(f"price {price_usd} > available {available_usd}")
        self.price_usd, self.available_usd = price_usd, available_usd


class TaskQueue:
    """Mixed into :class:`~evalkit.sim.wavespeed.app.WaveSpeedSim`: the tasks behind accepted submits."""

    config: SimConfig
    faults: FaultBook
    _state: SimState
    catalog: SimCatalog
    #: the account's balance in USD before anything was billed (None: unlimited); see available_usd()
    balance_usd: float | None

    @functools.cached_property
    def _latency_rng(self) -> random.Random:
        """Draws each task's latency jitter (``SimConfig.latency_jitter``), seeded with ``SimConfig.seed``."""
        return random.Random(self.config.seed)

    if TYPE_CHECKING:

        async def _envelope(self, p: Prediction) -> dict[str, Any]: ...

        async def _output_bytes(self, p: Prediction) -> bytes: ...

        @staticmethod
        def _json(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> JSONResponse: ...

    @property
    def ledger(self) -> list[BillingEntry]:
        return self._state.ledger

    @property
    def billed_usd(self) -> float:
        return round(self._state.billed_usd, 10)

    @property
    def submits(self) -> list[SubmitRecord]:
        return self._state.submits

    # ---- holding tasks (tests) -------------------------------------------------------------------
    def hold_tasks(self) -> None:
        """Tasks that have run their latency stay "processing" until :meth:`release_tasks` (or a reset), so a test
        can wait for the server to see many tasks in flight at once instead of guessing a latency long enough."""
        self._state.held = True

    def release_tasks(self) -> None:
        """Let held tasks finish (and new ones finish after their latency again)."""
        self._state.held = False

    @property
    def served(self) -> dict[str, str]:
        """prediction id → sha256 of the output bytes this sim served for it (what a client received)."""
        return self._state.served

    # ---- the account's balance ------------------------------------------------------------------
    def available_usd(self, st: SimState | None = None) -> float:
        """What the account can still spend: its balance minus what was billed and what accepted tasks hold."""
        st = st or self._state
        total = UNLIMITED_BALANCE_USD if self.balance_usd is None else self.balance_usd
        return round(total - st.billed_usd - st.held_usd, 10)

    def set_balance(self, usd: float | None) -> None:
        """Make the account hold ``usd`` from now on (None: unlimited)."""
        if usd is None:
            self.balance_usd = None
            return
        st = self._state
        self.balance_usd = float(usd) + st.billed_usd + st.held_usd

    def top_up(self, usd: float) -> None:
        """Add ``usd`` to the account (a limited one; an unlimited account stays unlimited)."""
        if self.balance_usd is not None:
            self.balance_usd += float(usd)

    async def _wait_sync(self, p: Prediction) -> Response:
        try:
            await asyncio.wait_for(p.done.wait(), timeout=self.config.sync_timeout_s)
        except TimeoutError:
            pass
        if p.status in ("completed", "failed"):
            return self._json(await self._envelope(p))
        env = await self._envelope(p)
        env["data"].update(
            status="processing",
            code=5004,
            error=f"Sync mode timed out after {self.config.sync_timeout_s:g} seconds. "
            "The prediction is still processing asynchronously.",
        )
        return self._json(env)

    def _create(
        self,
        st: SimState,
        spec: ModelSpec,
        body: dict[str, Any],
        base_url: str,
        images: tuple[InputImage, ...],
        mask: InputImage | None,
        unreachable: str | None,
    ) -> Prediction:
        cfg = self.config
        per_model = cfg.model_latency_ms or {}
        own = per_model.get(spec.id, per_model.get(spec.endpoint))
        latency_ms = (
            float(own)
            if own is not None
            else cfg.fixed_latency_ms
            if cfg.fixed_latency_ms is not None
            else float(spec.sim.get("latency_ms", DEFAULT_LATENCY_MS)) * cfg.time_scale
        )
        if cfg.latency_jitter > 0:
            latency_ms *= math.exp(self._latency_rng.gauss(0.0, cfg.latency_jitter))
        fmt = body.get(spec.output_format_param) if spec.output_format_param else None
        fmt = str(
            fmt or spec.default_output_format or (spec.output_formats[0] if spec.output_formats else "png")
        ).lower()
        fmt = "jpeg" if fmt == "jpg" else fmt if fmt in CONTENT_TYPES else "png"
        render = None
        price_params = dict(body)
        if images:
            size, chosen = output_size(spec, body, (images[0].width, images[0].height), cfg.output_max_side)
            if chosen:
                price_params[spec.size.param] = chosen
            mode = "zoom_out" if "zoom_out" in spec.operations else "inpaint" if mask is not None else "edit"
            seed = body.get(spec.seed.param, spec.seed.default) if spec.seed else None
            render = RenderJob(
                spec.id,
                images,
                mask,
                spec.mask.convention if spec.mask else "white_edit",
                body.get("prompt"),
                seed,
                size,
                mode,
                fmt,
            )
        price = self.catalog.unit_price(spec, price_params)  # = what POST /api/v3/model/pricing quotes
        if price > self.available_usd(st) + 1e-12:
            raise InsufficientBalance(price, self.available_usd(st))
        p = Prediction(
            id=uuid.uuid4().hex,
            spec=spec,
            base_url=base_url,
            created_at=iso_now(),
            latency_s=max(0.0, latency_ms) / 1000.0,
            fmt=fmt,
            base64_output=body.get("enable_base64_output") is True,
            render=render,
            price_usd=float(price),
        )
        if unreachable is not None:
            p.fail_at_start = (1402, TASK_ERRORS[1402])
        task_fault = self.faults.draw("task", (spec.id, spec.endpoint), prompt=body.get("prompt"))
        if task_fault is not None:
            if task_fault.kind == "never_finish":
                p.never_finish = True
            else:
                code = 1200 if task_fault.kind == "moderation" else int(task_fault.code or 1403)
                p.fail = (code, TASK_ERRORS.get(code, f"Task failed with code {code}."))
        st.predictions[p.id] = p
        st.held_usd += p.price_usd
        st.counts["accepted"] += 1
        st.in_flight += 1
        st.peak_in_flight = max(st.peak_in_flight, st.in_flight)
        task = asyncio.get_running_loop().create_task(self._run(st, p))
        st.tasks.add(task)
        task.add_done_callback(st.tasks.discard)
        return p

    # ---- task lifecycle -----------------------------------------------------------------------
    async def _run(self, st: SimState, p: Prediction) -> None:
        try:
            await self._acquire_slot(st)
            try:
                p.status = "processing"
                st.peak_processing = max(st.peak_processing, st.processing)
                if p.fail_at_start is not None:
                    self._finish(st, p, *p.fail_at_start)
                    return
                if p.never_finish:
                    await asyncio.get_running_loop().create_future()  # until cancelled by reset/stop
                prerender = self._prerender(p)
                await asyncio.sleep(p.latency_s)
                while st.held:
                    await asyncio.sleep(0.002)
                if prerender is not None and not prerender.done():
                    prerender.cancel()  # the shared render goes on; the download awaits it
                p.inference_ms = round(p.latency_s * 1000)
                if p.fail is not None:
                    self._finish(st, p, *p.fail)
                else:
                    self._finish(st, p)
            finally:
                self._release_slot(st)
        finally:
            st.in_flight -= 1
            p.done.set()

    #: a task at least this long renders its output while it runs (the render is hidden in its latency, as a real
    #: server's output exists when it reports completed); a shorter one renders when its output is downloaded
    PRERENDER_MIN_LATENCY_S = 0.5

    def _prerender(self, p: Prediction) -> asyncio.Task | None:
        if p.render is None or p.fail is not None or p.latency_s < self.PRERENDER_MIN_LATENCY_S:
            return None
        task = asyncio.get_running_loop().create_task(self._output_bytes(p))
        task.add_done_callback(_ignore_result)
        return task

    def _finish(self, st: SimState, p: Prediction, code: int | None = None, error: str = "") -> None:
        st.held_usd -= p.price_usd
        if code is None:
            p.status = "completed"
            st.counts["completed"] += 1
            st.ledger.append(BillingEntry(p.id, p.spec.id, p.price_usd, time.time()))
            st.billed_usd += p.price_usd
        else:
            p.status, p.code, p.error = "failed", code, error
            st.counts["failed"] += 1

    async def _acquire_slot(self, st: SimState) -> None:
        if st.processing < self.config.max_concurrent and not st.waiters:
            st.processing += 1
            return
        waiter = asyncio.get_running_loop().create_future()
        st.waiters.append(waiter)
        try:
            await waiter  # the releasing task hands its slot over (st.processing unchanged)
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._release_slot(st)
            raise

    @staticmethod
    def _release_slot(st: SimState) -> None:
        while st.waiters:
            waiter = st.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        st.processing -= 1
