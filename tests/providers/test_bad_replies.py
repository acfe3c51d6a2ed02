"""Garbage from a server (a web page, JSON without an id, a broken image…): a ProviderError with a clear category."""

from __future__ import annotations

import pytest

from evalkit.edit import agenerate_image_edit
from evalkit.errors import ProviderError
from tests.plugins.bad_input import HTML, PNG, assert_clear, garbage_options, garbage_server, ws_options

GARBAGE_CASES = [  # provider, model, reply, expected category, words in the message
    ("wavespeed", "qwen-edit", (200, HTML, "text/html"), "unknown_outcome", ["not JSON", "not sent again"]),
    (
        "wavespeed",
        "qwen-edit",
        (200, b'{"hello": "world"}', "application/json"),
        "unknown_outcome",
        ["without a prediction id"],
    ),
    ("wavespeed", "qwen-edit", (502, HTML, "text/html"), "unknown_outcome", ["HTTP 502", "not sent again"]),
    ("wavespeed", "qwen-edit", (404, HTML, "text/html"), "bad_request", ["HTTP 404"]),
    (
        "stability",
        "stability-search-replace",
        (200, b"OK", "text/plain"),
        "bad_output",
        ["neither an image nor a job id"],
    ),
    ("stability", "stability-search-replace", (200, b"\x89PNG garbage", "image/png"), "bad_output", ["image"]),
    ("huggingface", "hf-flux-kontext-dev", (200, HTML, "text/html"), "bad_output", []),
    ("huggingface", "hf-flux-kontext-dev", (500, b"oops", "text/plain"), "server", ["500"]),
]


@pytest.mark.parametrize(
    "provider,model,reply,category,words", GARBAGE_CASES, ids=[f"{c[0]}-{c[2][0]}-{c[2][2]}" for c in GARBAGE_CASES]
)
async def test_garbage_replies_give_a_clear_category(provider, model, reply, category, words):
    server = garbage_server(*reply)
    try:
        with pytest.raises(ProviderError) as info:
            await agenerate_image_edit(
                PNG,
                "make it blue",
                model=model,
                options={"extra": {"search_prompt": "square"}},
                workspace=False,
                provider_options=garbage_options(provider, server.base_url),
            )
    finally:
        server.stop()
    assert_clear(info.value, ProviderError, model, *words)
    assert info.value.category == category


async def test_garbage_from_the_simulator_mid_job(sim):
    """The WaveSpeed server accepts the job, then answers polls with broken JSON / downloads with HTML."""
    sim.sim.add_fault("garbage_poll")
    with pytest.raises(ProviderError) as info:
        await agenerate_image_edit(
            PNG, "make it blue", model="qwen-edit", workspace=False, provider_options=ws_options(sim)
        )
    assert_clear(info.value, ProviderError, "not JSON")
    assert info.value.category == "server" and info.value.prediction_id
    sim.sim.reset()
    sim.sim.add_fault("non_image_download")
    with pytest.raises(ProviderError) as info:
        await agenerate_image_edit(
            PNG, "make it blue", model="qwen-edit", workspace=False, provider_options=ws_options(sim)
        )
    assert_clear(info.value, ProviderError, "not a usable image")
    assert info.value.category == "bad_output"
