"""Stability AI v2beta edit endpoints behind the :class:`~evalkit.providers.base.ImageEditProvider` protocol.

Wire format (shared/reference/ecosystem.md §4): ``POST {base}/v2beta/{endpoint}`` with
``authorization: Bearer <STABILITY_API_KEY>``, a multipart/form-data body and ``accept: image/*``; the
answer is the image itself, with ``finish-reason`` (``SUCCESS`` | ``CONTENT_FILTERED``) and ``seed`` as
response headers. replace-background-and-relight is asynchronous: its POST answers ``{"id"}``, which is
handed to ``on_submitted`` *before* ``GET /v2beta/results/{id}`` is polled (202 = running, 200 = image);
:meth:`StabilityEditProvider.resume` polls an id without submitting again.

Money rules:

* a POST is re-sent only when the answer proves nothing was generated: a 429, or a connection that
  never opened. A 500, a read timeout or a dropped connection after sending is never re-sent;
* Stability says failed generations are not charged, so a failure costs 0 — except when the outcome
  is unknown (timeout after sending, lost connection, a job that did not finish in time): ``None``;
* a success costs the catalogue's credits × USD per credit (``cost_source = "list_price"``), including
  a ``CONTENT_FILTERED`` answer (a 200 with a filtered image, assumed billed).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import quote

import httpx

from evalkit.catalog.spec import normalise_operation
from evalkit.credentials import Secret, key_from_env
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
from evalkit.providers.http import (
    NOT_SENT_ERRORS,
    SIMULATED_HEADER,
    decode_base64_output,
    image_from_bytes,
    new_client,
)
from evalkit.providers.prepare import fingerprint, prepare_json_request
from evalkit.providers.retry import RetryPolicy, parse_retry_after

DEFAULT_BASE_URL = "https://api.stability.ai"
KEY_ENV = "STABILITY_API_KEY"
BASE_URL_ENV = "STABILITY_BASE_URL"
#: Stability: "Rate-limiting or other errors may occur if you poll more than once every 10 seconds."
RESULT_POLL_INTERVAL_S = 10.0
MAX_OUTPUT_BYTES = 64 * 1024 * 1024
MAX_ERROR_BYTES = 64 * 1024
OUTPAINT_SIDES = ("left", "right", "up", "down")
#: multipart overhead allowance on top of the file bytes when checking the 10 MiB request limit
_FORM_OVERHEAD_BYTES = 16 * 1024

log = logging.getLogger(__name__)


@dataclass
class _Reply:
    status: int
    headers: httpx.Headers
    body: bytes
    headers_ms: float
    body_ms: float

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip().lower()

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            return None


class _OutputTooLarge(Exception):
    pass


class StabilityEditProvider:
    """Stability AI's v2beta edit endpoints. One instance holds one HTTP connection pool."""

    name = "stability"
    #: generations have ids: an interrupted call is collected with ``resume`` (results are kept for 24 h)
    capabilities: ProviderCapabilities = ProviderCapabilities(resumable=True)

    def __init__(
        self,
        *,
        api_key: Secret | str | None = None,
        base_url: str | None = None,
        timeout_s: float = 180.0,
        connect_timeout_s: float = 10.0,
        poll_interval_s: float | None = None,
        max_wait_s: float = 900.0,
        retry: RetryPolicy | None = None,
        max_output_bytes: int = MAX_OUTPUT_BYTES,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self._key = Secret(api_key, KEY_ENV) if isinstance(api_key, str) else api_key
        self.base_url = (base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL).rstrip("/")
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        # Stability asks for ≥ 10 s between polls; EVALKIT_STABILITY_POLL_S overrides it (e.g. for a local server)
        self.poll_interval_s = (
            poll_interval_s
            if poll_interval_s is not None
            else float(os.environ.get("EVALKIT_STABILITY_POLL_S") or RESULT_POLL_INTERVAL_S)
        )
        self.max_wait_s = max_wait_s
        self.retry = retry or RetryPolicy()
        self.max_output_bytes = max_output_bytes
        self._client = client

    def __repr__(self) -> str:
        return f"StabilityEditProvider(base_url={self.base_url!r})"

    # ---- prepare (pure) ----------------------------------------------------------------------
    def prepare(self, request: EditRequest) -> PreparedRequest:
        """Validate and resolve a request; adds outpaint margins and checks the 10 MiB request limit."""
        prepared = prepare_json_request(request)
        m = request.model
        op = normalise_operation(request.operation)
        params = dict(prepared.params)
        expected = prepared.expected_size
        if op == "zoom_out":
            margins = _outpaint_margins(request, prepared.images[0], params)
            params.update(margins)
            img = prepared.images[0]
            expected = (img.width + margins["left"] + margins["right"], img.height + margins["up"] + margins["down"])
        if (
            op in ("erase", "inpaint")
            and m.mask is not None
            and prepared.mask is None
            and not _has_alpha(prepared.images[0])
        ):
            raise InvalidInputError(
                f"{m.id} needs a mask (white = region to {op}) or an input image whose transparent pixels mark it",
                hint="pass mask=… (a PNG the size of the image)",
            )
        size = sum(len(i.data) for i in prepared.images) + (len(prepared.mask.data) if prepared.mask else 0)
        limit = m.limits.max_request_bytes
        if limit and size + _FORM_OVERHEAD_BYTES > limit:
            raise InvalidInputError(
                f"{m.id}: the images add up to {size / 2**20:.1f} MiB; "
                f"Stability refuses requests over {limit / 2**20:.0f} MiB",
                hint="downscale the input or re-encode it as JPEG",
            )
        return replace(
            prepared,
            params=params,
            expected_size=expected,
            fingerprint=fingerprint(m, params, prepared.images, prepared.mask, request.sample_index),
        )

    # ---- calls -------------------------------------------------------------------------------
    async def edit(self, request: EditRequest, *, on_submitted: SubmitHook | None = None) -> EditOutcome:
        """Submit one edit; failures of the call are returned, bad input / a missing key raised.

        For an asynchronous endpoint ``on_submitted(id)`` is awaited before the first poll; if it raises,
        the exception propagates and the job keeps running on Stability's side — :meth:`resume` it.
        """
        prepared = self.prepare(request)
        key = self._api_key()
        started = time.perf_counter()
        latency = Latency()
        data, files = _multipart(prepared)
        url = f"{self.base_url}/v2beta/{prepared.endpoint}"
        waits: list[float] = []
        sent = await self._submit(url, key, data, files, prepared, waits)
        if isinstance(sent, EditOutcome):
            return self._finish(sent, request, latency, started, waits)
        reply = sent
        latency.submit_ms = reply.headers_ms
        if reply.status != 200:
            return self._finish(self._http_failure(prepared, reply, polling=False), request, latency, started, waits)
        if reply.content_type.startswith("image/"):
            latency.download_ms = reply.body_ms
            return self._finish(
                await self._image_outcome(prepared, reply.body, reply.headers), request, latency, started, waits
            )
        body = reply.json()
        if isinstance(body, dict) and isinstance(body.get("image"), str):
            return self._finish(
                await self._image_outcome(prepared, body["image"], reply.headers, body),
                request,
                latency,
                started,
                waits,
            )
        if isinstance(body, dict) and body.get("id"):
            generation_id = str(body["id"])
            if on_submitted is not None:
                await on_submitted(generation_id)
            outcome = await self._poll(prepared, key, generation_id, latency)
            return self._finish(outcome, request, latency, started, waits)
        return self._finish(
            self._failure(
                prepared,
                Category.BAD_OUTPUT,
                f"Stability answered 200 with neither an image nor a job id "
                f"(content-type {reply.content_type or 'none'})",
                cost_usd=None,
                status_code=200,
            ),
            request,
            latency,
            started,
            waits,
        )

    async def resume(self, request: EditRequest, prediction_id: str) -> EditOutcome:
        """Finish an asynchronous job (relight) by polling its id; never submits or pays again."""
        prepared = self.prepare(request)
        key = self._api_key()
        started = time.perf_counter()
        latency = Latency()
        outcome = await self._poll(prepared, key, prediction_id, latency)
        return self._finish(outcome, request, latency, started, [])

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def ensure_credentials(self) -> None:
        """Raise MissingKeyError now (before a run spends anything) when the key is not set."""
        self._api_key()

    # ---- internals ---------------------------------------------------------------------------
    def _api_key(self) -> Secret:
        if self._key is None:
            self._key = key_from_env(KEY_ENV, provider="stability")
        assert self._key is not None  # key_from_env raises when the key is required and missing
        return self._key

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = new_client(
                timeout=httpx.Timeout(self.timeout_s, connect=self.connect_timeout_s),
                user_agent="evalkit (stability provider)",
            )
        return self._client

    async def _send(
        self,
        method: str,
        url: str,
        key: Secret,
        *,
        data: dict[str, str] | None = None,
        files: dict[str, tuple[str, bytes, str]] | None = None,
    ) -> _Reply:
        """One HTTP exchange with the body read under a cap (errors: 64 KiB, truncated; images: raise)."""
        headers = {"authorization": f"Bearer {key.reveal()}", "accept": "image/*", "stability-client-id": "evalkit"}
        t0 = time.perf_counter()
        async with self._http().stream(method, url, headers=headers, data=data, files=files) as resp:
            t1 = time.perf_counter()
            cap = self.max_output_bytes if resp.status_code < 400 else MAX_ERROR_BYTES
            chunks, n = [], 0
            async for chunk in resp.aiter_bytes():
                n += len(chunk)
                if n > cap:
                    if resp.status_code >= 400:
                        break
                    raise _OutputTooLarge(f"the response passed {cap / 2**20:.0f} MiB; evalkit stopped reading it")
                chunks.append(chunk)
            t2 = time.perf_counter()
            return _Reply(resp.status_code, resp.headers, b"".join(chunks), (t1 - t0) * 1000, (t2 - t1) * 1000)

    async def _submit(
        self,
        url: str,
        key: Secret,
        data: dict[str, str],
        files: dict[str, tuple[str, bytes, str]],
        prepared: PreparedRequest,
        waits: list[float],
    ) -> _Reply | EditOutcome:
        """POST with retries only where nothing can have been generated (429, connection never opened)."""
        attempt = 0
        while True:
            attempt += 1
            last = attempt >= self.retry.max_attempts
            try:
                reply = await self._send("POST", url, key, data=data, files=files)
            except NOT_SENT_ERRORS as exc:
                if last:
                    return self._failure(
                        prepared,
                        Category.NETWORK,
                        f"could not connect to {self.base_url} after {attempt} attempts ({type(exc).__name__})",
                        retryable=True,
                    )
                wait = self.retry.backoff_s(attempt)
            except httpx.TimeoutException as exc:
                return self._unknown(
                    prepared,
                    f"no answer from Stability within the timeout ({type(exc).__name__}) after the request was sent",
                )
            except _OutputTooLarge as exc:
                return self._failure(
                    prepared, Category.BAD_OUTPUT, str(exc), cost_usd=prepared.price_usd, status_code=200
                )
            except httpx.HTTPError as exc:
                return self._unknown(
                    prepared, f"the connection to Stability failed after the request was sent ({type(exc).__name__})"
                )
            else:
                if reply.status != 429 or last:
                    return reply
                wait = self.retry.backoff_s(attempt, parse_retry_after(reply.headers.get("retry-after")))
            log.info("stability %s: attempt %d not accepted; retrying in %.2fs", prepared.model_id, attempt, wait)
            waits.append(round(wait, 3))
            await asyncio.sleep(wait)

    async def _poll(self, prepared: PreparedRequest, key: Secret, generation_id: str, latency: Latency) -> EditOutcome:
        """Poll GET /v2beta/results/{id} every ``poll_interval_s`` until 200, an error, or ``max_wait_s``."""
        url = f"{self.base_url}/v2beta/results/{quote(generation_id, safe='')}"
        deadline = time.monotonic() + self.max_wait_s
        transient = 0
        wait = self.poll_interval_s
        while True:
            if time.monotonic() + wait > deadline:
                return self._failure(
                    prepared,
                    Category.TIMEOUT,
                    f"job {generation_id} still running after {self.max_wait_s:g}s; "
                    "it may still finish (and be charged)",
                    retryable=True,
                    cost_usd=None,
                    prediction_id=generation_id,
                    resumable=True,
                    hint="resume it later: results are kept for 24 h",
                )
            await asyncio.sleep(wait)
            wait = self.poll_interval_s
            try:
                reply = await self._send("GET", url, key)
            except _OutputTooLarge as exc:
                return self._failure(
                    prepared,
                    Category.BAD_OUTPUT,
                    str(exc),
                    cost_usd=prepared.price_usd,
                    status_code=200,
                    prediction_id=generation_id,
                )
            except httpx.HTTPError as exc:  # a GET is safe to repeat
                transient += 1
                if transient >= self.retry.max_attempts:
                    return self._failure(
                        prepared,
                        Category.NETWORK,
                        f"polling job {generation_id} failed {transient} times ({type(exc).__name__})",
                        retryable=True,
                        cost_usd=None,
                        prediction_id=generation_id,
                        resumable=True,
                    )
                continue
            if reply.status == 202:
                continue
            if reply.status == 200:
                latency.download_ms = reply.body_ms
                body = reply.json() if not reply.content_type.startswith("image/") else None
                if isinstance(body, dict) and isinstance(body.get("image"), str):
                    return await self._image_outcome(prepared, body["image"], reply.headers, body, generation_id)
                return await self._image_outcome(prepared, reply.body, reply.headers, None, generation_id)
            if reply.status == 429 or reply.status >= 500:
                transient += 1
                if transient < self.retry.max_attempts:
                    retry_after = parse_retry_after(reply.headers.get("retry-after"))
                    wait = max(self.poll_interval_s, self.retry.backoff_s(transient, retry_after))
                    continue
            return self._http_failure(prepared, reply, polling=True, prediction_id=generation_id)

    # ---- outcomes ----------------------------------------------------------------------------
    async def _image_outcome(
        self,
        prepared: PreparedRequest,
        data: bytes | str,
        headers: httpx.Headers,
        body: dict[str, Any] | None = None,
        prediction_id: str | None = None,
    ) -> EditOutcome:
        """An ok outcome for image bytes (or the base64 of a JSON answer) that decode; else BAD_OUTPUT."""
        simulated = headers.get(SIMULATED_HEADER, "").strip() == "1"
        try:
            if isinstance(data, str):
                data = decode_base64_output(data, what="Stability output", max_bytes=self.max_output_bytes)
            img = await image_from_bytes(data, what="Stability output", max_bytes=self.max_output_bytes)
        except ProviderError as exc:  # answered 200, so the generation was billed even if unusable
            return self._failure(
                prepared,
                Category.BAD_OUTPUT,
                exc.message,
                cost_usd=prepared.price_usd,
                status_code=200,
                prediction_id=prediction_id,
                simulated=simulated,
            )
        finish = str((body or {}).get("finish_reason") or headers.get("finish-reason") or "SUCCESS").upper()
        seed = (body or {}).get("seed", headers.get("seed"))
        filtered = finish == "CONTENT_FILTERED"
        metadata: dict[str, Any] = {
            "finish_reason": finish,
            "seed": int(seed) if str(seed or "").isdigit() else None,
            "endpoint": prepared.endpoint,
            "notes": list(prepared.notes),
        }
        if filtered:
            metadata["content_filter"] = (
                "Stability answered finish-reason CONTENT_FILTERED: its moderation filtered "
                "(blurred) the output; it is kept but is not a real edit. Billed as a success."
            )
        return img.outcome(
            prepared.model_id,
            cost_usd=prepared.price_usd,
            cost_source="list_price",
            prediction_id=prediction_id,
            content_filtered=filtered,
            input_resized=prepared.input_resized,
            simulated=simulated,
            metadata=metadata,
        )

    def _http_failure(
        self, prepared: PreparedRequest, reply: _Reply, *, polling: bool, prediction_id: str | None = None
    ) -> EditOutcome:
        status = reply.status
        name, detail = _error_detail(reply)
        what = f"Stability answered {status}" + (f" ({name})" if name else "")
        # on a POST nothing was generated for any of these, so nothing was charged; on a poll, a
        # refused GET says nothing about whether the job ran: cost unknown.
        cost: float | None = None if polling else 0.0
        hint: str | None = None
        retryable = False
        if status in (400, 413, 422):
            category = Category.BAD_REQUEST
            hint = (
                "request over 10 MiB: downscale the input or use JPEG"
                if status == 413
                else "check the case's parameters"
            )
        elif status == 401:
            category, hint = Category.AUTH, f"check {KEY_ENV}"
        elif status == 402:
            category = Category.BALANCE
            hint = "the Stability account has no credits left: top up, then `evalkit run --resume RUN_ID`"
        elif status == 403:
            category = Category.MODERATION
            hint = None if "not charged" in detail else "content moderation; you were not charged"
            cost = 0.0
        elif status == 404 and polling:
            category = Category.TASK_FAILED
            hint = "results are kept for 24 h and only for the key that created the job"
        elif status == 429:
            category, retryable = Category.RATE_LIMIT, True
            hint = "Stability allows 150 requests per 10 s; lower the concurrency"
        elif status >= 500:
            category = Category.SERVER
            if not polling:
                hint = "not re-sent (a paid submit); Stability does not charge failed generations"
        else:
            category = Category.BAD_REQUEST
        if polling and prediction_id:
            what = f"job {prediction_id}: {what}"
        # an accepted job whose result polls keep failing (429/5xx) can still be collected: never re-POST it
        resumable = bool(polling and prediction_id and (status == 429 or status >= 500))
        return self._failure(
            prepared,
            category,
            what,
            detail=detail,
            status_code=status,
            code=name or None,
            retryable=retryable,
            cost_usd=cost,
            prediction_id=prediction_id,
            hint=hint,
            resumable=resumable,
            simulated=reply.headers.get(SIMULATED_HEADER, "").strip() == "1",
        )

    def _unknown(self, prepared: PreparedRequest, message: str) -> EditOutcome:
        return self._failure(
            prepared,
            Category.UNKNOWN_OUTCOME,
            f"{message}; the edit may have been generated and charged — evalkit does not re-send it",
            cost_usd=None,
        )

    def _failure(
        self,
        prepared: PreparedRequest,
        category: Category,
        message: str,
        *,
        detail: str | None = None,
        hint: str | None = None,
        cost_usd: float | None = 0.0,
        simulated: bool = False,
        **kw: Any,
    ) -> EditOutcome:
        outcome = EditOutcome.provider_failure(
            prepared.model_id,
            category,
            message,
            service="Stability",
            detail=detail,
            hint=hint,
            secrets=[self._key],
            cost_usd=cost_usd,
            input_resized=prepared.input_resized,
            simulated=simulated,
            **kw,
        )
        outcome.cost_source = "unknown" if cost_usd is None else "list_price"
        outcome.metadata = {"endpoint": prepared.endpoint, "notes": list(prepared.notes)}
        return outcome

    @staticmethod
    def _finish(
        outcome: EditOutcome, request: EditRequest, latency: Latency, started: float, waits: list[float]
    ) -> EditOutcome:
        latency.total_ms = (time.perf_counter() - started) * 1000
        outcome.latency = latency
        if outcome.ok:
            outcome.metadata["credits"] = request.model.price.credits
        if waits:
            outcome.metadata["retry_waits_s"] = list(waits)
        return outcome


# ---- pure helpers ------------------------------------------------------------------------------


def _multipart(prepared: PreparedRequest) -> tuple[dict[str, str], dict[str, tuple[str, bytes, str]]]:
    """Form fields and files: ``{"$image": sha}`` placeholders become file parts, the rest text."""
    by_sha = {i.sha256: i for i in prepared.images}
    if prepared.mask is not None:
        by_sha[prepared.mask.sha256] = prepared.mask
    data: dict[str, str] = {}
    files: dict[str, tuple[str, bytes, str]] = {}
    for name, value in prepared.params.items():
        if isinstance(value, dict) and set(value) == {"$image"}:
            img = by_sha[value["$image"]]
            files[name] = (f"{name}.{img.format}", img.data, img.mime)
        elif isinstance(value, bool):
            data[name] = "true" if value else "false"
        elif value is not None:
            data[name] = str(value)
    return data, files


def _outpaint_margins(request: EditRequest, image: InputImage, params: dict[str, Any]) -> dict[str, int]:
    """left/right/up/down: from the case's target size (split evenly), or as given in options.extra."""
    given = {s: int(params[s]) for s in OUTPAINT_SIDES if s in params}
    o = request.options
    mid = request.model.id
    if o.width is not None and o.height is not None:  # an explicit target size
        if given:
            raise InvalidInputError(f"{mid}: give either a target size (width/height) or left/right/up/down, not both")
        src = request.images[0]
        scale = image.width / src.width  # the input may have been downscaled to fit the limits
        target_w, target_h = round(o.width * scale), round(o.height * scale)
        if target_w < image.width or target_h < image.height:
            raise InvalidInputError(
                f"{mid}: zoom_out target {o.width}×{o.height} is smaller than the input {src.width}×{src.height}",
                hint="the target size must be at least the input size on both sides",
            )
        dx, dy = target_w - image.width, target_h - image.height
        margins = {"left": dx // 2, "right": dx - dx // 2, "up": dy // 2, "down": dy - dy // 2}
    else:
        margins = {s: given.get(s, 0) for s in OUTPAINT_SIDES}
    if not any(margins.values()):
        raise InvalidInputError(
            f"{mid}: zoom_out needs a target size larger than the input",
            hint="set the case's width/height, or pass left/right/up/down (px) in options.extra",
        )
    for side, px in margins.items():  # each side 0–2000 px (catalogue params.<side>.max)
        spec = request.model.params.get(side)
        if spec is not None and spec.max is not None and px > spec.max:
            raise InvalidInputError(
                f"{mid}: zoom_out needs {px} px on the {side} side; Stability allows at most {spec.max:g} px per side",
                hint="ask for a smaller target size (or a smaller input), at most that many pixels added per side",
            )
    return margins


def _has_alpha(image: InputImage) -> bool:
    if image.mode not in ("RGBA", "LA", "PA"):
        return False
    low = image.to_pil().getchannel("A").getextrema()[0]
    assert isinstance(low, (int, float))  # one band
    return low < 255


def _error_detail(reply: _Reply) -> tuple[str, str]:
    """The error's name and what the server said (redacted and cut by :meth:`EditOutcome.provider_failure`)."""
    body = reply.json()
    if isinstance(body, dict):
        errors = body.get("errors")
        detail = "; ".join(map(str, errors)) if isinstance(errors, list) else str(body.get("message") or "")
        return str(body.get("name") or ""), detail
    return "", reply.body[:300].decode("utf-8", "replace").strip()
