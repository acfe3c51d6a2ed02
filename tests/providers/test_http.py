"""evalkit.providers.http: safe URLs, the one loopback test, HTTP statuses → error categories, redacted
server messages, the retry loop for idempotent requests and base64 outputs."""

from __future__ import annotations

import base64

import httpx
import pytest

from evalkit.credentials import Secret
from evalkit.errors import Category, ProviderError
from evalkit.providers.http import (
    category_for_status,
    decode_base64_output,
    error_for_response,
    error_for_transport,
    is_loopback_host,
    is_loopback_url,
    is_retryable_status,
    safe_url,
    server_message,
    with_retries,
)
from evalkit.providers.retry import RetryPolicy
from tests.plugins.common import make_png

KEY = "ws-live-key-0123456789abcdef"


def response(status: int, *, json=None, text: str | None = None, headers: dict | None = None) -> httpx.Response:
    request = httpx.Request("POST", "https://api.example.test/api/v3/some/model")
    if json is not None:
        return httpx.Response(status, json=json, headers=headers, request=request)
    return httpx.Response(status, text=text or "", headers=headers, request=request)


# ---- URLs -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url,safe",
    [
        (
            "https://cdn.example.com/out/a.png?X-Amz-Signature=abc&X-Amz-Credential=k",
            "https://cdn.example.com/out/a.png",
        ),
        ("https://user:secret@host.example:8443/p#frag", "https://host.example:8443/p"),
        ("http://127.0.0.1:9000/api/v3/predictions/x/result", "http://127.0.0.1:9000/api/v3/predictions/x/result"),
        ("https://host.example/path;params?token=t", "https://host.example/path;params"),
    ],
)
def test_safe_url_drops_query_fragment_and_user_info(url, safe):
    assert safe_url(url) == safe
    assert safe_url(httpx.URL(url)) == safe
    for secret in ("abc", "secret", "token=t", "frag"):
        assert secret not in safe_url(url)


@pytest.mark.parametrize(
    "host", ["localhost", "LOCALHOST", " localhost ", "127.0.0.1", "127.1.2.3", "::1", "[::1]", "::ffff:127.0.0.1"]
)
def test_loopback_hosts(host):
    assert is_loopback_host(host)


@pytest.mark.parametrize(
    "host", [None, "", "0.0.0.0", "10.0.0.1", "192.168.1.5", "::", "example.com", "localhost.evil.com", "128.0.0.1"]
)
def test_not_loopback_hosts(host):
    assert not is_loopback_host(host)


def test_loopback_urls_look_at_the_host_only():
    assert is_loopback_url("http://127.0.0.1:8080/api")
    assert is_loopback_url(httpx.URL("http://[::1]:9/x"))
    assert is_loopback_url("http://localhost")
    assert not is_loopback_url("https://api.wavespeed.ai/api/v3")
    assert not is_loopback_url("http://127.0.0.1@evil.example/")  # user info, not the host
    assert not is_loopback_url("http://evil.example/?next=http://127.0.0.1")
    assert not is_loopback_url("not a url")


# ---- statuses → categories --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "status,category,retryable",
    [
        (400, Category.BAD_REQUEST, False),
        (401, Category.AUTH, False),
        (403, Category.AUTH, False),
        (404, Category.BAD_REQUEST, False),
        (408, Category.TIMEOUT, False),
        (413, Category.BAD_REQUEST, False),
        (422, Category.BAD_REQUEST, False),
        (429, Category.RATE_LIMIT, True),
        (500, Category.SERVER, True),
        (502, Category.SERVER, True),
        (503, Category.SERVER, True),
    ],
)
def test_status_categories(status, category, retryable):
    assert category_for_status(status) == category
    assert is_retryable_status(status) is retryable
    err = error_for_response(response(status, json={"message": "nope"}), service="WaveSpeed", what="submit")
    assert err.category == category and err.retryable is retryable and err.status_code == status
    assert err.message.startswith(f"WaveSpeed submit failed: HTTP {status}: nope")


def test_hints_say_what_to_do():
    auth = error_for_response(response(401), service="WaveSpeed", what="submit", key_env="WAVESPEED_API_KEY")
    assert "WAVESPEED_API_KEY" in auth.hint and "balance" not in auth.hint
    assert "balance" in error_for_response(response(403), service="S", what="x", key_env="K").hint
    assert "concurrency" in error_for_response(response(429), service="S", what="x").hint
    assert "evalkit models" in error_for_response(response(400), service="S", what="x").hint
    assert "later" in error_for_response(response(503), service="S", what="x").hint


def test_category_and_retryable_can_be_overridden():
    err = error_for_response(
        response(404), service="S", what="download", category=Category.BAD_OUTPUT, retryable=False, prediction_id="p1"
    )
    assert err.category == Category.BAD_OUTPUT and not err.retryable and err.prediction_id == "p1"


def test_retry_after_header_is_carried_on_the_error():
    err = error_for_response(response(429, headers={"Retry-After": "7"}), service="S", what="poll")
    assert err.retry_after_s == 7.0
    assert error_for_response(response(429), service="S", what="poll").retry_after_s is None


# ---- server messages, redacted ----------------------------------------------------------------------


