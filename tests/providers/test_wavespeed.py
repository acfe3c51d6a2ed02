"""WaveSpeedEditProvider against a scripted WaveSpeed API on httpx.MockTransport (no sockets, no sleeps).

The fake answers the happy path by default (submit → created, polls → processing → completed, a CDN
URL serving a PNG); a test scripts failures by queueing replies (a Response, an exception to raise, or
a callable) on a route. Waits are recorded by an injected ``sleep`` instead of slept.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import re

import httpx
import pytest
from PIL import Image

from evalkit.catalog.spec import nearest_aspect_ratio
from evalkit.errors import Category, InvalidInputError, MissingKeyError
from evalkit.images import InputImage, load_image
from evalkit.providers.base import EditRequest, ImageEditOptions, ImageEditProvider, capabilities_of
from evalkit.providers.retry import RetryPolicy
from evalkit.providers.wavespeed import (
    DEFAULT_BASE_URL,
    PollSchedule,
    WaveSpeedEditProvider,
    category_for_task,
)
from tests.plugins.common import make_png

CANARY = "sk-canary-XXXX-7f3a9c"
BASE = "https://ws.test"
CDN = "https://cdn.test"
STORAGE = "https://storage.test"
PID = "0123456789abcdef0123456789abcdef"

# Parameter names each model's documentation lists (shared/reference/wavespeed-api.md §3 and the 2026
# addendum wavespeed-models-2026.md §1–2). A body may only use these — independent of the catalogue, so a
# catalogue typo fails here. Flags only where the page lists them (addendum §1.5).
SYNC_B64 = {"enable_sync_mode", "enable_base64_output"}
DOCUMENTED_KEYS: dict[str, set[str]] = {
    "qwen-edit": {"prompt", "image", "size", "seed", "output_format"} | SYNC_B64,
    "qwen-edit-plus": {"prompt", "images", "size", "seed", "output_format"} | SYNC_B64,
    "nano-banana-pro-edit-ultra": {"prompt", "images", "aspect_ratio", "resolution", "output_format"} | SYNC_B64,
    "nano-banana-pro-edit": {"prompt", "images", "aspect_ratio", "resolution", "output_format"} | SYNC_B64,
    "nano-banana-edit": {"prompt", "images", "aspect_ratio", "output_format"} | SYNC_B64,
    "seedream-v4.5-edit": {"prompt", "images", "size"} | SYNC_B64,
    "seedream-v4-edit": {"prompt", "images", "size"} | SYNC_B64,
    "step1x-edit": {"prompt", "image", "negative_prompt", "seed", "guidance_scale", "num_inference_steps"},
    "hidream-e1-full": {"prompt", "image", "seed", "output_format", "enable_base64_output"},
    "seededit-v3": {"prompt", "image", "guidance_scale", "seed", "enable_base64_output"},
    "wan-2.5-image-edit": {"prompt", "images", "size", "seed", "negative_prompt"},
    "flux-kontext-pro": {"prompt", "image", "guidance_scale", "aspect_ratio", "enable_sync_mode"},
    "flux-kontext-pro-multi": {"prompt", "images", "seed", "guidance_scale", "aspect_ratio", "enable_sync_mode"},
    "flux-kontext-max": {"prompt", "image", "seed", "guidance_scale", "aspect_ratio", "enable_sync_mode"},
    "ideogram-character": {"prompt", "image", "style", "rendering_speed", "aspect_ratio", "enable_base64_output"},
    "gpt-image-1-edit": {"prompt", "image", "quality", "mask_image", "size"} | SYNC_B64,
    "z-image-turbo-inpaint": {"prompt", "image", "mask_image", "size", "seed", "output_format"} | SYNC_B64,
    "image-zoom-out": {"image", "size", "output_format"} | SYNC_B64,
    # newer edit models (addendum §2)
    "qwen-edit-2511": {"prompt", "images", "size", "seed", "output_format"},
    "qwen-image-2.0-edit": {"prompt", "images", "seed"},
    "nano-banana-2-edit": {"prompt", "images", "aspect_ratio", "resolution", "output_format"},
    "nano-banana-pro-edit-multi": {"prompt", "images", "aspect_ratio", "num_images", "output_format"},
    "gpt-image-1.5-edit": {"prompt", "images", "size", "quality", "background"},
    "gpt-image-2-edit": {"prompt", "images", "aspect_ratio", "resolution", "quality"},
    "seedream-v5.0-lite-edit": {"prompt", "images"} | SYNC_B64,
    "grok-imagine-v2-edit": {"prompt", "images", "resolution", "quality"},
    "flux-2-pro-edit": {"prompt", "images", "seed"},
    "flux-2-dev-edit": {"prompt", "images"},
    "wan-2.6-image-edit": {"prompt", "images", "size", "seed"},
    "flux-kontext-max-multi": {"prompt", "images", "aspect_ratio", "enable_sync_mode"},
}


def png_bytes(w: int = 40, h: int = 30, seed: int = 1) -> bytes:
    return make_png(w, h, seed=seed)


def half_white_mask(w: int, h: int) -> bytes:
    img = Image.new("L", (w, h), 0)
    img.paste(255, (0, 0, w // 2, h))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


class FakeWaveSpeed:
    """A scripted WaveSpeed API (submit, result polls, CDN downloads, media uploads)."""

    def __init__(self, image: bytes | None = None, *, progress: tuple[str, ...] = ("processing", "completed")):
        self.image = image or png_bytes()
        self.progress = progress
        self.requests: list[httpx.Request] = []
        self.events: list[str] = []
        self.submit_script: list = []
        self.poll_script: list = []
        self.download_script: list = []
        self.polls_by_id: dict[str, int] = {}
        self.completed: dict = {}  # overrides merged into the completed prediction's data
        self.failed: dict | None = None  # when set, the terminal state is this failure
        self.submitted_bodies: list[dict] = []
        self.headers: dict[str, str] = {}
        self.uploads = 0
        self.puts: list[httpx.Request] = []

    # routes ------------------------------------------------------------------------------
    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        url = request.url
        if request.method == "POST" and url.path == "/api/v3/media/uploads":
            self.events.append("ticket")
            self.uploads += 1
            n = self.uploads
            return self._json(
                {
                    "code": 200,
                    "message": "success",
                    "data": {
                        "type": "image",
                        "download_url": f"{CDN}/uploads/{n}.png",
                        "filename": "x.png",
                        "size": 1,
                        "upload": {
                            "method": "PUT",
                            "url": f"{STORAGE}/put/{n}?sig=secret-sig",
                            "headers": {"Content-Type": "image/png"},
                        },
                    },
                }
            )
        if request.method == "PUT" and url.host == "storage.test":
            self.events.append("put")
            self.puts.append(request)
            return httpx.Response(200)
        if request.method == "POST" and url.path.startswith("/api/v3/"):
            self.events.append("submit")
            self.submitted_bodies.append(json.loads(request.content))
            scripted = self._scripted(self.submit_script, request)
            if scripted is not None:
                return scripted
            return self._json(self._envelope(PID, "created"))
        if request.method == "GET" and url.path.startswith("/api/v3/predictions/"):
            self.events.append("poll")
            pid = url.path.split("/")[4]
            scripted = self._scripted(self.poll_script, request)
            if scripted is not None:
                return scripted
            i = self.polls_by_id.get(pid, 0)
            self.polls_by_id[pid] = i + 1
            status = self.progress[min(i, len(self.progress) - 1)]
            if status == "completed" and self.failed is not None:
                return self._json(self._envelope(pid, "failed", **self.failed))
            if status == "completed":
                fields = {
                    "outputs": [f"{CDN}/out/{pid}.png"],
                    "has_nsfw_contents": [False],
                    "timings": {"inference": 1234},
                    "executionTime": 1234,
                }
                fields.update(self.completed)
                return self._json(self._envelope(pid, "completed", **fields))
            return self._json(self._envelope(pid, status))
        if request.method == "GET" and url.host == "cdn.test":
            self.events.append("download")
            scripted = self._scripted(self.download_script, request)
            if scripted is not None:
                return scripted
            return httpx.Response(200, content=self.image, headers={"Content-Type": "image/png", **self.headers})
        return httpx.Response(599, text=f"fake: no route for {request.method} {url}")

    # helpers -----------------------------------------------------------------------------
    def _json(self, obj: dict, status: int = 200) -> httpx.Response:
        return httpx.Response(status, json=obj, headers=self.headers)

    @staticmethod
    def _envelope(pid: str, status: str, **data) -> dict:
        d = {
            "id": pid,
            "model": "x/y",
            "outputs": [],
            "urls": {"get": f"{BASE}/api/v3/predictions/{pid}/result"},
            "has_nsfw_contents": [],
            "status": status,
            "created_at": "2025-09-29T23:09:43.027Z",
            "error": "",
            "executionTime": 0,
            "timings": {"inference": 0},
        }
        d.update(data)
        return {"code": 200, "message": "success", "data": d}

    @staticmethod
    def _scripted(script: list, request: httpx.Request) -> httpx.Response | None:
        if not script:
            return None
        item = script.pop(0)
        if isinstance(item, BaseException):
            raise item
        if callable(item):
            return item(request)
        return item

    def count(self, event: str) -> int:
        return self.events.count(event)


class Harness:
    def __init__(self, api: FakeWaveSpeed, client: httpx.AsyncClient):
        self.api = api
        self.client = client
        self.sleeps: list[float] = []
        self.providers: list[WaveSpeedEditProvider] = []

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        await asyncio.sleep(0)

    def provider(self, **kw) -> WaveSpeedEditProvider:
        kw.setdefault("retry", RetryPolicy(max_attempts=4, base_s=0.5, jitter=False))
        kw.setdefault("poll", PollSchedule(adaptive=False))  # the fixed schedule; adaptive pacing: tests below
        kw.setdefault("sleep", self.sleep)
        p = WaveSpeedEditProvider(base_url=BASE, client=self.client, **kw)
        self.providers.append(p)
        return p


@pytest.fixture(autouse=True)
def _env(monkeypatch):
    monkeypatch.setenv("WAVESPEED_API_KEY", CANARY)
    monkeypatch.delenv("WAVESPEED_BASE_URL", raising=False)


@pytest.fixture
async def h():
    api = FakeWaveSpeed()
    client = httpx.AsyncClient(transport=httpx.MockTransport(api.handler))
    harness = Harness(api, client)
    yield harness
    await client.aclose()


@pytest.fixture
def img():
    return load_image(png_bytes(300, 200, seed=5), name="input.png")


def build_body(request: EditRequest, image_encoder=InputImage.data_uri) -> dict:
    """The JSON body the provider would POST for ``request`` (no I/O)."""
    return WaveSpeedEditProvider(base_url=BASE).build_body(request, image_encoder)


def request_for(catalog, model_id: str, image, **kw) -> EditRequest:
    m = catalog.get(model_id)
    kw.setdefault("prompt", "make the sky purple")
    kw.setdefault("operation", m.operations[0])
    return EditRequest(model=m, images=(image,), **kw)


def wavespeed_ids(catalog=None) -> list[str]:
    from evalkit.catalog import Catalog

    return [m.id for m in (catalog or Catalog.load()) if m.provider == "wavespeed"]


# ---- request bodies -------------------------------------------------------------------------


def test_every_catalogue_model_has_a_documented_parameter_table(catalog):
    assert set(wavespeed_ids(catalog)) == set(DOCUMENTED_KEYS)


@pytest.mark.parametrize("model_id", wavespeed_ids())
def test_body_uses_documented_names_and_ranges(catalog, img, model_id):
    m = catalog.get(model_id)
    if (m.limits.min_input_side or 0) > min(img.width, img.height):  # e.g. Qwen-Image 2.0: sides ≥ 384 px
        img = load_image(png_bytes(600, 400, seed=5), name="input.png")  # same 3:2 aspect
    mask = load_image(half_white_mask(300, 200), name="mask.png") if m.mask else None
    req = request_for(catalog, model_id, img, mask=mask, options=ImageEditOptions(seed=7))
    provider = WaveSpeedEditProvider(base_url=BASE, sync_mode=True, base64_output=True)
    body = provider.build_body(req, image_encoder=lambda i: f"<img:{i.sha256[:8]}>")

    assert set(body) <= DOCUMENTED_KEYS[model_id], set(body) - DOCUMENTED_KEYS[model_id]
    # one image string vs an array of them
    if m.inputs.param == "images":
        assert body["images"] == [f"<img:{img.sha256[:8]}>"] and "image" not in body
    else:
        assert body["image"] == f"<img:{img.sha256[:8]}>" and "images" not in body
    # prompt: never for the zoom-out model, always otherwise
    if model_id == "image-zoom-out":
        assert "prompt" not in body
    else:
        assert body["prompt"] == "make the sky purple"
    # seed only where the model takes one
    assert ("seed" in body) == (m.seed is not None)
    if m.seed is not None:
        assert body["seed"] == 7
    # flags only where the catalogue lists them
    assert body.get("enable_sync_mode") is (True if m.sync_mode else None)
    assert body.get("enable_base64_output") is (True if m.base64_output else None)
    # size rules
    if m.size.kind == "wh":
        w, h = map(int, re.fullmatch(r"(\d+)\*(\d+)", body["size"]).groups())
        assert m.size.min_px <= w <= m.size.max_px and m.size.min_px <= h <= m.size.max_px
        assert abs(w / h - 300 / 200) < 0.01  # aspect kept
    elif m.size.kind == "aspect_ratio":
        if m.size.aspect_ratios:
            assert body["aspect_ratio"] == nearest_aspect_ratio(300, 200, m.size.aspect_ratios)
            assert body["aspect_ratio"] in m.size.aspect_ratios
        else:  # the ratio list is unknown: none is sent, the provider follows the input (gpt-image-2, grok v2)
            assert "aspect_ratio" not in body
        if m.size.resolutions:
            assert body["resolution"] == m.size.default_resolution  # size from the input: cheapest tier
    elif m.size.kind == "enum":
        assert body["size"] in m.size.values
    else:  # no known size rule: nothing size-like is sent (the provider validates / decides)
        assert not {"size", "aspect_ratio", "resolution"} & set(body)
    # a mask goes in mask_image only where the model takes one
    assert ("mask_image" in body) == (m.mask is not None)


def test_explicit_sizes_fit_the_range_keeping_aspect(catalog, img):
    def body(model_id, w, h):
        return build_body(
            request_for(catalog, model_id, img, options=ImageEditOptions(width=w, height=h)), lambda i: "x"
        )

    assert body("qwen-edit", 3000, 2000)["size"] == "1536*1024"  # scaled down into 256–1536
    assert body("seedream-v4.5-edit", 640, 480)["size"] == "1365*1024"  # scaled up to ≥1024
    assert body("wan-2.5-image-edit", 1280, 720)["size"] == "1280*720"  # in range: untouched
    ultra = body("nano-banana-pro-edit-ultra", 6000, 4000)
    assert (ultra["aspect_ratio"], ultra["resolution"]) == ("3:2", "8k")
    pro = body("nano-banana-pro-edit", 2000, 1500)
    assert (pro["aspect_ratio"], pro["resolution"]) == ("4:3", "2k")
    assert body("flux-kontext-pro", 1920, 1080)["aspect_ratio"] == "16:9"


def test_multi_image_models_send_every_image_as_data_uris(catalog, img):
    other = load_image(png_bytes(300, 200, seed=9), name="ref.png")
    req = EditRequest(
        model=catalog.get("qwen-edit-plus"), images=(img, other), prompt="combine", operation="multi_image"
    )
    body = build_body(req)
    assert len(body["images"]) == 2
    decoded = [base64.b64decode(u.split(",", 1)[1]) for u in body["images"]]
    assert all(u.startswith("data:image/png;base64,") for u in body["images"])
    assert decoded == [img.data, other.data]


@pytest.mark.parametrize(
    "model_id,convention", [("gpt-image-1-edit", "transparent"), ("z-image-turbo-inpaint", "white")]
)
def test_mask_sent_in_the_models_convention(catalog, img, model_id, convention):
    mask = load_image(half_white_mask(300, 200), name="mask.png")
    req = request_for(catalog, model_id, img, mask=mask, operation="inpaint")
    body = build_body(req)
    m_img = Image.open(io.BytesIO(base64.b64decode(body["mask_image"].split(",", 1)[1])))
    assert m_img.size == (300, 200)
    if convention == "transparent":  # transparent pixels = region to edit
        alpha = m_img.getchannel("A")
        assert alpha.getpixel((10, 100)) == 0 and alpha.getpixel((290, 100)) == 255
    else:  # white pixels = region to edit
        l_img = m_img.convert("L")
        assert l_img.getpixel((10, 100)) == 255 and l_img.getpixel((290, 100)) == 0


def test_seed_dropped_with_a_note_where_unsupported(catalog, img):
    provider = WaveSpeedEditProvider(base_url=BASE)
    prepared = provider.prepare(request_for(catalog, "seedream-v4.5-edit", img, options=ImageEditOptions(seed=3)))
    assert "seed" not in prepared.params
    assert any("seed" in n for n in prepared.notes)


def test_flags_not_sent_unless_enabled(catalog, img):
    body = WaveSpeedEditProvider(base_url=BASE).build_body(request_for(catalog, "qwen-edit", img))
    assert "enable_sync_mode" not in body and "enable_base64_output" not in body


def test_provider_satisfies_the_protocol_and_configuration(monkeypatch):
    monkeypatch.setenv("WAVESPEED_BASE_URL", "http://127.0.0.1:9999/")
    p = WaveSpeedEditProvider()
    assert isinstance(p, ImageEditProvider)
    assert p.name == "wavespeed" and capabilities_of(p).resumable is True
    assert p.base_url == "http://127.0.0.1:9999"
    monkeypatch.delenv("WAVESPEED_BASE_URL")
    assert WaveSpeedEditProvider().base_url == DEFAULT_BASE_URL
    with pytest.raises(InvalidInputError):
        WaveSpeedEditProvider(base_url="ftp://example.invalid")


def test_poll_schedule_respects_two_seconds_after_quick_polls():
    s = PollSchedule()
    delays = [s.delay_s(n) for n in range(40)]
    assert delays[0] < 2.0  # quick first poll for fast models
    assert all(d >= 2.0 for d in delays[s.quick_polls :])
    assert all(d <= s.max_interval_s for d in delays)
    assert delays == sorted(delays)
    with pytest.raises(InvalidInputError):
        PollSchedule(timeout_s=0)


async def _edit_and_record_sleeps(h, provider, req, *, inference_ms=None):
    """One edit on the fake (its scripted progress from the start); the waits it made."""
    h.api.polls_by_id.clear()
    if inference_ms is not None:
        h.api.completed = {"timings": {"inference": inference_ms}, "executionTime": inference_ms}
    h.sleeps.clear()
    outcome = await provider.edit(req)
    assert outcome.ok, outcome.error
    return list(h.sleeps)


async def test_the_first_poll_waits_the_fastest_inference_seen_for_that_model(h, catalog, img):
    """No task of a model finishes sooner than its fastest reported inference, so polls before it are
    wasted: after one completed edit, the next edit of that model polls first after that time; later
    polls, other models and the slowest completions do not change the schedule."""
    p = h.provider()
    schedule = PollSchedule()
    qwen, kontext = request_for(catalog, "qwen-edit", img), request_for(catalog, "flux-kontext-pro", img)

    first = await _edit_and_record_sleeps(h, p, qwen, inference_ms=6000)
    assert first == [schedule.delay_s(0), schedule.delay_s(1)]  # nothing known yet: the plain schedule
    second = await _edit_and_record_sleeps(h, p, qwen, inference_ms=9000)
    assert second == [6.0, schedule.delay_s(1)]  # the fastest (6 s), then the schedule goes on
    third = await _edit_and_record_sleeps(h, p, qwen, inference_ms=4000)
    assert third == [6.0, schedule.delay_s(1)]  # 9 s did not raise it; 4 s lowers it for the next one
    assert (await _edit_and_record_sleeps(h, p, qwen))[0] == 4.0
    assert (await _edit_and_record_sleeps(h, p, kontext))[0] == schedule.delay_s(0)  # another model: unknown

    h.api.polls_by_id.clear()
    h.sleeps.clear()
    assert (await p.resume(qwen, PID)).ok  # a resumed task may be long done: the plain schedule
    assert h.sleeps[0] == schedule.delay_s(0)


async def test_adaptive_pacing_polls_new_tasks_once_just_after_they_finish_and_keeps_two_seconds(h, catalog, img):
    """With PollSchedule(adaptive=True) the first poll of a new task waits the model's completion-time quantile
    (plus a margin) once a few tasks have shown it, and every later poll of a task keeps ≥ min_interval_s."""
    p = h.provider(poll=PollSchedule(adaptive=True))
    assert p.pacer is not None
    qwen = request_for(catalog, "qwen-edit", img)
    cfg = p.pacer.config
    first = await _edit_and_record_sleeps(h, p, qwen, inference_ms=3000)
    # nothing known yet: the first task probes the model (its first poll early), later polls keep 2 s apart
    assert first[0] == pytest.approx(cfg.probe_first_s, abs=0.05) and all(d >= 2.0 for d in first[1:])
    for _ in range(3):
        await _edit_and_record_sleeps(h, p, qwen, inference_ms=3000)
    expected = 3.0 + p.pacer.margin_s("qwen-edit")
    h.api.polls_by_id.clear()
    h.api.completed = {"timings": {"inference": 3000}, "executionTime": 3000}
    h.sleeps.clear()
    p.pacer.seed("qwen-edit", [3.0] * 10)
    outcome = await p.edit(qwen)
    assert outcome.ok and h.sleeps[0] == pytest.approx(expected, abs=0.05)
    assert all(d >= cfg.min_interval_s for d in h.sleeps[1:])
    h.sleeps.clear()
    h.api.polls_by_id.clear()
    assert (await p.resume(qwen, PID)).ok  # a resumed task may be long done: the plain schedule
    assert h.sleeps[0] == PollSchedule().delay_s(0)
    assert PollSchedule(adaptive=False).pacer() is None


async def test_a_learnt_first_delay_never_replaces_a_shorter_schedule_or_an_explicit_one(h, catalog, img):
    qwen = request_for(catalog, "qwen-edit", img)
    fast_model = h.provider()
    await _edit_and_record_sleeps(h, fast_model, qwen, inference_ms=200)  # faster than the first scheduled poll
    assert (await _edit_and_record_sleeps(h, fast_model, qwen))[0] == PollSchedule().delay_s(0)

    explicit = h.provider(poll=PollSchedule(first_delay_s=0.5))  # explicit: wins over adaptive pacing too
    await _edit_and_record_sleeps(h, explicit, qwen, inference_ms=6000)
    assert (await _edit_and_record_sleeps(h, explicit, qwen))[0] == 0.5

    off = h.provider(poll=PollSchedule(learn_first_delay=False, adaptive=False))
    await _edit_and_record_sleeps(h, off, qwen, inference_ms=6000)
    assert (await _edit_and_record_sleeps(h, off, qwen))[0] == PollSchedule().delay_s(0)

    capped = h.provider(
        poll=PollSchedule(timeout_s=8.0, adaptive=False)
    )  # a learnt delay leaves room to poll before the timeout
    await _edit_and_record_sleeps(h, capped, qwen, inference_ms=60000)
    assert (await _edit_and_record_sleeps(h, capped, qwen))[0] == 4.0


def test_learning_the_first_delay_can_be_switched_off_from_the_environment(monkeypatch):
    assert PollSchedule.from_env().learn_first_delay is True
    monkeypatch.setenv("EVALKIT_POLL_LEARN_FIRST_DELAY", "0")
    assert PollSchedule.from_env().learn_first_delay is False
    monkeypatch.setenv("EVALKIT_POLL_LEARN_FIRST_DELAY", "maybe")
    with pytest.raises(InvalidInputError, match="EVALKIT_POLL_LEARN_FIRST_DELAY"):
        PollSchedule.from_env()


@pytest.mark.parametrize(
    "code,status,expected",
    [
        (1200, "failed", Category.MODERATION),
        (1400, "failed", Category.BAD_REQUEST),
        (1401, "failed", Category.BAD_REQUEST),
        (1402, "failed", Category.BAD_REQUEST),
        (1403, "failed", Category.TASK_FAILED),
        (1405, "failed", Category.TASK_FAILED),
        (5000, "failed", Category.SERVER),
        (5003, "failed", Category.SERVER),
        (5004, "timeout", Category.SERVER),
        (4242, "failed", Category.TASK_FAILED),
        (None, "cancelled", Category.CANCELLED),
        (None, "failed", Category.TASK_FAILED),
    ],
)
def test_task_codes_map_to_categories(code, status, expected):
    assert category_for_task(code, status) == expected


# ---- lifecycle ------------------------------------------------------------------------------


async def test_submit_poll_download_outcome(h, catalog, img):
    p = h.provider()
    outcome = await p.edit(request_for(catalog, "qwen-edit", img))
    assert outcome.ok, outcome.error
    assert outcome.image == h.api.image and outcome.image_path is None
    assert outcome.image_sha256 == __import__("hashlib").sha256(h.api.image).hexdigest()
    assert (outcome.format, outcome.width, outcome.height) == ("png", 40, 30)
    assert outcome.cost_usd == pytest.approx(0.02) and outcome.cost_source == "list_price"
    assert outcome.prediction_id == PID
    assert not outcome.nsfw and not outcome.simulated and outcome.error is None
    lat = outcome.latency
    assert lat.inference_ms == 1234
    for v in (lat.submit_ms, lat.queue_ms, lat.download_ms, lat.total_ms):
        assert v is not None and v >= 0
    assert outcome.metadata["status"] == "completed"
    assert outcome.metadata["params"]["image"] == {"$image": img.sha256}
    assert "data:" not in json.dumps(outcome.metadata)
    # the wire: auth on the API, never on the CDN; the image inline as a data URI
    assert h.api.events == ["submit", "poll", "poll", "download"]
    sub, poll, _, dl = h.api.requests
    assert sub.url.path == "/api/v3/wavespeed-ai/qwen-image/edit"
    assert sub.headers["authorization"] == f"Bearer {CANARY}" and poll.headers["authorization"] == f"Bearer {CANARY}"
    assert poll.url.path == f"/api/v3/predictions/{PID}/result"
    assert "authorization" not in dl.headers
    assert h.api.submitted_bodies[0]["image"] == img.data_uri()
    # the poll spacing followed the schedule
    assert h.sleeps == [PollSchedule().delay_s(0), PollSchedule().delay_s(1)]


async def test_output_streamed_into_the_spool_dir(h, catalog, img, tmp_path):
    req = request_for(catalog, "qwen-edit", img, spool_dir=tmp_path / "spool")
    outcome = await h.provider().edit(req)
    assert outcome.ok and outcome.image is None
    assert outcome.image_path.parent == tmp_path / "spool" and outcome.image_path.suffix == ".png"
    assert outcome.image_path.read_bytes() == h.api.image == outcome.read_image()
    assert not list((tmp_path / "spool").glob("*.part"))


async def test_on_submitted_awaited_before_the_first_poll(h, catalog, img):
    seen = []

    async def hook(pid: str) -> None:
        await asyncio.sleep(0)
        seen.append((pid, h.api.count("poll")))

    outcome = await h.provider().edit(request_for(catalog, "qwen-edit", img), on_submitted=hook)
    assert outcome.ok
    assert seen == [(PID, 0)]
    assert h.api.count("poll") == 2


async def test_a_failing_hook_does_not_lose_the_paid_task(h, catalog, img):
    async def hook(pid: str) -> None:
        raise RuntimeError("disk full")

    outcome = await h.provider().edit(request_for(catalog, "qwen-edit", img), on_submitted=hook)
    assert outcome.ok
    assert "disk full" in outcome.metadata["on_submitted_error"]


async def test_resume_polls_and_downloads_without_posting(h, catalog, img):
    outcome = await h.provider().resume(request_for(catalog, "qwen-edit", img), "feedc0de")
    assert outcome.ok and outcome.prediction_id == "feedc0de"
    assert h.api.count("submit") == 0 and not any(r.method == "POST" for r in h.api.requests)
    assert h.api.count("poll") == 2 and h.api.count("download") == 1
    with pytest.raises(InvalidInputError):
        await h.provider().resume(request_for(catalog, "qwen-edit", img), "../../etc/passwd")


async def test_missing_key_raises_only_at_first_call(h, catalog, img, monkeypatch):
    monkeypatch.delenv("WAVESPEED_API_KEY")
    p = h.provider()
    assert "unset" in repr(p)
    assert p.prepare(request_for(catalog, "qwen-edit", img)).price_usd == pytest.approx(0.02)
    with pytest.raises(MissingKeyError) as exc:
        await p.edit(request_for(catalog, "qwen-edit", img))
    assert "WAVESPEED_API_KEY" in str(exc.value)
    assert h.api.requests == []


# ---- submit retries: only when provably not accepted ----------------------------------------


async def test_submit_429_with_retry_after_then_success(h, catalog, img):
    h.api.submit_script = [
        httpx.Response(429, json={"code": 429, "message": "too many requests"}, headers={"Retry-After": "7"})
    ]
    outcome = await h.provider().edit(request_for(catalog, "qwen-edit", img))
    assert outcome.ok
    assert h.api.count("submit") == 2
    assert h.sleeps[0] == 7.0  # Retry-After honoured before the re-send


async def test_submit_503_is_not_resent_by_default(h, catalog, img):
    """503 does not prove the task was not created: an unknown outcome, like the official SDK."""
    h.api.submit_script = [httpx.Response(503, text="service unavailable")]
    outcome = await h.provider().edit(request_for(catalog, "qwen-edit", img))
    assert outcome.error.category == Category.UNKNOWN_OUTCOME and h.api.count("submit") == 1
    assert outcome.cost_usd is None


async def test_submit_503_is_retried_when_opted_in(h, catalog, img):
    h.api.submit_script = [httpx.Response(503, text="service unavailable"), httpx.Response(503)]
    outcome = await h.provider(resend_submit_on_503=True).edit(request_for(catalog, "qwen-edit", img))
    assert outcome.ok and h.api.count("submit") == 3
    assert h.sleeps[:2] == [0.5, 1.0]  # policy backoff without jitter


async def test_submit_connect_error_is_retried(h, catalog, img):
    h.api.submit_script = [httpx.ConnectError("refused"), httpx.ConnectTimeout("slow connect")]
    outcome = await h.provider().edit(request_for(catalog, "qwen-edit", img))
    assert outcome.ok and h.api.count("submit") == 3


async def test_submit_429_forever_gives_up_as_rate_limit(h, catalog, img):
    h.api.submit_script = [httpx.Response(429, headers={"Retry-After": "1"}) for _ in range(10)]
    outcome = await h.provider().edit(request_for(catalog, "qwen-edit", img))
    assert not outcome.ok and outcome.error.category == Category.RATE_LIMIT
    assert h.api.count("submit") == 4 and outcome.cost_usd == 0.0
    assert "nothing was created" in outcome.error.message


@pytest.mark.parametrize("status", [500, 502, 504])
async def test_submit_5xx_after_sending_is_unknown_not_resent(h, catalog, img, status):
    h.api.submit_script = [httpx.Response(status, text="upstream trouble")]
    outcome = await h.provider().edit(request_for(catalog, "qwen-edit", img))
    assert not outcome.ok and outcome.error.category == Category.UNKNOWN_OUTCOME
    assert h.api.count("submit") == 1 and h.api.count("poll") == 0
    assert outcome.cost_usd is None and outcome.cost_source == "unknown"
    assert "not sent again" in outcome.error.message


@pytest.mark.parametrize(
    "exc",
    [
        httpx.ReadTimeout("read timed out"),
        httpx.RemoteProtocolError("peer closed"),
        httpx.WriteError("broken pipe"),
        httpx.ReadError("reset"),
    ],
)
async def test_submit_transport_failure_after_sending_is_unknown(h, catalog, img, exc):
    h.api.submit_script = [exc]
    outcome = await h.provider().edit(request_for(catalog, "qwen-edit", img))
    assert outcome.error.category == Category.UNKNOWN_OUTCOME
    assert h.api.count("submit") == 1


async def test_submit_200_without_id_or_json_is_unknown(h, catalog, img):
    h.api.submit_script = [httpx.Response(200, json={"code": 200, "data": {"status": "created"}})]
    outcome = await h.provider().edit(request_for(catalog, "qwen-edit", img))
    assert outcome.error.category == Category.UNKNOWN_OUTCOME and "prediction id" in outcome.error.message
    h.api.submit_script = [httpx.Response(200, text="<html>gateway</html>")]
    outcome = await h.provider().edit(request_for(catalog, "qwen-edit", img))
    assert outcome.error.category == Category.UNKNOWN_OUTCOME and "not JSON" in outcome.error.message
    assert h.api.count("submit") == 2 and h.api.count("poll") == 0


async def test_submit_5xx_envelope_saying_failed_is_server(h, catalog, img):
    h.api.submit_script = [
        httpx.Response(
            500, json={"code": 500, "message": "internal error", "data": {"status": "failed", "error": "boom"}}
        )
    ]
    outcome = await h.provider().edit(request_for(catalog, "qwen-edit", img))
    assert outcome.error.category == Category.SERVER and h.api.count("submit") == 1


async def test_submit_5xx_carrying_an_id_is_accepted_and_polled(h, catalog, img):
    h.api.submit_script = [httpx.Response(502, json=FakeWaveSpeed._envelope(PID, "created"))]
    ids = []

    async def hook(pid):
        ids.append(pid)

    outcome = await h.provider().edit(request_for(catalog, "qwen-edit", img), on_submitted=hook)
    assert outcome.ok and ids == [PID] and h.api.count("submit") == 1


@pytest.mark.parametrize(
    "status,category,needle",
    [
        (401, Category.AUTH, "check the key"),
        (403, Category.AUTH, "account balance"),
        (400, Category.BAD_REQUEST, "size must be"),
        (404, Category.BAD_REQUEST, "size must be"),
        (422, Category.BAD_REQUEST, "size must be"),
    ],
)
async def test_submit_http_errors_map_to_categories(h, catalog, img, status, category, needle):
    h.api.submit_script = [httpx.Response(status, json={"code": status, "message": "size must be W*H"})]
    outcome = await h.provider().edit(request_for(catalog, "qwen-edit", img))
    assert outcome.error.category == category and outcome.error.status_code == status
    assert needle in outcome.error.message
    assert h.api.count("submit") == 1 and outcome.cost_usd == 0.0


async def test_http_200_with_a_4xx_envelope_is_a_refusal(h, catalog, img):
    h.api.submit_script = [httpx.Response(200, json={"code": 401, "message": "invalid api key"})]
    outcome = await h.provider().edit(request_for(catalog, "qwen-edit", img))
    assert outcome.error.category == Category.AUTH and "invalid api key" in outcome.error.message


# ---- polls and downloads --------------------------------------------------------------------


async def test_poll_5xx_and_transport_errors_are_retried(h, catalog, img):
    h.api.poll_script = [httpx.Response(503), httpx.Response(500), httpx.ReadTimeout("slow"), httpx.ConnectError("x")]
    outcome = await h.provider(retry=RetryPolicy(max_attempts=5, jitter=False)).edit(
        request_for(catalog, "qwen-edit", img)
    )
    assert outcome.ok and h.api.count("submit") == 1


async def test_poll_429_honours_retry_after(h, catalog, img):
    h.api.poll_script = [httpx.Response(429, headers={"Retry-After": "4"})]
    outcome = await h.provider().edit(request_for(catalog, "qwen-edit", img))
    assert outcome.ok and 4.0 in h.sleeps


async def test_poll_failing_for_good_keeps_the_prediction_id(h, catalog, img):
    h.api.poll_script = [httpx.Response(503) for _ in range(10)]
    outcome = await h.provider().edit(request_for(catalog, "qwen-edit", img))
    assert outcome.error.category == Category.SERVER and outcome.prediction_id == PID
    assert outcome.cost_source == "unknown" and "resume" in outcome.error.message
    assert h.api.count("submit") == 1


async def test_garbage_poll_is_retried_then_reported_clearly(h, catalog, img):
    h.api.poll_script = [httpx.Response(200, text="<<<not json>>>")]
    assert (await h.provider().edit(request_for(catalog, "qwen-edit", img))).ok
    h.api.poll_script = [httpx.Response(200, text="<<<not json>>>") for _ in range(10)]
    outcome = await h.provider().edit(request_for(catalog, "qwen-edit", img))
    assert outcome.error.category == Category.SERVER
    assert "not JSON" in outcome.error.message and outcome.prediction_id == PID
    h.api.poll_script = [httpx.Response(200, json={"code": 200, "data": {"unexpected": 1}}) for _ in range(10)]
    outcome = await h.provider().edit(request_for(catalog, "qwen-edit", img))
    assert outcome.error.category == Category.SERVER and "data.status" in outcome.error.message


async def test_poll_auth_failure_is_not_retried(h, catalog, img):
    h.api.poll_script = [httpx.Response(401, json={"message": "bad key"})]
    outcome = await h.provider().edit(request_for(catalog, "qwen-edit", img))
    assert outcome.error.category == Category.AUTH and h.api.count("poll") == 1


@pytest.mark.parametrize("kind", ["truncated", "html", "empty"])
async def test_bad_downloads_are_bad_output(h, catalog, img, kind, tmp_path):
    body = {"truncated": h.api.image[: len(h.api.image) // 2], "html": b"<html>oops</html>", "empty": b""}[kind]
    h.api.download_script = [httpx.Response(200, content=body, headers={"Content-Type": "image/png"})]
    outcome = await h.provider().edit(request_for(catalog, "qwen-edit", img, spool_dir=tmp_path))
    assert outcome.error.category == Category.BAD_OUTPUT, outcome.error
    assert outcome.cost_usd == pytest.approx(0.02)  # the task completed: it was billed
    assert outcome.prediction_id == PID
    assert list(tmp_path.iterdir()) == []  # the partial file was removed


async def test_download_over_the_cap_is_refused(h, catalog, img):
    outcome = await h.provider(max_download_bytes=100).edit(request_for(catalog, "qwen-edit", img))
    assert outcome.error.category == Category.BAD_OUTPUT and "cap" in outcome.error.message


async def test_download_5xx_is_retried(h, catalog, img):
    h.api.download_script = [httpx.Response(503), httpx.RemoteProtocolError("cut")]
    outcome = await h.provider().edit(request_for(catalog, "qwen-edit", img))
    assert outcome.ok and h.api.count("download") == 3


@pytest.mark.parametrize(
    "code,category",
    [(1200, Category.MODERATION), (1401, Category.BAD_REQUEST), (1403, Category.TASK_FAILED), (5003, Category.SERVER)],
)
async def test_failed_tasks_map_codes(h, catalog, img, code, category):
    h.api.failed = {"code": code, "error": "it did not work"}
    outcome = await h.provider().edit(request_for(catalog, "qwen-edit", img))
    assert outcome.error.category == category and outcome.error.code == code
    assert "it did not work" in outcome.error.message
    assert outcome.cost_usd == 0.0 and outcome.prediction_id == PID
    assert outcome.content_filtered is (category == Category.MODERATION)
    assert h.api.count("download") == 0


async def test_nsfw_flag_is_reported(h, catalog, img):
    h.api.completed = {"has_nsfw_contents": [True]}
    outcome = await h.provider().edit(request_for(catalog, "qwen-edit", img))
    assert outcome.ok and outcome.nsfw


async def test_overall_timeout_keeps_the_prediction_id(h, catalog, img):
    h.api.progress = ("processing",)

    async def real_sleep(s):
        await asyncio.sleep(0.002)

    p = h.provider(poll=PollSchedule(initial_delay_s=0.0, min_interval_s=0.0, timeout_s=0.05), sleep=real_sleep)
    outcome = await p.edit(request_for(catalog, "qwen-edit", img))
    assert outcome.error.category == Category.TIMEOUT
    assert outcome.prediction_id == PID and outcome.error.retryable
    assert outcome.cost_usd is None and outcome.cost_source == "unknown"
    assert h.api.count("submit") == 1 and h.api.count("poll") >= 1


async def test_simulated_header_marks_the_outcome(h, catalog, img):
    h.api.headers = {"X-Evalkit-Simulated": "1"}
    outcome = await h.provider().edit(request_for(catalog, "qwen-edit", img))
    assert outcome.ok and outcome.simulated


# ---- uploads, base64, sync mode --------------------------------------------------------------


async def test_large_inputs_uploaded_once_and_reused(h, catalog, img):
    p = h.provider(upload_threshold_bytes=100)
    plain = request_for(catalog, "qwen-edit", img)
    plus = request_for(catalog, "qwen-edit-plus", img)
    outcomes = await asyncio.gather(p.edit(plain), p.edit(plus), p.edit(plain))
    assert all(o.ok for o in outcomes)
    assert h.api.count("ticket") == 1 and h.api.count("put") == 1
    assert h.api.puts[0].content == img.data and "authorization" not in h.api.puts[0].headers
    url = f"{CDN}/uploads/1.png"
    assert [b.get("image") or b.get("images") for b in h.api.submitted_bodies] == [url, [url], url]
    assert outcomes[0].metadata["uploaded_inputs"] == 1
    # a later call still reuses it; small inputs stay inline
    await p.edit(plain)
    assert h.api.count("ticket") == 1
    inline = h.provider()
    await inline.edit(plain)
    assert h.api.submitted_bodies[-1]["image"].startswith("data:image/png;base64,")


async def test_failed_upload_fails_the_call_before_any_submit(h, catalog, img):
    original = h.api.handler

    def handler(request):
        if request.url.path == "/api/v3/media/uploads":
            h.api.events.append("ticket")
            return httpx.Response(400, json={"message": "file too large"})
        return original(request)

    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    p = WaveSpeedEditProvider(base_url=BASE, client=client, upload_threshold_bytes=100, sleep=h.sleep)
    outcome = await p.edit(request_for(catalog, "qwen-edit", img))
    await client.aclose()
    assert outcome.error.category == Category.BAD_REQUEST and "file too large" in outcome.error.message
    assert h.api.count("submit") == 0 and outcome.cost_usd == 0.0


@pytest.mark.parametrize("form", ["naked", "data_uri"])
async def test_base64_outputs(h, catalog, img, form):
    b64 = base64.b64encode(h.api.image).decode()
    h.api.completed = {"outputs": [b64 if form == "naked" else f"data:image/png;base64,{b64}"]}
    outcome = await h.provider(base64_output=True).edit(request_for(catalog, "qwen-edit", img))
    assert outcome.ok and outcome.image == h.api.image
    assert h.api.submitted_bodies[0]["enable_base64_output"] is True
    assert h.api.count("download") == 0


async def test_invalid_base64_output_is_bad_output(h, catalog, img):
    h.api.completed = {"outputs": ["this is !!! not base64"]}
    outcome = await h.provider(base64_output=True).edit(request_for(catalog, "qwen-edit", img))
    assert outcome.error.category == Category.BAD_OUTPUT


async def test_completed_without_outputs_is_bad_output(h, catalog, img):
    h.api.completed = {"outputs": []}
    outcome = await h.provider().edit(request_for(catalog, "qwen-edit", img))
    assert outcome.error.category == Category.BAD_OUTPUT and outcome.cost_usd == pytest.approx(0.02)


async def test_sync_mode_reply_needs_no_poll(h, catalog, img):
    h.api.submit_script = [
        lambda r: httpx.Response(
            200,
            json=FakeWaveSpeed._envelope(
                PID, "completed", outputs=[f"{CDN}/out/{PID}.png"], timings={"inference": 900}
            ),
        )
    ]
    ids = []

    async def hook(pid):
        ids.append(pid)

    outcome = await h.provider(sync_mode=True).edit(request_for(catalog, "qwen-edit", img), on_submitted=hook)
    assert outcome.ok and ids == [PID]
    assert h.api.submitted_bodies[0]["enable_sync_mode"] is True
    assert h.api.count("poll") == 0 and outcome.latency.inference_ms == 900
    assert outcome.latency.queue_ms is None


async def test_sync_timeout_5004_falls_back_to_polling(h, catalog, img):
    h.api.submit_script = [
        httpx.Response(
            200,
            json=FakeWaveSpeed._envelope(PID, "processing", code=5004, error="Sync mode timed out after 90 seconds."),
        )
    ]
    ids = []

    async def hook(pid):
        ids.append(pid)

    outcome = await h.provider(sync_mode=True).edit(request_for(catalog, "qwen-edit", img), on_submitted=hook)
    assert outcome.ok and ids == [PID] and h.api.count("submit") == 1 and h.api.count("poll") >= 1


async def test_sync_mode_not_sent_to_a_model_without_it(h, catalog, img):
    outcome = await h.provider(sync_mode=True).edit(request_for(catalog, "hidream-e1-full", img))
    assert outcome.ok and "enable_sync_mode" not in h.api.submitted_bodies[0]
    assert h.api.count("poll") >= 1


async def test_sync_mode_failed_reply_maps_the_code(h, catalog, img):
    h.api.submit_script = [
        httpx.Response(200, json=FakeWaveSpeed._envelope(PID, "failed", code=1200, error="nsfw input"))
    ]
    outcome = await h.provider(sync_mode=True).edit(request_for(catalog, "qwen-edit", img))
    assert outcome.error.category == Category.MODERATION and outcome.content_filtered


# ---- the key never leaks --------------------------------------------------------------------


async def test_canary_key_never_appears_anywhere(h, catalog, img, caplog, tmp_path):
    caplog.set_level(logging.DEBUG)

    def echo(request):  # a hostile server that echoes the Authorization header back
        return httpx.Response(
            400, json={"code": 400, "message": f"bad request from {request.headers['authorization']}"}
        )

    def echo_poll(request):
        return httpx.Response(503, json={"message": f"slow down {request.headers['authorization']}"})

    p = h.provider(api_key=None)
    req = request_for(catalog, "qwen-edit", img)
    outcomes = []
    h.api.submit_script = [echo]
    outcomes.append(await p.edit(req))
    h.api.poll_script = [echo_poll] * 10
    outcomes.append(await p.edit(req))
    h.api.poll_script = []
    h.api.failed = {"code": 1401, "error": f"key {CANARY} is not allowed here"}
    outcomes.append(await p.edit(req))
    h.api.failed = None
    h.api.submit_script = [
        lambda r: httpx.Response(429, text=f"{r.headers['authorization']}", headers={"Retry-After": "1"})
    ] * 10
    outcomes.append(await p.edit(req))
    h.api.submit_script = []

    async def bad_hook(pid):
        raise RuntimeError(f"hook saw {CANARY}")

    outcomes.append(await p.edit(req, on_submitted=bad_hook))
    with pytest.raises(InvalidInputError) as exc:
        await p.resume(req, "bad id!")

    texts = [repr(p), str(exc.value), repr(exc.value), caplog.text]
    for o in outcomes:
        texts += [repr(o), str(o.error), o.error.message if o.error else "", json.dumps(o.metadata, default=str)]
    assert [o.ok for o in outcomes] == [False, False, False, False, True]
    assert "***" in outcomes[0].error.message  # the echoed key was masked, not dropped silently
    for t in texts:
        assert CANARY not in t
    assert "sk-canary" not in caplog.text
