"""WaveSpeed AI: every WaveSpeed edit model in the catalogue through one REST protocol.

Protocol (shared/reference/wavespeed-api.md §1): ``POST {base}/api/v3/{endpoint}`` with a flat JSON
body and ``Authorization: Bearer <key>`` answers ``{"code":200,"data":{"id":…,"status":"created"}}``;
``GET {base}/api/v3/predictions/{id}/result`` is polled until ``data.status`` is terminal
(``completed`` → ``data.outputs[0]`` is a CDN URL, or naked base64 with ``enable_base64_output``;
``failed``/``cancelled``/``timeout``/``deleted`` → ``data.code`` + ``data.error``).

Money rules (the reason this module is longer than the protocol):

* A submit is re-sent **only** when the reply proves the task was not created: HTTP **429** (rate
  limited — the request was refused before any work) and a transport error raised **before the request
  was sent** (``ConnectError``, ``ConnectTimeout``, ``PoolTimeout`` — no byte reached the server).
* Everything else after sending is an **unknown outcome** and is never re-sent: a read timeout, a
  dropped connection (``RemoteProtocolError``/``ReadError``/``WriteError`` — the body may have
  arrived whole), HTTP 500/502/503/504 (a gateway error can come back while the task was created — the
  docs say sync-mode 504s still complete server-side), a 200 without ``data.id``. HTTP 503 usually
  means "refused before any work", but nothing in WaveSpeed's documentation guarantees it and the
  official SDK never re-sends a submit, so evalkit does not either by default;
  ``resend_submit_on_503=True`` opts in when you know your gateway's 503s are refusals. A 5xx whose
  envelope says ``status: failed`` is reported as ``server``; a 5xx that carries a ``data.id`` proves
  the task exists, so it is treated as accepted and polled.
* As soon as a submit is accepted, ``on_submitted(prediction_id)`` is awaited — before any poll — so
  the caller can persist the id; :meth:`WaveSpeedEditProvider.resume` later finishes the job by
  polling and downloading only.

Polls, downloads and upload tickets cost nothing and are idempotent: they are retried on 429, 5xx,
unparseable replies and transport errors with :class:`RetryPolicy` backoff, honouring ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from evalkit.catalog.pricing import Quote, WaveSpeedCatalogClient, quote_key, quote_requests
from evalkit.credentials import Secret, key_from_env, redact
from evalkit.errors import Category, InvalidInputError, ProviderError
from evalkit.images import InputImage
from evalkit.providers.base import (
    EditOutcome,
    EditRequest,
    Latency,
    PreparedRequest,
    ProviderCapabilities,
    SubmitHook,
)
from evalkit.providers.history import HistoryPage, compact_body, parse_history_page
from evalkit.providers.http import (
    DEFAULT_MAX_DOWNLOAD_BYTES,
    DEFAULT_TIMEOUT,
    NOT_SENT_ERRORS,
    DownloadedImage,
    Sleep,
    decode_base64_output,
    download_image,
    error_for_response,
    error_for_transport,
    image_from_bytes,
    is_balance_refusal,
    is_simulated,
    json_or_none,
    new_client,
    safe_url,
    server_message,
    with_retries,
)
from evalkit.providers.pacing import PacerConfig, PollPacer
from evalkit.providers.prepare import materialise, prepare_json_request
from evalkit.providers.retry import RetryPolicy
from evalkit.providers.wavespeed_uploads import UploadCache, upload_media

__all__ = ["WaveSpeedEditProvider", "PollSchedule", "category_for_task", "DEFAULT_BASE_URL"]

log = logging.getLogger("evalkit.providers.wavespeed")

SERVICE = "WaveSpeed"
KEY_ENV = "WAVESPEED_API_KEY"
BASE_URL_ENV = "WAVESPEED_BASE_URL"
DEFAULT_BASE_URL = "https://api.wavespeed.ai"

#: statuses after which a task never changes (SDK 2.0.5 ``_wait``); any other status keeps polling.
FAILED_STATUSES = ("failed", "cancelled", "timeout", "deleted")
#: task-level ``data.code`` → category (https://wavespeed.ai/docs/error-codes):
#: 1xxx = fix the request, 5xxx = retry later.
TASK_CODE_CATEGORIES: dict[int, Category] = {
    1200: Category.MODERATION,
    1400: Category.BAD_REQUEST,
    1401: Category.BAD_REQUEST,
    1402: Category.BAD_REQUEST,
    1403: Category.TASK_FAILED,
    1405: Category.TASK_FAILED,
    5000: Category.SERVER,
    5003: Category.SERVER,
    5004: Category.SERVER,
}
#: the sync-mode reply code meaning "still running, poll the id" (SDK ``_format_sync_mode_error``).
SYNC_TIMEOUT_CODE = 5004
#: default threshold for uploading an input instead of inlining it (see the class docstring).
DEFAULT_UPLOAD_THRESHOLD_BYTES = 1024 * 1024

_ID_OK = re.compile(r"^[A-Za-z0-9._:\-]{1,200}$")


@dataclass(frozen=True)
class PollSchedule:
    """When to poll a prediction, and for how long in all.

    The n-th poll (0-based) waits ``initial_delay_s * factor**n`` after the previous one, capped at
    ``max_interval_s``; from poll number ``quick_polls`` on, the wait is also at least
    ``min_interval_s`` — WaveSpeed asks for image tasks to be polled ≥ 2 s apart, while the first
    one or two quick polls catch fast models (a few seconds) without adding 2 s of latency.
    Defaults: 1.0, 1.25, then 2.0, 2.0, 2.44, 3.05, … up to 5 s. The first wait is ``first_delay_s``
    when set, else (``learn_first_delay``) the model's fastest inference seen so far when longer.

    ``timeout_s`` bounds the whole call (submit, polling and download): after it the outcome is a
    ``timeout`` failure that keeps the prediction id, so :meth:`WaveSpeedEditProvider.resume` can
    collect the result later. 15 minutes covers the slowest edit model (~2 min reported) with room
    for queueing on a busy account.
    """

    initial_delay_s: float = 1.0
    factor: float = 1.25
    quick_polls: int = 2
    min_interval_s: float = 2.0
    max_interval_s: float = 5.0
    timeout_s: float = 900.0
    #: wait before the *first* poll, when set (e.g. a model's typical latency): fewer wasted polls on a
    #: slow model without a coarse interval afterwards. Not capped by ``max_interval_s``.
    first_delay_s: float | None = None
    #: when ``first_delay_s`` is not set, wait before the first poll of a model's task as long as the
    #: fastest inference the server has reported for that model so far (this provider instance, i.e.
    #: this run): no task can be done sooner, so the polls before that are wasted. Later polls follow
    #: the schedule. ``EVALKIT_POLL_LEARN_FIRST_DELAY=0`` turns it off.
    learn_first_delay: bool = True
    #: pace the polls of a newly accepted task with :class:`~evalkit.providers.pacing.PollPacer`: the first
    #: poll at a high quantile of the model's completion times (plus a margin), every later one at least
    #: ``min_interval_s`` after the previous. ``False`` keeps the fixed schedule above (``EVALKIT_POLL_ADAPTIVE=0``).
    adaptive: bool = True

    def __post_init__(self) -> None:
        if (
            self.initial_delay_s < 0
            or self.min_interval_s < 0
            or self.max_interval_s < 0
            or self.factor < 1
            or (self.first_delay_s is not None and self.first_delay_s < 0)
        ):
            raise InvalidInputError("poll schedule: delays must be ≥ 0 and factor ≥ 1")
        if self.timeout_s <= 0:
            raise InvalidInputError("poll schedule: timeout_s must be > 0")

    @classmethod
    def from_env(cls) -> PollSchedule:
        """Defaults, overridable by ``EVALKIT_POLL_INITIAL_S``, ``EVALKIT_POLL_MIN_INTERVAL_S``,
        ``EVALKIT_POLL_MAX_INTERVAL_S``, ``EVALKIT_POLL_TIMEOUT_S``, ``EVALKIT_POLL_FIRST_DELAY_S`` (e.g. for a
        fast local server) and ``EVALKIT_POLL_LEARN_FIRST_DELAY`` (0 / 1)."""
        env = {
            "initial_delay_s": "EVALKIT_POLL_INITIAL_S",
            "min_interval_s": "EVALKIT_POLL_MIN_INTERVAL_S",
            "max_interval_s": "EVALKIT_POLL_MAX_INTERVAL_S",
            "timeout_s": "EVALKIT_POLL_TIMEOUT_S",
            "first_delay_s": "EVALKIT_POLL_FIRST_DELAY_S",
        }
        kw: dict[str, Any] = {}
        for field_name, var in env.items():
            raw = os.environ.get(var)
            if raw:
                try:
                    kw[field_name] = float(raw)
                except ValueError:
                    raise InvalidInputError(f"{var}={raw!r} is not a number of seconds") from None
        for field_name, var in (
            ("learn_first_delay", "EVALKIT_POLL_LEARN_FIRST_DELAY"),
            ("adaptive", "EVALKIT_POLL_ADAPTIVE"),
        ):
            flag = os.environ.get(var, "").strip().lower()
            if flag:
                if flag not in ("0", "1", "true", "false", "yes", "no", "on", "off"):
                    raise InvalidInputError(f"{var}={flag!r} is not 0 or 1")
                kw[field_name] = flag in ("1", "true", "yes", "on")
        return cls(**kw)

    def pacer(self, priors: dict[str, float] | None = None) -> PollPacer | None:
        """The :class:`PollPacer` this schedule asks for (None when not ``adaptive``)."""
        if not self.adaptive:
            return None
        config = PacerConfig(
            min_interval_s=self.min_interval_s,
            max_interval_s=max(self.max_interval_s, self.min_interval_s),
            # nothing known about the model yet: the first poll as late as the 2 s spacing allows anyway (a 3 s task
            # is then seen at 4 s, not at 1 s, 3 s (miss), 5 s)
            fallback_first_s=max(self.delay_s(0), self.min_interval_s),
            max_first_s=self.timeout_s / 2,
            # first-wave probes from a quarter of the spacing (0.5 s with WaveSpeed's 2 s), at most 0.5 s
            probe_first_s=min(0.5, self.min_interval_s / 4),
        )
        return PollPacer(config, priors=priors)

    def delay_s(self, n: int) -> float:
        """Seconds to wait before poll number ``n`` (0-based)."""
        if n == 0 and self.first_delay_s is not None:
            return self.first_delay_s
        d = self.initial_delay_s * self.factor ** min(n, 64)
        if n >= self.quick_polls:
            d = max(d, self.min_interval_s)
        return min(d, self.max_interval_s) if self.max_interval_s else d


def category_for_task(code: Any, status: str, error_text: str = "") -> Category:
    """Category of a task that ended in ``status`` with task code ``code`` (see TASK_CODE_CATEGORIES)."""
    try:
        num = int(code) if code not in (None, "", 0, "0") else None
    except (TypeError, ValueError):
        num = None
    if num is not None:
        return TASK_CODE_CATEGORIES.get(num, Category.TASK_FAILED)
    low = (error_text or "").lower()
    if any(w in low for w in ("moderation", "nsfw", "sensitive content", "content policy")):
        return Category.MODERATION
    if status == "cancelled":
        return Category.CANCELLED
    if status == "timeout":
        return Category.SERVER
    return Category.TASK_FAILED


def _with_flags(
    prepared: PreparedRequest, model_sync: bool, model_b64: bool, sync_mode: bool, base64_output: bool
) -> PreparedRequest:
    """Add enable_sync_mode/enable_base64_output only where enabled *and* listed for the model.

    They do not change the image, so the fingerprint (computed without them) stays the same.
    """
    params = dict(prepared.params)
    if sync_mode and model_sync:
        params["enable_sync_mode"] = True
    if base64_output and model_b64:
        params["enable_base64_output"] = True
    return replace(prepared, params=params)


def _with_quote(prepared: PreparedRequest, q: Quote | None) -> PreparedRequest:
    """The prepared request priced by its quote (or marked as a failed quote: catalogue price kept)."""
    if q is None:
        return prepared
    if q.usd is None:
        note = f"price quote failed ({q.error[:160]}); the catalogue price is used"
        return replace(prepared, price_source="catalogue_quote_failed", notes=(*prepared.notes, note))
    return replace(prepared, price_usd=q.usd, reserve_usd=q.usd, price_source="quoted")


@dataclass
class _FirstWave:
    """A model nobody has timed yet (:meth:`PollPacer.probing`): its probes, and the event its followers wait
    on (set by a probe's sample, a failed task, or when no probe is left)."""

    #: probes still polling
    probing: int = 0
    #: probes started so far (their number picks each one's staggered first poll)
    started: int = 0
    timed: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class _Call:
    """Book-keeping of one call: timings, ids, what the server told us."""

    model_id: str
    prepared: PreparedRequest
    t0: float = field(default_factory=time.monotonic)
    latency: Latency = field(default_factory=Latency)
    prediction_id: str | None = None
    simulated: bool = False
    accepted_at: float | None = None
    #: the last moment a poll saw the task unfinished (for the pacer's completion-time sample)
    last_unfinished_at: float | None = None
    last_created_at: float | None = None
    left_created_at: float | None = None
    #: when a poll (or the submit's reply) first saw the task completed or failed
    finished_seen_at: float | None = None
    polls: int = 0
    uploads: int = 0
    #: inputs sent as a URL WaveSpeed already serves (an earlier output or upload), nothing re-sent
    reused_urls: int = 0
    hook_error: str | None = None
    #: sync mode: the task's time in ``created`` is hidden inside the blocking POST
    sync: bool = False
    #: edit(on_finished=…): called when the task is seen completed or failed (before its download)
    on_finished: Callable[[], None] | None = None
    #: the first poll of this task probes a model nobody has timed yet (PollPacer: the first wave)
    probe: bool = False
    #: the first poll was aimed at the model's estimate (its result steers the pacer's margin)
    aimed: bool = False

    def observe(self, status: str, at: float) -> None:
        """Record a status seen at monotonic time ``at`` (for the queue-time estimate)."""
        if status not in ("completed", *FAILED_STATUSES):
            self.last_unfinished_at = at
        elif self.finished_seen_at is None:
            self.finished_seen_at = at
        if status == "created":
            self.last_created_at = at
        elif self.left_created_at is None:
            self.left_created_at = at

    def queue_ms(self) -> float | None:
        """Time spent in ``created``: midpoint between the last poll that saw ``created`` and the latest moment
        the task can have left it — the first poll that saw anything later, or, once it is seen finished, that
        moment minus its reported inference — measured from acceptance. 0 when the first reply was already
        past ``created``; None when the task was never seen leaving it."""
        if self.sync or self.accepted_at is None or self.left_created_at is None:
            return None
        if self.last_created_at is None:
            return 0.0
        left_by = self.left_created_at
        if self.finished_seen_at is not None and self.latency.inference_ms:
            # a task seen finished had started at least its reported inference time before: a first poll that
            # finds it done narrows the window to [last seen created, seen done - inference]
            left_by = min(left_by, self.finished_seen_at - self.latency.inference_ms / 1000)
        mid = (self.last_created_at + max(self.last_created_at, left_by)) / 2
        return max(0.0, (mid - self.accepted_at) * 1000)


class _Failed(Exception):
    """Internal: a call ended; carries the outcome to return."""

    def __init__(self, outcome: EditOutcome):
        super().__init__(outcome.error.message if outcome.error else "failed")
        self.outcome = outcome


class WaveSpeedEditProvider:
    """:class:`~evalkit.providers.base.ImageEditProvider` for WaveSpeed AI.

    All arguments are keyword-only and optional:

    * ``base_url`` — API root (no ``/api/v3``); default ``$WAVESPEED_BASE_URL``, else
      ``https://api.wavespeed.ai``. Point it at ``evalkit sim`` for local runs.
    * ``api_key`` — a :class:`Secret`; default ``$WAVESPEED_API_KEY``. A missing key raises
      :class:`~evalkit.errors.MissingKeyError` at the first call, not here, so listing models and
      ``prepare`` work without one.
    * ``client`` — an ``httpx.AsyncClient`` to use (tests pass one with a ``MockTransport``); not
      closed by :meth:`aclose`. By default an own client with explicit timeouts and limits sized for
      ~100 concurrent calls (:func:`evalkit.providers.http.new_client`).
    * ``retry`` — backoff for idempotent requests and for the provably-not-accepted submits.
    * ``poll`` — a :class:`PollSchedule` (poll spacing and the per-call overall timeout).
    * ``sync_mode`` — send ``enable_sync_mode`` (where the model lists it): the POST blocks until the
      image is ready. Off by default: the id then arrives only with the result, so a dropped
      connection loses a paid result that async submit + polling could have resumed. A sync
      timeout reply (code 5004) falls back to polling its id.
    * ``base64_output`` — send ``enable_base64_output`` (where listed): outputs come back as base64
      inside the JSON instead of CDN URLs (no separate download).
    * ``upload_threshold_bytes`` — inputs larger than this (default 1 MiB) are uploaded once through
      the media endpoint (``POST /api/v3/media/uploads`` ticket, then ``PUT``) and the returned URL is
      reused, by sha256, for every later call of this provider (uploads live 7 days; reused for 6).
      Smaller ones are sent inline as data URIs: one request instead of three, and a body well under
      1.4 MB. An evaluation sends the same input to ~17 models × repeats, so uploading large inputs
      once saves re-sending megabytes per call. ``None`` disables uploads (always inline). The upload
      flow and the reuse cache are :mod:`evalkit.providers.wavespeed_uploads`.
    * ``max_download_bytes`` — cap on one output (default 64 MB); bigger outputs are ``bad_output``.
    * ``sync_read_timeout_s`` — read timeout of a sync-mode POST (the server gives up at ~90 s).
    * ``sleep`` — the coroutine used to wait (tests record the waits instead of sleeping).

    Latency fields (ms): ``submit`` = the accepted POST's round trip (in sync mode it includes the
    processing, which the blocking POST hides); ``queue`` = time in ``created``
    as estimated by polling (see ``_Call.queue_ms``; None in sync mode); ``inference`` = the server's
    ``timings.inference`` (or ``executionTime``); ``download``; ``total`` = wall time of the call.
    """

    name = "wavespeed"
    #: resumable: tasks have ids. reconcilable: lists its predictions (list_predictions) and reports the body
    #: it sends (edit(on_sending=…)), so unknown submits can be settled from the history
    #: (evalkit.engine.reconcile). reports_finished: calls edit(on_finished=…) when the task is no longer
    #: running on WaveSpeed (completed or failed), before the output is downloaded: the runner then lets
    #: the next task start (the account's concurrency limit counts running tasks, not downloads)
    capabilities: ProviderCapabilities = ProviderCapabilities(resumable=True, reconcilable=True, reports_finished=True)

    def __init__(
        self,
        *,
        base_url: str | None = None,
        api_key: Secret | None = None,
        client: httpx.AsyncClient | None = None,
        retry: RetryPolicy | None = None,
        poll: PollSchedule | None = None,
        sync_mode: bool = False,
        base64_output: bool = False,
        upload_threshold_bytes: int | None = DEFAULT_UPLOAD_THRESHOLD_BYTES,
        max_download_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES,
        sync_read_timeout_s: float = 150.0,
        submit_read_timeout_s: float = 60.0,
        sleep: Sleep = asyncio.sleep,
        resend_submit_on_503: bool = False,
    ):
        base = base_url or os.environ.get(BASE_URL_ENV, "").strip() or DEFAULT_BASE_URL
        if urlsplit(base).scheme not in ("http", "https"):
            raise InvalidInputError(f"WaveSpeed base URL {safe_url(base)!r} must start with http:// or https://")
        self.base_url = base.rstrip("/")
        if api_key is not None and not isinstance(api_key, Secret):
            raise InvalidInputError("api_key must be an evalkit.credentials.Secret (keys come from the environment)")
        self._api_key = api_key if api_key is not None else key_from_env(KEY_ENV, required=False)
        self._own_client = client is None
        self._client = client
        self.retry = retry or RetryPolicy()
        self.poll = poll or PollSchedule.from_env()
        self.sync_mode = bool(sync_mode)
        self.base64_output = bool(base64_output)
        self.resend_submit_on_503 = bool(resend_submit_on_503)
        self.upload_threshold_bytes = upload_threshold_bytes
        self.max_download_bytes = int(max_download_bytes)
        self._submit_timeout = httpx.Timeout(
            connect=DEFAULT_TIMEOUT.connect,
            read=submit_read_timeout_s,
            write=DEFAULT_TIMEOUT.write,
            pool=DEFAULT_TIMEOUT.pool,
        )
        self._sync_timeout = httpx.Timeout(
            connect=DEFAULT_TIMEOUT.connect,
            read=sync_read_timeout_s,
            write=DEFAULT_TIMEOUT.write,
            pool=DEFAULT_TIMEOUT.pool,
        )
        self._sleep = sleep
        #: paces the polls of new tasks (PollSchedule.adaptive); the engine seeds it with earlier runs' times
        self.pacer: PollPacer | None = self.poll.pacer()
        self._uploads = UploadCache()
        #: model id → the fastest inference (s) the server reported for it (PollSchedule.learn_first_delay)
        self._fastest_s: dict[str, float] = {}
        #: model id → the first wave of a model nobody has timed yet (PollPacer.probing)
        self._first_wave: dict[str, _FirstWave] = {}
        #: quote_key → the pricing API's answer (set by :meth:`quote_prices`; used by :meth:`prepare`)
        self.price_quotes: dict[str, Quote] = {}

    def __repr__(self) -> str:
        return (
            f"WaveSpeedEditProvider(base_url={safe_url(self.base_url)!r}, key={'set' if self._api_key else 'unset'}, "
            f"sync_mode={self.sync_mode}, base64_output={self.base64_output})"
        )

    # ---- protocol ---------------------------------------------------------------------------
    def prepare(self, request: EditRequest) -> PreparedRequest:
        """``prepare_json_request`` plus the sync/base64 flags where enabled and listed for the model."""
        m = request.model
        prepared = prepare_json_request(request)
        if self.price_quotes:
            prepared = _with_quote(prepared, self.price_quotes.get(quote_key(m.id, prepared.params)))
        return _with_flags(prepared, m.sync_mode, m.base64_output, self.sync_mode, self.base64_output)

    def quote_prices(self, prepared: Iterable[PreparedRequest]) -> dict[str, Quote]:
        """Ask ``POST /api/v3/model/pricing`` once per distinct (model, parameters) of ``prepared``.

        Blocking (call it off the event loop). Later :meth:`prepare` calls use the quotes for the price,
        the budget reservation and the recorded cost (``price_source = "quoted"``, ``cost_source =
        "quoted"``); a failed quote leaves the catalogue price, says so in the request's notes and marks
        ``price_source = "catalogue_quote_failed"``. Returns the quotes (also kept in :attr:`price_quotes`).
        """
        wanted = [(p.model_id, p.endpoint, p.params) for p in prepared if p.provider == self.name]
        with WaveSpeedCatalogClient(base_url=self.base_url, api_key=self._api_key) as client:
            quotes = quote_requests(client, wanted)
        self.price_quotes.update(quotes)
        return quotes

    def build_body(
        self, request: EditRequest, image_encoder: Callable[[InputImage], Any] = InputImage.data_uri
    ) -> dict[str, Any]:
        """The JSON body this provider would send for ``request`` (pure; no upload, no I/O)."""
        prepared = self.prepare(request)
        return materialise(prepared.params, prepared.images, prepared.mask, image_encoder)

    async def edit(
        self,
        request: EditRequest,
        *,
        on_submitted: SubmitHook | None = None,
        on_sending: Callable[[dict[str, Any]], Awaitable[None]] | None = None,
        on_finished: Callable[[], None] | None = None,
    ) -> EditOutcome:
        """Submit, poll and download one edit. Call failures are returned as ``EditOutcome.error``.

        ``on_sending(compact_body)`` is awaited just before the submit is sent, with the body in
        :func:`~evalkit.providers.history.compact_body` form, so the caller can record what was sent: an
        unknown outcome is later recognised among the account's predictions (:meth:`list_predictions`).
        ``on_finished()`` is called (at most once, synchronously) as soon as the task is seen completed or
        failed, before the output is downloaded."""
        prepared = self.prepare(request)
        key = self._key()
        call = _Call(request.model.id, prepared, on_finished=on_finished)
        deadline = asyncio.get_running_loop().time() + self.poll.timeout_s
        try:
            refs = await self._image_refs(call, prepared, key)
            body = materialise(prepared.params, prepared.images, prepared.mask, lambda img: refs[img.sha256])
            call.sync = bool(body.get("enable_sync_mode"))
            if on_sending is not None:
                try:
                    await on_sending(compact_body(body))
                except Exception as exc:  # noqa: BLE001 - not recorded: the call can still be sent; reconciling it is harder
                    call.hook_error = redact(f"on_sending: {type(exc).__name__}: {exc}", self._api_key)
                    log.warning("wavespeed: %s", call.hook_error)
            data = await self._submit(call, body, key)
            call.accepted_at = time.monotonic()
            call.prediction_id = data["id"]
            call.observe(str(data.get("status") or "created"), call.accepted_at)
            if on_submitted is not None:
                await self._notify(call, on_submitted)
            return await self._finish(call, request, key, deadline, first=data)
        except _Failed as failed:
            return self._finalise(call, failed.outcome)

    async def resume(self, request: EditRequest, prediction_id: str) -> EditOutcome:
        """Finish a job submitted earlier: poll and download only — never POSTs a new task."""
        if not isinstance(prediction_id, str) or not _ID_OK.match(prediction_id):
            raise InvalidInputError(
                f"{prediction_id!r} is not a WaveSpeed prediction id", hint="pass the id recorded at submit time"
            )
        prepared = self.prepare(request)
        key = self._key()
        call = _Call(request.model.id, prepared, prediction_id=prediction_id)
        call.accepted_at = None  # unknown: the queue time cannot be estimated for a resumed call
        deadline = asyncio.get_running_loop().time() + self.poll.timeout_s
        try:
            return await self._finish(call, request, key, deadline, first=None)
        except _Failed as failed:
            return self._finalise(call, failed.outcome)

    #: how many predictions one history page holds at most (reference wavespeed-models-2026.md §4)
    MAX_HISTORY_PAGE_SIZE = 100

    async def list_predictions(
        self,
        model: str,
        created_after: datetime,
        created_before: datetime,
        page: int = 1,
        page_size: int = 100,
        include_inputs: bool = True,
    ) -> HistoryPage:
        """One page of the account's recent predictions (kept 7 days, newest first): ``POST /api/v3/predictions``
        with ``page``, ``page_size`` (≤ 100), ``model`` (the endpoint path, e.g. ``wavespeed-ai/qwen-image/edit-plus``),
        ``created_after`` / ``created_before`` (ISO 8601) and ``include_inputs``.

        Free and idempotent, so retried like a poll (429, 5xx, transport errors, unreadable replies). Both
        documented shapes are read (``data: {page, total, items}`` and ``data: [items]``); items that cannot
        be read are counted in :attr:`HistoryPage.unreadable`, never dropped silently. Raises
        :class:`~evalkit.errors.ProviderError` when no page can be had (``bad_request`` when the endpoint is
        not offered: HTTP 404/405)."""
        if not isinstance(page, int) or isinstance(page, bool) or page < 1:
            raise InvalidInputError(f"page must be a whole number ≥ 1, got {page!r}")
        if (
            not isinstance(page_size, int)
            or isinstance(page_size, bool)
            or not 1 <= page_size <= self.MAX_HISTORY_PAGE_SIZE
        ):
            raise InvalidInputError(f"page_size must be within 1–{self.MAX_HISTORY_PAGE_SIZE}, got {page_size!r}")
        key = self._key()
        body = {
            "page": page,
            "page_size": page_size,
            "model": model,
            "created_after": _iso(created_after),
            "created_before": _iso(created_before),
            "include_inputs": bool(include_inputs),
        }
        url = f"{self.base_url}/api/v3/predictions"

        async def attempt() -> HistoryPage:
            try:
                resp = await self.client.post(url, json=body, headers=self._auth(key))
            except httpx.HTTPError as exc:
                raise error_for_transport(exc, service=SERVICE, what="history") from None
            if resp.status_code in (404, 405):
                raise ProviderError(
                    f"WaveSpeed does not offer the prediction history here (HTTP {resp.status_code})",
                    category=Category.BAD_REQUEST,
                    status_code=resp.status_code,
                    hint="unknown submits cannot be settled from the history; check them in the WaveSpeed dashboard",
                )
            if resp.status_code != 200:
                raise error_for_response(resp, service=SERVICE, what="history", secrets=[key], key_env=KEY_ENV)
            envelope = json_or_none(resp)
            env_code = envelope.get("code") if isinstance(envelope, dict) else None
            if isinstance(env_code, int) and not isinstance(env_code, bool) and env_code >= 400:
                raise ProviderError(
                    f"WaveSpeed history answered code {env_code}: {server_message(resp, [key])}",
                    category=Category.AUTH if env_code in (401, 403) else Category.SERVER,
                    status_code=200,
                    code=env_code,
                    retryable=env_code == 429 or env_code >= 500,
                )
            parsed = parse_history_page(envelope, page)
            if parsed is None:
                raise ProviderError(
                    "WaveSpeed history returned "
                    + ("a reply that is not JSON" if envelope is None else "JSON without a list of predictions"),
                    category=Category.SERVER,
                    status_code=200,
                    retryable=True,
                )
            return parsed

        return await with_retries(
            attempt, policy=self.retry, what=f"wavespeed history page {page} of {model}", sleep=self._sleep, logger=log
        )

    async def aclose(self) -> None:
        if self._own_client and self._client is not None:
            await self._client.aclose()
            self._client = None

    async def __aenter__(self) -> WaveSpeedEditProvider:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ---- plumbing ---------------------------------------------------------------------------
    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = new_client(user_agent="evalkit (wavespeed provider)")
        return self._client

    def ensure_credentials(self) -> None:
        """Raise MissingKeyError now (before a run spends anything) when the key is not set."""
        self._key()

    def _key(self) -> Secret:
        if self._api_key is None:
            self._api_key = key_from_env(KEY_ENV, required=True, provider="WaveSpeed")
        assert self._api_key is not None  # required=True raises when the key is missing
        return self._api_key

    def _auth(self, key: Secret) -> dict[str, str]:
        return {"Authorization": f"Bearer {key.reveal()}", "Content-Type": "application/json"}

    def _fail(
        self,
        call: _Call,
        category: Category,
        message: str,
        *,
        detail: str | None = None,
        hint: str | None = None,
        **kw: Any,
    ) -> _Failed:
        kw.setdefault("prediction_id", call.prediction_id)
        return _Failed(
            EditOutcome.provider_failure(
                call.model_id,
                category,
                message,
                service="WaveSpeed",
                detail=detail,
                hint=hint,
                secrets=[self._api_key],
                **kw,
            )
        )

    def _fail_from(self, call: _Call, err: ProviderError, **kw: Any) -> _Failed:
        return self._fail(
            call,
            err.category,
            err.message,
            hint=err.hint,
            code=err.code,
            status_code=err.status_code,
            retryable=err.retryable,
            **kw,
        )

    def _finalise(self, call: _Call, outcome: EditOutcome) -> EditOutcome:
        """Fill the fields every outcome gets (latency, flags, metadata)."""
        call.latency.total_ms = (time.monotonic() - call.t0) * 1000
        if call.latency.queue_ms is None:
            call.latency.queue_ms = call.queue_ms()
        outcome.latency = call.latency
        outcome.prediction_id = outcome.prediction_id or call.prediction_id
        outcome.simulated = outcome.simulated or call.simulated
        outcome.input_resized = call.prepared.input_resized
        meta = {
            "model": call.prepared.endpoint,
            "params": call.prepared.public_params(),
            "notes": list(call.prepared.notes),
            "polls": call.polls,
        }
        if call.uploads:
            meta["uploaded_inputs"] = call.uploads
        if call.reused_urls:
            meta["inputs_by_url"] = call.reused_urls
        if call.hook_error:
            meta["on_submitted_error"] = call.hook_error
        if call.prepared.expected_size:
            meta["requested_size"] = list(call.prepared.expected_size)
        outcome.metadata = {**meta, **outcome.metadata}
        return outcome

    async def _notify(self, call: _Call, hook: SubmitHook) -> None:
        """Await the caller's hook; a failing hook must not lose an already paid task, so it is noted, not raised."""
        try:
            await hook(call.prediction_id)  # type: ignore[arg-type]
        except Exception as exc:  # noqa: BLE001  (the task is paid for: keep going, report it)
            call.hook_error = redact(f"{type(exc).__name__}: {exc}", self._api_key)
            log.warning(
                "wavespeed: on_submitted hook failed for prediction %s: %s", call.prediction_id, call.hook_error
            )

    # ---- inputs -----------------------------------------------------------------------------
    async def _image_refs(self, call: _Call, prepared: PreparedRequest, key: Secret) -> dict[str, str]:
        images = list(prepared.images) + ([prepared.mask] if prepared.mask is not None else [])
        refs: dict[str, str] = {}
        for img in images:
            if img.sha256 in refs:
                continue
            own = self._uploads.known(img.sha256)
            if own is not None and img is not prepared.mask:  # e.g. a session's next turn: its model's own output
                refs[img.sha256] = own
                call.reused_urls += 1
                continue
            if self.upload_threshold_bytes is not None and len(img.data) > self.upload_threshold_bytes:
                try:
                    refs[img.sha256] = await self._uploaded_url(img, key)
                except ProviderError as err:
                    raise self._fail_from(call, err) from None
                call.uploads += 1
            else:
                refs[img.sha256] = img.data_uri()
        return refs

    async def _uploaded_url(self, img: InputImage, key: Secret) -> str:
        """The media URL of ``img``: uploaded once per provider (concurrent callers share one upload)."""
        return await self._uploads.url(
            img.sha256,
            lambda: upload_media(
                self.client,
                self.base_url,
                img,
                key,
                headers=self._auth(key),
                retry=self.retry,
                sleep=self._sleep,
                service=SERVICE,
                key_env=KEY_ENV,
            ),
        )

    # ---- submit -----------------------------------------------------------------------------
    async def _submit(self, call: _Call, body: dict[str, Any], key: Secret) -> dict[str, Any]:
        """POST the task; returns its ``data`` (with a usable ``id``) once accepted, else raises _Failed."""
        url = f"{self.base_url}/api/v3/{call.prepared.endpoint}"
        sync = bool(body.get("enable_sync_mode"))
        timeout = self._sync_timeout if sync else self._submit_timeout
        attempt = 0
        while True:
            attempt += 1
            t = time.monotonic()
            try:
                resp = await self.client.post(url, json=body, headers=self._auth(key), timeout=timeout)
            except NOT_SENT_ERRORS as exc:
                err = error_for_transport(exc, service=SERVICE, what="submit")
                err.message += " — the request was not sent"
                await self._retry_submit_or_fail(call, err, attempt)
                continue
            except httpx.HTTPError as exc:
                read = isinstance(exc, httpx.ReadTimeout)
                raise self._fail(
                    call,
                    Category.UNKNOWN_OUTCOME,
                    f"WaveSpeed submit {'got no reply in time' if read else 'lost its connection'} "
                    "after the request was sent "
                    f"({type(exc).__name__}); the task may have been created and billed, so it was not sent again",
                    hint="check the WaveSpeed dashboard; run again with --resubmit-unknown only if it was not billed",
                    cost_usd=None,
                    cost_source="unknown",
                ) from None
            call.latency.submit_ms = (time.monotonic() - t) * 1000
            call.simulated = call.simulated or is_simulated(resp)
            envelope = json_or_none(resp)
            data = (
                envelope.get("data") if isinstance(envelope, dict) and isinstance(envelope.get("data"), dict) else None
            )
            pid = data.get("id") if data else None
            status = str(data.get("status") or "").lower() if data else ""
            has_id = isinstance(pid, str) and bool(_ID_OK.match(pid))
            code = resp.status_code
            if has_id and (code == 200 or (code >= 500 and status not in FAILED_STATUSES)):
                if code != 200:
                    log.warning(
                        "wavespeed: submit answered HTTP %d but carried prediction id %s; treating it as accepted",
                        code,
                        pid,
                    )
                return data  # type: ignore[return-value]
            if code == 200 and has_id is False and data is not None and pid is not None:
                raise self._fail(
                    call,
                    Category.UNKNOWN_OUTCOME,
                    f"WaveSpeed submit returned an unusable prediction id {str(pid)[:40]!r}; not re-sent",
                    cost_usd=None,
                    cost_source="unknown",
                )
            if code == 429 or (code == 503 and self.resend_submit_on_503):
                err = error_for_response(
                    resp, service=SERVICE, what="submit", secrets=[key], key_env=KEY_ENV, retryable=True
                )
                await self._retry_submit_or_fail(call, err, attempt)
                continue
            if code == 200:
                env_code = envelope.get("code") if isinstance(envelope, dict) else None
                if isinstance(env_code, int) and 400 <= env_code < 500:
                    # HTTP 200 carrying a 4xx envelope: the API refused the request (nothing was created)
                    cat = (
                        Category.BALANCE
                        if is_balance_refusal(env_code, server_message(resp, [key]))
                        else Category.AUTH
                        if env_code in (401, 403)
                        else Category.RATE_LIMIT
                        if env_code == 429
                        else Category.BAD_REQUEST
                    )
                    raise self._fail(
                        call,
                        cat,
                        f"WaveSpeed refused the submit (code {env_code}): {server_message(resp, [key])}",
                        status_code=code,
                        code=env_code,
                    )
                what = "a reply that is not JSON" if envelope is None else "a reply without a prediction id (data.id)"
                raise self._fail(
                    call,
                    Category.UNKNOWN_OUTCOME,
                    f"WaveSpeed submit got HTTP 200 with {what}; whether the task was created is unknown, "
                    "so it was not sent again",
                    hint="check the WaveSpeed dashboard before running it again",
                    status_code=code,
                    cost_usd=None,
                    cost_source="unknown",
                )
            if code >= 500:
                said = server_message(resp, [key])
                if status in FAILED_STATUSES:
                    raise self._fail(
                        call,
                        Category.SERVER,
                        f"WaveSpeed submit failed: HTTP {code}: {said or status}",
                        hint="a server-side problem; try again later",
                        status_code=code,
                        retryable=True,
                        code=data.get("code") if data else None,
                    )
                raise self._fail(
                    call,
                    Category.UNKNOWN_OUTCOME,
                    f"WaveSpeed submit answered HTTP {code}"
                    + (f" ({said})" if said else "")
                    + " after the request was sent; the task may have been created and billed, "
                    "so it was not sent again",
                    hint="check the WaveSpeed dashboard before running it again",
                    status_code=code,
                    cost_usd=None,
                    cost_source="unknown",
                )
            raise self._fail_from(
                call, error_for_response(resp, service=SERVICE, what="submit", secrets=[key], key_env=KEY_ENV)
            )

    async def _retry_submit_or_fail(self, call: _Call, err: ProviderError, attempt: int) -> None:
        """Wait before re-sending a submit that provably was not accepted, or give up."""
        if attempt >= self.retry.max_attempts:
            raise self._fail(
                call,
                err.category,
                f"{err.message} (after {attempt} attempts; nothing was created)",
                hint=err.hint,
                status_code=err.status_code,
                retryable=True,
            )
        delay = self.retry.backoff_s(attempt, err.retry_after_s)
        log.info(
            "wavespeed: submit to %s not accepted (%s); re-sending in %.2f s (attempt %d of %d)",
            call.prepared.endpoint,
            err.message,
            delay,
            attempt + 1,
            self.retry.max_attempts,
        )
        await self._sleep(delay)

    # ---- poll + download --------------------------------------------------------------------
    async def _finish(
        self, call: _Call, request: EditRequest, key: Secret, deadline: float, first: dict[str, Any] | None
    ) -> EditOutcome:
        try:
            async with asyncio.timeout_at(deadline):
                data = first
                if data is None or str(data.get("status") or "").lower() not in ("completed", *FAILED_STATUSES):
                    if data is not None and data.get("code") == SYNC_TIMEOUT_CODE:
                        log.info("wavespeed: sync mode timed out for %s; polling it", call.prediction_id)
                    data = await self._poll(call, key)
                return await self._outcome(call, request, data)
        except TimeoutError:
            raise self._fail(
                call,
                Category.TIMEOUT,
                f"no result for WaveSpeed prediction {call.prediction_id} within {self.poll.timeout_s:g} s; "
                "the task may still finish",
                hint=f"collect it later with resume(request, {call.prediction_id!r}) (`evalkit run --resume`); "
                "it was not re-submitted",
                retryable=True,
                cost_usd=None,
                cost_source="unknown",
                resumable=True,
            ) from None

    async def _poll(self, call: _Call, key: Secret) -> dict[str, Any]:
        try:
            return await self._poll_until_done(call, key)
        finally:
            if call.probe:
                self._end_probe(call.model_id)

    async def _poll_until_done(self, call: _Call, key: Secret) -> dict[str, Any]:
        url = f"{self.base_url}/api/v3/predictions/{quote(str(call.prediction_id), safe='')}/result"
        n = 0
        while True:
            if n == 0 and self._paced(call):
                await self._first_wait(call)
            else:
                await self._sleep(self._poll_delay_s(call, n))
            n += 1
            try:
                data = await with_retries(
                    lambda: self._get_result(call, url, key),
                    policy=self.retry,
                    what=f"wavespeed poll of {call.prediction_id}",
                    sleep=self._sleep,
                    logger=log,
                )
            except ProviderError as err:
                hint: str | None = (
                    f"the task was accepted; collect it later with resume(request, {call.prediction_id!r})"
                )
                if err.category == Category.AUTH:
                    hint = err.hint
                raise self._fail(
                    call,
                    err.category,
                    err.message,
                    hint=hint,
                    status_code=err.status_code,
                    retryable=err.retryable,
                    cost_usd=None,
                    cost_source="unknown",
                    resumable=err.category != Category.BAD_REQUEST,
                ) from None
            status = str(data.get("status") or "").lower()
            call.observe(status, time.monotonic())
            done = status == "completed" or status in FAILED_STATUSES
            if n == 1 and call.aimed and self.pacer is not None:
                self.pacer.first_poll(call.model_id, hit=done)
            if status in FAILED_STATUSES:
                self._wake_followers(call.model_id)  # nothing to time, but no reason to keep them waiting
            if done:
                return data

    def _paced(self, call: _Call) -> bool:
        """Whether this task's first poll is timed by the pacer (a new, polled task of an adaptive schedule)."""
        return (
            self.pacer is not None
            and call.accepted_at is not None
            and not call.sync
            and self.poll.first_delay_s is None
        )

    async def _first_wait(self, call: _Call) -> None:
        """Wait until the first poll of a new task: a probe's staggered moment or, for a follower of a model
        nobody has timed yet, until a probe has timed it; else the model's estimate plus the margin."""
        pacer, model, accepted_at = self.pacer, call.model_id, call.accepted_at
        assert pacer is not None and accepted_at is not None

        def waited() -> float:
            return time.monotonic() - accepted_at

        if pacer.probing(model):
            wave = self._first_wave.setdefault(model, _FirstWave())
            if wave.probing < pacer.config.probes:
                if wave.probing == 0 and wave.timed.is_set():
                    wave.timed = asyncio.Event()  # probing again: new followers wait for these probes
                wave.probing += 1
                wave.started += 1
                call.probe = True
                await self._sleep(max(0.0, pacer.probe_delay_s(wave.started - 1) - waited()))
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wave.timed.wait(), max(0.0, pacer.follower_wait_s(model) - waited()))
            call.aimed = pacer.samples(model) > 0
            await self._sleep(pacer.follower_delay_s(model, waited()))
            return
        call.aimed = pacer.samples(model) >= pacer.config.min_samples
        await self._sleep(max(0.0, pacer.first_delay_s(model) - waited()))

    def _end_probe(self, model: str) -> None:
        wave = self._first_wave[model]  # set up by the probe's _first_wait
        wave.probing -= 1
        if wave.probing <= 0:  # no probe left (they failed, or timed the model): followers stop waiting
            wave.timed.set()

    def _wake_followers(self, model: str) -> None:
        wave = self._first_wave.get(model)
        if wave is not None:
            wave.timed.set()

    def _poll_delay_s(self, call: _Call, n: int) -> float:
        """The wait before poll ``n``: the schedule's, except that the first poll of a newly accepted task
        waits the model's fastest reported inference when that is longer (PollSchedule.learn_first_delay).
        A resumed task (accepted earlier, maybe long done) is polled on the plain schedule."""
        scheduled = self.poll.delay_s(n)
        if self.pacer is not None and call.accepted_at is not None and self.poll.first_delay_s is None:
            if n == 0:
                return self.pacer.first_delay_s(call.model_id)
            return self.pacer.next_delay_s(time.monotonic() - call.accepted_at, call.model_id)
        if n or call.accepted_at is None or self.poll.first_delay_s is not None or not self.poll.learn_first_delay:
            return scheduled
        fastest = self._fastest_s.get(call.model_id)
        if fastest is None:
            return scheduled
        # at most half the call's timeout, so a task slower than that is still polled before the timeout
        return max(scheduled, min(fastest, self.poll.timeout_s / 2))

    def _learn(self, model_id: str, inference_ms: float | None, call: _Call | None = None) -> None:
        if self.pacer is not None and call is not None and call.accepted_at is not None and not call.sync:
            unfinished = call.last_unfinished_at - call.accepted_at if call.last_unfinished_at is not None else None
            self.pacer.observe(model_id, PollPacer.sample(inference_ms / 1000 if inference_ms else None, unfinished))
            if self.pacer.samples(model_id):
                self._wake_followers(model_id)
        if inference_ms is not None and inference_ms > 0:
            s = inference_ms / 1000
            if s < self._fastest_s.get(model_id, float("inf")):
                self._fastest_s[model_id] = s

    async def _get_result(self, call: _Call, url: str, key: Secret) -> dict[str, Any]:
        call.polls += 1
        try:
            resp = await self.client.get(url, headers=self._auth(key))
        except httpx.HTTPError as exc:
            raise error_for_transport(exc, service=SERVICE, what="poll", prediction_id=call.prediction_id) from None
        call.simulated = call.simulated or is_simulated(resp)
        if resp.status_code == 404:
            raise ProviderError(
                f"WaveSpeed has no prediction {call.prediction_id} "
                f"(HTTP 404: {server_message(resp, [key]) or 'not found'})",
                category=Category.BAD_REQUEST,
                status_code=404,
                retryable=False,
                hint="predictions are kept for 7 days; an older or foreign id cannot be collected",
            )
        if resp.status_code != 200:
            raise error_for_response(
                resp, service=SERVICE, what="poll", secrets=[key], key_env=KEY_ENV, prediction_id=call.prediction_id
            )
        envelope = json_or_none(resp)
        if envelope is None:
            raise ProviderError(
                f"WaveSpeed poll of {call.prediction_id} returned a reply that is not JSON "
                f"(content-type {resp.headers.get('content-type', 'none')!r})",
                category=Category.SERVER,
                retryable=True,
                status_code=200,
            )
        data = envelope.get("data") if isinstance(envelope, dict) else None
        if not isinstance(data, dict) and isinstance(envelope, dict) and "status" in envelope:
            data = envelope  # some proxies answer with the bare prediction
        if not isinstance(data, dict) or not isinstance(data.get("status"), str):
            raise ProviderError(
                f"WaveSpeed poll of {call.prediction_id} returned JSON without data.status (unexpected shape)",
                category=Category.SERVER,
                retryable=True,
                status_code=200,
            )
        return data

    async def _outcome(self, call: _Call, request: EditRequest, data: dict[str, Any]) -> EditOutcome:
        status = str(data.get("status") or "").lower()
        if call.on_finished is not None:
            call.on_finished()  # completed or failed: the task no longer runs on WaveSpeed
            await asyncio.sleep(0)  # let the call that takes the freed slot submit before this output downloads
        raw_timings = data.get("timings")
        timings: dict[str, Any] = raw_timings if isinstance(raw_timings, dict) else {}
        inference = timings.get("inference", data.get("executionTime"))
        if isinstance(inference, (int, float)) and not isinstance(inference, bool) and inference > 0:
            call.latency.inference_ms = float(inference)
        raw_flags = data.get("has_nsfw_contents")
        nsfw_flags: list[Any] = raw_flags if isinstance(raw_flags, list) else []
        meta: dict[str, Any] = {"status": status, "server_model": data.get("model"), "timings": timings or None}
        if data.get("created_at"):
            meta["created_at"] = str(data["created_at"])[:40]
        if status in FAILED_STATUSES:
            code = data.get("code")
            error_text = str(data.get("error") or "")
            cat = category_for_task(code, status, error_text)
            meta["task_code"] = code
            raise self._fail(
                call,
                cat,
                f"WaveSpeed task {call.prediction_id} {status}" + (f" (code {code})" if code else ""),
                detail=error_text,
                hint=_task_hint(cat),
                code=code,
                retryable=cat in (Category.SERVER,),
                cost_usd=0.0,
                content_filtered=cat == Category.MODERATION,
                metadata=meta,
            )
        self._learn(call.model_id, call.latency.inference_ms, call)
        price = call.prepared.price_usd
        source = "quoted" if call.prepared.price_source == "quoted" else "list_price"
        paid: dict[str, Any] = {"cost_usd": price, "cost_source": source if price is not None else "unknown"}
        raw_outputs = data.get("outputs")
        outputs: list[Any] = raw_outputs if isinstance(raw_outputs, list) else []
        first = outputs[0] if outputs else None
        if isinstance(first, dict):
            first = next((first[k] for k in ("url", "image_url", "output") if isinstance(first.get(k), str)), None)
        if not isinstance(first, str) or not first.strip():
            raise self._fail(
                call,
                Category.BAD_OUTPUT,
                f"WaveSpeed task {call.prediction_id} completed without a usable output",
                hint="run the call again",
                metadata=meta,
                **paid,
            )
        t = time.monotonic()
        try:
            image = await self._fetch_output(call, request, first.strip())
        except ProviderError as err:
            call.latency.download_ms = (time.monotonic() - t) * 1000
            # the task completed (and was billed); a transient download failure can be collected again by resume()
            transient = err.retryable or err.category in (
                Category.SERVER,
                Category.NETWORK,
                Category.TIMEOUT,
                Category.RATE_LIMIT,
            )
            raise self._fail_from(call, err, metadata=meta, resumable=transient, **paid) from None
        call.latency.download_ms = (time.monotonic() - t) * 1000
        call.simulated = call.simulated or image.simulated
        if first.strip().lower().startswith(("http://", "https://")):
            self._uploads.remember(image.sha256, first.strip())  # a next turn editing it sends this URL
        if len(outputs) > 1:
            meta["extra_outputs_ignored"] = len(outputs) - 1
        return self._finalise(
            call,
            image.outcome(
                call.model_id,
                nsfw=any(bool(f) for f in nsfw_flags),
                prediction_id=call.prediction_id,
                metadata=meta,
                **paid,
            ),
        )

    async def _fetch_output(self, call: _Call, request: EditRequest, output: str) -> DownloadedImage:
        if output.lower().startswith(("http://", "https://")):
            return await with_retries(
                lambda: download_image(
                    self.client,
                    output,
                    service=SERVICE,
                    max_bytes=self.max_download_bytes,
                    spool_dir=request.spool_dir,
                    prediction_id=call.prediction_id,
                ),
                policy=self.retry,
                what=f"wavespeed download for {call.prediction_id}",
                sleep=self._sleep,
                logger=log,
            )
        data = decode_base64_output(output, what="WaveSpeed output", max_bytes=self.max_download_bytes)
        return await image_from_bytes(data, what="WaveSpeed base64 output", max_bytes=self.max_download_bytes)


def _iso(t: datetime) -> str:
    """ISO 8601 in UTC with a ``Z`` (naive datetimes are taken as UTC)."""
    t = t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _task_hint(cat: Category) -> str:
    return {
        Category.MODERATION: "the input or prompt was blocked by content moderation; change the case",
        Category.BAD_REQUEST: (
            "the model rejected the request (missing/invalid parameter or unreachable input); "
            "fix the case or the catalogue entry"
        ),
        Category.SERVER: "a WaveSpeed-side failure; running the call again may succeed",
        Category.CANCELLED: "the task was cancelled on the WaveSpeed side",
    }.get(cat, "the model could not complete this edit; running it again may or may not help")
