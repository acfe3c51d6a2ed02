"""An httpx transport on aiohttp whose errors say truthfully whether a request may have been sent.

Why not httpx's own transport (httpcore)? With ~100 requests in flight its connection pool rescans
every connection for every request (cost grows with the square of the pool size, encode/httpcore#1035)
and retries a failed ``import sniffio`` on every request (#1103): the runner benchmark measured
24–34 ms of client CPU per edit and median request latencies of 0.3–0.7 s against an idle local
server — the client, not the server, was the bottleneck (bench/README.md). aiohttp's pool does the
same work for ~0.2 ms per request.

Why not httpx-aiohttp's transport as it is? It maps every ``aiohttp.ClientConnectionError`` to
``httpx.ConnectTimeout`` — including a connection dropped *after* a POST was sent — and in httpx a
``ConnectTimeout`` means "never sent", which is exactly when evalkit may re-send a paid submit. This
wrapper keeps the "not sent" errors (``ConnectError``, ``PoolTimeout``) for aiohttp's connect-phase
failures only, and maps everything after the connection was made to ``RemoteProtocolError`` /
``ReadError`` / ``ReadTimeout`` — an unknown outcome for a submit, retried only for idempotent GETs.
aiohttp itself re-tries a request on a dropped keep-alive connection only for idempotent methods
(RFC 9112 §9.3.1), never for a POST.

Set ``EVALKIT_HTTP_TRANSPORT=httpcore`` to use httpx's own transport instead. It is also used when a
proxy is configured in the environment (``HTTP(S)_PROXY``), which this transport does not read.
"""

from __future__ import annotations

import functools
import os
import ssl
from collections.abc import AsyncIterator

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport


def _remap(exc: httpx.TransportError, request: httpx.Request) -> httpx.TransportError:
    """The httpx error that tells the truth about whether ``request`` may have reached the server."""
    cause, text = exc.__cause__, str(exc)
    if isinstance(cause, aiohttp.ClientConnectorError):  # could not connect: nothing was sent
        return httpx.ConnectError(text, request=request)
    if isinstance(cause, aiohttp.ConnectionTimeoutError):  # no connection in time (pool or connect): not sent
        return httpx.PoolTimeout(text, request=request)
    if isinstance(cause, aiohttp.SocketTimeoutError):  # connected and sent; no answer in time
        return httpx.ReadTimeout(text, request=request)
    if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)):
        return httpx.RemoteProtocolError(text, request=request)  # after connecting: it may have been sent
    return exc


class _Stream(httpx.AsyncByteStream):
    def __init__(self, inner: httpx.AsyncByteStream, request: httpx.Request) -> None:
        self._inner, self._request = inner, request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._inner:
                yield chunk
        except httpx.TransportError as exc:
            raise _remap(exc, self._request) from exc.__cause__

    async def aclose(self) -> None:
        await self._inner.aclose()


class SafeAiohttpTransport(AiohttpTransport):
    """httpx-aiohttp's transport with money-safe error semantics (see the module docstring)."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            response = await super().handle_async_request(request)
        except httpx.TransportError as exc:
            raise _remap(exc, request) from exc.__cause__
        response.stream = _Stream(response.stream, request)  # type: ignore[arg-type]
        return response


@functools.cache
def tls_context() -> ssl.SSLContext:
    """The verifying TLS context every client of this process shares (httpx's default: certifi's bundle, or
    ``SSL_CERT_FILE``/``SSL_CERT_DIR`` as set when it is first built). Building one loads the CA bundle — ≈ 40 ms of
    CPU, on the event loop — and a client is made per provider, which ``evalkit serve`` makes per edit."""
    return httpx.create_ssl_context()


def default_transport(limits: httpx.Limits) -> httpx.AsyncBaseTransport | None:
    """The transport ``new_client`` uses: this one, unless told otherwise (None = httpx's own)."""
    if os.environ.get("EVALKIT_HTTP_TRANSPORT", "").strip().lower() == "httpcore":
        return None
    if any(
        os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")
    ):
        return None  # httpx honours proxy settings; this transport does not
    return SafeAiohttpTransport(limits=limits, verify=tls_context())
