"""Runs against the local WaveSpeed server: plan, cache, resume, budget, faults, limits, crashes."""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from evalkit.credentials import Secret
from evalkit.engine import ProviderLimits, StopController, arun, default_provider_limits, parse_provider_limits, run
from evalkit.errors import InvalidInputError
from evalkit.providers.wavespeed import PollSchedule
from evalkit.resources import datasets_dir
from evalkit.store import Workspace
from tests.plugins.common import wait_until

WS_MODELS = "provider:wavespeed"


FAST_POLL = PollSchedule(initial_delay_s=0.01, factor=1.5, quick_polls=3, min_interval_s=0.02, max_interval_s=0.1)


def _opts(sim) -> dict:
    return {"wavespeed": {"base_url": sim.base_url, "api_key": Secret(sim.api_key), "poll": FAST_POLL}}


async def _run(sim, ws_path, **kw):
    kw.setdefault("models", WS_MODELS)
    kw.setdefault("progress", False)
    suite = kw.pop("suite", "smoke")
    return await arun(suite, workspace=ws_path, provider_options=_opts(sim), **kw)


def _assert_paid_once(sim, ws_path, run_ids=None) -> None:
    """Every job the server accepted belongs to exactly one recorded call; no call was submitted twice.

    (Bodies alone cannot tell: two models may receive identical bodies, and a seedless model's repeats
    are identical requests. Prediction ids can.) A call left ``unknown`` by a crash mid-send may own at
    most one accepted job that the store never learnt about.
    """
    ws = Workspace(ws_path)
    rows = [r for rid in (run_ids or list(ws.runs().run_id)) for r in ws.call_rows(rid)]
    store_ids = [r["prediction_id"] for r in rows if r["prediction_id"] and r["cost_source"] != "cache"]
    assert len(store_ids) == len(set(store_ids)), "two calls claim the same job"
    server_ids = [s.prediction_id for s in sim.submits]
    orphans = set(server_ids) - set(store_ids)
    unknown = sum(r["status"] == "unknown" for r in rows)
    assert len(orphans) <= unknown, f"{len(orphans)} accepted jobs belong to no call (paid twice?)"


async def test_dry_run_spends_nothing_and_estimates(wavespeed_sim, tmp_path, catalog):
    res = await _run(wavespeed_sim, tmp_path, dry_run=True, repeats=2)
    assert wavespeed_sim.sim.submits == [] and wavespeed_sim.sim.billed_usd == 0
    est = res.estimate.set_index("model_id")
    # qwen-edit: one applicable smoke case (general_edit) × 2 repeats at $0.02
    assert est.loc["qwen-edit", "calls"] == 2 and est.loc["qwen-edit", "list_price_usd"] == pytest.approx(0.04)
    assert est.loc["image-zoom-out", "calls"] == 2  # only the zoom_out case
    assert est.loc["TOTAL", "calls"] == res.planned
    assert not (tmp_path / "evalkit.sqlite").exists() or Workspace(tmp_path).runs().empty


def test_a_released_call_is_rebuilt_exactly_as_planned(catalog):
    """The runner keeps a small stub per waiting call and rebuilds its request when it runs: the rebuilt
    call must be the planned one (same body, fingerprint, price), or the cache, the budget and resume
    would disagree with the rows written at planning time."""
    from evalkit.engine.planning import iter_plan
    from evalkit.providers import create_provider
    from evalkit.suites import load_suite

    suite = load_suite("core")
    models = catalog.select("all")
    providers = {name: create_provider(name) for name in {m.provider for m in models}}
    planned = [pc for pc in iter_plan("r", suite.cases, models, providers, repeats=2) if pc.status == "planned"]
    assert len(planned) > 100
    for pc in planned:
        before = pc.row()
        pc.release()
        assert pc.request is None and pc.prepared is None
        assert pc.build(providers[pc.model.provider]).row() == before
    # not-applicable calls carry nothing to rebuild
    na = [pc for pc in iter_plan("r", suite.cases, models, providers) if pc.status == "not_applicable"]
    assert na and all(pc.request is None and pc.case is None for pc in na)


