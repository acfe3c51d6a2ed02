"""evalkit.store.retention (`evalkit gc`): output images of older runs are deleted unless a kept run or a case
uses them; every row, metric and score stays (trends still work); dry runs delete nothing; a running run
stops it; a collected run's report says so."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from evalkit.decide.trends import trends
from evalkit.errors import InvalidInputError, WorkspaceError
from evalkit.store import SCHEMA_VERSION, Workspace
from evalkit.store.retention import collect_outputs
from tests.plugins.histories import Behaviour, write_history

ROOT = Path(__file__).resolve().parents[2]
B = Behaviour(success=1.0)
MODELS = {"m1": B, "m2": B.but(latency_ms=3000)}


def _outputs(ws: Workspace, run_id: str) -> list[Path]:
    calls = ws.calls(run_id)
    return [Path(p) for p in calls["output_path"].dropna()]


@pytest.fixture
def ws(tmp_path) -> Workspace:
    ws = Workspace(tmp_path / "ws")
    write_history(ws, "nightly", [MODELS] * 5, cases=6, outputs=True, seed=1)
    write_history(ws, "weekly", [MODELS] * 2, cases=6, outputs=True, seed=2)
    ws.put_cases("nightly-000", [{"case_id": "c0", "operation": "general_edit", "input_sha256": []}])
    return ws


def test_older_runs_lose_their_outputs_and_keep_every_row(ws):
    before_calls = {r: len(ws.calls(r)) for r in ws.runs()["run_id"]}
    before_scores = {r: len(ws.scores(r)) for r in ws.runs()["run_id"]}
    res = collect_outputs(ws, keep_last=2)
    assert res.collected == ["nightly-000", "nightly-001", "nightly-002"]
    assert set(res.kept) == {"nightly-003", "nightly-004", "weekly-000", "weekly-001"}
    assert res.blobs == 3 * 2 * 6 and res.bytes > 0 and not res.dry_run
    assert all(not p.exists() for r in res.collected for p in _outputs(ws, r))
    assert all(p.exists() for r in res.kept for p in _outputs(ws, r))
    assert {r: len(ws.calls(r)) for r in ws.runs()["run_id"]} == before_calls
    assert {r: len(ws.scores(r)) for r in ws.runs()["run_id"]} == before_scores
    assert ws.get_run("nightly-000")["outputs_collected_at"] and not ws.get_run("nightly-004")["outputs_collected_at"]
    assert "freed" in res.describe() and "nightly-000" in res.describe()
    assert [r.run_id for r in trends(ws, "nightly", n_boot=50).runs] == [f"nightly-{i:03d}" for i in range(5)]
    again = collect_outputs(ws, keep_last=2)
    assert again.blobs == 0  # nothing left to free
    assert ws.schema_version == SCHEMA_VERSION


def test_dry_run_deletes_nothing_and_suite_and_pins_narrow_it(ws):
    dry = collect_outputs(ws, keep_last=1, suite="weekly", dry_run=True)
    assert dry.collected == ["weekly-000"] and dry.blobs == 12 and "would free" in dry.describe()
    assert all(p.exists() for p in _outputs(ws, "weekly-000"))
    assert not ws.get_run("weekly-000")["outputs_collected_at"]
    pinned = collect_outputs(ws, keep_last=0, suite="nightly", keep_outputs_of=["nightly-002"])
    assert "nightly-002" not in pinned.collected and len(pinned.collected) == 4
    assert all(p.exists() for p in _outputs(ws, "nightly-002"))
    assert all(p.exists() for p in _outputs(ws, "weekly-001"))  # another suite: untouched


def test_a_blob_a_kept_run_shares_is_kept(ws):
    old = ws.calls("nightly-000").iloc[0]
    new = ws.calls("nightly-004").iloc[0]
    ws.finish_call(new["call_id"], {"output_sha256": old["output_sha256"], "output_ext": old["output_ext"]})
    res = collect_outputs(ws, keep_last=1, suite="nightly")
    assert res.shared == 1 and Path(old["output_path"]).exists()


def test_bad_requests_and_a_running_run_stop_it(ws):
    with pytest.raises(InvalidInputError, match="no run 'nope'"):
        collect_outputs(ws, keep_last=1, keep_outputs_of=["nope"])
    with pytest.raises(InvalidInputError, match="no run of suite"):
        collect_outputs(ws, keep_last=1, suite="monthly")
    with ws.run_lock("nightly-004"), pytest.raises(WorkspaceError, match="being executed"):
        collect_outputs(ws, keep_last=1)
    assert all(p.exists() for p in _outputs(ws, "nightly-000"))


def test_a_collected_runs_report_says_so(ws):
    from evalkit.report.sections import caveats, prepare_report

    collect_outputs(ws, keep_last=1, suite="nightly")
    notes = caveats(prepare_report(ws, "nightly-000"))
    assert any("deleted by `evalkit gc`" in n for n in notes)
    assert not any("evalkit gc" in n for n in caveats(prepare_report(ws, "nightly-004")))


@pytest.mark.e2e
def test_cli_prints_what_it_frees(ws):
    env = {**os.environ, "COLUMNS": "100", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "evalkit", "gc", "-w", str(ws.path), "--keep-last", "3"]
    dry = subprocess.run([*cmd, "--dry-run"], capture_output=True, text=True, env=env)
    assert dry.returncode == 0, dry.stderr
    assert "would free" in dry.stdout and "24 output image(s) of 2 run(s)" in dry.stdout
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert res.returncode == 0 and "freed" in res.stdout
    bad = subprocess.run([*cmd, "--suite", "nope"], capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and "no run of suite" in bad.stderr
