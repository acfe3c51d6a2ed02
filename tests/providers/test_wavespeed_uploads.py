"""evalkit.providers.wavespeed_uploads against the local WaveSpeed simulator (real HTTP on loopback): the SDK's
ticket flow, the key never sent to the upload URL, and the upload cache — a large input is uploaded once per
provider and its URL reused, concurrent callers share one upload, a failed upload is not remembered."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import httpx
import pytest

from evalkit.credentials import Secret
from evalkit.errors import Category, ProviderError
from evalkit.images import load_image
from evalkit.providers import wavespeed_uploads
from evalkit.providers.base import EditRequest
from evalkit.providers.retry import RetryPolicy
from evalkit.providers.wavespeed import PollSchedule, WaveSpeedEditProvider
from evalkit.providers.wavespeed_uploads import UPLOAD_REUSE_S, UploadCache, upload_media
from evalkit.sim.wavespeed import SimHandle, start_wavespeed_sim
from tests.plugins.common import make_png
from tests.plugins.sim_wavespeed import FAST_TIME_SCALE

FAST_POLL = PollSchedule(initial_delay_s=0.01, factor=1.5, quick_polls=3, min_interval_s=0.02, max_interval_s=0.1)
FAST_RETRY = RetryPolicy(max_attempts=3, base_s=0.01, max_backoff_s=0.02, max_retry_after_s=0.02)


@pytest.fixture(scope="module")
def module_sim(catalog) -> Iterator[SimHandle]:
    with start_wavespeed_sim(catalog, time_scale=FAST_TIME_SCALE) as handle:
        yield handle


@pytest.fixture
def sim(module_sim) -> SimHandle:
    module_sim.sim.reset()
    return module_sim


@pytest.fixture
def big():
    img = load_image(make_png(96, 64, seed=21), name="big.png")
    assert len(img.data) > 4000
    return img


class Recorder:
    """An httpx client that keeps every request it sent (method, URL, headers, body)."""

    def __init__(self) -> None:
        self.sent: list[httpx.Request] = []
        self.client = httpx.AsyncClient(event_hooks={"request": [self._keep]}, timeout=10.0)

    async def _keep(self, request: httpx.Request) -> None:
        self.sent.append(request)

    def paths(self, method: str) -> list[str]:
        return [r.url.path for r in self.sent if r.method == method]


@pytest.fixture
async def recorder():
    r = Recorder()
    yield r
    await r.client.aclose()


async def no_sleep(_: float) -> None:
    return None


def upload(recorder: Recorder, sim: SimHandle, img, key: str | None = None):
    secret = Secret(key or sim.api_key, "WAVESPEED_API_KEY")
    return upload_media(
        recorder.client,
        sim.base_url,
        img,
        secret,
        headers={"Authorization": f"Bearer {secret.reveal()}"},
        retry=FAST_RETRY,
        sleep=no_sleep,
        service="WaveSpeed",
        key_env="WAVESPEED_API_KEY",
    )


# ---- the ticket flow ---------------------------------------------------------------------------------


async def test_upload_media_returns_a_url_serving_the_same_bytes(sim, recorder, big):
    url = await upload(recorder, sim, big)
    assert url.startswith(sim.base_url + "/_sim/uploads/")
    assert sim.sim.stats()["upload"] == 2  # the ticket and the PUT
    async with httpx.AsyncClient() as plain:
        got = await plain.get(url)
    assert got.status_code == 200 and got.content == big.data


async def test_the_key_goes_with_the_ticket_only_never_to_the_upload_url(sim, recorder, big):
    await upload(recorder, sim, big)
    ticket, put = recorder.sent
    assert ticket.method == "POST" and ticket.url.path == "/api/v3/media/uploads"
    assert ticket.headers["Authorization"] == f"Bearer {sim.api_key}"
    assert json.loads(ticket.content) == {
        "filename": f"{big.sha256[:16]}.png",
        "size": len(big.data),
        "content_type": "image/png",
    }
    assert put.method == "PUT" and "authorization" not in {k.lower() for k in put.headers}
    assert sim.api_key not in str(put.url) and put.content == big.data


async def test_a_wrong_key_is_an_auth_error_without_the_key_and_without_retries(sim, recorder, big):
    with pytest.raises(ProviderError) as info:
        await upload(recorder, sim, big, key="wrong-key-123456")
    err = info.value
    assert err.category == Category.AUTH and "WAVESPEED_API_KEY" in (err.hint or "")
    assert "wrong-key-123456" not in str(err) and "wrong-key-123456" not in repr(err)
    assert len(recorder.sent) == 1 and sim.sim.stats()["unauthorized"] == 1  # 401 is not retried


# ---- the cache -----------------------------------------------------------------------------------------


async def test_concurrent_callers_of_one_image_share_one_upload(sim, recorder, big):
    cache = UploadCache()
    calls = 0

    async def once() -> str:
        nonlocal calls
        calls += 1
        return await upload(recorder, sim, big)

    urls = await asyncio.gather(*(cache.url(big.sha256, once) for _ in range(10)))
    assert calls == 1 and len(set(urls)) == 1
    assert sim.sim.stats()["upload"] == 2
    assert await cache.url(big.sha256, once) == urls[0] and calls == 1  # later callers reuse it too


async def test_different_images_are_uploaded_separately(sim, recorder, big):
    cache = UploadCache()
    other = load_image(make_png(80, 80, seed=22))
    a = await cache.url(big.sha256, lambda: upload(recorder, sim, big))
    b = await cache.url(other.sha256, lambda: upload(recorder, sim, other))
    assert a != b and sim.sim.stats()["upload"] == 4


async def test_a_failed_upload_is_not_remembered(sim, recorder, big):
    cache = UploadCache()
    with pytest.raises(ProviderError):
        await cache.url(big.sha256, lambda: upload(recorder, sim, big, key="wrong-key-123456"))
    url = await cache.url(big.sha256, lambda: upload(recorder, sim, big))
    assert url.startswith(sim.base_url)


async def test_an_old_upload_url_is_not_reused(sim, recorder, big, monkeypatch):
    class Clock:
        now = 1000.0

        def monotonic(self) -> float:
            return self.now

    clock = Clock()
    monkeypatch.setattr(wavespeed_uploads, "time", clock)
    cache = UploadCache()
    first = await cache.url(big.sha256, lambda: upload(recorder, sim, big))
    clock.now += UPLOAD_REUSE_S - 60
    assert await cache.url(big.sha256, lambda: upload(recorder, sim, big)) == first
    clock.now += 120  # past the reuse window (the server keeps files 7 days; evalkit reuses them for 6)
    second = await cache.url(big.sha256, lambda: upload(recorder, sim, big))
    assert second != first and sim.sim.stats()["upload"] == 4


# ---- through the provider ----------------------------------------------------------------------------


def provider(sim: SimHandle, recorder: Recorder, **kw) -> WaveSpeedEditProvider:
    return WaveSpeedEditProvider(
        base_url=sim.base_url,
        api_key=Secret(sim.api_key, "WAVESPEED_API_KEY"),
        client=recorder.client,
        poll=FAST_POLL,
        retry=FAST_RETRY,
        **kw,
    )


def submitted_images(recorder: Recorder, catalog, model_ids) -> list[str]:
    refs = []
    for r in recorder.sent:
        for mid in model_ids:
            spec = catalog.get(mid)
            if r.method == "POST" and r.url.path == f"/api/v3/{spec.endpoint}":
                value = json.loads(r.content)[spec.inputs.param]
                refs += value if isinstance(value, list) else [value]
    return refs


async def test_a_large_input_is_uploaded_once_and_its_url_sent_to_every_model(sim, recorder, big, catalog):
    models = ("qwen-edit", "flux-kontext-pro", "seededit-v3")
    p = provider(sim, recorder, upload_threshold_bytes=1000)
    outcomes = [await p.edit(EditRequest(model=catalog.get(m), images=(big,), prompt="make it blue")) for m in models]
    assert all(o.ok for o in outcomes), [o.error for o in outcomes]
    assert recorder.paths("PUT") and len(recorder.paths("PUT")) == 1
    refs = submitted_images(recorder, catalog, models)
    assert len(refs) == 3 and len(set(refs)) == 1 and refs[0].startswith(sim.base_url + "/_sim/uploads/")
    assert outcomes[0].metadata.get("uploaded_inputs") == 1


async def test_small_inputs_are_inlined_and_uploads_can_be_switched_off(sim, recorder, big, catalog):
    p = provider(sim, recorder, upload_threshold_bytes=len(big.data))  # not *larger* than the threshold
    assert (await p.edit(EditRequest(model=catalog.get("qwen-edit"), images=(big,), prompt="blue"))).ok
    off = provider(sim, recorder, upload_threshold_bytes=None)
    assert (await off.edit(EditRequest(model=catalog.get("qwen-edit"), images=(big,), prompt="red"))).ok
    assert sim.sim.stats()["upload"] == 0 and recorder.paths("PUT") == []
    refs = submitted_images(recorder, catalog, ["qwen-edit"])
    assert len(refs) == 2 and all(r.startswith("data:image/png;base64,") for r in refs)
