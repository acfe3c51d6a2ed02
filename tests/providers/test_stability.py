"""StabilityEditProvider against the local Stability server over real HTTP (tests/plugins/sim_others.py)."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import time

import httpx
import numpy as np
import pytest
from PIL import Image

from evalkit.catalog import Catalog
from evalkit.errors import Category, InvalidInputError, MissingKeyError
from evalkit.images import load_image
from evalkit.providers import create_provider
from evalkit.providers.base import EditOutcome, EditRequest, ImageEditOptions, capabilities_of
from evalkit.providers.retry import RetryPolicy
from evalkit.providers.stability import StabilityEditProvider
from evalkit.sim.server import start_in_thread
from evalkit.sim.stability import ENDPOINTS, RELIGHT, StabilitySim
from tests.plugins.common import make_png, refused_port, wait_until

FAST_RETRY = RetryPolicy(max_attempts=3, base_s=0.01, max_backoff_s=0.05, jitter=False)
RELIGHT_ID = "stability-replace-background-relight"


def mask_png(w: int = 96, h: int = 64, box: tuple[int, int, int, int] = (20, 10, 50, 40)) -> bytes:
    m = Image.new("L", (w, h), 0)
    m.paste(255, box)
    buf = io.BytesIO()
    m.save(buf, "PNG")
    return buf.getvalue()


def request_for(catalog: Catalog, model_id: str, **kw) -> EditRequest:
    """A valid request for each catalogue entry (the case parameters each endpoint needs)."""
    image = load_image(make_png(96, 64))
    base = {
        "stability-erase": dict(operation="erase", mask=load_image(mask_png())),
        "stability-inpaint": dict(operation="inpaint", prompt="a red ball", mask=load_image(mask_png())),
        "stability-outpaint": dict(operation="zoom_out", options=ImageEditOptions(width=160, height=96)),
        "stability-search-replace": dict(prompt="a dog", options=ImageEditOptions(extra={"search_prompt": "cat"})),
        "stability-search-recolor": dict(prompt="bright red", options=ImageEditOptions(extra={"select_prompt": "car"})),
        "stability-remove-background": dict(operation="remove_background"),
        RELIGHT_ID: dict(options=ImageEditOptions(extra={"background_prompt": "a sunny beach"})),
    }[model_id]
    base.update(kw)
    return EditRequest(model=catalog.get(model_id), images=(base.pop("image", image),), **base)


@pytest.fixture
async def provider(stability_sim, monkeypatch):
    monkeypatch.setenv("STABILITY_API_KEY", stability_sim.api_key)
    p = StabilityEditProvider(base_url=stability_sim.base_url, poll_interval_s=0.01, retry=FAST_RETRY)
    yield p
    await p.aclose()


STABILITY_IDS = [
    "stability-erase",
    "stability-inpaint",
    "stability-outpaint",
    "stability-search-replace",
    "stability-search-recolor",
    "stability-remove-background",
    RELIGHT_ID,
]


# ---- catalogue ---------------------------------------------------------------------------------


def test_catalogue_has_one_entry_per_endpoint(catalog):
    models = catalog.select("provider:stability")
    assert sorted(m.id for m in models) == sorted(STABILITY_IDS)
    assert {m.endpoint.removeprefix("stable-image/edit/") for m in models} == set(ENDPOINTS)
    for m in models:
        assert m.price.kind == "credits" and m.price.usd_per_credit == 0.01
        assert m.price_usd() == pytest.approx(m.price.credits * 0.01)
        assert m.limits.min_input_side == 64 and m.limits.max_input_pixels == 9437184
        assert m.limits.max_request_bytes == 10 * 2**20
        # no official credit table after Aug 2025 (wavespeed-models-2026.md §3): every figure is low, with a source
        assert m.facts["price"].confidence == "low" and m.facts["price"].source and m.facts["price"].note
    # reseller-implied credits (§3); the endpoints whose credits were not found keep a reserve above the old figure
    assert {
        m.endpoint.removeprefix("stable-image/edit/"): m.price.credits for m in models if m.price.reserve_usd is None
    } == {
        "erase": 5,
        "inpaint": 5,
        "search-and-replace": 5,
        "replace-background-and-relight": 8,
    }
    for mid in ("stability-outpaint", "stability-search-recolor", "stability-remove-background"):
        m = catalog.get(mid)
        assert m.reserve_usd() > m.price_usd()
    outpaint = catalog.get("stability-outpaint")
    assert [outpaint.params[s].max for s in ("left", "right", "up", "down")] == [2000] * 4
    assert (outpaint.params["creativity"].min, outpaint.params["creativity"].max) == (0, 1)
    assert catalog.get("stability-search-replace").requires_case_params == ("search_prompt",)
    assert catalog.get("stability-search-recolor").requires_case_params == ("select_prompt",)
    relight = catalog.get(RELIGHT_ID)
    assert relight.requires_case_params == ("background_prompt",) and relight.inputs.param == "subject_image"
    assert catalog.get("stability-remove-background").output_formats == ("png", "webp")
    assert catalog.get("stability-outpaint").operations == ("zoom_out",)


def test_catalogue_credits_match_what_the_server_bills(catalog):
    for m in catalog.select("provider:stability"):
        assert ENDPOINTS[m.endpoint.removeprefix("stable-image/edit/")].credits == m.price.credits, m.id


def test_registered_under_its_name(stability_sim):
    p = create_provider("stability", base_url=stability_sim.base_url)
    assert isinstance(p, StabilityEditProvider) and capabilities_of(p).resumable


# ---- success paths -----------------------------------------------------------------------------

EXPECTED_FIELDS = {
    "stability-erase": ({"seed": "0", "output_format": "png"}, {"image", "mask"}),
    "stability-inpaint": ({"prompt": "a red ball", "seed": "0", "output_format": "png"}, {"image", "mask"}),
    "stability-outpaint": (
        {"left": "32", "right": "32", "up": "16", "down": "16", "output_format": "png", "seed": "0"},
        {"image"},
    ),
    "stability-search-replace": (
        {"prompt": "a dog", "search_prompt": "cat", "seed": "0", "output_format": "png"},
        {"image"},
    ),
    "stability-search-recolor": (
        {"prompt": "bright red", "select_prompt": "car", "seed": "0", "output_format": "png"},
        {"image"},
    ),
    "stability-remove-background": ({"output_format": "png"}, {"image"}),
    RELIGHT_ID: ({"background_prompt": "a sunny beach", "seed": "0", "output_format": "png"}, {"subject_image"}),
}


@pytest.mark.parametrize("model_id", STABILITY_IDS)
async def test_every_entry_succeeds_against_the_local_server(model_id, catalog, provider, stability_sim):
    request = request_for(catalog, model_id)
    out = await provider.edit(request)
    assert out.ok, out.error
    assert out.simulated and out.format == "png" and out.cost_source == "list_price"
    assert out.cost_usd == pytest.approx(request.model.price_usd())
    assert Image.open(io.BytesIO(out.image)).size == (out.width, out.height)
    assert out.metadata["finish_reason"] == "SUCCESS" and out.metadata["credits"] == request.model.price.credits
    assert out.latency.total_ms is not None and out.latency.total_ms >= out.latency.submit_ms
    # the server parsed exactly the multipart fields and files this endpoint needs
    (received,) = stability_sim.sim.requests
    fields, files = EXPECTED_FIELDS[model_id]
    assert received.fields == fields and set(received.files) == files
    assert received.accept == "image/*"
    (entry,) = stability_sim.sim.ledger
    assert entry.credits == request.model.price.credits and entry.usd == pytest.approx(out.cost_usd)


async def test_outpaint_margins_come_from_the_target_size(catalog, provider, stability_sim):
    request = request_for(catalog, "stability-outpaint", options=ImageEditOptions(width=161, height=64 + 7))
    prepared = provider.prepare(request)
    assert {k: prepared.params[k] for k in ("left", "right", "up", "down")} == {
        "left": 32,
        "right": 33,
        "up": 3,
        "down": 4,
    }
    assert prepared.expected_size == (161, 71)
    out = await provider.edit(request)
    assert out.ok and (out.width, out.height) == (161, 71)


def test_outpaint_margins_may_be_given_directly(catalog, provider):
    request = request_for(catalog, "stability-outpaint", options=ImageEditOptions(extra={"left": 40}))
    prepared = provider.prepare(request)
    assert [prepared.params[k] for k in ("left", "right", "up", "down")] == [40, 0, 0, 0]
    assert prepared.expected_size == (136, 64)


@pytest.mark.parametrize(
    "options, complaint",
    [
        (ImageEditOptions(), "target size larger than the input"),
        (ImageEditOptions(width=80, height=64), "smaller than the input"),
        (ImageEditOptions(width=160, height=96, extra={"left": 5}), "not both"),
        # Stability's limit: at most 2000 px added per side (wavespeed-models-2026.md §3)
        (ImageEditOptions(width=96 + 4100, height=64), "at most 2000 px per side"),
        (ImageEditOptions(extra={"left": 2001}), "outside 0–2000"),
    ],
)
def test_outpaint_needs_a_larger_target(options, complaint, catalog, provider):
    with pytest.raises(InvalidInputError, match=complaint):
        provider.prepare(request_for(catalog, "stability-outpaint", options=options))


async def test_missing_case_parameter_is_refused_before_sending(catalog, provider, stability_sim):
    request = request_for(catalog, "stability-search-replace", options=ImageEditOptions())
    with pytest.raises(InvalidInputError, match="search_prompt"):
        await provider.edit(request)
    assert stability_sim.sim.requests == []


def test_remove_background_refuses_jpeg_output(catalog, provider):
    with pytest.raises(InvalidInputError, match="png, webp"):
        provider.prepare(
            request_for(catalog, "stability-remove-background", options=ImageEditOptions(output_format="jpeg"))
        )


async def test_mask_drawn_as_transparency_is_sent_white_means_edit(catalog, provider, stability_sim):
    rgba = Image.new("RGBA", (96, 64), (0, 0, 0, 255))
    rgba.paste((0, 0, 0, 0), (10, 20, 40, 50))  # transparent = the region to edit
    buf = io.BytesIO()
    rgba.save(buf, "PNG")
    out = await provider.edit(request_for(catalog, "stability-inpaint", mask=load_image(buf.getvalue())))
    assert out.ok
    sent = np.asarray(Image.open(io.BytesIO(stability_sim.sim.requests[0].files["mask"])).convert("L"))
    expected = np.zeros((64, 96), dtype=np.uint8)
    expected[20:50, 10:40] = 255
    assert np.array_equal(sent, expected)


async def test_erase_without_mask_needs_transparent_pixels(catalog, provider, stability_sim):
    with pytest.raises(InvalidInputError, match="needs a mask"):
        provider.prepare(request_for(catalog, "stability-erase", mask=None))
    rgba = Image.open(io.BytesIO(make_png(96, 64))).convert("RGBA")
    rgba.paste((0, 0, 0, 0), (0, 0, 30, 30))
    buf = io.BytesIO()
    rgba.save(buf, "PNG")
    out = await provider.edit(request_for(catalog, "stability-erase", mask=None, image=load_image(buf.getvalue())))
    assert out.ok and set(stability_sim.sim.requests[0].files) == {"image"}


async def test_request_over_10_mib_is_refused_before_sending(catalog, provider, stability_sim):
    big = load_image(make_png(1900, 1900, seed=3))  # noise does not compress: > 10 MiB
    assert len(big.data) > 10 * 2**20
    with pytest.raises(InvalidInputError, match="10 MiB"):
        await provider.edit(request_for(catalog, "stability-search-replace", image=big))
    assert stability_sim.sim.requests == []


async def test_seed_is_sent_when_asked_and_reported_back(catalog, provider, stability_sim):
    out = await provider.edit(request_for(catalog, "stability-inpaint", options=ImageEditOptions(seed=42)))
    assert stability_sim.sim.requests[0].fields["seed"] == "42"
    assert out.metadata["seed"] == 42


# ---- asynchronous relight ----------------------------------------------------------------------


async def test_relight_records_the_id_before_polling(catalog, provider, stability_sim):
    seen: list[tuple[str, int]] = []

    async def on_submitted(generation_id: str) -> None:
        seen.append((generation_id, len(stability_sim.sim.polls)))

    out = await provider.edit(request_for(catalog, RELIGHT_ID), on_submitted=on_submitted)
    assert out.ok, out.error
    ((generation_id, polls_before),) = seen
    assert polls_before == 0
    assert out.prediction_id == generation_id
    assert stability_sim.sim.polls == [(generation_id, 202), (generation_id, 200)]
    assert [e.endpoint for e in stability_sim.sim.ledger] == [RELIGHT]
    assert out.cost_usd == pytest.approx(0.08)


async def test_resume_polls_without_submitting_again(catalog, stability_sim, monkeypatch):
    monkeypatch.setenv("STABILITY_API_KEY", stability_sim.api_key)
    recorded: list[str] = []

    async def crash_after_recording(generation_id: str) -> None:
        recorded.append(generation_id)
        raise RuntimeError("the process died here")

    first = StabilityEditProvider(base_url=stability_sim.base_url, poll_interval_s=0.01, retry=FAST_RETRY)
    with pytest.raises(RuntimeError):
        await first.edit(request_for(catalog, RELIGHT_ID), on_submitted=crash_after_recording)
    await first.aclose()
    assert stability_sim.sim.ledger == [] and stability_sim.sim.polls == []

    second = StabilityEditProvider(base_url=stability_sim.base_url, poll_interval_s=0.01, retry=FAST_RETRY)
    out = await second.resume(request_for(catalog, RELIGHT_ID), recorded[0])
    await second.aclose()
    assert out.ok and out.prediction_id == recorded[0]
    assert len(stability_sim.sim.posts_to(RELIGHT)) == 1  # submitted (and billed) once
    assert len(stability_sim.sim.ledger) == 1


async def test_resume_of_an_unknown_id_is_a_failed_task(catalog, provider, stability_sim):
    out = await provider.resume(request_for(catalog, RELIGHT_ID), "f" * 64)
    assert not out.ok and out.error.category == Category.TASK_FAILED and out.error.status_code == 404
    assert out.cost_usd is None and out.prediction_id == "f" * 64
    assert stability_sim.sim.requests == []


async def test_results_are_private_to_the_key_that_created_them(catalog, provider, stability_sim):
    ids: list[str] = []

    async def keep(i: str) -> None:
        ids.append(i)

    assert (await provider.edit(request_for(catalog, RELIGHT_ID), on_submitted=keep)).ok
    other = StabilityEditProvider(api_key="sk-someone-else-0000", base_url=stability_sim.base_url, poll_interval_s=0.01)
    out = await other.resume(request_for(catalog, RELIGHT_ID), ids[0])
    await other.aclose()
    assert not out.ok and out.error.status_code in (401, 404)


async def test_relight_that_never_finishes_times_out_keeping_its_id(catalog, stability_sim, monkeypatch):
    monkeypatch.setenv("STABILITY_API_KEY", stability_sim.api_key)
    stability_sim.inject("never_finish")
    p = StabilityEditProvider(base_url=stability_sim.base_url, poll_interval_s=0.01, max_wait_s=0.15)
    out = await p.edit(request_for(catalog, RELIGHT_ID))
    await p.aclose()
    assert not out.ok and out.error.category == Category.TIMEOUT and out.error.retryable
    assert out.prediction_id and out.cost_usd is None and out.cost_source == "unknown"
    assert "resume" in out.error.message
    assert stability_sim.sim.ledger == []


# ---- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind, category, status",
    [
        ("moderation", Category.MODERATION, 403),
        ("payload_too_large", Category.BAD_REQUEST, 413),
        ("unprocessable", Category.BAD_REQUEST, 422),
        ("server_error", Category.SERVER, 500),
    ],
)
async def test_errors_map_to_categories_and_are_not_charged(kind, category, status, catalog, provider, stability_sim):
    stability_sim.inject(kind)
    out = await provider.edit(request_for(catalog, "stability-inpaint"))
    assert not out.ok and out.error.category == category and out.error.status_code == status
    assert out.cost_usd == 0.0 and out.simulated and not out.error.retryable
    assert len(stability_sim.sim.requests) == 1  # none of these is re-sent (a 500 on a paid POST included)
    assert stability_sim.sim.ledger == []
    if kind == "moderation":
        assert "not charged" in out.error.message


async def test_wrong_key_is_an_auth_failure(catalog, stability_sim):
    p = StabilityEditProvider(api_key="sk-not-the-right-key", base_url=stability_sim.base_url)
    out = await p.edit(request_for(catalog, "stability-erase"))
    await p.aclose()
    assert out.error.category == Category.AUTH and out.error.status_code == 401
    assert "STABILITY_API_KEY" in out.error.message


async def test_429_is_retried_honouring_retry_after(catalog, provider, stability_sim):
    stability_sim.inject("rate_limit", count=2, retry_after_s=0.02)
    out = await provider.edit(request_for(catalog, "stability-erase"))
    assert out.ok
    assert out.metadata["retry_waits_s"] == [0.02, 0.02]
    assert [r.status for r in stability_sim.sim.requests] == [429, 429, 200]
    assert len(stability_sim.sim.ledger) == 1


async def test_429_until_attempts_run_out_is_a_rate_limit_failure(catalog, provider, stability_sim):
    stability_sim.inject("rate_limit", count=None, retry_after_s=0.01)
    out = await provider.edit(request_for(catalog, "stability-erase"))
    assert not out.ok and out.error.category == Category.RATE_LIMIT and out.error.retryable
    assert len(stability_sim.sim.requests) == FAST_RETRY.max_attempts and out.cost_usd == 0.0


async def test_timeout_after_sending_is_an_unknown_outcome_never_resent(catalog, stability_sim, monkeypatch):
    monkeypatch.setenv("STABILITY_API_KEY", stability_sim.api_key)
    stability_sim.inject("slow", delay_s=0.4)
    p = StabilityEditProvider(base_url=stability_sim.base_url, timeout_s=0.1, retry=FAST_RETRY)
    out = await p.edit(request_for(catalog, "stability-erase"))
    await p.aclose()
    assert not out.ok and out.error.category == Category.UNKNOWN_OUTCOME
    assert out.cost_usd is None and out.cost_source == "unknown"
    assert len(stability_sim.sim.requests) == 1
    # …and the server did generate (and bill) it: exactly why it must not be re-sent
    await wait_until(lambda: stability_sim.sim.ledger)
    assert len(stability_sim.sim.ledger) == 1


async def test_connection_refused_is_retried_then_reported(catalog, monkeypatch):
    monkeypatch.setenv("STABILITY_API_KEY", "sk-unused-but-set")
    p = StabilityEditProvider(base_url=f"http://127.0.0.1:{refused_port()}", retry=FAST_RETRY)
    out = await p.edit(request_for(catalog, "stability-erase"))
    await p.aclose()
    assert out.error.category == Category.NETWORK and out.error.retryable and out.cost_usd == 0.0
    assert len(out.metadata["retry_waits_s"]) == FAST_RETRY.max_attempts - 1


async def test_content_filtered_is_an_ok_outcome_flagged(catalog, provider, stability_sim):
    stability_sim.inject("content_filtered")
    out = await provider.edit(request_for(catalog, "stability-search-replace"))
    assert out.ok and out.content_filtered
    assert out.metadata["finish_reason"] == "CONTENT_FILTERED" and "filtered" in out.metadata["content_filter"]
    assert stability_sim.sim.ledger[0].finish_reason == "CONTENT_FILTERED"


# ---- keys and configuration -------------------------------------------------------------------


async def test_missing_key_is_reported_at_the_first_call(catalog, stability_sim, monkeypatch):
    monkeypatch.delenv("STABILITY_API_KEY", raising=False)
    p = StabilityEditProvider(base_url=stability_sim.base_url)  # constructing needs no key
    p.prepare(request_for(catalog, "stability-erase"))
    with pytest.raises(MissingKeyError, match="STABILITY_API_KEY"):
        await p.edit(request_for(catalog, "stability-erase"))
    assert stability_sim.sim.requests == []


def test_base_url_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("STABILITY_BASE_URL", "http://127.0.0.1:9/")
    assert StabilityEditProvider().base_url == "http://127.0.0.1:9"
    assert StabilityEditProvider(base_url="http://localhost:1").base_url == "http://localhost:1"
    monkeypatch.delenv("STABILITY_BASE_URL")
    assert StabilityEditProvider().base_url == "https://api.stability.ai"


async def test_canary_key_never_leaks(catalog, stability_sim, caplog):
    caplog.set_level(logging.DEBUG)
    key = stability_sim.api_key
    p = StabilityEditProvider(api_key=key, base_url=stability_sim.base_url, poll_interval_s=0.01, retry=FAST_RETRY)
    outcomes: list[EditOutcome] = [await p.edit(request_for(catalog, "stability-erase"))]
    for kind in ("rate_limit", "moderation", "server_error", "unprocessable"):
        stability_sim.inject(kind, retry_after_s=0.01)
        outcomes.append(await p.edit(request_for(catalog, "stability-inpaint")))
    outcomes.append(await p.resume(request_for(catalog, RELIGHT_ID), "0" * 64))
    await p.aclose()
    assert [o.ok for o in outcomes] == [True, True, False, False, False, False]
    texts = [caplog.text, repr(p), str(p._key)]
    for o in outcomes:
        texts += [repr(o), json.dumps(o.metadata, default=str), repr(o.error), o.error.message if o.error else ""]
    assert all(key not in t for t in texts)
    assert "retrying" in caplog.text  # the log was captured at all


# ---- the server itself ---------------------------------------------------------------------------


def test_server_rejects_missing_and_unknown_fields_with_stability_errors(stability_sim):
    headers = {"authorization": f"Bearer {stability_sim.api_key}", "accept": "image/*"}
    files = {"image": ("i.png", make_png(96, 64), "image/png")}
    url = f"{stability_sim.base_url}/v2beta/stable-image/edit/search-and-replace"
    r = httpx.post(url, headers=headers, files=files, data={"prompt": "x", "colour": "red"})
    assert r.status_code == 400
    body = r.json()
    assert set(body) == {"id", "name", "errors"} and r.headers["x-evalkit-simulated"] == "1"
    assert "search_prompt: is required" in body["errors"] and any("colour" in e for e in body["errors"])
    tiny = {"image": ("i.png", make_png(32, 32), "image/png")}
    r = httpx.post(f"{stability_sim.base_url}/v2beta/stable-image/edit/erase", headers=headers, files=tiny)
    assert r.status_code == 400 and "at least 64" in r.json()["errors"][0]
    r = httpx.post(
        url, headers={"authorization": "Bearer nope"}, files=files, data={"prompt": "x", "search_prompt": "y"}
    )
    assert r.status_code == 401
    assert stability_sim.sim.ledger == []


def test_server_answers_413_over_10_mib(stability_sim):
    headers = {"authorization": f"Bearer {stability_sim.api_key}"}
    files = {"image": ("i.png", b"\0" * (10 * 2**20 + 1), "image/png")}
    r = httpx.post(f"{stability_sim.base_url}/v2beta/stable-image/edit/erase", headers=headers, files=files, timeout=30)
    assert r.status_code == 413 and r.json()["name"] == "payload_too_large"


def test_server_answers_json_when_asked(stability_sim):
    headers = {"authorization": f"Bearer {stability_sim.api_key}", "accept": "application/json"}
    r = httpx.post(
        f"{stability_sim.base_url}/v2beta/stable-image/edit/remove-background",
        headers=headers,
        files={"image": ("i.png", make_png(96, 64), "image/png")},
    )
    body = r.json()
    assert r.status_code == 200 and body["finish_reason"] == "SUCCESS" and body["image"]
    assert stability_sim.sim.total_credits == 2 and stability_sim.sim.total_usd == pytest.approx(0.02)


def test_simulated_relight_latency_keeps_the_job_running():
    sim = StabilitySim("sk-latency-test", relight_polls_before_done=0, fixed_latency_ms=60_000)
    server = start_in_thread(sim.app)
    try:
        headers = {"authorization": "Bearer sk-latency-test"}
        r = httpx.post(
            f"{server.base_url}/v2beta/stable-image/edit/{RELIGHT}",
            headers=headers,
            files={"subject_image": ("s.png", make_png(96, 64), "image/png")},
            data={"background_prompt": "a beach"},
        )
        gid = r.json()["id"]
        r = httpx.get(f"{server.base_url}/v2beta/results/{gid}", headers=headers)
        assert r.status_code == 202 and r.json()["status"] == "in-progress"
        assert sim.ledger == []
    finally:
        server.stop()


# ---- live (real API; costs 2 credits) -----------------------------------------------------------


@pytest.mark.live
async def test_live_remove_background(catalog):
    if not os.environ.get("STABILITY_API_KEY"):
        pytest.skip("STABILITY_API_KEY is not set")
    from evalkit.doctor import run_doctor

    def balance_usd() -> float | None:  # Stability's own account of the credits left (GET /v1/user/balance)
        (check,) = run_doctor(providers=("stability",))
        assert check.ok, check.problem
        return check.balance_usd

    before = await asyncio.to_thread(balance_usd)
    p = StabilityEditProvider()
    try:
        out = await p.edit(request_for(catalog, "stability-remove-background", image=load_image(make_png(64, 64))))
    finally:
        await p.aclose()
    assert out.ok, out.error
    assert not out.simulated and out.cost_usd == pytest.approx(0.02)
    # the bill: the credits dropped by what evalkit recorded (the balance may take a while to show it; another
    # client spending from this account at the same time would also move it)
    spent, deadline = 0.0, time.monotonic() + 60
    while time.monotonic() < deadline:
        spent = before - await asyncio.to_thread(balance_usd)
        if spent >= out.cost_usd - 1e-9:
            break
        await asyncio.sleep(5)
    assert spent == pytest.approx(out.cost_usd, abs=1e-6), (
        f"credits worth ${spent:.4f} were spent, recorded ${out.cost_usd}"
    )
