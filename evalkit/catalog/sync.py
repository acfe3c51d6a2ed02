"""``evalkit catalog sync``: compare the catalogue with the provider's own model list and pricing API.

For WaveSpeed it reads ``GET /api/v3/models`` (every model's type, base price and request schema), keeps
the **edit** models — type ``image-to-image`` (or a type naming an edit), or an endpoint path ending in an
edit endpoint (``…/edit``, ``…/edit-plus``, ``…/image-edit``, ``…-inpaint``, ``…/zoom-out``…), decided from
what the list gives, not from a list of ids — and leaves the rest (text-to-video, …) out. For each
catalogue model and each listed edit model it asks ``POST /api/v3/model/pricing`` for a 1024×1024 sample
request, then reports what a person can act on:

* **new edit models** the provider lists that the catalogue lacks (with their quoted price);
* **catalogue models no longer listed**;
* **price changes**, catalogue → quoted, for the same 1024×1024 sample;
* **schema differences**: parameter names the catalogue sends that the schema lacks (the provider would
  refuse them), schema parameters the catalogue does not know, required parameters, the sync/base64 flags,
  enums (sizes, aspect ratios, resolutions, output formats, parameter choices) and ranges (seed, sizes,
  numbers, the number of images).

``write=True`` writes **one** reviewable override file, ``<workspace>/catalog/wavespeed-sync.toml``, which
the catalogue loads after the bundled files (see :mod:`evalkit.catalog`): each catalogue model whose quote
differs from the catalogue (or whose price was not known with high confidence) is re-emitted whole with
the quoted price — its source (the pricing API, the base URL, the sample) and date, confidence high — and
each new edit model becomes a **draft** entry derived from its schema (``draft = true``): listed by
``evalkit models`` but not run by ``--models all`` until a person reviews it and deletes the mark. The
bundled files are never touched; deleting the override file undoes the sync.

Stability AI publishes no model list or pricing API: ``--provider stability`` reports the catalogue's
credits per endpoint with their confidence (shared/reference/wavespeed-models-2026.md §3) and what to check.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import re
import tomllib
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from evalkit.catalog import Catalog
from evalkit.catalog.pricing import (
    SAMPLE_IMAGE_URL,
    SAMPLE_MASK_URL,
    SAMPLE_PROMPT,
    ListedModel,
    WaveSpeedCatalogClient,
)
from evalkit.catalog.spec import ModelSpec, parse_model, resolution_tier_for
from evalkit.errors import CatalogError, InvalidInputError, ProviderError

SYNC_FILE = "wavespeed-sync.toml"
FLAGS = ("enable_sync_mode", "enable_base64_output")
#: schema properties that are transport, not model, parameters
_TRANSPORT = {"webhook", "webhook_url", *FLAGS}

_EDIT_TYPE = re.compile(r"(image-to-image|image-edit|(^|[-_/ ])edit($|[-_/ ])|inpaint|outpaint)", re.I)
_NON_IMAGE_TYPE = re.compile(r"(video|audio|speech|music|3d|text-to-text|llm|lora-trainer|training)$", re.I)
_EDIT_SEGMENT = re.compile(r"^(edit([-_].+)?|.+[-_]edit|.*inpaint.*|.*outpaint.*|zoom-out|image-zoom-out)$", re.I)


def is_edit_model(m: ListedModel) -> bool:
    """An image-edit model, judged from what the list gives: its type, else its endpoint path."""
    t = m.type.strip().lower()
    if t and _NON_IMAGE_TYPE.search(t):
        return False
    if t and _EDIT_TYPE.search(t):
        return True
    segments = [s for s in m.endpoint.lower().split("/") if s]
    return bool(segments) and any(_EDIT_SEGMENT.match(s) for s in segments[1:])


# ---- samples --------------------------------------------------------------------------------------


def catalogue_sample(spec: ModelSpec) -> dict[str, Any]:
    """The pricing inputs of a plain 1024×1024 edit built from a catalogue entry."""
    params: dict[str, Any] = dict(spec.defaults)
    if spec.prompt != "none":
        params["prompt"] = SAMPLE_PROMPT
    params[spec.inputs.param] = [SAMPLE_IMAGE_URL] if spec.inputs.is_list else SAMPLE_IMAGE_URL
    if spec.mask is not None and spec.mask.required:
        params[spec.mask.param] = SAMPLE_MASK_URL
    size, _ = spec.size_params(1024, 1024, explicit=True)
    params.update(size)
    for name in spec.requires_case_params:
        params[name] = "sample"
    return params


def _prop_type(prop: dict[str, Any]) -> str:
    t = prop.get("type")
    if isinstance(t, list):
        t = next((x for x in t if x != "null"), "")
    return str(t or "")


def schema_sample(listed: ListedModel) -> dict[str, Any]:
    """Pricing inputs of a 1024×1024 edit built from a listed model's request schema."""
    props = listed.properties
    params: dict[str, Any] = {}
    if "prompt" in props:
        params["prompt"] = SAMPLE_PROMPT
    if "images" in props:
        params["images"] = [SAMPLE_IMAGE_URL]
    elif "image" in props:
        params["image"] = SAMPLE_IMAGE_URL
    for name in ("mask_image", "mask"):
        if name in props and name in listed.required:
            params[name] = SAMPLE_MASK_URL
    size = props.get("size")
    if isinstance(size, dict):
        enum = [v for v in size.get("enum") or [] if isinstance(v, str)]
        if not enum or "1024*1024" in enum:
            params["size"] = "1024*1024"
        elif any("*" in v for v in enum):
            params["size"] = min((v for v in enum if "*" in v), key=lambda v: abs(_area(v) - 1024 * 1024))
    ar = props.get("aspect_ratio")
    if isinstance(ar, dict) and isinstance(ar.get("enum"), list) and "1:1" in ar["enum"]:
        params["aspect_ratio"] = "1:1"
    res = props.get("resolution")
    if isinstance(res, dict) and isinstance(res.get("enum"), list) and res["enum"]:
        tiers = [str(v) for v in res["enum"]]
        try:
            params["resolution"] = resolution_tier_for(1024, tiers)
        except (KeyError, ValueError):
            params["resolution"] = tiers[0]
    for name in listed.required - set(params):  # anything else required: its default, else its first choice
        prop = props.get(name) or {}
        if "default" in prop:
            params[name] = prop["default"]
        elif isinstance(prop.get("enum"), list) and prop["enum"]:
            params[name] = prop["enum"][0]
    return params


