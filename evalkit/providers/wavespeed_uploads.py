"""WaveSpeed media uploads: a large input is uploaded once and its URL reused, instead of being inlined
as a data URI in every call's body.

An evaluation sends the same input to ~17 models × repeats, so :class:`UploadCache` keeps, per
provider, the media URL of every input it uploaded (by sha256, for :data:`UPLOAD_REUSE_S`) and lets
concurrent callers of the same image share one upload. :func:`upload_media` is the official SDK's
ticket flow (``POST /api/v3/media/uploads`` → ``PUT`` the bytes → ``data.download_url``); both steps
are free and idempotent, so they are retried like polls. :class:`~evalkit.providers.wavespeed.
WaveSpeedEditProvider` decides which inputs to upload (``upload_threshold_bytes``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from evalkit.credentials import Secret
from evalkit.errors import Category, ProviderError
from evalkit.images import InputImage
from evalkit.providers.http import (
    Sleep,
    error_for_response,
    error_for_transport,
    json_or_none,
    server_message,
    with_retries,
)
from evalkit.providers.retry import RetryPolicy

log = logging.getLogger("evalkit.providers.wavespeed")

#: uploaded files are kept 7 days (docs "upload-files"); reuse an upload URL for less than that.
UPLOAD_REUSE_S = 6 * 24 * 3600.0
#: URLs kept by :meth:`UploadCache.remember` (oldest dropped first): bounded memory over a long run
MAX_REMEMBERED_URLS = 20_000


class UploadCache:
    """The media URLs of one provider's uploaded inputs, by sha256, and the uploads in flight."""

    def __init__(self) -> None:
        self._urls: dict[str, tuple[str, float]] = {}
        self._uploading: dict[str, asyncio.Task[str]] = {}

    async def url(self, sha256: str, upload: Callable[[], Awaitable[str]]) -> str:
        """The media URL of the input ``sha256``: ``upload()`` runs once per provider (concurrent callers
        share one upload), and its URL is reused for :data:`UPLOAD_REUSE_S`."""
        cached = self._urls.get(sha256)
        if cached and time.monotonic() - cached[1] < UPLOAD_REUSE_S:
            return cached[0]
        task = self._uploading.get(sha256)
        if task is None or task.done():
            task = asyncio.ensure_future(upload())
            self._uploading[sha256] = task
        try:
            url = await asyncio.shield(task)
        finally:
            if task.done() and self._uploading.get(sha256) is task:
                del self._uploading[sha256]
        self._urls[sha256] = (url, time.monotonic())
        return url

    def remember(self, sha256: str, url: str) -> None:
        """``url`` already serves the image ``sha256`` (a task's output this provider downloaded): a later
        input with those bytes — a session's next turn editing it — is sent as that URL, not uploaded again."""
        if len(self._urls) >= MAX_REMEMBERED_URLS:
            self._urls.pop(next(iter(self._urls)))
        self._urls[sha256] = (url, time.monotonic())

    def known(self, sha256: str) -> str | None:
        """The URL that serves ``sha256`` and is still fresh (an upload or a remembered output), or None."""
        cached = self._urls.get(sha256)
        return cached[0] if cached and time.monotonic() - cached[1] < UPLOAD_REUSE_S else None


async def upload_media(
    client: httpx.AsyncClient,
    base_url: str,
    img: InputImage,
    key: Secret,
    *,
    headers: dict[str, str],
    retry: RetryPolicy,
    sleep: Sleep,
    service: str,
    key_env: str,
) -> str:
    """SDK ticket flow: ``POST /api/v3/media/uploads`` → ``PUT`` the bytes → ``data.download_url``.
    ``headers`` (with the key) go with the ticket request only, never to the upload URL; ``service``
    and ``key_env`` name the provider and its key variable in errors. Both steps are free and
    idempotent, so they are retried like polls."""
    ticket_url = f"{base_url}/api/v3/media/uploads"
    payload = {"filename": f"{img.sha256[:16]}.{img.format}", "size": len(img.data), "content_type": img.mime}

    async def get_ticket() -> dict[str, Any]:
        try:
            resp = await client.post(ticket_url, json=payload, headers=headers)
        except httpx.HTTPError as exc:
            raise error_for_transport(exc, service=service, what="media upload ticket") from None
        if resp.status_code != 200:
            raise error_for_response(resp, service=service, what="media upload ticket", secrets=[key], key_env=key_env)
        body = json_or_none(resp)
        data = body.get("data") if isinstance(body, dict) else None
        instr = data.get("upload") if isinstance(data, dict) else None
        if (
            not isinstance(body, dict)
            or body.get("code", 200) != 200
            or not isinstance(instr, dict)
            or str(instr.get("method", "")).upper() != "PUT"
            or not isinstance(instr.get("url"), str)
            or not isinstance(data, dict)
            or not isinstance(data.get("download_url"), str)
        ):
            raise ProviderError(
                "WaveSpeed media upload ticket reply was not understood: "
                + (server_message(resp, [key]) or "unexpected shape"),
                category=Category.SERVER,
                retryable=True,
            )
        return data

    ticket = await with_retries(get_ticket, policy=retry, what="wavespeed upload ticket", sleep=sleep, logger=log)
    instr = ticket["upload"]
    put_headers = {str(k): str(v) for k, v in (instr.get("headers") or {}).items() if str(k).lower() != "authorization"}

    async def put() -> None:
        try:
            resp = await client.put(instr["url"], content=img.data, headers=put_headers)
        except httpx.HTTPError as exc:
            raise error_for_transport(exc, service=service, what="media upload") from None
        if not 200 <= resp.status_code < 300:
            raise error_for_response(resp, service=service, what="media upload", secrets=[key], key_env=key_env)

    await with_retries(put, policy=retry, what="wavespeed upload", sleep=sleep, logger=log)
    return str(ticket["download_url"])


__all__ = ["UPLOAD_REUSE_S", "UploadCache", "upload_media"]
