"""The provider protocol: one way to call any hosted (or local) image-edit model.

Names follow the original Image Studio app: :class:`ImageEditProvider`, :class:`ImageEditOptions`.

A call has two steps:

1. ``provider.prepare(request) -> PreparedRequest`` — pure, no I/O: validates the request against the
   model's catalogue entry (operation, prompt, image count, mask, limits), builds the parameters the
   model takes (size fitted to its range, nearest aspect ratio, resolution tier, seed only where
   supported), prices it and fingerprints it. Raises :class:`InvalidInputError` on bad input. The
   shared steps live in :mod:`evalkit.providers.prepare`.
2. ``await provider.edit(request, on_submitted=hook) -> EditOutcome`` — performs the call. Providers
   with asynchronous jobs call ``on_submitted(prediction_id)`` as soon as the job is accepted and
   *before* waiting for its result, so the caller can record it; ``await provider.resume(request,
   prediction_id)`` later finishes such a job without submitting (and paying) again.

Optional capabilities are declared, typed, in one place: a provider class sets ``capabilities =
ProviderCapabilities(...)`` (a frozen dataclass; every flag defaults to False) and callers read them with
:func:`capabilities_of` — never with ``getattr``::

    class MyProvider:
        name = "mine"
        capabilities = ProviderCapabilities(resumable=True, reports_finished=True)

* ``resumable`` — jobs have ids that survive a crash: ``resume(request, prediction_id)`` collects them
  (without it, a call interrupted after its submit is marked unknown instead).
* ``reconcilable`` — ``edit(on_sending=hook)`` awaits ``hook(compact_body)`` before the submit (the runner
  records it) and ``list_predictions(...)`` lists the provider's history, so an unknown outcome can be
  recognised there later (:mod:`evalkit.engine.reconcile`).
* ``reports_finished`` — ``edit(on_finished=hook)`` calls ``hook()`` once the job is no longer running at
  the provider (completed or failed), before its output is fetched (the runner then lets the next job
  start: a provider's concurrency limit counts running jobs, not downloads).

A provider that declares nothing gets the defaults (nothing optional is used; it keeps working).
Providers written before ``ProviderCapabilities`` existed declared bare class attributes
(``resumable = True``, ``reconcilable = True``, ``reports_finished = True``); :func:`capabilities_of`
still honours those. Two optional *methods* are small runtime-checkable protocols, found with
``isinstance``: :class:`ChecksCredentials` (``ensure_credentials()`` raises a missing-key error before a
run spends anything) and :class:`QuotesPrices` (``quote_prices(prepared)`` asks a pricing API).

Failures of the call itself are *returned* (``EditOutcome.error`` with a :class:`Category`), not
raised, so a batch never stops because one model is down. Providers build them with
:meth:`EditOutcome.provider_failure`: one layout (what happened, naming the service — the server's own
words — what to do), redacted of every key.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from evalkit.catalog.pricing import Quote
from evalkit.catalog.spec import ModelSpec
from evalkit.credentials import Secret, redact
from evalkit.errors import Category, InvalidInputError
from evalkit.images import InputImage

SubmitHook = Callable[[str], Awaitable[None]]


@dataclass(frozen=True)
class ImageEditOptions:
    """Per-call options (the original app's ``options`` dict, typed).

    ``width``/``height`` ask for an output size; each model gets the nearest size it can produce.
    ``mask`` is a mask image (bytes) where white marks the region to edit. ``extra`` carries
    model-specific parameters (e.g. ``quality`` for GPT Image 1, ``search_prompt`` for Stability's
    search-and-replace); keys a model does not take are ignored and noted on the outcome.
    """

    width: int | None = None
    height: int | None = None
    seed: int | None = None
    guidance_scale: float | None = None
    steps: int | None = None
    negative_prompt: str | None = None
    mask: bytes | None = field(default=None, repr=False)
    output_format: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_value(cls, value: ImageEditOptions | Mapping[str, Any] | None) -> ImageEditOptions:
        """Accept an ImageEditOptions, the original app's dict (``{"width": …, "seed": …}``) or None."""
        if value is None:
            return cls()
        if isinstance(value, ImageEditOptions):
            return value
        if not isinstance(value, Mapping):
            raise InvalidInputError(f"options must be a dict or ImageEditOptions, got {type(value).__name__}")
        known = {f for f in cls.__dataclass_fields__ if f != "extra"}
        kw = {k: v for k, v in value.items() if k in known}
        raw_extra = value.get("extra") or {}
        if not isinstance(raw_extra, Mapping):
            raise InvalidInputError(f"option extra must be a dict of model parameters, got {raw_extra!r}")
        extra = dict(raw_extra)
        extra.update({k: v for k, v in value.items() if k not in known and k != "extra"})
        if "num_inference_steps" in extra and "steps" not in kw:
            kw["steps"] = extra.pop("num_inference_steps")
        return cls(**kw, extra=extra)

    def __post_init__(self) -> None:
        """Refuse wrongly typed options with a message naming the field (not a TypeError later)."""
        import math

        def bad(name: str, want: str) -> InvalidInputError:
            return InvalidInputError(f"option {name} must be {want}, got {getattr(self, name)!r}")

        for name in ("width", "height", "steps"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v <= 0):
                raise bad(name, "a positive whole number")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise bad("seed", "a whole number")
        gs = self.guidance_scale
        if gs is not None and (isinstance(gs, bool) or not isinstance(gs, (int, float)) or not math.isfinite(gs)):
            raise bad("guidance_scale", "a finite number")
        for name in ("negative_prompt", "output_format"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), str):
                raise bad(name, "a string")
        if self.mask is not None and not isinstance(self.mask, (bytes, bytearray, memoryview)):
            raise bad("mask", "image bytes")
        if not isinstance(self.extra, Mapping):
            raise bad("extra", "a dict of model parameters")

    def explicit_size(self) -> bool:
        return self.width is not None and self.height is not None


