"""The local WaveSpeed simulator, exercised through real HTTP (httpx and the official SDK)."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from evalkit.errors import ImageError
from evalkit.images import decode_output
from evalkit.sim.faults import FAULT_KINDS, Fault
from evalkit.sim.wavespeed import SimConfig, start_wavespeed_sim
from tests.plugins.common import make_png
from tests.plugins.sim_wavespeed import FAST_TIME_SCALE

QWEN = "wavespeed-ai/qwen-image/edit"
QWEN_PLUS = "wavespeed-ai/qwen-image/edit-plus"
ZOOM = "wavespeed-ai/image-zoom-out"
INPAINT = "wavespeed-ai/z-image/turbo-inpaint"
HIDREAM = "wavespeed-ai/hidream-e1-full"
GPT = "openai/gpt-image-1"
NANO_PRO = "google/nano-banana-pro/edit"
NANO = "google/nano-banana/edit"
SEEDREAM = "bytedance/seedream-v4.5/edit"
SEEDEDIT = "bytedance/seededit-v3"
STEP1X = "wavespeed-ai/step1x-edit"
IDEOGRAM = "ideogram-ai/ideogram-character"

PNG = make_png(96, 64)
URI = "data:image/png;base64," + base64.b64encode(PNG).decode()
NAKED = base64.b64encode(make_png(80, 80, seed=3)).decode()
DEADLINE_S = 20.0  # a guard against hangs, not a timing assertion


@pytest.fixture(scope="module")
def shared_sim(catalog):
    handle = start_wavespeed_sim(catalog, time_scale=FAST_TIME_SCALE)
    yield handle
    handle.stop()


@pytest.fixture
def quick_sim(shared_sim):
    """One server for the many small parametrised cases (starting a server per case is the slow part)."""
    shared_sim.sim.reset()
    return shared_sim


def client(handle, key: str | None = None, **kw) -> httpx.Client:
    return httpx.Client(base_url=handle.base_url, headers={"Authorization": f"Bearer {key or handle.api_key}"}, **kw)


def submit(c: httpx.Client, endpoint: str, body: dict) -> httpx.Response:
    return c.post(f"/api/v3/{endpoint}", json=body)


def wait_done(c: httpx.Client, pid: str, seen: list[str] | None = None) -> dict:
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        data = c.get(f"/api/v3/predictions/{pid}/result").json()["data"]
        if seen is not None:
            seen.append(data["status"])
        if data["status"] in ("completed", "failed"):
            return data
        time.sleep(0.005)
    raise AssertionError(f"prediction {pid} did not finish")


def run_ok(c: httpx.Client, endpoint: str, body: dict) -> dict:
    r = submit(c, endpoint, body)
    assert r.status_code == 200, r.text
    return wait_done(c, r.json()["data"]["id"])


def download(c: httpx.Client, url: str) -> httpx.Response:
    return c.get(url)


# ---- auth, routing, marking ----------------------------------------------------------------------


def test_auth_is_required_and_every_response_is_marked_simulated(wavespeed_sim):
    h = wavespeed_sim
    with httpx.Client(base_url=h.base_url) as anon, client(h, key="wrong-key-123") as bad, client(h) as good:
        r = anon.post(f"/api/v3/{QWEN}", json={"prompt": "x", "image": URI})
        assert r.status_code == 401 and r.json()["code"] == 401 and r.json()["message"]
        assert r.headers["x-evalkit-simulated"] == "1"
        r = bad.get("/api/v3/predictions/abc/result")
        assert r.status_code == 401 and "wrong-key-123" not in r.text
        r = good.post("/api/v3/no/such-model", json={})
        assert r.status_code == 404 and r.json()["code"] == 404
        assert r.headers["x-evalkit-simulated"] == "1"
        assert good.get("/_sim/stats").headers["x-evalkit-simulated"] == "1"
    stats = h.sim.stats()
    assert stats["unauthorized"] == 2 and stats["accepted"] == 0


def test_key_never_appears_in_reprs(wavespeed_sim_factory):
    h = wavespeed_sim_factory(api_key="sk-very-secret-42")
    for text in (repr(h), repr(h.sim), repr(h.sim.config), repr(SimConfig(api_key="sk-very-secret-42"))):
        assert "sk-very-secret-42" not in text
    with client(h) as c:
        assert submit(c, QWEN, {"prompt": "x", "image": URI}).status_code == 200


# ---- validation --------------------------------------------------------------------------------

BAD_BODIES = [
    (QWEN, {"prompt": "x", "image": URI, "foo": 1}, "'foo'"),
    (QWEN, {"image": URI}, "'prompt'"),
    (QWEN, {"prompt": "   ", "image": URI}, "'prompt'"),
    (ZOOM, {"prompt": "wider", "image": URI}, "'prompt'"),
    (QWEN, {"prompt": "x"}, "'image'"),
    (QWEN_PLUS, {"prompt": "x", "images": URI}, "array"),
    (QWEN_PLUS, {"prompt": "x", "images": []}, "at least 1"),
    (QWEN_PLUS, {"prompt": "x", "images": [URI] * 4}, "at most 3"),
    (INPAINT, {"prompt": "x", "image": URI}, "'mask_image'"),
    (QWEN, {"prompt": "x", "image": URI, "size": "2048*1024"}, "256–1536"),
    (QWEN, {"prompt": "x", "image": URI, "size": "1024x1024"}, "'W*H'"),
    (GPT, {"prompt": "x", "image": URI, "size": "512*512"}, "'size' must be one of"),
    (NANO_PRO, {"prompt": "x", "images": [URI], "aspect_ratio": "7:3"}, "'aspect_ratio'"),
    (NANO_PRO, {"prompt": "x", "images": [URI], "resolution": "8k"}, "'resolution'"),
    (SEEDEDIT, {"prompt": "x", "image": URI, "guidance_scale": 2}, "'guidance_scale'"),
    (IDEOGRAM, {"prompt": "x", "image": URI, "rendering_speed": "Fast"}, "'rendering_speed'"),
    (STEP1X, {"prompt": "x", "image": URI, "num_inference_steps": 1.5}, "'num_inference_steps'"),
    (QWEN, {"prompt": "x", "image": URI, "seed": 2**31}, "'seed'"),
    (QWEN, {"prompt": "x", "image": URI, "seed": "5"}, "'seed'"),
    (HIDREAM, {"prompt": "x", "image": URI, "enable_sync_mode": True}, "enable_sync_mode"),
    (QWEN, {"prompt": "x", "image": URI, "enable_base64_output": "yes"}, "enable_base64_output"),
    (QWEN, {"prompt": "x", "image": URI, "output_format": "gif"}, "'output_format'"),
    (QWEN, {"prompt": "x", "image": "not an image at all!"}, "neither"),
    (QWEN, {"prompt": "x", "image": base64.b64encode(b"hello, not pixels").decode()}, "cannot be decoded"),
    (
        QWEN,
        {"prompt": "x", "image": "data:image/png;base64," + base64.b64encode(PNG[: len(PNG) // 2]).decode()},
        "cannot be decoded",
    ),
]


@pytest.mark.parametrize("endpoint,body,fragment", BAD_BODIES, ids=[f"{i}-{b[2]}" for i, b in enumerate(BAD_BODIES)])
def test_invalid_bodies_are_refused_with_400_naming_the_problem(quick_sim, endpoint, body, fragment):
    with client(quick_sim) as c:
        r = submit(c, endpoint, body)
    assert r.status_code == 400, r.text
    assert r.json()["code"] == 400
    assert fragment in r.json()["message"]
    assert quick_sim.sim.stats()["accepted"] == 0 and quick_sim.sim.submits == []


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b'"a string"'])
def test_body_must_be_a_json_object(quick_sim, raw):
    with client(quick_sim) as c:
        r = c.post(f"/api/v3/{QWEN}", content=raw, headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "JSON object" in r.json()["message"]


def test_valid_variants_are_accepted(wavespeed_sim):
    bodies = [
        (HIDREAM, {"prompt": "x", "image": NAKED, "enable_sync_mode": False}),  # the default is fine anywhere
        (GPT, {"prompt": "x", "image": URI, "size": "1024*1536", "quality": "low"}),
        (NANO_PRO, {"prompt": "x", "images": [URI, NAKED], "aspect_ratio": "16:9", "resolution": "4k"}),
        (
            STEP1X,
            {
                "prompt": "x",
                "image": URI,
                "guidance_scale": 7.5,
                "num_inference_steps": 20,
                "negative_prompt": "blur",
                "seed": -1,
            },
        ),
        (INPAINT, {"prompt": "x", "image": URI, "mask_image": URI, "size": "512*512"}),
        (ZOOM, {"image": URI, "size": "1536*256"}),
    ]
    with client(wavespeed_sim) as c:
        for endpoint, body in bodies:
            r = submit(c, endpoint, body)
            assert r.status_code == 200, (endpoint, r.text)
            assert wait_done(c, r.json()["data"]["id"])["status"] == "completed"


# ---- lifecycle -----------------------------------------------------------------------------------


def test_async_lifecycle_envelopes_download_and_billing(wavespeed_sim_factory):
    h = wavespeed_sim_factory(fixed_latency_ms=400)
    raw = json.dumps(
        {"prompt": "make it blue", "image": URI, "size": "1536*1024", "output_format": "png", "seed": 7}
    ).encode()
    with client(h) as c:
        r = c.post(f"/api/v3/{QWEN}", content=raw, headers={"Content-Type": "application/json"})
        assert r.status_code == 200
        env = r.json()
        assert env["code"] == 200 and env["message"] == "success"
        d = env["data"]
        assert re.fullmatch(r"[0-9a-f]{32}", d["id"])
        assert d["status"] == "created" and d["model"] == QWEN
        assert d["urls"]["get"] == f"{h.base_url}/api/v3/predictions/{d['id']}/result"
        assert (d["outputs"], d["has_nsfw_contents"], d["error"], d["executionTime"], d["timings"]) == (
            [],
            [],
            "",
            0,
            {"inference": 0},
        )
        datetime.fromisoformat(d["created_at"].replace("Z", "+00:00"))
        seen: list[str] = []
        done = wait_done(c, d["id"], seen)
        assert "processing" in seen and seen[-1] == "completed"
        assert seen.index("processing") < seen.index("completed")
        assert done["outputs"] == [f"{h.base_url}/_sim/outputs/{d['id']}.png"]
        assert done["has_nsfw_contents"] == [False]
        assert done["executionTime"] == done["timings"]["inference"] == 400
        assert c.get(f"/api/v3/predictions/{d['id']}").json()["data"]["status"] == "completed"
        img = download(c, done["outputs"][0])
        assert img.status_code == 200 and img.headers["content-type"] == "image/png"
        assert img.headers["x-evalkit-simulated"] == "1"
        assert decode_output(img.content).size == (1024, 683)  # 1536×1024 capped at 1024, aspect kept
    assert [(e.prediction_id, e.model_id, e.usd) for e in h.sim.ledger] == [(d["id"], "qwen-edit", 0.02)]
    assert h.sim.billed_usd == pytest.approx(0.02)
    rec = h.sim.submits[0]
    assert (rec.prediction_id, rec.model_id, rec.body_sha256) == (d["id"], "qwen-edit", hashlib.sha256(raw).hexdigest())
    s = h.sim.stats()
    assert (s["submit"], s["accepted"], s["completed"], s["failed"], s["download"]) == (1, 1, 1, 0, 1)


@pytest.mark.parametrize(
    "endpoint,body,size,price",
    [
        (NANO_PRO, {"aspect_ratio": "16:9", "resolution": "4k"}, (1024, 576), 0.24),
        (NANO_PRO, {}, (1024, 683), 0.14),  # default 1k tier, the input's aspect ratio
        (NANO, {"aspect_ratio": "9:16"}, (54, 96), 0.038),  # no tiers: the input's long side
        (SEEDREAM, {}, (1024, 1024), 0.04),  # the model's default 2048*2048, capped
        (STEP1X, {}, (96, 64), 0.03),  # no size parameter: the input's size
        # gpt-image-1's size enum has no 'auto' (wavespeed-models-2026.md §1.8): a non-square size, the other price
        (GPT, {"size": "1536*1024", "quality": "medium"}, (1024, 683), 0.063),
        (GPT, {"size": "1024*1024", "quality": "high"}, (1024, 1024), 0.167),
        (IDEOGRAM, {"rendering_speed": "Quality", "aspect_ratio": "4:3"}, (96, 72), 0.20),
    ],
)
def test_output_size_follows_the_request_and_the_list_price_is_billed(quick_sim, endpoint, body, size, price):
    spec = quick_sim.sim.models[endpoint]
    images = {spec.inputs.param: [URI] if spec.inputs.is_list else URI}
    with client(quick_sim) as c:
        done = run_ok(c, endpoint, {"prompt": "x", **images, **body})
        assert decode_output(download(c, done["outputs"][0]).content).size == size
    assert [e.usd for e in quick_sim.sim.ledger] == [pytest.approx(price)]


def test_output_max_side_is_configurable(wavespeed_sim_factory):
    h = wavespeed_sim_factory(output_max_side=300)
    with client(h) as c:
        done = run_ok(c, QWEN, {"prompt": "x", "image": URI, "size": "1536*1024"})
        assert decode_output(download(c, done["outputs"][0]).content).size == (300, 200)


def test_outputs_are_deterministic_per_request_and_labelled_formats(wavespeed_sim):
    body = {"prompt": "sunset", "image": URI, "seed": 11}
    with client(wavespeed_sim) as c:
        a = download(c, run_ok(c, QWEN, body)["outputs"][0])
        b = download(c, run_ok(c, QWEN, body)["outputs"][0])
        other = download(c, run_ok(c, QWEN, {**body, "seed": 12})["outputs"][0])
        webp = download(c, run_ok(c, QWEN, {**body, "output_format": "webp"})["outputs"][0])
    assert a.content == b.content and a.content != other.content
    assert a.headers["content-type"] == "image/jpeg"  # the model's default output format
    assert webp.headers["content-type"] == "image/webp" and decode_output(webp.content).format == "WEBP"


def test_inpaint_changes_only_the_masked_region(wavespeed_sim):
    mask = Image.new("L", (96, 64), 0)
    mask.paste(255, (60, 10, 90, 40))
    buf = io.BytesIO()
    mask.save(buf, format="PNG")
    body = {
        "prompt": "a red ball",
        "image": URI,
        "mask_image": base64.b64encode(buf.getvalue()).decode(),
        "output_format": "png",
    }
    with client(wavespeed_sim) as c:
        out = np.asarray(decode_output(download(c, run_ok(c, INPAINT, body)["outputs"][0]).content).convert("RGB"))
    src = np.asarray(Image.open(io.BytesIO(PNG)).convert("RGB"))
    assert out.shape == src.shape
    assert np.array_equal(out[:40, :55], src[:40, :55])  # outside the mask (and above the banner): untouched
    assert not np.array_equal(out[12:38, 62:88], src[12:38, 62:88])  # inside: edited


def test_zoom_out_shrinks_the_source_into_a_wider_canvas(wavespeed_sim):
    with client(wavespeed_sim) as c:
        out = decode_output(
            download(
                c, run_ok(c, ZOOM, {"image": URI, "size": "512*512", "output_format": "png"})["outputs"][0]
            ).content
        )
    arr = np.asarray(out.convert("RGB")).astype(int)
    assert out.size == (512, 512)
    assert np.ptp(arr[:40, :40]) < 3  # a flat fill border around the shrunken source
    assert np.ptp(arr[200:300, 200:300]) > 50  # the noisy source in the middle


def test_base64_output(wavespeed_sim):
    with client(wavespeed_sim) as c:
        done = run_ok(c, QWEN, {"prompt": "x", "image": URI, "enable_base64_output": True, "output_format": "png"})
    (out,) = done["outputs"]
    assert not out.startswith(("data:", "http"))
    assert decode_output(base64.b64decode(out)).size == (96, 64)
    assert done["has_nsfw_contents"] == [False]


def test_list_recent_predictions(wavespeed_sim):
    with client(wavespeed_sim) as c:
        ids = [submit(c, QWEN, {"prompt": "x", "image": URI}).json()["data"]["id"] for _ in range(3)]
        items = c.get("/api/v3/predictions").json()["data"]["items"]
        assert [i["id"] for i in items] == ids[::-1]
        assert {i["model"] for i in items} == {QWEN} and all(i["created_at"] and i["status"] for i in items)
        assert len(c.get("/api/v3/predictions", params={"limit": 2}).json()["data"]["items"]) == 2
        assert c.get("/api/v3/predictions/ffffffffffffffffffffffffffffffff/result").status_code == 404


# ---- sync mode -----------------------------------------------------------------------------------


def test_sync_mode_returns_the_final_envelope(wavespeed_sim):
    with client(wavespeed_sim) as c:
        r = submit(c, QWEN_PLUS, {"prompt": "x", "images": [URI, NAKED], "enable_sync_mode": True})
    d = r.json()["data"]
    assert r.status_code == 200 and d["status"] == "completed" and len(d["outputs"]) == 1
    assert wavespeed_sim.sim.stats()["poll"] == 0


def test_sync_mode_timeout_answers_5004_and_keeps_processing(wavespeed_sim_factory):
    h = wavespeed_sim_factory(fixed_latency_ms=5000, sync_timeout_s=0.2)
    with client(h) as c:
        r = submit(c, QWEN, {"prompt": "x", "image": URI, "enable_sync_mode": True})
        d = r.json()["data"]
        assert r.status_code == 200
        assert d["status"] == "processing" and d["code"] == 5004
        assert d["error"].startswith("Sync mode timed out after 0.2 seconds")
        assert d["urls"]["get"].endswith(f"/predictions/{d['id']}/result")
        assert c.get(f"/api/v3/predictions/{d['id']}/result").json()["data"]["status"] == "processing"


# ---- uploads ---------------------------------------------------------------------------------------


def test_ticket_upload_then_put_then_use_as_input(wavespeed_sim):
    h = wavespeed_sim
    with client(h) as c, httpx.Client() as plain:
        assert plain.post(f"{h.base_url}/api/v3/media/uploads", json={"filename": "a.png"}).status_code == 401
        r = c.post(
            "/api/v3/media/uploads", json={"filename": "cat photo.png", "size": len(PNG), "content_type": "image/png"}
        )
        assert r.status_code == 200 and r.json()["code"] == 200
        d = r.json()["data"]
        assert d["type"] == "image" and d["size"] == len(PNG)
        assert d["upload"]["method"] == "PUT" and d["upload"]["headers"] == {"Content-Type": "image/png"}
        assert plain.get(d["download_url"]).status_code == 404  # nothing PUT yet
        assert plain.put(d["upload"]["url"], content=PNG, headers=d["upload"]["headers"]).status_code == 200
        assert plain.put(d["upload"]["url"], content=PNG).status_code == 404  # a slot is single-use
        got = plain.get(d["download_url"])
        assert got.content == PNG and got.headers["content-type"] == "image/png"
        done = run_ok(c, QWEN, {"prompt": "x", "image": d["download_url"]})
        assert decode_output(download(c, done["outputs"][0]).content).size == (96, 64)


def test_legacy_binary_upload(wavespeed_sim):
    with client(wavespeed_sim) as c:
        r = c.post("/api/v3/media/upload/binary", files={"file": ("in.png", PNG, "image/png")})
        d = r.json()["data"]
        assert r.status_code == 200 and (d["type"], d["filename"], d["size"]) == ("image", "in.png", len(PNG))
        assert c.get(d["download_url"]).content == PNG
        assert run_ok(c, QWEN_PLUS, {"prompt": "x", "images": [d["download_url"], URI]})["status"] == "completed"
        assert c.post("/api/v3/media/upload/binary", files={"other": ("x.png", PNG, "image/png")}).status_code == 400


def test_unfetchable_url_fails_the_task_with_1402_and_is_not_billed(wavespeed_sim):
    with client(wavespeed_sim) as c:
        done = run_ok(c, QWEN, {"prompt": "x", "image": "https://example.com/cat.png"})
        assert (done["status"], done["code"], done["error"]) == (
            "failed",
            1402,
            "Failed to download image from the provided URL.",
        )
        assert done["outputs"] == []
        missing = f"{wavespeed_sim.base_url}/_sim/uploads/{'0' * 32}/gone.png"
        assert run_ok(c, QWEN, {"prompt": "x", "image": missing})["code"] == 1402
    assert wavespeed_sim.sim.ledger == []


def test_an_output_url_is_accepted_as_input(wavespeed_sim):
    with client(wavespeed_sim) as c:
        first = run_ok(c, QWEN, {"prompt": "x", "image": URI})
        second = run_ok(c, ZOOM, {"image": first["outputs"][0]})
    assert second["status"] == "completed"


# ---- faults ----------------------------------------------------------------------------------------


def test_rate_limit_refuses_without_creating_a_task(wavespeed_sim):
    wavespeed_sim.sim.add_fault("rate_limit", count=1, retry_after_s=2)
    with client(wavespeed_sim) as c:
        r = submit(c, QWEN, {"prompt": "x", "image": URI})
        assert r.status_code == 429 and r.headers["retry-after"] == "2" and r.json()["code"] == 429
        assert wavespeed_sim.sim.submits == []
        assert submit(c, QWEN, {"prompt": "x", "image": URI}).status_code == 200
    s = wavespeed_sim.sim.stats()
    assert s["accepted"] == 1 and s["fault_hits"] == {"rate_limit": 1}


@pytest.mark.parametrize("status,expected", [(None, 503), (502, 502)])
def test_submit_5xx_is_not_accepted(wavespeed_sim, status, expected):
    wavespeed_sim.sim.add_fault("submit_5xx", count=1, status=status)
    with client(wavespeed_sim) as c:
        r = submit(c, QWEN, {"prompt": "x", "image": URI})
    assert r.status_code == expected and r.json()["code"] == expected
    assert wavespeed_sim.sim.stats()["accepted"] == 0


def test_submit_accepted_5xx_creates_the_task_anyway(wavespeed_sim):
    h = wavespeed_sim
    h.sim.add_fault("submit_accepted_5xx", count=1)
    with client(h) as c:
        r = submit(c, QWEN, {"prompt": "x", "image": URI})
        assert r.status_code == 500
        (rec,) = h.sim.submits
        assert wait_done(c, rec.prediction_id)["status"] == "completed"
    assert [e.prediction_id for e in h.sim.ledger] == [rec.prediction_id]  # the ambiguous submit was billed


def test_submit_timeout_creates_the_task_and_answers_too_late(wavespeed_sim):
    h = wavespeed_sim
    h.sim.add_fault("submit_timeout", count=1, delay_s=3.0)
    with client(h, timeout=httpx.Timeout(5.0, read=0.3)) as c:
        with pytest.raises(httpx.ReadTimeout):
            submit(c, QWEN, {"prompt": "x", "image": URI})
        (rec,) = h.sim.submits
        assert wait_done(c, rec.prediction_id)["status"] == "completed"


def test_wrong_shape_submit(wavespeed_sim):
    wavespeed_sim.sim.add_fault("wrong_shape_submit", count=1)
    with client(wavespeed_sim) as c:
        r = submit(c, QWEN, {"prompt": "x", "image": URI})
    assert r.status_code == 200 and "id" not in r.json().get("data", {})
    assert wavespeed_sim.sim.stats()["accepted"] == 0


def test_poll_faults(wavespeed_sim):
    sim = wavespeed_sim.sim
    with client(wavespeed_sim) as c:
        pid = submit(c, QWEN, {"prompt": "x", "image": URI}).json()["data"]["id"]
        url = f"/api/v3/predictions/{pid}/result"
        sim.add_fault("rate_limit_poll", count=1, retry_after_s=0.5)
        r = c.get(url)
        assert r.status_code == 429 and r.headers["retry-after"] == "0.5"
        sim.add_fault("poll_5xx", count=1, status=502)
        assert c.get(url).status_code == 502
        sim.add_fault("garbage_poll", count=1)
        r = c.get(url)
        assert r.status_code == 200
        with pytest.raises(ValueError):
            json.loads(r.content)
        assert wait_done(c, pid)["status"] == "completed"
    assert sim.stats()["fault_hits"] == {"rate_limit_poll": 1, "poll_5xx": 1, "garbage_poll": 1}


def test_download_faults(wavespeed_sim):
    sim = wavespeed_sim.sim
    with client(wavespeed_sim) as c:
        url = run_ok(c, QWEN, {"prompt": "x", "image": URI, "output_format": "png"})["outputs"][0]
        full = download(c, url).content
        sim.add_fault("download_5xx", count=1)
        assert download(c, url).status_code == 503
        sim.add_fault("truncated_download", count=1)
        cut = download(c, url)
        assert cut.status_code == 200 and cut.content == full[: len(full) // 2]
        with pytest.raises(ImageError):
            decode_output(cut.content)
        sim.add_fault("non_image_download", count=1)
        html = download(c, url)
        assert html.status_code == 200 and html.headers["content-type"] == "image/png"
        assert html.content.startswith(b"<!DOCTYPE html>")
        assert download(c, url).content == full


def test_slow_response_delays_past_a_client_read_timeout(wavespeed_sim):
    with client(wavespeed_sim, timeout=httpx.Timeout(5.0, read=0.3)) as c:
        pid = submit(c, QWEN, {"prompt": "x", "image": URI}).json()["data"]["id"]
        wavespeed_sim.sim.add_fault("slow_response", count=1, delay_s=3.0)
        with pytest.raises(httpx.ReadTimeout):
            c.get(f"/api/v3/predictions/{pid}/result")
        assert c.get(f"/api/v3/predictions/{pid}/result").status_code == 200


@pytest.mark.parametrize(
    "kind,code,expected", [("task_failed", None, 1403), ("task_failed", 5003, 5003), ("moderation", None, 1200)]
)
def test_task_failures_carry_their_code_and_are_not_billed(wavespeed_sim, kind, code, expected):
    wavespeed_sim.sim.add_fault(kind, count=1, code=code)
    with client(wavespeed_sim) as c:
        failed = run_ok(c, QWEN, {"prompt": "x", "image": URI})
        ok = run_ok(c, QWEN, {"prompt": "x", "image": URI})
    assert (failed["status"], failed["code"], failed["outputs"]) == ("failed", expected, [])
    assert failed["error"]
    assert ok["status"] == "completed"
    assert [e.prediction_id for e in wavespeed_sim.sim.ledger] == [ok["id"]]
    s = wavespeed_sim.sim.stats()
    assert (s["completed"], s["failed"]) == (1, 1)


def test_never_finish_stays_processing(wavespeed_sim):
    wavespeed_sim.sim.add_fault("never_finish", count=1)
    with client(wavespeed_sim) as c:
        stuck = submit(c, QWEN, {"prompt": "x", "image": URI}).json()["data"]["id"]
        assert run_ok(c, QWEN, {"prompt": "x", "image": URI})["status"] == "completed"
        assert c.get(f"/api/v3/predictions/{stuck}/result").json()["data"]["status"] == "processing"
    assert wavespeed_sim.sim.stats()["in_flight"] == 1


def test_faults_can_target_a_model_by_id_or_endpoint(wavespeed_sim):
    wavespeed_sim.sim.add_fault("submit_5xx", model="qwen-edit")
    wavespeed_sim.sim.add_fault("rate_limit", model=ZOOM)
    with client(wavespeed_sim) as c:
        assert submit(c, QWEN, {"prompt": "x", "image": URI}).status_code == 503
        assert submit(c, ZOOM, {"image": URI}).status_code == 429
        assert submit(c, QWEN_PLUS, {"prompt": "x", "images": [URI]}).status_code == 200


def test_rate_faults_follow_the_seeded_rng(wavespeed_sim_factory):
    def pattern(seed: int) -> list[int]:
        h = wavespeed_sim_factory(seed=seed)
        h.sim.add_fault("submit_5xx", rate=0.5)
        with client(h) as c:
            return [submit(c, QWEN, {"prompt": "x", "image": URI}).status_code for _ in range(24)]

    a, b = pattern(5), pattern(5)
    assert a == b and {200, 503} == set(a)


def test_fault_validation():
    with pytest.raises(ValueError, match="unknown fault kind"):
        Fault("explode")
    with pytest.raises(ValueError):
        Fault("rate_limit", rate=1.5)
    with pytest.raises(ValueError, match="unknown fault field"):
        Fault.from_dict({"kind": "rate_limit", "often": True})
    assert set(FAULT_KINDS) >= {"rate_limit", "garbage_poll", "never_finish", "slow_response"}


# ---- control endpoints ---------------------------------------------------------------------------


def test_control_endpoints(wavespeed_sim):
    h = wavespeed_sim
    with client(h) as c, httpx.Client(base_url=h.base_url) as ctl:
        assert ctl.post("/_sim/faults", json={"kind": "nope"}).status_code == 400
        r = ctl.post("/_sim/faults", json={"kind": "task_failed", "count": 1, "code": 5000})
        assert r.status_code == 200 and r.json()["fault"]["kind"] == "task_failed"
        assert [f["kind"] for f in ctl.get("/_sim/faults").json()["faults"]] == ["task_failed"]
        failed = run_ok(c, QWEN, {"prompt": "x", "image": URI})
        assert failed["code"] == 5000
        ctl.post("/_sim/faults", json={"kind": "submit_5xx"})
        assert ctl.delete("/_sim/faults").status_code == 200
        ok = run_ok(c, QWEN_PLUS, {"prompt": "x", "images": [URI]})
        ledger = ctl.get("/_sim/ledger").json()
        assert [e["prediction_id"] for e in ledger["entries"]] == [ok["id"]]
        assert ledger["total_usd"] == pytest.approx(0.02) and ledger["entries"][0]["model_id"] == "qwen-edit-plus"
        stats = ctl.get("/_sim/stats").json()
        assert (stats["accepted"], stats["completed"], stats["failed"], stats["fault_hits"]) == (
            2,
            1,
            1,
            {"task_failed": 1},
        )
        assert ctl.post("/_sim/reset").json() == {"reset": True}
        assert c.get(f"/api/v3/predictions/{ok['id']}/result").status_code == 404
        assert ctl.get("/_sim/ledger").json() == {"entries": [], "count": 0, "total_usd": 0.0}
        assert ctl.get("/_sim/stats").json()["accepted"] == 0


def test_reset_cancels_running_tasks(wavespeed_sim_factory):
    h = wavespeed_sim_factory(fixed_latency_ms=60_000)
    with client(h) as c:
        for _ in range(3):
            submit(c, QWEN, {"prompt": "x", "image": URI})
        assert h.sim.stats()["in_flight"] == 3
        h.sim.reset()
        s = h.sim.stats()
        assert (s["in_flight"], s["accepted"], s["submit"]) == (0, 0, 0)
        r = submit(c, QWEN, {"prompt": "x", "image": URI})  # the sim keeps working after a reset
        assert r.status_code == 200 and h.sim.stats()["in_flight"] == 1


# ---- concurrency -----------------------------------------------------------------------------------


def test_tasks_over_max_concurrent_wait_in_created(wavespeed_sim_factory):
    h = wavespeed_sim_factory(max_concurrent=2, fixed_latency_ms=800)
    with client(h) as c:
        ids = [submit(c, QWEN, {"prompt": "x", "image": URI}).json()["data"]["id"] for _ in range(3)]
        statuses = [c.get(f"/api/v3/predictions/{i}/result").json()["data"]["status"] for i in ids]
        assert statuses == ["processing", "processing", "created"]
        seen: list[str] = []
        assert wait_done(c, ids[2], seen)["status"] == "completed"
        first_two = [c.get(f"/api/v3/predictions/{i}/result").json()["data"]["status"] for i in ids[:2]]
    assert "processing" in seen and first_two == ["completed", "completed"]
    assert h.sim.stats()["peak_processing"] == 2


def test_holds_more_than_500_tasks_in_flight(wavespeed_sim_factory):
    h = wavespeed_sim_factory(fixed_latency_ms=60_000, max_concurrent=1000)
    uri = "data:image/png;base64," + base64.b64encode(make_png(16, 16)).decode()
    local = threading.local()
    clients: list[httpx.Client] = []

    def one(i: int) -> int:
        if not hasattr(local, "c"):
            local.c = client(h)
            clients.append(local.c)
        return submit(local.c, QWEN, {"prompt": "x", "image": uri, "seed": i}).status_code

    try:
        with ThreadPoolExecutor(16) as pool:
            codes = list(pool.map(one, range(600)))
    finally:
        for c in clients:
            c.close()
    assert codes == [200] * 600
    s = h.sim.stats()
    assert s["peak_in_flight"] == 600 and s["peak_processing"] >= 500 and s["in_flight"] == 600


# ---- the official SDK, unchanged -------------------------------------------------------------------


def test_official_sdk_runs_against_the_sim(wavespeed_sim, tmp_path):
    wavespeed = pytest.importorskip("wavespeed")
    h = wavespeed_sim
    sdk = wavespeed.Client(api_key=h.api_key, base_url=h.base_url, max_connection_retries=0)
    out = sdk.run(QWEN_PLUS, {"prompt": "add a hat", "images": [URI]}, poll_interval=0.01)
    assert out["outputs"][0].startswith(f"{h.base_url}/_sim/outputs/")
    assert httpx.get(out["outputs"][0]).status_code == 200
    sync = sdk.run(QWEN, {"prompt": "x", "image": URI}, enable_sync_mode=True)
    assert len(sync["outputs"]) == 1
    path = tmp_path / "input.png"
    path.write_bytes(PNG)
    url = sdk.upload(str(path))
    assert url.startswith(h.base_url)
    zoomed = sdk.run(ZOOM, {"image": url}, poll_interval=0.01)
    assert decode_output(httpx.get(zoomed["outputs"][0]).content).size == (96, 64)
    h.sim.add_fault("task_failed", count=1, code=1403)
    with pytest.raises(RuntimeError, match="Task execution failed"):
        sdk.run(QWEN, {"prompt": "x", "image": URI}, poll_interval=0.01)
    with pytest.raises(RuntimeError, match="HTTP 401"):
        wavespeed.Client(api_key="not-the-key", base_url=h.base_url).run(QWEN, {"prompt": "x", "image": URI})
    assert [e.model_id for e in h.sim.ledger] == ["qwen-edit-plus", "qwen-edit", "image-zoom-out"]


def test_official_sdk_sync_timeout_error(wavespeed_sim_factory):
    wavespeed = pytest.importorskip("wavespeed")
    h = wavespeed_sim_factory(fixed_latency_ms=5000, sync_timeout_s=0.2)
    sdk = wavespeed.Client(api_key=h.api_key, base_url=h.base_url)
    with pytest.raises(RuntimeError, match="Sync mode timed out"):
        sdk.run(QWEN, {"prompt": "x", "image": URI}, enable_sync_mode=True)


# ---- as a subprocess -------------------------------------------------------------------------------


def test_module_runs_as_a_subprocess_with_a_port_file(tmp_path):
    port_file = tmp_path / "port"
    secret = "sk-subprocess-secret-77"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "evalkit.sim",
            "--port",
            "0",
            "--port-file",
            str(port_file),
            "--api-key",
            secret,
            "--fixed-latency-ms",
            "5",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[2],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    try:
        deadline = time.monotonic() + DEADLINE_S
        while not port_file.exists():
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "the simulator did not write its port file"
            time.sleep(0.05)
        base = f"http://127.0.0.1:{int(port_file.read_text())}"
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {secret}"}) as c:
            assert c.get("/_sim/stats").status_code == 200
            assert run_ok(c, QWEN, {"prompt": "x", "image": URI})["status"] == "completed"
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=DEADLINE_S)
    assert proc.returncode == 0
    assert secret not in (out + err).decode()
    assert b"SIMULATED" in err
    assert not port_file.exists()
