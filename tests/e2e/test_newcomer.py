"""A real user's first day (issue 13): one provider key, their own images, `--models all`, `evalkit doctor`,
`evalkit sim` for any client, and an account that runs dry mid-run."""

from __future__ import annotations

import base64
import io
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from PIL import Image
from typer.testing import CliRunner

from evalkit.catalog import Catalog
from evalkit.credentials import Secret
from evalkit.engine import arun
from evalkit.providers.availability import has_key, select_models
from evalkit.providers.wavespeed import PollSchedule
from evalkit.sim.wavespeed import start_wavespeed_sim
from evalkit.store import Workspace

pytestmark = pytest.mark.e2e  # the newcomer's whole first day: CLI subprocesses and local servers

ROOT = Path(__file__).resolve().parents[2]
ALL_KEYS = ("WAVESPEED_API_KEY", "STABILITY_API_KEY", "HF_TOKEN", "EVALKIT_JUDGE_API_KEY", "EVALKIT_SIM_API_KEY")
ALL_URLS = ("WAVESPEED_BASE_URL", "STABILITY_BASE_URL", "HF_INFERENCE_ENDPOINT", "EVALKIT_JUDGE_BASE_URL")
FAST_POLL = PollSchedule(initial_delay_s=0.01, factor=1.5, quick_polls=3, min_interval_s=0.02, max_interval_s=0.1)
NEWCOMER_KEY = "ws-newcomer-real-looking-key-4711"


def png_bytes(size=(64, 48), colour="red") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return buf.getvalue()


def only_wavespeed_key(monkeypatch: pytest.MonkeyPatch, key: str = NEWCOMER_KEY) -> None:
    for var in (*ALL_KEYS, *ALL_URLS):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("WAVESPEED_API_KEY", key)


