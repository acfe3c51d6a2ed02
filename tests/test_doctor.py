"""Tests for evalkit/doctor.py (`evalkit doctor`): answers given in-process by httpx.MockTransport, in the
documented shapes; the end-to-end test against the local servers is in test_newcomer.py."""

from __future__ import annotations

import httpx
import pytest

from evalkit.doctor import PROVIDER_KEY_ENV, run_doctor

GOOD, BAD = "ws-good-key-123456", "ws-wrong-key-999999"


def api(balance_path: str = "/api/v3/balance", shape: str = "flat", balance: float = 156.78, down: bool = False):
    """A fake WaveSpeed/Stability/HF/judge answering the documented balance endpoints for key GOOD."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if down:
            raise httpx.ConnectError("refused", request=request)
        if request.headers.get("authorization") != f"Bearer {GOOD}":
            return httpx.Response(401, json={"code": 401, "message": "Invalid API key"})
        path = request.url.path
        if path == balance_path:
            data = {"balance": balance} if shape == "flat" else {"balance": balance, "currency": "USD"}
            return httpx.Response(200, json={"code": 200, "message": "success", "data": data})
        if path == "/v1/user/balance":
            return httpx.Response(200, json={"credits": 1234.5})
        if path == "/api/whoami-v2":
            return httpx.Response(200, json={"name": "newcomer", "type": "user", "canPay": False})
        if path == "/v1/models":
            return httpx.Response(200, json={"object": "list", "data": [{"id": "gpt-4.1"}]})
        if path == "/v1/chat/completions":
            return httpx.Response(200, json={"choices": [{"message": {"content": "OK"}}]})
        return httpx.Response(404, json={"code": 404, "message": "not found"})

    return httpx.MockTransport(handler), seen


def env(**extra: str) -> dict[str, str]:
    return {"WAVESPEED_API_KEY": GOOD, **extra}


@pytest.mark.parametrize(("path", "shape"), [("/api/v3/balance", "flat"), ("/api/v3/account/balance", "with_currency")])
def test_wavespeed_balance_both_documented_paths_and_shapes(path: str, shape: str) -> None:
    transport, seen = api(path, shape)
    (ws,) = run_doctor(providers=("wavespeed",), env=env(), transport=transport)
    assert ws.ok and ws.reachable and ws.balance == "$156.78" and ws.balance_usd == pytest.approx(156.78)
    assert "level bronze: 3 concurrent / 10 images/min" in ws.limits
    assert GOOD not in ws.line() and GOOD not in str(ws.to_dict())
    assert str(seen[0].url) == "https://api.wavespeed.ai/api/v3/balance"


def echoing_api(status: int) -> httpx.MockTransport:
    """A hostile server that answers every request with ``status`` and the caller's key in its message."""

    def handler(request: httpx.Request) -> httpx.Response:
        key = request.headers.get("authorization", "").removeprefix("Bearer ")
        return httpx.Response(status, json={"code": status, "message": f"Invalid API key {key}"})

    return httpx.MockTransport(handler)


@pytest.mark.parametrize("status", [401, 400, 500])
@pytest.mark.parametrize("provider", ["wavespeed", "stability", "huggingface", "judge"])
def test_wrong_key_is_named_without_showing_it(provider: str, status: int) -> None:
    var = PROVIDER_KEY_ENV[provider]
    keys = {var: BAD, "EVALKIT_JUDGE_MODEL": "gpt-4.1"}
    (check,) = run_doctor(providers=(provider,), env=keys, transport=echoing_api(status))
    assert check.ok is False and check.problem
    if status == 401:
        assert "the key was rejected" in check.problem and var in check.problem
    else:  # the server's message is shown, with the key it echoed masked (not dropped silently)
        assert f"HTTP {status}" in check.problem and "Invalid API key ***" in check.problem
    for text in (check.line(), check.problem, str(check.to_dict()), repr(check)):
        assert BAD not in text


def test_unreachable_empty_balance_and_not_configured() -> None:
    transport, _ = api(down=True)
    (ws,) = run_doctor(providers=("wavespeed",), env=env(WAVESPEED_BASE_URL="http://10.9.9.9:1"), transport=transport)
    assert ws.ok is False and ws.reachable is False and ws.problem.startswith("unreachable")
    transport, _ = api(balance=0.0)
    (ws,) = run_doctor(providers=("wavespeed",), env=env(), transport=transport)
    assert ws.ok is False and "balance is used up" in ws.problem
    checks = run_doctor(providers=("stability", "huggingface", "judge"), env={}, transport=api()[0])
    assert [c.configured for c in checks] == [False, False, False]
    assert all("not configured" in c.line() and c.key_env in c.line() for c in checks)


def test_other_providers_and_judge_free_and_paid() -> None:
    transport, seen = api()
    keys = {
        "STABILITY_API_KEY": GOOD,
        "HF_TOKEN": GOOD,
        "EVALKIT_JUDGE_API_KEY": GOOD,
        "EVALKIT_JUDGE_MODEL": "gpt-4.1",
    }
    st, hf, judge = run_doctor(providers=("stability", "huggingface", "judge"), env=keys, transport=transport)
    assert st.ok and st.balance_usd == pytest.approx(12.345) and "1,234.5 credits" in st.balance
    assert hf.ok and "account newcomer" in hf.notes and "not offered" in hf.balance
    assert judge.ok and not any(r.url.path.endswith("/chat/completions") for r in seen)  # free by default
    (judge,) = run_doctor(providers=("judge",), env=keys, transport=transport, paid_judge=True)
    assert judge.ok and any(r.url.path == "/v1/chat/completions" for r in seen)
    (judge,) = run_doctor(providers=("judge",), env={**keys, "EVALKIT_JUDGE_API_KEY": BAD}, transport=transport)
    assert judge.ok is False and "the key was rejected" in judge.problem
