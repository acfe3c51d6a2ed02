"""Cross-site spending, tried from a real browser: a page on ANOTHER loopback origin (a second tiny HTTP server on
127.0.0.1 with its own port) attacks ``evalkit serve``'s edit endpoint in headless Chromium (Playwright, Debian's
chromium) with what a web page can send without the user's help:

* a CORS ``fetch`` POST of JSON (preflighted), and the same JSON as ``text/plain`` (no preflight);
* a ``<form method=post enctype=multipart/form-data>`` with an image file, auto-submitted (a top-level navigation,
  so the page ends up showing the server's answer);
* ``navigator.sendBeacon`` with a JSON Blob and with a multipart FormData, and ``fetch(..., {mode: "no-cors"})``
  with a Blob body.

Every attempt must reach the server (a recording wrapper around the app says so: otherwise the browser, not the
server, would have stopped it) and be answered 403, and the WaveSpeed simulator must see no submit at all. The
positive case: the same page's origin named by ``ServeConfig(allow_origins=...)`` gets its JSON fetch through,
with the CORS headers its page needs to read the answer (one submit).

A real uvicorn server on 127.0.0.1 (port 0) per app, as in test_app_browser.py. Needs /usr/bin/chromium (or
EVALKIT_CHROMIUM) and the playwright package; skipped otherwise.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import pytest

from evalkit.catalog import Catalog
from evalkit.credentials import Secret
from evalkit.serve import ServeConfig, create_app
from evalkit.sim.server import start_in_thread
from evalkit.sim.wavespeed import SimHandle, start_wavespeed_sim
from tests.engine.test_runner import FAST_POLL
from tests.plugins.browser import CHROMIUM, CHROMIUM_ARGS, require_browser
from tests.plugins.common import make_png
from tests.plugins.sim_wavespeed import FAST_TIME_SCALE
from tests.plugins.tier_files import write_tier_defaults_file

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]

sync_api = require_browser()
WAIT_MS = 20_000
EDIT = "/api/image-studio/edit/process"
PNG_B64 = base64.b64encode(make_png(64, 48, seed=5)).decode()

# The attacker's page. `TARGET` is the edit endpoint, `VECTOR` picks the attempt; the outcome the page can see is
# written to <body data-result> and <body data-done="1"> marks the end (the form navigates away instead).
PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>not evalkit</title></head>
<body>
<form id="f" method="post" enctype="multipart/form-data" action="__TARGET__">
  <input type="hidden" name="prompt" value="spend the operator's money">
  <input type="hidden" name="tier" value="premium">
  <input type="file" name="image" id="img">
</form>
<script>
const TARGET = "__TARGET__";
const VECTOR = "__VECTOR__";
const PNG_B64 = "__PNG__";
const body = JSON.stringify({image_base64: PNG_B64, prompt: "spend the operator's money", tier: "premium"});
function pngBlob() {
  const bin = atob(PNG_B64);
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  return new Blob([bytes], {type: "image/png"});
}
function done(result) {
  document.body.dataset.result = result;
  document.body.dataset.done = "1";
}
async function attack() {
  if (VECTOR === "fetch-json") {
    const r = await fetch(TARGET, {method: "POST", headers: {"Content-Type": "application/json"}, body});
    return "status " + r.status + " " + await r.text();
  }
  if (VECTOR === "fetch-text") {
    const r = await fetch(TARGET, {method: "POST", headers: {"Content-Type": "text/plain"}, body});
    return "status " + r.status + " " + await r.text();
  }
  if (VECTOR === "form") {
    const dt = new DataTransfer();
    dt.items.add(new File([pngBlob()], "cat.png", {type: "image/png"}));
    document.getElementById("img").files = dt.files;
    document.getElementById("f").submit();
    return null;
  }
  if (VECTOR === "beacon-blob") {
    return "queued " + navigator.sendBeacon(TARGET, new Blob([body], {type: "text/plain"}));
  }
  if (VECTOR === "beacon-form") {
    const fd = new FormData();
    fd.append("prompt", "spend the operator's money");
    fd.append("image", pngBlob(), "cat.png");
    return "queued " + navigator.sendBeacon(TARGET, fd);
  }
  if (VECTOR === "no-cors-blob") {
    const blob = new Blob([body], {type: "application/json"});
    const r = await fetch(TARGET, {method: "POST", mode: "no-cors", body: blob});
    return "opaque " + r.type + " " + r.status;
  }
  return "unknown vector";
}
attack().then(r => { if (r !== null) done(r); }, e => done("error " + e.name + ": " + e.message));
</script>
</body></html>
"""


@dataclass
class Seen:
    """One request as the evalkit server saw it and answered it."""

    method: str
    path: str
    headers: dict[str, str]
    status: int | None = None


@dataclass
class Recorder:
    """An ASGI wrapper around the app that records every HTTP request and the status it was answered with."""

    app: Any
    seen: list[Seen] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        entry = Seen(scope["method"], scope["path"], {k.decode(): v.decode() for k, v in scope["headers"]})
        with self.lock:
            self.seen.append(entry)

        async def recording_send(message: dict) -> None:
            if message["type"] == "http.response.start":
                entry.status = message["status"]
            await send(message)

        await self.app(scope, receive, recording_send)

    def answered(self, timeout_s: float = 20.0) -> list[Seen]:
        """The requests seen so far, once each has been answered (a beacon arrives after its page moved on)."""
        deadline = time.monotonic() + timeout_s
        while True:
            with self.lock:
                seen = list(self.seen)
            if (seen and all(s.status is not None for s in seen)) or time.monotonic() > deadline:
                return seen
            time.sleep(0.05)

    def clear(self) -> None:
        with self.lock:
            self.seen.clear()


