"""Request preparation shared by the providers: validate a request against its model's catalogue entry,
downscale inputs over the model's limits, convert masks, resolve parameters, fingerprint, and build the
:class:`~evalkit.providers.base.PreparedRequest` of a JSON-bodied provider (then :func:`materialise` its
image placeholders). Pure: no I/O. Bad input raises :class:`~evalkit.errors.InvalidInputError`.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from PIL import Image

from evalkit.catalog.spec import ModelSpec, normalise_operation
from evalkit.errors import InvalidInputError, UnsupportedOperationError
from evalkit.images import InputImage, fit_within, resized, sha256_bytes
from evalkit.providers.base import EditRequest, PreparedRequest

#: evalkit's own cap on input images for providers whose limits are undocumented: longer sides are
#: downscaled (and the call is flagged ``input_resized``). Not an API fact; see README "Input images".
DEFAULT_MAX_INPUT_SIDE = int(os.environ.get("EVALKIT_MAX_INPUT_SIDE", 4096))
#: evalkit's cap on prompt length where a model's catalogue entry sets none: a runaway prompt (a pasted
#: document, a template bug) is refused before it is paid for. Not an API fact.
DEFAULT_MAX_PROMPT_CHARS = int(os.environ.get("EVALKIT_MAX_PROMPT_CHARS", 4000))


def validate_request(request: EditRequest) -> str:
    """Check a request against its model's capabilities; returns the normalised operation."""
    m = request.model
    op = normalise_operation(request.operation)
    if op not in m.operations:
        raise UnsupportedOperationError(
            f"model {m.id!r} does not support operation {op!r} (it supports: {', '.join(m.operations)})",
            hint=f"pick a model for {op!r}: `evalkit models` lists operations",
        )
    n = len(request.images)
    if n < max(1, m.inputs.min_images):
        raise InvalidInputError(f"{m.id} needs at least {max(1, m.inputs.min_images)} input image(s), got {n}")
    if n > m.inputs.max_images:
        raise InvalidInputError(
            f"{m.id} takes at most {m.inputs.max_images} input image(s), got {n}",
            hint="drop reference images or pick a multi-image model",
        )
    prompt = (request.prompt or "").strip()
    if m.prompt == "required" and not prompt:
        raise InvalidInputError(f"{m.id} needs a prompt (the instruction); it was empty", hint="pass prompt='…'")
    limit = m.limits.max_prompt_chars or DEFAULT_MAX_PROMPT_CHARS
    if len(prompt) > limit:
        raise InvalidInputError(
            f"the prompt is {len(prompt):,} characters; {m.id} is limited to {limit:,}",
            hint="shorten it (or raise EVALKIT_MAX_PROMPT_CHARS / the model's limits.max_prompt_chars)",
        )
    if m.mask is not None and m.mask.required and request.mask is None:
        raise InvalidInputError(f"{m.id} needs a mask image (white = region to edit)", hint="pass options.mask")
    if request.mask is not None and m.mask is None and op not in ("inpaint", "erase"):
        pass  # a mask on a maskless model is ignored (noted by resolve_params)
    for key in m.requires_case_params:
        if not request.options.extra.get(key):
            raise InvalidInputError(
                f"{m.id} needs the parameter {key!r} (pass it in options.extra / the case's params)"
            )
    return op


