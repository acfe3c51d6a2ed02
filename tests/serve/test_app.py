"""evalkit serve: endpoint shapes, security (token off loopback, host check, caps, rate limit, JSON errors
without keys or tracebacks) and tier-file re-reading — with starlette's TestClient over the app, whose edits
go to the local WaveSpeed simulator."""

from __future__ import annotations

import base64
import io
import json
import os
from collections.abc import Iterator

import pytest
from PIL import Image
from starlette.testclient import TestClient
from typer.testing import CliRunner

from evalkit.cli import app as cli_app
from evalkit.credentials import Secret
from evalkit.errors import InvalidInputError
from evalkit.serve import ServeConfig, create_app, make_config
from evalkit.serve.app import RateLimiter, is_loopback
from evalkit.sim.wavespeed import SimHandle
from evalkit.store import Workspace
from tests.engine.test_runner import FAST_POLL
from tests.plugins.common import make_png
from tests.plugins.tier_files import tier_defaults, write_tier_defaults_file

EDIT = "/api/image-studio/edit/process"
MODELS = "/api/image-studio/edit/models"
TOKEN = "t0ken-for-tests-" + "x" * 16


def _config(sim: SimHandle, tmp_path, **kw) -> ServeConfig:
    sim.sim.reset()  # each test starts with no faults and no submits
    tiers = kw.pop("tiers", None) or write_tier_defaults_file(tmp_path / "tier_defaults.json")
    kw.setdefault("allow_simulated", True)
    kw.setdefault("extra_hosts", ("testserver",))
    return ServeConfig(
        tiers=tiers,
        workspace=tmp_path / "ws",
        provider_options={"wavespeed": {"base_url": sim.base_url, "api_key": Secret(sim.api_key), "poll": FAST_POLL}},
        **kw,
    )


@pytest.fixture
def client(sim, tmp_path) -> Iterator[TestClient]:
    with TestClient(create_app(_config(sim, tmp_path))) as c:
        yield c


def _b64(w: int = 64, h: int = 48) -> str:
    return base64.b64encode(make_png(w, h)).decode()


def _no_secret(sim: SimHandle, text: str) -> None:
    assert sim.api_key not in text and "Traceback" not in text


def test_models_lists_every_tier_and_operation_with_the_selector_data(client, sim):
    r = client.get(MODELS)
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
    d = r.json()
    assert d["run_id"] == "run-test-1" and d["simulated"] is True and d["source"] == "tier_defaults.json"
    assert d["default_tier"] == "standard" and any("SIMULATED" in w for w in d["warnings"])
    assert list(d["tiers"]) == ["free", "standard", "premium"]
    ge = d["tiers"]["standard"]["operations"]["general_edit"]
    assert ge["default"] == "qwen-edit-plus" and ge["status"] == "ok" and ge["run_id"] == "run-test-1"
    assert ge["fallback_order"] == ["qwen-edit-plus", "seedream-v4-edit", "step1x-edit"]
    head = ge["models"][0]
    assert head["model"] == "qwen-edit-plus" and head["role"] == "default"
    assert head["cost_usd"] == 0.02 and head["latency_p95_ms"] == 8000.0
    assert head["quality"] == 7.2 and head["quality_ci"] == [6.8, 7.6]
    assert head["evidence"] == {"n": 24, "completed": 24, "success_rate": 0.97}
    assert head["vendor"] == "Alibaba (Qwen)" and head["provider"] == "wavespeed"
    by_model = {m["model"]: m for m in ge["models"]}
    assert by_model["flux-kontext-max"]["eligibility"] == "excluded"
    assert by_model["hidream-e1-full"]["eligibility"] == "insufficient_evidence"
    multi = d["tiers"]["standard"]["operations"]["multi_image"]
    assert multi["status"] == "insufficient_evidence" and multi["fallback_order"] == []
    assert "allow_provisional" in multi["unavailable"]
    only = client.get(MODELS, params={"tier": "premium"}).json()
    assert list(only["tiers"]) == ["premium"]
    missing = client.get(MODELS, params={"tier": "gold"})
    assert missing.status_code == 404 and missing.json()["error"]["category"] == "invalid_input"
    _no_secret(sim, r.text)


