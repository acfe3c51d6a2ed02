"""WaveSpeedEditProvider end to end against the local WaveSpeed simulator (real HTTP on loopback).

Every catalogue model goes through the full call path, and every injected fault ends in the right
category (or a successful retry) — with the simulator's own record of created tasks (``sim.submits``)
proving that no call ever created a task twice.
"""

from __future__ import annotations

import asyncio
import io
from collections import Counter
from dataclasses import replace

import pytest
from PIL import Image

from evalkit.credentials import Secret
from evalkit.errors import Category
from evalkit.images import load_image
from evalkit.providers.base import EditRequest, ImageEditOptions
from evalkit.providers.pacing import PollPacer
from evalkit.providers.retry import RetryPolicy
from evalkit.providers.wavespeed import PollSchedule, WaveSpeedEditProvider
from tests.plugins.common import make_png

#: polls every few ms (the sim's models finish in ≤ ~50 ms); a short overall timeout for never_finish.
FAST_POLL = PollSchedule(
    initial_delay_s=0.005, factor=1.5, quick_polls=1000, min_interval_s=0.0, max_interval_s=0.03, timeout_s=10.0
)
#: Retry-After from the sim (1 s) is clamped to 20 ms so the suite stays fast.
FAST_RETRY = RetryPolicy(max_attempts=4, base_s=0.005, max_backoff_s=0.02, max_retry_after_s=0.02)


def _wavespeed_ids() -> list[str]:
    from evalkit.catalog import Catalog

    return [m.id for m in Catalog.load() if m.provider == "wavespeed"]