def fit_inputs(request: EditRequest) -> tuple[tuple[InputImage, ...], InputImage | None, list[str], bool]:
    """Downscale inputs over the model's limits (keeping aspect); masks follow their image."""
    lim = request.model.limits
    max_side = lim.max_input_side or DEFAULT_MAX_INPUT_SIDE
    notes: list[str] = []
    out: list[InputImage] = []
    changed = False
    for img in request.images:
        if lim.min_input_side and min(img.width, img.height) < lim.min_input_side:
            raise InvalidInputError(
                f"{img.name} is {img.width}×{img.height}; {request.model.id} needs sides ≥ {lim.min_input_side} px"
            )
        if lim.min_input_pixels and img.width * img.height < lim.min_input_pixels:
            raise InvalidInputError(
                f"{img.name} has {img.width * img.height} px; {request.model.id} needs ≥ {lim.min_input_pixels}"
            )
        w, h = fit_within(img.width, img.height, max_side, lim.max_input_pixels)
        if (w, h) != (img.width, img.height):
            notes.append(
                f"input {img.name} resized {img.width}×{img.height}→{w}×{h} to fit {request.model.id}'s limits"
            )
            img = resized(img, w, h)
            changed = True
        out.append(img)
    mask = request.mask
    if mask is not None and out and (mask.width, mask.height) != (out[0].width, out[0].height):
        if (mask.width, mask.height) == (request.images[0].width, request.images[0].height):
            mask = resize_mask(mask, out[0].width, out[0].height)
        else:
            raise InvalidInputError(
                f"mask is {mask.width}×{mask.height} but the image is {request.images[0].width}×{request.images[0].height}",
                hint="masks must have the same size as the first input image",
            )
    return tuple(out), mask, notes, changed


