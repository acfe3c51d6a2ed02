"""HTTP plumbing shared by the hosted-model providers (WaveSpeed; Stability and Hugging Face can reuse it).

What lives here, and why it is shared:

* :func:`new_client` — one ``httpx.AsyncClient`` per provider with *explicit* timeouts and pool limits
  sized for ~100 concurrent calls (httpx's defaults — 5 s reads, 100 connections — are wrong for image
  edits that take tens of seconds; see shared/reference/ecosystem.md §6.1).
* :func:`error_for_response` / :func:`error_for_transport` — one mapping from HTTP statuses and
  transport exceptions to :class:`~evalkit.errors.Category`, with the server's message extracted from
  its JSON envelope and passed through :func:`~evalkit.credentials.redact` (so a server that echoes
  the ``Authorization`` header cannot leak the key into a stored message).
* :func:`with_retries` — retry loop for **idempotent** requests (polls, downloads, free upload
  tickets) on top of :class:`~evalkit.providers.retry.RetryPolicy`, honouring ``Retry-After``. Paid
  submits must not use it blindly: each provider decides which submit failures prove "not accepted".
* :func:`download_image` / :func:`image_from_bytes` — a streamed download with a byte cap (checked
  against ``Content-Length`` first, then while streaming), written to a spool file or kept in memory,
  and verified to decode as an image (:func:`evalkit.images.decode_output`) before anyone trusts it;
  :meth:`DownloadedImage.outcome` turns such a verified image into a successful
  :class:`~evalkit.providers.base.EditOutcome` (every provider's success path, the local baselines' too).
* :func:`is_loopback_host` / :func:`is_loopback_url` — the one test for "this is a local server" (the
  runner's defaults for local simulators, the judge's optional key, the simulators' bind and control checks).

Nothing in here knows a provider's URL layout; it only knows HTTP.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import ipaddress
import logging
import os
import tempfile
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import httpx

from evalkit.credentials import Secret, redact
from evalkit.errors import Category, ImageError, ProviderError
from evalkit.images import MAX_BYTES, decode_output, sha256_bytes
from evalkit.providers.base import EditOutcome
from evalkit.providers.retry import RetryPolicy, parse_retry_after

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]

#: per-phase timeouts: edits are slow to *answer*, so ``read`` is generous; connect stays short so a
#: dead host is noticed quickly; ``pool`` covers waiting for a free connection when ~100 calls share
#: the pool (a PoolTimeout means the request was never sent).
DEFAULT_TIMEOUT = httpx.Timeout(connect=10.0, read=60.0, write=60.0, pool=60.0)
#: sized for ~100 calls in flight (a poll or download holds a connection only briefly).
DEFAULT_LIMITS = httpx.Limits(max_connections=128, max_keepalive_connections=128, keepalive_expiry=30.0)
#: cap on one downloaded output; the same cap evalkit applies to input files.
DEFAULT_MAX_DOWNLOAD_BYTES = MAX_BYTES
#: local simulators mark every response with this header (value "1"): the outcome is then labelled simulated.
SIMULATED_HEADER = "X-Evalkit-Simulated"
#: transport errors raised *before* the request left this process: a paid POST may be re-sent after them.
NOT_SENT_ERRORS: tuple[type[httpx.HTTPError], ...] = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)

log = logging.getLogger("evalkit.providers.http")


def new_client(
    *,
    timeout: httpx.Timeout = DEFAULT_TIMEOUT,
    limits: httpx.Limits = DEFAULT_LIMITS,
    user_agent: str = "evalkit",
) -> httpx.AsyncClient:
    """An AsyncClient with explicit timeouts/limits. Credentials are *not* set here: providers add them
    per request, so a download from a CDN or a presigned upload URL never carries the API key.

    The transport is aiohttp's (with truthful "was it sent?" errors, see :mod:`evalkit.providers.transport`)
    because httpx's own pool costs tens of ms of CPU per request at ~100 in flight."""
    from evalkit.providers.transport import default_transport, tls_context

    transport = default_transport(limits)
    extra = {"transport": transport} if transport is not None else {"limits": limits, "verify": tls_context()}
    return httpx.AsyncClient(timeout=timeout, headers={"User-Agent": user_agent}, follow_redirects=True, **extra)