@dataclass(frozen=True)
class EditRequest:
    """One edit: a model, its input image(s), an instruction and options."""

    model: ModelSpec
    images: tuple[InputImage, ...]
    prompt: str | None = None
    operation: str = "general_edit"
    options: ImageEditOptions = field(default_factory=ImageEditOptions)
    mask: InputImage | None = None
    #: distinguishes repeated samples of a model that takes no seed (part of the fingerprint)
    sample_index: int = 0
    #: where a provider may stream the output file (the runner passes the workspace's spool dir)
    spool_dir: Path | None = None


@dataclass(frozen=True)
class PreparedRequest:
    """A request resolved against the catalogue: what will be sent, what it costs, how it was adapted."""

    model_id: str
    provider: str
    endpoint: str
    #: parameters to send; images appear as ``{"$image": sha256}`` placeholders (no pixel data here)
    params: dict[str, Any]
    price_usd: float | None
    reserve_usd: float
    fingerprint: str
    notes: tuple[str, ...] = ()
    input_resized: bool = False
    images: tuple[InputImage, ...] = field(default=(), repr=False)
    mask: InputImage | None = field(default=None, repr=False)
    expected_size: tuple[int, int] | None = None
    #: where ``price_usd`` comes from: "catalogue" (the entry's price rule), "quoted" (the provider's
    #: pricing API for exactly these parameters) or "catalogue_quote_failed" (a quote was asked and failed)
    price_source: str = "catalogue"

    def public_params(self) -> dict[str, Any]:
        """The parameters as stored in the workspace (already free of image data and secrets)."""
        return dict(self.params)


@dataclass
class Latency:
    """Where the time went, in milliseconds. ``None`` where a provider cannot tell."""

    submit_ms: float | None = None
    queue_ms: float | None = None
    inference_ms: float | None = None  # as the server reports it
    download_ms: float | None = None
    total_ms: float | None = None

    def as_dict(self) -> dict[str, float | None]:
        return dict(vars(self))


