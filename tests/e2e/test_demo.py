"""The README's main job, end to end in a separate process: `evalkit demo` → an offline HTML report from
a run that mixes WaveSpeed, Stability AI, Hugging Face and local models in one workspace."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from evalkit.store import Workspace

#: keys a user might have exported: the demo must not need, use, or write any of them
CANARIES = {
    "WAVESPEED_API_KEY": "ws-CANARY-demo-3b9f1c77e2",
    "STABILITY_API_KEY": "sk-CANARY-demo-a4e8d2c1f6",
    "HF_TOKEN": "hf_CANARYdemo7c2e9a4b1d",
    "EVALKIT_JUDGE_API_KEY": "sk-CANARY-judge-demo-5d1e8",
}


@pytest.mark.notebook
def test_demo_runs_every_provider_offline_and_writes_the_report(tmp_path):
    env = dict(os.environ, TQDM_DISABLE="1", **CANARIES)
    env.pop("WAVESPEED_BASE_URL", None)  # the demo starts its own local servers
    ws, out = tmp_path / "ws", tmp_path / "report"
    proc = subprocess.run(
        [sys.executable, "-m", "evalkit", "demo", "--suite", "smoke", "--workspace", str(ws), "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    html = out / "model_choice_report.html"
    assert html.exists() and f"report: {html}" in proc.stdout
    page = html.read_text(encoding="utf-8")
    assert "SIMULATED" in page and "Recommendations per tier" in page
    assert (out / "tier_defaults.json").exists()

    store = Workspace(ws, create=False)
    run_id = store.latest_run_id()
    calls = store.calls(run_id)
    done = calls[calls.status == "completed"]
    # one run, one workspace, every provider: WaveSpeed, Stability AI, Hugging Face and the local baselines
    assert set(done.provider) == {"wavespeed", "stability", "huggingface", "local"}
    assert store.get_run(run_id)["simulated"] == 1
    scores = store.scores(run_id)
    assert {"auto", "judge"} <= set(scores.source)
    store.close()

    # nothing the user exported leaks anywhere: workspace (database and WAL included), report, output
    for path in (p for p in tmp_path.rglob("*") if p.is_file()):
        data = path.read_bytes()
        for name, value in CANARIES.items():
            assert value.encode() not in data, f"{name} leaked into {path.relative_to(tmp_path)}"
    for value in CANARIES.values():
        assert value not in proc.stdout and value not in proc.stderr


@pytest.mark.e2e
@pytest.mark.slow
def test_the_demo_on_core_decides_most_operations_in_the_standard_tier(tmp_path):
    """Issue 23: the bundled suite is big enough to decide — the demo's standard tier reaches a default (`ok`) for
    at least 5 of the catalogue's operations, with the judge's noise measured (two passes)."""
    import json

    from evalkit.catalog import OPERATIONS

    env = dict(os.environ, TQDM_DISABLE="1")
    env.pop("WAVESPEED_BASE_URL", None)
    ws, out = tmp_path / "ws", tmp_path / "report"
    proc = subprocess.run(
        [sys.executable, "-m", "evalkit", "demo", "--workspace", str(ws), "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    tiers = json.loads((out / "tier_defaults.json").read_text())
    assert tiers["simulated"] is True
    standard = tiers["tiers"]["standard"]["operations"]
    decided = sorted(op for op, d in standard.items() if d["status"] == "ok" and d["default"])
    assert set(standard) == set(OPERATIONS)
    assert len(decided) >= 5, {op: d["status"] for op, d in standard.items()}
    assert all(standard[op].get("judge_noise_sd") is not None for op in decided)