@contextmanager
def sim_process(*args: str, env: dict[str, str]) -> Iterator[dict[str, str]]:
    """Start `python -m evalkit …` (a local server) and read the export lines it prints; yields their variables."""
    proc = subprocess.Popen(
        [sys.executable, "-m", *args, "--port", "0", "--fixed-latency-ms", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**env, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
    )
    try:
        exported: dict[str, str] = {}
        lines = []
        while "EVALKIT_POLL_INITIAL_S" not in exported:
            line = proc.stdout.readline()
            assert line, f"the server printed no export lines: {proc.stderr.read()}"
            lines.append(line)
            if line.startswith("export "):
                for k, v in re.findall(r"(\w+)=(\S+)", line.split("#", 1)[0]):
                    exported[k] = v
        exported["_printed"] = "".join(lines)
        yield exported
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
        exported["_stderr"] = err


# ---- `all` means the models you can call ------------------------------------------------------------


def test_all_means_the_models_you_can_call() -> None:
    cat = Catalog.load()
    sel = select_models(cat, "all", env={"WAVESPEED_API_KEY": "k"})
    assert {m.provider for m in sel.models} == {"wavespeed", "local"}
    assert sel.left_out == {"stability": "STABILITY_API_KEY", "huggingface": "HF_TOKEN"}
    assert "export STABILITY_API_KEY" in sel.note() and "export HF_TOKEN" in sel.note()
    # no key at all: the offline baselines still run
    assert {m.provider for m in select_models(cat, "all", env={}).models} == {"local"}
    # a key given in the provider options (the demo, tests) counts like one in the environment
    sel = select_models(cat, None, {"huggingface": {"token": "t"}}, env={})
    assert "huggingface" in {m.provider for m in sel.models} and "huggingface" not in sel.left_out
    # naming models is explicit: nothing is dropped here (the runner then reports the missing key)
    assert {m.provider for m in select_models(cat, "provider:stability", env={}).models} == {"stability"}
    assert select_models(cat, "qwen-edit,identity", env={}).left_out == {}
    assert has_key("some-third-party", env={})


def test_naming_a_provider_without_its_key_is_an_error_before_anything_is_written(monkeypatch, tmp_path) -> None:
    only_wavespeed_key(monkeypatch)
    res = CliRunner().invoke(
        __import__("evalkit.cli", fromlist=["app"]).app,
        ["run", "--suite", "smoke", "--models", "provider:stability", "-w", str(tmp_path / "ws")],
    )
    assert res.exit_code == 2 and "STABILITY_API_KEY" in res.output
    assert not (tmp_path / "ws").exists() or Workspace(tmp_path / "ws").runs().empty


# ---- the newcomer, end to end ------------------------------------------------------------------------


def test_newcomer_imports_a_csv_and_runs_all_against_the_local_server(monkeypatch, tmp_path) -> None:
    from evalkit.cli import app

    only_wavespeed_key(monkeypatch)
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "cat.png").write_bytes(png_bytes())
    (tmp_path / "photos" / "dog.png").write_bytes(png_bytes(colour="blue"))
    (tmp_path / "cases.csv").write_text(
        "image,prompt\n"
        "photos/cat.png,Put a red bow tie on the cat\n"
        "photos/dog.png,给狗戴上一顶帽子\n"
        "photos/cat.png;photos/dog.png,Put the cat next to the dog\n",
        encoding="utf-8",
    )
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    imported = runner.invoke(app, ["suites", "import", "cases.csv", "--name", "first-look"])
    assert imported.exit_code == 0, imported.output
    assert "3 case(s)" in imported.output and "zh" in imported.output

    # the local server accepts the key already in the environment and never prints it
    with sim_process("evalkit.sim", env=dict(os.environ)) as exported:
        assert NEWCOMER_KEY not in exported["_printed"] and "WAVESPEED_API_KEY" not in exported
        for k, v in exported.items():
            if not k.startswith("_"):
                monkeypatch.setenv(k, v)
        res = runner.invoke(app, ["run", "--suite", "first-look", "--models", "all", "--run-id", "day-one"])
    assert res.exit_code == 0, res.output
    output = res.output + (res.stderr if res.stderr_bytes is not None else "")
    assert "left out for want of a key" in output
    assert "stability (export STABILITY_API_KEY=…)" in output and "huggingface (export HF_TOKEN=…)" in output
    assert NEWCOMER_KEY not in output and NEWCOMER_KEY not in exported["_stderr"]
    calls = Workspace("evalkit-workspace").calls("day-one")
    ran = calls[calls["status"] != "not_applicable"]
    assert set(ran["status"]) == {"completed"}
    assert {Catalog.load().get(m).provider for m in ran["model_id"]} == {"wavespeed", "local"}
    assert set(ran["case_id"]) == {"cat-1", "dog-2", "cat-3"}  # the Chinese case and the two-image case ran too


# ---- `evalkit sim` for any client -------------------------------------------------------------------


def test_evalkit_sim_prints_lines_the_official_sdk_can_use(monkeypatch) -> None:
    wavespeed = pytest.importorskip("wavespeed")
    env = {k: v for k, v in os.environ.items() if k not in ALL_KEYS}
    with sim_process("evalkit", "sim", "--balance", "5", env=env) as exported:
        key, base = exported["WAVESPEED_API_KEY"], exported["WAVESPEED_BASE_URL"]
        assert key == "evalkit-sim-wavespeed"  # a public sim key: printed, as it opens nothing else
        sdk = wavespeed.Client(api_key=key, base_url=base, max_connection_retries=0)
        uri = "data:image/png;base64," + base64.b64encode(png_bytes()).decode()
        out = sdk.run("wavespeed-ai/qwen-image/edit", {"prompt": "add a hat", "image": uri}, poll_interval=0.01)
        assert out["outputs"][0].startswith(base)
        balance = httpx.get(f"{base}/api/v3/balance", headers={"Authorization": f"Bearer {key}"}).json()
        assert balance["data"]["balance"] == pytest.approx(5 - 0.02)
    assert "SIMULATED" in exported["_stderr"]


def test_sim_key_comes_from_the_option_then_the_env_then_a_public_key() -> None:
    from evalkit.sim.launch import build_parser, resolve_key

    assert resolve_key("stability", "given", {"STABILITY_API_KEY": "env"}).source == "option"
    env_key = resolve_key("stability", None, {"STABILITY_API_KEY": "sk-real"})
    assert (env_key.value, env_key.printable) == ("sk-real", False)
    assert resolve_key("huggingface", None, {}).printable
    args = build_parser().parse_args(["--provider", "all", "--fault", "rate_limit:rate=0.5,retry_after_s=1"])
    assert args.fault == [{"kind": "rate_limit", "rate": 0.5, "retry_after_s": 1}]