async def test_run_records_every_call_and_bills_match(wavespeed_sim, tmp_path, catalog):
    res = await _run(wavespeed_sim, tmp_path, concurrency=8)
    ws = Workspace(tmp_path)
    df = ws.calls(res.run_id)
    applicable = df[df.status != "not_applicable"]
    assert res.completed == len(applicable) == res.planned and res.failed == 0
    assert set(applicable.status) == {"completed"}
    # not-applicable pairs carry the reason
    na = df[df.status == "not_applicable"]
    assert len(na) == res.not_applicable > 0 and na.reason.str.contains("does not support").all()
    # costs: list price per call; the server billed exactly what the store recorded
    assert applicable.cost_usd.sum() == pytest.approx(wavespeed_sim.sim.billed_usd)
    assert res.cost_usd == pytest.approx(wavespeed_sim.sim.billed_usd)
    # latency breakdown and outputs
    assert (applicable.total_ms > 0).all() and applicable.inference_ms.notna().all()
    assert all(Path(p).exists() for p in applicable.output_path)
    assert applicable.simulated.all() and ws.get_run(res.run_id)["simulated"] == 1
    # usage ledger has one row per paid call
    assert len(ws.usage()) == len(applicable)
    _assert_paid_once(wavespeed_sim.sim, tmp_path)
    # the case inputs are in the workspace (reports need no suite folder)
    assert set(ws.cases(res.run_id).case_id) == set(df.case_id)


async def test_repeats_use_distinct_seeds(wavespeed_sim, tmp_path):
    res = await _run(wavespeed_sim, tmp_path, models="qwen-edit,flux-kontext-pro", repeats=3)
    df = Workspace(tmp_path).calls(res.run_id)
    q = df[(df.model_id == "qwen-edit") & (df.status == "completed")]
    assert sorted(q.seed) == [1000, 1001, 1002]
    k = df[(df.model_id == "flux-kontext-pro") & (df.status == "completed")]
    assert k.seed.isna().all() and k.fingerprint.nunique() == 3  # no seed: repeats still distinct requests
    assert len(wavespeed_sim.sim.submits) == res.completed


async def test_cache_serves_identical_requests_from_earlier_runs(wavespeed_sim, tmp_path):
    first = await _run(wavespeed_sim, tmp_path, models="qwen-edit,qwen-edit-plus")
    n = len(wavespeed_sim.sim.submits)
    second = await _run(wavespeed_sim, tmp_path, models="qwen-edit,qwen-edit-plus")
    assert second.run_id != first.run_id
    assert len(wavespeed_sim.sim.submits) == n  # nothing paid again
    assert second.completed == first.completed and second.cached == second.completed and second.cost_usd == 0
    df = Workspace(tmp_path).calls(second.run_id)
    done = df[df.status == "completed"]
    assert (done.cost_source == "cache").all() and done.cached_from.notna().all()
    third = await _run(wavespeed_sim, tmp_path, models="qwen-edit,qwen-edit-plus", no_cache=True)
    assert len(wavespeed_sim.sim.submits) == n + third.completed


async def test_rerun_with_same_run_id_resumes_without_paying(wavespeed_sim, tmp_path):
    res = await _run(wavespeed_sim, tmp_path, run_id="nightly-1", no_cache=True)
    n = len(wavespeed_sim.sim.submits)
    again = await _run(wavespeed_sim, tmp_path, run_id="nightly-1", no_cache=True)
    assert len(wavespeed_sim.sim.submits) == n and again.completed == res.completed
    resumed = await arun(
        None, workspace=tmp_path, run_id="nightly-1", resume=True, progress=False, provider_options=_opts(wavespeed_sim)
    )
    assert resumed.completed == res.completed and len(wavespeed_sim.sim.submits) == n