def _area(wh: str) -> int:
    try:
        a, b = wh.split("*")
        return int(a) * int(b)
    except ValueError:
        return 0


# ---- the diff -------------------------------------------------------------------------------------


@dataclass
class SchemaDiff:
    model_id: str
    kind: str  # not_in_schema | not_in_catalogue | required | flag | enum | range | images
    param: str
    catalogue: Any
    schema: Any
    #: "refused" when the provider would refuse what evalkit sends; "review" otherwise
    severity: str = "review"

    def text(self) -> str:
        return (
            f"{self.model_id}: {self.kind} {self.param}: catalogue {_fmt(self.catalogue)} → schema {_fmt(self.schema)}"
        )


def _fmt(v: Any) -> str:
    if isinstance(v, (list, tuple, set, frozenset)):
        return "[" + ", ".join(map(str, sorted(v, key=str))) + "]"
    return "—" if v is None else str(v)


def _enum(prop: Any) -> list[Any] | None:
    if isinstance(prop, dict) and isinstance(prop.get("enum"), list):
        return list(prop["enum"])
    return None


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def schema_differences(spec: ModelSpec, listed: ListedModel) -> list[SchemaDiff]:
    """Parameter names, enums and ranges where the catalogue entry and the published schema differ."""
    props = listed.properties
    if not props:
        return []
    out: list[SchemaDiff] = []
    mid = spec.id

    def add(kind: str, param: str, cat: Any, sch: Any, severity: str = "review") -> None:
        out.append(SchemaDiff(mid, kind, param, cat, sch, severity))

    sends = spec.body_keys()
    for name in sorted(sends - set(props)):
        add("not_in_schema", name, "sent", "absent", "refused")
    known = sends | {spec.size.aspect_ratio_param, spec.size.resolution_param} | set(FLAGS)
    for name in sorted(set(props) - known - _TRANSPORT):
        add("not_in_catalogue", name, "absent", _fmt(_enum(props[name])) if _enum(props[name]) else "listed")
    for name in sorted(listed.required - sends - _TRANSPORT):
        add("required", name, "not sent", "required", "refused")
    for flag, has in (("enable_sync_mode", spec.sync_mode), ("enable_base64_output", spec.base64_output)):
        if has != (flag in props):
            add("flag", flag, has, flag in props, "refused" if has else "review")
    # enums
    enum_pairs: list[tuple[str, Iterable[Any]]] = []
    if spec.size.kind == "enum":
        enum_pairs.append((spec.size.param, spec.size.values))
    if spec.size.kind == "aspect_ratio":
        if spec.size.aspect_ratios:
            enum_pairs.append((spec.size.aspect_ratio_param, spec.size.aspect_ratios))
        if spec.size.resolutions:
            enum_pairs.append((spec.size.resolution_param, spec.size.resolutions))
    if spec.output_format_param:
        enum_pairs.append((spec.output_format_param, spec.output_formats))
    for name, p in spec.params.items():
        if p.type == "enum":
            enum_pairs.append((name, p.choices))
    for name, cat_values in enum_pairs:
        sch = _enum(props.get(name))
        if sch is not None and {str(v) for v in cat_values} != {str(v) for v in sch}:
            extra = {str(v) for v in cat_values} - {str(v) for v in sch}
            add("enum", name, sorted(map(str, cat_values)), sorted(map(str, sch)), "refused" if extra else "review")
    # ranges
    ranges: list[tuple[str, float | None, float | None]] = []
    if spec.seed is not None:
        ranges.append((spec.seed.param, spec.seed.min, spec.seed.max))
    if spec.size.kind == "wh":
        ranges.append((spec.size.param, spec.size.min_px, spec.size.max_px))
    for name, p in spec.params.items():
        if p.type in ("number", "integer"):
            ranges.append((name, p.min, p.max))
    for name, lo, hi in ranges:
        prop = props.get(name)
        if not isinstance(prop, dict):
            continue
        s_lo, s_hi = _num(prop.get("minimum")), _num(prop.get("maximum"))
        if (s_lo is not None and (lo is None or float(lo) != s_lo)) or (
            s_hi is not None and (hi is None or float(hi) != s_hi)
        ):
            refused = (s_lo is not None and lo is not None and lo < s_lo) or (
                s_hi is not None and hi is not None and hi > s_hi
            )
            add(
                "range",
                name,
                f"{_fmt(lo)}–{_fmt(hi)}",
                f"{_fmt(s_lo)}–{_fmt(s_hi)}",
                "refused" if refused else "review",
            )
    images = props.get(spec.inputs.param)
    if isinstance(images, dict) and _prop_type(images) == "array":
        s_max = _num(images.get("maxItems"))
        if s_max is not None and s_max != spec.inputs.max_images:
            add(
                "images",
                spec.inputs.param,
                spec.inputs.max_images,
                int(s_max),
                "refused" if spec.inputs.max_images > s_max else "review",
            )
    elif spec.inputs.param in props and isinstance(images, dict) and _prop_type(images) not in ("", "string"):
        add(
            "images",
            spec.inputs.param,
            "one string" if not spec.inputs.is_list else "array",
            _prop_type(images),
            "refused",
        )
    return out


