"""Providers: one protocol (:mod:`evalkit.providers.base`), one module per hosted API.

``create_provider(name, **config)`` builds a provider by the name used in catalogue entries
(``provider = "wavespeed"``). Third-party providers can be added with :func:`register_provider`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from evalkit.errors import InvalidInputError
from evalkit.providers.base import (
    EditError,
    EditOutcome,
    EditRequest,
    ImageEditOptions,
    ImageEditProvider,
    Latency,
    PreparedRequest,
    ProviderCapabilities,
    capabilities_of,
)

__all__ = [
    "EditError",
    "EditOutcome",
    "EditRequest",
    "ImageEditOptions",
    "ImageEditProvider",
    "Latency",
    "PreparedRequest",
    "ProviderCapabilities",
    "capabilities_of",
    "create_provider",
    "register_provider",
    "provider_names",
]

_REGISTRY: dict[str, str | Callable[..., ImageEditProvider]] = {
    "wavespeed": "evalkit.providers.wavespeed:WaveSpeedEditProvider",
    "stability": "evalkit.providers.stability:StabilityEditProvider",
    "huggingface": "evalkit.providers.huggingface:HuggingFaceEditProvider",
    "local": "evalkit.providers.local:LocalEditProvider",
}


def register_provider(name: str, factory: Callable[..., ImageEditProvider]) -> None:
    _REGISTRY[name] = factory


def provider_names() -> list[str]:
    return list(_REGISTRY)


def create_provider(name: str, **config: Any) -> ImageEditProvider:
    try:
        target = _REGISTRY[name]
    except KeyError:
        raise InvalidInputError(
            f"no provider named {name!r}", hint=f"known providers: {', '.join(_REGISTRY)}"
        ) from None
    if isinstance(target, str):
        module, _, attr = target.partition(":")
        target = getattr(importlib.import_module(module), attr)
    return target(**config)
