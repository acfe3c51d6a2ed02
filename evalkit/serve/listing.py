"""The selector's data: ``GET /api/image-studio/edit/models`` — per tier and operation the default, the
alternatives with their price, latency, quality and evidence, and the order in which models would be tried."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from evalkit.catalog import Catalog
from evalkit.decide.routing import TierDefaults, TierDefaultsError, alternative_eligibility, plan_route
from evalkit.serve.guards import ApiError


def _age_days(generated_at: str | None) -> float | None:
    if not generated_at:
        return None
    try:
        t = datetime.fromisoformat(generated_at.replace("Z", "+00:00"))
    except ValueError:
        return None
    t = t if t.tzinfo else t.replace(tzinfo=UTC)
    return round((datetime.now(UTC) - t).total_seconds() / 86400, 3)


def _model_facts(catalog: Catalog, model: str) -> dict[str, Any]:
    if model not in catalog:
        return {"display_name": model, "vendor": None, "provider": None, "list_price_usd": None}
    spec = catalog.get(model)
    try:
        price = spec.price_for_1024()
    except Exception:  # noqa: BLE001  (a price rule that needs parameters: shown as unknown)
        price = None
    return {
        "display_name": spec.display_name,
        "vendor": spec.vendor,
        "provider": spec.provider,
        "list_price_usd": price,
    }


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def _model_entry(
    catalog: Catalog, model: Any, d: dict[str, Any], role: str, eligibility: str, rationale: Any
) -> dict[str, Any]:
    """One model of an operation in the listing: its role, the run's figures for it (``d``: the operation's own
    entry for the default or provisional model, an alternative's entry otherwise) and the catalogue's facts."""
    return {
        "model": model,
        "role": role,
        "eligibility": eligibility,
        "cost_usd": _num(d.get("cost_usd")),
        "latency_p95_ms": _num(d.get("latency_p95_ms")),
        "quality": _num(d.get("quality")),
        "quality_ci": list(d.get("quality_ci") or [None, None]),
        "evidence": {"n": d.get("n"), "completed": d.get("completed"), "success_rate": d.get("success_rate")},
        "rationale": rationale,
        **_model_facts(catalog, str(model)),
    }


def models_listing(defaults: TierDefaults, catalog: Catalog, tier: str | None, allow_provisional: bool) -> dict:
    tiers = defaults.tiers
    if tier is not None and tier not in tiers:
        raise ApiError(404, "invalid_input", f"no tier {tier!r}; tiers: {', '.join(tiers)}")
    out_tiers: dict[str, Any] = {}
    for name, entry in tiers.items():
        if tier is not None and name != tier:
            continue
        ops: dict[str, Any] = {}
        for op, d in (entry.get("operations") or {}).items():
            models = []
            head = d.get("default") or d.get("provisional")
            if head:
                role, eligibility = (
                    ("default", "eligible") if d.get("default") else ("provisional", "insufficient_evidence")
                )
                models.append(_model_entry(catalog, head, d, role, eligibility, d.get("rationale")))
            for alt in d.get("alternatives") or []:
                models.append(
                    _model_entry(
                        catalog,
                        alt.get("model"),
                        alt,
                        "alternative",
                        alternative_eligibility(alt),
                        str(alt.get("rationale") or ""),
                    )
                )
            try:
                route = plan_route(defaults, name, op, allow_provisional=allow_provisional, catalog=catalog)
                order, route_error = route.models, None
            except TierDefaultsError as exc:
                order, route_error = [], str(exc)
            ops[op] = {
                "status": d.get("status"),
                "default": d.get("default"),
                "provisional": d.get("provisional"),
                "rationale": d.get("rationale"),
                "run_id": defaults.run_id,
                "fallback_order": order,
                "unavailable": route_error,
                "models": models,
            }
        out_tiers[name] = {
            "description": entry.get("description"),
            "constraints": entry.get("constraints") or {},
            "operations": ops,
        }
    return {
        "run_id": defaults.run_id,
        "generated_at": defaults.generated_at,
        "age_days": _age_days(defaults.generated_at),
        "simulated": defaults.simulated,
        "source": Path(defaults.source).name,
        "quality": defaults.data.get("quality"),
        "warnings": list(defaults.warnings),
        "tiers": out_tiers,
    }