def is_simulated(response: httpx.Response) -> bool:
    return response.headers.get(SIMULATED_HEADER, "").strip() == "1"


def retry_after_s(response: httpx.Response) -> float | None:
    return parse_retry_after(response.headers.get("Retry-After"))


def is_loopback_host(host: str | None) -> bool:
    """True for ``localhost`` and any loopback address (127.0.0.0/8, ``::1``, IPv4-mapped loopback)."""
    host = (host or "").strip().strip("[]").lower()
    if host == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return ip.is_loopback or (mapped is not None and mapped.is_loopback)


def is_loopback_url(url: str | httpx.URL) -> bool:
    """True when the URL's host is loopback (a local server such as a simulator)."""
    return is_loopback_host(urlsplit(str(url)).hostname)


def safe_url(url: str | httpx.URL) -> str:
    """``url`` without query, fragment or user info: presigned/CDN URLs carry tokens in the query."""
    parts = urlsplit(str(url))
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def category_for_status(status: int) -> Category:
    """The category of a non-success HTTP status (as answered by the provider's API)."""
    if status in (401, 403):
        return Category.AUTH
    if status == 429:
        return Category.RATE_LIMIT
    if status == 408:
        return Category.TIMEOUT
    if status >= 500:
        return Category.SERVER
    return Category.BAD_REQUEST


_BALANCE_WORDS = ("balance", "insufficient", "credit", "top up", "top-up", "recharge", "payment required")


def is_balance_refusal(status: int | None, message: str | None) -> bool:
    """A refusal because the account ran dry: HTTP 402, or a 403 whose message mentions the balance
    (what WaveSpeed answers — wavespeed-api.md: "403 Insufficient balance", low confidence)."""
    if status == 402:
        return True
    return status == 403 and any(w in (message or "").lower() for w in _BALANCE_WORDS)


def is_retryable_status(status: int) -> bool:
    """429 and 5xx: for an *idempotent* request, trying again may help."""
    return status == 429 or status >= 500


def json_or_none(response: httpx.Response) -> Any:
    """The parsed JSON body, or None when the body is not JSON (never raises)."""
    try:
        return response.json()
    except (ValueError, UnicodeDecodeError):
        return None


def server_message(response: httpx.Response, secrets: Iterable[Secret | str | None] = (), limit: int = 300) -> str:
    """What the server said about a failure: the envelope's message/error/detail, else a text snippet — redacted."""
    body = json_or_none(response)
    parts: list[str] = []
    if isinstance(body, dict):
        data = body.get("data")
        for src in (body, data if isinstance(data, dict) else {}):
            for key in ("message", "error", "detail", "msg"):
                v = src.get(key)
                if isinstance(v, str) and v.strip() and v.strip().lower() != "success" and v.strip() not in parts:
                    parts.append(v.strip())
                elif isinstance(v, (dict, list)) and v:
                    parts.append(str(v))
    if not parts:
        try:
            text = response.text
        except (UnicodeDecodeError, httpx.ResponseNotRead):
            text = ""
        text = " ".join(text.split())
        if text:
            parts.append(text)
    msg = "; ".join(parts)
    if len(msg) > limit:
        msg = msg[:limit] + "…"
    return redact(msg, *secrets)


def error_for_response(
    response: httpx.Response,
    *,
    service: str,
    what: str,
    secrets: Iterable[Secret | str | None] = (),
    key_env: str | None = None,
    category: Category | None = None,
    retryable: bool | None = None,
    prediction_id: str | None = None,
) -> ProviderError:
    """A ProviderError for a non-success response, with the server's (redacted) message and a hint."""
    status = response.status_code
    said = server_message(response, secrets)
    cat = category or (Category.BALANCE if is_balance_refusal(status, said) else category_for_status(status))
    message = f"{service} {what} failed: HTTP {status}" + (f": {said}" if said else "")
    hint = None
    if cat == Category.BALANCE:
        hint = f"the {service} account balance ran out: top up, then `evalkit run --resume RUN_ID`"
    elif cat == Category.AUTH:
        key = key_env or "the API key"
        hint = f"check the key ({key}) and the account balance" if status == 403 else f"check the key ({key})"
    elif cat == Category.RATE_LIMIT:
        hint = (
            "lower the concurrency / images-per-minute for this provider, or wait and run again "
            "(completed calls are kept)"
        )
    elif cat == Category.BAD_REQUEST:
        hint = "the request was rejected as invalid; check the model's parameters (`evalkit models`)"
    elif cat == Category.SERVER:
        hint = "a server-side problem; try again later"
    return ProviderError(
        message,
        category=cat,
        hint=hint,
        status_code=status,
        retryable=is_retryable_status(status) if retryable is None else retryable,
        retry_after_s=retry_after_s(response),
        prediction_id=prediction_id,
    )