@dataclass
class SyncReport:
    provider: str
    base_url: str
    checked_at: str
    simulated: bool = False
    listed: int = 0
    edit_listed: int = 0
    non_edit_left_out: list[str] = field(default_factory=list)
    new_models: list[dict[str, Any]] = field(default_factory=list)
    removed: list[dict[str, Any]] = field(default_factory=list)
    price_changes: list[dict[str, Any]] = field(default_factory=list)
    prices_confirmed: list[dict[str, Any]] = field(default_factory=list)
    quote_failures: list[dict[str, Any]] = field(default_factory=list)
    schema_diffs: list[SchemaDiff] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    written: str | None = None
    #: per catalogue id: the quotes used to write its price (internal; for write())
    _quotes: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("_quotes", None)
        d["new_models"] = [{k: v for k, v in n.items() if not k.startswith("_")} for n in self.new_models]
        return d

    @property
    def changed(self) -> bool:
        return bool(self.new_models or self.removed or self.price_changes or self.schema_diffs)

    def to_text(self) -> str:
        sim = " — SIMULATED (a local evalkit server, not WaveSpeed)" if self.simulated else ""
        lines = [
            f"catalog sync: {self.provider} at {self.base_url} on {self.checked_at}{sim}",
            f"  {self.listed} models listed, {self.edit_listed} edit models; "
            f"{len(self.non_edit_left_out)} non-edit models left out",
        ]
        if self.new_models:
            lines.append(f"\nNew edit models the catalogue lacks ({len(self.new_models)}):")
            for n in self.new_models:
                q = "quote failed" if n.get("quoted_usd") is None else f"${n['quoted_usd']:.4f} (1024² sample)"
                lines.append(f"  + {n['endpoint']}  [{n.get('type') or 'no type'}]  {q}  → draft id {n['draft_id']}")
        if self.removed:
            lines.append(f"\nCatalogue models no longer listed ({len(self.removed)}):")
            for r in self.removed:
                lines.append(f"  - {r['id']}  ({r['endpoint']})")
        if self.price_changes:
            lines.append(f"\nPrice changes, catalogue → quoted ({len(self.price_changes)}):")
            for c in self.price_changes:
                cat = "unknown" if c["catalogue_usd"] is None else f"${c['catalogue_usd']:.4f}"
                lines.append(f"  ~ {c['id']}: {cat} → ${c['quoted_usd']:.4f}  (sample {c['sample']})")
        if self.prices_confirmed:
            lines.append(
                f"\nPrices confirmed ({len(self.prices_confirmed)}): "
                + ", ".join(p["id"] for p in self.prices_confirmed)
            )
        if self.quote_failures:
            lines.append(f"\nQuotes that failed ({len(self.quote_failures)}) — the catalogue price stays:")
            for f in self.quote_failures:
                lines.append(f"  ! {f['id']}: {f['error']}")
        if self.schema_diffs:
            lines.append(f"\nParameters that differ from the published schema ({len(self.schema_diffs)}):")
            for d in self.schema_diffs:
                mark = "!" if d.severity == "refused" else "·"
                lines.append(f"  {mark} {d.text()}")
            lines.append("  (! = the provider would refuse what evalkit sends; fix the entry or a workspace override)")
        for note in self.notes:
            lines.append(f"\nnote: {note}")
        if not self.changed:
            lines.append("\nThe catalogue matches the provider's list and prices.")
        if self.written:
            lines.append(f"\nwrote {self.written} — review it; drafts run only once their `draft = true` is removed")
        elif self.price_changes or self.new_models:
            lines.append("\n`evalkit catalog sync --write` writes these as a reviewable workspace override")
        return "\n".join(lines)


