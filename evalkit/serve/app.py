"""``evalkit serve``: the Image Studio edit endpoint and the model selector page, driven by tier_defaults.json.

Routes (names as in the original app)
-------------------------------------
``POST /api/image-studio/edit/process``
    JSON ``{image_base64 (str or list), prompt, operation, tier, model, options, user_id}`` (only these
    fields, as ``application/json``) or, from the server's own page, a multipart form (``image`` file
    field(s), the same names as text fields, ``options`` as JSON text) → ``{image_base64, mime, model, tier,
    cost_usd, latency_ms, fallbacks, simulated, …}``. Without ``tier`` the server's default tier is used.
    ``model`` must be the tier's default or one of its eligible alternatives for the operation (unless
    ``--allow-any-model``), and the request's own price must fit the tier's ``max_cost_usd`` whatever the model.
``GET /api/image-studio/edit/models[?tier=…]``
    per tier and operation: default, alternatives, price, p95 latency, quality with interval, evidence,
    the run the decision came from and the order in which models would be tried.
``GET /api/image-studio/edit/usage``
    for the operator: today's (UTC) spend per tier and client, and the daily budgets.
``GET /``
    the model selector page (static HTML/JS/CSS from ``evalkit/serve/static``; no build step).

The guards (Host, token, origin, in-flight bound, headers) are :mod:`evalkit.serve.guards`; reading a
request with bounded work is :mod:`evalkit.serve.body`; money (tier price contract, daily budgets) is
:mod:`evalkit.serve.money`. docs/serve.md has the threat model.

The tier file is re-read when it changes (mtime/size/inode checked on each request), so a scheduled
run that writes a new ``tier_defaults.json`` (atomically, as ``write_tier_defaults`` does) takes effect
without a restart. A file that fails to load while a good one is in memory leaves the good one in use
and is reported in ``/models``' ``warnings``.
"""

from __future__ import annotations

import base64
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from evalkit.catalog import Catalog, normalise_operation
from evalkit.credentials import redact
from evalkit.decide.routing import TierDefaults, TierDefaultsError, load_tier_defaults, plan_route
from evalkit.errors import Category, EvalkitError, InvalidInputError
from evalkit.providers.http import is_loopback_host
from evalkit.serve.body import parse_edit
from evalkit.serve.config import (
    EDIT_PATH,
    MODELS_PATH,
    TOKEN_ENV,
    USAGE_PATH,
    ServeConfig,
    make_config,
)
from evalkit.serve.guards import ApiError, Guard, RateLimiter, error_response, peer, retry_after
from evalkit.serve.listing import models_listing
from evalkit.serve.money import LEDGER_SOURCE, DailyBudgets, RequestSpend, TierContractError, spend_summary

log = logging.getLogger("evalkit.serve")

STATIC_DIR = Path(__file__).with_name("static")

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


# ---- the app ------------------------------------------------------------------------------------------


