"""evalkit.engine.execution.Execution on small runs against the local WaveSpeed simulator (real HTTP on loopback):
per-provider and global concurrency limits, the stop controller, the budget, the fingerprint cache, and what a
resumed run does with calls a crash left behind. Each test plans with the real planner, writes the rows as the
runner does, and drives :class:`Execution` itself."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import replace

import pytest

from evalkit.credentials import Secret
from evalkit.engine.control import StopController
from evalkit.engine.execution import CallSource, Execution
from evalkit.engine.limits import ProviderLimits
from evalkit.engine.planning import PlannedCall, iter_plan
from evalkit.providers.retry import RetryPolicy
from evalkit.providers.wavespeed import PollSchedule, WaveSpeedEditProvider
from evalkit.sim.wavespeed import SimHandle, start_wavespeed_sim
from evalkit.store import CallStatus, Workspace
from evalkit.suites import load_suite
from tests.plugins.common import wait_until

FAST_POLL = PollSchedule(initial_delay_s=0.01, factor=1.5, quick_polls=3, min_interval_s=0.02, max_interval_s=0.05)
FAST_RETRY = RetryPolicy(max_attempts=3, base_s=0.01, max_backoff_s=0.02, max_retry_after_s=0.02)
MODELS = ("qwen-edit", "seededit-v3", "step1x-edit")


@pytest.fixture(scope="module")
def module_sim(catalog) -> Iterator[SimHandle]:
    # every task takes 150 ms, so calls allowed to overlap really do
    with start_wavespeed_sim(catalog, fixed_latency_ms=150, output_max_side=64) as handle:
        yield handle


@pytest.fixture
def sim(module_sim) -> SimHandle:
    module_sim.sim.reset()
    return module_sim


@pytest.fixture(scope="module")
def cases():
    return [c for c in load_suite("smoke").cases if c.operation == "general_edit"]


@pytest.fixture
async def providers(sim) -> Iterator[dict]:
    p = WaveSpeedEditProvider(
        base_url=sim.base_url, api_key=Secret(sim.api_key, "WAVESPEED_API_KEY"), poll=FAST_POLL, retry=FAST_RETRY
    )
    yield {"wavespeed": p}
    await p.aclose()


def plan_run(ws: Workspace, run_id: str, cases, catalog, providers, *, repeats: int = 1) -> list[PlannedCall]:
    """Plan, record the run and its rows, release each call's request: what the runner does before executing."""
    specs = [catalog.get(m) for m in MODELS]
    ws.create_run(
        run_id,
        suite_name="smoke",
        suite_path=None,
        suite_fingerprint=None,
        catalog_fingerprint=None,
        models=list(MODELS),
        repeats=repeats,
        budget_usd=None,
        config={},
    )
    planned = list(iter_plan(run_id, cases, specs, providers, repeats=repeats))
    ws.insert_calls(pc.row() for pc in planned)
    for pc in planned:
        pc.release()
    assert planned and all(pc.status == CallStatus.PLANNED for pc in planned)
    return planned


def execution(ws, run_id, planned, providers, **kw) -> Execution:
    # the engine reads the planned calls back from the workspace; the source rebuilds each one from its row
    source = CallSource(
        run_id,
        {pc.case_id: pc.case for pc in planned},
        {pc.model.id: pc.model for pc in planned},
        {pc.case_id: pc.inputs for pc in planned},
    )
    args = dict(
        ws=ws,
        run_id=run_id,
        source=source,
        providers=providers,
        budget_usd=None,
        concurrency=16,
        limits={"wavespeed": ProviderLimits()},
        no_cache=True,
        progress=False,
        grace_period_s=5.0,
        resubmit_unknown=False,
        retry_failed=False,
        controller=StopController(),
        patience=FAST_RETRY,
    )
    args.update(kw)
    return Execution(**args)


def statuses(ws: Workspace, run_id: str) -> dict[str, str]:
    return {r["call_id"]: r["status"] for r in ws.call_rows(run_id)}


# ---- limits ---------------------------------------------------------------------------------------------


async def _execute_holding_tasks(sim, ex: Execution, limit: int) -> int:
    """Run ``ex`` while the server holds every task unfinished until ``limit`` of them are in flight (or the run
    ends); returns how many were in flight then. No latency is guessed: the server says when the limit is used,
    and while the tasks are held a limiter that let more through would show them all in flight."""
    sim.sim.hold_tasks()
    running = asyncio.create_task(ex.execute())
    await wait_until(lambda: sim.sim.stats()["in_flight"] >= limit or running.done(), tries=3000, interval_s=0.01)
    held = sim.sim.stats()["in_flight"]
    sim.sim.release_tasks()
    await running
    return held


async def test_a_provider_limit_caps_the_calls_in_flight(sim, tmp_path, cases, catalog, providers):
    ws = Workspace(tmp_path)
    planned = plan_run(ws, "lim", cases, catalog, providers, repeats=3)
    ex = execution(ws, "lim", planned, providers, limits={"wavespeed": ProviderLimits(max_concurrent=2)})
    assert await _execute_holding_tasks(sim, ex, 2) == 2  # the limit was used
    assert ex.counts[CallStatus.COMPLETED] == len(planned) == 9
    assert sim.sim.stats()["peak_in_flight"] == 2  # never more than the limit