def _slug(endpoint: str, taken: set[str]) -> str:
    parts = [p for p in endpoint.lower().split("/") if p]
    if len(parts) > 1 and parts[0] in ("wavespeed-ai", "wavespeed"):
        parts = parts[1:]
    elif len(parts) > 1:
        parts = parts[1:]  # drop the vendor: 'google/nano-banana-3/edit' → 'nano-banana-3-edit'
    base = re.sub(r"[^a-z0-9._-]+", "-", "-".join(parts)).strip("-._")[:70] or "model"
    slug, i = base, 2
    while slug in taken:
        slug, i = f"{base}-{i}", i + 1
    taken.add(slug)
    return slug


def _round(usd: float) -> float:
    return round(float(usd), 6)


def sync_wavespeed(
    catalog: Catalog,
    client: WaveSpeedCatalogClient,
    *,
    today: _dt.date | None = None,
) -> SyncReport:
    """Compare ``catalog``'s WaveSpeed entries with the provider's model list and pricing API."""
    today = today or _dt.datetime.now(_dt.UTC).date()
    report = SyncReport("wavespeed", client.base_url, today.isoformat())
    listed = client.list_models()
    report.simulated = client.simulated
    report.listed = len(listed)
    by_endpoint = {m.endpoint: m for m in listed}
    ours = [m for m in catalog if m.provider == "wavespeed"]
    our_endpoints = {m.endpoint for m in ours}
    edit = []
    for m in listed:
        if m.endpoint in our_endpoints or is_edit_model(m):
            edit.append(m)
        else:
            report.non_edit_left_out.append(m.model_id)
    report.edit_listed = len(edit)

    # catalogue models: listed? quoted price? schema?
    for spec in ours:
        lm = by_endpoint.get(spec.endpoint)
        if lm is None:
            report.removed.append({"id": spec.id, "endpoint": spec.endpoint, "draft": spec.draft})
            continue
        report.schema_diffs += schema_differences(spec, lm)
        sample = catalogue_sample(spec)
        try:
            quoted = _round(client.quote(lm.model_id, sample))
        except ProviderError as exc:
            report.quote_failures.append({"id": spec.id, "endpoint": spec.endpoint, "error": exc.message})
            continue
        table = _quote_table(client, spec, lm, sample)
        catalogue_usd = spec.price_usd({k: v for k, v in sample.items()})
        report._quotes[spec.id] = {"sample": sample, "usd": quoted, "table": table, "model_id": lm.model_id}
        short = _short_sample(sample)
        row = {
            "id": spec.id,
            "endpoint": spec.endpoint,
            "catalogue_usd": catalogue_usd,
            "quoted_usd": quoted,
            "sample": short,
        }
        if catalogue_usd is None or abs(catalogue_usd - quoted) > 1e-9:
            report.price_changes.append(row)
        else:
            report.prices_confirmed.append(row)

    # listed edit models the catalogue lacks
    taken = {m.id for m in catalog}
    for lm in edit:
        if lm.endpoint in our_endpoints:
            continue
        sample = schema_sample(lm)
        new_quote: float | None = None
        error = ""
        tiers: dict[str, float] = {}
        try:
            new_quote = _round(client.quote(lm.model_id, sample))
            res = _enum(lm.properties.get("resolution"))
            if res and "resolution" in sample:  # priced per tier, like the catalogue's per_resolution rules
                tiers = {str(r): _round(client.quote(lm.model_id, {**sample, "resolution": r})) for r in res}
        except ProviderError as exc:
            error = error or exc.message
        report.new_models.append(
            {
                "model_id": lm.model_id,
                "endpoint": lm.endpoint,
                "type": lm.type,
                "name": lm.name,
                "base_price": lm.base_price,
                "quoted_usd": new_quote,
                "quote_error": error,
                "sample": _short_sample(sample),
                "schema_location": lm.schema_location,
                "draft_id": _slug(lm.endpoint, taken),
                "_listed": lm,
                "_sample": sample,
                "_tiers": tiers,
            }
        )
    if report.simulated:
        report.notes.append("the server is evalkit's local simulator: these prices and models are SIMULATED")
    return report


