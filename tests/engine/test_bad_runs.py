"""Bad run arguments to :func:`evalkit.engine.runner.arun` (unknown models, unsafe run ids, bad options, a missing key)
are refused before anything is sent and leave the workspace intact; a garbage server is recorded per call."""

from __future__ import annotations

import pytest

from evalkit.engine.runner import arun
from evalkit.errors import InvalidInputError, MissingKeyError, UnknownModelError
from evalkit.store import Workspace
from tests.plugins.bad_input import (
    FAST_POLL,
    HTML,
    assert_clear,
    assert_intact,
    garbage_options,
    garbage_server,
    request_count,
    state,
    ws_options,
)


async def test_garbage_server_in_a_run_is_recorded_per_call(tmp_path):
    server = garbage_server(200, HTML, "text/html")
    try:
        res = await arun(
            "smoke",
            models="qwen-edit,flux-kontext-pro",
            repeats=2,
            workspace=tmp_path,
            progress=False,
            provider_options=garbage_options("wavespeed", server.base_url),
        )
    finally:
        server.stop()
    rows = [r for r in Workspace(tmp_path).call_rows(res.run_id) if r["status"] != "not_applicable"]
    assert res.unknown == len(rows) == 4 and res.completed == 0  # never called a success
    # never re-sent: one submit per call, and nothing else (a reply that is not JSON leaves the outcome unknown)
    assert len(server.posts()) == len(server.requests) == len(rows), server.requests
    assert {r["error_category"] for r in rows} == {"unknown_outcome"} and all(r["cost_usd"] is None for r in rows)


async def test_unknown_model_in_a_run_suggests_and_leaves_the_workspace_alone(sim, ws):
    before = state(ws)
    with pytest.raises(UnknownModelError) as info:
        await arun(
            "smoke", models="qwen-edit,seededit-v33", workspace=ws, progress=False, provider_options=ws_options(sim)
        )
    assert_clear(info.value, UnknownModelError, "seededit-v33", "did you mean", "seededit-v3")
    with pytest.raises(InvalidInputError) as info:
        await arun("smoke", models="provider:nobody", workspace=ws, progress=False, provider_options=ws_options(sim))
    assert_clear(info.value, InvalidInputError, "provider:nobody")
    assert request_count(sim) == 0
    assert_intact(before, ws)


@pytest.mark.parametrize(
    "run_id",
    [
        "../escape",
        "a/b",
        "..",
        "ｒｕｎ",
        "run\x00x",
        "run\nx",
        " lead",
        "-flag",
        "x" * 200,
        "e\u0301t\u00e9",
        "CON/../..",
    ],
)
async def test_unsafe_or_odd_unicode_run_ids_are_refused(run_id, sim, ws):
    before = state(ws)
    outside = sorted(p.name for p in ws.parent.iterdir())
    with pytest.raises(InvalidInputError) as info:
        await arun(
            "smoke", models="qwen-edit", workspace=ws, run_id=run_id, progress=False, provider_options=ws_options(sim)
        )
    assert_clear(info.value, InvalidInputError, "is not a safe id")
    assert sorted(p.name for p in ws.parent.iterdir()) == outside  # nothing written next to the workspace
    assert request_count(sim) == 0
    assert_intact(before, ws)


async def test_run_id_with_a_trailing_newline_is_refused(sim, ws):
    before = state(ws)
    with pytest.raises(InvalidInputError):
        await arun(
            "smoke",
            models="qwen-edit",
            workspace=ws,
            run_id="nightly\n",
            progress=False,
            provider_options=ws_options(sim),
        )
    assert request_count(sim) == 0
    assert_intact(before, ws)


async def test_bad_run_options_leave_no_run_behind(sim, ws):
    before = state(ws)
    with pytest.raises(InvalidInputError):
        await arun(
            "smoke", models="qwen-edit", workspace=ws, concurrency=0, progress=False, provider_options=ws_options(sim)
        )
    assert_intact(before, ws)


async def test_missing_key_stops_a_run_before_it_starts(sim, ws, monkeypatch):
    monkeypatch.delenv("WAVESPEED_API_KEY", raising=False)
    before = state(ws)
    with pytest.raises(MissingKeyError) as info:
        await arun(
            "smoke",
            models="qwen-edit,flux-kontext-pro",
            workspace=ws,
            progress=False,
            provider_options={"wavespeed": {"base_url": sim.base_url, "poll": FAST_POLL}},
        )
    assert_clear(info.value, MissingKeyError, "WAVESPEED_API_KEY")
    assert request_count(sim) == 0
    assert_intact(before, ws)
