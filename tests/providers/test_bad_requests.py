"""Bad requests to :func:`evalkit.agenerate_image_edit` are refused before anything is sent: unknown models,
operations a model lacks, empty or huge prompts, missing keys, wrong masks, badly typed or non-finite options.

A property-based test (hypothesis) covers the WaveSpeed request builder: random sizes, aspect ratios and option
values either give a body the catalogue schema accepts or an InvalidInputError — never anything else.
"""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from evalkit.catalog import Catalog
from evalkit.edit import agenerate_image_edit
from evalkit.errors import ImageError, InvalidInputError, MissingKeyError, UnknownModelError
from evalkit.images import InputImage, load_image
from evalkit.providers.base import EditRequest, ImageEditOptions
from evalkit.providers.wavespeed import WaveSpeedEditProvider
from evalkit.sim.wavespeed.schema import body_problem
from evalkit.suites import MAX_PROMPT_CHARS
from tests.plugins.bad_input import (
    FAST_POLL,
    PNG,
    assert_clear,
    assert_intact,
    encode,
    request_count,
    state,
    ws_options,
)


async def test_mask_of_the_wrong_size(sim, catalog):
    mask = encode(Image.new("L", (50, 50), 255), "PNG")
    with pytest.raises(InvalidInputError) as info:
        await agenerate_image_edit(
            PNG,
            "a red ball",
            operation="inpaint",
            model="z-image-turbo-inpaint",
            options={"mask": mask},
            workspace=False,
            provider_options=ws_options(sim),
        )
    assert_clear(info.value, InvalidInputError, "mask is 50×50", "96×64")
    with pytest.raises(ImageError) as info:
        await agenerate_image_edit(
            PNG,
            "a red ball",
            operation="inpaint",
            model="z-image-turbo-inpaint",
            options={"mask": b"not a mask"},
            workspace=False,
            provider_options=ws_options(sim),
        )
    assert_clear(info.value, ImageError, "mask")
    assert request_count(sim) == 0


async def test_unknown_model_suggests_the_closest(sim):
    with pytest.raises(UnknownModelError) as info:
        await agenerate_image_edit(
            PNG, "make it blue", model="flux-kontext-pr", workspace=False, provider_options=ws_options(sim)
        )
    assert_clear(info.value, UnknownModelError, "flux-kontext-pr", "did you mean", "flux-kontext-pro")
    assert request_count(sim) == 0


async def test_operation_the_model_lacks_and_empty_prompt(sim):
    with pytest.raises(InvalidInputError) as info:
        await agenerate_image_edit(
            PNG, "x", operation="zoom_out", model="qwen-edit", workspace=False, provider_options=ws_options(sim)
        )
    assert_clear(info.value, InvalidInputError, "qwen-edit", "zoom_out")
    with pytest.raises(InvalidInputError) as info:
        await agenerate_image_edit(PNG, "   ", model="qwen-edit", workspace=False, provider_options=ws_options(sim))
    assert_clear(info.value, InvalidInputError, "needs a prompt")
    with pytest.raises(InvalidInputError) as info:
        await agenerate_image_edit(
            PNG, "x", operation="paint-it-black", workspace=False, provider_options=ws_options(sim)
        )
    assert_clear(info.value, InvalidInputError, "unknown operation", "paint-it-black")
    assert request_count(sim) == 0


@pytest.mark.parametrize(
    "model,env_var",
    [
        ("qwen-edit", "WAVESPEED_API_KEY"),
        ("stability-search-replace", "STABILITY_API_KEY"),
        ("hf-flux-kontext-dev", "HF_TOKEN"),
    ],
)
async def test_missing_key_names_the_variable_and_sends_nothing(
    model, env_var, sim, stability_sim, huggingface_sim, monkeypatch, ws
):
    for var in ("WAVESPEED_API_KEY", "STABILITY_API_KEY", "HF_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    options = {
        "wavespeed": {"base_url": sim.base_url, "poll": FAST_POLL},
        "stability": {"base_url": stability_sim.base_url, "poll_interval_s": 0.01},
        "huggingface": {"endpoint_url": huggingface_sim.base_url},
    }
    before = state(ws)
    with pytest.raises(MissingKeyError) as info:
        await agenerate_image_edit(
            PNG,
            "make it blue",
            model=model,
            options={"extra": {"search_prompt": "square"}},
            workspace=ws,
            provider_options=options,
        )
    assert_clear(info.value, MissingKeyError, env_var, "is not set")
    assert info.value.env_var == env_var
    assert request_count(sim) == 0 and not stability_sim.sim.requests and not huggingface_sim.sim.requests
    assert_intact(before, ws)


async def test_huge_prompt_is_refused_before_paying(sim):
    with pytest.raises(InvalidInputError) as info:
        await agenerate_image_edit(
            PNG, "make it blue " * 8000, model="qwen-edit", workspace=False, provider_options=ws_options(sim)
        )
    assert_clear(info.value, InvalidInputError, "prompt", f"{MAX_PROMPT_CHARS:,}")
    assert request_count(sim) == 0


async def test_odd_unicode_prompts_are_sent_verbatim(sim):
    prompt = "把背景换成海滩 🏖️ — e\u0301, ﬁ, \u200b zero-width"
    await agenerate_image_edit(PNG, prompt, model="qwen-edit", workspace=False, provider_options=ws_options(sim))
    assert len(sim.sim.submits) == 1  # accepted by the schema check of the server, unchanged


