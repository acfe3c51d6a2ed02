"""What the local WaveSpeed server accepts and what size it answers with: the request rules, pure.

:func:`body_problem` says why the real API would refuse a JSON body for a model with a 400 (unknown
keys, missing prompt/image(s)/required mask, ``size`` outside ``min_px..max_px`` or not an enum value,
aspect ratio / resolution not in the lists, ``params.*`` type/range/choices, seed range, too many
images, a sync/base64 flag the model does not support, an output format it does not make), checked
against the model's :class:`~evalkit.catalog.spec.ModelSpec`; :func:`accepted_keys` is the set of body
keys a model takes; :func:`output_size` is the simulated output's size (the requested one, long side
capped). The server (:mod:`evalkit.sim.wavespeed.app`) applies them; no I/O here.
"""

from __future__ import annotations

import math
import re
from typing import Any

from evalkit.catalog.spec import RESOLUTION_TIER_PX, ModelSpec, ratio_value
from evalkit.errors import InvalidInputError

_WH = re.compile(r"^\s*(\d{1,6})\s*\*\s*(\d{1,6})\s*$")


def accepted_keys(spec: ModelSpec) -> frozenset[str]:
    """Body keys ``spec`` takes: its parameters per the catalogue, plus the two WaveSpeed flags (the server
    accepts them on every model; the catalogue lists them only where the documentation does)."""
    return spec.body_keys() | {"enable_sync_mode", "enable_base64_output"}


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def body_problem(spec: ModelSpec, body: dict[str, Any], keys: frozenset[str] | None = None) -> str | None:
    """Why the real API would refuse ``body`` for ``spec`` with a 400, or None when it is acceptable."""
    where = spec.endpoint
    keys = keys if keys is not None else accepted_keys(spec)
    for k in body:
        if k not in keys:
            return f"unknown parameter {k!r} for {where}; it takes: {', '.join(sorted(keys))}"
    if spec.prompt != "none":
        prompt = body.get("prompt")
        if prompt is not None and not isinstance(prompt, str):
            return "parameter 'prompt' must be a string"
        if spec.prompt == "required" and not (prompt or "").strip():
            return f"missing required parameter 'prompt' for {where}"
    ip, rule_in = spec.inputs.param, spec.inputs
    if ip not in body:
        return f"missing required parameter {ip!r} for {where}"
    value = body[ip]
    if rule_in.is_list:
        if not isinstance(value, list) or not all(isinstance(x, str) and x for x in value):
            return f"parameter {ip!r} must be an array of image URLs or base64 strings"
        if len(value) < max(1, rule_in.min_images):
            return f"parameter {ip!r} needs at least {max(1, rule_in.min_images)} image(s)"
        if len(value) > rule_in.max_images:
            return f"parameter {ip!r} has {len(value)} images; {where} takes at most {rule_in.max_images}"
    elif not isinstance(value, str) or not value:
        return f"parameter {ip!r} must be one image URL or base64 string"
    if spec.mask is not None:
        mask = body.get(spec.mask.param)
        if mask is None and spec.mask.required:
            return f"missing required parameter {spec.mask.param!r} for {where}"
        if mask is not None and not (isinstance(mask, str) and mask):
            return f"parameter {spec.mask.param!r} must be one image URL or base64 string"
    problem = _size_problem(spec, body)
    if problem:
        return problem
    if spec.seed is not None and spec.seed.param in body:
        seed = body[spec.seed.param]
        if not _is_int(seed) or not (spec.seed.min <= seed <= spec.seed.max):
            return (
                f"parameter {spec.seed.param!r} must be an integer within {spec.seed.min}–{spec.seed.max}, got {seed!r}"
            )
    for name, pspec in spec.params.items():
        if name in body:
            try:
                pspec.check(body[name], spec.id)
            except InvalidInputError as exc:
                return exc.message
        elif pspec.required:
            return f"missing required parameter {name!r} for {where}"
    fp = spec.output_format_param
    if fp and fp in body and body[fp] not in spec.output_formats:
        return f"parameter {fp!r} must be one of {list(spec.output_formats)}, got {body[fp]!r}"
    for flag, supported in (("enable_sync_mode", spec.sync_mode), ("enable_base64_output", spec.base64_output)):
        if flag in body:
            if not isinstance(body[flag], bool):
                return f"parameter {flag!r} must be true or false"
            if body[flag] and not supported:
                return f"{where} does not support {flag}"
    return None


def _size_problem(spec: ModelSpec, body: dict[str, Any]) -> str | None:
    rule = spec.size
    if rule.kind == "wh" and rule.param in body:
        m = _WH.match(body[rule.param]) if isinstance(body[rule.param], str) else None
        if not m:
            return f"parameter {rule.param!r} must be a string 'W*H' (e.g. '1024*1024'), got {body[rule.param]!r}"
        lo, hi = rule.min_px or 1, rule.max_px or 10**6
        for side in (int(m.group(1)), int(m.group(2))):
            if not lo <= side <= hi:
                return f"parameter {rule.param!r} = {body[rule.param]!r}: each side must be within {lo}–{hi} px"
            if rule.multiple_of > 1 and side % rule.multiple_of:
                return f"parameter {rule.param!r} = {body[rule.param]!r}: sides must be multiples of {rule.multiple_of}"
    elif rule.kind == "enum" and rule.param in body and body[rule.param] not in rule.values:
        return f"parameter {rule.param!r} must be one of {list(rule.values)}, got {body[rule.param]!r}"
    elif rule.kind == "aspect_ratio":
        for param, allowed in (
            (rule.aspect_ratio_param, rule.aspect_ratios),
            (rule.resolution_param, rule.resolutions),
        ):
            if allowed and param in body and body[param] not in allowed:
                return f"parameter {param!r} must be one of {list(allowed)}, got {body[param]!r}"
    return None


def output_size(
    spec: ModelSpec, body: dict[str, Any], input_wh: tuple[int, int], max_side: int
) -> tuple[tuple[int, int], str | None]:
    """(simulated output size, the enum size chosen for ``auto``) — the request's size, long side capped."""
    rule = spec.size
    w, h = input_wh
    chosen: str | None = None
    if rule.kind in ("wh", "enum"):
        requested = body.get(rule.param) or rule.default
        m = _WH.match(requested) if isinstance(requested, str) else None
        if m is not None:
            w, h = int(m.group(1)), int(m.group(2))
        elif rule.kind == "enum":  # "auto": the fixed size nearest the input's aspect ratio
            fixed = [v for v in rule.values if _WH.match(v)]
            if fixed:
                chosen = min(fixed, key=lambda v: abs(math.log(_wh(v)[0] / _wh(v)[1]) - math.log(w / h)))
                w, h = _wh(chosen)
    elif rule.kind == "aspect_ratio":
        ratio = ratio_value(body[rule.aspect_ratio_param]) if body.get(rule.aspect_ratio_param) else w / h
        tier = body.get(rule.resolution_param) or rule.default_resolution
        long_side = RESOLUTION_TIER_PX.get(str(tier).lower(), max(w, h)) if tier else max(w, h)
        w, h = (long_side, round(long_side / ratio)) if ratio >= 1 else (round(long_side * ratio), long_side)
    scale = min(1.0, max_side / max(w, h))
    return (max(1, round(w * scale)), max(1, round(h * scale))), chosen


def _wh(s: str) -> tuple[int, int]:
    m = _WH.match(s)
    return int(m.group(1)), int(m.group(2))  # type: ignore[union-attr]


__all__ = ["accepted_keys", "body_problem", "output_size"]
