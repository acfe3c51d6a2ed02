"""Unknown submits settled from the simulator's prediction history: whole runs in a fault storm, then one resume.

The storm mixes submits accepted-then-500, refused 500s, connections dropped after the body was sent, 429s,
poll and download 5xx and failing tasks. After one ``--resume`` (with a short settle policy — the server is
local) no call is ``unknown`` where the history settles it, no accepted job belongs to no call (so no
accepted body was sent twice), and the bill equals the recorded cost to the cent. Where the history cannot
settle a call (it fails), the call stays ``unknown`` with the reason, and nothing is re-sent.
"""

from __future__ import annotations

from collections import Counter

import pytest

from evalkit.engine.reconcile import ReconcilePolicy
from evalkit.engine.runner import arun
from evalkit.store import Workspace
from tests.e2e.test_faults import FAST_PATIENCE, SIM, counts_add_up, rows_of, run_wavespeed, wavespeed_options
from tests.plugins.money import (
    CENT,
    assert_every_call_accounted,
    assert_outputs_intact,
    reconcile_wavespeed,
    wait_until_idle,
)

pytestmark = pytest.mark.faults

#: the simulator is local: a prediction is listed the moment it exists
FAST_SETTLE = ReconcilePolicy(clock_skew_s=1.0, settle_s=0.3, max_submit_s=10.0)
SETTLE_WAIT_S = 3.0

STORM = [
    ("submit_accepted_5xx", {"rate": 0.08}),
    ("submit_accepted_drop", {"rate": 0.08}),
    ("submit_5xx", {"rate": 0.08}),
    ("rate_limit", {"rate": 0.06, "retry_after_s": 0.01}),
    ("poll_5xx", {"rate": 0.08}),
    ("download_5xx", {"rate": 0.08}),
    ("task_failed", {"rate": 0.05, "code": 1403}),
]
UNKNOWN_KINDS = ("submit_accepted_5xx", "submit_accepted_drop", "submit_5xx")


def storm(sim) -> dict:
    return {kind: sim.add_fault(kind, **kw) for kind, kw in STORM}


async def resume(handle, ws_path, run_id, **kw):
    return await arun(
        None,
        workspace=ws_path,
        run_id=run_id,
        resume=True,
        progress=False,
        patience=FAST_PATIENCE,
        provider_options={"wavespeed": wavespeed_options(handle)},
        reconcile_policy=FAST_SETTLE,
        settle_wait_s=SETTLE_WAIT_S,
        **kw,
    )


@pytest.mark.parametrize("mode", ["async", "sync"])
async def test_one_resume_settles_every_unknown_submit_from_the_history_and_pays_once(
    mode, wavespeed_sim_factory, tmp_path
):
    handle = wavespeed_sim_factory(seed=7, sync_timeout_s=2.0, **SIM)
    faults = storm(handle.sim)
    extra = {"sync_mode": True, "sync_read_timeout_s": 3.0} if mode == "sync" else {}
    res = await run_wavespeed(handle, tmp_path, repeats=3, wavespeed_kw=extra)
    counts_add_up(res)
    unknown_after_run = res.unknown
    assert unknown_after_run > 0 and all(faults[k].hits > 0 for k in UNKNOWN_KINDS), {
        k: f.hits for k, f in faults.items()
    }
    submits_before = len(handle.sim.submits)
    lost_after_acceptance = faults["submit_accepted_5xx"].hits + faults["submit_accepted_drop"].hits

    res = await resume(handle, tmp_path, res.run_id)
    wait_until_idle(handle.sim)
    rows = rows_of(tmp_path, res.run_id)
    assert_every_call_accounted(rows)
    by_status = Counter(r["status"] for r in rows)
    assert by_status["unknown"] == 0, [r["error_message"] for r in rows if r["status"] == "unknown"][:3]
    assert res.unknown == 0 and res.pending == 0
    rec = reconcile_wavespeed(handle, tmp_path)
    # every accepted job belongs to exactly one call: no accepted body was sent twice, no orphan is left
    assert not rec.orphans
    assert abs(rec.billed_usd - rec.recorded_usd) < CENT
    # the accepted-then-lost ones were collected from the history, the refused ones sent again (and only those)
    # each lost-after-acceptance submit of the run was found in the history and collected (not re-sent), each
    # refused one proven unaccepted and sent again; the faults keep firing during the resume, whose own lost
    # submits are settled at its end (settle_wait_s), so the counts can only be larger
    assert res.reconciled["matched"] >= lost_after_acceptance > 0
    # (a submit that timed out on a busy machine is one more accepted-then-lost: it is matched, not re-sent)
    assert res.reconciled["resubmit"] > 0
    assert res.reconciled["matched"] + res.reconciled["resubmit"] >= unknown_after_run
    resent = len(handle.sim.submits) - submits_before
    # only what the history proved unaccepted was sent again (a re-send refused once more is not in sim.submits)
    assert 0 < resent <= res.reconciled["resubmit"]
    assert assert_outputs_intact(tmp_path, rows) == by_status["completed"]


