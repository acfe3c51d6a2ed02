"""kill -9 in the middle of sessions (issue 24), then ``--resume``: every session completes from its last completed
turn, no accepted body is paid twice, each later turn still edits its own model's previous output (checked at the
server), and the recorded cost equals the simulator's bill. Uses the crash suite's kill switch."""

from __future__ import annotations

import asyncio
import json
import random
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest

from evalkit.credentials import Secret
from evalkit.engine.runner import arun
from evalkit.providers.wavespeed import PollSchedule
from evalkit.store import Workspace
from tests.e2e.test_crash import cli_env, lock_owner, snapshot, start_sim
from tests.engine.test_sessions import assert_chained_at_the_server, write_session_suite
from tests.plugins.money import assert_every_call_accounted, reconcile_wavespeed, wait_until_idle

pytestmark = pytest.mark.crash

RUN_ID = "crashy"  # lock_owner() looks for this run's lock
MODELS = "qwen-edit,seededit-v3,step1x-edit,flux-kontext-pro"
SESSIONS = {
    "cat": ["Make the cat's fur blue", "Add a small red hat", "Make it night time"],
    "cup": ["Make the cup out of glass", "Add steam rising", "Warm evening light"],
    "cat-bg": ["Put the cat on a beach", "Add a palm tree on the left", "Make the sky pink"],
}
KILLS = ["just-accepted", "output-received", "polling", "mid-download", "random", "just-accepted"]
SIM_CONFIG = {"fixed_latency_ms": 200, "max_concurrent": 1000, "output_max_side": 256, "seed": 5}


def _cli(suite, ws, *, first: bool) -> list[str]:
    args = ["run", "--suite", str(suite), "--models", MODELS, "--run-id", RUN_ID] if first else ["run", RUN_ID]
    return [sys.executable, "-m", "evalkit", *args, "--workspace", str(ws), "--concurrency", "4", "--json"]


def test_kill_9_mid_session_then_resume_completes_every_session_paying_no_turn_twice(catalog, tmp_path):
    rng = random.Random(24)
    suite = write_session_suite(tmp_path / "sessions", SESSIONS, single=False)
    handle, switch = start_sim(catalog, **SIM_CONFIG)
    reference, _ = start_sim(catalog, **SIM_CONFIG)
    try:
        handle.sim.add_fault("slow_response", rate=0.3, delay_s=0.2)
        env = cli_env(handle)
        ws = tmp_path / "ws"
        kills: list[dict] = []
        completed_before: dict[str, str] = {}
        mid_session = 0
        for i, moment in enumerate(KILLS):
            cmd = _cli(suite, ws, first=i == 0)
            proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            try:
                deadline = time.monotonic() + 60
                while lock_owner(ws) != proc.pid and proc.poll() is None:
                    assert time.monotonic() < deadline, "the run never started"
                    time.sleep(0.005)
                if moment == "random":
                    time.sleep(rng.uniform(0.3, 1.5))
                    proc.kill()
                else:
                    time.sleep(rng.uniform(0.1, 0.6))
                    switch.arm(moment, proc.pid)
                    if not switch.fired.wait(15):
                        switch.disarm()
                        proc.kill()
                _out, err = proc.communicate(timeout=30)
            finally:
                switch.disarm()
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            if proc.returncode == 0:
                break
            assert proc.returncode == -signal.SIGKILL, err.decode()[-2000:]
            snap = snapshot(ws)
            assert set(completed_before) <= snap["completed"]  # nothing completed is lost or redone
            with Workspace(ws, create=False) as store:
                rows = store.call_rows(RUN_ID)
            completed_before = {r["call_id"]: r["output_sha256"] for r in rows if r["status"] == "completed"}
            # sessions the kill caught between their first and last turn
            by_chain = Counter(r["call_id"].split(".t")[0] + r["model_id"] for r in rows if r["status"] == "completed")
            mid_session += sum(1 for n in by_chain.values() if 0 < n < 3)
            kills.append({"moment": moment, **snap["statuses"]})
        assert len(kills) >= 4, kills
        assert mid_session > 0, f"no kill landed in the middle of a session: {kills}"

        done = subprocess.run(_cli(suite, ws, first=False), env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        summary = json.loads(done.stdout)
        wait_until_idle(handle.sim)

        # the same plan, uninterrupted, against an identical server
        opts = {
            "wavespeed": {
                "base_url": reference.base_url,
                "api_key": Secret(reference.api_key),
                "poll": PollSchedule(initial_delay_s=0.02, min_interval_s=0.05, max_interval_s=0.1),
            }
        }
        asyncio.run(
            arun(suite, models=MODELS.split(","), workspace=tmp_path / "ref", run_id=RUN_ID, progress=False,
                 provider_options=opts, concurrency=4)
        )  # fmt: skip

        with Workspace(ws, create=False) as store, Workspace(tmp_path / "ref", create=False) as ref_store:
            rows, ref_rows = store.call_rows(RUN_ID), ref_store.call_rows(RUN_ID)
        ref = {r["call_id"]: r for r in ref_rows}
        statuses = Counter(r["status"] for r in rows)
        # only a submit a kill caught mid-send may stay unknown; its session's later turns are then not reached
        assert set(statuses) <= {"completed", "unknown", "not_reached"}, (statuses, kills)
        assert statuses["not_reached"] <= 2 * statuses["unknown"]
        assert summary["completed"] == statuses["completed"]
        assert statuses["completed"] >= len(rows) - 3 * statuses["unknown"]
        for r in rows:
            if r["status"] == "completed":  # the very output an uninterrupted run gets, turn after turn
                assert r["output_sha256"] == ref[r["call_id"]]["output_sha256"], r["call_id"]
        for cid, sha in completed_before.items():
            assert next(r for r in rows if r["call_id"] == cid)["output_sha256"] == sha

        assert_every_call_accounted([r for r in rows if r["status"] != "not_reached"])
        rec = reconcile_wavespeed(handle, ws)  # no job claimed twice; billed = recorded + orphans (≤ unknown)
        assert len(rec.orphans) <= statuses["unknown"]
        assert rec.billed_usd == pytest.approx(rec.recorded_usd + rec.orphan_billed_usd)
        # no body accepted twice for one model (every turn's body differs: its prompt or its input)
        accepted = Counter((s.model_id, s.body_sha256) for s in handle.sim.submits)
        assert accepted.most_common(1)[0][1] == 1
        assert assert_chained_at_the_server(handle, rows) > 0
        print(f"\n{len(kills)} kills: {kills}\nfinal: {dict(statuses)}; {mid_session} sessions caught mid-way")
    finally:
        handle.stop()
        reference.stop()
