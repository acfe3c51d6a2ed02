"""A catalogue entry as the JSON request schema WaveSpeed publishes in ``GET /api/v3/models``.

:func:`request_schema` is the inverse of what ``evalkit catalog sync`` reads: properties with types,
enums, ranges and defaults, and the ``required`` list. The local WaveSpeed server serves its catalogue
this way, and tests use it to build model lists. :func:`listed_model` wraps it in a list entry, in either
documented location (``api_schema.api_schemas[].request_schema`` or ``api_schema.components.schemas.Request``).
"""

from __future__ import annotations

from typing import Any

from evalkit.catalog.spec import ModelSpec

_TYPES = {"string": "string", "number": "number", "integer": "integer", "boolean": "boolean"}


def request_schema(spec: ModelSpec) -> dict[str, Any]:
    """JSON schema (``{"type":"object","properties":…,"required":[…]}``) of the body ``spec`` describes."""
    props: dict[str, Any] = {}
    required: list[str] = []
    if spec.prompt != "none":
        props["prompt"] = {"type": "string", "description": "The edit instruction."}
        if spec.prompt == "required":
            required.append("prompt")
    ip = spec.inputs
    if ip.is_list:
        props[ip.param] = {
            "type": "array",
            "items": {"type": "string"},
            "minItems": max(1, ip.min_images),
            "maxItems": ip.max_images,
        }
    else:
        props[ip.param] = {"type": "string", "description": "Image URL or base64."}
    required.append(ip.param)
    if spec.mask is not None:
        props[spec.mask.param] = {"type": "string"}
        if spec.mask.required:
            required.append(spec.mask.param)
    rule = spec.size
    if rule.kind == "wh":
        size: dict[str, Any] = {"type": "string", "minimum": rule.min_px, "maximum": rule.max_px}
        if rule.default:
            size["default"] = rule.default
        props[rule.param] = size
    elif rule.kind == "enum":
        size = {"type": "string", "enum": list(rule.values)}
        if rule.default:
            size["default"] = rule.default
        props[rule.param] = size
    elif rule.kind == "aspect_ratio":
        if rule.aspect_ratios:
            props[rule.aspect_ratio_param] = {"type": "string", "enum": list(rule.aspect_ratios)}
        if rule.resolutions:
            res: dict[str, Any] = {"type": "string", "enum": list(rule.resolutions)}
            if rule.default_resolution:
                res["default"] = rule.default_resolution
            props[rule.resolution_param] = res
    if spec.seed is not None:
        seed: dict[str, Any] = {"type": "integer", "minimum": spec.seed.min, "maximum": spec.seed.max}
        if spec.seed.default is not None:
            seed["default"] = spec.seed.default
        props[spec.seed.param] = seed
    if spec.output_format_param:
        fmt: dict[str, Any] = {"type": "string", "enum": list(spec.output_formats)}
        if spec.default_output_format:
            fmt["default"] = spec.default_output_format
        props[spec.output_format_param] = fmt
    for name, p in spec.params.items():
        prop: dict[str, Any]
        if p.type == "enum":
            prop = {"type": "string", "enum": list(p.choices)}
        else:
            prop = {"type": _TYPES.get(p.type, "string")}
            if p.min is not None:
                prop["minimum"] = p.min
            if p.max is not None:
                prop["maximum"] = p.max
        if p.default is not None:
            prop["default"] = p.default
        props[name] = prop
        if p.required:
            required.append(name)
    for name, value in spec.defaults.items():
        props.setdefault(name, {"default": value})
    for name in spec.requires_case_params:
        props.setdefault(name, {"type": "string"})
        required.append(name)
    if spec.sync_mode:
        props["enable_sync_mode"] = {"type": "boolean", "default": False}
    if spec.base64_output:
        props["enable_base64_output"] = {"type": "boolean", "default": False}
    return {"type": "object", "properties": props, "required": required}


def listed_model(
    spec: ModelSpec,
    *,
    base_price: float | None,
    model_type: str = "image-to-image",
    location: str = "api_schemas",
    server: str = "https://api.wavespeed.ai",
) -> dict[str, Any]:
    """One ``data[]`` entry of ``GET /api/v3/models`` for ``spec`` (``location``: api_schemas | components)."""
    schema = request_schema(spec)
    path = f"/api/v3/{spec.endpoint}"
    if location == "components":
        api: dict[str, Any] = {
            "openapi": "3.0.0",
            "paths": {path: {"post": {"requestBody": {"$ref": "#/components/schemas/Request"}}}},
            "components": {"schemas": {"Request": schema}},
        }
    else:
        api = {
            "api_schemas": [
                {"type": "model_run", "method": "POST", "server": server, "api_path": path, "request_schema": schema}
            ]
        }
    return {
        "model_id": spec.endpoint,
        "name": spec.endpoint,
        "base_price": base_price,
        "description": spec.display_name,
        "type": model_type,
        "api_schema": api,
    }


__all__ = ["listed_model", "request_schema"]
