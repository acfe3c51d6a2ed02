"""Crash suite: ``kill -9`` the CLI many times over ONE run, resume after each, and prove nothing was lost or
paid twice.

The run (``python -m evalkit run … --run-id crashy``) talks to a local WaveSpeed server started in this
process, with slow responses at a steady rate to widen every window. Each kill lands at a chosen kind
of moment, in an order and with delays drawn from a seeded RNG:

* ``startup``            — a few ms after the run took its lock: copying inputs, inserting planned calls;
* ``mid-submit``         — the server has the submit request but has not answered (the client is blocked
                           sending/awaiting it: the call is ``submitting``, its fate unknown);
* ``just-accepted``      — right after the server answered a submit with a prediction id: the process
                           dies while recording that id (a store write) or just after;
* ``polling``            — while a poll request is in flight;
* ``mid-download``       — half-way through sending an output image;
* ``output-received``    — right after a whole output was sent: the process dies while moving it into the
                           blob store and writing the completed row (store writes);
* ``random``             — a random delay after start, whatever is happening then.

The kill at a server event is done by the server itself (an ASGI wrapper calls ``os.kill`` at that
moment), so it really lands in that window. After the final resume completes, the workspace must equal
an uninterrupted run of the same plan, and the server must have seen no accepted submit twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from evalkit.catalog import Catalog
from evalkit.credentials import Secret
from evalkit.engine.runner import arun
from evalkit.providers.wavespeed import PollSchedule
from evalkit.sim.server import start_in_thread
from evalkit.sim.wavespeed import SimConfig, SimHandle, WaveSpeedSim
from evalkit.store import Workspace
from tests.plugins.money import assert_every_call_accounted, assert_outputs_intact, reconcile_wavespeed, wait_until_idle

pytestmark = pytest.mark.crash

RUN_ID = "crashy"
MODELS = "provider:wavespeed"
REPEATS = 4
CONCURRENCY = 8
SEED = 20240917
#: the kill schedule: every window at least once, then random delays
KILLS = [
    "startup",
    "mid-submit",
    "just-accepted",
    "polling",
    "mid-download",
    "output-received",
    "random",
    "random",
    "mid-submit",
    "random",
]
#: the run quotes its prices (and every resume keeps that setting without being told again): the server bills each
#: model at a price of its own (price_seed), so a recorded catalogue price would fail reconcile_wavespeed
PLAN_ARGS = ["--suite", "smoke", "--models", MODELS, "--repeats", str(REPEATS), "--quote-prices"]
SIM_CONFIG = {
    "fixed_latency_ms": 250,
    "max_concurrent": 1000,
    "output_max_side": 512,
    "seed": 9,
    "catalog_drift": {"price_seed": 9},
}


class KillSwitch:
    """ASGI wrapper around the simulator: kills the run process at the first matching server event once armed."""

    #: moment -> (request kind, when): "request" = as the request arrives; "half" = after half of the body;
    #: "response" = after the whole response was sent
    MOMENTS = {
        "mid-submit": ("submit", "request"),
        "just-accepted": ("submit", "response"),
        "polling": ("poll", "request"),
        "mid-download": ("download", "half"),
        "output-received": ("download", "response"),
    }

    def __init__(self, app):
        self.app = app
        self._lock = threading.Lock()
        self._armed: tuple[str, str, int] | None = None
        self.fired = threading.Event()

    def arm(self, moment: str, pid: int) -> None:
        kind, when = self.MOMENTS[moment]
        self.fired.clear()
        with self._lock:
            self._armed = (kind, when, pid)

    def disarm(self) -> None:
        with self._lock:
            self._armed = None

    def _fire(self, kind: str, when: str) -> bool:
        with self._lock:
            if self._armed is None or self._armed[:2] != (kind, when):
                return False
            pid = self._armed[2]
            self._armed = None
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.fired.set()
        return True

    @staticmethod
    def _kind(scope) -> str:
        path, method = scope["path"], scope["method"]
        if path.startswith("/api/v3/predictions/"):
            return "poll"
        if path.startswith("/_sim/outputs/"):
            return "download"
        if path.startswith("/api/v3/") and method == "POST" and not path.startswith("/api/v3/media"):
            return "submit"
        return "other"

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        kind = self._kind(scope)
        if kind == "submit":
            body = b""
            more = True
            while more:  # read the whole request first: "mid-submit" means the server has it all
                message = await receive()
                body += message.get("body", b"")
                more = message.get("more_body", False)
            self._fire(kind, "request")
            replay = [{"type": "http.request", "body": body, "more_body": False}]

            async def receive():  # noqa: F811 - hand the request we read on to the simulator
                return replay.pop() if replay else {"type": "http.disconnect"}
        elif kind == "poll":
            self._fire(kind, "request")

        async def send_watched(message):
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                body = message.get("body", b"")
                if (
                    kind == "download"
                    and len(body) > 1
                    and self._armed is not None
                    and self._armed[:2] == (kind, "half")
                ):
                    await send({"type": "http.response.body", "body": body[: len(body) // 2], "more_body": True})
                    self._fire(kind, "half")
                    return  # the rest never comes: the client is dead
                await send(message)
                self._fire(kind, "response")
                return
            await send(message)

        await self.app(scope, receive, send_watched)


def start_sim(catalog: Catalog, **config) -> tuple[SimHandle, KillSwitch]:
    sim = WaveSpeedSim(catalog, SimConfig(**config))
    switch = KillSwitch(sim.app)
    server = start_in_thread(switch)
    return SimHandle(sim=sim, server=server), switch


def cli_env(handle: SimHandle) -> dict:
    env = dict(os.environ)
    env.update(
        WAVESPEED_BASE_URL=handle.base_url,
        WAVESPEED_API_KEY=handle.api_key,
        TQDM_DISABLE="1",
        EVALKIT_POLL_INITIAL_S="0.02",
        EVALKIT_POLL_MIN_INTERVAL_S="0.05",
        EVALKIT_POLL_MAX_INTERVAL_S="0.1",
    )
    return env


def lock_owner(ws: Path) -> int | None:
    try:
        return int((ws / f".run-{RUN_ID}.lock").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def snapshot(ws: Path) -> dict:
    """What a kill left behind: statuses, integrity, and the completed rows' files."""
    con = sqlite3.connect(ws / "evalkit.sqlite")
    try:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        statuses = Counter(dict(con.execute("SELECT status, COUNT(*) FROM calls GROUP BY status").fetchall()))
        done = con.execute("SELECT call_id, output_sha256, output_ext FROM calls WHERE status = 'completed'").fetchall()
    finally:
        con.close()
    for call_id, sha, ext in done:  # a completed row never exists without its output file
        assert (ws / "blobs" / sha[:2] / f"{sha}.{ext}").is_file(), f"{call_id}: completed but its output is missing"
    return {"statuses": statuses, "completed": {c for c, _, _ in done}}


