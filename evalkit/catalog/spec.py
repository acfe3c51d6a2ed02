"""ModelSpec: one edit model as described by catalogue data, plus the pure rules derived from it.

The facts (endpoint, parameter names and ranges, prices, limits) live in ``*.toml`` files; this
module only parses and validates them and turns them into answers: which parameters to send for a
requested output size, what a request costs, which operations a model supports.

Catalogue file format (one ``[[model]]`` table per model)::

    [[model]]
    id = "qwen-edit"                     # slug, unique across the catalogue
    display_name = "Qwen Image Edit"
    vendor = "Alibaba (Qwen)"
    provider = "wavespeed"               # wavespeed | stability | huggingface | local | <custom>
    endpoint = "wavespeed-ai/qwen-image/edit"
    operations = ["general_edit"]        # see OPERATIONS
    prompt = "required"                  # required | optional | none
    languages = ["en", "zh"]
    output_formats = ["jpeg", "png", "webp"]
    output_format_param = "output_format"  # omit when the model has no such parameter
    default_output_format = "jpeg"
    sync_mode = true                     # accepts enable_sync_mode
    base64_output = true                 # accepts enable_base64_output
    inputs = { param = "image", max_images = 1 }   # "image" = one string, "images" = array
    size = { kind = "wh", param = "size", min_px = 256, max_px = 1536 }
    seed = { param = "seed", min = -1, max = 2147483647, default = -1 }   # omit: no seed
    mask = { param = "mask_image", required = false, convention = "white_edit" }  # omit: no mask
    price = { kind = "flat", usd = 0.02 }
    params.guidance_scale = { type = "number", default = 4, min = 0, max = 20, option = "guidance_scale" }
    defaults = { }                       # extra parameters always sent
    facts.price = { source = "…", confidence = "medium", note = "…" }
    sim = { latency_ms = 6000 }          # local simulator only; not a measurement
    draft = true                         # listed, but not run by `--models all` until a person removes it
    typical_latency_s = 120              # seconds from submit to result, when a source says (poll pacing prior)

A known price rule with uncertain figures may add ``price.reserve_usd``: budgets hold back the larger of
the rule's price and that figure, so a low-confidence price never lets a run overspend its cap.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from evalkit.errors import CatalogError, InvalidInputError

#: operations a case can ask for. ``zoom_out`` is outpainting (``outpaint`` is accepted as an alias).
OPERATIONS = (
    "general_edit",
    "multi_image",
    "inpaint",
    "erase",
    "zoom_out",
    "character_reference",
    "remove_background",
)
OPERATION_ALIASES = {"outpaint": "zoom_out", "object_removal": "erase"}

PROMPT_MODES = ("required", "optional", "none")
CONFIDENCE = ("high", "medium", "low")
SIZE_KINDS = ("wh", "aspect_ratio", "enum", "none")
PRICE_KINDS = ("flat", "per_resolution", "per_option", "per_quality_size", "per_output_image", "credits", "unknown")
MASK_CONVENTIONS = ("white_edit", "transparent_edit", "alpha_or_white_edit")
PARAM_TYPES = ("string", "number", "integer", "boolean", "enum")

#: nominal long-side pixels of resolution tiers.
RESOLUTION_TIER_PX = {"0.5k": 512, "1k": 1024, "2k": 2048, "4k": 4096, "8k": 8192}

_SLUG = re.compile(r"^[a-z0-9][a-z0-9._-]{0,79}$")
_ENDPOINT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,199}$")


def normalise_operation(op: str) -> str:
    op = OPERATION_ALIASES.get(op, op)
    if op not in OPERATIONS:
        raise InvalidInputError(
            f"unknown operation {op!r}", hint=f"use one of: {', '.join(OPERATIONS)} (or 'outpaint' for zoom_out)"
        )
    return op


@dataclass(frozen=True)
class Fact:
    source: str
    confidence: str
    note: str = ""


@dataclass(frozen=True)
class InputsRule:
    param: str  # "image" (single string) or "images" (array); stability: multipart field name
    max_images: int = 1
    min_images: int = 1

    @property
    def is_list(self) -> bool:
        """True when the images go in an array (``images``), False for one string (``image``)."""
        return self.param == "images"


@dataclass(frozen=True)
class SizeRule:
    kind: str = "none"
    param: str = "size"
    min_px: int | None = None
    max_px: int | None = None
    multiple_of: int = 1
    default: str | None = None
    aspect_ratios: tuple[str, ...] = ()
    aspect_ratio_param: str = "aspect_ratio"
    resolutions: tuple[str, ...] = ()
    resolution_param: str = "resolution"
    default_resolution: str | None = None
    values: tuple[str, ...] = ()  # kind = "enum"


@dataclass(frozen=True)
class SeedRule:
    param: str = "seed"
    min: int = -1
    max: int = 2147483647
    default: int | None = -1


@dataclass(frozen=True)
class MaskRule:
    param: str = "mask_image"
    required: bool = False
    #: white_edit: white pixels are repainted; transparent_edit: transparent pixels are repainted (PNG alpha).
    convention: str = "white_edit"


@dataclass(frozen=True)
class ParamSpec:
    name: str
    type: str
    default: Any = None
    min: float | None = None
    max: float | None = None
    choices: tuple[Any, ...] = ()
    required: bool = False
    #: the ImageEditOptions field that feeds this parameter (guidance_scale, steps, negative_prompt)
    option: str | None = None

    def check(self, value: Any, model_id: str) -> Any:
        where = f"{model_id}: parameter {self.name!r}"
        if self.type in ("number", "integer"):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise InvalidInputError(f"{where} must be a finite number, got {value!r}")
            if self.type == "integer":
                if isinstance(value, float) and not value.is_integer():
                    raise InvalidInputError(f"{where} must be an integer, got {value!r}")
                value = int(value)
            if (self.min is not None and value < self.min) or (self.max is not None and value > self.max):
                raise InvalidInputError(f"{where} = {value} is outside {self.min}–{self.max}")
        elif self.type == "boolean":
            if not isinstance(value, bool):
                raise InvalidInputError(f"{where} must be true or false, got {value!r}")
        elif self.type == "enum":
            if value not in self.choices:
                raise InvalidInputError(f"{where} = {value!r} is not one of {list(self.choices)}")
        elif self.type == "string":
            if not isinstance(value, str):
                raise InvalidInputError(f"{where} must be a string, got {value!r}")
        return value


def _req(value: float | None) -> float:
    """A figure the rule's kind requires (checked when the entry was parsed)."""
    assert value is not None, "a price rule figure its kind requires is missing"
    return float(value)


