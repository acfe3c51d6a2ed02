"""Fault suite: whole runs against the local servers with failures injected — nothing lost, nothing paid twice.

Each test runs evalkit's runner (``arun``, concurrency 16) over a bundled suite against real HTTP
servers on 127.0.0.1 with faults firing at a steady rate, then reconciles the workspace with the
server by prediction id (tests/plugins/money.py):

* the run completes and every call ends in a recorded success, a categorised failure (a
  :class:`~evalkit.errors.Category` value that matches the fault), an ``unknown`` outcome (only where
  the submit's fate really is unknown) or — for a job accepted but not finished in time — ``submitted``
  with its prediction id, which a resume polls and never re-submits;
* no accepted submit was sent twice;
* the server's bill equals the recorded cost to the cent, plus — for unknown-outcome submits the
  server did accept (orphans) — at most what the budget reserved for those calls.

The steady-rate runs give the WaveSpeed provider 8 attempts for idempotent requests (instead of 5), so
that a 25 % fault rate practically never exhausts a retry loop by chance; exhausting one is tested
on purpose, separately. Waits are shortened (fast retries, fast polls, short overall timeouts).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import pytest

from evalkit.credentials import Secret
from evalkit.engine.control import StopController
from evalkit.engine.runner import arun
from evalkit.errors import WorkspaceError
from evalkit.providers.retry import RetryPolicy
from evalkit.providers.wavespeed import PollSchedule
from evalkit.store import Workspace
from tests.plugins.money import (
    TASK_CODE_CATEGORY,
    assert_every_call_accounted,
    assert_outputs_intact,
    reconcile_huggingface,
    reconcile_stability,
    reconcile_wavespeed,
    wait_until_idle,
)

pytestmark = pytest.mark.faults

WS_MODELS = "provider:wavespeed"
RATE = 0.25
#: idempotent retries: fast, and enough attempts that a 25 % rate does not exhaust them by chance
FAST_RETRY = RetryPolicy(max_attempts=8, base_s=0.01, max_backoff_s=0.05, max_retry_after_s=0.05)
#: the provider's default attempts, for the tests that exhaust a retry loop on purpose
DEFAULT_ATTEMPTS_FAST = RetryPolicy(base_s=0.01, max_backoff_s=0.05, max_retry_after_s=0.05)
#: the runner's own patience (rate limits and transient polling trouble beyond the provider's retries), fast
FAST_PATIENCE = RetryPolicy(max_attempts=4, base_s=0.01, max_backoff_s=0.05)
#: a submit whose answer takes longer than this is an unknown outcome (the submit_timeout fault waits longer)
#: (generous against a busy 2-core machine: a spurious timeout would be an unknown outcome the test did not inject)
SUBMIT_READ_TIMEOUT_S = 2.0
SUBMIT_TIMEOUT_DELAY_S = 4.0
#: a sync-mode submit blocks until the task ends (the simulator gives up after 0.3 s with code 5004)
SYNC_READ_TIMEOUT_S = 3.0
#: simulated outputs are rendered at most this large: the renders share the CPU with the runner under test.
#: The server bills each model at its catalogue price with an offset of its own (−30 %…+30 %, seeded), so
#: "recorded = billed" checks pricing, not only bookkeeping: the runs quote prices (``quote_prices=True``; a
#: resume keeps the run's setting without being told again), and a run recording the catalogue's list price
#: instead would fail reconcile_wavespeed.
PRICE_SEED = 25
SIM = {"output_max_side": 256, "catalog_drift": {"price_seed": PRICE_SEED}}


def poll_schedule(timeout_s: float = 900.0) -> PollSchedule:
    return PollSchedule(
        initial_delay_s=0.01, factor=1.5, quick_polls=3, min_interval_s=0.02, max_interval_s=0.1, timeout_s=timeout_s
    )


def wavespeed_options(handle, *, timeout_s: float = 900.0, retry: RetryPolicy = FAST_RETRY, **kw) -> dict:
    return {
        "base_url": handle.base_url,
        "api_key": Secret(handle.api_key),
        "poll": poll_schedule(timeout_s),
        "retry": retry,
        "submit_read_timeout_s": SUBMIT_READ_TIMEOUT_S,
        **kw,
    }


async def run_wavespeed(handle, ws_path, *, suite="smoke", repeats=4, timeout_s=900.0, run_id="faulty", **kw):
    kw.setdefault("patience", FAST_PATIENCE)
    kw.setdefault("quote_prices", True)
    kw.setdefault("no_cache", True)
    return await arun(
        suite,
        models=kw.pop("models", WS_MODELS),
        repeats=repeats,
        concurrency=16,
        workspace=ws_path,
        provider_options={"wavespeed": wavespeed_options(handle, timeout_s=timeout_s, **kw.pop("wavespeed_kw", {}))},
        progress=False,
        run_id=run_id,
        **kw,
    )


async def resume_wavespeed(handle, ws_path, run_id, *, wavespeed_kw: dict | None = None, **kw):
    """Resume ``run_id`` (as :func:`run_wavespeed` started it) against ``handle``'s simulator; ``kw`` go to arun
    (a resume keeps the run's own quote_prices / no_cache unless given)."""
    kw.setdefault("patience", FAST_PATIENCE)
    options = {"wavespeed": wavespeed_options(handle, **(wavespeed_kw or {}))}
    return await arun(
        None, workspace=ws_path, run_id=run_id, resume=True, progress=False, provider_options=options, **kw
    )


def rows_of(ws_path, run_id: str) -> list[dict]:
    ws = Workspace(ws_path, create=False)
    try:
        return ws.call_rows(run_id)
    finally:
        ws.close()


def counts_add_up(res) -> None:
    """The summary's counts cover every applicable call exactly once."""
    assert res.completed + res.failed + res.unknown + res.pending + res.not_reached + res.waiting == res.planned, res
    assert res.skipped == 0 and res.stop_reason is None, res


# ---- one fault kind at a time, at a steady rate ---------------------------------------------------

# kind -> (fault keyword arguments, what the failed calls must say)
STEADY = {
    "rate_limit": {"retry_after_s": 0.01},
    "submit_5xx": {},
    "wrong_shape_submit": {},
    "submit_accepted_5xx": {},
    "submit_timeout": {"delay_s": SUBMIT_TIMEOUT_DELAY_S},
    "task_failed-1403": {"code": 1403},
    "task_failed-5003": {"code": 5003},
    "moderation": {},
    "never_finish": {},
    "rate_limit_poll": {"retry_after_s": 0.01},
    "poll_5xx": {},
    "garbage_poll": {},
    "download_5xx": {},
    "truncated_download": {},
    "non_image_download": {},
    "slow_response": {"delay_s": 0.15},
}
#: faults a retry absorbs: every call still completes, and the bill is exactly what was recorded
ABSORBED = ("rate_limit", "rate_limit_poll", "poll_5xx", "garbage_poll", "download_5xx", "slow_response")
#: faults after which the submit's fate is unknown to the client (the server created the task for the last two;
#: a 503 on submit proves nothing either, so it is not re-sent by default — see providers/wavespeed.py)
UNKNOWN_SUBMITS = ("wrong_shape_submit", "submit_5xx", "submit_accepted_5xx", "submit_timeout")
NEVER_FINISH_TIMEOUT_S = 0.8


@pytest.mark.parametrize("name", list(STEADY))
async def test_each_fault_at_a_steady_rate_loses_nothing_and_pays_once(name, wavespeed_sim_factory, tmp_path):
    handle = wavespeed_sim_factory(seed=11, **SIM)
    sim = handle.sim
    kind = name.split("-")[0]
    fault = sim.add_fault(kind, rate=RATE, **STEADY[name])
    timeout_s = NEVER_FINISH_TIMEOUT_S if kind == "never_finish" else 900.0
    res = await run_wavespeed(handle, tmp_path, timeout_s=timeout_s)
    hits = fault.hits
    assert hits > 0, f"the {name} fault never fired"
    if kind == "never_finish":
        # accepted jobs still running stay `submitted` with their id (a slow but healthy job may join them on
        # a busy machine); a resume polls every one of them again and submits nothing
        assert res.pending >= hits
        first = {r["call_id"]: r["prediction_id"] for r in rows_of(tmp_path, res.run_id) if r["status"] == "submitted"}
        submits = len(sim.submits)
        # A resume polls each pending job for NEVER_FINISH_TIMEOUT_S again, so on a loaded machine a healthy job
        # can outlast the resume too (seen once: 40 pending after a resume, against the 37 never-finishing jobs
        # — 3 healthy jobs not collected in time, not 3 submits). Resume again (a few times at most) until only
        # the never-finishing jobs are left; every resume polls and never submits.
        for _ in range(4):
            polls = sim.stats()["poll"]
            res = await resume_wavespeed(
                handle, tmp_path, res.run_id, wavespeed_kw={"timeout_s": NEVER_FINISH_TIMEOUT_S}
            )
            assert len(sim.submits) == submits and sim.stats()["poll"] > polls
            still = {
                r["call_id"]: r["prediction_id"] for r in rows_of(tmp_path, res.run_id) if r["status"] == "submitted"
            }
            assert res.pending == len(still) >= hits and still.items() <= first.items()
            if res.pending == hits:
                break
        assert res.pending == hits
    wait_until_idle(sim, still_running=hits if kind == "never_finish" else 0)

    counts_add_up(res)
    rows = rows_of(tmp_path, res.run_id)
    assert_every_call_accounted(rows)
    rec = reconcile_wavespeed(handle, tmp_path)
    assert assert_outputs_intact(tmp_path, rows) == res.completed
    failed = [r for r in rows if r["status"] == "failed"]
    unknown = [r for r in rows if r["status"] == "unknown"]
    stats = sim.stats()

    if kind in ABSORBED:
        assert res.completed == res.planned and not failed and not unknown
        assert rec.billed_usd == pytest.approx(rec.recorded_usd, abs=1e-9) and not rec.orphans
        assert len(sim.submits) == res.completed  # one accepted job per call
        if kind == "rate_limit":  # each refused submit was sent again, nothing else was
            assert stats["submit"] == len(sim.submits) + hits
        if kind == "download_5xx":
            assert stats["download"] == res.completed + hits
    elif kind in UNKNOWN_SUBMITS:
        assert not failed and res.unknown == len(unknown) == hits
        assert all(r["cost_usd"] is None and r["prediction_id"] is None for r in unknown)
        if kind in ("wrong_shape_submit", "submit_5xx"):  # the server created nothing: no orphan, nothing billed extra
            assert not rec.orphans and rec.billed_usd == pytest.approx(rec.recorded_usd, abs=1e-9)
            said = "without a prediction id" if kind == "wrong_shape_submit" else "HTTP 503"
            assert all(said in r["error_message"] for r in unknown)
        else:  # created and billed, but the client never learnt the id: counted, bounded, never re-sent
            assert len(rec.orphans) == hits and rec.orphan_billed_usd > 0
            assert rec.billed_usd == pytest.approx(rec.recorded_usd + rec.orphan_billed_usd, abs=1e-9)
            assert rec.orphan_billed_usd <= rec.unknown_reserved_usd + 1e-9
            assert len(sim.submits) == res.completed + hits
    elif kind in ("task_failed", "moderation"):
        expected = {"task_failed": TASK_CODE_CATEGORY[STEADY[name].get("code", 1403)], "moderation": "moderation"}[kind]
        assert len(failed) == hits and {r["error_category"] for r in failed} == {expected}
        assert all(r["cost_usd"] == 0 and r["prediction_id"] for r in failed)  # failed tasks are not billed
        code = 1200 if kind == "moderation" else STEADY[name]["code"]
        assert {r["error_code"] for r in failed} == {str(code)}
        assert all(bool(r["content_filtered"]) == (kind == "moderation") for r in failed)
        assert not unknown and res.completed == res.planned - hits
    elif kind in ("truncated_download", "non_image_download"):
        # the task completed and was billed; the broken download is a paid bad_output, not retried
        assert len(failed) == hits and {r["error_category"] for r in failed} == {"bad_output"}
        assert all(r["cost_usd"] == rec.billed_by_pid[r["prediction_id"]] > 0 for r in failed)
        assert all("not a usable image" in r["error_message"] for r in failed)
        assert stats["download"] == res.completed + hits
    elif kind == "never_finish":
        pending = [r for r in rows if r["status"] == "submitted"]
        assert len(pending) == hits and not failed and not unknown
        assert all(rec.predictions[r["prediction_id"]].status in ("created", "processing") for r in pending)
        assert rec.billed_usd == pytest.approx(rec.recorded_usd, abs=1e-9)
    else:  # pragma: no cover - a kind added to STEADY without an expectation
        raise AssertionError(f"no expectation for {name}")


async def test_a_job_that_outlives_the_poll_timeout_is_collected_by_resume_and_billed_once(
    wavespeed_sim_factory, tmp_path
):
    """The resumable path with a job that does finish: slow tasks time out, stay `submitted`, and a resume
    with a longer timeout collects each one — polled, never re-submitted, billed and recorded once."""
    handle = wavespeed_sim_factory(fixed_latency_ms=1200, **SIM)
    res = await run_wavespeed(
        handle, tmp_path, models="qwen-edit,flux-kontext-pro,seededit-v3", repeats=2, timeout_s=0.3
    )
    assert res.pending == res.planned > 0 and res.completed == 0
    submitted = {r["call_id"]: r["prediction_id"] for r in rows_of(tmp_path, res.run_id) if r["status"] == "submitted"}
    assert len(submitted) == res.planned and all(submitted.values())
    done = await resume_wavespeed(handle, tmp_path, res.run_id, wavespeed_kw={"timeout_s": 30})
    assert done.completed == done.planned and done.pending == 0
    rows = rows_of(tmp_path, res.run_id)
    assert {r["call_id"]: r["prediction_id"] for r in rows if r["status"] == "completed"} == submitted
    assert len(handle.sim.submits) == res.planned
    rec = reconcile_wavespeed(handle, tmp_path)
    assert rec.billed_usd == pytest.approx(done.cost_usd, abs=1e-9) and not rec.orphans


async def test_a_resume_keeps_the_runs_quoted_prices_for_jobs_it_collects(wavespeed_sim_factory, tmp_path):
    """A run started with quote_prices is resumed without saying so again: the jobs the resume collects are
    recorded at the quoted price, which is what the server bills (its own price table, SIM's price_seed) —
    not at the catalogue's list price. Deterministic: every poll of one model fails until the resume."""
    handle = wavespeed_sim_factory(**SIM)
    handle.sim.add_fault("poll_5xx", model="qwen-edit")  # qwen-edit's accepted jobs cannot be collected yet
    res = await run_wavespeed(
        handle, tmp_path, models="qwen-edit,seededit-v3", repeats=2, wavespeed_kw={"retry": DEFAULT_ATTEMPTS_FAST}
    )
    rows = rows_of(tmp_path, res.run_id)
    pending = {r["call_id"]: r["prediction_id"] for r in rows if r["status"] == "submitted"}
    assert len(pending) == res.pending == 2 and all(pending.values())
    assert {r["price_source"] for r in rows if r["status"] != "not_applicable"} == {"quoted"}
    assert Workspace(tmp_path).get_run(res.run_id)["config"]["quote_prices"] is True
    handle.sim.clear_faults()
    wait_until_idle(handle.sim)
    done = await arun(
        None,  # no quote_prices: the run's own setting holds
        workspace=tmp_path,
        run_id=res.run_id,
        resume=True,
        progress=False,
        patience=FAST_PATIENCE,
        provider_options={"wavespeed": wavespeed_options(handle)},
    )
    assert done.completed == done.planned and done.pending == 0 and len(handle.sim.submits) == done.planned
    assert done.price_quotes is not None and done.price_quotes["failed"] == 0
    rows = rows_of(tmp_path, res.run_id)
    collected = [r for r in rows if r["call_id"] in pending]
    assert {r["call_id"]: r["prediction_id"] for r in collected} == pending  # polled, never re-submitted
    assert {r["cost_source"] for r in collected} == {"quoted"}
    rec = reconcile_wavespeed(handle, tmp_path)  # each call's recorded cost is its job's bill, to the cent
    assert all(r["cost_usd"] == pytest.approx(rec.billed_by_pid[r["prediction_id"]], abs=1e-9) for r in collected)
    assert rec.billed_usd == pytest.approx(done.cost_usd, abs=1e-9) and not rec.orphans


@pytest.mark.parametrize("resume_kw", [{}, {"quote_prices": False}], ids=["requoted", "told-not-to-quote"])
async def test_a_job_collected_on_resume_costs_the_price_it_was_submitted_at(
    resume_kw, wavespeed_sim_factory, tmp_path
):
    """The server bills a job at the price it had when it was accepted. Prices change before the resume (a new
    price table at the server), and the resume either quotes again (the new prices) or is told not to quote
    (the catalogue's): either way the jobs it collects are recorded at the price they were submitted at."""
    handle = wavespeed_sim_factory(**SIM)
    handle.sim.add_fault("poll_5xx", model="qwen-edit")
    res = await run_wavespeed(
        handle, tmp_path, models="qwen-edit,seededit-v3", repeats=2, wavespeed_kw={"retry": DEFAULT_ATTEMPTS_FAST}
    )
    pending = {r["call_id"]: r for r in rows_of(tmp_path, res.run_id) if r["status"] == "submitted"}
    assert len(pending) == res.pending == 2
    handle.sim.clear_faults()
    wait_until_idle(handle.sim)
    handle.sim.set_catalog_drift({"price_seed": PRICE_SEED + 1})  # what the same request costs from now on
    done = await resume_wavespeed(handle, tmp_path, res.run_id, **resume_kw)
    assert done.completed == done.planned and len(handle.sim.submits) == done.planned
    rows = {r["call_id"]: r for r in rows_of(tmp_path, res.run_id)}
    for call_id, before in pending.items():
        row = rows[call_id]
        assert row["prediction_id"] == before["prediction_id"] and row["cost_source"] == "quoted"
        assert row["cost_usd"] == before["price_usd"]
    rec = reconcile_wavespeed(handle, tmp_path)  # recorded = billed, per job
    assert rec.billed_usd == pytest.approx(done.cost_usd, abs=1e-9) and not rec.orphans


async def test_a_resume_keeps_no_cache_and_quotes_unless_told_otherwise(wavespeed_sim_factory, tmp_path):
    """A run started with no_cache and quote_prices and stopped before sending anything: resumed without
    either flag it still pays for its calls (no reuse of an earlier run's identical results) at the quoted
    price the server bills; resumed with an explicit quote_prices=False it records the catalogue price."""
    handle = wavespeed_sim_factory(**SIM)
    models, repeats = "qwen-edit,seededit-v3", 2
    earlier = await run_wavespeed(handle, tmp_path, models=models, repeats=repeats, run_id="earlier", no_cache=False)
    assert earlier.completed == earlier.planned == 4 and len(handle.sim.submits) == 4

    async def stopped_run(run_id: str):
        stopped = StopController()
        stopped.request_stop("interrupted")  # nothing is sent: every call stays planned, the settings are stored
        res = await run_wavespeed(handle, tmp_path, models=models, repeats=repeats, run_id=run_id, controller=stopped)
        assert res.skipped == res.planned == 4 and len(handle.sim.submits) == submits
        cfg = Workspace(tmp_path).get_run(run_id)["config"]
        assert cfg["no_cache"] is True and cfg["quote_prices"] is True

    async def resume(run_id: str, **kw):
        return await resume_wavespeed(handle, tmp_path, run_id, **kw)

    submits = len(handle.sim.submits)
    await stopped_run("nightly")
    res = await resume("nightly")
    assert res.completed == res.planned == 4 and res.cached == 0
    assert len(handle.sim.submits) == submits + 4  # paid again, as the run asked (no_cache)
    rows = [r for r in rows_of(tmp_path, "nightly") if r["status"] == "completed"]
    assert {r["cost_source"] for r in rows} == {"quoted"} and {r["price_source"] for r in rows} == {"quoted"}
    rec = reconcile_wavespeed(handle, tmp_path)  # both runs: each job owned by one call, recorded = billed
    assert not rec.orphans
    assert res.cost_usd == pytest.approx(sum(rec.billed_by_pid[r["prediction_id"]] for r in rows), abs=1e-9)

    # an explicit setting on resume wins: quote_prices=False records the catalogue's list price (not the bill)
    submits = len(handle.sim.submits)
    await stopped_run("overridden")
    res = await resume("overridden", quote_prices=False)
    assert res.completed == res.planned == 4 and len(handle.sim.submits) == submits + 4
    rows = [r for r in rows_of(tmp_path, "overridden") if r["status"] == "completed"]
    assert {r["cost_source"] for r in rows} == {"list_price"} and {r["price_source"] for r in rows} == {"catalogue"}
    bills = {e.prediction_id: e.usd for e in handle.sim.ledger}
    assert all(r["cost_usd"] != pytest.approx(bills[r["prediction_id"]], abs=1e-6) for r in rows)


async def test_an_accepted_job_whose_id_the_hook_could_not_write_is_still_collected_not_resent(
    wavespeed_sim_factory, tmp_path
):
    """The workspace refuses the write of a job's prediction id once (the on_submitted hook: e.g. "database is
    locked"); the provider goes on, and the job is left pending (its polls fail). The id is written when the call
    is stored, so the row is `submitted` with it — not `submitting`, which a resume would have to treat as an
    unknown outcome (and --resubmit-unknown would pay for again) — and the resume collects it, sending nothing."""
    handle = wavespeed_sim_factory(**SIM)
    handle.sim.add_fault("poll_5xx", model="qwen-edit")
    ws = Workspace(tmp_path)
    real, refused = ws.mark_submitted, set()

    def flaky_mark_submitted(call_id: str, prediction_id: str) -> None:
        if call_id not in refused:
            refused.add(call_id)
            raise WorkspaceError("database is locked")
        real(call_id, prediction_id)

    ws.mark_submitted = flaky_mark_submitted  # type: ignore[method-assign]
    res = await run_wavespeed(
        handle, ws, models="qwen-edit,seededit-v3", repeats=2, wavespeed_kw={"retry": DEFAULT_ATTEMPTS_FAST}
    )
    ws.close()
    assert len(refused) == res.planned == 4  # every call's hook write was refused once
    rows = rows_of(tmp_path, res.run_id)
    pending = {r["call_id"]: r["prediction_id"] for r in rows if r["status"] == "submitted"}
    assert len(pending) == res.pending == 2 and all(pending.values())
    assert {r["model_id"] for r in rows if r["call_id"] in pending} == {"qwen-edit"}
    assert not [r for r in rows if r["status"] in ("submitting", "unknown")]
    handle.sim.clear_faults()
    wait_until_idle(handle.sim)
    done = await resume_wavespeed(handle, tmp_path, res.run_id)
    assert done.completed == done.planned == 4 and len(handle.sim.submits) == 4
    after = {r["call_id"]: r["prediction_id"] for r in rows_of(tmp_path, res.run_id) if r["call_id"] in pending}
    assert after == pending  # collected under the ids the first run got, never re-submitted
    rec = reconcile_wavespeed(handle, tmp_path)
    assert rec.billed_usd == pytest.approx(done.cost_usd, abs=1e-9) and not rec.orphans


@pytest.mark.parametrize("kind,category", [("rate_limit", "rate_limit"), ("submit_5xx", "server")])
async def test_a_submit_refused_every_time_fails_categorised_and_creates_nothing(
    kind, category, wavespeed_sim_factory, tmp_path
):
    """Exhausting the re-sends of a provably refused submit: a categorised failure, nothing created or billed.
    The provider re-sends each refusal a few times; the runner waits out rate limits on top (its patience)."""
    handle = wavespeed_sim_factory()
    handle.sim.add_fault(kind, model="qwen-edit", retry_after_s=0.01)  # every submit of qwen-edit is refused
    # a 503 proves a refusal only when the user says so for their gateway (resend_submit_on_503)
    res = await run_wavespeed(
        handle,
        tmp_path,
        models="qwen-edit,seededit-v3",
        repeats=2,
        wavespeed_kw={"retry": DEFAULT_ATTEMPTS_FAST, "resend_submit_on_503": kind == "submit_5xx"},
    )
    rows = rows_of(tmp_path, res.run_id)
    q = [r for r in rows if r["model_id"] == "qwen-edit" and r["status"] != "not_applicable"]
    assert q and all(r["status"] == "failed" and r["error_category"] == category for r in q)
    assert all(
        r["cost_usd"] == 0 and r["prediction_id"] is None and "nothing was created" in r["error_message"] for r in q
    )
    assert not [s for s in handle.sim.submits if s.model_id == "qwen-edit"]
    per_call = DEFAULT_ATTEMPTS_FAST.max_attempts * (FAST_PATIENCE.max_attempts if kind == "rate_limit" else 1)
    assert handle.sim.stats()["submit"] == len(handle.sim.submits) + len(q) * per_call
    assert res.completed == res.planned - len(q)
    reconcile_wavespeed(handle, tmp_path)


@pytest.mark.parametrize("kind", ["poll_5xx", "rate_limit_poll", "garbage_poll", "download_5xx"])
async def test_an_accepted_job_whose_polls_or_download_keep_failing_stays_resumable(
    kind, wavespeed_sim_factory, tmp_path
):
    """Beyond every retry (the provider's, then the runner's patience) an accepted job is left `submitted` with
    its id — never `failed`, never re-submitted, not even by --retry-failed — and a resume collects it."""
    handle = wavespeed_sim_factory()
    handle.sim.add_fault(kind, model="qwen-edit", retry_after_s=0.01)  # every poll / download of qwen-edit fails
    res = await run_wavespeed(
        handle, tmp_path, models="qwen-edit,seededit-v3", repeats=2, wavespeed_kw={"retry": DEFAULT_ATTEMPTS_FAST}
    )
    rows = rows_of(tmp_path, res.run_id)
    q = [r for r in rows if r["model_id"] == "qwen-edit" and r["status"] != "not_applicable"]
    assert q and all(r["status"] == "submitted" and r["prediction_id"] for r in q), [r["status"] for r in q]
    assert res.pending == len(q) and res.failed == 0 and res.completed == res.planned - len(q)
    wait_until_idle(handle.sim)
    assert handle.sim.billed_usd > res.cost_usd  # the server finished and billed the jobs; the store will collect them
    handle.sim.clear_faults()
    again = await arun(
        None,
        workspace=tmp_path,
        run_id=res.run_id,
        resume=True,
        retry_failed=True,
        progress=False,
        patience=FAST_PATIENCE,
        provider_options={"wavespeed": wavespeed_options(handle)},
    )
    assert again.completed == again.planned and len(handle.sim.submits) == again.planned
    rec = reconcile_wavespeed(handle, tmp_path)
    assert rec.billed_usd == pytest.approx(again.cost_usd, abs=1e-9) and not rec.orphans


async def test_budget_caps_calls_whose_cost_is_unknown(huggingface_sim, tmp_path, catalog):
    """Hugging Face reports no cost: each call counts at its reserved maximum, so --budget still caps them."""
    reserve = catalog.get("hf-flux-kontext-dev").reserve_usd({})
    budget = 2.5 * reserve  # room for two calls at their maximum price
    options = {"huggingface": {"endpoint_url": huggingface_sim.base_url, "token": Secret(huggingface_sim.api_key)}}
    res = await arun(
        "smoke",
        models="provider:huggingface",
        repeats=5,
        concurrency=1,
        budget_usd=budget,
        workspace=tmp_path,
        progress=False,
        no_cache=True,
        run_id="capped",
        provider_options=options,
    )
    generated = len(huggingface_sim.sim.generations)
    assert generated * reserve <= budget + 1e-9, f"{generated} calls of up to ${reserve} each ran under a ${budget} cap"
    assert res.stop_reason == "budget" and res.completed == generated == 2
    assert len(reconcile_huggingface(huggingface_sim, tmp_path).owner_of) == 2


async def test_budget_caps_unknown_cost_calls_across_resumes(huggingface_sim, tmp_path, catalog):
    reserve = catalog.get("hf-flux-kontext-dev").reserve_usd({})
    budget = 2.5 * reserve
    options = {"huggingface": {"endpoint_url": huggingface_sim.base_url, "token": Secret(huggingface_sim.api_key)}}
    sent = []
    for _ in range(3):
        res = await arun(
            "smoke",
            models="provider:huggingface",
            repeats=5,
            concurrency=1,
            budget_usd=budget,
            workspace=tmp_path,
            progress=False,
            no_cache=True,
            run_id="capped",
            provider_options=options,
        )
        sent.append(len(huggingface_sim.sim.generations))
        assert res.stop_reason == "budget"
    # the first run spends the room of two calls at their maximum; the resumes count those two and send nothing
    assert sent == [2, 2, 2], f"generations after each run: {sent} (cap ${budget}, up to ${reserve} a call)"
    match = reconcile_huggingface(huggingface_sim, tmp_path)  # each generation owned by one completed call
    assert len(match.owner_of) == 2 and not match.orphans


# ---- all faults at once ---------------------------------------------------------------------------

MIXED = [  # (kind, keyword arguments): ~25 % of submits, polls and downloads go wrong somehow
    ("rate_limit", {"rate": 0.08, "retry_after_s": 0.01}),
    ("submit_5xx", {"rate": 0.08}),
    ("wrong_shape_submit", {"rate": 0.04}),
    ("submit_accepted_5xx", {"rate": 0.04}),
    ("submit_timeout", {"rate": 0.04, "delay_s": SUBMIT_TIMEOUT_DELAY_S}),
    ("task_failed", {"rate": 0.05, "code": 1403}),
    ("task_failed", {"rate": 0.05, "code": 5003}),
    ("moderation", {"rate": 0.05}),
    ("never_finish", {"rate": 0.04}),
    ("rate_limit_poll", {"rate": 0.08, "retry_after_s": 0.01}),
    ("poll_5xx", {"rate": 0.08}),
    ("garbage_poll", {"rate": 0.08}),
    ("download_5xx", {"rate": 0.1}),
    ("truncated_download", {"rate": 0.05}),
    ("non_image_download", {"rate": 0.05}),
    ("slow_response", {"rate": 0.1, "delay_s": 0.1}),
]
MIXED_TIMEOUT_S = 2.0


def add_mixed_faults(sim) -> Callable[[], dict[str, int]]:
    """Add every fault of MIXED; returns a function giving the hits so far by kind."""
    faults = [(kind, sim.add_fault(kind, **kw)) for kind, kw in MIXED]

    def hits() -> dict[str, int]:
        out: Counter = Counter()
        for kind, f in faults:
            out[kind] += f.hits
        return dict(out)

    return hits


def check_mixed_wavespeed(rec, hits: dict[str, int], matched: int = 0) -> None:
    """The precise relations between fault hits and recorded outcomes (WaveSpeed calls of ``rec``).

    ``matched``: unknown submits a resume found in the prediction history (collected, never re-sent)."""
    rows = [r for r in rec.rows if r["provider"] == "wavespeed"]
    by_status = Counter(r["status"] for r in rows)
    # unknown outcomes: exactly the submits whose answer was unusable or proved nothing (a 503 is not re-sent);
    # the server created a task for two kinds — those a resume found in the history are collected
    assert by_status["unknown"] + matched == hits.get("wrong_shape_submit", 0) + hits.get("submit_5xx", 0) + hits.get(
        "submit_accepted_5xx", 0
    ) + hits.get("submit_timeout", 0)
    assert len(rec.orphans) + matched == hits.get("submit_accepted_5xx", 0) + hits.get("submit_timeout", 0)
    failed = [r for r in rows if r["status"] == "failed"]
    for r in failed:
        pid = r["prediction_id"]
        if pid is None:  # a refused submit that exhausted its re-sends
            assert r["error_category"] in ("rate_limit", "server") and r["cost_usd"] == 0, r
            continue
        p = rec.predictions[pid]
        if p.status == "failed":  # the task failed: its code decides the category
            assert r["error_category"] == TASK_CODE_CATEGORY[p.code] and r["error_code"] == str(p.code), r
            assert r["cost_usd"] == 0 and bool(r["content_filtered"]) == (p.code == 1200), r
        else:  # the task completed (billed), its output could not be fetched
            assert p.status == "completed" and r["error_category"] in ("bad_output", "server"), r
    task_failures = sum(
        1 for r in failed if r["prediction_id"] and rec.predictions[r["prediction_id"]].status == "failed"
    )
    failed_tasks = [p for p in rec.predictions.values() if p.status == "failed"]
    assert len(failed_tasks) == hits.get("task_failed", 0) + hits.get("moderation", 0)
    assert task_failures == sum(1 for p in failed_tasks if p.id not in rec.orphans)
    bad_outputs = sum(1 for r in failed if r["error_category"] == "bad_output")
    assert bad_outputs == hits.get("truncated_download", 0) + hits.get("non_image_download", 0)
    running = [p for p in rec.predictions.values() if p.status in ("created", "processing")]
    assert len(running) == hits.get("never_finish", 0)
    assert by_status["submitted"] == sum(1 for p in running if p.id not in rec.orphans)


@pytest.mark.parametrize("mode", ["async", "sync+base64"])
async def test_all_faults_mixed_over_the_core_suite(mode, wavespeed_sim_factory, tmp_path):
    sync = mode != "async"
    handle = wavespeed_sim_factory(seed=5, sync_timeout_s=0.3, **SIM)
    hits = add_mixed_faults(handle.sim)
    extra = {"sync_mode": True, "base64_output": True, "sync_read_timeout_s": SYNC_READ_TIMEOUT_S} if sync else {}
    res = await run_wavespeed(handle, tmp_path, suite="core", repeats=1, timeout_s=MIXED_TIMEOUT_S, wavespeed_kw=extra)
    counts_add_up(res)
    assert res.completed > res.planned / 2
    never_finish = handle.sim.stats()["fault_hits"].get("never_finish", 0)
    matched = 0  # submits lost after acceptance that a resume found in the history (collected, not re-sent)
    for _ in range(3):  # accepted jobs not finished within the timeout: a resume polls them (never re-submits);
        if res.pending <= never_finish:  # on a loaded machine a healthy job can need more than one resume
            break
        submits = len(handle.sim.submits)
        res = await resume_wavespeed(handle, tmp_path, res.run_id, wavespeed_kw={"timeout_s": MIXED_TIMEOUT_S, **extra})
        assert len(handle.sim.submits) == submits
        matched += res.reconciled.get("matched", 0)
    h = hits()
    wait_until_idle(handle.sim, still_running=h.get("never_finish", 0))
    for kind, _ in MIXED:
        if sync and kind in ("download_5xx", "truncated_download", "non_image_download"):
            continue  # base64 outputs come inside the poll/submit reply: no download to break
        assert h.get(kind, 0) > 0, f"{kind} never fired: the mix does not test it"
    rows = rows_of(tmp_path, res.run_id)
    assert_every_call_accounted(rows)
    rec = reconcile_wavespeed(handle, tmp_path)
    check_mixed_wavespeed(rec, h, matched=matched)
    assert assert_outputs_intact(tmp_path, rows) == sum(r["status"] == "completed" for r in rows)
    assert set(res.failures_by_category) <= {"rate_limit", "server", "task_failed", "moderation", "bad_output"}


# ---- a mixed-provider run: WaveSpeed, Stability and Hugging Face misbehaving together -------------

STABILITY_FAULTS = [  # (kind, keyword arguments) — count-based: each fires on the next `count` matching requests
    ("rate_limit", {"count": 2, "retry_after_s": 0.01}),
    ("moderation", {"count": 1, "endpoint": "inpaint"}),
    ("server_error", {"count": 1, "endpoint": "inpaint"}),
    ("payload_too_large", {"count": 1, "endpoint": "outpaint"}),
    ("unprocessable", {"count": 1, "endpoint": "outpaint"}),
    ("content_filtered", {"count": 1, "endpoint": "outpaint"}),
    ("never_finish", {"count": 1}),
    ("rate_limit", {"count": 1, "endpoint": "results", "retry_after_s": 0.01}),
    ("slow", {"count": 2, "delay_s": 0.2}),
]
HF_FAULTS = [
    ("loading", {"count": 2, "retry_after_s": 0.01}),
    ("rate_limit", {"count": 2, "retry_after_s": 0.01}),
    # (402 payment_required is an account that ran dry: it stops that provider's submits and is tested on its
    # own in test_newcomer.py, where the untried calls stay planned)
    ("server_error", {"count": 1}),
    ("slow", {"count": 2, "delay_s": 0.2}),
]
STABILITY_MAX_WAIT_S = 1.0


def mixed_provider_options(ws_handle, stability_sim, huggingface_sim) -> dict:
    fast = RetryPolicy(max_attempts=5, base_s=0.01, max_backoff_s=0.05, max_retry_after_s=0.05)
    return {
        "wavespeed": wavespeed_options(ws_handle, timeout_s=MIXED_TIMEOUT_S),
        "stability": {
            "base_url": stability_sim.base_url,
            "api_key": Secret(stability_sim.api_key),
            "poll_interval_s": 0.02,
            "max_wait_s": STABILITY_MAX_WAIT_S,
            "retry": fast,
        },
        "huggingface": {
            "endpoint_url": huggingface_sim.base_url,
            "token": Secret(huggingface_sim.api_key),
            "retry": fast,
        },
    }


async def test_mixed_providers_with_faults_everywhere(wavespeed_sim_factory, stability_sim, huggingface_sim, tmp_path):
    ws_handle = wavespeed_sim_factory(seed=3, **SIM)
    hits = add_mixed_faults(ws_handle.sim)
    for kind, kw in STABILITY_FAULTS:
        stability_sim.inject(kind, **kw)
    for kind, kw in HF_FAULTS:
        huggingface_sim.inject(kind, **kw)
    options = mixed_provider_options(ws_handle, stability_sim, huggingface_sim)
    res = await arun(
        "smoke",
        models="all",
        repeats=3,
        concurrency=16,
        workspace=tmp_path,
        provider_options=options,
        progress=False,
        no_cache=True,
        run_id="mixed",
        patience=FAST_PATIENCE,
        quote_prices=True,
    )
    counts_add_up(res)
    posts = {
        "stability": len(stability_sim.sim.requests),
        "huggingface": len(huggingface_sim.sim.requests),
        "wavespeed": len(ws_handle.sim.submits),
    }
    # resume: every accepted job still running (WaveSpeed never_finish, the relight that never finishes) is
    # polled again, WaveSpeed submits lost after acceptance are found in its history and collected; nothing is
    # POSTed again to any provider (the refused ones' windows are too recent to prove them unaccepted yet)
    res = await arun(
        None,
        workspace=tmp_path,
        run_id="mixed",
        resume=True,
        progress=False,
        provider_options=options,
        patience=FAST_PATIENCE,
    )
    assert posts == {
        "stability": len(stability_sim.sim.requests),
        "huggingface": len(huggingface_sim.sim.requests),
        "wavespeed": len(ws_handle.sim.submits),
    }
    h = hits()
    wait_until_idle(ws_handle.sim, still_running=h.get("never_finish", 0))
    rows = rows_of(tmp_path, "mixed")
    assert_every_call_accounted(rows)
    assert assert_outputs_intact(tmp_path, rows) == res.completed
    by_provider = {
        p: [r for r in rows if r["provider"] == p and r["status"] != "not_applicable"]
        for p in ("wavespeed", "stability", "huggingface", "local")
    }

    # WaveSpeed: the same precise reconciliation as in the single-provider runs
    rec = reconcile_wavespeed(ws_handle, tmp_path)
    check_mixed_wavespeed(rec, h, matched=res.reconciled.get("matched", 0))

    # Stability: every injected fault became exactly one categorised outcome
    st = by_provider["stability"]
    assert len(st) == 9  # smoke × 3 repeats: inpaint, outpaint, relight
    assert Counter(r["error_category"] for r in st if r["status"] == "failed") == {
        "moderation": 1,
        "server": 1,
        "bad_request": 2,
    }
    assert sum(r["status"] == "completed" for r in st) == 4
    filtered = [r for r in st if r["content_filtered"]]
    assert (
        len(filtered) == 1 and filtered[0]["status"] == "completed" and filtered[0]["model_id"] == "stability-outpaint"
    )
    pending = [r for r in st if r["status"] == "submitted"]
    assert (
        len(pending) == 1
        and pending[0]["model_id"] == "stability-replace-background-relight"
        and pending[0]["prediction_id"]
    )
    # each POST was sent once, except the two refused with 429 (a 500 is never re-sent)
    assert len(stability_sim.sim.requests) == len(st) + 2
    assert all(r["cost_usd"] == 0 for r in st if r["status"] == "failed")
    assert stability_sim.sim.total_usd == pytest.approx(sum(r["cost_usd"] or 0 for r in st), abs=1e-9)
    assert len(stability_sim.sim.ledger) == sum(r["status"] == "completed" for r in st)
    # matched by job: each completed call owns one billed generation (relight by id, the rest by output), at
    # the price the server billed; the relight still running holds a job the server has not billed
    st_match = reconcile_stability(stability_sim, tmp_path)
    assert len(st_match.owner_of) == 4 and not st_match.orphans

    # Hugging Face: 503-loading and 429 were re-sent, a 500 was not; costs are never guessed
    hf = by_provider["huggingface"]
    assert len(hf) == 12  # 4 models × 1 applicable smoke case × 3 repeats
    assert Counter(r["error_category"] for r in hf if r["status"] == "failed") == {"server": 1}
    assert sum(r["status"] == "completed" for r in hf) == len(huggingface_sim.sim.generations) == 11
    assert len(huggingface_sim.sim.requests) == len(hf) + 4
    assert all(r["cost_usd"] is None and r["cost_source"] == "unknown" for r in hf)
    hf_match = reconcile_huggingface(huggingface_sim, tmp_path)
    assert len(hf_match.owner_of) == 11 and not hf_match.orphans

    # the free local baselines are untouched by the others' trouble
    assert all(r["status"] == "completed" and r["cost_usd"] == 0 for r in by_provider["local"])
    # the run's total is what all the servers billed (HF reports no cost; orphans are not recorded)
    assert res.cost_usd == pytest.approx(rec.recorded_usd + stability_sim.sim.total_usd, abs=1e-9)


# ---- bugs this suite found, now fixed (each test guards its fix) ------------------------------------


async def test_stability_job_whose_polls_fail_is_not_posted_again(stability_sim, tmp_path):
    retry = RetryPolicy(max_attempts=5, base_s=0.01, max_backoff_s=0.05, max_retry_after_s=0.05)
    stability_sim.inject("server_error", endpoint="results", count=retry.max_attempts)
    options = {
        "stability": {
            "base_url": stability_sim.base_url,
            "api_key": Secret(stability_sim.api_key),
            "poll_interval_s": 0.02,
            "max_wait_s": 5,
            "retry": retry,
        }
    }
    model = "stability-replace-background-relight"
    res = await arun(
        "smoke",
        models=model,
        workspace=tmp_path,
        run_id="relight",
        progress=False,
        provider_options=options,
        patience=FAST_PATIENCE,
    )
    assert len(stability_sim.sim.posts_to("replace-background-and-relight")) == 1
    await arun(
        None,
        workspace=tmp_path,
        run_id=res.run_id,
        resume=True,
        retry_failed=True,
        progress=False,
        patience=FAST_PATIENCE,
        provider_options=options,
    )
    assert len(stability_sim.sim.posts_to("replace-background-and-relight")) == 1, "an accepted job was POSTed again"
    (row,) = [r for r in rows_of(tmp_path, res.run_id) if r["status"] != "not_applicable"]
    assert row["status"] == "completed" and len(stability_sim.sim.ledger) == 1
    match = reconcile_stability(stability_sim, tmp_path)
    assert match.owner_of == {row["call_id"]: 0} and stability_sim.sim.ledger[0].generation_id == row["prediction_id"]
