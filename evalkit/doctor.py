"""``evalkit doctor``: a pre-flight check of every provider before money is spent.

For each provider, one :class:`ProviderCheck`: is its key set (never shown), which base URL evalkit will
call, does that server answer, what does the account hold (balance), which limits evalkit will apply,
and what is wrong if anything. Every check here is free; the judge's paid check (one tiny chat
request) runs only with ``paid_judge=True`` (``evalkit doctor --judge``).

What each provider is asked (all free):

* WaveSpeed — ``GET /api/v3/balance`` (``data.balance``, what the official desktop app reads), else
  ``GET /api/v3/account/balance`` (``data: {balance, currency}``): the two documented paths and shapes
  (reference: wavespeed-models-2026.md §4).
* Stability AI — ``GET /v1/user/balance`` → ``{"credits": n}`` (1 credit = US$0.01).
* Hugging Face — ``GET /api/whoami-v2`` (validates the token; the API publishes no balance).
* The judge — ``GET <base>/models`` (OpenAI-compatible); with ``--judge`` also one 1-token chat request.

This module sits at the top of the package (like :mod:`evalkit.demo`) because it reads providers,
the judge's configuration and the engine's limits together.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

from evalkit.credentials import redact
from evalkit.providers.http import safe_url

__all__ = ["ProviderCheck", "PROVIDER_KEY_ENV", "run_doctor"]

#: the variable holding each provider's key (the judge's is optional for a loopback judge).
PROVIDER_KEY_ENV = {
    "wavespeed": "WAVESPEED_API_KEY",
    "stability": "STABILITY_API_KEY",
    "huggingface": "HF_TOKEN",
    "judge": "EVALKIT_JUDGE_API_KEY",
}
WAVESPEED_BALANCE_PATHS = ("/api/v3/balance", "/api/v3/account/balance")
STABILITY_BALANCE_PATH = "/v1/user/balance"
HF_WHOAMI_PATH = "/api/whoami-v2"
HF_HUB_URL = "https://huggingface.co"
TIMEOUT_S = 10.0


@dataclass
class ProviderCheck:
    """One provider's pre-flight result. ``ok`` is None when the provider is not configured (no key)."""

    provider: str
    key_env: str
    key: str  # "set" | "not set" | "not needed (loopback server)"
    base_url: str
    configured: bool
    reachable: bool | None = None
    balance_usd: float | None = None
    balance: str | None = None  # as shown: "$156.78", "1,234 credits ($12.34)", "not offered by the API"
    limits: str | None = None
    ok: bool | None = None
    problem: str | None = None
    notes: list[str] = field(default_factory=list)

    def line(self) -> str:
        """One human line (never the key)."""
        if not self.configured:
            return f"{self.provider}: not configured — {self.key_env} is not set (export it to add this provider)"
        state = "ok" if self.ok else "FAILED"
        parts = [f"key {self.key}", self.base_url]
        parts.append("reachable" if self.reachable else "unreachable" if self.reachable is False else "not checked")
        if self.balance:
            parts.append(f"balance {self.balance}")
        if self.limits:
            parts.append(f"limits {self.limits}")
        text = f"{self.provider}: {state} — " + ", ".join(parts)
        if self.problem:
            text += f" — {self.problem}"
        for note in self.notes:
            text += f" ({note})"
        return text

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_doctor(
    *,
    paid_judge: bool = False,
    providers: tuple[str, ...] = ("wavespeed", "stability", "huggingface", "judge"),
    env: Mapping[str, str] | None = None,
    transport: httpx.BaseTransport | None = None,
    timeout_s: float = TIMEOUT_S,
) -> list[ProviderCheck]:
    """Check each provider (see the module docstring); ``transport`` lets tests answer in-process."""
    env = os.environ if env is None else env
    checks = []
    with httpx.Client(timeout=timeout_s, transport=transport, follow_redirects=False) as client:
        for name in providers:
            check = {"wavespeed": _wavespeed, "stability": _stability, "huggingface": _huggingface, "judge": _judge}[
                name
            ]
            result = check(client, env, paid_judge) if name == "judge" else check(client, env)  # type: ignore[operator]
            if result.problem:  # a server may echo the key in its message; the env given may not be os.environ
                result.problem = redact(result.problem, _key(env, PROVIDER_KEY_ENV[name]))
            checks.append(result)
    return checks


# ---- helpers ---------------------------------------------------------------------------------------


def _key(env: Mapping[str, str], var: str) -> str | None:
    value = env.get(var, "").strip()
    return value or None


def _loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    return host in ("localhost", "127.0.0.1", "::1")


