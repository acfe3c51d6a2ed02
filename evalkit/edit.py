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
from typing import Any, Protocol

from evalkit.catalog import Catalog, ModelSpec, normalise_operation
from evalkit.errors import Category, EvalkitError, ImageError, InvalidInputError, ProviderError
from evalkit.images import InputImage, load_image
from evalkit.providers import create_provider
from evalkit.providers.base import EditOutcome, EditRequest, ImageEditOptions, Latency, ensure_credentials
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
    #: the price tier that routed this edit (None: an explicit or default model)
    tier: str | None = None
    #: attempts that did not serve, in order (evalkit.decide.routing.Fallback: model, category, reason, charge)
    fallbacks: tuple[Any, ...] = ()


class SpendGuard(Protocol):
    """Money held back for one attempt before it is sent, and settled after (``evalkit serve``'s tier price
    check and daily budgets). ``reserve`` raises an :class:`EvalkitError` to refuse: nothing is sent then."""

    #: the usage ledger's ``source`` for these attempts, who asked (``client``; never a key) and the tier whose
    #: contract an explicitly named model was served under (routed attempts record their route's tier)
    @property
    def source(self) -> str: ...

    @property
    def client(self) -> str | None: ...

    @property
    def tier(self) -> str | None: ...

    def reserve(self, model_id: str, price_usd: float | None) -> float:
        """Hold this attempt's maximum price (or refuse); returns the amount held."""
        ...

    def settle(self, reserved_usd: float, cost_usd: float | None) -> None:
        """Replace the hold by the billed cost; ``None`` (unknown) keeps the hold spent."""
        ...


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


def _decode_base64_image(value: Any, name: str) -> InputImage:
    """One ``image_base64`` value (base64 text or a data URI; never a file path) as an image."""
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode("ascii", errors="replace")
    if not isinstance(value, str):
        raise ImageError(f"{name} must be base64 text, got {type(value).__name__}")
    s = value.strip()
    if s.startswith("data:"):
        s = s.split(",", 1)[1] if "," in s else ""
    try:
        raw = base64.b64decode("".join(s.split()), validate=True)
    except (binascii.Error, ValueError):
        raise ImageError(f"{name} is not valid base64 image data", hint="pass base64 text or a data: URI") from None
    if not raw:
        raise ImageError(f"{name} is empty")
    return load_image(raw, name=name)


def _input_images(image: Any, image_base64: Any) -> tuple[InputImage, ...]:
    if image is not None and image_base64 is not None:
        raise InvalidInputError("pass image= or image_base64=, not both")
    if image_base64 is not None:
        values = list(image_base64) if isinstance(image_base64, (list, tuple)) else [image_base64]
        if not values:
            raise InvalidInputError("image_base64 is an empty list")
        names = [f"image_base64[{i}]" if len(values) > 1 else "image_base64" for i in range(len(values))]
        return tuple(_decode_base64_image(v, n) for v, n in zip(values, names, strict=True))
    if image is None:
        raise InvalidInputError("no input image given", hint="pass image=… (bytes, path, PIL) or image_base64=…")
    images_in = list(image) if isinstance(image, (list, tuple)) else [image]
    if not images_in:
        raise InvalidInputError("no input image given")
    return tuple(
        _as_input_image(v, f"image {i + 1}" if len(images_in) > 1 else "image") for i, v in enumerate(images_in)
    )


def _provider_error(spec: ModelSpec, outcome: EditOutcome) -> ProviderError:
    err = outcome.error
    return ProviderError(
        f"{spec.id} could not edit the image: {err.message if err else 'failed'}",
        category=err.category if err else Category.TASK_FAILED,
        status_code=err.status_code if err else None,
        code=err.code if err else None,
        retryable=err.retryable if err else False,
        prediction_id=outcome.prediction_id,
        hint="see the category; `evalkit models` shows each model's limits",
    )


def _charge(outcome: EditOutcome) -> str:
    """none (proven: nothing billed) | known | unknown (the submit may have been accepted and billed)."""
    category = outcome.error.category if outcome.error else None
    if category == Category.UNKNOWN_OUTCOME or outcome.resumable:
        return "unknown"
    if outcome.cost_usd is None or outcome.cost_source == "unknown":
        return "unknown"
    return "known" if outcome.cost_usd > 0 else "none"


def _result(spec: ModelSpec, op: str, outcome: EditOutcome, prepared: Any, data: bytes) -> ImageEditResult:
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


