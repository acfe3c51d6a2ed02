"""Tier defaults that follow the evidence: what tonight's decision would change in the file a product serves.

:func:`diff_against` compares a :class:`~evalkit.decide.tiers.TierDecision` with a served
``tier_defaults.json`` (schema ``evalkit.tier_defaults/1``) and lists every tier × operation whose default
would change, with why: the constraint the served default now fails, or the quality comparison that now
prefers another model (the decision's own rationale for both). `evalkit tiers RUN --against SERVED.json`
prints them and exits 1 when there is one, so an operator reviews before promoting the new file; `evalkit
serve` reloads a promoted file as it does today.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from evalkit.decide.tiers import SCHEMA, OperationDecision, TierDecision
from evalkit.errors import InvalidInputError


@dataclass(frozen=True)
class DefaultChange:
    tier: str
    operation: str
    served: str | None  # the served default (None: none served)
    new: str | None  # tonight's default (None: none would be)
    served_status: str | None
    new_status: str | None
    why: str


def load_served(path: str | os.PathLike) -> dict[str, Any]:
    """Read a served tier_defaults.json, checking its schema."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InvalidInputError(
            f"no served tier defaults at {p}", hint="pass the tier_defaults.json the product serves"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInputError(f"{p} is not a readable tier_defaults.json ({exc})") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA or not isinstance(data.get("tiers"), dict):
        raise InvalidInputError(
            f"{p} is not a tier defaults file (schema {data.get('schema') if isinstance(data, dict) else None!r})",
            hint=f"expected schema {SCHEMA}, as `evalkit tiers` writes",
        )
    return data


def _why(served: str | None, decision: OperationDecision | None, served_status: str | None) -> str:
    if decision is None:
        return "the tier or operation is not in tonight's decision (no model was run on it, or the tier was removed)"
    parts = []
    if served is not None and served != decision.default:
        alt = next((a for a in decision.alternatives if a.model == served), None)
        if alt is not None:
            parts.append(f"{served}: {alt.rationale}")
        elif decision.provisional == served:
            parts.append(f"{served}: {decision.rationale}")
        else:
            parts.append(f"{served} was not run tonight")
    if decision.default is not None:
        parts.append(decision.rationale)
    elif served_status != decision.status or served is not None:
        parts.append(f"{decision.status}: {decision.rationale}")
    return " — ".join(dict.fromkeys(parts))


def diff_against(decision: TierDecision, served: dict[str, Any] | str | os.PathLike) -> list[DefaultChange]:
    """Every tier × operation whose default differs between ``served`` and ``decision``, with why."""
    data = served if isinstance(served, dict) else load_served(served)
    changes = []
    tiers = dict.fromkeys([*data["tiers"], *decision.operations])
    for tier in tiers:
        old_ops = (data["tiers"].get(tier) or {}).get("operations") or {}
        new_ops = decision.operations.get(tier, {})
        for op in dict.fromkeys([*old_ops, *new_ops]):
            old = old_ops.get(op) or {}
            new = new_ops.get(op)
            served_default = old.get("default") if old.get("status", "ok") == "ok" else None
            new_default = new.default if new is not None else None
            if served_default == new_default:
                continue
            changes.append(
                DefaultChange(
                    tier,
                    op,
                    served_default,
                    new_default,
                    old.get("status"),
                    new.status if new else None,
                    _why(served_default, new, old.get("status")),
                )
            )
    return changes


def changes_frame(changes: list[DefaultChange]) -> pd.DataFrame:
    return pd.DataFrame(
        [{"tier": c.tier, "operation": c.operation, "served": c.served or "—", "new": c.new or "—"} for c in changes],
        columns=["tier", "operation", "served", "new"],
    )


__all__ = ["DefaultChange", "changes_frame", "diff_against", "load_served"]