async def test_resume_refused_when_suite_changed(wavespeed_sim, tmp_path):
    suite = tmp_path / "smoke"
    shutil.copytree(datasets_dir() / "smoke", suite)
    ws = tmp_path / "ws"
    await _run(wavespeed_sim, ws, suite=str(suite), models="qwen-edit", run_id="r1")
    toml = suite / "suite.toml"
    toml.write_text(toml.read_text().replace('description = "', 'description = "changed: ', 1))
    with pytest.raises(InvalidInputError, match="changed since run 'r1' started"):
        await arun(None, workspace=ws, run_id="r1", resume=True, progress=False, provider_options=_opts(wavespeed_sim))
    with pytest.raises(InvalidInputError, match="cannot resume"):
        await arun(None, workspace=ws, run_id="nope", resume=True, progress=False)


async def test_budget_holds_with_100_calls_in_flight(wavespeed_sim_factory, tmp_path):
    sim = wavespeed_sim_factory(fixed_latency_ms=50, max_concurrent=1000)
    budget = 6.0  # room for ~100 reservations at once; the whole plan would cost ~$10
    # no task finishes until the server has seen many in flight at once: a signal from the server, not a latency
    # long enough to hope the first wave's submits (each written to the workspace first) overlap
    sim.sim.hold_tasks()
    running = asyncio.create_task(
        arun(
            "smoke",
            models=WS_MODELS,
            repeats=12,
            concurrency=100,
            budget_usd=budget,
            workspace=tmp_path,
            provider_options=_opts(sim),
            progress=False,
            no_cache=True,
        )
    )
    await wait_until(lambda: sim.sim.stats()["in_flight"] >= 60 or running.done(), tries=6000, interval_s=0.01)
    held = sim.sim.stats()["in_flight"]
    sim.sim.release_tasks()
    res = await running
    assert held >= 60  # really many calls in flight at once
    assert res.stop_reason == "budget"
    assert sim.sim.billed_usd <= budget + 1e-9
    assert res.cost_usd == pytest.approx(sim.sim.billed_usd)
    assert res.skipped > 0 and res.completed > 0
    df = Workspace(tmp_path).calls(res.run_id)
    assert (df.status == "planned").sum() == res.skipped  # the rest stays planned: a bigger budget resumes it


async def test_a_model_that_always_fails_does_not_stop_the_run(wavespeed_sim, tmp_path):
    wavespeed_sim.sim.add_fault("task_failed", rate=1.0, model="qwen-edit", code=5003)
    res = await _run(wavespeed_sim, tmp_path, models="qwen-edit,qwen-edit-plus,seededit-v3", repeats=2)
    df = Workspace(tmp_path).calls(res.run_id)
    q = df[(df.model_id == "qwen-edit") & (df.status != "not_applicable")]
    assert (
        len(q) == 2 and (q.status == "failed").all() and set(q.error_category) == {"server"} and (q.cost_usd == 0).all()
    )
    others = df[(df.model_id != "qwen-edit") & (df.status != "not_applicable")]
    assert (others.status == "completed").all()


async def test_rate_limits_slow_but_lose_nothing(wavespeed_sim, tmp_path):
    wavespeed_sim.sim.add_fault("rate_limit", rate=0.5, retry_after_s=0.01)
    wavespeed_sim.sim.add_fault("rate_limit_poll", rate=0.3, retry_after_s=0.01)
    res = await _run(wavespeed_sim, tmp_path, repeats=2, concurrency=16)
    assert res.failed == 0 and res.completed == res.planned
    assert wavespeed_sim.sim.stats()["fault_hits"].get("rate_limit", 0) > 0
    _assert_paid_once(wavespeed_sim.sim, tmp_path)
    assert res.cost_usd == pytest.approx(wavespeed_sim.sim.billed_usd)