async def test_when_the_history_cannot_be_read_unknown_calls_stay_unknown_with_the_reason(
    wavespeed_sim_factory, tmp_path
):
    handle = wavespeed_sim_factory(seed=3, **SIM)
    handle.sim.add_fault("submit_accepted_5xx", rate=0.2)
    handle.sim.add_fault("history_5xx")  # every history request fails
    res = await run_wavespeed(handle, tmp_path, repeats=2)
    assert res.unknown > 0
    submits = len(handle.sim.submits)
    res2 = await resume(handle, tmp_path, res.run_id)
    assert len(handle.sim.submits) == submits  # nothing re-sent
    assert res2.unknown == res.unknown
    unknown = [r for r in rows_of(tmp_path, res.run_id) if r["status"] == "unknown"]
    assert unknown and all(
        "history" in r["error_message"] and "could not be read" in r["error_message"] for r in unknown
    )
    wait_until_idle(handle.sim)
    rec = reconcile_wavespeed(handle, tmp_path)  # orphans bounded by the unknown calls' reservations
    assert len(rec.orphans) == res.unknown


async def test_evalkit_runs_and_the_report_show_unknown_calls_and_what_they_may_have_cost(
    wavespeed_sim_factory, tmp_path
):
    handle = wavespeed_sim_factory(seed=3, **SIM)
    handle.sim.add_fault("submit_accepted_5xx", rate=0.3)
    res = await run_wavespeed(handle, tmp_path, repeats=2)
    assert res.unknown > 0
    with Workspace(tmp_path, create=False) as ws:
        runs = ws.runs()
        reserved = sum(r["reserved_usd"] for r in ws.call_rows(res.run_id, ["unknown"]))
    row = runs.set_index("run_id").loc[res.run_id]
    assert row["unknown"] == res.unknown
    assert row["unknown_max_usd"] == pytest.approx(reserved) and reserved > 0
    assert res.unknown_max_usd == pytest.approx(reserved)
    from evalkit.report.sections import run_overview

    with Workspace(tmp_path, create=False) as ws:
        cost = run_overview(ws, res.run_id)["cost"]
    assert f"{res.unknown} call(s) with an unknown outcome may have cost up to ${reserved:.4f} more" in cost


def test_evalkit_reconcile_settles_a_run_on_demand_and_resume_collects(wavespeed_sim_factory, tmp_path, monkeypatch):
    import asyncio
    import json

    from typer.testing import CliRunner

    from evalkit.cli import app

    handle = wavespeed_sim_factory(seed=5, **SIM)
    handle.sim.add_fault("submit_accepted_5xx", count=2)
    handle.sim.add_fault("submit_5xx", count=2)
    res = asyncio.run(run_wavespeed(handle, tmp_path, repeats=1))
    assert res.unknown == 4
    handle.sim.clear_faults()
    monkeypatch.setenv("WAVESPEED_BASE_URL", handle.base_url)
    monkeypatch.setenv("WAVESPEED_API_KEY", handle.api_key)
    monkeypatch.setenv("EVALKIT_RECONCILE_SKEW_S", "1")
    monkeypatch.setenv("EVALKIT_RECONCILE_SETTLE_S", "0.2")
    submits = len(handle.sim.submits)
    out = CliRunner().invoke(app, ["reconcile", res.run_id, "--workspace", str(tmp_path), "--json"])
    assert out.exit_code == 0, out.output
    summary = json.loads(out.output)
    assert (summary["matched"], summary["resubmit"], summary["unknown"]) == (2, 2, 0), summary
    assert len(handle.sim.submits) == submits  # deciding sends nothing
    with Workspace(tmp_path, create=False) as ws:
        statuses = [r["status"] for r in ws.call_rows(res.run_id)]
    assert statuses.count("unknown") == 0 and statuses.count("planned") == 2 and statuses.count("submitted") == 2
    res2 = asyncio.run(resume(handle, tmp_path, res.run_id))
    assert res2.unknown == 0 and res2.completed == res2.planned
    wait_until_idle(handle.sim)
    rec = reconcile_wavespeed(handle, tmp_path)
    assert not rec.orphans and abs(rec.billed_usd - rec.recorded_usd) < CENT
    assert len(handle.sim.submits) == submits + 2  # only the two refused ones were sent again
