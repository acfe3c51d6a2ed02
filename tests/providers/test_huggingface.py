"""HuggingFaceEditProvider (through huggingface_hub's AsyncInferenceClient) against the local HF server."""

from __future__ import annotations

import io
import json
import logging
import os
from dataclasses import replace

import httpx
import pytest
from huggingface_hub.inference._providers import PROVIDERS
from PIL import Image

from evalkit.errors import Category, MissingKeyError
from evalkit.images import load_image
from evalkit.providers import create_provider
from evalkit.providers.base import EditRequest, ImageEditOptions, capabilities_of
from evalkit.providers.huggingface import HuggingFaceEditProvider
from evalkit.providers.retry import RetryPolicy
from tests.plugins.common import make_png, refused_port, wait_until

# huggingface_hub 2.4.0 posts bytes with httpx2's deprecated `data=`: its own noise, not evalkit's
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")

FAST_RETRY = RetryPolicy(max_attempts=3, base_s=0.01, max_backoff_s=0.05, jitter=False)
HF_IDS = ["hf-qwen-image-edit-2511", "hf-qwen-image-edit", "hf-flux-kontext-dev", "hf-flux-2-dev"]
KONTEXT = "black-forest-labs/FLUX.1-Kontext-dev"


def request_for(catalog, model_id: str = "hf-flux-kontext-dev", **kw) -> EditRequest:
    kw.setdefault("prompt", "make the sky purple")
    return EditRequest(model=catalog.get(model_id), images=(load_image(make_png(96, 64)),), **kw)


