"""Secrets: keys come from the environment only and never appear in a log line, an exception, a repr,
a database row, a notebook, a report or anything printed — checked across the whole CLI flow."""

from __future__ import annotations

import base64
import os
import pickle
import subprocess
import sys

import pytest

from evalkit.credentials import Secret, key_from_env, redact
from evalkit.errors import MissingKeyError
from evalkit.sim.huggingface import HuggingFaceSim
from evalkit.sim.judge import start_judge_sim
from evalkit.sim.server import start_in_thread
from evalkit.sim.stability import StabilitySim
from evalkit.sim.stack import LOCAL_POLL
from evalkit.sim.wavespeed import start_wavespeed_sim

CANARY = {
    "WAVESPEED_API_KEY": "ws-CANARY-e2e-71c3a9f0b5d2",
    "STABILITY_API_KEY": "sk-CANARY-e2e-2f8b6d4a1c9e",
    "HF_TOKEN": "hf_CANARYe2e5a1c7e3b9d0f",
    "EVALKIT_JUDGE_API_KEY": "sk-CANARY-e2e-judge-9d3f1",
}


def test_secret_never_prints_itself():
    s = Secret("sk-abcdef123456", "WAVESPEED_API_KEY")
    assert "sk-abcdef123456" not in repr(s) and "sk-abcdef123456" not in str(s) and "sk-abcdef123456" not in f"{s}"
    assert s.reveal() == "sk-abcdef123456"
    with pytest.raises(TypeError):
        pickle.dumps(s)


def test_redact_scrubs_known_keys_and_bearer_tokens(monkeypatch):
    monkeypatch.setenv("WAVESPEED_API_KEY", "ws-live-0123456789")
    text = "error: Authorization: Bearer ws-live-0123456789 / echo ws-live-0123456789 / Bearer other-token-xyz"
    out = redact(text)
    assert "ws-live-0123456789" not in out and "other-token-xyz" not in out and out.count("***") == 3


def test_missing_key_names_the_variable(monkeypatch):
    monkeypatch.delenv("STABILITY_API_KEY", raising=False)
    with pytest.raises(MissingKeyError, match="STABILITY_API_KEY") as info:
        key_from_env("STABILITY_API_KEY", provider="stability")
    assert "environment" in str(info.value)


def _encodings(value: str) -> list[bytes]:
    """The key as it could appear in a file: raw, UTF-16 (SQLite can store it), base64 (notebooks embed it)."""
    raw = value.encode()
    return [raw, value.encode("utf-16-le"), base64.b64encode(raw).rstrip(b"=")[:-2]]


#: the CLI with every logger at DEBUG on stderr (a subprocess's log lines never reach pytest's caplog)
LOGGED_CLI = (
    "import logging, sys; logging.basicConfig(level=logging.DEBUG, stream=sys.stderr, force=True); "
    "sys.argv[0] = 'evalkit'; from evalkit.cli import main; main()"
)


@pytest.mark.notebook
def test_whole_cli_flow_with_canary_keys_leaks_nowhere(tmp_path):
    ws_sim = start_wavespeed_sim(api_key=CANARY["WAVESPEED_API_KEY"], time_scale=0.0005, max_concurrent=1000)
    st = StabilitySim(api_key=CANARY["STABILITY_API_KEY"])
    st_server = start_in_thread(st.app)
    hf = HuggingFaceSim(token=CANARY["HF_TOKEN"])
    hf_server = start_in_thread(hf.app)
    judge = start_judge_sim(api_key=CANARY["EVALKIT_JUDGE_API_KEY"])
    try:
        env = dict(
            os.environ,
            TQDM_DISABLE="1",
            **CANARY,
            **LOCAL_POLL,
            WAVESPEED_BASE_URL=ws_sim.base_url,
            STABILITY_BASE_URL=st_server.base_url,
            HF_INFERENCE_ENDPOINT=hf_server.base_url,
            EVALKIT_JUDGE_BASE_URL=judge.base_url,
            EVALKIT_JUDGE_MODEL=judge.sim.model,
        )
        ws = str(tmp_path / "ws")

        def cli(*args: str) -> subprocess.CompletedProcess:
            proc = subprocess.run(
                [sys.executable, "-c", LOGGED_CLI, *args, "--workspace", ws],
                capture_output=True,
                text=True,
                env=env,
                timeout=600,
                cwd=tmp_path,
            )
            assert proc.returncode == 0, proc.stderr[-3000:]
            printed.append(proc.stdout + proc.stderr)
            return proc

        printed: list[str] = []
        import json

        run = json.loads(cli("run", "--suite", "smoke", "--models", "all", "--repeats", "2", "--json").stdout)
        assert run["completed"] > 0 and run["failed"] == 0
        cli("score", run["run_id"], "--judge", "--pairwise")
        cli("tiers", run["run_id"], "--out", str(tmp_path / "tiers.json"))
        cli("export", run["run_id"], "--format", "jsonl", "--out", str(tmp_path / "calls.jsonl"))
        cli("report", run["run_id"], "--out", str(tmp_path / "report"))
        # every provider was really called with its key (so a leak had the chance to happen)
        assert ws_sim.sim.submits and st.requests and hf.requests and judge.sim.requests
    finally:
        for stop in (ws_sim.stop, st_server.stop, hf_server.stop, judge.stop):
            stop()
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.suffix == ".html" for p in files) and any(p.name.endswith(".sqlite") for p in files)
    for path in files:
        data = path.read_bytes()
        for name, value in CANARY.items():
            for form in _encodings(value):
                assert form not in data, f"{name} leaked into {path.relative_to(tmp_path)}"
    everything_printed = "\n".join(printed)
    # the debug log really was captured: httpx logs each request it sends (a leak had a stream to land in)
    assert everything_printed.count("HTTP Request: POST") >= len(ws_sim.sim.submits)
    for value in CANARY.values():
        assert value not in everything_printed