def test_process_json_in_the_original_call_shape(client, sim, tmp_path):
    body = {
        "image_base64": _b64(300, 200),
        "prompt": "Change the background to a beach scene",
        "operation": "general_edit",
        "tier": "standard",
        "options": {"width": 1024, "height": 1024, "seed": 42},
        "user_id": "user-9",
    }
    r = client.post(EDIT, json=body)
    assert r.status_code == 200, r.text
    d = r.json()
    assert {"image_base64", "model", "tier", "cost_usd", "latency_ms", "fallbacks"} <= set(d)
    assert (d["model"], d["tier"], d["fallbacks"], d["simulated"]) == ("qwen-edit-plus", "standard", [], True)
    assert d["cost_usd"] == 0.02 and d["latency_ms"] > 0
    img = Image.open(io.BytesIO(base64.b64decode(d["image_base64"])))
    assert img.size == (1024, 1024) and d["mime"] == f"image/{img.format.lower()}"
    assert [s.model_id for s in sim.sim.submits] == ["qwen-edit-plus"]
    usage = Workspace(tmp_path / "ws").usage()
    assert list(usage["user_id"]) == ["user-9"] and list(usage["source"]) == ["serve"]
    row = usage.iloc[0]
    assert (row["tier"], row["role"], row["fallbacks"], row["client"]) == ("standard", "default", [], "testclient")
    assert row["reserved_usd"] == 0.02 and row["cost_usd"] == 0.02
    _no_secret(sim, r.text)


def test_process_multipart_upload_and_fallback_reported(client, sim):
    sim.sim.add_fault("rate_limit", model="qwen-edit", retry_after_s=0.0)
    r = client.post(
        EDIT,
        files={"image": ("cat.png", make_png(80, 60), "image/png")},
        data={"prompt": "make it blue", "tier": "free", "options": json.dumps({"seed": 7})},
    )
    assert r.status_code == 200, r.text
    d = r.json()
    assert d["model"] == "hidream-e1-full" and d["tier"] == "free"
    assert d["fallbacks"][0]["model"] == "qwen-edit" and d["fallbacks"][0]["category"] == "rate_limit"
    assert d["fallbacks"][0]["charge"] == "none"


def test_no_tier_no_model_uses_the_default_tier_and_models_must_be_in_it(client, sim):
    r = client.post(EDIT, json={"image_base64": _b64(), "prompt": "x"})
    assert r.status_code == 200 and r.json()["tier"] == "standard" and r.json()["model"] == "qwen-edit-plus"
    r = client.post(EDIT, json={"image_base64": _b64(), "prompt": "x", "model": "step1x-edit"})
    assert r.status_code == 200 and r.json()["model"] == "step1x-edit" and r.json()["tier"] == "standard"
    r = client.post(EDIT, json={"image_base64": _b64(), "prompt": "x", "model": "nano-banana-pro-edit-ultra"})
    assert r.status_code == 403 and "not served in tier 'standard'" in r.json()["error"]["message"]
    assert [s.model_id for s in sim.sim.submits] == ["qwen-edit-plus", "step1x-edit"]