async def test_provider_concurrency_limit_is_respected(wavespeed_sim_factory, tmp_path):
    sim = wavespeed_sim_factory(fixed_latency_ms=60, max_concurrent=1000)
    res = await arun(
        "smoke",
        models=WS_MODELS,
        repeats=2,
        concurrency=50,
        workspace=tmp_path,
        progress=False,
        provider_options=_opts(sim),
        provider_limits={"wavespeed": ProviderLimits(max_concurrent=2)},
    )
    assert res.completed == res.planned
    assert sim.sim.stats()["peak_in_flight"] <= 2


async def test_progress_callback_reports_counts(wavespeed_sim, tmp_path):
    seen = []
    res = await arun(
        "smoke",
        models="qwen-edit,image-zoom-out",
        workspace=tmp_path,
        progress=seen.append,
        provider_options=_opts(wavespeed_sim),
    )
    assert seen and seen[-1]["done"] == res.completed and seen[-1]["cost_usd"] == pytest.approx(res.cost_usd)


async def test_stop_keeps_everything_done(wavespeed_sim_factory, tmp_path):
    sim = wavespeed_sim_factory(fixed_latency_ms=200, max_concurrent=1000)
    controller = StopController()

    async def stop_soon():
        while len(sim.sim.submits) < 3:
            await asyncio.sleep(0.01)
        controller.interrupt()

    stopper = asyncio.create_task(stop_soon())
    res = await arun(
        "smoke",
        models=WS_MODELS,
        repeats=5,
        concurrency=3,
        workspace=tmp_path,
        progress=False,
        provider_options=_opts(sim),
        controller=controller,
        grace_period_s=5,
        no_cache=True,
    )
    await stopper
    assert res.stop_reason == "interrupted"
    # in-flight calls finished in the grace period; nothing accepted is left unrecorded
    assert res.completed == len(sim.sim.submits)
    assert res.skipped > 0
    resumed = await arun(
        None,
        workspace=tmp_path,
        run_id=res.run_id,
        resume=True,
        progress=False,
        provider_options=_opts(sim),
        no_cache=True,
    )
    assert resumed.completed == resumed.planned
    _assert_paid_once(sim.sim, tmp_path)


def test_provider_limit_parsing():
    assert parse_provider_limits("wavespeed=100/500,stability=10") == {
        "wavespeed": ProviderLimits(100, 500.0),
        "stability": ProviderLimits(10, None),
    }
    with pytest.raises(InvalidInputError, match="NAME=CONCURRENT"):
        parse_provider_limits("wavespeed:100")


def test_run_has_the_signature_of_arun():
    assert list(inspect.signature(run).parameters.values()) == list(inspect.signature(arun).parameters.values())


def test_default_provider_limits_come_from_the_catalogue(catalog, monkeypatch):
    """The account levels and default limits are catalogue data; the engine only reads them."""
    ws = catalog.provider("wavespeed")
    assert set(ws.levels) == {"bronze", "silver", "gold", "ultra"} and ws.level_env == "EVALKIT_WAVESPEED_LEVEL"
    monkeypatch.delenv("EVALKIT_WAVESPEED_LEVEL", raising=False)
    bronze = ws.levels["bronze"]
    assert default_provider_limits(ws, "https://api.wavespeed.ai") == ProviderLimits(
        bronze.max_concurrent, bronze.images_per_minute
    )
    monkeypatch.setenv("EVALKIT_WAVESPEED_LEVEL", "Silver")
    silver = default_provider_limits(ws, "https://api.wavespeed.ai")
    assert silver == ProviderLimits(ws.levels["silver"].max_concurrent, ws.levels["silver"].images_per_minute)
    monkeypatch.setenv("EVALKIT_WAVESPEED_LEVEL", "platinum")  # unknown: the default level
    assert default_provider_limits(ws, None) == ProviderLimits(bronze.max_concurrent, bronze.images_per_minute)
    # a local simulator gets no limits; a provider the catalogue says nothing about gets none either
    assert default_provider_limits(ws, "http://127.0.0.1:8080") == ProviderLimits()
    assert default_provider_limits(catalog.provider("no-such-provider"), None) == ProviderLimits()
    st = catalog.provider("stability")
    assert default_provider_limits(st, None) == ProviderLimits(st.max_concurrent, st.images_per_minute)
    assert default_provider_limits(catalog.provider("local"), None).max_concurrent >= 1
    for name in ("wavespeed", "stability", "huggingface", "local"):  # every fact says where it came from
        assert catalog.provider(name).facts and catalog.provider(name).origin.endswith(f"{name}.toml")