@dataclass(frozen=True)
class EditError:
    category: Category
    message: str
    code: int | str | None = None
    status_code: int | None = None
    retryable: bool = False


@dataclass
class EditOutcome:
    """The result of one call, successful or not."""

    #: True when the call produced an output image
    ok: bool
    #: the catalogue id of the model called
    model_id: str
    #: the output's bytes (None on failure, or when streamed to ``image_path``)
    image: bytes | None = field(default=None, repr=False)
    #: set instead of ``image`` when the provider streamed the output to ``EditRequest.spool_dir``
    image_path: Path | None = None
    #: sha256 of the output's bytes, when the provider computed it while streaming
    image_sha256: str | None = None
    #: the output's image format (png, jpeg, webp)
    format: str | None = None
    #: the output's width in pixels
    width: int | None = None
    #: the output's height in pixels
    height: int | None = None
    #: what this call cost in USD; None when nobody says (e.g. Hugging Face)
    cost_usd: float | None = None
    #: list_price (catalogue price of an accepted call) | reported (by the provider) | unknown | free
    cost_source: str = "list_price"
    #: where the time went: submit, queue, inference, download, total (ms)
    latency: Latency = field(default_factory=Latency)
    #: the provider's job id once it accepted the request (what ``resume`` polls)
    prediction_id: str | None = None
    #: why the call failed (category, message, code); None on success
    error: EditError | None = None
    #: the provider flagged the output as NSFW
    nsfw: bool = False
    #: the provider's content filter replaced or refused the output
    content_filtered: bool = False
    #: an input was shrunk to fit the model's limits before sending
    input_resized: bool = False
    #: the answer came from a local simulator, not the real API (reports label it SIMULATED)
    simulated: bool = False
    #: the provider accepted the job and its result can still be collected with ``resume(prediction_id)``
    #: without paying again (we stopped waiting, polls kept failing, or a completed output failed to
    #: download for a transient reason): the call stays ``submitted`` and ``--resume`` finishes it.
    resumable: bool = False
    #: selected response fields (status, timings, has_nsfw_contents, seed, finish reason, notes…)
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> str:
        return "completed" if self.ok else "failed"

    def read_image(self) -> bytes | None:
        if self.image is not None:
            return self.image
        if self.image_path is not None:
            return Path(self.image_path).read_bytes()
        return None

    @classmethod
    def failure(cls, model_id: str, category: Category, message: str, **kw: Any) -> EditOutcome:
        err = EditError(
            category=Category(category),
            message=message,
            code=kw.pop("code", None),
            status_code=kw.pop("status_code", None),
            retryable=kw.pop("retryable", False),
        )
        return cls(ok=False, model_id=model_id, error=err, cost_usd=kw.pop("cost_usd", 0.0), **kw)

    @classmethod
    def provider_failure(
        cls,
        model_id: str,
        category: Category,
        message: str,
        *,
        service: str,
        detail: str | None = None,
        hint: str | None = None,
        secrets: Iterable[Secret | str | None] = (),
        **kw: Any,
    ) -> EditOutcome:
        """A failed call, worded the same way by every provider: ``<what happened>: <detail> — <hint>``.

        ``message`` says what happened; it is prefixed with ``service`` ("WaveSpeed", "Stability") unless
        it already names it, so a failure read on its own says whose it is. ``detail`` is the server's own
        words (cut to :data:`MAX_DETAIL_CHARS`), ``hint`` what the user can do about it. The whole text is
        redacted: each of ``secrets`` (the provider's key) and every key evalkit knows of becomes ``***``,
        as does any bearer token. ``code``, ``status_code``, ``retryable``, ``cost_usd`` (default 0.0) and
        the outcome's other fields pass through ``kw`` to :meth:`failure`.
        """
        text = message.strip()
        if service.casefold() not in text.casefold():
            text = f"{service}: {text}"
        said = " ".join((detail or "").split())
        if said:
            text += ": " + (said if len(said) <= MAX_DETAIL_CHARS else said[:MAX_DETAIL_CHARS] + "…")
        if hint:
            text += f" — {hint}"
        return cls.failure(model_id, category, redact(text, *secrets), **kw)


