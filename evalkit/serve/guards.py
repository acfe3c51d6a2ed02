"""The guards in front of ``evalkit serve``'s handlers, in one place: who may reach the API (Host, token,
origin), how much they may ask (a rate limit on the real peer, a bound on edits in flight) and what every
response carries (security headers, CORS for named front ends, JSON errors that reveal nothing of the host).

Threat model (docs/serve.md): the port is reachable by local processes and by any web page the operator's
browser shows (cross-site requests, DNS rebinding); off loopback, by anyone on the network. Provider keys
and the operator's money are what an attacker wants.
"""

from __future__ import annotations

import hmac
import logging
import math
import re
import threading
import time
from collections import deque
from collections.abc import Mapping
from typing import Any

from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from evalkit.credentials import redact
from evalkit.errors import InvalidInputError
from evalkit.providers.http import is_loopback_host
from evalkit.serve.config import EDIT_PATH, TOKEN_ENV, ServeConfig, normalise_origin

log = logging.getLogger("evalkit.serve")

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; "
    "script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
}
#: absolute file-system paths (two or more segments, not the API's own routes): shown by their last part only
_HOST_PATH = re.compile(r"(?<![\w:/.~-])(?:~|/(?!api/|static/))(?:[^\s/'\"(),;]+/)+([^\s/'\"(),;]*)")


class ApiError(Exception):
    def __init__(self, status: int, category: str, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status, self.category, self.message, self.headers = status, category, message, dict(headers or {})


def scrub(message: str) -> str:
    """A message fit for a client: keys redacted, server paths reduced to their file name."""
    return _HOST_PATH.sub(r"\1", redact(message))


def error_response(status: int, category: str, message: str, headers: Mapping[str, str] | None = None) -> Response:
    body = {"error": {"category": str(category), "message": scrub(message)}}
    return JSONResponse(body, status_code=status, headers=dict(headers or {}))


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


def peer(request: Request) -> str:
    """The client's address as the connection shows it. uvicorn only replaces it by a proxy's
    ``X-Forwarded-For`` when ``--forwarded-allow-ips`` names that proxy (evalkit starts it so); a header a
    client sends for itself changes nothing."""
    return request.client.host if request.client else "?"


def own_origin(request: Request) -> str | None:
    try:
        return normalise_origin(f"{request.url.scheme}://{request.url.netloc}")
    except InvalidInputError:
        return None


def foreign_origin(request: Request, allowed: tuple[str, ...]) -> tuple[str | None, str | None]:
    """``(refusal, allowed_foreign_origin)`` for an API request. Refused: an ``Origin`` that is neither the
    server's own nor named by ``--allow-origin`` (``null`` included), or a browser's ``Sec-Fetch-Site`` of
    ``cross-site``/``same-site`` without such an origin. No ``Origin`` and no ``Sec-Fetch-Site``: a
    non-browser client (curl, a backend), which no web page can make send a request."""
    origin = request.headers.get("origin")
    site = (request.headers.get("sec-fetch-site") or "").lower()
    if origin is None:
        if site in ("cross-site", "same-site"):
            return f"a {site} request is not served (Sec-Fetch-Site: {site}, no Origin)", None
        return None, None
    try:
        given = normalise_origin(origin)
    except InvalidInputError:
        return f"origin {origin[:80]!r} is not served", None
    if given == own_origin(request):
        return None, None
    if given in allowed:
        return None, given
    return (
        f"origin {given} is not served: only this server's own pages (and origins named by --allow-origin) "
        "may call its API",
        None,
    )


def _cors_headers(origin: str) -> dict[str, str]:
    return {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Methods": "GET, POST",
        "Access-Control-Allow-Headers": "Authorization, Content-Type",
        "Access-Control-Expose-Headers": "Retry-After",
        "Access-Control-Max-Age": "600",
        "Vary": "Origin",
    }


class Guard(BaseHTTPMiddleware):
    """Host, origin, token and in-flight checks before any handler; security headers on every response."""

    def __init__(self, app: Any, config: ServeConfig):
        super().__init__(app)
        self.config = config
        self.hosts = set(config.extra_hosts)  # besides every loopback name
        self.in_flight = 0
        self.peak_in_flight = 0

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        response = await self._checked(request, call_next)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if request.url.path.startswith("/api/"):
            response.headers.setdefault("Cache-Control", "no-store")
        return response

    async def _checked(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        cfg = self.config
        if cfg.token is None:
            host = request.url.hostname or ""
            if host not in self.hosts and not is_loopback_host(host):
                return error_response(403, "forbidden", f"host {host!r} not accepted (loopback only without a token)")
        if not request.url.path.startswith("/api/"):
            return await call_next(request)
        refusal, cors = foreign_origin(request, cfg.allow_origins)
        if refusal is not None:
            return error_response(403, "forbidden", refusal)
        extra = _cors_headers(cors) if cors else {}
        if request.method == "OPTIONS":  # a preflight from a named front end (others were refused above)
            if not cors:
                return error_response(405, "method_not_allowed", "OPTIONS is only answered to --allow-origin pages")
            return Response(status_code=204, headers=extra)
        request.state.foreign_origin = cors
        if cfg.token is not None:
            auth = request.headers.get("authorization") or ""
            scheme, _, given = auth.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), cfg.token.encode()):
                return error_response(
                    401,
                    "unauthorized",
                    f"this server needs its token: send 'Authorization: Bearer <{TOKEN_ENV}>'",
                    {"WWW-Authenticate": "Bearer", **extra},
                )
        edit = request.url.path == EDIT_PATH and request.method == "POST"
        if edit:
            assert cfg.max_in_flight is not None
            if self.in_flight >= cfg.max_in_flight:
                return error_response(
                    503,
                    "overloaded",
                    f"{self.in_flight} edits are in progress (the server's limit, --max-in-flight); retry shortly",
                    {"Retry-After": "1", **extra},
                )
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            response = await call_next(request)
        except Exception:  # noqa: BLE001  (never a traceback to the client)
            log.exception("evalkit serve: unhandled error on %s", request.url.path)
            response = error_response(500, "server", "internal error (see the server log)")
        finally:
            if edit:
                self.in_flight -= 1
        for name, value in extra.items():
            response.headers.setdefault(name, value)
        return response


def retry_after(seconds: float) -> dict[str, str]:
    return {"Retry-After": str(max(1, math.ceil(seconds)))}