def error_for_transport(
    exc: httpx.HTTPError, *, service: str, what: str, prediction_id: str | None = None
) -> ProviderError:
    """A ProviderError for a transport failure of an idempotent request (retryable unless misconfigured)."""
    name = type(exc).__name__
    if isinstance(exc, httpx.UnsupportedProtocol):
        return ProviderError(
            f"{service} {what}: unsupported URL scheme ({name})",
            category=Category.NETWORK,
            hint="check the base URL (it must start with http:// or https://)",
            retryable=False,
            prediction_id=prediction_id,
        )
    if isinstance(exc, httpx.TimeoutException):
        cat, desc = Category.TIMEOUT, "timed out"
    elif isinstance(exc, (httpx.ConnectError,)):
        cat, desc = Category.NETWORK, "could not connect"
    else:
        cat, desc = Category.NETWORK, "connection failed"
    return ProviderError(
        f"{service} {what} {desc} ({name})",
        category=cat,
        hint="check the network / the provider's status page; the call can be run again",
        retryable=True,
        prediction_id=prediction_id,
    )


async def with_retries(
    attempt: Callable[[], Awaitable[T]],
    *,
    policy: RetryPolicy,
    what: str,
    sleep: Sleep = asyncio.sleep,
    logger: logging.Logger = log,
) -> T:
    """Run ``attempt`` until it succeeds or raises a non-retryable :class:`ProviderError`.

    For idempotent requests only. ``attempt`` must turn its failures into ProviderError (with
    ``retryable`` and ``retry_after_s`` set); anything else propagates at once. Waits follow
    ``policy`` (``Retry-After`` wins, up to ``policy.max_retry_after_s``).
    """
    n = 1
    while True:
        try:
            return await attempt()
        except ProviderError as err:
            if not err.retryable or n >= policy.max_attempts:
                if n > 1:
                    err.message = f"{err.message} (after {n} attempts)"
                    err.args = (err.message,)
                raise
            delay = policy.backoff_s(n, err.retry_after_s)
            logger.info(
                "%s: %s; retrying in %.2f s (attempt %d of %d)", what, err.message, delay, n + 1, policy.max_attempts
            )
            await sleep(delay)
            n += 1


# ---- output images ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DownloadedImage:
    """A verified output image: bytes in memory (``data``) or a file in the spool dir (``path``)."""

    sha256: str
    format: str
    width: int
    height: int
    size_bytes: int
    data: bytes | None = None
    path: Path | None = None
    simulated: bool = False

    def outcome(self, model_id: str, **fields: Any) -> EditOutcome:
        """A successful outcome carrying this image (its bytes or spool file, hash, format and size);
        ``fields`` add what the provider knows (cost, latency, prediction id, metadata …)."""
        return EditOutcome(
            ok=True,
            model_id=model_id,
            image=self.data,
            image_path=self.path,
            image_sha256=self.sha256,
            format=self.format,
            width=self.width,
            height=self.height,
            **fields,
        )


def _bad_output(message: str, *, hint: str | None = None, status_code: int | None = None) -> ProviderError:
    return ProviderError(message, category=Category.BAD_OUTPUT, hint=hint, status_code=status_code, retryable=False)


def _verify(data: bytes, what: str) -> tuple[str, int, int]:
    try:
        img = decode_output(data)
    except ImageError as exc:
        raise _bad_output(
            f"{what} is not a usable image: {exc.message}",
            hint="run the call again, or report the model's output as broken",
        ) from None
    fmt = (img.format or "png").lower()
    return ("jpeg" if fmt == "jpg" else fmt), img.width, img.height