# ---- the CLI in a separate process: --json, kill -9 and resume, Ctrl-C -----------------------------


def _cli_env(sim) -> dict:
    env = dict(os.environ)
    env.update(
        WAVESPEED_BASE_URL=sim.base_url,
        WAVESPEED_API_KEY=sim.api_key,
        TQDM_DISABLE="1",
        EVALKIT_POLL_INITIAL_S="0.02",
        EVALKIT_POLL_MIN_INTERVAL_S="0.05",
        EVALKIT_POLL_MAX_INTERVAL_S="0.1",
    )
    return env


def _cli(args, env, timeout=180):
    return subprocess.run(
        [sys.executable, "-m", "evalkit", *args], capture_output=True, text=True, env=env, timeout=timeout
    )


@pytest.mark.e2e
def test_cli_run_json_runs_and_export(wavespeed_sim, tmp_path):
    env = _cli_env(wavespeed_sim)
    ws = str(tmp_path / "ws")
    proc = _cli(["run", "--suite", "smoke", "--models", "qwen-edit,image-zoom-out", "--workspace", ws, "--json"], env)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert set(summary) >= {"run_id", "planned", "completed", "failed", "skipped", "cost_usd", "wall_s"}
    assert summary["completed"] == summary["planned"] == 2 and summary["cost_usd"] == pytest.approx(0.04)
    proc = _cli(["runs", "--workspace", ws, "--json"], env)
    assert json.loads(proc.stdout)[0]["run_id"] == summary["run_id"]
    calls = Workspace(ws, create=False).calls(summary["run_id"])
    assert (calls.status == "completed").sum() == 2 and len(calls) >= 2  # plus the pairs that do not apply
    expected = calls.set_index("call_id")[["model_id", "status", "cost_usd", "output_sha256"]].sort_index()
    readers = {
        "csv": pd.read_csv,
        "parquet": pd.read_parquet,
        "jsonl": lambda path: pd.read_json(path, orient="records", lines=True),
    }
    for fmt, read in readers.items():
        out = tmp_path / f"calls.{fmt}"
        proc = _cli(["export", summary["run_id"], "--format", fmt, "--out", str(out), "--workspace", ws], env)
        assert proc.returncode == 0, proc.stderr
        assert out.stat().st_size > 0
        # the file holds the run's calls, one row each, with the values the workspace recorded
        exported = read(out).set_index("call_id")[expected.columns].sort_index()
        pd.testing.assert_frame_equal(exported, expected, check_dtype=False)
    proc = _cli(["run", "--suite", "no-such-suite", "--workspace", ws], env)
    assert proc.returncode == 2 and "no-such-suite" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.crash
