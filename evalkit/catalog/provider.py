"""Facts about a provider (not one model): its default request limits, account levels, the default edit model.

Each bundled catalogue file may hold one ``[provider]`` table beside its ``[[model]]`` tables::

    [provider]
    name = "wavespeed"                        # the provider the facts are about (matches ModelSpec.provider)
    max_concurrent = 3                        # default concurrent requests ("cpu_count" = this machine's CPUs)
    images_per_minute = 10                    # default request rate; omit for none
    level_env = "EVALKIT_WAVESPEED_LEVEL"     # env var that names the account level in use
    default_level = "bronze"                  # the level when the env var is unset or unknown
    levels.bronze = { max_concurrent = 3, images_per_minute = 10 }
    default_edit_model = "qwen-edit-plus"     # generate_image_edit's model when none is named (one file says so)
    facts.limits = { source = "…", confidence = "high" }

The run engine asks :meth:`ProviderInfo.default_limits` for a provider's limits and never names a provider.
A later file's ``[provider]`` table for the same name replaces an earlier one (a workspace override).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from evalkit.catalog.spec import CONFIDENCE, Fact
from evalkit.errors import CatalogError

#: ``max_concurrent = "cpu_count"``: as many concurrent requests as this machine has CPUs (local baselines)
CPU_COUNT = "cpu_count"

_KEYS = {
    "name",
    "max_concurrent",
    "images_per_minute",
    "level_env",
    "default_level",
    "levels",
    "default_edit_model",
    "facts",
}


@dataclass(frozen=True)
class ProviderLevel:
    """One account level's limits."""

    #: concurrent requests allowed (None: no limit known)
    max_concurrent: int | None = None
    #: requests (images) per minute allowed (None: no limit known)
    images_per_minute: float | None = None


@dataclass(frozen=True)
class ProviderInfo:
    """What the catalogue knows about one provider as a whole."""

    #: the provider's name, as in ``ModelSpec.provider``
    name: str
    #: default concurrent requests, or ``"cpu_count"``; None when no default is known
    max_concurrent: int | str | None = None
    #: default requests (images) per minute; None for no limit
    images_per_minute: float | None = None
    #: account levels by lower-case name, each with its own limits (they replace the defaults above)
    levels: Mapping[str, ProviderLevel] = field(default_factory=dict)
    #: environment variable naming the account level in use
    level_env: str | None = None
    #: the level assumed when ``level_env`` is unset or names no known level
    default_level: str | None = None
    #: the model ``generate_image_edit`` uses when none is named (at most one provider says so)
    default_edit_model: str | None = None
    #: sources and confidence of these facts
    facts: Mapping[str, Fact] = field(default_factory=dict)
    #: the catalogue file these facts came from
    origin: str = ""

    def level(self, environ: Mapping[str, str] | None = None) -> str | None:
        """The account level in use: ``level_env``'s value if it names a known level, else ``default_level``."""
        if not self.levels:
            return None
        env = os.environ if environ is None else environ
        wanted = (env.get(self.level_env) or "").lower() if self.level_env else ""
        return wanted if wanted in self.levels else self.default_level

    def default_limits(self, environ: Mapping[str, str] | None = None) -> tuple[int | None, float | None]:
        """``(max concurrent, images per minute)`` for the account level in use (or the plain defaults)."""
        level = self.level(environ)
        if level is not None and level in self.levels:
            lv = self.levels[level]
            return lv.max_concurrent, lv.images_per_minute
        conc = self.max_concurrent
        if conc == CPU_COUNT:
            conc = max(1, os.cpu_count() or 2)
        return (conc if isinstance(conc, int) else None), self.images_per_minute


def _number(value: Any, what: str, problems: list[str], *, integer: bool) -> Any:
    if value is None:
        return None
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok or value < 1:
        problems.append(f"{what} must be a {'whole ' if integer else ''}number ≥ 1, got {value!r}")
        return None
    return value if integer else float(value)


def parse_provider(raw: Any, origin: str) -> ProviderInfo:
    """Build a :class:`ProviderInfo` from one ``[provider]`` table, reporting every problem at once."""
    if not isinstance(raw, dict):
        raise CatalogError(f"{origin}: [provider] must be a table")
    problems: list[str] = []
    unknown = set(raw) - _KEYS
    if unknown:
        problems.append(f"unknown key(s) {sorted(unknown)} (typo?)")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        problems.append("missing required key 'name'")
    conc = raw.get("max_concurrent")
    if conc != CPU_COUNT:
        conc = _number(conc, "max_concurrent", problems, integer=True)
    rate = _number(raw.get("images_per_minute"), "images_per_minute", problems, integer=False)
    levels: dict[str, ProviderLevel] = {}
    for lname, lraw in (raw.get("levels") or {}).items():
        if not isinstance(lraw, dict) or set(lraw) - {"max_concurrent", "images_per_minute"}:
            problems.append(f"levels.{lname} must be a table of max_concurrent and images_per_minute")
            continue
        levels[lname.lower()] = ProviderLevel(
            _number(lraw.get("max_concurrent"), f"levels.{lname}.max_concurrent", problems, integer=True),
            _number(lraw.get("images_per_minute"), f"levels.{lname}.images_per_minute", problems, integer=False),
        )
    default_level = raw.get("default_level")
    if levels and default_level not in levels:
        problems.append(f"default_level must name one of the levels {sorted(levels)}, got {default_level!r}")
    level_env = raw.get("level_env")
    if level_env is not None and not isinstance(level_env, str):
        problems.append("level_env must be a string (an environment variable name)")
    default_model = raw.get("default_edit_model")
    if default_model is not None and not isinstance(default_model, str):
        problems.append("default_edit_model must be a model id")
    facts: dict[str, Fact] = {}
    for fname, f in (raw.get("facts") or {}).items():
        if not isinstance(f, dict) or "source" not in f or f.get("confidence") not in CONFIDENCE:
            problems.append(f"facts.{fname} needs a source and a confidence in {CONFIDENCE}")
            continue
        facts[fname] = Fact(source=f["source"], confidence=f["confidence"], note=f.get("note", ""))
    if problems:
        raise CatalogError(
            f"{origin}: [provider] " + "; ".join(problems), hint="see evalkit/catalog/provider.py for the format"
        )
    return ProviderInfo(
        name=str(name),
        max_concurrent=conc,
        images_per_minute=rate,
        levels=levels,
        level_env=level_env,
        default_level=default_level,
        default_edit_model=default_model,
        facts=facts,
        origin=origin,
    )
