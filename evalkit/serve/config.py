"""``evalkit serve``'s settings (:class:`ServeConfig`) and the checks made before it listens."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from evalkit.catalog import Catalog
from evalkit.errors import InvalidInputError
from evalkit.providers.http import is_loopback_host

TOKEN_ENV = "EVALKIT_SERVE_TOKEN"
EDIT_PATH = "/api/image-studio/edit/process"
MODELS_PATH = "/api/image-studio/edit/models"
USAGE_PATH = "/api/image-studio/edit/usage"


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def default_max_in_flight(max_body_bytes: int) -> int:
    """Edits held at once: at least 64 (a busy app's 50 concurrent edits are a tested case), more while a flood of
    maximal bodies — each about its body size once its image text is decoded as it streams in — still fits in an
    eighth of this machine's memory; at most 256."""
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not POSIX: assume 8 GiB
        mem = 8 << 30
    return max(64, min(256, mem // 8 // max(1, max_body_bytes)))


def normalise_origin(value: str) -> str:
    """``scheme://host[:port]`` in lower case with the scheme's default port dropped; raises on anything else
    (a path, a query, no host), so ``--allow-origin`` names exactly what a browser sends in ``Origin``."""
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInputError(
            f"--allow-origin {value!r} is not an origin", hint="give scheme://host[:port], e.g. https://app.example"
        )
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username or parts.password:
        raise InvalidInputError(
            f"--allow-origin {value!r} has more than an origin (a path, query or user)",
            hint="give scheme://host[:port] only, as the browser sends it in the Origin header",
        )
    host = parts.hostname.lower()
    host = f"[{host}]" if ":" in host else host
    port = parts.port
    default = {"http": 80, "https": 443}[parts.scheme]
    return f"{parts.scheme}://{host}" + (f":{port}" if port and port != default else "")


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
    token: str | None = field(default=None, repr=False)
    default_tier: str = "standard"
    max_body_bytes: int = _env_int("EVALKIT_SERVE_MAX_BODY_BYTES", 25 * 1024 * 1024)
    max_image_bytes: int = _env_int("EVALKIT_SERVE_MAX_IMAGE_BYTES", 15 * 1024 * 1024)
    max_image_pixels: int = _env_int("EVALKIT_SERVE_MAX_IMAGE_PIXELS", 4096 * 4096)
    max_images: int = 8
    #: per client (its real peer address) and minute; 0 turns the limit off
    edits_per_minute: int = _env_int("EVALKIT_SERVE_EDITS_PER_MINUTE", 30)
    #: edits held at once (reading, decoding or waiting upstream); beyond it 503 + Retry-After. None: sized for
    #: this machine (:func:`default_max_in_flight`)
    max_in_flight: int | None = None
    #: other origins whose pages may call the API (CORS); the server's own origin is always allowed
    allow_origins: tuple[str, ...] = ()
    #: serve an explicitly named model even when it is not the tier's default or an eligible alternative
    allow_any_model: bool = False
    #: server-wide spending cap per UTC day, and per client (peer) per UTC day; None: no cap
    daily_budget_usd: float | None = None
    client_daily_budget_usd: float | None = None
    #: extra Host header values accepted without a token (tests use "testserver")
    extra_hosts: tuple[str, ...] = ()
    clock: Any = field(default=time.monotonic, repr=False)

    def __post_init__(self) -> None:
        self.allow_origins = tuple(normalise_origin(o) for o in self.allow_origins)
        for name in ("daily_budget_usd", "client_daily_budget_usd"):
            value = getattr(self, name)
            if value is not None and not value >= 0:
                raise InvalidInputError(f"{name.replace('_usd', '').replace('_', '-')} must be ≥ 0, got {value}")
        if self.max_in_flight is None:
            self.max_in_flight = default_max_in_flight(self.max_body_bytes)
        if self.max_in_flight < 1:
            raise InvalidInputError(f"--max-in-flight must be ≥ 1, got {self.max_in_flight}")


def make_config(tiers: str | os.PathLike | None, *, host: str, token: str | None = None, **kw: Any) -> ServeConfig:
    """A checked ServeConfig: token from ``EVALKIT_SERVE_TOKEN`` unless given; non-loopback needs one."""
    token = token if token is not None else (os.environ.get(TOKEN_ENV) or "").strip() or None
    if not is_loopback_host(host) and not token:
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