@dataclass(frozen=True)
class PriceRule:
    kind: str
    usd: float | None = None
    param: str | None = None
    table: dict[str, Any] = field(default_factory=dict)
    usd_per_image: float | None = None
    count_param: str | None = None
    credits: float | None = None
    usd_per_credit: float | None = None
    #: what to reserve against the budget when the price is not known in advance (kind = "unknown"), or,
    #: for a known rule whose figures are uncertain (low confidence), the most a call may cost: budgets
    #: then hold back max(price, reserve_usd) while estimates and recorded costs use the price
    reserve_usd: float | None = None

    def describe(self) -> str:
        k = self.kind
        if k == "flat":
            return f"flat ${self.usd:g}" + (f"; ${self.reserve_usd:g} reserved per call" if self.reserve_usd else "")
        if k in ("per_resolution", "per_option"):
            parts = ", ".join(f"{key} ${v:g}" for key, v in self.table.items())
            return f"by {self.param}: {parts}"
        if k == "per_quality_size":
            parts = "; ".join(f"{q}: " + "/".join(f"${v:g}" for v in sizes.values()) for q, sizes in self.table.items())
            return f"by quality × size (square/other): {parts}"
        if k == "per_output_image":
            text = f"${self.usd_per_image:g} per output image" + (f" × {self.count_param}" if self.count_param else "")
            return text + (f"; ${self.reserve_usd:g} reserved per call" if self.reserve_usd else "")
        if k == "credits":
            usd = _req(self.credits) * _req(self.usd_per_credit)
            text = f"{self.credits:g} credits × ${self.usd_per_credit:g} = ${usd:g}"
            return text + (f"; ${self.reserve_usd:g} reserved per call" if self.reserve_usd else "")
        return "unknown (recorded as reported by the provider)" + (
            f"; ${self.reserve_usd:g} reserved per call" if self.reserve_usd else ""
        )