class AttackerSite:
    """A tiny HTTP server on 127.0.0.1 (its own port, so its own origin) serving the attacker's page:
    ``/<vector>?target=<edit URL>``."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802  (http.server's name)
                parts = urlsplit(self.path)
                query = dict(p.split("=", 1) for p in parts.query.split("&") if "=" in p)
                page = (
                    PAGE.replace("__TARGET__", query.get("target", ""))
                    .replace("__VECTOR__", parts.path.strip("/"))
                    .replace("__PNG__", PNG_B64)
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(page)))
                self.end_headers()
                self.wfile.write(page)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.origin = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="attacker-site", daemon=True)
        self.thread.start()

    def url(self, vector: str, target: str) -> str:
        return f"{self.origin}/{vector}?target={target}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)


@dataclass
class Servers:
    sim: SimHandle
    site: AttackerSite
    strict_url: str  # evalkit serve as shipped: same-origin only
    strict: Recorder
    open_url: str  # the same, with the attacker's origin named by allow_origins
    open: Recorder


@pytest.fixture(scope="module")
def servers(tmp_path_factory) -> Iterator[Servers]:
    tmp = tmp_path_factory.mktemp("serve-cross-origin")
    site = AttackerSite()
    try:
        with start_wavespeed_sim(Catalog.load(), time_scale=FAST_TIME_SCALE) as sim:

            def app(name: str, **kw: Any) -> Recorder:
                config = ServeConfig(
                    tiers=write_tier_defaults_file(tmp / f"{name}-tier_defaults.json"),
                    workspace=tmp / f"{name}-ws",
                    provider_options={
                        "wavespeed": {"base_url": sim.base_url, "api_key": Secret(sim.api_key), "poll": FAST_POLL}
                    },
                    allow_simulated=True,
                    **kw,
                )
                return Recorder(create_app(config))

            strict, open_ = app("strict"), app("open", allow_origins=(site.origin,))
            running = [start_in_thread(strict), start_in_thread(open_)]
            try:
                yield Servers(sim, site, running[0].base_url, strict, running[1].base_url, open_)
            finally:
                for r in running:
                    r.stop()
    finally:
        site.stop()


@pytest.fixture
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def _off_loopback_guard(page: Any, off_loopback: list[str]) -> None:
    page.on(
        "request",
        lambda req: (
            off_loopback.append(req.url)
            if urlsplit(req.url).hostname not in ("127.0.0.1", None) and not req.url.startswith(("data:", "blob:"))
            else None
        ),
    )


def _result(page: Any) -> str:
    page.wait_for_selector("body[data-done='1']", timeout=WAIT_MS)
    return page.get_attribute("body", "data-result") or ""


@pytest.mark.parametrize(
    ("vector", "method", "page_sees"),
    [
        # preflighted: the browser asks first (OPTIONS), is refused, and never sends the POST
        ("fetch-json", "OPTIONS", "error TypeError"),
        # a "simple" request: the POST itself arrives, and the page may not read the refusal (no CORS headers)
        ("fetch-text", "POST", "error TypeError"),
        ("beacon-blob", "POST", "queued true"),
        ("beacon-form", "POST", "queued true"),
        ("no-cors-blob", "POST", "opaque opaque 0"),
    ],
)
def test_a_page_on_another_origin_cannot_make_the_server_spend(servers, browser, vector, method, page_sees):
    servers.sim.sim.reset()
    servers.strict.clear()
    target = servers.strict_url + EDIT
    off_loopback: list[str] = []
    page = browser.new_page()
    _off_loopback_guard(page, off_loopback)
    page.goto(servers.site.url(vector, target))
    assert _result(page).startswith(page_sees)
    seen = servers.strict.answered()
    assert [(s.method, s.path, s.status) for s in seen] == [(method, EDIT, 403)]
    # the browser said where the request came from, and that is what the server refused
    assert seen[0].headers.get("origin") == servers.site.origin
    assert seen[0].headers.get("sec-fetch-site") == "same-site"  # another port of the same host
    assert servers.sim.sim.submits == []
    assert off_loopback == []


def test_a_cross_origin_multipart_form_is_refused_and_the_refusal_is_shown(servers, browser):
    servers.sim.sim.reset()
    servers.strict.clear()
    target = servers.strict_url + EDIT
    page = browser.new_page()
    with page.expect_navigation(url=target, timeout=WAIT_MS) as nav:
        page.goto(servers.site.url("form", target))
    response = nav.value
    assert response is not None and response.status == 403
    error = json.loads(page.inner_text("body"))["error"]  # the top-level navigation shows the server's answer
    assert error["category"] == "forbidden" and servers.site.origin in error["message"]
    seen = [s for s in servers.strict.answered() if s.path != "/favicon.ico"]  # the error page's icon
    assert [(s.method, s.path, s.status) for s in seen] == [("POST", EDIT, 403)]
    assert seen[0].headers["content-type"].startswith("multipart/form-data")
    assert seen[0].headers.get("origin") == servers.site.origin
    assert servers.sim.sim.submits == []


def test_an_origin_named_by_allow_origins_gets_its_json_fetch_through_with_cors(servers, browser):
    servers.sim.sim.reset()
    servers.open.clear()
    page = browser.new_page()
    page.goto(servers.site.url("fetch-json", servers.open_url + EDIT))
    result = _result(page)
    assert result.startswith("status 200 "), result
    answer = json.loads(result.removeprefix("status 200 "))
    assert answer["model"] == "flux-kontext-max" and answer["tier"] == "premium" and answer["simulated"] is True
    seen = servers.open.answered()
    assert [(s.method, s.status) for s in seen] == [("OPTIONS", 204), ("POST", 200)]
    assert [s.model_id for s in servers.sim.sim.submits] == ["flux-kontext-max"]