def _short_sample(sample: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sample.items() if k not in ("prompt", "image", "images", "mask_image"))


def _quote_table(
    client: WaveSpeedCatalogClient, spec: ModelSpec, lm: ListedModel, sample: dict[str, Any]
) -> dict[str, Any] | None:
    """For table price rules, a quote per table key (each resolution, option or quality × size)."""
    p = spec.price
    try:
        if p.kind in ("per_resolution", "per_option") and p.param:
            return {key: _round(client.quote(lm.model_id, {**sample, p.param: key})) for key in p.table}
        if p.kind == "per_quality_size" and p.param:
            other = next((v for v in spec.size.values if "*" in v and v != "1024*1024"), None)
            table: dict[str, Any] = {}
            for q in p.table:
                row = {
                    "square": _round(client.quote(lm.model_id, {**sample, p.param: q, spec.size.param: "1024*1024"}))
                }
                row["other"] = (
                    _round(client.quote(lm.model_id, {**sample, p.param: q, spec.size.param: other}))
                    if other
                    else row["square"]
                )
                table[q] = row
            return table
    except ProviderError:
        return None  # the table stays as catalogued; the sample's quote is still reported
    return None


# ---- writing the override -------------------------------------------------------------------------


def _raw_entry(spec: ModelSpec) -> dict[str, Any]:
    try:
        with open(spec.origin, "rb") as fh:
            data = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise CatalogError(f"cannot re-read {spec.origin} for {spec.id}: {exc}") from None
    for raw in data.get("model") or []:
        if raw.get("id") == spec.id:
            return dict(raw)
    raise CatalogError(f"{spec.id} not found in {spec.origin}")


