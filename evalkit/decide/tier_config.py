"""Price-tier definitions: what a model must satisfy to be the default for users on a plan.

Tiers live in TOML. The bundled ``evalkit/decide/tiers.toml`` defines ``free``, ``standard`` and
``premium``; a workspace's ``tiers.toml``, or a file passed explicitly (``--tiers FILE``), replaces it
as a whole — a file says exactly which tiers exist, nothing is merged behind the user's back::

    schema = "evalkit.tiers/1"          # optional

    [tiers.standard]
    description = "Paying users"        # optional text
    max_cost_usd = 0.05                 # list price of one edit (mean price_usd per attempted call)
    max_latency_p95_ms = 60000          # p95 of total_ms over completed calls
    allowed_vendors = ["Google"]        # optional: catalogue `vendor` values allowed
    allowed_providers = ["wavespeed"]   # optional: catalogue `provider` values allowed
    min_success_rate = 0.9              # completed / attempted, 0–1
    min_calls = 10                      # completed calls per operation needed to be chosen

Every limit is optional (absent = no limit). A file with problems raises :class:`TierConfigError`
listing every problem, each naming its key (``tiers.standard.max_cost_usd: …``).
"""

from __future__ import annotations

import difflib
import math
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evalkit.errors import InvalidInputError
from evalkit.store import check_id

BUNDLED_TIERS = Path(__file__).with_name("tiers.toml")
SCHEMA = "evalkit.tiers/1"
TIER_KEYS = (
    "description",
    "max_cost_usd",
    "max_latency_p95_ms",
    "allowed_vendors",
    "allowed_providers",
    "min_success_rate",
    "min_calls",
)


class TierConfigError(InvalidInputError):
    """A tiers file that does not parse or does not describe its tiers correctly."""

    def __init__(self, origin: str, problems: list[str]):
        listing = "\n".join(f"  - {p}" for p in problems)
        super().__init__(
            f"tier file {origin} has {len(problems)} problem(s):\n{listing}",
            hint="fix these keys (the format is in evalkit/decide/tiers.toml and evalkit/decide/tier_config.py)",
        )
        self.problems = list(problems)


@dataclass(frozen=True)
class Tier:
    """One price tier's constraints (None = no limit)."""

    name: str
    description: str = ""
    max_cost_usd: float | None = None
    max_latency_p95_ms: float | None = None
    allowed_vendors: tuple[str, ...] | None = None
    allowed_providers: tuple[str, ...] | None = None
    min_success_rate: float = 0.0
    min_calls: int = 1
    origin: str = ""

    def constraints(self) -> dict[str, Any]:
        """The constraints as written to tier_defaults.json (lists, not tuples)."""
        return {
            "max_cost_usd": self.max_cost_usd,
            "max_latency_p95_ms": self.max_latency_p95_ms,
            "allowed_vendors": list(self.allowed_vendors) if self.allowed_vendors is not None else None,
            "allowed_providers": list(self.allowed_providers) if self.allowed_providers is not None else None,
            "min_success_rate": self.min_success_rate,
            "min_calls": self.min_calls,
        }


def _number(
    value: Any, where: str, problems: list[str], *, low: float, high: float | None = None, low_open: bool = False
) -> float | None:
    bounds = f"{'>' if low_open else '≥'} {low:g}" + (f" and ≤ {high:g}" if high is not None else "")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        problems.append(f"{where}: must be a number {bounds} (got {value!r})")
        return None
    if value < low or (low_open and value == low) or (high is not None and value > high):
        problems.append(f"{where}: must be {bounds} (got {value!r})")
        return None
    return float(value)


def _names(value: Any, where: str, problems: list[str]) -> tuple[str, ...] | None:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
        problems.append(f"{where}: must be a non-empty list of names (got {value!r})")
        return None
    return tuple(v.strip() for v in value)