@pytest.fixture
async def provider(huggingface_sim, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", huggingface_sim.api_key)
    p = HuggingFaceEditProvider(endpoint_url=huggingface_sim.base_url, retry=FAST_RETRY)
    yield p
    await p.aclose()


# ---- catalogue ---------------------------------------------------------------------------------


def test_catalogue_entries_route_through_providers_that_serve_image_to_image(catalog):
    models = catalog.select("provider:huggingface")
    assert sorted(m.id for m in models) == sorted(HF_IDS)
    for m in models:
        route = m.defaults["inference_provider"]
        assert "image-to-image" in PROVIDERS[route], f"{m.id}: huggingface_hub has no image-to-image for {route}"
        assert "/" in m.endpoint  # a Hub model id
        assert m.price.kind == "unknown" and m.reserve_usd() > 0 and m.price_usd() is None
        assert m.facts["price"].confidence == "low"


def test_registered_under_its_name_and_not_resumable(monkeypatch):
    p = create_provider("huggingface", endpoint_url="http://127.0.0.1:9/")
    assert isinstance(p, HuggingFaceEditProvider) and capabilities_of(p).resumable is False
    assert p.base_url == "http://127.0.0.1:9"  # what the runner reads to spot a local simulator
    monkeypatch.delenv("HF_INFERENCE_ENDPOINT", raising=False)
    assert HuggingFaceEditProvider().base_url == "https://router.huggingface.co"


# ---- success paths -----------------------------------------------------------------------------


@pytest.mark.parametrize("model_id", HF_IDS)
async def test_every_entry_succeeds_against_the_local_server(model_id, catalog, provider, huggingface_sim):
    request = request_for(catalog, model_id)
    prepared = provider.prepare(request)
    assert prepared.price_usd is None and prepared.reserve_usd == request.model.price.reserve_usd
    submitted: list[str] = []

    async def on_submitted(i: str) -> None:
        submitted.append(i)

    out = await provider.edit(request, on_submitted=on_submitted)
    assert out.ok, out.error
    assert out.simulated and out.cost_usd is None and out.cost_source == "unknown"
    assert out.format == "png" and Image.open(io.BytesIO(out.image)).size == (out.width, out.height) == (96, 64)
    assert "output_notes" not in out.metadata  # the server's own bytes were kept, not a re-encode
    assert submitted == []  # no job id exists
    (received,) = huggingface_sim.sim.requests
    assert received.model == request.model.endpoint
    assert received.content_type.startswith("application/json")
    assert received.parameters == {"prompt": "make the sky purple"}  # inference_provider is a route, not sent
    assert received.image == request.images[0].data


async def test_options_reach_the_model_parameters(catalog, provider, huggingface_sim):
    options = ImageEditOptions(guidance_scale=3.5, steps=20, negative_prompt="blurry")
    out = await provider.edit(request_for(catalog, "hf-qwen-image-edit-2511", options=options))
    assert out.ok
    assert huggingface_sim.sim.requests[0].parameters == {
        "prompt": "make the sky purple",
        "negative_prompt": "blurry",
        "num_inference_steps": 20,
        "guidance_scale": 3.5,
    }


async def test_without_parameters_the_raw_image_is_posted(catalog, provider, huggingface_sim):
    spec = replace(catalog.get("hf-flux-kontext-dev"), prompt="optional")
    request = EditRequest(model=spec, images=(load_image(make_png(96, 64)),), prompt=None)
    out = await provider.edit(request)
    assert out.ok
    (received,) = huggingface_sim.sim.requests
    assert not received.content_type.startswith("application/json") and received.parameters == {}
    assert received.image == request.images[0].data  # the body was the image itself


async def test_endpoint_url_may_name_where_the_model_goes(catalog, huggingface_sim, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", huggingface_sim.api_key)
    monkeypatch.setenv("HF_INFERENCE_ENDPOINT", f"{huggingface_sim.base_url}/models/{{model}}")
    p = HuggingFaceEditProvider()
    out = await p.edit(request_for(catalog))
    await p.aclose()
    assert out.ok and out.metadata["endpoint_url"] == f"{huggingface_sim.base_url}/models/{KONTEXT}"
    assert huggingface_sim.sim.requests[0].model == KONTEXT


# ---- retries and errors ------------------------------------------------------------------------


async def test_model_loading_503_is_retried_after_its_estimated_time(catalog, provider, huggingface_sim):
    huggingface_sim.inject("loading", retry_after_s=0.03)
    out = await provider.edit(request_for(catalog))
    assert out.ok
    assert out.metadata["attempts"] == 2 and out.metadata["retry_waits_s"] == [0.03]
    assert [r.status for r in huggingface_sim.sim.requests] == [503, 200]


async def test_429_is_retried_honouring_retry_after(catalog, provider, huggingface_sim):
    huggingface_sim.inject("rate_limit", count=2, retry_after_s=0.02)
    out = await provider.edit(request_for(catalog))
    assert out.ok and out.metadata["retry_waits_s"] == [0.02, 0.02]
    assert [r.status for r in huggingface_sim.sim.requests] == [429, 429, 200]


async def test_503_until_attempts_run_out_is_a_retryable_server_failure(catalog, provider, huggingface_sim):
    huggingface_sim.inject("loading", count=None, retry_after_s=0.01)
    out = await provider.edit(request_for(catalog))
    assert not out.ok and out.error.category == Category.SERVER and out.error.retryable
    assert len(huggingface_sim.sim.requests) == FAST_RETRY.max_attempts
    assert "loading" in out.error.message


async def test_402_is_reported_as_out_of_credit_and_not_retried(catalog, provider, huggingface_sim):
    huggingface_sim.inject("payment_required")
    out = await provider.edit(request_for(catalog))
    assert not out.ok and out.error.category == Category.BALANCE and out.error.status_code == 402
    assert "out of Inference Providers credit" in out.error.message and "settings/billing" in out.error.message
    assert len(huggingface_sim.sim.requests) == 1 and out.cost_usd is None


@pytest.mark.parametrize(
    "kind, category, status", [("server_error", Category.SERVER, 500), ("bad_request", Category.BAD_REQUEST, 400)]
)
async def test_other_errors_are_mapped_and_not_retried(kind, category, status, catalog, provider, huggingface_sim):
    huggingface_sim.inject(kind)
    out = await provider.edit(request_for(catalog))
    assert not out.ok and out.error.category == category and out.error.status_code == status
    assert not out.error.retryable and out.simulated
    assert len(huggingface_sim.sim.requests) == 1 and out.cost_usd is None and out.cost_source == "unknown"


async def test_wrong_token_is_an_auth_failure(catalog, huggingface_sim):
    p = HuggingFaceEditProvider(token="hf_wrongwrongwrong", endpoint_url=huggingface_sim.base_url, retry=FAST_RETRY)
    out = await p.edit(request_for(catalog))
    await p.aclose()
    assert out.error.category == Category.AUTH and out.error.status_code == 401 and "HF_TOKEN" in out.error.message


async def test_timeout_is_an_unknown_outcome_never_resent(catalog, huggingface_sim, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", huggingface_sim.api_key)
    huggingface_sim.inject("slow", delay_s=0.4)
    p = HuggingFaceEditProvider(endpoint_url=huggingface_sim.base_url, timeout_s=0.1, retry=FAST_RETRY)
    out = await p.edit(request_for(catalog))
    await p.aclose()
    assert not out.ok and out.error.category == Category.UNKNOWN_OUTCOME and out.cost_usd is None
    assert len(huggingface_sim.sim.requests) == 1
    await wait_until(
        lambda: huggingface_sim.sim.generations
    )  # the server still generates it: why it must not be re-sent
    assert len(huggingface_sim.sim.generations) == 1


async def test_connection_refused_is_retried_then_reported(catalog, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_unused_but_set")
    p = HuggingFaceEditProvider(endpoint_url=f"http://127.0.0.1:{refused_port()}", retry=FAST_RETRY)
    out = await p.edit(request_for(catalog))
    await p.aclose()
    assert out.error.category == Category.NETWORK and out.error.retryable
    assert out.metadata["attempts"] == FAST_RETRY.max_attempts


async def test_resume_reports_an_unknown_outcome_without_calling(catalog, provider, huggingface_sim):
    out = await provider.resume(request_for(catalog), "whatever")
    assert not out.ok and out.error.category == Category.UNKNOWN_OUTCOME and out.cost_usd is None
    assert "cannot be resumed" in out.error.message
    assert huggingface_sim.sim.requests == []


# ---- keys ----------------------------------------------------------------------------------------


async def test_missing_token_is_reported_at_the_first_call(catalog, huggingface_sim, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    p = HuggingFaceEditProvider(endpoint_url=huggingface_sim.base_url)
    with pytest.raises(MissingKeyError, match="HF_TOKEN"):
        await p.edit(request_for(catalog))
    assert huggingface_sim.sim.requests == []


async def test_canary_token_never_leaks(catalog, huggingface_sim, caplog):
    caplog.set_level(logging.DEBUG)
    token = huggingface_sim.api_key
    p = HuggingFaceEditProvider(token=token, endpoint_url=huggingface_sim.base_url, retry=FAST_RETRY)
    outcomes = [await p.edit(request_for(catalog))]
    for kind in ("rate_limit", "payment_required", "server_error", "bad_request"):
        huggingface_sim.inject(kind, retry_after_s=0.01)
        outcomes.append(await p.edit(request_for(catalog)))
    await p.aclose()
    assert [o.ok for o in outcomes] == [True, True, False, False, False]
    texts = [caplog.text, repr(p), str(p._token)]
    for o in outcomes:
        texts += [repr(o), json.dumps(o.metadata, default=str), repr(o.error), o.error.message if o.error else ""]
    assert all(token not in t for t in texts)
    assert "retrying" in caplog.text


# ---- live (real Inference Providers; billed to the token's account) ----------------------------


@pytest.mark.live
async def test_live_flux_kontext(catalog):
    if not os.environ.get("HF_TOKEN"):
        pytest.skip("HF_TOKEN is not set")
    p = HuggingFaceEditProvider(timeout_s=300)
    try:
        out = await p.edit(request_for(catalog, "hf-flux-kontext-dev", prompt="make it black and white"))
    finally:
        await p.aclose()
    assert out.ok, out.error
    assert not out.simulated and out.cost_usd is None


def test_every_simulator_response_says_it_is_simulated(huggingface_sim):
    """Outputs, refusals and the control routes alike carry the simulated marker."""
    base, auth = huggingface_sim.base_url, {"Authorization": f"Bearer {huggingface_sim.api_key}"}
    with httpx.Client(base_url=base) as c:
        responses = [
            c.post(
                "/models/black-forest-labs/FLUX.1-Kontext-dev",
                content=make_png(32, 32),
                headers={**auth, "Content-Type": "image/png"},
            ),
            c.post(
                "/models/black-forest-labs/FLUX.1-Kontext-dev", content=b"x", headers={"Authorization": "Bearer wrong"}
            ),
            c.get("/_sim/ledger"),
            c.post("/_sim/faults", json={"kind": "rate_limit", "count": 1}),
            c.post("/_sim/faults", json={"kind": "no-such-fault"}),
            c.delete("/_sim/faults"),
        ]
    assert [r.status_code for r in responses] == [200, 401, 200, 200, 400, 200]
    assert all(r.headers.get("X-Evalkit-Simulated") == "1" for r in responses)
