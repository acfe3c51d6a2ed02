"""Hugging Face Inference Providers behind the :class:`~evalkit.providers.base.ImageEditProvider` protocol.

Calls go through ``huggingface_hub``'s ``AsyncInferenceClient.image_to_image`` (checked against
huggingface_hub 2.4.0): the catalogue entry's ``endpoint`` is the Hub model id and
``defaults.inference_provider`` the Inference Provider that serves it (fal-ai, replicate, wavespeed, …).
With ``endpoint_url`` (or ``$HF_INFERENCE_ENDPOINT``) every call goes to
``<endpoint_url>/models/<hub model id>`` instead — or to the URL with ``{model}`` substituted — in the
hf-inference wire format, with no Hub lookup: that is how the local simulator (and a dedicated
Inference Endpoint) is reached.

Things to know:

* **Not resumable.** A call is one synchronous HTTP exchange with no job id. If evalkit crashes (or
  times out) while it is in flight, the outcome — and any charge — is unknown; the runner records it
  as ``unknown_outcome`` and does not re-send it on its own. ``resume`` therefore only reports that.
* **Cost is never guessed.** Hugging Face reports no per-request cost to the client, so every outcome
  has ``cost_usd = None`` and ``cost_source = "unknown"``; budgets hold the entry's ``reserve_usd``.
* **Retries**: 429 (Retry-After) and 503 (model loading, ``estimated_time``) prove the call was not
  run, so they are retried with backoff; so is a connection that never opened. Nothing else is.
* **402** ("out of Inference Providers credit") is reported with category ``insufficient_balance``: it is
  account-level and every later call fails the same way until credit is added, so a run stops submitting
  and leaves the untried calls planned. (``budget`` is evalkit's own spending cap and is not used for it.)
* huggingface_hub's ``image_to_image`` returns only a decoded PIL image, so the client subclass below
  also records the HTTP response (headers, and the image bytes when the answer is an image) for the
  calling task; without it the output is re-encoded as PNG and the simulator flag is lost.
"""

from __future__ import annotations

import asyncio
import contextvars
import io
import json
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

import httpx2
from huggingface_hub import AsyncInferenceClient
from huggingface_hub.errors import HfHubHTTPError, InferenceTimeoutError
from huggingface_hub.utils import get_async_session

from evalkit.credentials import Secret, key_from_env
from evalkit.errors import Category, ProviderError
from evalkit.providers.base import (
    NO_CAPABILITIES,
    EditOutcome,
    EditRequest,
    Latency,
    PreparedRequest,
    ProviderCapabilities,
    SubmitHook,
)
from evalkit.providers.http import SIMULATED_HEADER, image_from_bytes
from evalkit.providers.prepare import prepare_json_request
from evalkit.providers.retry import RetryPolicy, parse_retry_after

try:  # warms huggingface_hub's (lru-cached, blocking) Hub lookup in a thread instead of the event loop
    from huggingface_hub.inference._providers._common import _fetch_inference_provider_mapping
except ImportError:  # pragma: no cover - a future huggingface_hub without it: the lookup runs inline
    _fetch_inference_provider_mapping = None  # type: ignore[assignment]

KEY_ENV = "HF_TOKEN"
ENDPOINT_ENV = "HF_INFERENCE_ENDPOINT"
#: where routed calls go when no endpoint_url is set (huggingface_hub builds the full URL)
ROUTER_URL = "https://router.huggingface.co"
#: the catalogue ``defaults`` key naming the Inference Provider (a route, never sent as a parameter)
PROVIDER_PARAM = "inference_provider"
MAX_CAPTURE_BYTES = 64 * 1024 * 1024

log = logging.getLogger(__name__)


@dataclass
class _Capture:
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None


_CAPTURE: contextvars.ContextVar[_Capture | None] = contextvars.ContextVar("evalkit_hf_capture", default=None)


async def _record_response(response: httpx2.Response) -> None:
    """httpx response hook: keep the answer's headers (and image bytes) for the task that made the call."""
    capture = _CAPTURE.get()
    if capture is None:
        return
    capture.status = response.status_code
    capture.headers = {k.lower(): v for k, v in response.headers.items()}
    declared = int(response.headers.get("content-length") or 0)
    if (
        response.status_code == 200
        and response.headers.get("content-type", "").startswith("image/")
        and 0 < declared <= MAX_CAPTURE_BYTES
    ):
        capture.body = await response.aread()