async def test_the_global_concurrency_caps_a_provider_without_a_limit(sim, tmp_path, cases, catalog, providers):
    ws = Workspace(tmp_path)
    planned = plan_run(ws, "glob", cases, catalog, providers, repeats=3)
    ex = execution(ws, "glob", planned, providers, concurrency=3)
    assert await _execute_holding_tasks(sim, ex, 3) == 3
    assert set(statuses(ws, "glob").values()) == {CallStatus.COMPLETED}
    assert sim.sim.stats()["peak_in_flight"] == 3


class SlowDownloads(WaveSpeedEditProvider):
    """The WaveSpeed provider with a slow output download, logging when tasks are submitted, are seen
    finished, and have their output downloaded.

    ``wait_for_next_submit``: a download lasts until a call has been submitted after its task was seen finished
    (an event, not a guess at how long a submit takes), except once all ``calls`` are submitted; a submit that
    never comes fails the download after ``download_s``. Otherwise each download lasts ``download_s``."""

    def __init__(self, *a, download_s: float, reports_finished: bool, calls: int, wait_for_next_submit: bool, **kw):
        super().__init__(*a, **kw)
        self.download_s, self.log = download_s, []
        self.capabilities = replace(self.capabilities, reports_finished=reports_finished)
        self.calls, self.wait_for_next_submit = calls, wait_for_next_submit
        self._submitted = asyncio.Condition()
        self._submits_when_finished: dict[str, int] = {}

    def _submits(self) -> int:
        return self.log.count("submit")

    async def _submit(self, call, body, key):
        self.log.append("submit")
        async with self._submitted:
            self._submitted.notify_all()
        return await super()._submit(call, body, key)

    async def _outcome(self, call, request, data):
        self.log.append("finished")  # the task is done at the provider; its output is still to be fetched
        self._submits_when_finished[call.prediction_id] = self._submits()
        return await super()._outcome(call, request, data)

    async def _fetch_output(self, call, request, output):
        seen = self._submits_when_finished[call.prediction_id]
        if not self.wait_for_next_submit:
            await asyncio.sleep(self.download_s)
        elif seen < self.calls:
            async with self._submitted:
                await asyncio.wait_for(self._submitted.wait_for(lambda: self._submits() > seen), self.download_s)
        try:
            return await super()._fetch_output(call, request, output)
        finally:
            self.log.append("downloaded")


def _submits_during_downloads(log: list[str]) -> int:
    """Submits made while a finished task's output was still being fetched."""
    fetching, n = 0, 0
    for event in log:
        fetching += {"finished": 1, "downloaded": -1}.get(event, 0)
        n += event == "submit" and fetching > 0
    return n


@pytest.mark.parametrize("reports_finished", [True, False], ids=["reports-finished", "does-not"])
async def test_a_finished_task_frees_its_slot_before_its_output_is_downloaded(
    sim, tmp_path, cases, catalog, reports_finished
):
    # reports-finished: each download waits for the next submit (up to 30 s: a slot not freed early fails the
    # call); does-not: nothing can be submitted during a download, so each simply lasts 0.3 s
    provider = SlowDownloads(
        base_url=sim.base_url,
        api_key=Secret(sim.api_key, "WAVESPEED_API_KEY"),
        poll=FAST_POLL,
        retry=FAST_RETRY,
        download_s=30.0 if reports_finished else 0.3,
        reports_finished=reports_finished,
        calls=len(cases) * len(MODELS) * 2,
        wait_for_next_submit=reports_finished,
    )
    try:
        ws = Workspace(tmp_path)
        planned = plan_run(ws, "early", cases, catalog, {"wavespeed": provider}, repeats=2)
        assert len(planned) == provider.calls
        ex = execution(ws, "early", planned, {"wavespeed": provider}, concurrency=1)
        await ex.execute()
    finally:
        await provider.aclose()
    assert set(statuses(ws, "early").values()) == {CallStatus.COMPLETED}
    assert len(sim.sim.submits) == len(planned)  # nothing sent twice
    assert sim.sim.stats()["peak_in_flight"] == 1  # the slot still caps the tasks running at the provider
    overlapped = _submits_during_downloads(provider.log)
    if reports_finished:
        assert overlapped == len(planned) - 1  # every next task started while the last output downloaded
    else:
        assert overlapped == 0  # the slot was held until the call was done


# ---- stopping ---------------------------------------------------------------------------------------------


async def test_a_stopped_controller_submits_nothing(sim, tmp_path, cases, catalog, providers):
    ws = Workspace(tmp_path)
    planned = plan_run(ws, "stopped", cases, catalog, providers)
    controller = StopController()
    controller.request_stop("interrupted")
    await execution(ws, "stopped", planned, providers, controller=controller).execute()
    assert sim.sim.submits == []
    assert set(statuses(ws, "stopped").values()) == {CallStatus.PLANNED}