@dataclass(frozen=True)
class Limits:
    max_input_side: int | None = None
    max_input_pixels: int | None = None
    min_input_side: int | None = None
    min_input_pixels: int | None = None
    max_request_bytes: int | None = None
    #: longest prompt the model accepts (characters); evalkit's default cap applies when unset
    max_prompt_chars: int | None = None


@dataclass(frozen=True)
class ModelSpec:
    """One edit model as the catalogue describes it (a ``[[model]]`` table); see the module docstring."""

    #: the model's id, unique across the catalogue (what ``--models`` and ``model=`` take)
    id: str
    #: a human-readable name for tables and reports
    display_name: str
    #: who made the model (Alibaba, Google, ByteDance, …)
    vendor: str
    #: which provider serves it: wavespeed | stability | huggingface | local | a custom one
    provider: str
    #: the provider's path (or Hub id) for this model
    endpoint: str
    #: the operations it can do (general_edit, inpaint, …)
    operations: tuple[str, ...]
    #: how a request's price is computed
    price: PriceRule
    #: how input images are sent (parameter name, how many)
    inputs: InputsRule
    #: how an output size is asked for (kind, parameter, range)
    size: SizeRule = field(default_factory=SizeRule)
    #: whether it takes an instruction: required | optional | none
    prompt: str = "required"
    #: prompt languages it understands
    languages: tuple[str, ...] = ("en",)
    #: output formats it can return
    output_formats: tuple[str, ...] = ("png",)
    #: the parameter choosing the output format (None: the model has none)
    output_format_param: str | None = None
    #: the format asked for when a case names none
    default_output_format: str | None = None
    #: how a seed is sent (None: the model takes no seed)
    seed: SeedRule | None = None
    #: how a mask is sent (None: the model takes no mask)
    mask: MaskRule | None = None
    #: optional parameters it accepts, by name (type, range, the case option that fills it)
    params: dict[str, ParamSpec] = field(default_factory=dict)
    #: extra parameters always sent
    defaults: dict[str, Any] = field(default_factory=dict)
    #: case parameters a model needs to run a case at all (e.g. Stability search-and-replace: search_prompt)
    requires_case_params: tuple[str, ...] = ()
    #: accepts ``enable_sync_mode`` (WaveSpeed: the answer comes with the submit)
    sync_mode: bool = False
    #: accepts ``enable_base64_output`` (the output comes inline, not as a URL)
    base64_output: bool = False
    #: seconds from submit to result as a source reports it (``facts.latency``): the poll pacer's prior for
    #: the first tasks of a run, before this workspace has seen the model finish (None: unknown)
    typical_latency_s: float | None = None
    #: input and request limits (sides, pixels, bytes, prompt length)
    limits: Limits = field(default_factory=Limits)
    #: where each group of facts came from, with its confidence (high | medium | low)
    facts: dict[str, Fact] = field(default_factory=dict)
    #: parameters of evalkit's local simulator only (e.g. latency_ms) — not measurements of the model
    sim: dict[str, Any] = field(default_factory=dict)
    #: free text shown with the model
    notes: str = ""
    #: other ids that name this model
    aliases: tuple[str, ...] = ()
    #: where this entry came from (bundled file or a workspace override)
    origin: str = ""
    #: a draft entry (e.g. written by `evalkit catalog sync --write` from the provider's schema) is listed
    #: but never picked by "all", "provider:NAME" or an automatic choice until a person removes the mark
    draft: bool = False

    # ---- capabilities -------------------------------------------------------------------------
    def supports(self, operation: str) -> bool:
        return normalise_operation(operation) in self.operations

    @property
    def needs_key(self) -> bool:
        return self.provider != "local"

    def body_keys(self) -> frozenset[str]:
        """The request-body parameter names this entry may send (WaveSpeed flags only where listed)."""
        keys = {self.inputs.param, *self.params, *self.defaults, *self.requires_case_params}
        if self.prompt != "none":
            keys.add("prompt")
        if self.mask is not None:
            keys.add(self.mask.param)
        if self.seed is not None:
            keys.add(self.seed.param)
        if self.output_format_param:
            keys.add(self.output_format_param)
        rule = self.size
        if rule.kind in ("wh", "enum"):
            keys.add(rule.param)
        elif rule.kind == "aspect_ratio":
            if rule.aspect_ratios:
                keys.add(rule.aspect_ratio_param)
            if rule.resolutions:
                keys.add(rule.resolution_param)
        if self.sync_mode:
            keys.add("enable_sync_mode")
        if self.base64_output:
            keys.add("enable_base64_output")
        return frozenset(keys)

    def uncertain_facts(self) -> dict[str, Fact]:
        return {k: f for k, f in self.facts.items() if f.confidence != "high"}

    # ---- size ---------------------------------------------------------------------------------
    def size_params(
        self, width: int | None, height: int | None, *, explicit: bool = True
    ) -> tuple[dict[str, Any], list[str]]:
        """The parameters that ask this model for an output of about ``width``×``height``.

        Returns ``(params, notes)``; notes say how the request was adapted (fitted, snapped).
        ``explicit=False`` means the size only came from the input image: resolution tiers then
        stay at the model's default (the cheapest, usually) instead of scaling up.
        """
        rule = self.size
        notes: list[str] = []
        for name, v in (("width", width), ("height", height)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v <= 0):
                raise InvalidInputError(f"{name} must be a positive whole number of pixels, got {v!r}")
        if rule.kind == "none" or width is None or height is None:
            if rule.kind == "aspect_ratio" and rule.resolutions and rule.default_resolution:
                return {rule.resolution_param: rule.default_resolution}, notes
            return {}, notes
        if rule.kind == "wh":
            w, h, fit_notes = fit_size(width, height, rule.min_px, rule.max_px, rule.multiple_of)
            notes += fit_notes
            return {rule.param: f"{w}*{h}"}, notes
        if rule.kind == "aspect_ratio":
            params: dict[str, Any] = {}
            if rule.aspect_ratios:
                ar = nearest_aspect_ratio(width, height, rule.aspect_ratios)
                if abs(math.log(ratio_value(ar)) - math.log(width / height)) > 0.02:
                    notes.append(f"aspect ratio {width}:{height} snapped to {ar}")
                params[rule.aspect_ratio_param] = ar
            if rule.resolutions:
                tier = rule.default_resolution or rule.resolutions[0]
                if explicit:
                    tier = resolution_tier_for(max(width, height), rule.resolutions)
                params[rule.resolution_param] = tier
            return params, notes
        if rule.kind == "enum":
            fixed = [v for v in rule.values if "*" in v]
            if not fixed:
                return {}, notes
            best = min(fixed, key=lambda v: abs(math.log(_wh(v)[0] / _wh(v)[1]) - math.log(width / height)))
            bw, bh = _wh(best)
            if (bw, bh) != (width, height):
                notes.append(f"size {width}×{height} snapped to {best}")
            return {rule.param: best}, notes
        raise CatalogError(f"{self.id}: unknown size kind {rule.kind!r}")

    def expected_output_size(self, params: dict[str, Any], input_wh: tuple[int, int]) -> tuple[int, int] | None:
        """The output size the request asks for, when it determines one."""
        rule = self.size
        if rule.kind in ("wh", "enum") and isinstance(params.get(rule.param), str) and "*" in params[rule.param]:
            return _wh(params[rule.param])
        if rule.kind == "aspect_ratio" and rule.aspect_ratio_param in params:
            r = ratio_value(params[rule.aspect_ratio_param])
            long_side = RESOLUTION_TIER_PX.get(str(params.get(rule.resolution_param, "")).lower(), max(input_wh))
            return (long_side, round(long_side / r)) if r >= 1 else (round(long_side * r), long_side)
        return None

    # ---- price --------------------------------------------------------------------------------
    def price_usd(self, params: dict[str, Any] | None = None) -> float | None:
        """List price of one call with these body parameters; None when unknown in advance."""
        params = params or {}
        p = self.price
        if p.kind == "flat":
            return _req(p.usd)
        if p.kind in ("per_resolution", "per_option"):
            key = params.get(p.param or "")
            if key is None:
                key = self._default_for(p.param or "")
            if key is None or str(key) not in p.table:
                return None
            return float(p.table[str(key)])
        if p.kind == "per_quality_size":
            quality = params.get(p.param or "") or self._default_for(p.param or "")
            sizes = p.table.get(str(quality))
            if sizes is None:
                return None
            size = params.get(self.size.param) or self._default_for(self.size.param)
            if size == "1024*1024":
                return float(sizes["square"])
            if size in (None, "auto"):
                return None  # the provider decides: unknown in advance
            return float(sizes["other"])
        if p.kind == "per_output_image":
            n = 1
            if p.count_param:
                count = params.get(p.count_param)
                if count is None:
                    count = self._default_for(p.count_param)
                n = int(count or 1)
            return _req(p.usd_per_image) * n
        if p.kind == "credits":
            return _req(p.credits) * _req(p.usd_per_credit)
        return None

    def reserve_usd(self, params: dict[str, Any] | None = None) -> float:
        """What a budget must hold back before this call is submitted: its price, or its maximum."""
        price = self.price_usd(params)
        p = self.price
        if price is not None:
            return max(price, float(p.reserve_usd)) if p.reserve_usd is not None else price
        if p.kind in ("per_resolution", "per_option") and p.table:
            return float(max(p.table.values()))
        if p.kind == "per_quality_size" and p.table:
            quality = (params or {}).get(p.param or "") or self._default_for(p.param or "")
            rows = [p.table[quality]] if quality in p.table else list(p.table.values())
            return float(max(max(r.values()) for r in rows))
        if p.reserve_usd is not None:
            return float(p.reserve_usd)
        raise CatalogError(
            f"{self.id}: price is unknown in advance and no reserve_usd is set",
            hint="add price.reserve_usd to the catalogue entry so budgets can hold it back",
        )

    def price_for_1024(self) -> float | None:
        """The list price of a plain 1024×1024 edit (as `evalkit models` shows it)."""
        params = dict(self.defaults)
        size, _ = self.size_params(1024, 1024, explicit=True)
        params.update(size)
        return self.price_usd(params)

    def _default_for(self, name: str | None) -> Any:
        if name is None:
            return None
        if name in self.defaults:
            return self.defaults[name]
        if name in self.params:
            return self.params[name].default
        if name == self.size.resolution_param:
            return self.size.default_resolution
        if name == self.size.param:
            return self.size.default
        return None

    def summary(self) -> dict[str, Any]:
        """A JSON-friendly description (what `evalkit models --json` prints)."""
        return {
            "id": self.id,
            "display_name": self.display_name,
            "vendor": self.vendor,
            "provider": self.provider,
            "endpoint": self.endpoint,
            "operations": list(self.operations),
            "prompt": self.prompt,
            "languages": list(self.languages),
            "price_rule": {k: v for k, v in vars(self.price).items() if v not in (None, {}, ())},
            "price_description": self.price.describe(),
            "price_1024_usd": self.price_for_1024(),
            "inputs": {
                "param": self.inputs.param,
                "min_images": self.inputs.min_images,
                "max_images": self.inputs.max_images,
            },
            "size": {k: v for k, v in vars(self.size).items() if v not in (None, (), "")},
            "mask": vars(self.mask) if self.mask else None,
            "seed": self.seed is not None,
            "output_formats": list(self.output_formats),
            "params": {
                n: {k: v for k, v in vars(p).items() if v not in (None, (), False) and k != "name"}
                for n, p in self.params.items()
            },
            "limits": {k: v for k, v in vars(self.limits).items() if v is not None},
            "requires_case_params": list(self.requires_case_params),
            "uncertain": {k: vars(f) for k, f in self.uncertain_facts().items()},
            "origin": self.origin,
            "draft": self.draft,
        }

    def details(self) -> dict[str, Any]:
        """:meth:`summary` plus every fact with its source and confidence (high ones too), the notes,
        sync/base64 support and the default output format — what `evalkit models --json` prints."""
        d = self.summary()
        d.update(
            {
                "facts": {k: vars(f) for k, f in self.facts.items()},
                "price_confidence": self.facts["price"].confidence if "price" in self.facts else None,
                "notes": self.notes,
                "sync_mode": self.sync_mode,
                "base64_output": self.base64_output,
                "default_output_format": self.default_output_format,
                "output_format_param": self.output_format_param,
                "seed_rule": vars(self.seed) if self.seed else None,
                "requires_key": self.needs_key,
                "aliases": list(self.aliases),
            }
        )
        return d


