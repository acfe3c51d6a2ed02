"""The edit-model catalogue: every model evalkit knows, loaded from data files.

Bundled entries live in ``evalkit/catalog/*.toml`` (one file per provider). A user adds a model, or
overrides a bundled one by id, by dropping a ``*.toml`` file with ``[[model]]`` tables into
``<workspace>/catalog/`` (or a directory named in ``$EVALKIT_CATALOG_PATH``, ``:``-separated) —
no code. Later files win; each entry remembers the file it came from (``ModelSpec.origin``).

A file may also hold one ``[provider]`` table: facts about the provider as a whole — default request
limits, account levels, the default edit model (:class:`~evalkit.catalog.provider.ProviderInfo`).
"""

from __future__ import annotations

import hashlib
import json
import os
import tomllib
from collections.abc import Iterable, Iterator
from pathlib import Path

from evalkit.catalog.provider import ProviderInfo, ProviderLevel, parse_provider
from evalkit.catalog.spec import (
    OPERATIONS,
    Fact,
    InputsRule,
    Limits,
    MaskRule,
    ModelSpec,
    ParamSpec,
    PriceRule,
    SeedRule,
    SizeRule,
    normalise_operation,
    parse_model,
)
from evalkit.errors import CatalogError, UnknownModelError

__all__ = [
    "Catalog",
    "ModelSpec",
    "OPERATIONS",
    "Fact",
    "InputsRule",
    "Limits",
    "MaskRule",
    "ParamSpec",
    "PriceRule",
    "ProviderInfo",
    "ProviderLevel",
    "SeedRule",
    "SizeRule",
    "load_catalog",
    "normalise_operation",
]

BUNDLED_DIR = Path(__file__).parent


def _read_toml(path: Path) -> dict:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise CatalogError(f"catalogue file {path} is not valid TOML: {exc}", hint="fix the syntax") from None
    except OSError as exc:
        raise CatalogError(f"catalogue file {path} cannot be read: {exc.strerror}") from None


def _entries(path: Path) -> tuple[list[ModelSpec], ProviderInfo | None]:
    data = _read_toml(path)
    models = data.get("model")
    if not isinstance(models, list):
        raise CatalogError(
            f"catalogue file {path} has no [[model]] tables", hint="see evalkit/catalog/spec.py for the format"
        )
    problems, specs = [], []
    for raw in models:
        try:
            specs.append(parse_model(raw, str(path)))
        except CatalogError as exc:
            problems.append(str(exc.message))
    if problems:
        raise CatalogError("\n".join(problems), hint="fix the catalogue file (see evalkit/catalog/spec.py)")
    provider = parse_provider(data["provider"], str(path)) if "provider" in data else None
    return specs, provider


class Catalog:
    """An ordered, id-indexed set of :class:`ModelSpec`."""

    def __init__(self, models: Iterable[ModelSpec], providers: Iterable[ProviderInfo] = ()):
        self._models: dict[str, ModelSpec] = {}
        for m in models:
            self._models[m.id] = m  # later entries override earlier ones
        self._aliases = {a: m.id for m in self._models.values() for a in m.aliases}
        self._providers: dict[str, ProviderInfo] = {}
        for p in providers:
            self._providers[p.name] = p  # a later file's [provider] table replaces an earlier one

    @classmethod
    def load(cls, workspace: str | os.PathLike | None = None, extra_dirs: Iterable[str | os.PathLike] = ()) -> Catalog:
        files = sorted(BUNDLED_DIR.glob("*.toml"))
        dirs: list[Path] = []
        env = os.environ.get("EVALKIT_CATALOG_PATH", "")
        dirs += [Path(d) for d in env.split(os.pathsep) if d]
        if workspace is not None:
            dirs.append(Path(workspace) / "catalog")
        dirs += [Path(d) for d in extra_dirs]
        for d in dirs:
            if d.is_file() and d.suffix == ".toml":
                files.append(d)
            elif d.is_dir():
                files += sorted(d.glob("*.toml"))
        specs: list[ModelSpec] = []
        providers: list[ProviderInfo] = []
        for f in files:
            models, provider = _entries(f)
            specs += models
            if provider is not None:
                providers.append(provider)
        return cls(specs, providers)

    def provider(self, name: str) -> ProviderInfo:
        """Facts about provider ``name`` (limits, account levels); an empty :class:`ProviderInfo` if none."""
        return self._providers.get(name) or ProviderInfo(name=name)

    @property
    def default_edit_model(self) -> str | None:
        """The model ``generate_image_edit`` uses when none is named, as the catalogue data says."""
        named = [p.default_edit_model for p in self._providers.values() if p.default_edit_model]
        return named[-1] if named else None

    def get(self, model_id: str) -> ModelSpec:
        mid = self._aliases.get(model_id, model_id)
        try:
            return self._models[mid]
        except KeyError:
            raise UnknownModelError(model_id, list(self._models)) from None

    def __contains__(self, model_id: object) -> bool:
        return model_id in self._models or model_id in self._aliases

    def __iter__(self) -> Iterator[ModelSpec]:
        return iter(self._models.values())

    def __len__(self) -> int:
        return len(self._models)

    def ids(self) -> list[str]:
        return list(self._models)

    def select(self, spec: str | Iterable[str] | None) -> list[ModelSpec]:
        """Models named by ``"all"``, ``"provider:wavespeed"``, ``"id,id"`` or a list of ids.

        Draft entries (``draft = true``) are left out of ``all`` and ``provider:NAME``; naming one by id
        selects it.
        """
        if spec is None or spec == "all":
            return [m for m in self if not m.draft]
        names = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else list(spec)
        out: list[ModelSpec] = []
        for name in names:
            if not name:
                continue
            if name.startswith("provider:"):
                out += [m for m in self if m.provider == name.split(":", 1)[1] and not m.draft]
            else:
                out.append(self.get(name))
        seen, unique = set(), []
        for m in out:
            if m.id not in seen:
                seen.add(m.id)
                unique.append(m)
        return unique

    def for_operation(self, operation: str) -> list[ModelSpec]:
        op = normalise_operation(operation)
        return [m for m in self if op in m.operations and not m.draft]

    def fingerprint(self) -> str:
        """A hash of every entry's facts (changes when a price or parameter changes)."""
        blob = json.dumps([m.summary() | {"origin": ""} for m in self], sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def load_catalog(workspace: str | os.PathLike | None = None) -> Catalog:
    return Catalog.load(workspace)