# ---- doctor against the local server ----------------------------------------------------------------


@pytest.fixture(scope="module")
def dry_sim() -> Iterator:
    with start_wavespeed_sim(api_key="ws-doctor-good-key", fixed_latency_ms=1, balance_usd=12.5) as h:
        yield h


def test_doctor_shows_the_balance_and_a_wrong_key_exits_1(dry_sim, monkeypatch) -> None:
    from evalkit.cli import app

    only_wavespeed_key(monkeypatch, "ws-doctor-good-key")
    monkeypatch.setenv("WAVESPEED_BASE_URL", dry_sim.base_url)
    res = CliRunner().invoke(app, ["doctor"])
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())  # lines wrap between words at the terminal's width
    assert "wavespeed: ok" in text and "balance $12.50" in text and "none (local server)" in text
    assert "stability: not configured" in text and "STABILITY_API_KEY" in text
    assert "ws-doctor-good-key" not in res.output
    monkeypatch.setenv("WAVESPEED_API_KEY", "ws-doctor-WRONG-key")
    res = CliRunner().invoke(app, ["doctor"])
    assert res.exit_code == 1 and "the key was rejected" in " ".join(res.output.split())
    assert "ws-doctor-WRONG-key" not in res.output


def test_doctor_checks_every_local_server(monkeypatch) -> None:
    from evalkit.doctor import run_doctor
    from evalkit.sim.stack import start_local_stack

    with start_local_stack() as stack:
        checks = run_doctor(env=stack.env())
    assert all(c.configured and c.ok for c in checks), [c.line() for c in checks]
    assert checks[1].balance.endswith("credits ($1,000.00)")  # the Stability sim's unlimited account


# ---- an account that runs dry --------------------------------------------------------------------


async def test_a_balance_that_runs_out_stops_the_run_and_a_resume_after_top_up_pays_once(tmp_path) -> None:
    with start_wavespeed_sim(api_key="ws-balance", fixed_latency_ms=1, balance_usd=0.05) as h:
        opts = {"wavespeed": {"base_url": h.base_url, "api_key": Secret(h.api_key), "poll": FAST_POLL}}
        ws = tmp_path / "ws"
        # smoke × qwen-edit ($0.02 flat) applies to one case: 5 repeats = $0.10, the account holds $0.05
        first = await arun(
            "smoke",
            "qwen-edit,identity",
            repeats=5,
            concurrency=1,
            workspace=ws,
            run_id="dry",
            provider_options=opts,
            progress=False,
        )
        assert first.stop_reason == "balance"
        assert first.failed == 0  # the refused call and the untried ones are not failures
        qwen = Workspace(ws).calls("dry").query("model_id == 'qwen-edit' and status != 'not_applicable'")
        assert sorted(qwen["status"]) == ["completed", "completed", "planned", "planned", "planned"]
        assert set(Workspace(ws).calls("dry").query("model_id == 'identity'")["status"]) <= {
            "completed",
            "not_applicable",
        }
        assert "wavespeed account ran out of balance" in first.stop_message
        assert "$0.0400 spent" in first.stop_message and "evalkit run --resume dry" in first.stop_message
        assert Workspace(ws).get_run("dry")["status"] == "balance_exhausted"
        assert len(h.sim.ledger) == 2

        h.sim.top_up(1.0)
        second = await arun(None, workspace=ws, run_id="dry", resume=True, provider_options=opts, progress=False)
        assert second.stop_reason is None and second.completed == first.completed + 3
        assert len(h.sim.ledger) == 5 and len({e.prediction_id for e in h.sim.ledger}) == 5  # nobody paid twice
        assert second.cost_usd == pytest.approx(h.sim.billed_usd) == pytest.approx(0.10)