def _get(client: httpx.Client, url: str, key: str | None, check: ProviderCheck) -> httpx.Response | None:
    """GET with the key; a transport failure is recorded on ``check`` (unreachable) and gives None."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    headers["Accept"] = "application/json"
    try:
        resp = client.get(url, headers=headers)
    except httpx.TimeoutException:
        check.reachable, check.ok = False, False
        check.problem = f"unreachable: no answer from {check.base_url} within {client.timeout.read:g} s"
        return None
    except httpx.HTTPError as exc:
        check.reachable, check.ok = False, False
        check.problem = f"unreachable: cannot connect to {check.base_url} ({type(exc).__name__})"
        return None
    check.reachable = True
    return resp


def _status_problem(resp: httpx.Response, check: ProviderCheck, what: str) -> bool:
    """Record a failed answer on ``check``; True when there was one."""
    if resp.status_code in (401, 403) and not _mentions_balance(resp):
        check.ok = False
        check.problem = f"the key was rejected (HTTP {resp.status_code} from {what}) — check {check.key_env}"
        return True
    if resp.status_code == 402 or (resp.status_code == 403 and _mentions_balance(resp)):
        check.ok = False
        check.problem = f"the account has no balance left (HTTP {resp.status_code}) — top up before running"
        return True
    if resp.status_code >= 400:
        check.ok = False
        check.problem = f"{what} answered HTTP {resp.status_code}: {_message(resp)[:160]}"
        return True
    return False


def _mentions_balance(resp: httpx.Response) -> bool:
    text = _message(resp).lower()
    return any(w in text for w in ("balance", "credit", "insufficient", "top up", "payment"))


def _message(resp: httpx.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return resp.text[:300]
    if isinstance(body, dict):
        for k in ("message", "error", "detail", "name"):
            v = body.get(k)
            if isinstance(v, str):
                return v
            if isinstance(v, dict) and isinstance(v.get("message"), str):
                return v["message"]
    return str(body)[:300]


def _json(resp: httpx.Response) -> Any:
    try:
        return resp.json()
    except ValueError:
        return None


def _limits(provider: str, base_url: str, env: Mapping[str, str]) -> str:
    """The limits a run will apply to ``provider`` (catalogue data; none against a local server)."""
    from evalkit.catalog import Catalog

    if _loopback(base_url):
        return "none (local server)"
    info = Catalog.load().provider(provider)
    conc, per_min = info.default_limits(env)
    parts = []
    if conc is not None:
        parts.append(f"{conc} concurrent")
    if per_min is not None:
        parts.append(f"{per_min:g} images/min")
    text = " / ".join(parts) or "none"
    level = info.level(env)
    if level is not None:
        chosen = info.level_env and (env.get(info.level_env) or "").lower() in info.levels
        text = f"level {level}: {text}" + ("" if chosen else f" (assumed; set {info.level_env})")
    return text


def _balance_problem(check: ProviderCheck) -> None:
    if check.balance_usd is not None and check.balance_usd <= 0:
        check.ok = False
        check.problem = "the balance is used up — top up before running (a run stops when it runs dry)"


# ---- providers ---------------------------------------------------------------------------------------


def _wavespeed(client: httpx.Client, env: Mapping[str, str]) -> ProviderCheck:
    from evalkit.providers.wavespeed import DEFAULT_BASE_URL

    var = PROVIDER_KEY_ENV["wavespeed"]
    base = (_key(env, "WAVESPEED_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
    key = _key(env, var)
    check = ProviderCheck("wavespeed", var, "set" if key else "not set", safe_url(base), configured=key is not None)
    if not key:
        return check
    check.limits = _limits("wavespeed", base, env)
    for path in WAVESPEED_BALANCE_PATHS:
        resp = _get(client, base + path, key, check)
        if resp is None:
            return check
        if resp.status_code == 404:
            continue
        if _status_problem(resp, check, path):
            return check
        data = (_json(resp) or {}).get("data") if isinstance(_json(resp), dict) else None
        value = data.get("balance") if isinstance(data, dict) else data if isinstance(data, (int, float)) else None
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                value = None
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            check.ok, check.problem = False, f"{path} answered without a balance (unexpected shape)"
            return check
        currency = data.get("currency", "USD") if isinstance(data, dict) else "USD"
        check.balance_usd = float(value) if currency == "USD" else None
        check.balance = f"${value:,.2f}" if currency == "USD" else f"{value:,.2f} {currency}"
        check.ok = True
        _balance_problem(check)
        return check
    check.ok = False
    check.problem = (
        f"neither balance endpoint exists at {check.base_url} (HTTP 404) — is WAVESPEED_BASE_URL the API root "
        "(without /api/v3)?"
    )
    return check


def _stability(client: httpx.Client, env: Mapping[str, str]) -> ProviderCheck:
    from evalkit.providers.stability import DEFAULT_BASE_URL

    var = PROVIDER_KEY_ENV["stability"]
    base = (_key(env, "STABILITY_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
    key = _key(env, var)
    check = ProviderCheck("stability", var, "set" if key else "not set", safe_url(base), configured=key is not None)
    if not key:
        return check
    check.limits = _limits("stability", base, env)
    resp = _get(client, base + STABILITY_BALANCE_PATH, key, check)
    if resp is None or _status_problem(resp, check, STABILITY_BALANCE_PATH):
        return check
    body = _json(resp)
    credits = body.get("credits") if isinstance(body, dict) else None
    if not isinstance(credits, (int, float)) or isinstance(credits, bool):
        check.ok, check.problem = False, f"{STABILITY_BALANCE_PATH} answered without credits (unexpected shape)"
        return check
    check.balance_usd = credits * 0.01  # 1 credit = US$0.01 (ecosystem.md §4)
    check.balance = f"{credits:,.1f} credits (${check.balance_usd:,.2f})"
    check.ok = True
    _balance_problem(check)
    return check


def _huggingface(client: httpx.Client, env: Mapping[str, str]) -> ProviderCheck:
    from evalkit.providers.huggingface import ENDPOINT_ENV, ROUTER_URL

    var = PROVIDER_KEY_ENV["huggingface"]
    endpoint = _key(env, ENDPOINT_ENV)
    base = (endpoint or ROUTER_URL).rstrip("/")
    key = _key(env, var)
    check = ProviderCheck("huggingface", var, "set" if key else "not set", safe_url(base), configured=key is not None)
    if not key:
        return check
    check.limits = _limits("huggingface", base, env)
    # the token is checked where the hub answers: the local server itself when one is configured
    hub = (endpoint if endpoint else _key(env, "HF_ENDPOINT") or HF_HUB_URL).rstrip("/")
    resp = _get(client, hub + HF_WHOAMI_PATH, key, check)
    if resp is None or _status_problem(resp, check, HF_WHOAMI_PATH):
        return check
    body = _json(resp)
    check.ok = True
    check.balance = "not offered by the API (see huggingface.co/settings/billing)"
    if isinstance(body, dict):
        if isinstance(body.get("name"), str):
            check.notes.append(f"account {body['name']}")
        if body.get("canPay") is False:
            check.notes.append("no payment method: only the monthly included credits")
    return check


def _judge(client: httpx.Client, env: Mapping[str, str], paid: bool) -> ProviderCheck:
    from evalkit.scoring.judge.config import DEFAULT_BASE_URL

    var = PROVIDER_KEY_ENV["judge"]
    base = (_key(env, "EVALKIT_JUDGE_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
    key = _key(env, var)
    model = _key(env, "EVALKIT_JUDGE_MODEL")
    loop = _loopback(base)
    configured = key is not None or (loop and _key(env, "EVALKIT_JUDGE_BASE_URL") is not None)
    shown = "set" if key else "not needed (loopback server)" if loop else "not set"
    check = ProviderCheck("judge", var, shown, safe_url(base), configured=configured)
    if not configured:
        return check
    if not model:
        check.ok = False
        check.problem = "EVALKIT_JUDGE_MODEL is not set (the judge model is pinned by name, e.g. gpt-4.1)"
        return check
    check.notes.append(f"model {model}")
    resp = _get(client, base + "/models", key, check)
    if resp is None or _status_problem(resp, check, "/models"):
        return check
    body = _json(resp)
    listed = [m.get("id") for m in body.get("data", []) if isinstance(m, dict)] if isinstance(body, dict) else []
    if listed and model not in listed:
        check.notes.append(f"{model} is not among the {len(listed)} models the endpoint lists")
    check.ok = True
    if not paid:
        check.notes.append("endpoint answers; `--judge` also sends one paid 1-token request")
        return check
    try:
        resp2 = client.post(
            base + "/chat/completions",
            headers={"Authorization": f"Bearer {key}"} if key else {},
            json={"model": model, "messages": [{"role": "user", "content": "Reply with OK."}], "max_tokens": 1},
        )
    except httpx.HTTPError as exc:
        check.ok, check.problem = False, f"the chat request failed ({type(exc).__name__})"
        return check
    if _status_problem(resp2, check, "/chat/completions"):
        return check
    body2 = _json(resp2)
    if not (isinstance(body2, dict) and body2.get("choices")):
        check.ok, check.problem = False, "/chat/completions answered without choices (not OpenAI-compatible?)"
        return check
    check.notes.append("a paid 1-token request answered")
    return check