def resize_mask(mask: InputImage, width: int, height: int) -> InputImage:
    img = mask.to_pil().convert("L").resize((width, height), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    data = buf.getvalue()
    return replace(mask, data=data, sha256=sha256_bytes(data), width=width, height=height, mime="image/png", mode="L")


def mask_for_convention(mask: InputImage, convention: str) -> InputImage:
    """Convert a white-means-edit mask to what a model expects."""
    if convention in ("white_edit", "alpha_or_white_edit"):
        img = mask.to_pil()
        if img.mode == "L" and mask.mime == "image/png":
            return mask
        img = _mask_l(img)
        buf = io.BytesIO()
        img.save(buf, format="PNG")
    elif convention == "transparent_edit":
        l = _mask_l(mask.to_pil())
        rgba = Image.new("RGBA", l.size, (0, 0, 0, 255))
        rgba.putalpha(l.point(lambda v: 0 if v >= 128 else 255))
        buf = io.BytesIO()
        rgba.save(buf, format="PNG")
    else:
        raise InvalidInputError(f"unknown mask convention {convention!r}")
    data = buf.getvalue()
    return replace(
        mask,
        data=data,
        sha256=sha256_bytes(data),
        mime="image/png",
        mode="L" if convention != "transparent_edit" else "RGBA",
    )


def _mask_l(img: Image.Image) -> Image.Image:
    if img.mode in ("RGBA", "LA"):
        # a mask drawn as transparency: transparent = edit → white
        alpha = img.getchannel("A")
        if alpha.getextrema() != (255, 255):
            return alpha.point(lambda v: 255 if v < 128 else 0)
    return img.convert("L").point(lambda v: 255 if v >= 128 else 0)


def resolve_params(request: EditRequest, images: tuple[InputImage, ...]) -> tuple[dict[str, Any], list[str]]:
    """Model parameters (except the images/mask themselves) for a JSON-bodied provider."""
    m = request.model
    o = request.options
    notes: list[str] = []
    params: dict[str, Any] = dict(m.defaults)
    prompt = (request.prompt or "").strip()
    if m.prompt != "none" and prompt:
        params["prompt"] = prompt
    elif m.prompt == "none" and prompt:
        notes.append(f"{m.id} takes no prompt; the prompt was not sent")
    # size
    if o.explicit_size():
        w, h, explicit = o.width, o.height, True
    else:
        w, h, explicit = images[0].width, images[0].height, False
    size_params, size_notes = m.size_params(w, h, explicit=explicit)
    params.update(size_params)
    notes += size_notes
    # seed
    if m.seed is not None:
        seed = o.seed if o.seed is not None else m.seed.default
        if seed is not None:
            if not (m.seed.min <= int(seed) <= m.seed.max):
                raise InvalidInputError(f"seed {seed} is outside {m.seed.min}–{m.seed.max} for {m.id}")
            params[m.seed.param] = int(seed)
    elif o.seed is not None:
        notes.append(f"{m.id} takes no seed; seed {o.seed} not sent")
    # typed options → declared parameters
    by_option = {p.option: p for p in m.params.values() if p.option}
    for opt in ("guidance_scale", "steps", "negative_prompt"):
        value = getattr(o, opt)
        if value is None:
            continue
        if opt in by_option:
            p = by_option[opt]
            params[p.name] = p.check(value, m.id)
        else:
            notes.append(f"{m.id} has no {opt} parameter; ignored")
    # output format
    if o.output_format is not None or m.output_format_param:
        fmt = (o.output_format or m.default_output_format or "").lower() or None
        if fmt == "jpg":
            fmt = "jpeg"
        if m.output_format_param and fmt:
            if fmt not in m.output_formats:
                raise InvalidInputError(f"{m.id} outputs {', '.join(m.output_formats)}; {fmt!r} is not one of them")
            params[m.output_format_param] = fmt
        elif o.output_format is not None:
            notes.append(f"{m.id} has no output_format parameter; {o.output_format!r} ignored")
    # model-specific extras
    for key, value in (o.extra or {}).items():
        if key in m.params:
            params[key] = m.params[key].check(value, m.id)
        elif key in m.requires_case_params:
            params[key] = value
        elif key in (m.size.aspect_ratio_param, m.size.resolution_param) and m.size.kind == "aspect_ratio":
            allowed = m.size.aspect_ratios if key == m.size.aspect_ratio_param else m.size.resolutions
            if value not in allowed:
                raise InvalidInputError(f"{m.id}: {key} {value!r} is not one of {list(allowed)}")
            params[key] = value
        else:
            notes.append(f"{m.id} has no parameter {key!r}; ignored")
    if request.mask is not None and m.mask is None:
        notes.append(f"{m.id} takes no mask; the mask was not sent")
    return params, notes


def fingerprint(
    model: ModelSpec,
    params: Mapping[str, Any],
    images: tuple[InputImage, ...],
    mask: InputImage | None,
    sample_index: int,
) -> str:
    """Identity of a request: same model, parameters, input bytes and seed ⇒ same fingerprint.

    ``sample_index`` only counts for models without a seed (their repeats are otherwise identical).
    """
    blob = json.dumps(
        {
            "model": model.id,
            "provider": model.provider,
            "endpoint": model.endpoint,
            "params": params,
            "images": [i.sha256 for i in images],
            "mask": mask.sha256 if mask else None,
            "sample": sample_index if model.seed is None else None,
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def prepare_json_request(request: EditRequest) -> PreparedRequest:
    """The standard ``prepare`` for providers whose bodies are flat JSON parameters (WaveSpeed, local)."""
    validate_request(request)
    images, mask, notes, resized_flag = fit_inputs(request)
    params, pnotes = resolve_params(request, images)
    m = request.model
    if m.inputs.is_list:
        params[m.inputs.param] = [{"$image": i.sha256} for i in images]
    else:
        params[m.inputs.param] = {"$image": images[0].sha256}
    if mask is not None and m.mask is not None:
        mask = mask_for_convention(mask, m.mask.convention)
        params[m.mask.param] = {"$image": mask.sha256}
    elif m.mask is None:
        mask = None
    return PreparedRequest(
        model_id=m.id,
        provider=m.provider,
        endpoint=m.endpoint,
        params=params,
        price_usd=m.price_usd(params),
        reserve_usd=m.reserve_usd(params),
        fingerprint=fingerprint(m, params, images, mask, request.sample_index),
        notes=tuple(notes + pnotes),
        input_resized=resized_flag,
        images=images,
        mask=mask,
        expected_size=m.expected_output_size(params, (images[0].width, images[0].height)),
    )


def materialise(
    params: Mapping[str, Any],
    images: tuple[InputImage, ...],
    mask: InputImage | None,
    encode: Callable[[InputImage], Any],
) -> dict[str, Any]:
    """Replace ``{"$image": sha}`` placeholders with ``encode(image)`` (data URI, URL, …)."""
    by_sha = {i.sha256: i for i in images}
    if mask is not None:
        by_sha[mask.sha256] = mask

    def sub(v: Any) -> Any:
        if isinstance(v, dict) and set(v) == {"$image"}:
            return encode(by_sha[v["$image"]])
        if isinstance(v, list):
            return [sub(x) for x in v]
        return v

    return {k: sub(v) for k, v in params.items()}