def test_kill_9_many_times_over_one_run_then_resume_equals_an_uninterrupted_run(catalog, tmp_path):
    rng = random.Random(SEED)
    schedule = KILLS[:1] + rng.sample(KILLS[1:], len(KILLS) - 1)  # startup first (only the first start has one)
    handle, switch = start_sim(catalog, **SIM_CONFIG)
    reference, _ = start_sim(catalog, **SIM_CONFIG)
    try:
        handle.sim.add_fault("slow_response", rate=0.3, delay_s=0.3)  # widens submit, poll and download windows
        env = cli_env(handle)
        ws = tmp_path / "ws"
        kills: list[dict] = []
        submitting_at_kills = 0
        completed_before: dict[str, str] = {}
        for i, moment in enumerate(schedule):
            args = ["run", *PLAN_ARGS, "--run-id", RUN_ID] if i == 0 else ["run", "--resume", RUN_ID]
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "evalkit",
                    *args,
                    "--workspace",
                    str(ws),
                    "--concurrency",
                    str(CONCURRENCY),
                    "--json",
                ],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            try:
                deadline = time.monotonic() + 60
                while lock_owner(ws) != proc.pid and proc.poll() is None:  # the run is executing
                    assert time.monotonic() < deadline, "the run never started"
                    time.sleep(0.005)
                if moment == "startup":
                    time.sleep(rng.uniform(0.0, 0.05))
                    proc.kill()
                elif moment == "random":
                    time.sleep(rng.uniform(0.2, 1.5))
                    proc.kill()
                else:
                    time.sleep(rng.uniform(0.0, 0.4))
                    switch.arm(moment, proc.pid)
                    if not switch.fired.wait(15):
                        switch.disarm()
                        proc.kill()
                        moment += " (no such event in 15 s: killed on a timer)"
                out, err = proc.communicate(timeout=30)
            finally:
                switch.disarm()
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            if proc.returncode == 0:  # finished before the kill: nothing left to interrupt
                break
            assert proc.returncode == -signal.SIGKILL, err.decode()[-2000:]
            snap = snapshot(ws)
            # nothing completed before a kill is ever lost or redone
            assert set(completed_before) <= snap["completed"]
            with Workspace(ws, create=False) as store:
                completed_before = {r["call_id"]: r["output_sha256"] for r in store.call_rows(RUN_ID, ["completed"])}
            submitting_at_kills += snap["statuses"].get("submitting", 0)
            kills.append({"moment": moment, **snap["statuses"]})
        assert len(kills) >= 6, f"the run finished after {len(kills)} kills: {kills}"

        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "evalkit",
                "run",
                "--resume",
                RUN_ID,
                "--workspace",
                str(ws),
                "--concurrency",
                str(CONCURRENCY),
                "--json",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        summary = json.loads(done.stdout)
        assert "Traceback" not in done.stderr
        wait_until_idle(handle.sim)

        # the same plan, uninterrupted, against an identical server
        ref_ws = tmp_path / "reference"
        opts = {
            "wavespeed": {
                "base_url": reference.base_url,
                "api_key": Secret(reference.api_key),
                "poll": PollSchedule(initial_delay_s=0.02, min_interval_s=0.05, max_interval_s=0.1),
            }
        }
        asyncio.run(
            arun(
                "smoke",
                models=MODELS,
                repeats=REPEATS,
                concurrency=CONCURRENCY,
                workspace=ref_ws,
                run_id=RUN_ID,
                progress=False,
                provider_options=opts,
                quote_prices=True,
            )
        )

        with Workspace(ws, create=False) as store, Workspace(ref_ws, create=False) as ref_store:
            rows, ref_rows = store.call_rows(RUN_ID), ref_store.call_rows(RUN_ID)
        by_id = {r["call_id"]: r for r in rows}
        ref = {r["call_id"]: r for r in ref_rows}
        assert len(by_id) == len(rows) and by_id.keys() == ref.keys()  # same calls, each exactly once
        statuses = Counter(r["status"] for r in rows)
        # everything ran; only calls caught mid-send by a kill are unknown (never re-sent)
        assert set(statuses) <= {"completed", "unknown", "not_applicable"}, (statuses, kills)
        # (fewer: a resume finds a killed submit the server did accept in its prediction history and collects it)
        assert statuses["unknown"] <= submitting_at_kills, (statuses, kills)
        assert statuses["unknown"] <= len(kills) * CONCURRENCY
        assert summary["unknown"] == statuses["unknown"] and summary["completed"] == statuses["completed"]
        for cid, r in by_id.items():
            want = ref[cid]
            if want["status"] == "not_applicable":
                assert r["status"] == "not_applicable"
                continue
            assert want["status"] == "completed"
            assert (r["fingerprint"], r["seed"], r["params"]) == (want["fingerprint"], want["seed"], want["params"]), (
                cid
            )
            if r["status"] == "completed":  # the very output an uninterrupted run gets, at the same price
                assert (r["output_sha256"], r["width"], r["height"], r["cost_usd"]) == (
                    want["output_sha256"],
                    want["width"],
                    want["height"],
                    want["cost_usd"],
                ), cid
        for cid, sha in completed_before.items():
            assert by_id[cid]["output_sha256"] == sha

        assert_every_call_accounted(rows)
        assert assert_outputs_intact(ws, rows) == statuses["completed"]
        rec = reconcile_wavespeed(handle, ws)  # ids unique, orphans ≤ unknown per model, bill = recorded + orphans
        assert len(handle.sim.submits) == statuses["completed"] + len(rec.orphans)
        assert len(rec.orphans) <= statuses["unknown"]
        assert not list((ws / "spool" / RUN_ID).glob("*")), "half-downloaded files were left in the spool"
        assert not (ws / f".run-{RUN_ID}.lock").exists()
        print(
            f"\n{len(kills)} kills: {kills}\nfinal: {dict(statuses)}, orphans {len(rec.orphans)}, "
            f"billed ${rec.billed_usd:.3f} = recorded ${rec.recorded_usd:.3f} + orphans ${rec.orphan_billed_usd:.3f}; "
            f"leftover temp blobs: {len(list((ws / 'blobs').rglob('.tmp-*')))}"
        )
    finally:
        handle.stop()
        reference.stop()