def parse_tier(name: str, raw: Any, origin: str, problems: list[str]) -> Tier | None:
    """One ``[tiers.<name>]`` table; problems are appended (each naming its key)."""
    where = f"tiers.{name}"
    try:
        check_id(name, "tier name")
    except InvalidInputError:
        problems.append(f"{where}: the tier name must be a simple id (letters, digits, '.', '_', '-')")
        return None
    if not isinstance(raw, dict):
        problems.append(f"{where}: must be a table ([tiers.{name}]), got {type(raw).__name__}")
        return None
    before = len(problems)
    for key in raw:
        if key not in TIER_KEYS:
            close = difflib.get_close_matches(key, TIER_KEYS, n=1)
            problems.append(
                f"{where}.{key}: unknown key"
                + (f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(TIER_KEYS)})")
            )
    fields: dict[str, Any] = {"name": name, "origin": origin}
    if "description" in raw:
        if isinstance(raw["description"], str):
            fields["description"] = raw["description"]
        else:
            problems.append(f"{where}.description: must be text (got {raw['description']!r})")
    if "max_cost_usd" in raw:
        fields["max_cost_usd"] = _number(raw["max_cost_usd"], f"{where}.max_cost_usd", problems, low=0.0)
    if "max_latency_p95_ms" in raw:
        fields["max_latency_p95_ms"] = _number(
            raw["max_latency_p95_ms"], f"{where}.max_latency_p95_ms", problems, low=0.0, low_open=True
        )
    for key in ("allowed_vendors", "allowed_providers"):
        if key in raw:
            fields[key] = _names(raw[key], f"{where}.{key}", problems)
    if "min_success_rate" in raw:
        fields["min_success_rate"] = _number(
            raw["min_success_rate"], f"{where}.min_success_rate", problems, low=0.0, high=1.0
        )
    if "min_calls" in raw:
        v = raw["min_calls"]
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            problems.append(f"{where}.min_calls: must be a whole number ≥ 1 (got {v!r})")
        else:
            fields["min_calls"] = v
    if len(problems) > before:
        return None
    return Tier(**fields)


def parse_tiers(data: Any, origin: str) -> dict[str, Tier]:
    """Validate a parsed tiers document; raises :class:`TierConfigError` listing every problem."""
    problems: list[str] = []
    if not isinstance(data, dict):
        raise TierConfigError(origin, ["the file must be a TOML document with [tiers.<name>] tables"])
    for key in data:
        if key not in ("schema", "tiers"):
            problems.append(f"{key}: unknown top-level key (expected 'schema' and [tiers.<name>] tables)")
    if "schema" in data and data["schema"] != SCHEMA:
        problems.append(f"schema: this evalkit reads {SCHEMA!r} (got {data['schema']!r})")
    raw_tiers = data.get("tiers")
    if not isinstance(raw_tiers, dict) or not raw_tiers:
        problems.append("tiers: no tiers defined — add at least one [tiers.<name>] table")
        raise TierConfigError(origin, problems)
    tiers = {}
    for name, raw in raw_tiers.items():
        tier = parse_tier(str(name), raw, origin, problems)
        if tier is not None:
            tiers[tier.name] = tier
    if problems:
        raise TierConfigError(origin, problems)
    return tiers


def load_tiers(path: str | os.PathLike | None = None, *, workspace: str | os.PathLike | None = None) -> dict[str, Tier]:
    """Tiers from ``path`` if given, else ``<workspace>/tiers.toml`` if it exists, else the bundled file."""
    if path is not None:
        file = Path(path)
        if not file.is_file():
            raise TierConfigError(str(file), ["the file does not exist (pass an existing tiers TOML file)"])
    elif workspace is not None and (Path(workspace) / "tiers.toml").is_file():
        file = Path(workspace) / "tiers.toml"
    else:
        file = BUNDLED_TIERS
    try:
        with file.open("rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise TierConfigError(str(file), [f"not valid TOML: {exc}"]) from None
    except OSError as exc:
        raise TierConfigError(str(file), [f"cannot be read: {exc.strerror}"]) from None
    return parse_tiers(data, str(file))


__all__ = ["Tier", "TierConfigError", "load_tiers", "parse_tiers", "BUNDLED_TIERS", "SCHEMA"]