async def agenerate_image_edit(
    image: ImageInput | Sequence[ImageInput] | None = None,
    prompt: str | None = None,
    operation: str = "general_edit",
    model: str | None = None,
    options: ImageEditOptions | Mapping[str, Any] | None = None,
    user_id: str | None = None,
    *,
    image_base64: str | Sequence[str] | None = None,
    tier: str | None = None,
    tiers: Any = None,
    allow_provisional: bool = False,
    allow_simulated: bool = False,
    max_age_days: float | None = None,
    continue_after_unknown: bool = False,
    workspace: Workspace | str | os.PathLike | None | bool = None,
    catalog: Catalog | None = None,
    provider_options: Mapping[str, Mapping[str, Any]] | None = None,
    spend_guard: SpendGuard | None = None,
) -> ImageEditResult:
    """Async twin of :func:`generate_image_edit`. ``spend_guard`` (see :class:`SpendGuard`) checks and holds
    each attempt's price before anything is sent."""
    op = normalise_operation(operation)
    opts = ImageEditOptions.from_value(options)
    images = _input_images(image, image_base64)  # a broken image fails here, before any model is tried
    mask = _as_input_image(opts.mask, "mask") if opts.mask is not None else None
    ws: Workspace | None
    if workspace is False:
        ws = None
    elif isinstance(workspace, Workspace):
        ws = workspace
    else:  # default (None or True): $EVALKIT_WORKSPACE or ./evalkit-workspace
        ws = Workspace(None if workspace is True else workspace)
    catalog = catalog or Catalog.load(ws.path if ws else None)

    async def call(
        spec: ModelSpec, route: Any = None, role: str | None = None, after: Sequence[dict[str, str]] = ()
    ) -> tuple[EditOutcome, Any]:
        request = EditRequest(model=spec, images=images, prompt=prompt, operation=op, options=opts, mask=mask)
        provider = create_provider(spec.provider, **dict((provider_options or {}).get(spec.provider, {})))
        held: float | None = None
        try:
            prepared = provider.prepare(request)  # raises InvalidInputError before anything is spent
            if route is not None:
                from evalkit.decide.routing import AttemptFailed, price_problem

                too_dear = price_problem(route, prepared.price_usd)
                if too_dear:
                    raise AttemptFailed(Category.BAD_REQUEST, too_dear)
            ensure_credentials(provider)  # a missing key fails here: nothing sent, nothing written
            if spend_guard is not None:
                held = spend_guard.reserve(spec.id, prepared.price_usd)  # may refuse: nothing sent
            # the ledger row exists before the result is awaited: a crash leaves it "pending", never missing
            usage_id: int | None = None
            if ws is not None:
                usage_id = ws.record_usage(
                    model_id=spec.id,
                    operation=op,
                    cost_usd=None,
                    cost_source="pending",
                    source=spend_guard.source if spend_guard is not None else "generate_image_edit",
                    user_id=user_id,
                    tier=route.tier if route is not None else (spend_guard.tier if spend_guard is not None else None),
                    role=role if route is not None else ("explicit" if model else None),
                    fallbacks=list(after) if route is not None else None,
                    client=spend_guard.client if spend_guard is not None else None,
                    reserved_usd=held,
                )

            async def on_submitted(prediction_id: str) -> None:
                if ws is not None and usage_id is not None:
                    ws.settle_usage(usage_id, cost_usd=None, prediction_id=prediction_id)

            try:
                outcome: EditOutcome = await provider.edit(request, on_submitted=on_submitted)
            except BaseException:
                if ws is not None and usage_id is not None:
                    ws.settle_usage(usage_id, cost_usd=None, cost_source="unknown")
                raise
        except BaseException:
            if held is not None and spend_guard is not None:
                spend_guard.settle(held, None)  # sent and no outcome: it may have been billed
            raise
        finally:
            await provider.aclose()
        if held is not None and spend_guard is not None:
            charge = _charge(outcome)  # none: proven unbilled; unknown: the hold stays spent
            spend_guard.settle(held, None if charge == "unknown" else float(outcome.cost_usd or 0.0))
        if ws is not None and usage_id is not None:
            ws.settle_usage(
                usage_id,
                cost_usd=outcome.cost_usd,
                cost_source=outcome.cost_source,
                prediction_id=outcome.prediction_id,
            )
        return outcome, prepared

    if model or not tier:
        spec = catalog.get(model) if model else _pick_model(catalog, None, op)
        outcome, prepared = await call(spec)
        if not outcome.ok:
            raise _provider_error(spec, outcome)
        data = outcome.read_image()
        if data is None:
            raise EvalkitError(f"{spec.id} reported success but returned no image", category=Category.BAD_OUTPUT)
        result = _result(spec, op, outcome, prepared, data)
        if model and tier:
            result.notes = (*result.notes, f"model={model} given explicitly: tier {tier!r} routing not used")
        return result
    return await _routed_edit(
        call, catalog, op, tier, tiers, allow_provisional, allow_simulated, max_age_days, continue_after_unknown
    )