def _quoted_price(spec: ModelSpec, q: dict[str, Any]) -> dict[str, Any]:
    p, usd, table = spec.price, q["usd"], q.get("table")
    if p.kind in ("per_resolution", "per_option") and table:
        return {"kind": p.kind, "param": p.param, "table": table}
    if p.kind == "per_quality_size" and table:
        return {"kind": p.kind, "param": p.param, "table": table}
    if p.kind == "per_output_image":
        n = 1
        if p.count_param:
            count = q["sample"].get(p.count_param)
            if count is None:
                count = spec._default_for(p.count_param)
            n = int(count or 1)
        out: dict[str, Any] = {"kind": "per_output_image", "usd_per_image": _round(usd / n)}
        if p.count_param:
            out["count_param"] = p.count_param
        return out
    rule: dict[str, Any] = {"kind": "flat", "usd": usd}
    if p.kind not in ("flat",) and p.reserve_usd:
        rule["reserve_usd"] = max(p.reserve_usd, usd)  # other parameters may cost more than the sample
    return rule


def _draft_entry(n: dict[str, Any], today: str, base_url: str) -> dict[str, Any]:
    lm: ListedModel = n["_listed"]
    props, required = lm.properties, lm.required
    e: dict[str, Any] = {
        "id": n["draft_id"],
        "display_name": (lm.name or lm.endpoint) + " (draft)",
        "vendor": lm.endpoint.split("/", 1)[0],
        "provider": "wavespeed",
        "endpoint": lm.endpoint,
        "draft": True,
    }
    images = props.get("images") if "images" in props else props.get("image")
    param = "images" if "images" in props else "image"
    max_images = 1
    if param == "images" and isinstance(images, dict):
        max_images = int(_num(images.get("maxItems")) or 1)
    ops = ["general_edit"] + (["multi_image"] if max_images > 1 else [])
    if any(k in props for k in ("mask_image", "mask")):
        ops.append("inpaint")
    e["operations"] = ops
    e["prompt"] = "required" if "prompt" in required else "optional" if "prompt" in props else "none"
    fmt = _enum(props.get("output_format"))
    if fmt:
        e["output_formats"] = [str(v) for v in fmt]
        e["output_format_param"] = "output_format"
        default = props["output_format"].get("default")
        e["default_output_format"] = str(default) if default in fmt else str(fmt[0])
    e["sync_mode"] = "enable_sync_mode" in props
    e["base64_output"] = "enable_base64_output" in props
    inputs: dict[str, Any] = {"param": param, "max_images": max_images}
    if param == "images" and isinstance(images, dict) and _num(images.get("minItems")):
        inputs["min_images"] = int(images["minItems"])
    e["inputs"] = inputs
    size = props.get("size")
    ar, res = _enum(props.get("aspect_ratio")), _enum(props.get("resolution"))
    if isinstance(size, dict) and _enum(size):
        e["size"] = {"kind": "enum", "param": "size", "values": [str(v) for v in _enum(size) or []]}
    elif isinstance(size, dict) and _num(size.get("minimum")) and _num(size.get("maximum")):
        e["size"] = {"kind": "wh", "param": "size", "min_px": int(size["minimum"]), "max_px": int(size["maximum"])}
    elif ar or res:
        rule: dict[str, Any] = {"kind": "aspect_ratio"}
        ratios = [str(v) for v in ar or [] if _RATIO.match(str(v))]  # 'auto' etc. are the provider's business
        if ratios:
            rule["aspect_ratios"] = ratios
        if res:
            rule["resolutions"] = [str(v) for v in res]
            d = props["resolution"].get("default")
            rule["default_resolution"] = str(d) if d in res else str(res[0])
        e["size"] = rule
    seed = props.get("seed")
    if isinstance(seed, dict):
        lo, hi, default = _num(seed.get("minimum")), _num(seed.get("maximum")), _num(seed.get("default"))
        e["seed"] = {
            "param": "seed",
            "min": int(lo) if lo is not None else -1,
            "max": int(hi) if hi is not None else 2147483647,
            "default": int(default) if default is not None else -1,
        }
    if isinstance(props.get("mask_image"), dict):
        e["mask"] = {"param": "mask_image", "required": "mask_image" in required, "convention": "white_edit"}
    used = {"prompt", "images", "image", "output_format", "size", "aspect_ratio", "resolution", "seed", "mask_image"}
    params: dict[str, Any] = {}
    for name, prop in props.items():
        if (
            name in used
            or name in _TRANSPORT
            or not isinstance(prop, dict)
            or not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", name)
        ):
            continue
        t = _prop_type(prop)
        spec: dict[str, Any] = {}
        if _enum(prop):
            spec = {"type": "enum", "choices": list(_enum(prop) or [])}
        elif t in ("number", "integer", "boolean", "string"):
            spec = {"type": t}
            for k_src, k_dst in (("minimum", "min"), ("maximum", "max")):
                if _num(prop.get(k_src)) is not None:
                    spec[k_dst] = prop[k_src]
        else:
            continue
        if "default" in prop and prop["default"] is not None and not isinstance(prop["default"], (dict, list)):
            spec["default"] = prop["default"]
        if name in required:
            spec["required"] = True
        params[name] = spec
    if params:
        e["params"] = params
    src = f"GET /api/v3/models request schema ({lm.schema_location or 'none given'}) at {base_url}, {today}"
    if n["quoted_usd"] is not None and n.get("_tiers") and (e.get("size") or {}).get("resolutions"):
        e["price"] = {"kind": "per_resolution", "param": "resolution", "table": dict(n["_tiers"])}
        price_fact = {
            "source": f"POST /api/v3/model/pricing at {base_url}, {today}, one quote per resolution tier",
            "confidence": "high",
            "note": "quoted for 1024×1024-class samples; other parameters may change the price",
        }
    elif n["quoted_usd"] is not None:
        e["price"] = {"kind": "flat", "usd": n["quoted_usd"], "reserve_usd": max(n["quoted_usd"] * 2, 0.05)}
        price_fact = {
            "source": f"POST /api/v3/model/pricing at {base_url}, {today}, sample {n['sample'] or '1024×1024'}",
            "confidence": "high",
            "note": "quoted for the 1024×1024 sample only; other sizes/options may cost more (reserve kept)",
        }
    else:
        reserve = max((lm.base_price or 0.0) * 3, 0.10)
        e["price"] = {"kind": "unknown", "reserve_usd": round(reserve, 4)}
        price_fact = {
            "source": f"pricing API failed ({n['quote_error'][:120]}); base_price {lm.base_price} is only a floor",
            "confidence": "low",
        }
    e["notes"] = (
        f"DRAFT written by `evalkit catalog sync` on {today} from the provider's schema. Review operations, "
        "inputs, size rule and price, then delete `draft = true` to let `--models all` run it."
    )
    e["facts"] = {
        "params": {"source": src, "confidence": "medium", "note": "derived automatically; not reviewed"},
        "operations": {"source": f"evalkit's reading of type {lm.type!r} and the schema", "confidence": "low"},
        "price": price_fact,
    }
    return e