def test_kill_9_mid_flight_then_resume_pays_once_and_loses_nothing(wavespeed_sim_factory, tmp_path):
    sim = wavespeed_sim_factory(fixed_latency_ms=400, max_concurrent=1000)
    env = _cli_env(sim)
    ws = str(tmp_path / "ws")
    args = [
        "run",
        "--suite",
        "smoke",
        "--repeats",
        "4",
        "--models",
        WS_MODELS,
        "--workspace",
        ws,
        "--run-id",
        "crashy",
        "--concurrency",
        "6",
        "--no-cache",
        "--json",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "evalkit", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 60

    def recorded() -> int:
        try:
            return len(Workspace(ws, create=False).call_rows("crashy", ["completed"]))
        except Exception:  # the run has not created its workspace yet
            return 0

    while recorded() < 4 and time.monotonic() < deadline:  # some done, more in flight
        time.sleep(0.05)
    proc.kill()
    proc.wait(10)
    accepted_before = len(sim.sim.submits)
    completed_before = {r["call_id"]: r["output_sha256"] for r in Workspace(ws).call_rows("crashy", ["completed"])}
    assert 0 < len(completed_before) < accepted_before + 1
    done = _cli(["run", "--resume", "crashy", "--workspace", ws, "--json"], env, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = Workspace(ws).call_rows("crashy")
    by_id = {r["call_id"]: r for r in rows}
    # nothing completed before the kill was lost or redone
    for cid, sha in completed_before.items():
        assert by_id[cid]["output_sha256"] == sha
        assert Path(Workspace(ws).blob_path(sha, by_id[cid]["output_ext"])).exists()
    # the server never saw the same call twice
    _assert_paid_once(sim.sim, ws)
    statuses = Counter(r["status"] for r in rows)
    # every accepted job ended completed; at most the calls caught mid-send are unknown (never re-sent)
    assert statuses["completed"] + statuses["unknown"] == sum(1 for r in rows if r["status"] != "not_applicable")
    # each accepted job is a completed call, except at most one per call caught mid-send (left unknown)
    assert statuses["completed"] <= len(sim.sim.submits) <= statuses["completed"] + statuses["unknown"]


@pytest.mark.crash
def test_ctrl_c_stops_submitting_and_keeps_results(wavespeed_sim_factory, tmp_path):
    sim = wavespeed_sim_factory(fixed_latency_ms=300, max_concurrent=1000)
    env = _cli_env(sim)
    ws = str(tmp_path / "ws")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "evalkit",
            "run",
            "--suite",
            "core",
            "--models",
            WS_MODELS,
            "--workspace",
            ws,
            "--run-id",
            "ctrlc",
            "--concurrency",
            "4",
            "--no-cache",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while len(sim.sim.submits) < 6 and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    rows = Workspace(ws).call_rows("ctrlc")
    statuses = Counter(r["status"] for r in rows)
    assert statuses["completed"] == len(sim.sim.submits)  # in-flight calls finished in the grace period
    assert statuses["planned"] > 0 and b"--resume ctrlc" in out


async def test_an_unexpected_provider_exception_never_pays_twice(wavespeed_sim, tmp_path, monkeypatch):
    """A library surprise after the job was accepted leaves the call resumable; before it, unknown."""
    from evalkit.providers.wavespeed import WaveSpeedEditProvider

    real_outcome = WaveSpeedEditProvider._outcome

    async def boom(self, *a, **k):
        raise RuntimeError("a library surprise")

    monkeypatch.setattr(WaveSpeedEditProvider, "_outcome", boom)  # after submit + polling
    res = await _run(wavespeed_sim, tmp_path, models="qwen-edit", run_id="surprise")
    assert res.pending == 1 and res.failed == 0 and len(wavespeed_sim.sim.submits) == 1
    monkeypatch.setattr(WaveSpeedEditProvider, "_outcome", real_outcome)
    done = await _run(wavespeed_sim, tmp_path, models="qwen-edit", run_id="surprise")
    assert done.completed == 1 and len(wavespeed_sim.sim.submits) == 1  # collected, not re-submitted

    async def boom_submit(self, *a, **k):
        raise RuntimeError("before anything")

    monkeypatch.setattr(WaveSpeedEditProvider, "_submit", boom_submit)
    res = await _run(wavespeed_sim, tmp_path, models="qwen-edit", run_id="surprise-2", no_cache=True)
    rows = Workspace(tmp_path).call_rows("surprise-2", ["unknown"])
    assert res.unknown == 1 and "RuntimeError" in rows[0]["error_message"]
