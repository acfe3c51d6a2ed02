"""evalkit serve tried as an attacker would (issue 21): cross-site requests, models outside the tier, the most
expensive options, budget exhaustion and restarts, forged forwarded headers, padding and deep JSON, big 16-bit
images while other requests wait, and errors that would show the host. Every refusal is checked at the
simulator: nothing was submitted upstream."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import numpy as np
import pytest
import uvicorn
from PIL import Image
from starlette.testclient import TestClient
from typer.testing import CliRunner

from evalkit.catalog import Catalog
from evalkit.cli import app as cli_app
from evalkit.errors import BudgetExceededError
from evalkit.images import load_image
from evalkit.providers import create_provider
from evalkit.providers.base import EditRequest, ImageEditOptions
from evalkit.serve import body as serve_body
from evalkit.serve import create_app
from evalkit.serve.app import uvicorn_options
from evalkit.serve.body import JsonShape
from evalkit.serve.guards import ApiError, scrub
from evalkit.serve.money import DailyBudgets
from evalkit.store import Workspace
from tests.plugins.common import make_png
from tests.plugins.tier_files import tier_defaults, write_tier_defaults_file
from tests.serve.test_app import EDIT, MODELS, _b64, _config

USAGE = "/api/image-studio/edit/usage"
OWN = "http://testserver"
EVIL = "http://127.0.0.1:9"


def _edit(**kw):
    return {"image_base64": _b64(), "prompt": "make it blue", **kw}


def _submits(sim) -> list[str]:
    return [s.model_id for s in sim.sim.submits]


# ---- 1. same origin only ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": EVIL},
        {"Origin": "null"},
        {"Origin": "http://testserver.evil.example"},
        {"Origin": "https://testserver"},  # another scheme is another origin
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},  # another port of the same host
        {"Origin": EVIL, "Sec-Fetch-Site": "cross-site"},
    ],
)
def test_cross_site_json_is_refused_before_anything_is_sent(sim, tmp_path, headers):
    with TestClient(create_app(_config(sim, tmp_path))) as c:
        r = c.post(EDIT, json=_edit(), headers=headers)
        assert r.status_code == 403, r.text
        assert r.json()["error"]["category"] == "forbidden"
        assert r.headers.get("access-control-allow-origin") is None
        assert c.get(MODELS, headers=headers).status_code == 403
    assert sim.sim.submits == []


def test_cross_site_form_and_blob_bodies_are_refused(sim, tmp_path):
    png = make_png(64, 48)
    with TestClient(create_app(_config(sim, tmp_path))) as c:
        # a <form enctype=multipart/form-data> on another site
        r = c.post(EDIT, files={"image": ("a.png", png, "image/png")}, data={"prompt": "x"}, headers={"Origin": EVIL})
        assert r.status_code == 403
        # sendBeacon / fetch(no-cors) with a Blob: no content type, or text/plain (CORS-"simple" requests)
        body = json.dumps(_edit()).encode()
        for ctype in (None, "text/plain", "application/x-www-form-urlencoded"):
            hdrs = {"content-type": ctype} if ctype else {}
            r = c.post(EDIT, content=body, headers=hdrs)  # even without an Origin: JSON must say it is JSON
            assert r.status_code == 415, (ctype, r.text)
            assert c.post(EDIT, content=body, headers={**hdrs, "Origin": EVIL}).status_code == 403
        # the server's own page (same origin) is served: form and JSON
        r = c.post(EDIT, files={"image": ("a.png", png, "image/png")}, data={"prompt": "x"}, headers={"Origin": OWN})
        assert r.status_code == 200, r.text
        r = c.post(EDIT, json=_edit(), headers={"Origin": OWN, "Sec-Fetch-Site": "same-origin"})
        assert r.status_code == 200, r.text
    assert _submits(sim) == ["qwen-edit-plus", "qwen-edit-plus"]


def test_allow_origin_lets_a_named_front_end_call_with_cors_but_not_by_form(sim, tmp_path):
    front = "http://127.0.0.1:5173"
    with TestClient(create_app(_config(sim, tmp_path, allow_origins=(front + "/",)))) as c:
        pre = c.options(
            EDIT,
            headers={"Origin": front, "Access-Control-Request-Method": "POST", "Sec-Fetch-Site": "same-site"},
        )
        assert pre.status_code == 204 and pre.headers["access-control-allow-origin"] == front
        assert "content-type" in pre.headers["access-control-allow-headers"].lower()
        assert c.options(EDIT, headers={"Origin": EVIL}).status_code == 403
        r = c.post(EDIT, json=_edit(), headers={"Origin": front, "Sec-Fetch-Site": "same-site"})
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == front
        assert r.headers["vary"] == "Origin"
        r = c.post(EDIT, files={"image": ("a.png", make_png(64, 48), "image/png")}, headers={"Origin": front})
        assert r.status_code == 403 and "multipart" in r.json()["error"]["message"]
    assert _submits(sim) == ["qwen-edit-plus"]


# ---- 2. the tier is the contract -----------------------------------------------------------------------


def _price(model: str, options: dict) -> float:
    spec = Catalog.load().get(model)
    req = EditRequest(
        model=spec,
        images=[load_image(make_png(64, 48))],
        prompt="x",
        operation="general_edit",
        options=ImageEditOptions.from_value(options),
    )
    price = create_provider(spec.provider).prepare(req).price_usd
    assert price is not None
    return price


@pytest.mark.parametrize(
    ("model", "options"),
    [
        ("nano-banana-pro-edit-ultra", {"resolution": "8k"}),
        ("gpt-image-1-edit", {"quality": "high", "size": "1536*1024"}),
        ("flux-kontext-max", {}),  # in the file, but excluded from the free tier
        ("seedream-v4-edit", {}),  # the free tier's alternative over its price
    ],
)
def test_a_named_model_outside_its_tier_is_refused_naming_the_allowed_ones(sim, tmp_path, model, options):
    with TestClient(create_app(_config(sim, tmp_path))) as c:
        r = c.post(EDIT, json=_edit(tier="free", model=model, options=options))
        assert r.status_code == 403, r.text
        msg = r.json()["error"]["message"]
        assert f"{model!r} is not served in tier 'free'" in msg and "qwen-edit, hidream-e1-full" in msg
    assert sim.sim.submits == []


def test_any_model_still_has_to_fit_the_tier_price(sim, tmp_path):
    dear = _price("nano-banana-pro-edit-ultra", {"resolution": "8k"})
    assert dear > 0.025  # the catalogue's own rule prices it over the free tier's cap
    with TestClient(create_app(_config(sim, tmp_path, allow_any_model=True))) as c:
        r = c.post(EDIT, json=_edit(tier="free", model="nano-banana-pro-edit-ultra", options={"resolution": "8k"}))
        assert r.status_code == 403 and f"${dear:g}" in r.json()["error"]["message"], r.text
        assert sim.sim.submits == []
        r = c.post(EDIT, json=_edit(tier="free", model="qwen-edit-plus"))  # not in the tier, but within its price
        assert r.status_code == 200 and r.json()["model"] == "qwen-edit-plus" and r.json()["tier"] == "free"
    assert _submits(sim) == ["qwen-edit-plus"]


def test_an_allowed_model_asked_for_a_dearer_edit_is_refused(sim, tmp_path):
    data = tier_defaults()
    alts = data["tiers"]["premium"]["operations"]["general_edit"]["alternatives"]
    alts.append({"model": "gpt-image-1-edit", "cost_usd": 0.042, "latency_p95_ms": 9000.0, "quality": 7.5,
                 "rationale": "eligible; viescore_o 7.5"})  # fmt: skip
    tiers = write_tier_defaults_file(tmp_path / "t.json", data)
    high = {"quality": "high", "size": "1536*1024"}
    over = _price("gpt-image-1-edit", high) > 0.2
    with TestClient(create_app(_config(sim, tmp_path, tiers=tiers))) as c:
        r = c.post(EDIT, json=_edit(tier="premium", model="gpt-image-1-edit", options=high))
        assert r.status_code == (403 if over else 200), r.text
        r = c.post(EDIT, json=_edit(tier="premium", model="gpt-image-1-edit", options={"quality": "low"}))
        assert r.status_code == 200, r.text
    assert _submits(sim) == ["gpt-image-1-edit"] * (1 if over else 2)
    assert over, "the catalogue no longer prices a high-quality 1536×1024 GPT Image 1 edit over $0.20"


# ---- 3. money caps that survive restarts ---------------------------------------------------------------


def test_daily_budget_refuses_with_402_and_survives_a_restart(sim, tmp_path):
    price = _price("qwen-edit-plus", {})
    cap = round(price * 2.5, 6)  # two edits fit, the third does not
    with TestClient(create_app(_config(sim, tmp_path, daily_budget_usd=cap))) as c:
        assert [c.post(EDIT, json=_edit()).status_code for _ in range(2)] == [200, 200]
        r = c.post(EDIT, json=_edit())
        assert r.status_code == 402 and r.json()["error"]["category"] == "budget"
        msg = r.json()["error"]["message"]
        tomorrow = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
        assert "server's daily budget" in msg and f"resets at {tomorrow}T00:00:00Z" in msg
        assert c.get(USAGE).json()["committed_usd"] == pytest.approx(2 * price)
    assert len(sim.sim.submits) == 2
    # a restart reads the day's spend back from the usage ledger
    with TestClient(create_app(_config(sim, tmp_path, daily_budget_usd=cap))) as c:
        assert c.post(EDIT, json=_edit()).status_code == 402
    assert sim.sim.submits == []  # _config reset the simulator: the restarted server sent nothing
    ledger = Workspace(tmp_path / "ws").usage(source="serve")
    assert len(ledger) == 2 and ledger["cost_usd"].sum() == pytest.approx(2 * price)


def test_client_daily_budget_is_per_peer(sim, tmp_path):
    price = _price("qwen-edit-plus", {})
    app = create_app(_config(sim, tmp_path, client_daily_budget_usd=price * 1.5))
    with TestClient(app, client=("10.0.0.1", 5000)) as a, TestClient(app, client=("10.0.0.2", 5000)) as b:
        assert a.post(EDIT, json=_edit()).status_code == 200
        r = a.post(EDIT, json=_edit())
        assert r.status_code == 402 and "per-client daily budget" in r.json()["error"]["message"]
        assert b.post(EDIT, json=_edit()).status_code == 200
    assert len(sim.sim.submits) == 2
    by_client = {r["client"]: r["committed_usd"] for r in _usage(tmp_path)}
    assert by_client == {"10.0.0.1": pytest.approx(price), "10.0.0.2": pytest.approx(price)}


def _usage(tmp_path) -> list[dict]:
    from evalkit.serve.money import spend_summary

    return spend_summary(Workspace(tmp_path / "ws").usage(source="serve"))["by_client"]


async def test_the_daily_budget_holds_with_many_edits_in_flight(sim, tmp_path):
    price = _price("qwen-edit-plus", {})
    app = create_app(_config(sim, tmp_path, daily_budget_usd=price * 5, edits_per_minute=0))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=OWN) as c:
        rs = await asyncio.gather(*(c.post(EDIT, json=_edit()) for _ in range(20)))
    codes = sorted(r.status_code for r in rs)
    assert codes == [200] * 5 + [402] * 15
    assert len(sim.sim.submits) == 5 and sum(e.usd for e in sim.sim.ledger) <= price * 5 + 1e-9


def test_a_day_is_a_utc_day_and_unknown_outcomes_stay_counted(tmp_path):
    ws = Workspace(tmp_path / "ws")
    yesterday = ws.record_usage(model_id="m", operation="general_edit", cost_usd=1.0, cost_source="list_price",
                                source="serve", client="a", reserved_usd=1.0)  # fmt: skip
    ws._execute("UPDATE usage SET at = '2000-01-01T23:59:59.000000Z' WHERE usage_id = ?", (yesterday,))
    ws.record_usage(model_id="m", operation="general_edit", cost_usd=None, cost_source="unknown", source="serve",
                    client="a", reserved_usd=0.25)  # fmt: skip
    ws.record_usage(model_id="m", operation=None, cost_usd=0.5, cost_source="list_price", source="run")
    budgets = DailyBudgets(1.0, None, ws)
    assert budgets.status()["committed_usd"] == 0.25  # yesterday's row and another source's are not today's serve
    budgets.reserve("a", 0.75)
    with pytest.raises(BudgetExceededError, match="server's daily budget"):
        budgets.reserve("b", 0.01)
    now = [datetime.now(UTC)]
    rolling = DailyBudgets(1.0, None, ws, now=lambda: now[0])
    rolling.reserve("a", 0.7)
    now[0] += timedelta(days=1)
    assert rolling.status()["committed_usd"] == 0.0  # a new day, and nothing in the ledger for it


# ---- 4. the rate limit is keyed on the real peer -------------------------------------------------------


@pytest.fixture
def live_server(sim, tmp_path) -> Iterator:
    """The app under a real uvicorn on 127.0.0.1, started as evalkit serve starts it."""
    started: list = []

    def start(forwarded_allow_ips: str | None = None, **kw):
        app = create_app(_config(sim, tmp_path, **kw))
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        opts = uvicorn_options("127.0.0.1", sock.getsockname()[1], forwarded_allow_ips)
        opts.update(log_level="warning")
        server = uvicorn.Server(uvicorn.Config(app, **opts))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        while not server.started:
            thread.join(0.01)
        started.append((server, thread))
        return f"http://127.0.0.1:{sock.getsockname()[1]}", app

    yield start
    for server, thread in started:
        server.should_exit = True
        thread.join(10)


def test_rotating_x_forwarded_for_does_not_escape_the_rate_limit(live_server, sim):
    url, _ = live_server(edits_per_minute=2)
    codes = [
        httpx.post(url + EDIT, json=_edit(), headers={"X-Forwarded-For": f"203.0.113.{i}"}, timeout=30).status_code
        for i in range(4)
    ]
    assert codes == [200, 200, 429, 429]
    assert len(sim.sim.submits) == 2


def test_a_named_proxy_header_is_used_only_when_the_proxy_is_trusted(live_server, sim, tmp_path):
    price = _price("qwen-edit-plus", {})
    url, _ = live_server(forwarded_allow_ips="127.0.0.1", client_daily_budget_usd=price * 1.5)
    post = lambda ip: httpx.post(url + EDIT, json=_edit(), headers={"X-Forwarded-For": ip}, timeout=30)  # noqa: E731
    assert [post("198.51.100.7").status_code, post("198.51.100.7").status_code] == [200, 402]
    assert post("198.51.100.8").status_code == 200  # another user behind the proxy has a budget of their own
    assert {r["client"] for r in _usage(tmp_path)} == {"198.51.100.7", "198.51.100.8"}


def test_edits_in_flight_are_bounded_with_503_and_retry_after(sim, tmp_path, monkeypatch):
    release = threading.Event()
    decode = serve_body._decode_all

    def held(*a, **kw):
        release.wait(30)
        return decode(*a, **kw)

    monkeypatch.setattr(serve_body, "_decode_all", held)

    async def go():
        app = create_app(_config(sim, tmp_path, max_in_flight=1))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=OWN) as c:
            first = asyncio.ensure_future(c.post(EDIT, json=_edit()))
            while app.middleware_stack is None or not _guard(app).in_flight:
                await asyncio.sleep(0)
            second = await c.post(EDIT, json=_edit())
            models = await c.get(MODELS)
            release.set()
            return await first, second, models

    first, second, models = asyncio.run(go())
    assert second.status_code == 503 and second.headers["retry-after"] == "1"
    assert models.status_code == 200 and first.status_code == 200
    assert len(sim.sim.submits) == 1


def _guard(app):
    layer = app.middleware_stack
    while layer is not None and type(layer).__name__ != "Guard":
        layer = getattr(layer, "app", None)
    return layer


# ---- 5. bounded work per request ---------------------------------------------------------------------


def test_padding_in_an_unknown_field_is_refused_from_the_first_chunk(sim, tmp_path):
    read = []

    async def body():
        yield b'{"prompt": "x", "padding": "'
        for _ in range(400):  # 20 MB if it were all read
            read.append(1)
            yield b"x" * 50_000
        yield b'"}'

    async def go():
        app = create_app(_config(sim, tmp_path))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=OWN) as c:
            return await c.post(EDIT, content=body(), headers={"content-type": "application/json"})

    r = asyncio.run(go())
    assert r.status_code == 400 and "unexpected field 'padding'" in r.json()["error"]["message"]
    assert len(read) <= 2  # refused as soon as the key was seen
    assert sim.sim.submits == []


@pytest.mark.parametrize(
    ("raw", "status", "words"),
    [
        (b'{"image_base64": "A", "prompt": "x", "extra": 1}', 400, "unexpected field 'extra'"),
        (b'{"options": ' + b'{"a": ' * 50 + b"1" + b"}" * 50 + b"}", 400, "nested more than"),
        (b"[" * 100_000 + b"]" * 100_000, 400, "must be a JSON object"),
        (b'{"prompt": ' + b"[" * 100_000, 400, "nested more than"),
        (b'{"prompt": "' + b"p" * 40_000 + b'"}', 413, "prompt is over its limit"),
        (b'{"prompt": "x"} {"prompt": "y"}', 400, "one JSON object"),
        (b'{"\\u0070rompt": "x", "image_base64": 5}', 400, "image_base64 must be non-empty base64 text"),
    ],
)
def test_bad_json_shapes_are_400_not_500(sim, tmp_path, raw, status, words):
    with TestClient(create_app(_config(sim, tmp_path))) as c:
        raw = raw.replace(b'"A"', json.dumps(_b64()).encode())
        r = c.post(EDIT, content=raw, headers={"content-type": "application/json"})
        assert r.status_code == status, r.text
        assert words in r.json()["error"]["message"] and "Traceback" not in r.text
    assert sim.sim.submits == []


def test_json_shape_reads_chunks_split_anywhere():
    raw = json.dumps({"prompt": 'a "quoted" \\ prompt', "options": {"k": [1, {"x": "}"}]}, "tier": "free"}).encode()
    for cut in range(1, len(raw)):
        shape = JsonShape({"prompt": 100, "options": 100, "tier": 10}, max_depth=4)
        shape.feed(raw[:cut])
        shape.feed(raw[cut:])
        assert shape.done
    with pytest.raises(ApiError, match="tier is over its limit"):
        JsonShape({"prompt": 100, "options": 100, "tier": 5}).feed(raw)


def _png16(w: int, h: int) -> bytes:
    arr = (np.arange(w * h, dtype=np.uint32) % 65536).astype(np.uint16).reshape(h, w)
    buf = io.BytesIO()
    img = Image.fromarray(arr)
    assert img.mode == "I;16"
    img.save(buf, format="PNG")
    return buf.getvalue()


def test_images_decode_in_a_worker_thread_while_other_requests_flow(sim, tmp_path, monkeypatch):
    """A big 16-bit image is decoded off the event loop: GET /models answers while the decode is held."""
    inside = threading.Event()
    release = threading.Event()
    loop_threads: set[int] = set()
    decode = serve_body._decode_all

    def held(*a, **kw):
        loop_threads.add(threading.get_ident())
        inside.set()
        release.wait(30)
        return decode(*a, **kw)

    monkeypatch.setattr(serve_body, "_decode_all", held)
    big = base64.b64encode(_png16(2048, 2048)).decode()

    async def go():
        app = create_app(_config(sim, tmp_path))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=OWN) as c:
            edit = asyncio.ensure_future(c.post(EDIT, json={"image_base64": big, "prompt": "x"}))
            while not inside.is_set():
                await asyncio.sleep(0.001)
            models = await c.get(MODELS)  # would never answer if the decode held the loop
            release.set()
            return await edit, models, threading.get_ident()

    edit, models, loop_thread = asyncio.run(go())
    assert models.status_code == 200 and edit.status_code == 200, edit.text
    assert loop_thread not in loop_threads
    assert any("16/32-bit" in n for n in edit.json()["notes"]) or edit.json()["model"] == "qwen-edit-plus"


def test_an_image_over_the_pixel_cap_is_413_from_its_header_before_decoding(sim, tmp_path, monkeypatch):
    def never(*a, **kw):
        raise AssertionError("decoded an image that its header already refused")

    monkeypatch.setattr(serve_body, "load_image", never)
    buf = io.BytesIO()
    Image.new("L", (3000, 3000)).save(buf, format="PNG")
    with TestClient(create_app(_config(sim, tmp_path, max_image_pixels=2000 * 2000))) as c:
        r = c.post(EDIT, json={"image_base64": base64.b64encode(buf.getvalue()).decode(), "prompt": "x"})
        assert r.status_code == 413 and r.json()["error"]["category"] == "too_large", r.text
        assert "3000×3000" in r.json()["error"]["message"]
        r = c.post(EDIT, files={"image": ("big.png", buf.getvalue(), "image/png")}, data={"prompt": "x"})
        assert r.status_code == 413
    assert sim.sim.submits == []


def test_16_bit_conversion_matches_a_float_reference_without_float64_copies():
    raw = _png16(640, 480)
    img = load_image(raw)
    got = np.asarray(Image.open(io.BytesIO(img.data)))
    src = np.asarray(Image.open(io.BytesIO(raw))).astype(np.float64)
    want = np.floor(src / src.max() * 255 + 0.5).astype(np.uint8)
    assert img.mode == "L" and np.array_equal(got, want)


# ---- 6. errors that reveal nothing of the host ---------------------------------------------------------


def test_errors_do_not_show_server_paths(sim, tmp_path):
    app = create_app(_config(sim, tmp_path))
    with TestClient(app) as c:
        r = c.post(EDIT, json=_edit(tier="gold"))
        assert r.status_code == 400 and "no tier 'gold'" in r.json()["error"]["message"]
        assert str(tmp_path) not in r.text
        # the tier file vanishes before it was ever loaded: the loader's error names it by its file name only
        app.state.tier_file._current = None
        app.state.tier_file.path.unlink()
        r = c.get(MODELS)
        assert r.status_code == 503 and str(tmp_path) not in r.text and "tier_defaults.json" in r.text
    assert scrub("cannot open /srv/evalkit/ws/evalkit.sqlite: denied") == "cannot open evalkit.sqlite: denied"
    assert scrub("see GET /api/image-studio/edit/models at http://h:1/x/y") == (
        "see GET /api/image-studio/edit/models at http://h:1/x/y"
    )


# ---- 7. the usage ledger and its views ---------------------------------------------------------------


def test_usage_view_and_cli_show_todays_spend_per_tier_and_client(sim, tmp_path):
    app = create_app(_config(sim, tmp_path))
    sim.sim.add_fault("rate_limit", model="qwen-edit", retry_after_s=0.0)
    with TestClient(app) as c:
        assert c.post(EDIT, json=_edit()).status_code == 200
        assert c.post(EDIT, json=_edit(tier="free")).status_code == 200  # falls back to hidream-e1-full
        view = c.get(USAGE).json()
    tiers = {r["tier"]: r for r in view["by_tier"]}
    billed = {e.model_id: e.usd for e in sim.sim.ledger}
    assert tiers["standard"]["billed_usd"] == pytest.approx(billed["qwen-edit-plus"])
    assert tiers["free"]["requests"] == 2 and tiers["free"]["billed_usd"] == pytest.approx(billed["hidream-e1-full"])
    ledger = Workspace(tmp_path / "ws").usage(source="serve")
    free = ledger[ledger["tier"] == "free"]
    assert list(free["role"]) == ["default", "alternative"]
    assert list(free["fallbacks"]) == [[], [{"model": "qwen-edit", "category": "rate_limit"}]]
    r = CliRunner().invoke(cli_app, ["usage", "--workspace", str(tmp_path / "ws"), "--json"])
    assert r.exit_code == 0, r.output
    assert {x["tier"]: x["requests"] for x in json.loads(r.output)["by_tier"]} == {"free": 2, "standard": 1}
    r = CliRunner().invoke(cli_app, ["usage", "--workspace", str(tmp_path / "ws")], env={"COLUMNS": "100"})
    assert r.exit_code == 0 and "testclient" in r.output and max(map(len, r.output.splitlines())) <= 100


async def test_fifty_concurrent_valid_edits_are_fifty_distinct_submits_at_the_default_limits(sim, tmp_path):
    cfg = _config(sim, tmp_path, edits_per_minute=0)  # the rate limit is per client; all 50 come from one here
    assert cfg.max_in_flight is not None and cfg.max_in_flight >= 50
    app = create_app(cfg)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=OWN, timeout=120) as c:
        rs = await asyncio.gather(*(c.post(EDIT, json=_edit(user_id=f"u{i}")) for i in range(50)))
    assert [r.status_code for r in rs] == [200] * 50
    assert len({r.json()["prediction_id"] for r in rs}) == 50
    assert len(sim.sim.submits) == 50 and len({s.prediction_id for s in sim.sim.submits}) == 50