def test_kill_9_during_submits_then_one_resume_settles_them_from_the_history(catalog, tmp_path):
    """The process dies with several submits in flight: the server accepted some (it had their bodies) and
    refused others (503). One ``--resume`` finds the accepted ones in the prediction history and collects them,
    proves the refused ones unaccepted and sends them again: nothing stays unknown, nothing is paid twice."""
    handle, _switch = start_sim(catalog, **SIM_CONFIG)
    try:
        handle.sim.add_fault("submit_5xx", rate=0.4)  # refused at once (nothing created)
        # the others are created, then their answer waits: accepted submits pile up in flight
        handle.sim.add_fault("submit_timeout", rate=1.0, delay_s=3.0)
        env = cli_env(handle)
        ws = tmp_path / "ws"
        proc = subprocess.Popen(
            [sys.executable, "-m", "evalkit", "run", *PLAN_ARGS, "--run-id", RUN_ID, "--workspace", str(ws)]
            + ["--concurrency", str(CONCURRENCY), "--json"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
                assert time.monotonic() < deadline, "no submits piled up"
                if (ws / "evalkit.sqlite").exists():
                    with contextlib.suppress(sqlite3.Error):
                        con = sqlite3.connect(ws / "evalkit.sqlite", timeout=0.1)
                        try:
                            n = con.execute("SELECT COUNT(*) FROM calls WHERE status = 'submitting'").fetchone()[0]
                        finally:
                            con.close()
                        if n >= CONCURRENCY // 2 and len(handle.sim.submits) >= CONCURRENCY // 2:
                            break  # the server has created them; their answers are still on the way
                time.sleep(0.01)
            proc.kill()
            proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == -signal.SIGKILL
        killed_mid_submit = snapshot(ws)["statuses"].get("submitting", 0)
        assert killed_mid_submit >= CONCURRENCY // 2
        wait_until_idle(handle.sim)  # the server finishes creating (and running) what it accepted
        refused = handle.sim.faults.hits().get("submit_5xx", 0)
        handle.sim.clear_faults()
        with Workspace(ws, create=False) as store:
            rows_before = store.call_rows(RUN_ID)
        accepted_in_flight = len(handle.sim.submits) - sum(1 for r in rows_before if r["prediction_id"])

        env.update(EVALKIT_RECONCILE_SKEW_S="0.5", EVALKIT_RECONCILE_SETTLE_S="0.3", EVALKIT_RECONCILE_MAX_SUBMIT_S="3")
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "evalkit",
                "run",
                "--resume",
                RUN_ID,
                "--workspace",
                str(ws),
                "--json",
            ]
            + ["--concurrency", str(CONCURRENCY), "--settle-wait", "10"],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        summary = json.loads(done.stdout)
        wait_until_idle(handle.sim)
        assert summary["unknown"] == 0, summary
        assert accepted_in_flight >= CONCURRENCY // 2
        # every submit the server had accepted is found in its history; the rest are proven unaccepted and re-sent
        assert summary["reconciled"]["matched"] == accepted_in_flight and summary["reconciled"]["unknown"] == 0, summary
        if refused:
            assert summary["reconciled"]["resubmit"] >= 1, summary
        with Workspace(ws, create=False) as store:
            rows = store.call_rows(RUN_ID)
        assert not [r for r in rows if r["status"] in ("unknown", "submitting")]
        assert_every_call_accounted(rows)
        rec = reconcile_wavespeed(handle, ws)
        assert not rec.orphans  # every accepted submit belongs to exactly one call: none was sent twice
        assert abs(rec.billed_usd - rec.recorded_usd) < 0.005
    finally:
        handle.stop()