async def _routed_edit(
    call: Any,
    catalog: Catalog,
    op: str,
    tier: str,
    tiers: Any,
    allow_provisional: bool,
    allow_simulated: bool,
    max_age_days: float | None,
    continue_after_unknown: bool,
) -> ImageEditResult:
    """``tier=`` given: the tier's default, then its alternatives (evalkit.decide.routing)."""
    from evalkit.decide.routing import AttemptFailed, Candidate, load_tier_defaults, plan_route, route_call

    defaults = load_tier_defaults(tiers, allow_simulated=allow_simulated, max_age_days=max_age_days)
    route = plan_route(defaults, tier, op, allow_provisional=allow_provisional, catalog=catalog)
    after: list[dict[str, str]] = []  # the ledger's `fallbacks` of each next attempt

    async def attempt(cand: Candidate) -> ImageEditResult:
        try:
            spec = catalog.get(cand.model)
            outcome, prepared = await call(spec, route, cand.role, tuple(after))
        except AttemptFailed as failed:
            after.append({"model": cand.model, "category": failed.category.value})
            raise
        except EvalkitError as exc:  # this model's limits, a missing key for its provider, not in the catalogue
            after.append({"model": cand.model, "category": exc.category.value})
            raise AttemptFailed(exc.category, str(exc), charge="none", error=exc) from None
        if not outcome.ok:
            err = _provider_error(spec, outcome)
            after.append({"model": cand.model, "category": err.category.value})
            raise AttemptFailed(
                err.category,
                err.message,
                charge=_charge(outcome),
                cost_usd=outcome.cost_usd,
                prediction_id=outcome.prediction_id,
                error=err,
            )
        data = outcome.read_image()
        if data is None:
            after.append({"model": cand.model, "category": "bad_output"})
            raise AttemptFailed(
                Category.BAD_OUTPUT,
                f"{spec.id} reported success but returned no image",
                charge=_charge(outcome),
                cost_usd=outcome.cost_usd,
                prediction_id=outcome.prediction_id,
            )
        return _result(spec, op, outcome, prepared, data)

    routed = await route_call(route, attempt, continue_after_unknown=continue_after_unknown)
    result = routed.value
    result.tier = tier
    result.fallbacks = tuple(routed.fallbacks)
    notes = list(result.notes) + list(defaults.warnings) + routed.notes
    if routed.candidate.role == "provisional":
        notes.append(f"{routed.model} is tier {tier}'s PROVISIONAL model for {op} (insufficient evidence)")
    for fb in routed.fallbacks:
        notes.append(f"fell back from {fb.model}: {fb.category} ({fb.reason})")
    result.notes = tuple(notes)
    result.metadata["routing"] = {
        "tier": tier,
        "role": routed.candidate.role,
        "tier_defaults": defaults.source,
        "run_id": defaults.run_id,
        "tier_defaults_simulated": defaults.simulated,
        "candidates": route.models,
        "skipped": [list(s) for s in route.skipped],
    }
    return result


def generate_image_edit(
    image: ImageInput | Sequence[ImageInput] | None = None,
    prompt: str | None = None,
    operation: str = "general_edit",
    model: str | None = None,
    options: ImageEditOptions | Mapping[str, Any] | None = None,
    user_id: str | None = None,
    **kwargs: Any,
) -> ImageEditResult:
    """Edit one image (synchronous). In a notebook, ``await agenerate_image_edit(...)``.

    The image: ``image=`` (bytes, a path, a PIL image, base64 text; a list for multi-image) or, as the
    original app passed it, ``image_base64=`` (base64 text or a data URI, or a list of them).

    The model: ``model=`` (explicit, always wins); else ``tier=`` routes by a run's decision
    (``tiers=`` path or dict, default ``$EVALKIT_TIER_DEFAULTS`` or ./tier_defaults.json; keywords
    ``allow_provisional``, ``allow_simulated``, ``max_age_days``, ``continue_after_unknown`` — see
    :mod:`evalkit.decide.routing`); else the original default model. With a tier, ``result.tier``,
    ``result.fallbacks`` and the usage ledger's ``source`` say which model served and why others did not.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(agenerate_image_edit(image, prompt, operation, model, options, user_id, **kwargs))
    raise EvalkitError(
        "generate_image_edit() cannot run inside an event loop (e.g. Jupyter)",
        hint="use `await evalkit.agenerate_image_edit(...)`",
    )
