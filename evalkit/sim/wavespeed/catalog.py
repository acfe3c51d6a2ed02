"""The WaveSpeed simulator's catalogue endpoints, and catalogue drift for tests and the demo.

* ``GET /api/v3/models`` lists every served model in the documented shape, each request schema generated
  from its catalogue entry (:func:`evalkit.catalog.schema.listed_model`) — every other model in the
  ``api_schema.api_schemas[].request_schema`` location, the rest in ``api_schema.components.schemas.Request``,
  so a client must read both — plus a few non-edit models (text-to-video, text-to-image, image-to-video)
  that a catalogue sync must leave out.
* ``POST /api/v3/model/pricing`` ``{"model_id", "inputs"}`` → ``data.unit_price``: the price the sim
  **bills** for a task with those inputs (:meth:`SimCatalog.unit_price`), so a quote equals the bill.

Drift (:class:`CatalogDrift`; ``SimConfig.catalog_drift``, or ``GET|POST|DELETE /_sim/catalog`` from a
loopback client) makes the served catalogue differ from evalkit's, as the real provider's does over time:

* ``prices`` — model id or endpoint → USD per request (quoted *and* billed, whatever the parameters);
* ``added`` — catalogue ``[[model]]`` tables (dicts) served as models evalkit does not know: listed,
  priced and accepted like any other (``type`` image-to-image);
* ``removed`` — model ids or endpoints no longer listed (their submits answer 404);
* ``failing_quotes`` — model ids or endpoints whose pricing request answers HTTP 500;
* ``price_seed`` — an integer: every model's catalogue price is billed (and quoted) with an offset of its
  own, between −30 % and +30 % (never 0), drawn from the seed and the model id (:func:`price_offset`), so a
  test can tell a recorded list price from the billed one (``prices`` still wins for the models it names).

Without drift the list and prices are exactly the catalogue's. Nothing here is a fact about WaveSpeed:
the responses are SIMULATED like every other response of this server.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any

from evalkit.catalog.schema import listed_model
from evalkit.catalog.spec import ModelSpec, parse_model
from evalkit.errors import CatalogError, InvalidInputError

#: listed, never served: what a catalogue sync must leave out
NON_EDIT_MODELS: tuple[dict[str, Any], ...] = (
    {
        "model_id": "wavespeed-ai/hunyuan-video/t2v",
        "name": "wavespeed-ai/hunyuan-video/t2v",
        "base_price": 0.4,
        "description": "The advanced text-to-video model (SIMULATED listing)",
        "type": "text-to-video",
        "api_schema": {
            "api_schemas": [
                {
                    "type": "model_run",
                    "method": "POST",
                    "api_path": "/api/v3/wavespeed-ai/hunyuan-video/t2v",
                    "request_schema": {
                        "properties": {
                            "prompt": {"type": "string"},
                            "size": {"default": "1280*720", "enum": ["1280*720", "720*1280"], "type": "string"},
                            "seed": {"default": -1, "type": "integer"},
                            "num_inference_steps": {"default": 30, "minimum": 2, "maximum": 30, "type": "integer"},
                        },
                        "required": ["prompt"],
                    },
                }
            ]
        },
    },
    {
        "model_id": "wavespeed-ai/flux-dev",
        "name": "wavespeed-ai/flux-dev",
        "base_price": 0.012,
        "description": "Text-to-image (SIMULATED listing)",
        "type": "text-to-image",
        "api_schema": {"api_schemas": []},
    },
    {
        "model_id": "kwaivgi/kling-v2.1-i2v-pro",
        "name": "kwaivgi/kling-v2.1-i2v-pro",
        "base_price": 0.45,
        "description": "Image-to-video (SIMULATED listing)",
        "type": "image-to-video",
    },
)
NON_EDIT_PRICES = {m["model_id"]: float(m["base_price"]) for m in NON_EDIT_MODELS}


@dataclass
class CatalogDrift:
    prices: dict[str, float] = field(default_factory=dict)
    added: list[dict[str, Any]] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    failing_quotes: list[str] = field(default_factory=list)
    price_seed: int | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> CatalogDrift:
        d = dict(d or {})
        unknown = set(d) - {"prices", "added", "removed", "failing_quotes", "price_seed"}
        if unknown:
            raise InvalidInputError(
                f"unknown drift key(s) {sorted(unknown)}: use prices, added, removed, failing_quotes, price_seed"
            )
        seed = d.get("price_seed")
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
            raise InvalidInputError("drift price_seed must be an integer (or null)")
        prices = d.get("prices") or {}
        if not isinstance(prices, dict) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in prices.values()
        ):
            raise InvalidInputError("drift prices must map model ids/endpoints to non-negative USD")
        for key in ("added", "removed", "failing_quotes"):
            if not isinstance(d.get(key, []), list):
                raise InvalidInputError(f"drift {key} must be a list")
        return cls(
            prices={str(k): float(v) for k, v in prices.items()},
            added=[dict(a) for a in d.get("added") or []],
            removed=[str(r) for r in d.get("removed") or []],
            failing_quotes=[str(r) for r in d.get("failing_quotes") or []],
            price_seed=seed,
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def price_offset(seed: int, model_id: str) -> float:
    """The factor a ``price_seed`` drift bills ``model_id`` at: 0.70–0.95 or 1.05–1.30, fixed by seed and id."""
    digest = hashlib.sha256(f"{seed}:{model_id}".encode()).digest()
    size = 0.05 + 0.25 * int.from_bytes(digest[:4], "big") / 2**32
    return 1.0 + size if digest[4] % 2 else 1.0 - size


def _named(spec: ModelSpec, names: list[str] | dict[str, Any]) -> bool:
    return spec.id in names or spec.endpoint in names


class SimCatalog:
    """The models the simulator serves (evalkit's catalogue with drift applied) and their prices."""

    def __init__(self, base: dict[str, ModelSpec], drift: CatalogDrift | None = None):
        self._base = dict(base)
        self.set_drift(drift or CatalogDrift())

    def set_drift(self, drift: CatalogDrift) -> None:
        added: dict[str, ModelSpec] = {}
        for raw in drift.added:
            try:
                spec = parse_model({"provider": "wavespeed", **raw}, "simulated drift")
            except CatalogError as exc:
                raise InvalidInputError(f"drift: added model is not a valid catalogue entry: {exc.message}") from None
            added[spec.endpoint] = spec
        models = {ep: m for ep, m in self._base.items() if not _named(m, drift.removed)}
        models.update(added)
        self.drift = drift
        self.models = models
        self.added_endpoints = set(added)

    def unit_price(self, spec: ModelSpec, inputs: dict[str, Any]) -> float:
        """USD per request for ``inputs``: the drifted price, else the catalogue rule (else its reserve)."""
        for key in (spec.endpoint, spec.id):
            if key in self.drift.prices:
                return self.drift.prices[key]
        price = spec.price_usd(inputs)
        if price is None:
            try:
                price = spec.reserve_usd(inputs)
            except InvalidInputError:
                price = 0.0
        if self.drift.price_seed is not None:
            price = float(price) * price_offset(self.drift.price_seed, spec.id)
        return round(float(price), 10)

    def models_payload(self, server: str) -> dict[str, Any]:
        data = []
        for i, (_endpoint, spec) in enumerate(sorted(self.models.items())):
            base = self.unit_price(spec, dict(spec.size_params(1024, 1024)[0]))
            data.append(
                listed_model(
                    spec,
                    base_price=base,
                    location="components" if i % 2 else "api_schemas",
                    server=server,
                )
            )
        data += [dict(m) for m in NON_EDIT_MODELS]
        return {"code": 200, "message": "success", "data": data}

    def pricing(self, body: Any) -> tuple[int, dict[str, Any]]:
        """(HTTP status, reply) of ``POST /api/v3/model/pricing``."""
        if not isinstance(body, dict) or not isinstance(body.get("model_id"), str):
            return 400, {"code": 400, "message": 'body must be {"model_id": "...", "inputs": {...}}'}
        mid = body["model_id"].strip().strip("/")
        raw_inputs = body.get("inputs")
        inputs: dict[str, Any] = raw_inputs if isinstance(raw_inputs, dict) else {}
        spec = self.models.get(mid) or next((m for m in self.models.values() if m.id == mid), None)
        if mid in self.drift.failing_quotes or (spec is not None and _named(spec, self.drift.failing_quotes)):
            return 500, {"code": 500, "message": "pricing temporarily unavailable (simulated failure)"}
        if spec is None and mid in NON_EDIT_PRICES:
            price = NON_EDIT_PRICES[mid]
        elif spec is None:
            return 404, {"code": 404, "message": f"model {mid!r} not found"}
        else:
            price = self.unit_price(spec, inputs)
        return 200, {
            "code": 200,
            "message": "success",
            "data": {"model_id": mid, "unit_price": price, "currency": "USD"},
        }


__all__ = ["NON_EDIT_MODELS", "CatalogDrift", "SimCatalog"]