@pytest.mark.parametrize("model", ["nano-banana-edit", "gpt-image-1-edit", "flux-kontext-pro"])
@pytest.mark.parametrize("width,height", [(0, 512), (-5, 100)])
def test_non_positive_size_is_invalid_input(model, width, height, catalog):
    with pytest.raises(InvalidInputError, match="width"):  # refused when the options are built
        ImageEditOptions(width=width, height=height)
    with pytest.raises(InvalidInputError, match="positive"):  # and by the catalogue's size rule itself
        catalog.get(model).size_params(width, height)


@pytest.mark.parametrize("value", [math.nan, -math.nan])
def test_nan_option_is_invalid_input(value, catalog):
    model = next(
        m for m in catalog if m.provider == "wavespeed" and any(p.option == "guidance_scale" for p in m.params.values())
    )
    with pytest.raises(InvalidInputError, match="guidance_scale"):  # refused when the options are built
        ImageEditOptions(guidance_scale=value)
    with pytest.raises(InvalidInputError, match="finite"):  # and by the parameter check of the catalogue
        next(p for p in model.params.values() if p.option == "guidance_scale").check(value, model.id)


@pytest.mark.parametrize(
    "options",
    [{"width": "1024", "height": "1024"}, {"output_format": 5}, {"extra": [1, 2]}],
    ids=["width-as-text", "format-as-number", "extra-as-list"],
)
async def test_wrongly_typed_options_are_invalid_input(options, sim):
    with pytest.raises(InvalidInputError):
        await agenerate_image_edit(
            PNG, "make it blue", model="qwen-edit", options=options, workspace=False, provider_options=ws_options(sim)
        )
    assert request_count(sim) == 0


# ---- properties of the request builder -----------------------------------------------------------

WAVESPEED_MODELS = [m for m in Catalog.load() if m.provider == "wavespeed"]


_IMAGES: dict[tuple[int, int], InputImage] = {}


def image_of(w: int, h: int) -> InputImage:
    if (w, h) not in _IMAGES:
        _IMAGES[(w, h)] = load_image(encode(Image.new("RGB", (w, h), (w % 256, h % 256, 90)), "PNG"))
    return _IMAGES[(w, h)]


_SIDE = st.integers(min_value=1, max_value=9000)


_OPTION_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
    st.sampled_from(
        [
            "1:1",
            "16:9",
            "9:21",
            "4:3",
            "1k",
            "2k",
            "4k",
            "auto",
            "1024*1024",
            "0*0",
            "high",
            "low",
            "png",
            "jpeg",
            "webp",
        ]
    ),
)


@st.composite
def edit_requests(draw) -> dict:
    """The pieces of a request; the test builds it, since options can already be refused when built."""
    model = draw(st.sampled_from(WAVESPEED_MODELS))
    op = draw(st.sampled_from(model.operations))
    w, h = draw(st.sampled_from([(64, 48), (48, 64), (512, 512), (1000, 40), (16, 900), (300, 200)]))
    lo, hi = max(1, model.inputs.min_images), max(1, model.inputs.max_images)
    n = draw(st.sampled_from([lo, lo, lo, hi, hi + 1]))  # mostly valid counts, sometimes one too many
    images = tuple(image_of(w, h) for _ in range(n))
    explicit = draw(st.booleans())
    names = list(model.params) + ["aspect_ratio", "resolution", "quality", "size", "bogus", "search_prompt"]
    extra = draw(st.one_of(st.just({}), st.dictionaries(st.sampled_from(names), _OPTION_VALUE, max_size=3)))
    options = dict(
        width=draw(_SIDE) if explicit else None,
        height=draw(_SIDE) if explicit else None,
        seed=draw(st.one_of(st.none(), st.integers(-(2**40), 2**40))),
        guidance_scale=draw(st.one_of(st.none(), st.floats(-50, 50, allow_nan=False))),
        steps=draw(st.one_of(st.none(), st.integers(-5, 500))),
        negative_prompt=draw(st.one_of(st.none(), st.text(max_size=20))),
        output_format=draw(st.one_of(st.none(), st.sampled_from(["png", "jpeg", "jpg", "webp", "gif", "PNG"]))),
        extra=extra,
    )
    mask = image_of(w, h) if draw(st.booleans()) else None
    prompt = draw(st.one_of(st.just("make it blue"), st.just("把背景换成海滩"), st.none(), st.text(max_size=30)))
    return dict(
        model=model,
        images=images,
        prompt=prompt,
        operation=op,
        options=options,
        mask=mask,
        sample_index=draw(st.integers(0, 3)),
    )


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(parts=edit_requests(), sync=st.booleans(), b64=st.booleans())
def test_any_request_builds_a_body_the_api_accepts_or_is_invalid_input(parts, sync, b64):
    try:
        request = EditRequest(**{**parts, "options": ImageEditOptions(**parts["options"])})
        provider = WaveSpeedEditProvider(base_url="http://127.0.0.1:9", sync_mode=sync, base64_output=b64)
        body = provider.build_body(request, lambda img: f"data:{img.mime};base64,AAAA")
    except InvalidInputError as exc:
        assert exc.message  # refused, with a reason
        event("refused")
        return
    event("built")
    problem = body_problem(request.model, body)
    assert problem is None, f"{request.model.id}: the API would refuse the body: {problem}\n{body}"
    json.dumps(body, allow_nan=False)  # strict JSON: what the server receives
    # what the body asks for is what the budget holds back for it
    assert request.model.reserve_usd(body) >= (request.model.price_usd(body) or 0)