async def image_from_bytes(
    data: bytes, *, what: str = "output", max_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES
) -> DownloadedImage:
    """Verify in-memory output bytes (e.g. a decoded base64 output)."""
    if len(data) > max_bytes:
        raise _bad_output(f"{what} is {len(data)} bytes, over the {max_bytes}-byte cap")
    fmt, w, h = await asyncio.to_thread(_verify, data, what)
    return DownloadedImage(sha256=sha256_bytes(data), format=fmt, width=w, height=h, size_bytes=len(data), data=data)


def decode_base64_output(value: str, *, what: str = "output", max_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES) -> bytes:
    """Bytes of a naked base64 string or a ``data:<mime>;base64,`` URI; BAD_OUTPUT when it is neither."""
    text = value.strip()
    if text.startswith("data:"):
        head, sep, text = text.partition(",")
        if not sep or ";base64" not in head:
            raise _bad_output(f"{what} is a data URI that is not base64-encoded")
    if len(text) * 3 // 4 > max_bytes:
        raise _bad_output(f"{what} is about {len(text) * 3 // 4} bytes, over the {max_bytes}-byte cap")
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise _bad_output(f"{what} is neither a URL nor valid base64 (starts {text[:16]!r})") from None


async def download_image(
    client: httpx.AsyncClient,
    url: str,
    *,
    service: str,
    max_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES,
    spool_dir: Path | None = None,
    headers: dict[str, str] | None = None,
    timeout: httpx.Timeout | None = None,
    prediction_id: str | None = None,
) -> DownloadedImage:
    """One streamed GET of an output image (wrap it in :func:`with_retries`).

    The body is refused as soon as it exceeds ``max_bytes``; with ``spool_dir`` it is written to a
    temporary ``*.part`` file there and renamed to ``*.<format>`` once it decodes, else kept in memory.
    HTTP 429/5xx and transport errors are retryable; 4xx and undecodable bytes are BAD_OUTPUT (the
    stored output itself is missing or broken, so fetching it again will not help).
    """
    scheme = urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        raise _bad_output(f"{service} returned an output URL with scheme {scheme!r}; only http(s) is downloaded")
    what = f"{service} output download ({safe_url(url)})"
    part: Path | None = None
    try:
        async with client.stream("GET", url, headers=headers, timeout=timeout or httpx.USE_CLIENT_DEFAULT) as resp:
            simulated = is_simulated(resp)
            if resp.status_code != 200:
                await resp.aread()
                if is_retryable_status(resp.status_code):
                    raise error_for_response(resp, service=service, what="output download", prediction_id=prediction_id)
                raise error_for_response(
                    resp,
                    service=service,
                    what="output download",
                    category=Category.BAD_OUTPUT,
                    retryable=False,
                    prediction_id=prediction_id,
                )
            declared = resp.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise _bad_output(f"{what}: {int(declared)} bytes, over the {max_bytes}-byte cap")
            hasher = hashlib.sha256()
            size = 0
            buf = bytearray()
            fh = None
            if spool_dir is not None:
                spool_dir.mkdir(parents=True, exist_ok=True)
                fd, name = tempfile.mkstemp(dir=spool_dir, prefix=f"{service.lower()}-", suffix=".part")
                part = Path(name)
                fh = os.fdopen(fd, "wb")
            try:
                async for chunk in resp.aiter_bytes():
                    size += len(chunk)
                    if size > max_bytes:
                        raise _bad_output(f"{what}: more than {max_bytes} bytes, over the cap; download stopped")
                    hasher.update(chunk)
                    if fh is not None:
                        fh.write(chunk)
                    else:
                        buf += chunk
            finally:
                if fh is not None:
                    fh.close()
        if size == 0:
            raise _bad_output(f"{what}: empty body")
        data = part.read_bytes() if part is not None else bytes(buf)
        fmt, w, h = await asyncio.to_thread(_verify, data, f"{service} output")
        path = None
        if part is not None:
            path = part.with_suffix(f".{fmt}")
            os.replace(part, path)
            part = None
        return DownloadedImage(
            sha256=hasher.hexdigest(),
            format=fmt,
            width=w,
            height=h,
            size_bytes=size,
            data=None if path is not None else data,
            path=path,
            simulated=simulated,
        )
    except httpx.HTTPError as exc:
        raise error_for_transport(exc, service=service, what="output download", prediction_id=prediction_id) from None
    finally:
        if part is not None:
            with contextlib.suppress(OSError):
                part.unlink()