def _entries_of(path: Path) -> list[ModelSpec]:
    with path.open("rb") as fh:
        data = tomllib.load(fh)
    return [parse_model(raw, str(path)) for raw in data.get("model") or []]


def write_override(report: SyncReport, catalog: Catalog, workspace: str | Path) -> Path:
    """Write ``<workspace>/catalog/wavespeed-sync.toml`` from a sync report (bundled files untouched)."""
    path = Path(workspace) / "catalog" / SYNC_FILE
    entries: list[dict[str, Any]] = []
    today, base_url = report.checked_at, report.base_url
    changed = {c["id"] for c in report.price_changes}
    for spec in catalog:
        q = report._quotes.get(spec.id)
        from_sync = bool(spec.origin) and Path(spec.origin).resolve() == path.resolve()
        if spec.provider != "wavespeed" or (q is None and not from_sync):
            continue
        if q is None:  # written by an earlier sync (a draft, an earlier quote) and not re-quoted: kept as it is
            entries.append(_raw_entry(spec))
            continue
        fact = spec.facts.get("price")
        if not from_sync and spec.id not in changed and fact is not None and fact.confidence == "high":
            continue  # confirmed at high confidence: no override needed (it would shadow bundled updates)
        raw = _raw_entry(spec)
        old = spec.price.describe()
        raw["price"] = _quoted_price(spec, q)
        facts = dict(raw.get("facts") or {})
        facts["price"] = {
            "source": f"POST /api/v3/model/pricing at {base_url}, {today}, sample {_short_sample(q['sample'])}"
            + (" (and one quote per table key)" if q.get("table") else ""),
            "confidence": "high",
            "note": f"catalogue said: {old}" + (f" [{Path(spec.origin).name}]" if spec.origin else ""),
        }
        raw["facts"] = facts
        entries.append(raw)
    drafts = [_draft_entry(n, today, base_url) for n in report.new_models]
    header = [
        "# Written by `evalkit catalog sync --write` — a reviewable override of the bundled WaveSpeed catalogue.",
        f"# Checked {today} against {base_url}" + (" (SIMULATED: evalkit's local server)" if report.simulated else ""),
        "# Entries here replace bundled entries with the same id (whole). Delete this file to undo the sync.",
        "# Quoted prices: confidence high, source and date in facts.price. New models are DRAFTS: `evalkit models`",
        "# lists them, `--models all` skips them until a person reviews the entry and deletes `draft = true`.",
    ]
    if report.removed:
        header.append("# No longer listed by the provider (kept in the catalogue; remove by hand if retired):")
        header += [f"#   {r['id']} ({r['endpoint']})" for r in report.removed]
    refused = [d for d in report.schema_diffs if d.severity == "refused"]
    if refused:
        header.append("# Parameters the provider's schema would refuse (fix the entry by hand):")
        header += [f"#   {d.text()}" for d in refused]
    body = "\n".join(header) + "\n"
    if not entries and not drafts:
        body += "\n# Nothing to override: every quoted price matched a high-confidence catalogue price.\n"
    for e in entries + drafts:
        body += "\n[[model]]\n" + dumps_entry(e)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".toml.tmp")
    tmp.write_text(body, encoding="utf-8")
    try:  # never leave a file the catalogue cannot load
        _entries_of(tmp)
    except (tomllib.TOMLDecodeError, CatalogError) as exc:
        tmp.unlink(missing_ok=True)
        raise CatalogError(f"catalog sync produced an invalid override ({exc}); nothing was written") from None
    tmp.replace(path)
    report.written = str(path)
    return path


