"""evalkit.providers.prepare: validation against the catalogue, input downscaling, mask sizes and conventions,
parameters, fingerprints and placeholders — pure functions on real images and real catalogue entries."""

from __future__ import annotations

import io
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from evalkit.catalog.spec import Limits
from evalkit.errors import InvalidInputError, UnsupportedOperationError
from evalkit.images import load_image
from evalkit.providers.base import EditRequest, ImageEditOptions
from evalkit.providers.prepare import (
    fingerprint,
    fit_inputs,
    mask_for_convention,
    materialise,
    prepare_json_request,
    resize_mask,
    validate_request,
)
from tests.plugins.common import make_png


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def half_mask(w: int, h: int, mode: str = "L") -> bytes:
    """White (edit) on the left half, black on the right."""
    img = Image.new("L", (w, h), 0)
    img.paste(255, (0, 0, w // 2, h))
    return png(img.convert(mode))


@pytest.fixture(scope="module")
def photo():
    return load_image(make_png(96, 64, seed=1), name="photo.png")


def req(catalog, model: str, images, prompt: str | None = "make it blue", **kw) -> EditRequest:
    spec = kw.pop("spec", None) or catalog.get(model)
    return EditRequest(model=spec, images=tuple(images), prompt=prompt, **kw)


# ---- validation --------------------------------------------------------------------------------------


def test_a_valid_request_gives_its_normalised_operation(catalog, photo):
    assert validate_request(req(catalog, "qwen-edit", [photo])) == "general_edit"
    assert validate_request(req(catalog, "image-zoom-out", [photo], None, operation="outpaint")) == "zoom_out"


@pytest.mark.parametrize(
    "model,kw,error,words",
    [
        ("qwen-edit", {"operation": "zoom_out"}, UnsupportedOperationError, ["qwen-edit", "zoom_out", "general_edit"]),
        ("qwen-edit", {"operation": "paint-it-black"}, InvalidInputError, ["unknown operation"]),
        ("qwen-edit", {"prompt": "   "}, InvalidInputError, ["needs a prompt"]),
        ("qwen-edit", {"prompt": "x" * 4001}, InvalidInputError, ["4,001 characters", "4,000"]),
        ("qwen-edit", {"n_images": 2}, InvalidInputError, ["at most 1 input image", "got 2"]),
        ("qwen-edit-plus", {"n_images": 4}, InvalidInputError, ["at most 3 input image", "got 4"]),
        ("qwen-edit", {"n_images": 0}, InvalidInputError, ["at least 1 input image"]),
        ("z-image-turbo-inpaint", {"operation": "inpaint"}, InvalidInputError, ["needs a mask"]),
        ("stability-search-replace", {}, InvalidInputError, ["'search_prompt'"]),
    ],
)
def test_bad_requests_are_refused_naming_the_problem(catalog, photo, model, kw, error, words):
    n = kw.pop("n_images", 1)
    with pytest.raises(error) as info:
        validate_request(req(catalog, model, [photo] * n, kw.pop("prompt", "make it blue"), **kw))
    for w in words:
        assert w in str(info.value), (w, str(info.value))


def test_a_model_prompt_limit_overrides_the_default(catalog, photo):
    spec = catalog.get("qwen-edit")
    short = replace(spec, limits=replace(spec.limits, max_prompt_chars=10))
    with pytest.raises(InvalidInputError, match="limited to 10"):
        validate_request(req(catalog, "", [photo], "make it much bluer", spec=short))


def test_a_required_case_parameter_present_passes(catalog, photo):
    r = req(catalog, "stability-search-replace", [photo], options=ImageEditOptions(extra={"search_prompt": "cat"}))
    assert validate_request(r) == "general_edit"


# ---- fitting inputs ------------------------------------------------------------------------------------


def small_side(catalog, side: int = 48, **limits):
    spec = catalog.get("qwen-edit")
    return replace(spec, limits=Limits(max_input_side=side, **limits))


def test_inputs_within_the_limits_are_untouched(catalog, photo):
    images, mask, notes, changed = fit_inputs(req(catalog, "qwen-edit", [photo]))
    assert images == (photo,) and mask is None and notes == [] and not changed


def test_large_inputs_are_downscaled_keeping_the_aspect_and_noted(catalog, photo):
    images, _, notes, changed = fit_inputs(req(catalog, "", [photo], spec=small_side(catalog, 48)))
    (img,) = images
    assert (img.width, img.height) == (48, 32) and changed
    assert img.sha256 != photo.sha256 and img.to_pil().size == (48, 32)
    assert len(notes) == 1 and "photo.png resized 96×64→48×32" in notes[0]


def test_a_pixel_cap_downscales_too(catalog, photo):
    spec = replace(catalog.get("qwen-edit"), limits=Limits(max_input_pixels=96 * 64 // 4))
    (img,), _, _, changed = fit_inputs(req(catalog, "", [photo], spec=spec))
    assert changed and img.width * img.height <= 96 * 64 // 4 and abs(img.width / img.height - 1.5) < 0.05


def test_inputs_below_the_minimum_are_refused(catalog):
    tiny = load_image(make_png(40, 30), name="tiny.png")
    r = req(catalog, "stability-search-replace", [tiny], options=ImageEditOptions(extra={"search_prompt": "cat"}))
    with pytest.raises(InvalidInputError, match=r"tiny.png is 40×30; stability-search-replace needs sides ≥ 64"):
        fit_inputs(r)


def test_a_mask_follows_its_image_when_it_is_downscaled(catalog, photo):
    mask = load_image(half_mask(96, 64), name="mask.png")
    spec = replace(catalog.get("z-image-turbo-inpaint"), limits=Limits(max_input_side=48))
    (img,), fitted, _, _ = fit_inputs(req(catalog, "", [photo], operation="inpaint", mask=mask, spec=spec))
    assert (fitted.width, fitted.height) == (img.width, img.height) == (48, 32)
    arr = np.asarray(fitted.to_pil())
    assert set(np.unique(arr)) <= {0, 255}  # nearest-neighbour: still a hard mask
    assert arr[:, :24].min() == 255 and arr[:, 24:].max() == 0  # the same half, scaled


def test_a_mask_of_another_size_is_refused(catalog, photo):
    mask = load_image(half_mask(50, 50), name="mask.png")
    r = req(catalog, "z-image-turbo-inpaint", [photo], operation="inpaint", mask=mask)
    with pytest.raises(InvalidInputError) as info:
        fit_inputs(r)
    assert "mask is 50×50 but the image is 96×64" in str(info.value) and "same size" in info.value.hint


def test_resize_mask_gives_a_grey_png_of_the_size(photo):
    mask = load_image(half_mask(96, 64, "RGB"))
    out = resize_mask(mask, 30, 20)
    assert (out.width, out.height, out.mime, out.mode) == (30, 20, "image/png", "L")
    assert out.to_pil().size == (30, 20) and out.sha256 != mask.sha256


# ---- mask conventions ------------------------------------------------------------------------------------


def test_white_edit_keeps_a_grey_png_mask_as_it_is():
    mask = load_image(half_mask(40, 20))
    assert mask_for_convention(mask, "white_edit") is mask


def test_white_edit_binarises_a_colour_mask():
    img = Image.new("RGB", (40, 20), (0, 0, 0))
    img.paste((200, 200, 200), (0, 0, 20, 20))  # light grey = edit
    out = mask_for_convention(load_image(png(img)), "white_edit")
    arr = np.asarray(out.to_pil())
    assert out.mode == "L" and out.mime == "image/png"
    assert arr[:, :20].min() == 255 and arr[:, 20:].max() == 0


def test_transparent_edit_makes_the_region_to_edit_transparent():
    out = mask_for_convention(load_image(half_mask(40, 20)), "transparent_edit")
    img = out.to_pil()
    assert img.mode == "RGBA" and out.mode == "RGBA"
    alpha = np.asarray(img.getchannel("A"))
    assert alpha[:, :20].max() == 0 and alpha[:, 20:].min() == 255  # white (edit) → transparent


def test_a_mask_drawn_as_transparency_is_understood():
    img = Image.new("RGBA", (40, 20), (10, 10, 10, 255))
    img.paste((10, 10, 10, 0), (0, 0, 10, 20))  # transparent = edit
    out = mask_for_convention(load_image(png(img)), "white_edit")
    arr = np.asarray(out.to_pil())
    assert arr[:, :10].min() == 255 and arr[:, 10:].max() == 0


def test_an_unknown_mask_convention_is_refused():
    with pytest.raises(InvalidInputError, match="unknown mask convention 'black_edit'"):
        mask_for_convention(load_image(half_mask(8, 8)), "black_edit")


# ---- the prepared request and its fingerprint ----------------------------------------------------------


def test_prepare_json_request_uses_placeholders_and_prices_the_call(catalog, photo):
    p = prepare_json_request(req(catalog, "qwen-edit", [photo], options=ImageEditOptions(seed=5)))
    spec = catalog.get("qwen-edit")
    assert p.params[spec.inputs.param] == {"$image": photo.sha256}
    assert p.params["seed"] == 5 and p.params["prompt"] == "make it blue"
    assert p.price_usd == spec.price_usd(p.params) and p.reserve_usd >= p.price_usd
    assert p.images == (photo,) and p.mask is None


def test_a_mask_is_converted_for_the_model_and_referenced(catalog, photo):
    mask = load_image(half_mask(96, 64))
    p = prepare_json_request(req(catalog, "gpt-image-1-edit", [photo], operation="inpaint", mask=mask))
    spec = catalog.get("gpt-image-1-edit")
    assert p.mask is not None and p.mask.mode == "RGBA"  # gpt-image-1 wants the edit region transparent
    assert p.params[spec.mask.param] == {"$image": p.mask.sha256}


def test_a_mask_on_a_maskless_model_is_dropped_with_a_note(catalog, photo):
    mask = load_image(half_mask(96, 64))
    p = prepare_json_request(req(catalog, "qwen-edit", [photo], mask=mask))
    assert p.mask is None and any("takes no mask" in n for n in p.notes)


def test_materialise_replaces_every_placeholder(catalog, photo):
    mask = load_image(half_mask(96, 64))
    p = prepare_json_request(req(catalog, "z-image-turbo-inpaint", [photo], operation="inpaint", mask=mask))
    body = materialise(p.params, p.images, p.mask, lambda img: f"url:{img.sha256[:8]}")
    spec = catalog.get("z-image-turbo-inpaint")
    assert body[spec.inputs.param] in (f"url:{photo.sha256[:8]}", [f"url:{photo.sha256[:8]}"])
    assert body[spec.mask.param] == f"url:{p.mask.sha256[:8]}"
    assert "$image" not in repr(body) and body["prompt"] == p.params["prompt"]


def fp(catalog, photo, model="qwen-edit", prompt="make it blue", sample_index=0, **options) -> str:
    r = req(catalog, model, [photo], prompt, options=ImageEditOptions(**options), sample_index=sample_index)
    return prepare_json_request(r).fingerprint


def test_the_fingerprint_is_stable_and_sensitive_to_what_is_sent(catalog, photo):
    base = fp(catalog, photo, seed=1)
    assert base == fp(catalog, photo, seed=1)
    assert base == fp(catalog, load_image(photo.data, name="another-name.png"), seed=1)  # bytes, not names
    assert base != fp(catalog, photo, seed=2)
    assert base != fp(catalog, photo, prompt="make it red", seed=1)
    assert base != fp(catalog, load_image(make_png(96, 64, seed=2)), seed=1)
    assert base != fp(catalog, photo, model="step1x-edit", seed=1)


def test_the_sample_index_counts_only_for_models_without_a_seed(catalog, photo):
    assert fp(catalog, photo, seed=1, sample_index=0) == fp(catalog, photo, seed=1, sample_index=3)
    assert fp(catalog, photo, "flux-kontext-pro", sample_index=0) != fp(
        catalog, photo, "flux-kontext-pro", sample_index=1
    )


def test_the_fingerprint_ignores_parameter_order(catalog, photo):
    spec = catalog.get("qwen-edit")
    a = fingerprint(spec, {"prompt": "p", "seed": 1, "size": "96*64"}, (photo,), None, 0)
    b = fingerprint(spec, {"size": "96*64", "seed": 1, "prompt": "p"}, (photo,), None, 0)
    assert a == b and len(a) == 64
    assert a != fingerprint(spec, {"prompt": "p", "seed": 1, "size": "96*64"}, (photo,), load_image(half_mask(8, 8)), 0)