def test_the_cli_reports_what_ran_out_and_exits_1(tmp_path, monkeypatch) -> None:
    import json

    from evalkit.cli import app

    with start_wavespeed_sim(api_key="ws-cli-dry", fixed_latency_ms=1, balance_usd=0.0) as h:
        only_wavespeed_key(monkeypatch, "ws-cli-dry")
        monkeypatch.setenv("WAVESPEED_BASE_URL", h.base_url)
        for k, v in {"EVALKIT_POLL_INITIAL_S": "0.01", "EVALKIT_POLL_MIN_INTERVAL_S": "0.02"}.items():
            monkeypatch.setenv(k, v)
        res = CliRunner().invoke(
            app, ["run", "--suite", "smoke", "--models", "qwen-edit", "-w", str(tmp_path / "w"), "--json"]
        )
    assert res.exit_code == 1, res.output
    data = json.loads(res.stdout)
    assert data["stop_reason"] == "balance" and data["failed"] == 0 and data["skipped"] == 1
    assert "top up, then `evalkit run --resume" in data["stop_message"]


async def test_hugging_face_402_and_stability_402_leave_the_calls_planned(tmp_path) -> None:
    from evalkit.catalog import Catalog
    from evalkit.sim.huggingface import HuggingFaceSim
    from evalkit.sim.server import start_in_thread
    from evalkit.sim.stability import StabilitySim

    one_inpaint = float(Catalog.load().get("stability-inpaint").price.credits)  # room for one inpaint, not two
    hf, st = HuggingFaceSim("hf_dry"), StabilitySim("sk-dry", balance_credits=one_inpaint)
    with start_in_thread(hf.app) as hf_server, start_in_thread(st.app) as st_server:
        opts = {
            "huggingface": {"endpoint_url": hf_server.base_url, "token": Secret("hf_dry")},
            "stability": {"base_url": st_server.base_url, "api_key": Secret("sk-dry"), "poll_interval_s": 0.01},
        }
        hf.inject("payment_required", count=1)
        res = await arun(
            "smoke",
            "hf-qwen-image-edit,stability-inpaint",
            repeats=2,
            concurrency=1,
            workspace=tmp_path,
            run_id="dry2",
            provider_options=opts,
            progress=False,
        )
        calls = Workspace(tmp_path).calls("dry2").query("status != 'not_applicable'")
        by_model = calls.groupby("model_id")["status"].apply(sorted).to_dict()
        assert by_model == {"hf-qwen-image-edit": ["planned", "planned"], "stability-inpaint": ["completed", "planned"]}
        assert res.stop_reason == "balance" and res.failed == 0
        assert "huggingface, stability accounts ran out of balance" in res.stop_message
        st.top_up(100)
        again = await arun(None, workspace=tmp_path, run_id="dry2", resume=True, provider_options=opts, progress=False)
        assert again.stop_reason is None and again.completed == 4 and len(st.ledger) == 2


def test_evalkit_sim_and_the_module_take_the_same_options() -> None:
    from evalkit.cli import app

    cli_help = CliRunner().invoke(app, ["sim", "--help"])
    module_help = subprocess.run(
        [sys.executable, "-m", "evalkit.sim", "--help"], capture_output=True, text=True, env={**os.environ}, cwd=ROOT
    )
    assert cli_help.exit_code == 0 and module_help.returncode == 0
    options = {o for o in re.findall(r"--[a-z-]+", module_help.stdout)}
    assert options == {o for o in re.findall(r"--[a-z-]+", cli_help.output)}
    assert {"--api-key", "--port-file", "--max-concurrent", "--time-scale", "--fixed-latency-ms"} <= options
    assert {"--fault", "--balance", "--provider"} <= options


def test_evalkit_sim_all_serves_every_provider_and_doctor_accepts_the_printed_lines() -> None:
    from evalkit.doctor import run_doctor

    env = {k: v for k, v in os.environ.items() if k not in ALL_KEYS}
    with sim_process("evalkit", "sim", "--provider", "all", env=env) as exported:
        checks = run_doctor(env={k: v for k, v in exported.items() if not k.startswith("_")})
    assert [c.provider for c in checks] == ["wavespeed", "stability", "huggingface", "judge"]
    assert all(c.configured and c.ok and c.reachable for c in checks), [c.line() for c in checks]