class _RecordingInferenceClient(AsyncInferenceClient):
    """AsyncInferenceClient whose HTTP session also runs :func:`_record_response` (see the module doc)."""

    async def _get_async_client(self):  # overrides a private method of huggingface_hub 2.4.0
        if self._async_client is None:
            session = get_async_session()
            session.event_hooks["response"].append(_record_response)
            self._async_client = await self.exit_stack.enter_async_context(session)
        return self._async_client


class HuggingFaceEditProvider:
    """Image-to-image through Hugging Face Inference Providers (or an hf-inference-format URL)."""

    name = "huggingface"
    #: nothing optional: a call is one synchronous exchange with no job id (not resumable, see above)
    capabilities: ProviderCapabilities = NO_CAPABILITIES

    def __init__(
        self,
        *,
        token: Secret | str | None = None,
        endpoint_url: str | None = None,
        timeout_s: float = 300.0,
        retry: RetryPolicy | None = None,
        bill_to: str | None = None,
    ) -> None:
        self._token = Secret(token, KEY_ENV) if isinstance(token, str) else token
        self.endpoint_url = (endpoint_url or os.environ.get(ENDPOINT_ENV) or "").rstrip("/") or None
        self.timeout_s = timeout_s
        self.retry = retry or RetryPolicy()
        self.bill_to = bill_to
        self._clients: dict[str, _RecordingInferenceClient] = {}

    def __repr__(self) -> str:
        return f"HuggingFaceEditProvider(endpoint_url={self.endpoint_url!r})"

    @property
    def base_url(self) -> str:
        """Where calls go: the endpoint override, else Hugging Face's router (the runner reads this)."""
        return self.endpoint_url or ROUTER_URL

    def prepare(self, request: EditRequest) -> PreparedRequest:
        return prepare_json_request(request)

    async def edit(self, request: EditRequest, *, on_submitted: SubmitHook | None = None) -> EditOutcome:
        """One image_to_image call (``on_submitted`` is never called: there is no job id)."""
        prepared = self.prepare(request)
        token = self._api_token()
        params = dict(prepared.params)
        inference_provider = params.pop(PROVIDER_PARAM, None)
        params.pop(request.model.inputs.param, None)
        prompt = params.pop("prompt", None)
        if self.endpoint_url:
            model, route = self._url_for(prepared.endpoint), "hf-inference"
        else:
            model, route = prepared.endpoint, inference_provider or "auto"
        started = time.perf_counter()
        meta: dict[str, Any] = {"hub_model": prepared.endpoint, "route": route, "notes": list(prepared.notes)}
        if self.endpoint_url:
            meta["endpoint_url"] = model
        waits: list[float] = []
        outcome = await self._call(prepared, token, route, model, prompt, params, waits)
        latency = Latency(total_ms=(time.perf_counter() - started) * 1000)
        outcome.latency = latency
        outcome.cost_usd, outcome.cost_source = None, "unknown"
        outcome.metadata = {**meta, **outcome.metadata, "attempts": len(waits) + 1}
        if waits:
            outcome.metadata["retry_waits_s"] = waits
        return outcome

    async def resume(self, request: EditRequest, prediction_id: str) -> EditOutcome:
        """Hugging Face calls have no job id: an interrupted call cannot be finished, only reported."""
        return EditOutcome.provider_failure(
            request.model.id,
            Category.UNKNOWN_OUTCOME,
            "Hugging Face calls are synchronous and have no job id: an interrupted call cannot be resumed; "
            "whether it ran (and was billed) is unknown",
            service="Hugging Face",
            hint="evalkit does not re-send it on its own; re-run the case explicitly if you accept paying twice",
            cost_usd=None,
            prediction_id=prediction_id,
        )

    async def aclose(self) -> None:
        clients, self._clients = self._clients, {}
        for client in clients.values():
            await client.close()

    def ensure_credentials(self) -> None:
        """Raise MissingKeyError now (before a run spends anything) when the token is not set."""
        self._api_token()

    # ---- internals ---------------------------------------------------------------------------
    def _api_token(self) -> Secret:
        if self._token is None:
            self._token = key_from_env(KEY_ENV, provider="huggingface")
        assert self._token is not None  # key_from_env raises when the key is required and missing
        return self._token

    def _url_for(self, hub_model: str) -> str:
        base = self.endpoint_url or ""
        return base.replace("{model}", hub_model) if "{model}" in base else f"{base}/models/{hub_model}"

    def _client(self, route: str, token: Secret) -> _RecordingInferenceClient:
        client = self._clients.get(route)
        if client is None:
            client = _RecordingInferenceClient(
                provider=route,  # type: ignore[arg-type]  # a route name from the catalogue, checked by the Hub
                token=token.reveal(),
                timeout=self.timeout_s,
                bill_to=self.bill_to,
            )
            self._clients[route] = client
        return client

    async def _attempt(
        self,
        prepared: PreparedRequest,
        token: Secret,
        route: str,
        model: str,
        prompt: str | None,
        params: dict[str, Any],
    ) -> tuple[Any, _Capture]:
        """One image_to_image call; its HTTP answer is recorded by :func:`_record_response`."""
        capture = _Capture()
        reset = _CAPTURE.set(capture)
        try:
            if route not in ("hf-inference", "auto") and _fetch_inference_provider_mapping is not None:
                await asyncio.to_thread(_fetch_inference_provider_mapping, model)
            client = self._client(route, token)
            pil = await client.image_to_image(prepared.images[0].data, prompt=prompt, model=model, **params)
            return pil, capture
        finally:
            _CAPTURE.reset(reset)

    async def _call(
        self,
        prepared: PreparedRequest,
        token: Secret,
        route: str,
        model: str,
        prompt: str | None,
        params: dict[str, Any],
        waits: list[float],
    ) -> EditOutcome:
        """Attempts until success or a failure that retrying cannot fix (or that may have been billed)."""
        attempt = 0
        while True:
            attempt += 1
            last = attempt >= self.retry.max_attempts
            try:
                pil, capture = await self._attempt(prepared, token, route, model, prompt, params)
            except HfHubHTTPError as exc:
                status = exc.response.status_code if exc.response is not None else None
                body = _error_body(exc)
                if status not in (429, 503) or last:
                    return self._http_failure(prepared, status, body, exc)
                wait = self.retry.backoff_s(attempt, _server_wait_s(exc, body))
                log.info(
                    "huggingface %s: HTTP %s (attempt %d); retrying in %.2fs", prepared.model_id, status, attempt, wait
                )
            except InferenceTimeoutError as exc:
                never_sent = isinstance(exc.__cause__, (httpx2.ConnectTimeout, httpx2.PoolTimeout))
                if not never_sent or last:
                    return self._failure(
                        prepared,
                        Category.UNKNOWN_OUTCOME if not never_sent else Category.NETWORK,
                        f"no answer within {self.timeout_s:g}s ({type(exc.__cause__).__name__})"
                        + (
                            "; the edit may have run and been billed — evalkit does not re-send it"
                            if not never_sent
                            else ""
                        ),
                        retryable=never_sent,
                    )
                wait = self.retry.backoff_s(attempt)
            except httpx2.ConnectError as exc:
                if last:
                    return self._failure(
                        prepared,
                        Category.NETWORK,
                        f"could not connect ({type(exc).__name__}) after {attempt} attempts",
                        retryable=True,
                    )
                wait = self.retry.backoff_s(attempt)
            except httpx2.HTTPError as exc:
                return self._failure(
                    prepared,
                    Category.UNKNOWN_OUTCOME,
                    f"the connection failed after the request was sent ({type(exc).__name__}); "
                    "the edit may have run and been billed — evalkit does not re-send it",
                )
            except ValueError as exc:  # huggingface_hub's routing errors: no such provider/model/task mapping
                return self._failure(
                    prepared,
                    Category.BAD_REQUEST,
                    f"huggingface_hub refused the call: {exc}",
                    hint="check the catalogue entry's endpoint (Hub model id) and inference_provider",
                )
            except OSError as exc:  # the answer did not decode as an image (PIL)
                return self._failure(
                    prepared, Category.BAD_OUTPUT, f"the answer is not an image ({type(exc).__name__}: {exc})"
                )
            else:
                return await self._image_outcome(prepared, pil, capture)
            waits.append(round(wait, 3))
            await asyncio.sleep(wait)

    async def _image_outcome(self, prepared: PreparedRequest, pil: Any, capture: _Capture) -> EditOutcome:
        notes: list[str] = []
        data = capture.body
        simulated = capture.headers.get(SIMULATED_HEADER.lower(), "").strip() == "1"
        if data is None:
            data = await asyncio.to_thread(_png_bytes, pil)
            notes.append("huggingface_hub returned a decoded image; evalkit re-encoded it as PNG")
        try:
            img = await image_from_bytes(data, what="Hugging Face output", max_bytes=MAX_CAPTURE_BYTES)
        except ProviderError as exc:
            return self._failure(prepared, Category.BAD_OUTPUT, exc.message, simulated=simulated)
        return img.outcome(
            prepared.model_id,
            cost_usd=None,
            cost_source="unknown",
            input_resized=prepared.input_resized,
            simulated=simulated,
            metadata={"output_notes": notes} if notes else {},
        )

    def _http_failure(
        self, prepared: PreparedRequest, status: int | None, body: dict[str, Any], exc: HfHubHTTPError
    ) -> EditOutcome:
        detail = str(body.get("error") or getattr(exc, "server_message", "") or "")
        what = f"Hugging Face answered {status}"
        hint: str | None = None
        retryable = False
        if status == 402:
            category = Category.BALANCE
            what = "out of Inference Providers credit (402)"
            hint = "add credit or a billing method at https://huggingface.co/settings/billing, then re-run"
        elif status in (401, 403):
            category = Category.AUTH
            hint = (
                f"check {KEY_ENV} (it needs the 'Make calls to Inference Providers' permission; "
                "gated models need access)"
            )
        elif status == 429:
            category, retryable = Category.RATE_LIMIT, True
            hint = "lower the concurrency for huggingface"
        elif status == 503:
            category, retryable = Category.SERVER, True
            hint = "the model is loading or overloaded; try again later"
        elif status is not None and status >= 500:
            category = Category.SERVER
            hint = "not re-sent (the edit may have run)"
        elif status == 404:
            category = Category.BAD_REQUEST
            hint = "the model is not deployed at this URL / provider"
        else:
            category = Category.BAD_REQUEST
        simulated = exc.response is not None and exc.response.headers.get(SIMULATED_HEADER, "").strip() == "1"
        return self._failure(
            prepared,
            category,
            what,
            detail=detail,
            hint=hint,
            status_code=status,
            retryable=retryable,
            simulated=simulated,
        )

    def _failure(
        self,
        prepared: PreparedRequest,
        category: Category,
        message: str,
        *,
        detail: str | None = None,
        hint: str | None = None,
        simulated: bool = False,
        **kw: Any,
    ) -> EditOutcome:
        return EditOutcome.provider_failure(
            prepared.model_id,
            category,
            message,
            service="Hugging Face",
            detail=detail,
            hint=hint,
            secrets=[self._token],
            cost_usd=None,
            input_resized=prepared.input_resized,
            simulated=simulated,
            **kw,
        )


def _png_bytes(pil: Any) -> bytes:
    buf = io.BytesIO()
    pil.save(buf, format="PNG")
    return buf.getvalue()


def _error_body(exc: HfHubHTTPError) -> dict[str, Any]:
    try:
        body = json.loads(exc.response.content[:65536]) if exc.response is not None else None
    except (ValueError, httpx2.ResponseNotRead):
        return {}
    return body if isinstance(body, dict) else {}


def _server_wait_s(exc: HfHubHTTPError, body: dict[str, Any]) -> float | None:
    """How long the server asked us to wait: Retry-After, else a loading model's ``estimated_time``."""
    retry_after = parse_retry_after(exc.response.headers.get("retry-after")) if exc.response is not None else None
    if retry_after is not None:
        return retry_after
    estimated = body.get("estimated_time")
    return float(estimated) if isinstance(estimated, (int, float)) and estimated >= 0 else None
