"""WaveSpeed's own catalogue endpoints: the model list and the pricing API (client side).

* ``GET /api/v3/models`` → ``{"code":200,"data":[{model_id, name, base_price, description, type, api_schema}]}``;
  each model's request schema is at ``api_schema.api_schemas[].request_schema`` (the docs) or at
  ``api_schema.components.schemas.Request`` (an OpenAPI document, as the official desktop app reads it) —
  :func:`parse_models` reads both.
* ``POST /api/v3/model/pricing`` with ``{"model_id": …, "inputs": {…}}`` → ``data.unit_price`` (USD per
  request) for exactly those inputs. ``base_price`` in the list is only a floor; the pricing API is the
  figure to charge by.

Shapes: shared/reference/wavespeed-models-2026.md §4. Used by ``evalkit catalog sync``
(:mod:`evalkit.catalog.sync`) and by ``evalkit run --quote-prices`` (:func:`quote_requests`). The key comes
from ``$WAVESPEED_API_KEY`` and never appears in an error, log line or report.

This module is upstream of ``evalkit.providers`` (it imports only httpx, the catalogue and credentials).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from evalkit.credentials import Secret, key_from_env, redact
from evalkit.errors import Category, ProviderError

KEY_ENV = "WAVESPEED_API_KEY"
BASE_URL_ENV = "WAVESPEED_BASE_URL"
DEFAULT_BASE_URL = "https://api.wavespeed.ai"
SIMULATED_HEADER = "X-Evalkit-Simulated"

#: placeholders a pricing sample sends for images (the pricing API prices inputs; it needs no pixels)
SAMPLE_IMAGE_URL = "https://example.invalid/evalkit-sample-1024x1024.png"
SAMPLE_MASK_URL = "https://example.invalid/evalkit-sample-mask-1024x1024.png"
SAMPLE_PROMPT = "Change the sky to a warm sunset; keep everything else unchanged."


@dataclass(frozen=True)
class ListedModel:
    """One entry of ``GET /api/v3/models``."""

    model_id: str
    endpoint: str  # the path after /api/v3/
    type: str = ""
    name: str = ""
    base_price: float | None = None
    description: str = ""
    #: the JSON schema of the request body (``properties``, ``required``); {} when the list gives none
    request_schema: dict[str, Any] = field(default_factory=dict, repr=False)
    #: where the schema was found: "api_schemas" | "components" | ""
    schema_location: str = ""

    @property
    def properties(self) -> dict[str, Any]:
        props = self.request_schema.get("properties")
        return props if isinstance(props, dict) else {}

    @property
    def required(self) -> set[str]:
        req = self.request_schema.get("required")
        return {str(r) for r in req} if isinstance(req, list) else set()


def _endpoint_from_path(path: str) -> str:
    path = path.split("?", 1)[0].strip()
    for prefix in ("https://", "http://"):
        if path.startswith(prefix):
            path = "/" + path[len(prefix) :].split("/", 1)[-1]
    return path.removeprefix("/").removeprefix("api/v3/").strip("/")


def parse_models(payload: Any) -> list[ListedModel]:
    """The models of a ``GET /api/v3/models`` reply (both documented schema locations)."""
    data = payload.get("data") if isinstance(payload, dict) else payload
    if isinstance(data, dict) and isinstance(data.get("items"), list):
        data = data["items"]
    if not isinstance(data, list):
        raise ProviderError(
            "WaveSpeed model list: the reply has no 'data' list",
            category=Category.BAD_OUTPUT,
            hint="check the base URL (it must be the API root, without /api/v3)",
        )
    out: list[ListedModel] = []
    for item in data:
        if not isinstance(item, dict) or not isinstance(item.get("model_id"), str):
            continue
        mid = item["model_id"].strip()
        raw_api = item.get("api_schema")
        api: dict[str, Any] = raw_api if isinstance(raw_api, dict) else {}
        schema: dict[str, Any] = {}
        location, endpoint = "", ""
        for s in api.get("api_schemas") or []:
            if not isinstance(s, dict):
                continue
            if s.get("type") not in (None, "model_run") or not isinstance(s.get("request_schema"), dict):
                continue
            schema, location = s["request_schema"], "api_schemas"
            if isinstance(s.get("api_path"), str):
                endpoint = _endpoint_from_path(s["api_path"])
            break
        if not schema:
            comp = ((api.get("components") or {}).get("schemas") or {}).get("Request")
            if isinstance(comp, dict):
                schema, location = comp, "components"
            for path in api.get("paths") or {}:
                if isinstance(path, str) and "/predictions" not in path:
                    endpoint = _endpoint_from_path(path)
                    break
        price = item.get("base_price")
        out.append(
            ListedModel(
                model_id=mid,
                endpoint=endpoint or mid,
                type=str(item.get("type") or ""),
                name=str(item.get("name") or mid),
                base_price=float(price) if isinstance(price, (int, float)) and not isinstance(price, bool) else None,
                description=str(item.get("description") or "")[:500],
                request_schema=schema,
                schema_location=location,
            )
        )
    return out


class WaveSpeedCatalogClient:
    """A small synchronous client for the model list and the pricing API."""

    def __init__(
        self,
        *,
        base_url: str | None = None,
        api_key: Secret | None = None,
        client: httpx.Client | None = None,
        timeout_s: float = 30.0,
    ):
        self.base_url = (base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL).rstrip("/")
        self._key = api_key
        self._client = client or httpx.Client(timeout=httpx.Timeout(timeout_s, connect=10.0))
        self._own_client = client is None
        #: True once any reply carried the simulator's header (a local server, not WaveSpeed)
        self.simulated = False

    def __repr__(self) -> str:
        return f"WaveSpeedCatalogClient(base_url={self.base_url!r})"

    def close(self) -> None:
        if self._own_client:
            self._client.close()

    def __enter__(self) -> WaveSpeedCatalogClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _headers(self) -> dict[str, str]:
        if self._key is None:
            self._key = key_from_env(KEY_ENV, provider="wavespeed")
        assert self._key is not None
        return {"Authorization": f"Bearer {self._key.reveal()}", "Accept": "application/json"}

    def _request(self, method: str, path: str, body: Any = None) -> Any:
        url = f"{self.base_url}/api/v3/{path}"
        try:
            r = self._client.request(method, url, headers=self._headers(), json=body)
        except httpx.HTTPError as exc:
            raise ProviderError(
                f"WaveSpeed {method} /api/v3/{path}: {type(exc).__name__}: {redact(str(exc), self._key)}",
                category=Category.NETWORK,
                hint="check the network and $WAVESPEED_BASE_URL",
                retryable=True,
            ) from None
        if r.headers.get(SIMULATED_HEADER, "").strip() == "1":
            self.simulated = True
        try:
            payload = r.json()
        except ValueError:
            payload = None
        message = ""
        if isinstance(payload, dict):
            message = redact(str(payload.get("message") or payload.get("error") or ""), self._key)[:300]
        if r.status_code in (401, 403):
            raise ProviderError(
                f"WaveSpeed {method} /api/v3/{path}: {r.status_code} {message}".strip(),
                category=Category.AUTH,
                status_code=r.status_code,
                hint="check $WAVESPEED_API_KEY",
            )
        if r.status_code >= 400 or payload is None:
            cat = Category.SERVER if r.status_code >= 500 else Category.BAD_REQUEST
            if payload is None and r.status_code < 400:
                cat = Category.BAD_OUTPUT
            raise ProviderError(
                f"WaveSpeed {method} /api/v3/{path}: HTTP {r.status_code} {message or '(no JSON reply)'}".strip(),
                category=cat,
                status_code=r.status_code,
                retryable=cat == Category.SERVER,
            )
        code = payload.get("code") if isinstance(payload, dict) else None
        if isinstance(code, int) and code >= 400:
            raise ProviderError(
                f"WaveSpeed {method} /api/v3/{path}: code {code} {message}".strip(),
                category=Category.SERVER if code >= 500 else Category.BAD_REQUEST,
                code=code,
            )
        return payload

    def list_models(self) -> list[ListedModel]:
        return parse_models(self._request("GET", "models"))

    def quote(self, model_id: str, inputs: Mapping[str, Any]) -> float:
        """USD per request for exactly ``inputs`` (``POST /api/v3/model/pricing``)."""
        payload = self._request("POST", "model/pricing", {"model_id": model_id, "inputs": dict(inputs)})
        data = payload.get("data") if isinstance(payload, dict) else None
        price = data.get("unit_price") if isinstance(data, dict) else None
        if isinstance(price, bool) or not isinstance(price, (int, float)) or not math.isfinite(price) or price < 0:
            raise ProviderError(
                f"WaveSpeed pricing for {model_id}: no usable unit_price in the reply",
                category=Category.BAD_OUTPUT,
            )
        currency = data.get("currency") if isinstance(data, dict) else None
        if currency not in (None, "", "USD"):
            raise ProviderError(
                f"WaveSpeed pricing for {model_id}: price in {currency!r}, evalkit budgets in USD",
                category=Category.BAD_OUTPUT,
            )
        return float(price)


def pricing_inputs(params: Mapping[str, Any]) -> dict[str, Any]:
    """A prepared request's parameters as pricing inputs: image placeholders become sample URLs."""

    def sub(v: Any) -> Any:
        if isinstance(v, dict) and set(v) == {"$image"}:
            return SAMPLE_IMAGE_URL
        if isinstance(v, list):
            return [sub(x) for x in v]
        return v

    return {k: sub(v) for k, v in params.items() if k not in _NOT_PRICED}