def test_the_server_message_comes_from_the_envelope():
    r = response(400, json={"code": 400, "message": "success", "data": {"error": "size must be 256*256..1536*1536"}})
    assert server_message(r) == "size must be 256*256..1536*1536"  # a "success" message is no explanation
    r = response(422, json={"detail": [{"loc": ["body", "prompt"], "msg": "field required"}]})
    assert "field required" in server_message(r)


def test_a_non_json_body_gives_a_text_snippet_capped_in_length():
    r = response(502, text="<html>\n  <body>Bad   gateway</body>\n</html>")
    assert server_message(r) == "<html> <body>Bad gateway</body> </html>"
    long = server_message(response(500, text="x" * 1000), limit=50)
    assert long == "x" * 50 + "…"


def test_a_key_echoed_by_the_server_is_redacted(monkeypatch):
    monkeypatch.delenv("WAVESPEED_API_KEY", raising=False)
    body = {"message": f"invalid key {KEY}", "error": f"header was 'Authorization: Bearer {KEY}'"}
    err = error_for_response(response(401, json=body), service="WaveSpeed", what="submit", secrets=[Secret(KEY)])
    assert KEY not in err.message and KEY not in str(err) and KEY not in repr(err)
    assert "***" in err.message


def test_keys_in_the_environment_and_bearer_tokens_are_redacted_without_being_passed(monkeypatch):
    monkeypatch.setenv("STABILITY_API_KEY", "sk-env-secret-9876")
    r = response(500, text="upstream said: key sk-env-secret-9876 / Bearer abcdefghij123 rejected")
    said = server_message(r)
    assert "sk-env-secret-9876" not in said and "abcdefghij123" not in said
    assert said.count("***") == 2


# ---- transport errors --------------------------------------------------------------------------------


def test_transport_errors_map_to_network_or_timeout():
    req = httpx.Request("GET", "https://x.test/")
    connect = error_for_transport(httpx.ConnectError("refused", request=req), service="WaveSpeed", what="poll")
    assert connect.category == Category.NETWORK and connect.retryable and "could not connect" in connect.message
    timeout = error_for_transport(httpx.ReadTimeout("slow", request=req), service="WaveSpeed", what="poll")
    assert timeout.category == Category.TIMEOUT and timeout.retryable and "timed out" in timeout.message
    other = error_for_transport(httpx.RemoteProtocolError("eof", request=req), service="S", what="download")
    assert other.category == Category.NETWORK and other.retryable
    bad_url = error_for_transport(httpx.UnsupportedProtocol("ftp"), service="S", what="poll", prediction_id="p")
    assert not bad_url.retryable and "http://" in bad_url.hint and bad_url.prediction_id == "p"


# ---- the retry loop ----------------------------------------------------------------------------------


async def test_with_retries_retries_retryable_errors_and_honours_retry_after():
    waits: list[float] = []
    calls = 0

    async def sleep(s: float) -> None:
        waits.append(s)

    async def attempt() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ProviderError("busy", category=Category.RATE_LIMIT, retryable=True, retry_after_s=2.5)
        if calls == 2:
            raise ProviderError("oops", category=Category.SERVER, retryable=True)
        return "ok"

    policy = RetryPolicy(max_attempts=5, base_s=0.1, max_backoff_s=1.0, jitter=False)
    assert await with_retries(attempt, policy=policy, what="poll", sleep=sleep) == "ok"
    assert calls == 3 and waits == [2.5, 0.2]  # Retry-After first, then the backoff of attempt 2


async def test_with_retries_gives_up_after_max_attempts_and_says_so():
    waits: list[float] = []

    async def sleep(s: float) -> None:
        waits.append(s)

    async def attempt() -> None:
        raise ProviderError("HTTP 503", category=Category.SERVER, retryable=True)

    with pytest.raises(ProviderError) as info:
        await with_retries(attempt, policy=RetryPolicy(max_attempts=3, jitter=False), what="poll", sleep=sleep)
    assert "(after 3 attempts)" in str(info.value) and len(waits) == 2


async def test_with_retries_raises_a_non_retryable_error_at_once():
    calls = 0

    async def sleep(s: float) -> None:
        raise AssertionError("must not wait")

    async def attempt() -> None:
        nonlocal calls
        calls += 1
        raise ProviderError("bad request", category=Category.BAD_REQUEST, retryable=False)

    with pytest.raises(ProviderError) as info:
        await with_retries(attempt, policy=RetryPolicy(), what="poll", sleep=sleep)
    assert calls == 1 and "attempts" not in str(info.value)


# ---- base64 outputs ----------------------------------------------------------------------------------


def test_base64_outputs_naked_or_as_a_data_uri():
    png = make_png(8, 8)
    b64 = base64.b64encode(png).decode()
    assert decode_base64_output(b64) == png
    assert decode_base64_output(f"data:image/png;base64,{b64}") == png
    assert decode_base64_output(b64[:20] + "\n" + b64[20:]) == png  # line breaks are allowed
    for bad, words in (
        ("https://cdn.example/x.png", "neither a URL nor valid base64"),
        ("data:image/png,rawbytes", "not base64-encoded"),
    ):
        with pytest.raises(ProviderError) as info:
            decode_base64_output(bad)
        assert info.value.category == Category.BAD_OUTPUT and words in str(info.value)
    with pytest.raises(ProviderError, match="over the 10-byte cap"):
        decode_base64_output(b64, max_bytes=10)
