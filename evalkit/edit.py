"""``generate_image_edit()``: the original Image Studio entry point — one edit, any model.

validate (model exists and supports the operation; the image decodes and is within limits; prompt
present where required; reference-image count within the model's max) → route to the provider →
call → record usage in the workspace ledger → return the edited image and its metadata.

Inputs larger than a model accepts are downscaled (keeping the aspect ratio) and the result says so
(``result.input_resized`` and a note in ``result.notes``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evalkit.catalog import Catalog, ModelSpec, normalise_operation
from evalkit.errors import EvalkitError, ImageError, InvalidInputError, ProviderError
from evalkit.images import InputImage, load_image
from evalkit.providers import create_provider
from evalkit.providers.base import EditOutcome, EditRequest, ImageEditOptions, Latency
from evalkit.store import Workspace

ImageInput = bytes | str | os.PathLike | InputImage | Any  # Any: a PIL image


@dataclass
class ImageEditResult:
    """What ``generate_image_edit`` returns (``image_bytes`` as in the original app)."""

    image_bytes: bytes = field(repr=False)
    format: str | None
    width: int | None
    height: int | None
    model_id: str
    operation: str
    cost_usd: float | None
    cost_source: str
    latency: Latency
    prediction_id: str | None
    input_resized: bool
    simulated: bool
    notes: tuple[str, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)


def _as_input_image(value: ImageInput, name: str) -> InputImage:
    if isinstance(value, InputImage):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return load_image(bytes(value), name=name)
    if isinstance(value, os.PathLike):
        return load_image(value, name=name)
    if isinstance(value, str):
        s = value.strip()
        if s.startswith("data:"):
            try:
                header, b64 = s.split(",", 1)
            except ValueError:
                raise ImageError(f"{name} is a malformed data URI") from None
            s = b64
        elif len(s) < 4096 and Path(s).expanduser().is_file():
            return load_image(Path(s).expanduser(), name=name)
        try:
            raw = base64.b64decode(s, validate=True)
        except (binascii.Error, ValueError):
            raise ImageError(
                f"{name} is neither an existing file path nor valid base64 image data",
                hint="pass bytes, a path, a PIL image, or base64 text",
            ) from None
        return load_image(raw, name=name)
    if hasattr(value, "save") and hasattr(value, "size"):  # PIL image
        buf = io.BytesIO()
        value.save(buf, format="PNG")
        return load_image(buf.getvalue(), name=name)
    raise ImageError(f"{name}: unsupported image type {type(value).__name__}")


def _pick_model(catalog: Catalog, model: str | None, operation: str) -> ModelSpec:
    if model:
        return catalog.get(model)
    # the catalogue's default (the original app's), overridable as it was (WAVESPEED_IMAGE_EDIT_MODEL)
    # or via EVALKIT_DEFAULT_EDIT_MODEL
    preferred = (
        os.environ.get("EVALKIT_DEFAULT_EDIT_MODEL")
        or os.environ.get("WAVESPEED_IMAGE_EDIT_MODEL")
        or catalog.default_edit_model
    )
    if preferred and preferred in catalog and catalog.get(preferred).supports(operation):
        return catalog.get(preferred)
    candidates = [m for m in catalog.for_operation(operation) if m.provider != "local"]
    if not candidates:
        raise InvalidInputError(f"no catalogue model supports {operation!r}", hint="`evalkit models` lists operations")
    return candidates[0]


async def agenerate_image_edit(
    image: ImageInput | Sequence[ImageInput],
    prompt: str | None,
    operation: str = "general_edit",
    model: str | None = None,
    options: ImageEditOptions | Mapping[str, Any] | None = None,
    user_id: str | None = None,
    *,
    workspace: Workspace | str | os.PathLike | None | bool = None,
    catalog: Catalog | None = None,
    provider_options: Mapping[str, Mapping[str, Any]] | None = None,
) -> ImageEditResult:
    """Async twin of :func:`generate_image_edit`."""
    op = normalise_operation(operation)
    opts = ImageEditOptions.from_value(options)
    ws: Workspace | None
    if workspace is False:
        ws = None
    elif isinstance(workspace, Workspace):
        ws = workspace
    else:
        ws = Workspace(workspace)  # default: $EVALKIT_WORKSPACE or ./evalkit-workspace
    catalog = catalog or Catalog.load(ws.path if ws else None)
    spec = _pick_model(catalog, model, op)
    images_in = list(image) if isinstance(image, (list, tuple)) else [image]
    if not images_in:
        raise InvalidInputError("no input image given")
    images = tuple(
        _as_input_image(v, f"image {i + 1}" if len(images_in) > 1 else "image") for i, v in enumerate(images_in)
    )
    mask = _as_input_image(opts.mask, "mask") if opts.mask is not None else None
    request = EditRequest(model=spec, images=images, prompt=prompt, operation=op, options=opts, mask=mask)
    provider = create_provider(spec.provider, **dict((provider_options or {}).get(spec.provider, {})))
    try:
        prepared = provider.prepare(request)  # raises InvalidInputError before anything is spent
        outcome: EditOutcome = await provider.edit(request)
    finally:
        await provider.aclose()
    if ws is not None:
        ws.record_usage(
            model_id=spec.id,
            operation=op,
            cost_usd=outcome.cost_usd,
            cost_source=outcome.cost_source,
            source="generate_image_edit",
            user_id=user_id,
            prediction_id=outcome.prediction_id,
        )
    if not outcome.ok:
        err = outcome.error
        raise ProviderError(
            f"{spec.id} could not edit the image: {err.message if err else 'failed'}",
            category=err.category if err else "task_failed",
            status_code=err.status_code if err else None,
            code=err.code if err else None,
            retryable=err.retryable if err else False,
            prediction_id=outcome.prediction_id,
            hint="see the category; `evalkit models` shows each model's limits",
        )
    data = outcome.read_image()
    if data is None:
        raise EvalkitError(f"{spec.id} reported success but returned no image", category="bad_output")
    return ImageEditResult(
        image_bytes=data,
        format=outcome.format,
        width=outcome.width,
        height=outcome.height,
        model_id=spec.id,
        operation=op,
        cost_usd=outcome.cost_usd,
        cost_source=outcome.cost_source,
        latency=outcome.latency,
        prediction_id=outcome.prediction_id,
        input_resized=outcome.input_resized or prepared.input_resized,
        simulated=outcome.simulated,
        notes=prepared.notes,
        metadata=dict(outcome.metadata),
    )


def generate_image_edit(
    image: ImageInput | Sequence[ImageInput],
    prompt: str | None,
    operation: str = "general_edit",
    model: str | None = None,
    options: ImageEditOptions | Mapping[str, Any] | None = None,
    user_id: str | None = None,
    **kwargs: Any,
) -> ImageEditResult:
    """Edit one image with one model (synchronous). In a notebook, ``await agenerate_image_edit(...)``."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(agenerate_image_edit(image, prompt, operation, model, options, user_id, **kwargs))
    raise EvalkitError(
        "generate_image_edit() cannot run inside an event loop (e.g. Jupyter)",
        hint="use `await evalkit.agenerate_image_edit(...)`",
    )