#: the most of a server's own error text kept in a failure message (the rest is noise, or someone's data)
MAX_DETAIL_CHARS = 500


@dataclass(frozen=True)
class ProviderCapabilities:
    """What a provider can do beyond ``prepare``/``edit``/``resume``/``aclose`` (see the module docstring).

    Declared once per provider class (``capabilities = ProviderCapabilities(resumable=True)``) and read
    with :func:`capabilities_of`. Every flag defaults to False: the engine then uses no optional hook.
    """

    #: jobs have ids that survive a crash: ``resume(request, prediction_id)`` collects them without paying again
    resumable: bool = False
    #: ``edit`` takes ``on_sending`` and the provider lists its history (``list_predictions``)
    reconcilable: bool = False
    #: ``edit`` takes ``on_finished``, called once the job stopped running, before its output is fetched
    reports_finished: bool = False


#: what a provider that declares nothing can do
NO_CAPABILITIES = ProviderCapabilities()


def capabilities_of(provider: object) -> ProviderCapabilities:
    """The capabilities ``provider`` declares; :data:`NO_CAPABILITIES` when it declares none.

    The one place that looks for them: a ``capabilities`` attribute holding a :class:`ProviderCapabilities`,
    else (providers written before it existed) bare class attributes of the same names set to True.
    """
    declared = getattr(provider, "capabilities", None)
    if isinstance(declared, ProviderCapabilities):
        return declared
    legacy = {f: bool(getattr(provider, f, False)) for f in ProviderCapabilities.__dataclass_fields__}
    return ProviderCapabilities(**legacy) if any(legacy.values()) else NO_CAPABILITIES


@runtime_checkable
class ChecksCredentials(Protocol):
    """A provider that can tell, before anything is sent, that its key is missing."""

    def ensure_credentials(self) -> None:
        """Raise :class:`~evalkit.errors.MissingKeyError` when the key is not set (no I/O, nothing spent)."""
        ...


@runtime_checkable
class QuotesPrices(Protocol):
    """A provider with a pricing API: ``quote_prices`` asks it for the price of each distinct request."""

    def quote_prices(self, prepared: Iterable[PreparedRequest]) -> Mapping[str, Quote]:
        """Quotes keyed by :func:`~evalkit.catalog.pricing.quote_key` (a failed one has ``usd=None``)."""
        ...


def ensure_credentials(provider: object) -> None:
    """Check ``provider``'s key now when it can (:class:`ChecksCredentials`); a no-op for one that cannot."""
    if isinstance(provider, ChecksCredentials):
        provider.ensure_credentials()


@runtime_checkable
class ImageEditProvider(Protocol):
    """What every provider implements. See the module docstring for the call sequence.

    Optional, outside the protocol (so a provider without them still satisfies it): ``capabilities``, a
    :class:`ProviderCapabilities` read with :func:`capabilities_of`, and the :class:`ChecksCredentials` /
    :class:`QuotesPrices` methods.
    """

    name: str

    def prepare(self, request: EditRequest) -> PreparedRequest: ...

    async def edit(self, request: EditRequest, *, on_submitted: SubmitHook | None = None) -> EditOutcome: ...

    async def resume(self, request: EditRequest, prediction_id: str) -> EditOutcome: ...

    async def aclose(self) -> None: ...


__all__ = [
    "MAX_DETAIL_CHARS",
    "NO_CAPABILITIES",
    "ChecksCredentials",
    "EditError",
    "EditOutcome",
    "EditRequest",
    "ImageEditOptions",
    "ImageEditProvider",
    "Latency",
    "PreparedRequest",
    "ProviderCapabilities",
    "QuotesPrices",
    "SubmitHook",
    "capabilities_of",
    "ensure_credentials",
]