# ---- a tiny TOML writer (the entries' shapes only) ------------------------------------------------

_BARE = re.compile(r"^[A-Za-z0-9_-]+$")
_RATIO = re.compile(r"^\d+(\.\d+)?:\d+(\.\d+)?$")


def _key(k: str) -> str:
    return k if _BARE.match(k) else json.dumps(k, ensure_ascii=False)


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            raise InvalidInputError(f"cannot write {v!r} to TOML")
        return repr(v)
    if isinstance(v, (_dt.date, _dt.datetime)):
        return v.isoformat()
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        if not v:
            return "{ }"
        return "{ " + ", ".join(f"{_key(str(k))} = {_value(x)}" for k, x in v.items()) + " }"
    raise InvalidInputError(f"cannot write a {type(v).__name__} to TOML")


def dumps_entry(entry: dict[str, Any]) -> str:
    """One ``[[model]]`` table's body: scalars and inline tables; ``params``/``facts`` as dotted keys."""
    lines = []
    for k, v in entry.items():
        if k in ("params", "facts") and isinstance(v, dict):
            for sub, spec in v.items():
                lines.append(f"{k}.{_key(str(sub))} = {_value(spec)}")
        else:
            lines.append(f"{_key(k)} = {_value(v)}")
    return "\n".join(lines) + "\n"


# ---- Stability: nothing to sync against -----------------------------------------------------------


def stability_report(catalog: Catalog) -> dict[str, Any]:
    """Stability publishes no model list or pricing API: the catalogue's credits with their confidence."""
    rows = []
    for m in catalog:
        if m.provider != "stability":
            continue
        f = m.facts.get("price")
        rows.append(
            {
                "id": m.id,
                "endpoint": m.endpoint,
                "credits": m.price.credits,
                "usd": m.price_usd(),
                "reserve_usd": m.reserve_usd(),
                "confidence": f.confidence if f else "unknown",
                "source": f.source if f else "",
            }
        )
    return {
        "provider": "stability",
        "api": None,
        "note": "Stability AI has no model-list or pricing API; credits after Aug 2025 are not published "
        "(wavespeed-models-2026.md §3). Check https://platform.stability.ai/pricing and edit a workspace override.",
        "models": rows,
    }


__all__ = [
    "SYNC_FILE",
    "SchemaDiff",
    "SyncReport",
    "catalogue_sample",
    "dumps_entry",
    "is_edit_model",
    "schema_differences",
    "schema_sample",
    "stability_report",
    "sync_wavespeed",
    "write_override",
]