# ---- pure size helpers -----------------------------------------------------------------------


def _wh(s: str) -> tuple[int, int]:
    a, b = s.split("*")
    return int(a), int(b)


def ratio_value(ratio: str) -> float:
    a, b = ratio.split(":")
    return float(a) / float(b)


def nearest_aspect_ratio(width: int, height: int, allowed: tuple[str, ...] | list[str]) -> str:
    target = math.log(width / height)
    return min(allowed, key=lambda r: abs(math.log(ratio_value(r)) - target))


def resolution_tier_for(long_side: int, tiers: tuple[str, ...] | list[str]) -> str:
    """The smallest tier whose nominal long side covers ``long_side`` (else the largest)."""
    known = [t for t in tiers if t.lower() in RESOLUTION_TIER_PX]
    if not known:
        return tiers[0]
    ordered = sorted(known, key=lambda t: RESOLUTION_TIER_PX[t.lower()])
    for t in ordered:
        if RESOLUTION_TIER_PX[t.lower()] >= long_side:
            return t
    return ordered[-1]


def fit_size(
    width: int, height: int, min_px: int | None, max_px: int | None, multiple_of: int = 1
) -> tuple[int, int, list[str]]:
    """Scale ``width``×``height`` into [min_px, max_px] per side, keeping the aspect ratio when possible."""
    notes: list[str] = []
    if width <= 0 or height <= 0:
        raise InvalidInputError(f"size {width}×{height} must be positive")
    lo = min_px or 1
    hi = max_px or max(width, height, lo)
    s_lo = lo / min(width, height)  # smallest scale that lifts the short side to lo
    s_hi = hi / max(width, height)  # largest scale that keeps the long side within hi
    if s_lo <= s_hi:
        s = min(max(1.0, s_lo), s_hi)
        w, h = width * s, height * s
    else:  # aspect ratio too extreme for the range: keep the long side at hi, clamp the short side up
        s = s_hi
        w, h = width * s, height * s
        notes.append(f"aspect ratio {width}:{height} does not fit {lo}–{hi} px per side; short side clamped")
    m = max(1, multiple_of)
    w = int(min(max(round(w / m) * m, lo), hi))
    h = int(min(max(round(h / m) * m, lo), hi))
    if (w, h) != (width, height):
        notes.append(f"size {width}×{height} fitted to {w}×{h} (model range {lo}–{hi} px per side)")
    return w, h, notes