async def test_stopping_mid_run_keeps_what_is_done_and_leaves_the_rest_planned(
    sim, tmp_path, cases, catalog, providers
):
    ws = Workspace(tmp_path)
    planned = plan_run(ws, "mid", cases, catalog, providers, repeats=2)
    controller = StopController()

    def on_progress(info: dict) -> None:
        if info["done"] >= 1:
            controller.request_stop("interrupted")

    ex = execution(ws, "mid", planned, providers, concurrency=1, controller=controller, progress=on_progress)
    await ex.execute()
    rows = statuses(ws, "mid")
    completed = list(rows.values()).count(CallStatus.COMPLETED)
    # the call in flight when the stop came finishes (with one slot, the next task may start while the first
    # one's output downloads: at most 2); everything never sent stays planned for a resume
    assert 1 <= completed <= 2 and completed == len(sim.sim.submits)
    assert list(rows.values()).count(CallStatus.PLANNED) == len(planned) - completed


async def test_the_budget_stops_submitting_before_the_cap(sim, tmp_path, cases, catalog, providers):
    ws = Workspace(tmp_path)
    planned = plan_run(ws, "cap", cases, catalog, providers, repeats=2)
    for pc in planned[:2]:
        pc.build(providers["wavespeed"])
    cap = planned[0].prepared.reserve_usd + planned[1].prepared.reserve_usd + 0.001  # room for two calls
    controller = StopController()
    ex = execution(ws, "cap", planned, providers, concurrency=1, budget_usd=cap, controller=controller)
    await ex.execute()
    assert controller.reason == "budget" and "budget" in (ex.stop_message or "")
    assert len(sim.sim.submits) == 2 and sim.sim.billed_usd <= cap
    assert ex.budget.spent_usd == pytest.approx(sim.sim.billed_usd) and ex.budget.reserved_usd == 0
    assert list(statuses(ws, "cap").values()).count(CallStatus.PLANNED) == len(planned) - 2


# ---- the cache ----------------------------------------------------------------------------------------------


async def test_cache_hits_are_served_from_the_earlier_run_and_not_sent(sim, tmp_path, cases, catalog, providers):
    ws = Workspace(tmp_path)
    first = plan_run(ws, "first", cases, catalog, providers)
    await execution(ws, "first", first, providers).execute()
    sent = len(sim.sim.submits)
    assert sent == len(first)

    second = plan_run(ws, "second", cases, catalog, providers)
    ex = execution(ws, "second", second, providers, no_cache=False)
    await ex.execute()
    assert len(sim.sim.submits) == sent  # nothing sent, nothing paid
    rows = ws.call_rows("second")
    assert all(r["status"] == CallStatus.COMPLETED and r["cost_source"] == "cache" for r in rows)
    assert {r["cached_from"] for r in rows} == {pc.call_id for pc in first}
    assert all(r["cost_usd"] == 0 for r in rows) and ex.budget.spent_usd == 0

    third = plan_run(ws, "third", cases, catalog, providers)
    await execution(ws, "third", third, providers, no_cache=True).execute()
    assert len(sim.sim.submits) == 2 * sent  # without the cache every call is sent again


# ---- what a crash left behind -------------------------------------------------------------------------------


async def test_a_call_left_submitting_is_unknown_and_never_sent_again(sim, tmp_path, cases, catalog, providers):
    ws = Workspace(tmp_path)
    planned = plan_run(ws, "crash", cases, catalog, providers)
    victim = planned[0]
    ws.mark_submitting(victim.call_id, reserved_usd=0.05)  # the process died while sending it
    ex = execution(ws, "crash", planned, providers)
    await ex.execute()
    row = ws.get_call(victim.call_id)
    assert row["status"] == CallStatus.UNKNOWN and row["error_category"] == "unknown_outcome"
    assert "--resubmit-unknown" in row["error_message"]
    assert len(sim.sim.submits) == len(planned) - 1  # the others ran; the victim was not re-sent
    assert ex.budget.spent_usd == pytest.approx(sim.sim.billed_usd + 0.05)  # its reservation still counts


async def test_an_accepted_job_is_collected_without_a_new_submit(sim, tmp_path, cases, catalog, providers):
    ws = Workspace(tmp_path)
    planned = plan_run(ws, "resume", cases, catalog, providers)
    pc = planned[0].build(providers["wavespeed"])
    ids: list[str] = []

    async def keep(pid: str) -> None:
        ids.append(pid)

    # the job was accepted (and its id recorded) before the process died
    await providers["wavespeed"].edit(pc.request, on_submitted=keep)
    ws.mark_submitting(pc.call_id, reserved_usd=pc.prepared.reserve_usd, fingerprint=pc.prepared.fingerprint)
    ws.mark_submitted(pc.call_id, ids[0])
    pc.release()
    await execution(ws, "resume", planned, providers).execute()
    row = ws.get_call(pc.call_id)
    assert row["status"] == CallStatus.COMPLETED and row["prediction_id"] == ids[0]
    assert [s.prediction_id for s in sim.sim.submits].count(ids[0]) == 1
    assert len(sim.sim.submits) == len(planned)  # one per call: the resumed one was polled, not re-sent
    assert ws.output_image(pc.call_id)