def _mask(w: int, h: int) -> bytes:
    img = Image.new("L", (w, h), 0)
    img.paste(255, (w // 4, h // 4, w // 2, h // 2))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def image():
    return load_image(make_png(96, 64, seed=11), name="case.png")


@pytest.fixture
async def provider_for():
    made: list[WaveSpeedEditProvider] = []

    def make(handle, **kw) -> WaveSpeedEditProvider:
        kw.setdefault("poll", FAST_POLL)
        kw.setdefault("retry", FAST_RETRY)
        p = WaveSpeedEditProvider(base_url=handle.base_url, api_key=Secret(handle.api_key, "WAVESPEED_API_KEY"), **kw)
        made.append(p)
        return p

    yield make
    for p in made:
        await p.aclose()


def request_for(catalog, model_id: str, image, **kw) -> EditRequest:
    m = catalog.get(model_id)
    if m.mask is not None and "mask" not in kw:
        kw["mask"] = load_image(_mask(image.width, image.height), name="mask.png")
    kw.setdefault("prompt", "replace the background with a beach")
    kw.setdefault("operation", "inpaint" if m.mask is not None and "inpaint" in m.operations else m.operations[0])
    return EditRequest(model=m, images=(image,), **kw)


def assert_no_duplicate_submits(sim, calls: int) -> None:
    """At most one created task per call, each with its own id."""
    ids = [s.prediction_id for s in sim.submits]
    assert len(ids) == len(set(ids))
    assert len(ids) <= calls


# ---- every model, the whole path ---------------------------------------------------------------


@pytest.mark.parametrize("model_id", _wavespeed_ids())
async def test_every_model_full_call_path(wavespeed_sim, provider_for, catalog, image, model_id, tmp_path):
    sim = wavespeed_sim.sim
    p = provider_for(wavespeed_sim)
    submitted: list[str] = []

    async def hook(pid: str) -> None:
        submitted.append(pid)

    if (catalog.get(model_id).limits.min_input_side or 0) > min(image.width, image.height):
        image = load_image(make_png(576, 384, seed=11), name="case.png")  # e.g. Qwen-Image 2.0: sides ≥ 384 px
    req = request_for(catalog, model_id, image, options=ImageEditOptions(seed=5), spool_dir=tmp_path)
    outcome = await p.edit(req, on_submitted=hook)
    assert outcome.ok, outcome.error
    assert outcome.simulated  # every sim response says so
    assert submitted == [outcome.prediction_id] == [s.prediction_id for s in sim.submits]
    data = outcome.read_image()
    img = Image.open(io.BytesIO(data))
    img.load()
    assert (img.width, img.height) == (outcome.width, outcome.height)
    assert outcome.format in catalog.get(model_id).output_formats
    assert outcome.image_path is not None and outcome.image_path.parent == tmp_path
    if catalog.get(model_id).price.kind == "unknown":  # no list price: recorded as unknown, never guessed
        assert outcome.cost_usd is None and outcome.cost_source == "unknown" and sim.billed_usd > 0
    else:
        assert outcome.cost_usd == pytest.approx(sim.billed_usd) and outcome.cost_source == "list_price"
    assert outcome.latency.inference_ms is not None and outcome.latency.total_ms >= outcome.latency.download_ms
    assert outcome.metadata["status"] == "completed"
    stats = sim.stats()
    assert stats["submit"] == 1 and stats["rejected"] == 0 and stats["unauthorized"] == 0


async def test_many_models_concurrently_bill_what_the_outcomes_say(wavespeed_sim, provider_for, catalog, image):
    sim = wavespeed_sim.sim
    p = provider_for(wavespeed_sim)
    # models with a known list price and no input-size floor above the case image
    ids = [
        mid
        for mid in _wavespeed_ids()
        if catalog.get(mid).price.kind != "unknown" and (catalog.get(mid).limits.min_input_side or 0) <= 64
    ]
    outcomes = await asyncio.gather(*(p.edit(request_for(catalog, mid, image)) for mid in ids))
    assert all(o.ok for o in outcomes), [o.error for o in outcomes if not o.ok]
    assert sum(o.cost_usd for o in outcomes) == pytest.approx(sim.billed_usd)
    assert len(sim.submits) == len(ids)
    assert_no_duplicate_submits(sim, len(ids))


# ---- faults --------------------------------------------------------------------------------------


async def test_rate_limit_on_submit_is_retried_without_duplicates(wavespeed_sim, provider_for, catalog, image):
    sim = wavespeed_sim.sim
    sim.add_fault("rate_limit", count=2)
    outcome = await provider_for(wavespeed_sim).edit(request_for(catalog, "qwen-edit", image))
    assert outcome.ok
    assert sim.stats()["submit"] == 3 and len(sim.submits) == 1


async def test_rate_limit_forever_is_rate_limit_and_nothing_created(wavespeed_sim, provider_for, catalog, image):
    sim = wavespeed_sim.sim
    sim.add_fault("rate_limit")
    outcome = await provider_for(wavespeed_sim).edit(request_for(catalog, "qwen-edit", image))
    assert outcome.error.category == Category.RATE_LIMIT and outcome.cost_usd == 0.0
    assert sim.submits == [] and sim.stats()["submit"] == FAST_RETRY.max_attempts


async def test_submit_503_is_unknown_by_default_and_retried_when_opted_in(wavespeed_sim, provider_for, catalog, image):
    sim = wavespeed_sim.sim
    sim.add_fault("submit_5xx", count=1)  # 503 (this sim created nothing, but a client cannot know that)
    outcome = await provider_for(wavespeed_sim).edit(request_for(catalog, "qwen-edit", image))
    assert outcome.error.category == Category.UNKNOWN_OUTCOME and sim.stats()["submit"] == 1
    sim.add_fault("submit_5xx", count=1)
    outcome = await provider_for(wavespeed_sim, resend_submit_on_503=True).edit(
        request_for(catalog, "qwen-edit", image)
    )
    assert outcome.ok and sim.stats()["submit"] == 3 and len(sim.submits) == 1


async def test_submit_500_is_not_resent(wavespeed_sim, provider_for, catalog, image):
    sim = wavespeed_sim.sim
    sim.add_fault("submit_5xx", status=500)
    outcome = await provider_for(wavespeed_sim).edit(request_for(catalog, "qwen-edit", image))
    assert outcome.error.category == Category.UNKNOWN_OUTCOME
    assert sim.stats()["submit"] == 1


async def test_accepted_then_5xx_is_unknown_and_not_resent(wavespeed_sim, provider_for, catalog, image):
    sim = wavespeed_sim.sim
    sim.add_fault("submit_accepted_5xx")
    outcome = await provider_for(wavespeed_sim).edit(request_for(catalog, "qwen-edit", image))
    assert outcome.error.category == Category.UNKNOWN_OUTCOME
    assert outcome.cost_usd is None and outcome.cost_source == "unknown"
    assert sim.stats()["submit"] == 1 and len(sim.submits) == 1  # the task exists: sending again would pay twice


async def test_submit_read_timeout_is_unknown_and_not_resent(wavespeed_sim, provider_for, catalog, image):
    sim = wavespeed_sim.sim
    sim.add_fault("submit_timeout", delay_s=2.0)
    p = provider_for(wavespeed_sim, submit_read_timeout_s=0.2)
    outcome = await p.edit(request_for(catalog, "qwen-edit", image))
    assert outcome.error.category == Category.UNKNOWN_OUTCOME
    assert sim.stats()["submit"] == 1 and len(sim.submits) == 1


async def test_wrong_shape_submit_is_unknown(wavespeed_sim, provider_for, catalog, image):
    sim = wavespeed_sim.sim
    sim.add_fault("wrong_shape_submit")
    outcome = await provider_for(wavespeed_sim).edit(request_for(catalog, "qwen-edit", image))
    assert outcome.error.category == Category.UNKNOWN_OUTCOME and "prediction id" in outcome.error.message
    assert sim.stats()["submit"] == 1


@pytest.mark.parametrize("kind", ["poll_5xx", "rate_limit_poll", "garbage_poll", "download_5xx"])
async def test_transient_poll_and_download_faults_are_retried(wavespeed_sim, provider_for, catalog, image, kind):
    sim = wavespeed_sim.sim
    sim.add_fault(kind, count=2)
    outcome = await provider_for(wavespeed_sim).edit(request_for(catalog, "qwen-edit", image))
    assert outcome.ok, outcome.error
    assert sim.stats()["fault_hits"] == {kind: 2}
    assert len(sim.submits) == 1 and sim.stats()["submit"] == 1


async def test_persistent_garbage_poll_is_a_clear_server_error(wavespeed_sim, provider_for, catalog, image):
    sim = wavespeed_sim.sim
    sim.add_fault("garbage_poll")
    outcome = await provider_for(wavespeed_sim).edit(request_for(catalog, "qwen-edit", image))
    assert outcome.error.category == Category.SERVER and "not JSON" in outcome.error.message
    assert outcome.prediction_id == sim.submits[0].prediction_id


@pytest.mark.parametrize(
    "kind,kw,category",
    [
        ("task_failed", {}, Category.TASK_FAILED),
        ("task_failed", {"code": 1401}, Category.BAD_REQUEST),
        ("task_failed", {"code": 5003}, Category.SERVER),
        ("moderation", {}, Category.MODERATION),
    ],
)
async def test_task_failures_map_to_categories(wavespeed_sim, provider_for, catalog, image, kind, kw, category):
    sim = wavespeed_sim.sim
    sim.add_fault(kind, **kw)
    outcome = await provider_for(wavespeed_sim).edit(request_for(catalog, "qwen-edit", image))
    assert outcome.error.category == category
    assert outcome.cost_usd == 0.0 and sim.billed_usd == 0.0
    assert len(sim.submits) == 1


@pytest.mark.parametrize("kind", ["truncated_download", "non_image_download"])
async def test_broken_downloads_are_bad_output(wavespeed_sim, provider_for, catalog, image, kind, tmp_path):
    sim = wavespeed_sim.sim
    sim.add_fault(kind)
    outcome = await provider_for(wavespeed_sim).edit(request_for(catalog, "qwen-edit", image, spool_dir=tmp_path))
    assert outcome.error.category == Category.BAD_OUTPUT
    assert outcome.cost_usd == pytest.approx(sim.billed_usd)  # the task completed and was billed
    assert list(tmp_path.iterdir()) == []


async def test_slow_responses_still_succeed(wavespeed_sim, provider_for, catalog, image):
    sim = wavespeed_sim.sim
    sim.add_fault("slow_response", delay_s=0.05, count=3)
    outcome = await provider_for(wavespeed_sim).edit(request_for(catalog, "qwen-edit", image))
    assert outcome.ok and len(sim.submits) == 1


async def test_never_finish_times_out_and_keeps_the_id(wavespeed_sim, provider_for, catalog, image):
    sim = wavespeed_sim.sim
    sim.add_fault("never_finish")
    p = provider_for(
        wavespeed_sim, poll=PollSchedule(initial_delay_s=0.01, min_interval_s=0.0, max_interval_s=0.02, timeout_s=0.3)
    )
    outcome = await p.edit(request_for(catalog, "qwen-edit", image))
    assert outcome.error.category == Category.TIMEOUT
    assert outcome.prediction_id == sim.submits[0].prediction_id
    assert sim.stats()["submit"] == 1


async def test_resume_after_a_crash_collects_without_resubmitting(wavespeed_sim_factory, provider_for, catalog, image):
    handle = wavespeed_sim_factory(fixed_latency_ms=150)
    sim = handle.sim
    first = provider_for(handle)
    got_id = asyncio.Event()
    ids: list[str] = []

    async def hook(pid: str) -> None:
        ids.append(pid)
        got_id.set()

    req = request_for(catalog, "qwen-edit", image)
    task = asyncio.create_task(first.edit(req, on_submitted=hook))
    await got_id.wait()
    task.cancel()  # the process "dies" while polling
    with pytest.raises(asyncio.CancelledError):
        await task
    outcome = await provider_for(handle).resume(req, ids[0])
    assert outcome.ok and outcome.prediction_id == ids[0]
    assert sim.stats()["submit"] == 1 and len(sim.submits) == 1
    assert outcome.cost_usd == pytest.approx(sim.billed_usd)


async def test_wrong_key_is_auth(wavespeed_sim, catalog, image):
    p = WaveSpeedEditProvider(
        base_url=wavespeed_sim.base_url, api_key=Secret("not-the-key"), poll=FAST_POLL, retry=FAST_RETRY
    )
    outcome = await p.edit(request_for(catalog, "qwen-edit", image))
    await p.aclose()
    assert outcome.error.category == Category.AUTH and outcome.error.status_code == 401
    assert wavespeed_sim.sim.submits == []


# ---- uploads, base64, sync mode ---------------------------------------------------------------


async def test_large_input_uploaded_once_for_several_models(wavespeed_sim, provider_for, catalog, image):
    sim = wavespeed_sim.sim
    p = provider_for(wavespeed_sim, upload_threshold_bytes=1000)
    outcomes = await asyncio.gather(
        *(p.edit(request_for(catalog, mid, image)) for mid in ("qwen-edit", "qwen-edit-plus", "flux-kontext-pro"))
    )
    assert all(o.ok for o in outcomes), [o.error for o in outcomes]
    assert sim.stats()["upload"] == 2  # one ticket + one PUT for the shared input
    assert len(sim.submits) == 3


async def test_base64_output_from_the_sim(wavespeed_sim, provider_for, catalog, image):
    outcome = await provider_for(wavespeed_sim, base64_output=True).edit(
        request_for(catalog, "seedream-v4.5-edit", image)
    )
    assert outcome.ok and outcome.image is not None
    assert wavespeed_sim.sim.stats()["download"] == 0


async def test_sync_mode_against_the_sim(wavespeed_sim, provider_for, catalog, image):
    outcome = await provider_for(wavespeed_sim, sync_mode=True).edit(request_for(catalog, "qwen-edit", image))
    assert outcome.ok and wavespeed_sim.sim.stats()["poll"] == 0


async def test_sync_timeout_falls_back_to_polling(wavespeed_sim_factory, provider_for, catalog, image):
    handle = wavespeed_sim_factory(fixed_latency_ms=400, sync_timeout_s=0.1)
    ids = []

    async def hook(pid):
        ids.append(pid)

    outcome = await provider_for(handle, sync_mode=True).edit(
        request_for(catalog, "qwen-edit", image), on_submitted=hook
    )
    assert outcome.ok and ids == [outcome.prediction_id]
    stats = handle.sim.stats()
    assert stats["submit"] == 1 and stats["poll"] >= 1 and len(handle.sim.submits) == 1


async def test_mixed_fault_storm_never_duplicates_a_submit(wavespeed_sim, provider_for, catalog, image):
    sim = wavespeed_sim.sim
    for kind in ("rate_limit", "submit_5xx", "poll_5xx", "rate_limit_poll", "download_5xx", "garbage_poll"):
        sim.add_fault(kind, rate=0.25)
    p = provider_for(
        wavespeed_sim, retry=RetryPolicy(max_attempts=8, base_s=0.002, max_backoff_s=0.01, max_retry_after_s=0.01)
    )
    ids = _wavespeed_ids()[:8]
    outcomes = await asyncio.gather(*(p.edit(request_for(catalog, mid, image)) for mid in ids))
    created = Counter(s.model_id for s in sim.submits)
    assert all(n == 1 for n in created.values())
    assert_no_duplicate_submits(sim, len(ids))
    ok = [o for o in outcomes if o.ok]
    assert sum(o.cost_usd for o in ok) == pytest.approx(sim.billed_usd)
    for o in outcomes:
        if not o.ok:  # only retry-exhaustion categories are possible here
            assert o.error.category in (Category.RATE_LIMIT, Category.SERVER), o.error


@pytest.mark.parametrize("probes", [8, 0], ids=["probed", "not-probed"])
async def test_the_first_wave_of_an_untimed_model_is_probed_and_the_rest_polled_once(
    wavespeed_sim_factory, provider_for, catalog, image, probes
):
    """30 tasks of 0.3 s accepted together, nothing known of the model, polls ≥ 0.2 s apart: a few probes find
    when the model finishes and the other tasks are first polled just after that — once each. Without probes
    every task's first poll comes at the 0.2 s spacing, too early, and each needs a second one (there the tasks
    take 1.5 s: a poll delayed by a busy machine still comes long before, so "too early" is not a race)."""
    handle = wavespeed_sim_factory(fixed_latency_ms=300 if probes else 1500)
    poll = PollSchedule(min_interval_s=0.2, max_interval_s=0.2, timeout_s=20.0)
    p = provider_for(handle, poll=poll)
    assert p.pacer is not None
    p.pacer = PollPacer(replace(p.pacer.config, probes=probes))
    outcomes = await asyncio.gather(*(p.edit(request_for(catalog, "qwen-edit", image)) for _ in range(30)))
    assert all(o.ok for o in outcomes), [o.error for o in outcomes if not o.ok]
    polled_again = sum(o.metadata["polls"] > 1 for o in outcomes)
    if probes:
        assert polled_again <= probes  # only probes (at most) needed more than one poll
        assert handle.sim.stats()["poll"] <= 30 + 2 * probes
    else:
        assert polled_again == 30


async def test_a_task_first_seen_finished_is_not_said_to_have_queued_half_its_wait(
    wavespeed_sim_factory, provider_for, catalog, image
):
    """The first poll finds the task done: it started at least its reported inference time before, so the
    queue estimate lies in [acceptance, seen done - inference] — not halfway to the poll."""
    handle = wavespeed_sim_factory(fixed_latency_ms=300)
    p = provider_for(handle, poll=PollSchedule(first_delay_s=0.5, adaptive=False, timeout_s=10.0))
    outcome = await p.edit(request_for(catalog, "qwen-edit", image))
    lat = outcome.latency
    assert outcome.ok and outcome.metadata["polls"] == 1 and lat.inference_ms == 300
    assert lat.queue_ms is not None and 0 <= lat.queue_ms <= (lat.total_ms - lat.inference_ms) / 2
