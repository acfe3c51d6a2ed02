"""Hand-written ``tier_defaults.json`` contents (schema evalkit.tier_defaults/1) for routing and serve tests.

The numbers are made up but consistent with the catalogue's list prices; the file says ``simulated: true``
because nothing here comes from real model outputs, so every loader in these tests passes
``allow_simulated=True`` (or ``--allow-simulated``)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any


def _alt(model: str, cost: float, quality: float | None, rationale: str, p95: float = 9000.0) -> dict[str, Any]:
    return {"model": model, "cost_usd": cost, "latency_p95_ms": p95, "quality": quality, "rationale": rationale}


def _op(default: str, cost: float, quality: float, alternatives: list[dict[str, Any]], **kw: Any) -> dict[str, Any]:
    d = {
        "default": default,
        "status": "ok",
        "provisional": None,
        "cost_usd": cost,
        "latency_p95_ms": 8000.0,
        "success_rate": 0.97,
        "completed": 24,
        "quality": quality,
        "quality_ci": [round(quality - 0.4, 2), round(quality + 0.4, 2)],
        "n": 24,
        "rationale": f"{default} has the highest viescore_o and no eligible model is cheaper.",
        "alternatives": alternatives,
    }
    d.update(kw)
    return d


def tier_defaults(*, simulated: bool = True, age_days: float = 0.0, run_id: str = "run-test-1") -> dict[str, Any]:
    generated = (datetime.now(UTC) - timedelta(days=age_days)).strftime("%Y-%m-%dT%H:%M:%SZ")
    excluded_max = _alt("flux-kontext-max", 0.08, 8.1, "excluded: costs $0.08 per edit > max $0.05")
    return {
        "schema": "evalkit.tier_defaults/1",
        "run_id": run_id,
        "generated_at": generated,
        "simulated": simulated,
        "quality": {"metric": "viescore_o", "source": "judge", "version": "t", "higher_is_better": True},
        "rule": {"test": "wilcoxon_signed_rank_one_sided_pratt", "alpha": 0.05},
        "tiers": {
            "free": {
                "description": "free plan",
                "constraints": {"max_cost_usd": 0.025, "max_latency_p95_ms": 30000, "allowed_providers": ["wavespeed"]},
                "operations": {
                    "general_edit": _op(
                        "qwen-edit",
                        0.02,
                        6.1,
                        [
                            _alt("hidream-e1-full", 0.024, 5.8, "eligible; viescore_o 5.8"),
                            _alt("seedream-v4-edit", 0.027, 7.0, "excluded: costs $0.027 per edit > max $0.025"),
                        ],
                    ),
                },
            },
            "standard": {
                "description": "paying users",
                "constraints": {"max_cost_usd": 0.05, "max_latency_p95_ms": 60000, "allowed_providers": ["wavespeed"]},
                "operations": {
                    "general_edit": _op(
                        "qwen-edit-plus",
                        0.02,
                        7.2,
                        [
                            _alt("seedream-v4-edit", 0.027, 7.0, "eligible; viescore_o 7.0"),
                            _alt("step1x-edit", 0.03, 6.4, "eligible; significantly below qwen-edit-plus"),
                            _alt("hidream-e1-full", 0.024, 5.0, "meets the constraints but only 3 completed call(s)"),
                            excluded_max,
                        ],
                    ),
                    "multi_image": {
                        "default": None,
                        "status": "insufficient_evidence",
                        "provisional": "qwen-edit-plus",
                        "cost_usd": 0.02,
                        "latency_p95_ms": 7000.0,
                        "success_rate": 1.0,
                        "completed": 3,
                        "quality": 6.0,
                        "quality_ci": [None, None],
                        "n": 1,
                        "rationale": "insufficient evidence: only 3 completed call(s) (< min_calls 10)",
                        "alternatives": [],
                    },
                    "zoom_out": {
                        "default": None,
                        "status": "no_eligible_model",
                        "provisional": None,
                        "cost_usd": None,
                        "latency_p95_ms": None,
                        "success_rate": None,
                        "completed": None,
                        "quality": None,
                        "quality_ci": [None, None],
                        "n": None,
                        "rationale": "all models exceed the p95 latency limit of 60 s",
                        "alternatives": [],
                    },
                },
            },
            "premium": {
                "description": "best quality",
                "constraints": {"max_cost_usd": 0.2, "max_latency_p95_ms": 120000, "allowed_providers": ["wavespeed"]},
                "operations": {
                    "general_edit": _op(
                        "flux-kontext-max",
                        0.08,
                        8.1,
                        [_alt("seedream-v4.5-edit", 0.04, 7.9, "eligible; viescore_o 7.9")],
                    ),
                },
            },
        },
    }


def write_tier_defaults_file(path: Path, data: dict[str, Any] | None = None, **kw: Any) -> Path:
    path.write_text(json.dumps(data if data is not None else tier_defaults(**kw), indent=2))
    return path
