"""How fast a run may call each provider: concurrent requests and images per minute.

The defaults are catalogue data (each provider file's ``[provider]`` table, with its account levels);
this module only turns them into :class:`ProviderLimits` and parses ``--provider-limit``. It never names
a provider.
"""

from __future__ import annotations

from dataclasses import dataclass

from evalkit.catalog import ProviderInfo
from evalkit.errors import InvalidInputError
from evalkit.providers.http import is_loopback_url


@dataclass(frozen=True)
class ProviderLimits:
    """A provider's request limits within one run."""

    #: requests in flight at once (None: only the run's global concurrency applies)
    max_concurrent: int | None = None
    #: requests started per minute (None: no rate limit)
    images_per_minute: float | None = None


def default_provider_limits(info: ProviderInfo, base_url: str | None) -> ProviderLimits:
    """The catalogue's limits for a provider (its account level's, where it has levels).

    A provider pointed at a loopback server (a local simulator) gets none."""
    if base_url and is_loopback_url(base_url):
        return ProviderLimits()
    conc, per_min = info.default_limits()
    return ProviderLimits(conc, per_min)


def parse_provider_limits(spec: str | None) -> dict[str, ProviderLimits]:
    """``"wavespeed=100/500,stability=10"`` → limits (concurrent[/images per minute])."""
    out: dict[str, ProviderLimits] = {}
    for part in filter(None, (p.strip() for p in (spec or "").split(","))):
        try:
            name, value = part.split("=", 1)
            conc, _, rate = value.partition("/")
            out[name.strip()] = ProviderLimits(int(conc) if conc else None, float(rate) if rate else None)
        except ValueError:
            raise InvalidInputError(
                f"bad provider limit {part!r}", hint="write NAME=CONCURRENT[/IMAGES_PER_MINUTE], e.g. wavespeed=100/500"
            ) from None
    return out