# ---- parsing ---------------------------------------------------------------------------------

_TOP_KEYS = {
    "id",
    "display_name",
    "vendor",
    "provider",
    "endpoint",
    "operations",
    "price",
    "inputs",
    "size",
    "prompt",
    "languages",
    "output_formats",
    "output_format_param",
    "default_output_format",
    "seed",
    "mask",
    "params",
    "defaults",
    "requires_case_params",
    "sync_mode",
    "base64_output",
    "typical_latency_s",
    "limits",
    "facts",
    "sim",
    "notes",
    "aliases",
    "draft",
}


def parse_model(raw: dict[str, Any], origin: str) -> ModelSpec:
    """Build a ModelSpec from one ``[[model]]`` table, reporting every problem at once."""
    problems: list[str] = []
    mid = raw.get("id", "<no id>")

    def need(key: str, typ: type | tuple[type, ...]) -> Any:
        if key not in raw:
            problems.append(f"missing required key {key!r}")
            return None
        if not isinstance(raw[key], typ):
            problems.append(f"{key!r} must be {getattr(typ, '__name__', typ)}, got {type(raw[key]).__name__}")
            return None
        return raw[key]

    unknown = set(raw) - _TOP_KEYS
    if unknown:
        problems.append(f"unknown key(s) {sorted(unknown)} (typo?)")
    mid = need("id", str) or mid
    if isinstance(mid, str) and not _SLUG.match(mid):
        problems.append(f"id {mid!r} is not a safe slug (lowercase letters, digits, . _ -)")
    endpoint = need("endpoint", str)
    if endpoint is not None and not _ENDPOINT.match(endpoint) or (endpoint and ".." in endpoint):
        problems.append(f"endpoint {endpoint!r} is not a safe path")
    provider = need("provider", str)
    ops = need("operations", list) or []
    ops_norm = []
    for op in ops:
        op = OPERATION_ALIASES.get(op, op)
        if op not in OPERATIONS:
            problems.append(f"unknown operation {op!r} (known: {', '.join(OPERATIONS)})")
        else:
            ops_norm.append(op)
    prompt = raw.get("prompt", "required")
    if prompt not in PROMPT_MODES:
        problems.append(f"prompt must be one of {PROMPT_MODES}")

    price = _parse_price(raw.get("price"), problems)
    inputs = _parse_simple(InputsRule, raw.get("inputs"), "inputs", problems, required=("param",))
    size_raw = dict(raw.get("size") or {"kind": "none"})
    for k in ("aspect_ratios", "resolutions", "values"):
        if k in size_raw:
            size_raw[k] = tuple(size_raw[k])
    size = _parse_simple(SizeRule, size_raw, "size", problems, required=("kind",))
    if size and size.kind not in SIZE_KINDS:
        problems.append(f"size.kind must be one of {SIZE_KINDS}")
    if size and size.kind == "wh" and (size.min_px is None or size.max_px is None):
        problems.append("size.kind = 'wh' needs min_px and max_px")
    seed = _parse_simple(SeedRule, raw["seed"], "seed", problems) if raw.get("seed") is not None else None
    mask = _parse_simple(MaskRule, raw["mask"], "mask", problems) if raw.get("mask") is not None else None
    if mask and mask.convention not in MASK_CONVENTIONS:
        problems.append(f"mask.convention must be one of {MASK_CONVENTIONS}")
    params: dict[str, ParamSpec] = {}
    for name, spec in (raw.get("params") or {}).items():
        if not isinstance(spec, dict):
            problems.append(f"params.{name} must be a table")
            continue
        spec = dict(spec)
        if "choices" in spec:
            spec["choices"] = tuple(spec["choices"])
        p = _parse_simple(ParamSpec, {"name": name, **spec}, f"params.{name}", problems, required=("type",))
        if p:
            if p.type not in PARAM_TYPES:
                problems.append(f"params.{name}.type must be one of {PARAM_TYPES}")
            params[name] = p
    facts: dict[str, Fact] = {}
    for name, f in (raw.get("facts") or {}).items():
        fact = _parse_simple(Fact, f, f"facts.{name}", problems, required=("source", "confidence"))
        if fact:
            if fact.confidence not in CONFIDENCE:
                problems.append(f"facts.{name}.confidence must be one of {CONFIDENCE}")
            facts[name] = fact
    limits = _parse_simple(Limits, raw.get("limits") or {}, "limits", problems)
    typical_latency_s = _positive_seconds(raw.get("typical_latency_s"), "typical_latency_s", problems)
    if problems:
        raise CatalogError(
            f"catalogue entry {mid!r} in {origin} has {len(problems)} problem(s): " + "; ".join(problems),
            hint="fix the entry (see evalkit/catalog/spec.py for the format)",
        )
    assert price is not None  # a missing or bad price is one of the problems above
    return ModelSpec(
        id=mid,
        display_name=raw.get("display_name", mid),
        vendor=raw.get("vendor", ""),
        provider=provider,
        endpoint=endpoint,
        operations=tuple(ops_norm),
        price=price,
        inputs=inputs,
        size=size,
        prompt=prompt,
        languages=tuple(raw.get("languages", ("en",))),
        output_formats=tuple(raw.get("output_formats", ("png",))),
        output_format_param=raw.get("output_format_param"),
        default_output_format=raw.get("default_output_format"),
        seed=seed,
        mask=mask,
        params=params,
        defaults=dict(raw.get("defaults") or {}),
        requires_case_params=tuple(raw.get("requires_case_params", ())),
        sync_mode=bool(raw.get("sync_mode", False)),
        base64_output=bool(raw.get("base64_output", False)),
        typical_latency_s=typical_latency_s,
        limits=limits,
        facts=facts,
        sim=dict(raw.get("sim") or {}),
        notes=raw.get("notes", ""),
        aliases=tuple(raw.get("aliases", ())),
        origin=origin,
        draft=bool(raw.get("draft", False)),
    )


