"""The aiohttp transport under httpx: its errors must say truthfully whether a request may have been sent,
because evalkit re-sends a paid submit only after a "never sent" error (ConnectError, ConnectTimeout,
PoolTimeout). Exercised against raw TCP servers on loopback that misbehave on purpose."""

from __future__ import annotations

import asyncio
import contextlib
import ssl

import httpx
import pytest

from evalkit.catalog import Catalog
from evalkit.credentials import Secret
from evalkit.errors import Category
from evalkit.images import load_image
from evalkit.providers.base import EditRequest, ImageEditOptions
from evalkit.providers.http import NOT_SENT_ERRORS, new_client
from evalkit.providers.transport import SafeAiohttpTransport, default_transport
from evalkit.providers.wavespeed import WaveSpeedEditProvider
from tests.plugins.common import make_png, refused_port


class RawServer:
    """A TCP server whose behaviour per request is ``mode``: no_reply, half_reply, hang, ok. ``received`` is set
    when a request has arrived; in ``ok`` mode the reply waits for ``release`` (the connection stays busy)."""

    def __init__(self, mode: str):
        self.mode, self.posts, self.requests = mode, 0, 0
        self.received, self.release = asyncio.Event(), asyncio.Event()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            head = await reader.readuntil(b"\r\n\r\n")
            self.requests += 1
            if head.startswith(b"POST"):
                self.posts += 1
            length = next(
                (
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                ),
                0,
            )
            if length:
                await reader.readexactly(length)  # the whole request arrived
            self.received.set()
            if self.mode == "half_reply":
                writer.write(
                    b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 400\r\n\r\n{"code":'
                )
                await writer.drain()
            elif self.mode == "hang":
                await asyncio.sleep(30)
            elif self.mode == "ok":
                await asyncio.wait_for(self.release.wait(), 30)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
                await writer.drain()
        writer.close()

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()


def _client(**timeout: float) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    return httpx.AsyncClient(transport=SafeAiohttpTransport(limits=limits), timeout=httpx.Timeout(5.0, **timeout))


async def test_a_post_dropped_before_the_reply_is_not_reported_as_never_sent():
    srv = RawServer("no_reply")
    async with srv as base, _client() as client:
        with pytest.raises(httpx.TransportError) as info:
            await client.post(base + "/x", json={"paid": True})
    assert srv.posts == 1 and not isinstance(info.value, NOT_SENT_ERRORS)


async def test_a_reply_cut_mid_body_is_a_read_error_not_never_sent():
    srv = RawServer("half_reply")
    async with srv as base, _client() as client:
        with pytest.raises(httpx.TransportError) as info:
            await (await client.post(base + "/x", json={})).aread()
    assert not isinstance(info.value, NOT_SENT_ERRORS)


async def test_a_refused_connection_is_never_sent():
    async with _client() as client:
        with pytest.raises(httpx.ConnectError):
            await client.post(f"http://127.0.0.1:{refused_port()}/x", json={})


async def test_no_answer_in_time_is_a_read_timeout():
    srv = RawServer("hang")
    async with srv as base, _client(read=0.3) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.post(base + "/x", json={})
    assert srv.posts == 1


async def test_waiting_for_a_free_connection_is_a_pool_timeout():
    srv = RawServer("ok")
    async with srv as base, _client(pool=0.1) as client:  # one connection, busy until released
        first = asyncio.create_task(client.get(base + "/a"))
        await srv.received.wait()  # the GET holds the only connection, and the server holds its reply
        with pytest.raises(httpx.PoolTimeout):
            await client.post(base + "/b", json={})
        srv.release.set()
        assert (await first).status_code == 200
    assert srv.posts == 0  # the POST never left


@pytest.mark.parametrize("mode", ["no_reply", "half_reply"])
async def test_the_wavespeed_provider_sends_a_dropped_submit_once(mode, catalog: Catalog):
    srv = RawServer(mode)

    async def no_sleep(_s: float) -> None:
        return None

    async with srv as base:
        client = new_client()
        assert isinstance(client._transport, SafeAiohttpTransport)  # the default transport
        provider = WaveSpeedEditProvider(base_url=base, api_key=Secret("k"), client=client, sleep=no_sleep)
        request = EditRequest(
            model=catalog.get("qwen-edit"),
            images=(load_image(make_png()),),
            prompt="x",
            options=ImageEditOptions(seed=1),
        )
        outcome = await provider.edit(request)
        await client.aclose()
    assert srv.posts == 1 and outcome.error.category == Category.UNKNOWN_OUTCOME


def test_httpcore_on_request_or_behind_a_proxy(monkeypatch):
    limits = httpx.Limits()
    assert isinstance(default_transport(limits), SafeAiohttpTransport)
    monkeypatch.setenv("EVALKIT_HTTP_TRANSPORT", "httpcore")
    assert default_transport(limits) is None
    monkeypatch.delenv("EVALKIT_HTTP_TRANSPORT")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    assert default_transport(limits) is None


def test_every_client_shares_one_verifying_tls_context(monkeypatch):
    """Building a TLS context loads the CA bundle: ≈ 40 ms of CPU on an idle machine, paid on the event loop each
    time a client is made — and ``evalkit serve`` makes a provider (so a client) per edit, which stalled every other
    request and capped its throughput (bench/bench_serve.py). The context is built once per process."""
    limits = httpx.Limits()
    a, b = default_transport(limits), default_transport(limits)
    assert isinstance(a, SafeAiohttpTransport) and isinstance(b, SafeAiohttpTransport)
    assert a.ssl_context is b.ssl_context
    assert a.ssl_context.verify_mode == ssl.CERT_REQUIRED and a.ssl_context.check_hostname
    monkeypatch.setenv("EVALKIT_HTTP_TRANSPORT", "httpcore")  # httpx's own transport shares it too
    own = new_client()._transport
    assert isinstance(own, httpx.AsyncHTTPTransport)
    assert own._pool._ssl_context is a.ssl_context