@pytest.mark.parametrize(
    ("body", "status", "category", "words"),
    [
        ({"image_base64": "%%%not-base64", "prompt": "x"}, 400, "invalid_input", "not valid base64"),
        ({"image_base64": base64.b64encode(b"GIF89a garbage").decode(), "prompt": "x"}, 400, "invalid_input", "image"),
        ({"prompt": "x"}, 400, "invalid_input", "no image"),
        ({"image_base64": "A", "prompt": 3}, 400, "invalid_input", "prompt must be a string"),
        ({"image_base64": "A", "prompt": "x", "options": [1]}, 400, "invalid_input", "options must be an object"),
        ({"image_base64": "A", "prompt": "x", "tier": "gold"}, 400, "invalid_input", "no tier 'gold'"),
    ],
)
def test_bad_requests_get_clear_json_errors(client, sim, body, status, category, words):
    if body.get("image_base64") == "A":  # "A" stands for a valid image
        body = {**body, "image_base64": _b64()}
    r = client.post(EDIT, json=body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["category"] == category and words in err["message"]
    assert sim.sim.submits == []
    _no_secret(sim, r.text)


def test_non_json_body_and_wrong_method(client):
    r = client.post(EDIT, content=b"{nope", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["message"] == "the body is not valid JSON"
    r = client.post(EDIT, content=b"x", headers={"content-type": "text/plain"})
    assert r.status_code == 415
    r = client.get(EDIT)
    assert r.status_code == 405 and r.json()["error"]["category"] == "method_not_allowed"


def test_a_provider_refusal_is_json_with_its_category(client, sim):
    sim.sim.add_fault("moderation")
    r = client.post(EDIT, json={"image_base64": _b64(), "prompt": "x", "tier": "free"})
    assert r.status_code == 422 and r.json()["error"]["category"] == "moderation"
    assert "no model of tier 'free'" in r.json()["error"]["message"]
    _no_secret(sim, r.text)


def test_oversized_body_and_image_are_refused(sim, tmp_path):
    cfg = _config(sim, tmp_path, max_body_bytes=50_000, max_image_bytes=20_000)
    with TestClient(create_app(cfg)) as c:
        big = base64.b64encode(os.urandom(60_000)).decode()
        r = c.post(EDIT, json={"image_base64": big, "prompt": "x"})
        assert r.status_code == 413 and r.json()["error"]["category"] == "too_large"
        assert "limit of 50,000" in r.json()["error"]["message"] or "> limit 50,000" in r.json()["error"]["message"]
        r = c.post(EDIT, json={"image_base64": base64.b64encode(os.urandom(30_000)).decode(), "prompt": "x"})
        assert r.status_code == 413 and "image limit" in r.json()["error"]["message"]
        chunks = iter([b'{"image_base64": "' + b"A" * 40_000, b"A" * 40_000 + b'"}'])  # no Content-Length
        r = c.post(EDIT, content=chunks, headers={"content-type": "application/json"})
        assert r.status_code == 413
    assert sim.sim.submits == []


def test_per_client_rate_limit(sim, tmp_path):
    with TestClient(create_app(_config(sim, tmp_path, edits_per_minute=2))) as c:
        codes = [c.post(EDIT, json={"prompt": "x"}).status_code for _ in range(3)]
        assert codes == [400, 400, 429]
        r = c.post(EDIT, json={"prompt": "x"})
        assert r.json()["error"]["category"] == "rate_limit" and int(r.headers["retry-after"]) >= 1
        assert c.get(MODELS).status_code == 200  # the listing is not limited
    now = [0.0]
    rl = RateLimiter(2, window_s=60, clock=lambda: now[0])
    assert [rl.check("a"), rl.check("a"), rl.check("b")] == [None, None, None]
    assert rl.check("a") == 60.0
    now[0] = 60.0
    assert rl.check("a") is None


def test_a_token_is_required_off_loopback_and_checked_when_set(sim, tmp_path, monkeypatch):
    monkeypatch.delenv("EVALKIT_SERVE_TOKEN", raising=False)
    with pytest.raises(InvalidInputError, match="EVALKIT_SERVE_TOKEN is not set"):
        make_config(tmp_path / "t.json", host="0.0.0.0")
    assert make_config(tmp_path / "t.json", host="127.0.0.1").token is None
    monkeypatch.setenv("EVALKIT_SERVE_TOKEN", "short")
    with pytest.raises(InvalidInputError, match="too short"):
        make_config(tmp_path / "t.json", host="0.0.0.0")
    monkeypatch.setenv("EVALKIT_SERVE_TOKEN", TOKEN)
    assert make_config(tmp_path / "t.json", host="0.0.0.0").token == TOKEN
    assert is_loopback("::1") and is_loopback("127.0.0.5") and not is_loopback("0.0.0.0")

    with TestClient(create_app(_config(sim, tmp_path, token=TOKEN)), base_url="http://10.1.2.3:8000") as c:
        assert c.get("/").status_code == 200  # the page itself carries nothing secret
        r = c.get(MODELS)
        assert r.status_code == 401 and r.json()["error"]["category"] == "unauthorized"
        assert c.get(MODELS, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert c.get(MODELS, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
        r = c.post(EDIT, json={"image_base64": _b64(), "prompt": "x"})
        assert r.status_code == 401 and sim.sim.submits == []


def test_without_a_token_only_loopback_host_headers_are_served(sim, tmp_path):
    with TestClient(create_app(_config(sim, tmp_path, extra_hosts=())), base_url="http://evil.example") as c:
        r = c.get(MODELS)
        assert r.status_code == 403 and r.json()["error"]["category"] == "forbidden"
    with TestClient(create_app(_config(sim, tmp_path, extra_hosts=())), base_url="http://127.0.0.1:8000") as c:
        assert c.get(MODELS).status_code == 200


def test_the_page_and_its_assets_are_served_with_a_strict_policy(client, sim):
    r = client.get("/")
    assert r.status_code == 200 and 'data-testid="models-table"' in r.text
    assert "script-src 'self'" in r.headers["content-security-policy"]
    assert r.headers["x-content-type-options"] == "nosniff"
    assert client.get("/static/app.js").status_code == 200 and client.get("/static/app.css").status_code == 200
    assert client.get("/static/nope.js").status_code == 404
    _no_secret(sim, r.text + client.get("/static/app.js").text)


def test_the_tier_file_is_re_read_when_it_changes(sim, tmp_path):
    path = write_tier_defaults_file(tmp_path / "tier_defaults.json", run_id="run-A")
    app = create_app(_config(sim, tmp_path, tiers=path))
    with TestClient(app) as c:
        assert c.get(MODELS).json()["run_id"] == "run-A"
        data = tier_defaults(run_id="run-B")
        data["tiers"]["standard"]["operations"]["general_edit"]["default"] = "step1x-edit"
        write_tier_defaults_file(path, data)
        st = path.stat()
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))
        d = c.get(MODELS).json()
        assert d["run_id"] == "run-B"
        assert d["tiers"]["standard"]["operations"]["general_edit"]["default"] == "step1x-edit"
        r = c.post(EDIT, json={"image_base64": _b64(), "prompt": "x", "tier": "standard"})
        assert r.json()["model"] == "step1x-edit" and r.json()["run_id"] == "run-B"
        # a broken rewrite keeps the last good file in use and says so
        path.write_text('{"schema": "evalkit.tier_defaults/9", "tiers": {}}')
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 4_000_000_000))
        d = c.get(MODELS).json()
        assert d["run_id"] == "run-B" and any("could not be used" in w for w in d["warnings"])
    assert app.state.tier_file.loads == 2


def test_cli_serve_refuses_before_listening(tmp_path, monkeypatch):
    monkeypatch.delenv("EVALKIT_SERVE_TOKEN", raising=False)
    path = write_tier_defaults_file(tmp_path / "tier_defaults.json")
    runner = CliRunner()
    r = runner.invoke(cli_app, ["serve", "--tiers", str(path), "--host", "0.0.0.0"])
    assert r.exit_code == 2 and "EVALKIT_SERVE_TOKEN" in r.output
    r = runner.invoke(cli_app, ["serve", "--tiers", str(path)])
    assert r.exit_code == 2 and "SIMULATED" in r.output
    r = runner.invoke(cli_app, ["serve", "--tiers", str(tmp_path / "missing.json")])
    assert r.exit_code == 2 and "no tier defaults file" in r.output
