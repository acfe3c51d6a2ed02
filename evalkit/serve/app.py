"""``evalkit serve``: the Image Studio edit endpoint and the model selector page, driven by tier_defaults.json.

Routes (names as in the original app)
-------------------------------------
``POST /api/image-studio/edit/process``
    JSON ``{image_base64 (str or list), prompt, operation, tier | model, options, user_id}`` or a multipart
    form (``image`` file field(s), the same names as text fields, ``options`` as JSON text) →
    ``{image_base64, mime, model, tier, cost_usd, latency_ms, fallbacks, simulated, …}``. Without
    ``tier`` and ``model`` the server's default tier is used. ``model`` must be one the tier defaults
    list for the operation (an endpoint for an app, not a way to call any model at any price).
``GET /api/image-studio/edit/models[?tier=…]``
    per tier and operation: default, alternatives, price, p95 latency, quality with interval, evidence,
    the run the decision came from and the order in which models would be tried.
``GET /``
    the model selector page (static HTML/JS/CSS from ``evalkit/serve/static``; no build step).

Security
--------
* Provider keys stay in this process's environment; responses and the page carry no key (error texts
  go through :func:`evalkit.credentials.redact` once more before they leave).
* Loopback by default. Binding anything else needs ``EVALKIT_SERVE_TOKEN`` (``serve()`` refuses to
  start without it); when a token is set, every ``/api/`` request needs ``Authorization: Bearer …``.
* Without a token only loopback ``Host`` headers are accepted (a web page on another site cannot reach
  the server through DNS rebinding).
* Caps: request body (``max_body_bytes``), each decoded image (``max_image_bytes``, ``max_image_pixels``),
  and a per-client sliding-window rate limit on edits (``edits_per_minute``).
* Errors are JSON ``{"error": {"category", "message"}}`` — never a traceback.

The tier file is re-read when it changes (mtime/size/inode checked on each request), so a scheduled
run that writes a new ``tier_defaults.json`` (atomically, as ``write_tier_defaults`` does) takes effect
without a restart. A file that fails to load while a good one is in memory leaves the good one in use
and is reported in ``/models``' ``warnings``.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import math
import os
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from evalkit.catalog import Catalog, normalise_operation
from evalkit.credentials import redact
from evalkit.decide.routing import (
    TierDefaults,
    TierDefaultsError,
    alternative_eligibility,
    load_tier_defaults,
    plan_route,
)
from evalkit.errors import Category, EvalkitError, ImageError, InvalidInputError
from evalkit.images import InputImage, load_image
from evalkit.providers.http import is_loopback_host

log = logging.getLogger("evalkit.serve")

STATIC_DIR = Path(__file__).with_name("static")
TOKEN_ENV = "EVALKIT_SERVE_TOKEN"
EDIT_PATH = "/api/image-studio/edit/process"
MODELS_PATH = "/api/image-studio/edit/models"

#: HTTP status for each error category (client-side problems 4xx, upstream problems 5xx)
STATUS_FOR = {
    Category.INVALID_INPUT: 400,
    Category.BAD_REQUEST: 400,
    Category.MODERATION: 422,
    Category.RATE_LIMIT: 429,
    Category.BUDGET: 402,
    Category.AUTH: 502,
    Category.SERVER: 502,
    Category.NETWORK: 502,
    Category.TASK_FAILED: 502,
    Category.BAD_OUTPUT: 502,
    Category.UNKNOWN_OUTCOME: 502,
    Category.TIMEOUT: 504,
    Category.CANCELLED: 503,
}


def is_loopback(host: str) -> bool:
    """The server's loopback rule is the toolkit's one: :func:`evalkit.providers.http.is_loopback_host`."""
    return is_loopback_host(host)


@dataclass
class ServeConfig:
    tiers: Path
    workspace: Any = None
    provider_options: Mapping[str, Mapping[str, Any]] | None = None
    catalog: Catalog | None = None
    allow_simulated: bool = False
    allow_provisional: bool = False
    max_age_days: float | None = None
    continue_after_unknown: bool = False
    #: bearer token for /api/ (None: no token; then only loopback Host headers are accepted)
    token: str | None = None
    default_tier: str = "standard"
    max_body_bytes: int = int(os.environ.get("EVALKIT_SERVE_MAX_BODY_BYTES", 25 * 1024 * 1024))
    max_image_bytes: int = int(os.environ.get("EVALKIT_SERVE_MAX_IMAGE_BYTES", 15 * 1024 * 1024))
    max_image_pixels: int = int(os.environ.get("EVALKIT_SERVE_MAX_IMAGE_PIXELS", 4096 * 4096))
    max_images: int = 8
    edits_per_minute: int = int(os.environ.get("EVALKIT_SERVE_EDITS_PER_MINUTE", 30))
    #: extra Host header values accepted without a token (tests use "testserver")
    extra_hosts: tuple[str, ...] = ()
    clock: Any = field(default=time.monotonic, repr=False)


class ApiError(Exception):
    def __init__(self, status: int, category: str, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status, self.category, self.message, self.headers = status, category, message, dict(headers or {})


def error_response(status: int, category: str, message: str, headers: Mapping[str, str] | None = None) -> Response:
    body = {"error": {"category": str(category), "message": redact(message)}}
    return JSONResponse(body, status_code=status, headers=dict(headers or {}))


# ---- tier file, re-read on change ---------------------------------------------------------------------


class TierFile:
    """The tier defaults, re-read when the file changes (checked at most every ``min_check_s``)."""

    def __init__(self, path: Path, *, allow_simulated: bool, max_age_days: float | None, min_check_s: float = 0.0):
        self.path = Path(path)
        self.allow_simulated = allow_simulated
        self.max_age_days = max_age_days
        self.min_check_s = min_check_s
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._checked = 0.0
        self._current: TierDefaults | None = None
        self.reload_error: str | None = None
        self.loads = 0

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def get(self) -> TierDefaults:
        with self._lock:
            now = time.monotonic()
            if self._current is not None and now - self._checked < self.min_check_s:
                return self._current
            self._checked = now
            stamp = self._stat()
            if self._current is not None and stamp == self._stamp:
                return self._current
            try:
                loaded = load_tier_defaults(
                    self.path, allow_simulated=self.allow_simulated, max_age_days=self.max_age_days, warn=False
                )
            except EvalkitError as exc:
                if self._current is None:
                    raise
                self.reload_error = f"the changed tier file could not be used ({exc}); still serving run " + (
                    self._current.run_id or "?"
                )
                log.warning("evalkit serve: %s", self.reload_error)
                self._stamp = stamp
                return self._current
            if self._current is not None:
                log.info("evalkit serve: tier defaults re-read: run %s → %s", self._current.run_id, loaded.run_id)
            for w in loaded.warnings:
                log.warning("evalkit serve: %s", w)
            self._current, self._stamp, self.reload_error = loaded, stamp, None
            self.loads += 1
            return loaded


# ---- rate limit ---------------------------------------------------------------------------------------


class RateLimiter:
    """At most ``limit`` events per ``window_s`` per key (sliding window)."""

    def __init__(self, limit: int, window_s: float = 60.0, clock: Any = time.monotonic):
        self.limit, self.window_s, self.clock = limit, window_s, clock
        self._events: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def check(self, key: str) -> float | None:
        """None when allowed (and counted), else the seconds until the next event is allowed."""
        if self.limit <= 0:
            return None
        now = self.clock()
        with self._lock:
            q = self._events.setdefault(key, deque())
            while q and now - q[0] >= self.window_s:
                q.popleft()
            if len(q) >= self.limit:
                return max(0.0, self.window_s - (now - q[0]))
            q.append(now)
            if len(self._events) > 10_000:  # forget idle clients
                for k in [k for k, v in self._events.items() if not v or now - v[-1] >= self.window_s]:
                    del self._events[k]
            return None


# ---- middleware: host check, token, security headers, JSON errors ------------------------------------


class _Guard(BaseHTTPMiddleware):
    def __init__(self, app: Any, config: ServeConfig):
        super().__init__(app)
        self.config = config
        self.hosts = set(config.extra_hosts)  # besides every loopback name (is_loopback)

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        cfg = self.config
        if cfg.token is None:
            host = request.url.hostname or ""
            if host not in self.hosts and not is_loopback(host):
                return error_response(403, "forbidden", f"host {host!r} not accepted (loopback only without a token)")
        elif request.url.path.startswith("/api/"):
            auth = request.headers.get("authorization") or ""
            scheme, _, given = auth.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), cfg.token.encode()):
                return error_response(
                    401,
                    "unauthorized",
                    f"this server needs its token: send 'Authorization: Bearer <{TOKEN_ENV}>'",
                    {"WWW-Authenticate": "Bearer"},
                )
        try:
            response = await call_next(request)
        except Exception:  # noqa: BLE001  (never a traceback to the client)
            log.exception("evalkit serve: unhandled error on %s", request.url.path)
            response = error_response(500, "server", "internal error (see the server log)")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
            "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        )
        if request.url.path.startswith("/api/"):
            response.headers.setdefault("Cache-Control", "no-store")
        return response


# ---- request parsing ----------------------------------------------------------------------------------


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise ApiError(413, "too_large", f"request body of {int(declared):,} bytes > limit {limit:,}")
        except ValueError:
            raise ApiError(400, "invalid_input", "Content-Length is not a number") from None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "too_large", f"request body over the limit of {limit:,} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _decode_b64(value: Any, name: str, cfg: ServeConfig) -> bytes:
    if not isinstance(value, str) or not value.strip():
        raise ApiError(400, "invalid_input", f"{name} must be non-empty base64 text")
    s = value.strip()
    if s.startswith("data:"):
        s = s.split(",", 1)[1] if "," in s else ""
    s = "".join(s.split())
    if len(s) * 3 // 4 > cfg.max_image_bytes + 3:
        raise ApiError(413, "too_large", f"{name} is over the image limit of {cfg.max_image_bytes:,} bytes")
    try:
        return base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, "invalid_input", f"{name} is not valid base64 image data") from None


def _load(raw: bytes, name: str, cfg: ServeConfig) -> InputImage:
    if len(raw) > cfg.max_image_bytes:
        raise ApiError(413, "too_large", f"{name} is {len(raw):,} bytes > limit {cfg.max_image_bytes:,}")
    try:
        return load_image(raw, name=name, max_bytes=cfg.max_image_bytes, max_pixels=cfg.max_image_pixels)
    except ImageError as exc:
        raise ApiError(400, "invalid_input", f"{name}: {exc}") from None


async def _parse_edit(request: Request, cfg: ServeConfig) -> tuple[dict[str, Any], list[InputImage]]:
    body = await _read_body(request, cfg.max_body_bytes)
    ctype = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    images: list[InputImage] = []
    if ctype == "multipart/form-data":
        request._body = body  # noqa: SLF001  (the capped body is what starlette's form parser reads)
        try:
            form = await request.form(max_files=cfg.max_images, max_fields=20, max_part_size=cfg.max_body_bytes)
        except Exception as exc:  # noqa: BLE001  (multipart errors differ by starlette version)
            raise ApiError(400, "invalid_input", f"could not read the multipart form: {exc}") from None
        fields: dict[str, Any] = {}
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                if key != "image":
                    raise ApiError(400, "invalid_input", f"unexpected file field {key!r} (use 'image')")
                images.append(_load(await value.read(), value.filename or "image", cfg))
            else:
                fields[key] = value
        if "options" in fields:
            try:
                fields["options"] = json.loads(fields["options"]) if fields["options"] else None
            except json.JSONDecodeError:
                raise ApiError(400, "invalid_input", "options must be JSON text in a multipart form") from None
        data = fields
    elif ctype in ("application/json", ""):
        try:
            data = json.loads(body or b"null")
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ApiError(400, "invalid_input", "the body is not valid JSON") from None
        if not isinstance(data, dict):
            raise ApiError(400, "invalid_input", "the body must be a JSON object")
    else:
        raise ApiError(415, "invalid_input", f"unsupported content type {ctype!r} (use JSON or multipart/form-data)")
    b64 = data.get("image_base64")
    if b64 is not None:
        values = b64 if isinstance(b64, list) else [b64]
        if len(values) + len(images) > cfg.max_images:
            raise ApiError(400, "invalid_input", f"at most {cfg.max_images} images per edit")
        for i, v in enumerate(values):
            name = f"image_base64[{i}]" if len(values) > 1 else "image_base64"
            images.append(_load(_decode_b64(v, name, cfg), name, cfg))
    if not images:
        raise ApiError(400, "invalid_input", "no image: send image_base64 (JSON) or an 'image' file (multipart)")
    for key in ("prompt", "operation", "tier", "model", "user_id"):
        v = data.get(key)
        if v is not None and not isinstance(v, str):
            raise ApiError(400, "invalid_input", f"{key} must be a string")
        if isinstance(v, str) and key != "prompt" and len(v) > 200:
            raise ApiError(400, "invalid_input", f"{key} is too long")
    if data.get("options") is not None and not isinstance(data["options"], dict):
        raise ApiError(400, "invalid_input", 'options must be an object like {"width": 1024, "seed": 42}')
    return data, images


# ---- the models listing -------------------------------------------------------------------------------


def _age_days(generated_at: str | None) -> float | None:
    if not generated_at:
        return None
    try:
        t = datetime.fromisoformat(generated_at.replace("Z", "+00:00"))
    except ValueError:
        return None
    t = t if t.tzinfo else t.replace(tzinfo=UTC)
    return round((datetime.now(UTC) - t).total_seconds() / 86400, 3)


def _model_facts(catalog: Catalog, model: str) -> dict[str, Any]:
    if model not in catalog:
        return {"display_name": model, "vendor": None, "provider": None, "list_price_usd": None}
    spec = catalog.get(model)
    try:
        price = spec.price_for_1024()
    except Exception:  # noqa: BLE001  (a price rule that needs parameters: shown as unknown)
        price = None
    return {
        "display_name": spec.display_name,
        "vendor": spec.vendor,
        "provider": spec.provider,
        "list_price_usd": price,
    }


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def models_listing(defaults: TierDefaults, catalog: Catalog, tier: str | None, allow_provisional: bool) -> dict:
    tiers = defaults.tiers
    if tier is not None and tier not in tiers:
        raise ApiError(404, "invalid_input", f"no tier {tier!r}; tiers: {', '.join(tiers)}")
    out_tiers: dict[str, Any] = {}
    for name, entry in tiers.items():
        if tier is not None and name != tier:
            continue
        ops: dict[str, Any] = {}
        for op, d in (entry.get("operations") or {}).items():
            models = []
            head = d.get("default") or d.get("provisional")
            if head:
                models.append(
                    {
                        "model": head,
                        "role": "default" if d.get("default") else "provisional",
                        "eligibility": "eligible" if d.get("default") else "insufficient_evidence",
                        "cost_usd": _num(d.get("cost_usd")),
                        "latency_p95_ms": _num(d.get("latency_p95_ms")),
                        "quality": _num(d.get("quality")),
                        "quality_ci": list(d.get("quality_ci") or [None, None]),
                        "evidence": {
                            "n": d.get("n"),
                            "completed": d.get("completed"),
                            "success_rate": d.get("success_rate"),
                        },
                        "rationale": d.get("rationale"),
                        **_model_facts(catalog, head),
                    }
                )
            for alt in d.get("alternatives") or []:
                why = str(alt.get("rationale") or "")
                eligibility = alternative_eligibility(alt)
                models.append(
                    {
                        "model": alt.get("model"),
                        "role": "alternative",
                        "eligibility": eligibility,
                        "cost_usd": _num(alt.get("cost_usd")),
                        "latency_p95_ms": _num(alt.get("latency_p95_ms")),
                        "quality": _num(alt.get("quality")),
                        "quality_ci": list(alt.get("quality_ci") or [None, None]),
                        "evidence": {
                            "n": alt.get("n"),
                            "completed": alt.get("completed"),
                            "success_rate": alt.get("success_rate"),
                        },
                        "rationale": why,
                        **_model_facts(catalog, str(alt.get("model"))),
                    }
                )
            try:
                route = plan_route(defaults, name, op, allow_provisional=allow_provisional, catalog=catalog)
                order, route_error = route.models, None
            except TierDefaultsError as exc:
                order, route_error = [], str(exc)
            ops[op] = {
                "status": d.get("status"),
                "default": d.get("default"),
                "provisional": d.get("provisional"),
                "rationale": d.get("rationale"),
                "run_id": defaults.run_id,
                "fallback_order": order,
                "unavailable": route_error,
                "models": models,
            }
        out_tiers[name] = {
            "description": entry.get("description"),
            "constraints": entry.get("constraints") or {},
            "operations": ops,
        }
    return {
        "run_id": defaults.run_id,
        "generated_at": defaults.generated_at,
        "age_days": _age_days(defaults.generated_at),
        "simulated": defaults.simulated,
        "source": Path(defaults.source).name,
        "quality": defaults.data.get("quality"),
        "warnings": list(defaults.warnings),
        "tiers": out_tiers,
    }


def _offered_models(defaults: TierDefaults, operation: str) -> set[str]:
    out: set[str] = set()
    for entry in defaults.tiers.values():
        d = (entry.get("operations") or {}).get(operation) or {}
        out.update(m for m in (d.get("default"), d.get("provisional")) if m)
        out.update(a.get("model") for a in d.get("alternatives") or [] if a.get("model"))
    return out


# ---- the app ------------------------------------------------------------------------------------------


def create_app(config: ServeConfig) -> Starlette:
    """The ASGI app. Loads the tier file once now (a bad file fails here, before serving)."""
    from evalkit.edit import agenerate_image_edit

    tier_file = TierFile(config.tiers, allow_simulated=config.allow_simulated, max_age_days=config.max_age_days)
    tier_file.get()
    from evalkit.store import Workspace

    # one workspace (usage ledger) for the server's lifetime; False: no ledger
    workspace = (
        config.workspace
        if config.workspace is False or isinstance(config.workspace, Workspace)
        else Workspace(config.workspace)
    )
    catalog = config.catalog or Catalog.load(workspace.path if isinstance(workspace, Workspace) else None)
    limiter = RateLimiter(config.edits_per_minute, clock=config.clock)

    def current() -> TierDefaults:
        try:
            return tier_file.get()
        except EvalkitError as exc:
            raise ApiError(503, exc.category.value, str(exc)) from None

    async def index(request: Request) -> Response:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    async def models(request: Request) -> Response:
        defaults = current()
        body = models_listing(defaults, catalog, request.query_params.get("tier"), config.allow_provisional)
        if tier_file.reload_error:
            body["warnings"].append(tier_file.reload_error)
        body["default_tier"] = config.default_tier
        return JSONResponse(body)

    async def process(request: Request) -> Response:
        client = request.client.host if request.client else "?"
        wait = limiter.check(client)
        if wait is not None:
            raise ApiError(
                429,
                "rate_limit",
                f"too many edits from this client (limit {config.edits_per_minute} per minute); retry in {wait:.0f} s",
                {"Retry-After": str(max(1, math.ceil(wait)))},
            )
        data, images = await _parse_edit(request, config)
        defaults = current()
        try:
            operation = normalise_operation(data.get("operation") or "general_edit")
        except EvalkitError as exc:
            raise ApiError(400, "invalid_input", str(exc)) from None
        model = data.get("model") or None
        tier = data.get("tier") or (None if model else config.default_tier)
        if model and model not in _offered_models(defaults, operation):
            raise ApiError(
                400,
                "invalid_input",
                f"model {model!r} is not offered for {operation} by the tier defaults (run {defaults.run_id}); "
                "pick one listed by GET " + MODELS_PATH,
            )
        t0 = time.monotonic()
        result = await agenerate_image_edit(
            image=images,
            prompt=data.get("prompt"),
            operation=operation,
            model=model,
            options=data.get("options"),
            user_id=data.get("user_id"),
            tier=None if model else tier,
            tiers=defaults,
            allow_provisional=config.allow_provisional,
            allow_simulated=config.allow_simulated,
            continue_after_unknown=config.continue_after_unknown,
            workspace=workspace,
            catalog=catalog,
            provider_options=config.provider_options,
        )
        mime = f"image/{(result.format or 'png').lower().replace('jpg', 'jpeg')}"
        return JSONResponse(
            {
                "image_base64": base64.b64encode(result.image_bytes).decode("ascii"),
                "mime": mime,
                "model": result.model_id,
                "tier": result.tier,
                "operation": result.operation,
                "cost_usd": result.cost_usd,
                "latency_ms": round(result.latency.total_ms or (time.monotonic() - t0) * 1000, 1),
                "fallbacks": [fb.as_dict() for fb in result.fallbacks],
                "simulated": bool(result.simulated),
                "tier_defaults_simulated": defaults.simulated,
                "run_id": defaults.run_id,
                "width": result.width,
                "height": result.height,
                "prediction_id": result.prediction_id,
                "notes": [redact(n) for n in result.notes],
            }
        )

    async def on_api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return error_response(exc.status, exc.category, exc.message, exc.headers)

    async def on_evalkit_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, EvalkitError)
        status = STATUS_FOR.get(exc.category, 400 if isinstance(exc, InvalidInputError) else 502)
        return error_response(status, exc.category.value, str(exc))

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        category = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "invalid_input")
        return error_response(exc.status_code, category, str(exc.detail))

    async def on_crash(request: Request, exc: Exception) -> Response:
        log.error("evalkit serve: unhandled %s on %s", type(exc).__name__, request.url.path)
        return error_response(500, "server", "internal error (see the server log)")

    routes = [
        Route("/", index, methods=["GET"]),
        Route(MODELS_PATH, models, methods=["GET"]),
        Route(EDIT_PATH, process, methods=["POST"]),
        Mount("/static", app=StaticFiles(directory=STATIC_DIR), name="static"),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(_Guard, config=config)],
        exception_handlers={
            ApiError: on_api_error,
            EvalkitError: on_evalkit_error,
            HTTPException: on_http_error,
            Exception: on_crash,
        },
    )
    app.state.tier_file = tier_file
    app.state.config = config
    return app


def serve(
    tiers: str | os.PathLike | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    token: str | None = None,
    announce: Any = None,
    **config_kw: Any,
) -> None:
    """Run the server (blocking). Refuses a non-loopback ``host`` without ``EVALKIT_SERVE_TOKEN``;
    ``announce(text)`` is called once the tier file has loaded, before serving."""
    import uvicorn

    config = make_config(tiers, host=host, token=token, **config_kw)
    app = create_app(config)
    if announce is not None:
        d = app.state.tier_file.get()
        where = f"http://{host if ':' not in host else f'[{host}]'}:{port}/"
        announce(
            f"serving tier defaults {config.tiers} (run {d.run_id}{', SIMULATED' if d.simulated else ''}) on {where}"
            + (" — token required" if config.token else "")
        )
    uvicorn.run(app, host=host, port=port, log_level="info", server_header=False, access_log=False)


def make_config(tiers: str | os.PathLike | None, *, host: str, token: str | None = None, **kw: Any) -> ServeConfig:
    """A checked ServeConfig: token from ``EVALKIT_SERVE_TOKEN`` unless given; non-loopback needs one."""
    token = token if token is not None else (os.environ.get(TOKEN_ENV) or "").strip() or None
    if not is_loopback(host) and not token:
        raise InvalidInputError(
            f"refusing to serve on {host}: off loopback every request must carry a token, and {TOKEN_ENV} is not set",
            hint=f"export {TOKEN_ENV}=$(python -c 'import secrets; print(secrets.token_urlsafe(32))') "
            "and send it as 'Authorization: Bearer …', or bind 127.0.0.1",
        )
    if token is not None and len(token) < 16:
        raise InvalidInputError(f"{TOKEN_ENV} is too short (< 16 characters)", hint="use a long random token")
    path = Path(tiers) if tiers is not None else None
    if path is None:
        env = os.environ.get("EVALKIT_TIER_DEFAULTS", "").strip()
        path = Path(env) if env else Path("tier_defaults.json")
    return ServeConfig(tiers=path.expanduser(), token=token, **kw)


__all__ = ["ServeConfig", "TierFile", "RateLimiter", "create_app", "make_config", "serve", "is_loopback"]
