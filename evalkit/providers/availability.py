"""Which models can actually be called: ``--models all`` means every catalogue model whose provider has its
key (in the environment, or given in the provider options as the demo and tests do), plus the offline
baselines, which need none.

Naming a model or ``provider:X`` explicitly is different: a missing key there is an error (raised by the
runner before anything is written), because the user asked for exactly that model.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from evalkit.catalog import Catalog, ModelSpec

__all__ = ["PROVIDER_KEYS", "ModelSelection", "has_key", "select_models"]

#: provider → (environment variable, constructor argument) that carry its key.
PROVIDER_KEYS: dict[str, tuple[str, str]] = {
    "wavespeed": ("WAVESPEED_API_KEY", "api_key"),
    "stability": ("STABILITY_API_KEY", "api_key"),
    "huggingface": ("HF_TOKEN", "token"),
}


@dataclass(frozen=True)
class ModelSelection:
    """The models a run will call and, for ``all``, the providers left out for want of a key."""

    models: list[ModelSpec]
    #: provider → the environment variable that would add it
    left_out: dict[str, str] = field(default_factory=dict)

    def note(self) -> str | None:
        """One line naming each provider left out and the variable that would add it (None when none)."""
        if not self.left_out:
            return None
        parts = ", ".join(f"{p} (export {var}=…)" for p, var in sorted(self.left_out.items()))
        return f"--models all: left out for want of a key: {parts}"


def has_key(provider: str, options: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None) -> bool:
    """True when ``provider`` can authenticate: its key is in ``options`` or the environment.

    Providers evalkit does not know the key of (local baselines, third-party registrations) count as
    callable — they manage their own credentials.
    """
    if provider not in PROVIDER_KEYS:
        return True
    var, arg = PROVIDER_KEYS[provider]
    if options and options.get(arg):
        return True
    env = os.environ if env is None else env
    return bool(env.get(var, "").strip())


def select_models(
    catalog: Catalog,
    spec: str | Iterable[str] | None,
    provider_options: Mapping[str, Mapping[str, Any]] | None = None,
    env: Mapping[str, str] | None = None,
) -> ModelSelection:
    """``catalog.select(spec)``, where ``all`` (or None) keeps only the models that can be called."""
    models = catalog.select(spec)
    if not (spec is None or (isinstance(spec, str) and spec.strip() == "all")):
        return ModelSelection(models)
    opts = provider_options or {}
    keep, left_out = [], {}
    for m in models:
        if has_key(m.provider, opts.get(m.provider), env):
            keep.append(m)
        else:
            left_out[m.provider] = PROVIDER_KEYS[m.provider][0]
    return ModelSelection(keep, left_out)