def _positive_seconds(value: Any, where: str, problems: list[str]) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 86400:
        problems.append(f"{where} must be a number of seconds > 0, got {value!r}")
        return None
    return float(value)


def _parse_simple(cls, raw: Any, where: str, problems: list[str], required: tuple[str, ...] = ()):
    if not isinstance(raw, dict):
        problems.append(f"{where} must be a table")
        return None
    fields = cls.__dataclass_fields__
    bad = set(raw) - set(fields)
    if bad:
        problems.append(f"{where}: unknown key(s) {sorted(bad)}")
        return None
    missing = [k for k in required if k not in raw]
    if missing:
        problems.append(f"{where}: missing {missing}")
        return None
    try:
        return cls(**raw)
    except TypeError as exc:
        problems.append(f"{where}: {exc}")
        return None


def _parse_price(raw: Any, problems: list[str]) -> PriceRule | None:
    p = _parse_simple(PriceRule, raw, "price", problems, required=("kind",))
    if p is None:
        return None
    if p.kind not in PRICE_KINDS:
        problems.append(f"price.kind must be one of {PRICE_KINDS}")
        return None
    need = {
        "flat": ("usd",),
        "per_resolution": ("param", "table"),
        "per_option": ("param", "table"),
        "per_quality_size": ("param", "table"),
        "per_output_image": ("usd_per_image",),
        "credits": ("credits", "usd_per_credit"),
        "unknown": ("reserve_usd",),
    }[p.kind]
    for k in need:
        if getattr(p, k) in (None, {}):
            problems.append(f"price.kind = {p.kind!r} needs price.{k}")
    if p.kind == "per_quality_size":
        for q, sizes in p.table.items():
            if not isinstance(sizes, dict) or set(sizes) != {"square", "other"}:
                problems.append(f"price.table.{q} must have exactly 'square' and 'other'")
    return p
