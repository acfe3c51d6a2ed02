"""The run lock follows its process: a live owner on this host keeps it whatever its age, a dead one loses
it, a reused pid is told from its owner, another host's lock lasts until a long timeout, and `evalkit runs`
names the holder."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from evalkit.errors import WorkspaceError
from evalkit.store import Workspace
from evalkit.store._locks import OTHER_HOST_STALE_AFTER_S, _hostname, _process_start, lock_is_stale, read_lock

ROOT = Path(__file__).resolve().parents[2]
DAY = 24 * 3600.0


def _write_lock(ws: Workspace, run_id: str, pid: int, since: float, host: str | None, start: str | None = None):
    lines = [str(pid), repr(since)] + ([host] if host is not None else []) + ([start] if start is not None else [])
    path = ws.path / f".run-{run_id}.lock"
    path.write_text("\n".join(lines) + "\n")
    return path


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_the_lock_records_pid_host_and_process_start(tmp_path):
    ws = Workspace(tmp_path)
    with ws.run_lock("r1"):
        holder = read_lock(tmp_path / ".run-r1.lock", "r1")
        assert holder is not None and holder.pid == os.getpid() and holder.hostname == _hostname()
        assert holder.process_start == _process_start(os.getpid())
        assert set(ws.lock_holders()) == {"r1"}
    assert ws.lock_holders() == {}


def test_a_live_owner_on_this_host_keeps_its_lock_whatever_its_age(tmp_path):
    ws = Workspace(tmp_path)
    lock = _write_lock(ws, "r1", os.getpid(), time.time() - 30 * DAY, _hostname(), _process_start(os.getpid()))
    assert not lock_is_stale(lock)
    with pytest.raises(WorkspaceError, match=f"pid {os.getpid()} on this host"):
        with ws.run_lock("r1"):
            pass
    assert lock.exists()


def test_a_lock_in_the_old_format_from_a_live_process_is_kept(tmp_path):
    ws = Workspace(tmp_path)
    lock = _write_lock(ws, "r1", os.getpid(), time.time() - 30 * DAY, None)  # "pid\nts\n" as before
    assert not lock_is_stale(lock)


def test_a_dead_owner_on_this_host_loses_its_lock_at_once(tmp_path):
    ws = Workspace(tmp_path)
    _write_lock(ws, "r1", _dead_pid(), time.time(), _hostname())
    with ws.run_lock("r1"):
        assert read_lock(tmp_path / ".run-r1.lock").pid == os.getpid()


def test_a_reused_pid_is_not_mistaken_for_the_owner(tmp_path):
    if _process_start(os.getpid()) is None:
        pytest.skip("no /proc on this system")
    ws = Workspace(tmp_path)
    lock = _write_lock(ws, "r1", os.getpid(), time.time(), _hostname(), "1")  # this pid, another start time
    assert lock_is_stale(lock)


def test_another_hosts_lock_is_stale_only_after_the_long_timeout(tmp_path):
    ws = Workspace(tmp_path)
    now = time.time()
    lock = _write_lock(ws, "r1", 1, now - 10 * 3600, "build-box-7")  # pid 1 exists here: must not matter
    assert not lock_is_stale(lock, now=now)
    with pytest.raises(WorkspaceError, match="pid 1 on build-box-7"):
        with ws.run_lock("r1"):
            pass
    assert lock_is_stale(lock, now=now + OTHER_HOST_STALE_AFTER_S)
    old = _write_lock(ws, "r2", _dead_pid(), now - OTHER_HOST_STALE_AFTER_S - 60, "build-box-7")
    assert lock_is_stale(old)
    with ws.run_lock("r2"):
        pass


def test_an_unreadable_lock_is_kept_for_a_minute_then_taken_over(tmp_path):
    ws = Workspace(tmp_path)
    lock = ws.path / ".run-r1.lock"
    lock.write_text("")  # its owner created it and has not written it yet
    assert not lock_is_stale(lock)
    old = time.time() - 120
    os.utime(lock, (old, old))
    assert lock_is_stale(lock)


@pytest.mark.e2e
def test_evalkit_runs_says_who_holds_a_lock(tmp_path):
    ws = Workspace(tmp_path)
    ws.create_run(
        "nightly-1",
        suite_name="smoke",
        suite_path=None,
        suite_fingerprint=None,
        catalog_fingerprint=None,
        models=["m"],
        repeats=1,
        budget_usd=None,
        config={},
    )
    env = {**os.environ, "COLUMNS": "100", "PYTHONPATH": str(ROOT)}
    with ws.run_lock("nightly-1"):
        res = subprocess.run(
            [sys.executable, "-m", "evalkit", "runs", "-w", str(tmp_path)], capture_output=True, text=True, env=env
        )
        as_json = subprocess.run(
            [sys.executable, "-m", "evalkit", "runs", "--json", "-w", str(tmp_path)],
            capture_output=True,
            text=True,
            env=env,
        )
    assert res.returncode == 0, res.stderr
    assert f"pid {os.getpid()} on this host" in res.stdout and "held by" in res.stdout
    assert max(len(line) for line in res.stdout.splitlines()) <= 100
    assert f"pid {os.getpid()}" in as_json.stdout
    after = subprocess.run(
        [sys.executable, "-m", "evalkit", "runs", "-w", str(tmp_path)], capture_output=True, text=True, env=env
    )
    assert "held by" not in after.stdout