def _contract(defaults: TierDefaults, catalog: Catalog, config: ServeConfig, data: dict[str, Any]) -> dict[str, Any]:
    """The tier, operation and model of a request, checked against the tier file before anything is decoded
    or sent: the tier exists; a named model is one the tier would route to (or ``--allow-any-model``)."""
    try:
        operation = normalise_operation(data.get("operation") or "general_edit")
    except EvalkitError as exc:
        raise ApiError(400, "invalid_input", str(exc)) from None
    tier = data.get("tier") or config.default_tier
    if tier not in defaults.tiers:
        raise ApiError(400, "invalid_input", f"no tier {tier!r}; tiers: {', '.join(defaults.tiers) or 'none'}")
    model = data.get("model") or None
    if model and not config.allow_any_model:
        try:
            route = plan_route(defaults, tier, operation, allow_provisional=config.allow_provisional, catalog=catalog)
            allowed = route.models
        except TierDefaultsError:
            allowed = []
        if model not in allowed:
            raise ApiError(
                403,
                "forbidden",
                f"model {model!r} is not served in tier {tier!r} for {operation}: allowed "
                + (", ".join(allowed) if allowed else "none (the tier has no model for it)")
                + f" (run {defaults.run_id}); leave out `model` to let the tier choose",
            )
    if model and model not in catalog:
        raise ApiError(400, "invalid_input", f"unknown model {model!r}")
    constraints = (defaults.tiers[tier] or {}).get("constraints") or {}
    return {"operation": operation, "tier": tier, "model": model, "max_cost_usd": constraints.get("max_cost_usd")}


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
    ledger = workspace if isinstance(workspace, Workspace) else None
    catalog = config.catalog or Catalog.load(ledger.path if ledger else None)
    limiter = RateLimiter(config.edits_per_minute, clock=config.clock)
    budgets = DailyBudgets(config.daily_budget_usd, config.client_daily_budget_usd, ledger)
    budgets.status()  # today's spend so far, from the ledger: a restart does not reset the day

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

    async def usage(request: Request) -> Response:
        status = budgets.status()
        rows = ledger.usage(since=status["day"] + "T00:00:00", source=LEDGER_SOURCE) if ledger else None
        summary = spend_summary(rows) if rows is not None else {"by_tier": [], "by_client": []}
        return JSONResponse({**status, **summary, "ledger": ledger is not None})

    async def process(request: Request) -> Response:
        client = peer(request)
        wait = limiter.check(client)
        if wait is not None:
            raise ApiError(
                429,
                "rate_limit",
                f"too many edits from this client (limit {config.edits_per_minute} per minute); retry in {wait:.0f} s",
                retry_after(wait),
            )
        budgets.check_open(client)  # nothing left today: refused before the body is read
        data, decode = await parse_edit(request, config)
        defaults = current()
        contract = _contract(defaults, catalog, config, data)
        images = await decode()  # in a worker thread, once every other check has passed
        spend = RequestSpend(
            budgets, client, contract["tier"], contract["max_cost_usd"], explicit_model=bool(contract["model"])
        )
        t0 = time.monotonic()
        result = await agenerate_image_edit(
            image=images,
            prompt=data.get("prompt"),
            operation=contract["operation"],
            model=contract["model"],
            options=data.get("options"),
            user_id=data.get("user_id"),
            tier=None if contract["model"] else contract["tier"],
            tiers=defaults,
            allow_provisional=config.allow_provisional,
            allow_simulated=config.allow_simulated,
            continue_after_unknown=config.continue_after_unknown,
            workspace=workspace,
            catalog=catalog,
            provider_options=config.provider_options,
            spend_guard=spend,
        )
        mime = f"image/{(result.format or 'png').lower().replace('jpg', 'jpeg')}"
        return JSONResponse(
            {
                "image_base64": base64.b64encode(result.image_bytes).decode("ascii"),
                "mime": mime,
                "model": result.model_id,
                "tier": result.tier or contract["tier"],
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
        if isinstance(exc, TierContractError):
            return error_response(403, "forbidden", str(exc))
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
        Route(USAGE_PATH, usage, methods=["GET"]),
        Route(EDIT_PATH, process, methods=["POST"]),
        Mount("/static", app=StaticFiles(directory=STATIC_DIR), name="static"),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(Guard, config=config)],
        exception_handlers={
            ApiError: on_api_error,
            EvalkitError: on_evalkit_error,
            HTTPException: on_http_error,
            Exception: on_crash,
        },
    )
    app.state.tier_file = tier_file
    app.state.config = config
    app.state.budgets = budgets
    return app


def serve(
    tiers: str | os.PathLike | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    token: str | None = None,
    forwarded_allow_ips: str | None = None,
    announce: Any = None,
    **config_kw: Any,
) -> None:
    """Run the server (blocking). Refuses a non-loopback ``host`` without ``EVALKIT_SERVE_TOKEN``;
    ``announce(text)`` is called once the tier file has loaded, before serving. ``forwarded_allow_ips``: the
    proxies whose ``X-Forwarded-For``/``-Proto`` name the real client (None: such headers are ignored)."""
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
    uvicorn.run(app, **uvicorn_options(host, port, forwarded_allow_ips))


def uvicorn_options(host: str, port: int, forwarded_allow_ips: str | None) -> dict[str, Any]:
    """uvicorn's settings for ``evalkit serve``: forwarded headers are trusted only from the named proxies
    (uvicorn's own default trusts them from loopback, which lets any local caller pick its rate-limit key)."""
    return {
        "host": host,
        "port": port,
        "log_level": "info",
        "server_header": False,
        "access_log": False,
        "proxy_headers": bool(forwarded_allow_ips),
        "forwarded_allow_ips": forwarded_allow_ips or "",
    }


__all__ = [
    "ServeConfig",
    "TierFile",
    "RateLimiter",
    "TOKEN_ENV",
    "create_app",
    "make_config",
    "serve",
    "is_loopback",
    "uvicorn_options",
]