#: transport flags: they change how the result is delivered, not what it costs
_NOT_PRICED = ("enable_sync_mode", "enable_base64_output")


def quote_key(model_id: str, params: Mapping[str, Any]) -> str:
    """Identity of a (model, parameters) pair for quoting: image bytes, prompt and seed do not change a price
    (the number of images does: the key keeps one placeholder per image)."""
    priced = {k: v for k, v in pricing_inputs(params).items() if k not in ("prompt", "negative_prompt", "seed")}
    return model_id + "|" + json.dumps(priced, sort_keys=True, default=str)


@dataclass
class Quote:
    """The pricing API's answer for one (model, parameters): ``usd``, or ``error`` when it failed."""

    model_id: str
    params: dict[str, Any]
    usd: float | None
    error: str = ""


def quote_requests(
    client: WaveSpeedCatalogClient, requests: Iterable[tuple[str, str, Mapping[str, Any]]]
) -> dict[str, Quote]:
    """Quote each distinct ``(model_id, endpoint, params)`` once; keys are :func:`quote_key`.

    A failed quote is kept as ``Quote(usd=None, error=…)`` (the caller falls back to the catalogue).
    """
    out: dict[str, Quote] = {}
    for model_id, endpoint, params in requests:
        key = quote_key(model_id, params)
        if key in out:
            continue
        try:
            usd: float | None = client.quote(endpoint, pricing_inputs(params))
            error = ""
        except ProviderError as exc:
            usd, error = None, exc.message
        out[key] = Quote(model_id, dict(params), usd, error)
    return out


__all__ = [
    "ListedModel",
    "Quote",
    "WaveSpeedCatalogClient",
    "parse_models",
    "pricing_inputs",
    "quote_key",
    "quote_requests",
]
