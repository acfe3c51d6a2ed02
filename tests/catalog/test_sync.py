"""`evalkit catalog sync`: the model list (both schema locations), edit-model detection, the diff, --write.

A scripted WaveSpeed catalogue API on httpx.MockTransport serves the catalogue's own models (schemas
generated from the entries) with drift applied: a changed price, a removed model, new edit models (one
known only by its path), non-edit models, a schema that lost an enum value, and a failing quote.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import httpx
import pytest

import evalkit.catalog as catalog_pkg
from evalkit.catalog import Catalog
from evalkit.catalog.pricing import ListedModel, WaveSpeedCatalogClient, parse_models
from evalkit.catalog.schema import listed_model, request_schema
from evalkit.catalog.sync import SYNC_FILE, dumps_entry, is_edit_model, sync_wavespeed, write_override
from evalkit.credentials import Secret

KEY = "sk-sync-canary-12345"

NEW_EDIT = {
    "model_id": "acme/pixel-edit-3/edit",
    "name": "Acme Pixel Edit 3",
    "base_price": 0.05,
    "type": "image-to-image",
    "api_schema": {
        "api_schemas": [
            {
                "type": "model_run",
                "method": "POST",
                "api_path": "/api/v3/acme/pixel-edit-3/edit",
                "request_schema": {
                    "type": "object",
                    "required": ["prompt", "images"],
                    "properties": {
                        "prompt": {"type": "string"},
                        "images": {"type": "array", "items": {"type": "string"}, "maxItems": 4, "minItems": 1},
                        "aspect_ratio": {"type": "string", "enum": ["auto", "1:1", "16:9", "9:16"]},
                        "resolution": {"type": "string", "enum": ["1k", "2k"], "default": "1k"},
                        "seed": {"type": "integer", "minimum": -1, "maximum": 2147483647, "default": -1},
                        "output_format": {"type": "string", "enum": ["png", "jpeg"], "default": "png"},
                        "guidance": {"type": "number", "minimum": 0, "maximum": 10, "default": 3.5},
                        "enable_sync_mode": {"type": "boolean"},
                    },
                },
            }
        ]
    },
}
# an edit model whose list entry has no type: recognised by its path only; schema in the OpenAPI location
PATH_ONLY = {
    "model_id": "zeta/retoucher/edit-pro",
    "name": "Zeta Retoucher",
    "base_price": 0.02,
    "api_schema": {
        "paths": {"/api/v3/zeta/retoucher/edit-pro": {}},
        "components": {
            "schemas": {
                "Request": {
                    "type": "object",
                    "required": ["prompt", "image"],
                    "properties": {
                        "prompt": {"type": "string"},
                        "image": {"type": "string"},
                        "size": {"type": "string", "minimum": 256, "maximum": 2048},
                    },
                }
            }
        },
    },
}
NON_EDIT = [
    {"model_id": "wavespeed-ai/hunyuan-video/t2v", "name": "t2v", "base_price": 0.4, "type": "text-to-video"},
    {"model_id": "google/nano-banana-2/text-to-image", "base_price": 0.08, "type": "text-to-image"},
    {"model_id": "kling/kling-v3/image-to-video", "base_price": 0.5, "type": "image-to-video"},
]


class FakeCatalogAPI:
    def __init__(self, catalog: Catalog):
        self.catalog = catalog
        self.price_overrides = {"wavespeed-ai/qwen-image/edit": 0.025}  # drift: a changed price
        self.removed = {"wavespeed-ai/hidream-e1-full"}  # drift: no longer listed
        self.failing_quotes = {"bytedance/seededit-v3"}
        self.quotes: list[dict] = []
        self.auth: list[str] = []

    def models_payload(self) -> dict:
        data = []
        for i, m in enumerate(m for m in self.catalog if m.provider == "wavespeed"):
            if m.endpoint in self.removed:
                continue
            entry = listed_model(m, base_price=0.01, location="components" if i % 2 else "api_schemas")
            if m.id == "nano-banana-edit":  # drift: the published schema lost an aspect ratio
                schema = entry["api_schema"]["api_schemas"][0]["request_schema"] if i % 2 == 0 else None
                schema = schema or entry["api_schema"]["components"]["schemas"]["Request"]
                schema["properties"]["aspect_ratio"]["enum"].remove("21:9")
            data.append(entry)
        return {"code": 200, "message": "success", "data": [*data, NEW_EDIT, PATH_ONLY, *NON_EDIT]}

    def price(self, model_id: str, inputs: dict) -> float:
        if model_id in self.price_overrides:
            return self.price_overrides[model_id]
        if model_id == NEW_EDIT["model_id"]:
            return 0.06 if inputs.get("resolution") == "2k" else 0.045
        if model_id == PATH_ONLY["model_id"]:
            return 0.02
        spec = next(m for m in self.catalog if m.endpoint == model_id)
        p = spec.price_usd(inputs)
        return p if p is not None else spec.reserve_usd(inputs)

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.auth.append(request.headers.get("authorization", ""))
        if request.url.path == "/api/v3/models" and request.method == "GET":
            return httpx.Response(200, json=self.models_payload())
        if request.url.path == "/api/v3/model/pricing" and request.method == "POST":
            body = json.loads(request.content)
            self.quotes.append(body)
            mid = body["model_id"]
            if mid in self.failing_quotes:
                return httpx.Response(500, json={"code": 500, "message": "pricing backend unavailable"})
            price = self.price(mid, body["inputs"])
            return httpx.Response(
                200,
                json={
                    "code": 200,
                    "message": "success",
                    "data": {"model_id": mid, "unit_price": price, "currency": "USD"},
                },
            )
        return httpx.Response(404, json={"code": 404, "message": "no route"})


@pytest.fixture
def api(catalog):
    return FakeCatalogAPI(catalog)


@pytest.fixture
def client(api):
    c = WaveSpeedCatalogClient(
        base_url="https://ws.test",
        api_key=Secret(KEY, "WAVESPEED_API_KEY"),
        client=httpx.Client(transport=httpx.MockTransport(api.handler)),
    )
    yield c
    c._client.close()


def _bundled_hashes() -> dict[str, str]:
    d = Path(catalog_pkg.__file__).parent
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.glob("*.toml"))}


# ---- the list ------------------------------------------------------------------------------------


def test_both_documented_schema_locations_parse_the_same(catalog):
    spec = catalog.get("qwen-edit-plus")
    a = parse_models({"data": [listed_model(spec, base_price=0.02, location="api_schemas")]})[0]
    b = parse_models({"data": [listed_model(spec, base_price=0.02, location="components")]})[0]
    assert a.endpoint == b.endpoint == spec.endpoint
    assert (a.schema_location, b.schema_location) == ("api_schemas", "components")
    assert a.request_schema == b.request_schema == request_schema(spec)
    assert a.properties["images"]["maxItems"] == 3 and a.properties["size"]["maximum"] == 1536
    assert a.base_price == 0.02 and a.type == "image-to-image"


@pytest.mark.parametrize(
    "endpoint, mtype, edit",
    [
        ("acme/x/edit", "", True),
        ("wavespeed-ai/qwen-image/edit-2511", "", True),
        ("alibaba/wan-9/image-edit", "", True),
        ("wavespeed-ai/step1x-edit", "", True),
        ("wavespeed-ai/z-image/turbo-inpaint", "", True),
        ("wavespeed-ai/image-zoom-out", "", True),
        ("bytedance/seededit-v3", "image-to-image", True),  # by type
        ("wavespeed-ai/flux-dev", "text-to-image", False),
        ("google/veo3", "text-to-video", False),
        ("acme/edit-video/edit", "video-to-video", False),  # an edit path, but a video model
        ("wavespeed-ai/hunyuan-video/t2v", "", False),
        ("editorial/some-model", "", False),  # 'edit' in the vendor name is not an edit endpoint
    ],
)
def test_edit_models_are_told_from_type_or_path(endpoint, mtype, edit):
    assert is_edit_model(ListedModel(model_id=endpoint, endpoint=endpoint, type=mtype)) is edit


# ---- the diff ------------------------------------------------------------------------------------


def test_sync_reports_new_removed_changed_and_schema_drift(catalog, client, api):
    report = sync_wavespeed(catalog, client)
    # new edit models (by type and by path), non-edit models left out
    new = {n["endpoint"]: n for n in report.new_models}
    assert set(new) == {"acme/pixel-edit-3/edit", "zeta/retoucher/edit-pro"}
    assert new["acme/pixel-edit-3/edit"]["quoted_usd"] == 0.045  # the 1024² sample asks for the 1k tier
    assert new["zeta/retoucher/edit-pro"]["schema_location"] == "components"
    assert sorted(report.non_edit_left_out) == sorted(m["model_id"] for m in NON_EDIT)
    quoted = {q["model_id"] for q in api.quotes}
    assert not quoted & {m["model_id"] for m in NON_EDIT}  # never priced
    # removed
    assert [r["id"] for r in report.removed] == ["hidream-e1-full"]
    # price changes: exactly the drifted one; everything else quoted equal
    changes = {c["id"]: c for c in report.price_changes if c["catalogue_usd"] is not None}
    assert set(changes) == {"qwen-edit"}
    assert (changes["qwen-edit"]["catalogue_usd"], changes["qwen-edit"]["quoted_usd"]) == (0.02, 0.025)
    assert [f["id"] for f in report.quote_failures] == ["seededit-v3"]
    assert "pricing backend unavailable" in report.quote_failures[0]["error"]
    # schema drift: the dropped aspect ratio is something evalkit could send → refused
    drift = [d for d in report.schema_diffs if d.model_id == "nano-banana-edit"]
    assert len(drift) == 1 and drift[0].kind == "enum" and drift[0].param == "aspect_ratio"
    assert drift[0].severity == "refused" and "21:9" in drift[0].catalogue and "21:9" not in drift[0].schema
    assert [d for d in report.schema_diffs if d.model_id != "nano-banana-edit"] == []  # generated = no drift
    # each quote was a 1024×1024 sample
    qwen = next(q for q in api.quotes if q["model_id"] == "wavespeed-ai/qwen-image/edit")
    assert qwen["inputs"]["size"] == "1024*1024" and qwen["inputs"]["image"].startswith("https://")
    # human text and JSON; the key never appears
    text = report.to_text()
    for needle in ("acme/pixel-edit-3/edit", "hidream-e1-full", "qwen-edit: $0.0200 → $0.0250", "seededit-v3"):
        assert needle in text
    blob = json.dumps(report.to_dict(), default=str)
    assert KEY not in text and KEY not in blob
    assert all(a == f"Bearer {KEY}" for a in api.auth)


def test_write_makes_one_reviewable_override_and_leaves_bundled_files_alone(catalog, client, api, tmp_path):
    before = _bundled_hashes()
    report = sync_wavespeed(catalog, client)
    path = write_override(report, catalog, tmp_path)
    assert path == tmp_path / "catalog" / SYNC_FILE and report.written == str(path)
    assert _bundled_hashes() == before
    assert [p.name for p in (tmp_path / "catalog").iterdir()] == [SYNC_FILE]
    text = path.read_text()
    assert "hidream-e1-full" in text  # the removed model is named in the header for the reviewer
    cat = Catalog.load(tmp_path)
    q = cat.get("qwen-edit")
    assert q.price_for_1024() == 0.025 and q.origin == str(path)
    assert q.facts["price"].confidence == "high"
    assert "model/pricing" in q.facts["price"].source and report.checked_at in q.facts["price"].source
    assert q.params == catalog.get("qwen-edit").params and q.size == catalog.get("qwen-edit").size  # rest kept
    # a low-confidence price the quote confirms is written at high confidence; a flat quote needs no reserve
    flux2 = cat.get("flux-2-pro-edit")
    assert catalog.get("flux-2-pro-edit").reserve_usd({}) == 0.08
    assert flux2.origin == str(path) and flux2.facts["price"].confidence == "high"
    assert flux2.price_for_1024() == 0.04 and flux2.reserve_usd({}) == 0.04
    # a table rule the catalogue only estimated is quoted per key (gpt-image-1.5: quality × square/other)
    gpt15 = cat.get("gpt-image-1.5-edit")
    assert gpt15.origin == str(path) and gpt15.price.kind == "per_quality_size"
    assert gpt15.price_usd({"quality": "high", "size": "1536*1024"}) == 0.20
    # a failed quote leaves the catalogue price as it was
    assert cat.get("seededit-v3").origin != str(path)
    # a table rule is quoted per key
    nbp = cat.get("nano-banana-pro-edit")
    assert nbp.origin != str(path)  # its prices were confirmed at high confidence: no override needed
    # new models are drafts: listed, never in 'all'
    draft = cat.get("pixel-edit-3-edit")
    assert draft.draft and draft.endpoint == "acme/pixel-edit-3/edit"
    assert draft.inputs.param == "images" and draft.inputs.max_images == 4 and "multi_image" in draft.operations
    assert draft.size.kind == "aspect_ratio" and draft.size.aspect_ratios == ("1:1", "16:9", "9:16")
    assert draft.size.resolutions == ("1k", "2k") and draft.seed is not None and draft.sync_mode
    assert draft.params["guidance"].max == 10 and draft.price_for_1024() == 0.045
    assert draft.facts["price"].confidence == "high" and draft.reserve_usd({}) >= 0.045
    zeta = cat.get("retoucher-edit-pro")
    assert zeta.draft and zeta.inputs.param == "image" and (zeta.size.min_px, zeta.size.max_px) == (256, 2048)
    all_ids = {m.id for m in cat.select("all")}
    assert "pixel-edit-3-edit" not in all_ids and "retoucher-edit-pro" not in all_ids and "qwen-edit" in all_ids
    # a second sync against the same server finds nothing new to do for what was written
    again = sync_wavespeed(cat, client)
    assert {c["id"] for c in again.price_changes} == set()
    assert again.new_models == []
    # and writing again keeps what the first sync wrote (quotes, drafts), though nothing changed this time
    write_override(again, cat, tmp_path)
    cat2 = Catalog.load(tmp_path)
    assert cat2.get("qwen-edit").price_for_1024() == 0.025 and cat2.get("pixel-edit-3-edit").draft
    assert cat2.get("seededit-v3").origin != str(path) and _bundled_hashes() == before


def test_dumps_entry_round_trips():
    import tomllib

    entry = {
        "id": "x",
        "display_name": 'A "quoted" name — ünïcode',
        "price": {"kind": "per_quality_size", "param": "quality", "table": {"low": {"square": 0.01, "other": 0.02}}},
        "params": {"quality": {"type": "enum", "choices": ["low", "high"]}},
        "facts": {"price": {"source": "s\\n", "confidence": "high"}},
        "size": {"kind": "aspect_ratio", "resolutions": ["1k", "2k"], "default_resolution": "1k"},
        "draft": True,
        "sim": {},
    }
    assert tomllib.loads("[[model]]\n" + dumps_entry(entry))["model"][0] == entry


def test_stability_has_nothing_to_sync_against_and_says_what_it_has(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "evalkit", "catalog", "sync", "--provider", "stability", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    rep = json.loads(proc.stdout)
    assert rep["api"] is None and "no model-list or pricing API" in rep["note"]
    credits = {r["id"]: (r["credits"], r["confidence"]) for r in rep["models"]}
    assert credits["stability-erase"] == (5, "low") and credits["stability-replace-background-relight"] == (8, "low")
    assert not (tmp_path / "evalkit-workspace").exists()  # nothing written


def test_a_bad_drift_file_is_refused_before_the_server_starts(tmp_path):
    import argparse

    from evalkit.sim.launch import _read_drift

    good = tmp_path / "good.json"
    good.write_text(json.dumps({"prices": {"qwen-edit": 0.025}, "removed": ["step1x-edit"]}))
    assert _read_drift(str(good))["prices"] == {"qwen-edit": 0.025}
    for text, needle in (("{", "cannot use"), ('{"price": {}}', "unknown drift key"), ('{"prices": {"x": -1}}', "USD")):
        bad = tmp_path / "bad.json"
        bad.write_text(text)
        with pytest.raises(argparse.ArgumentTypeError, match=needle):
            _read_drift(str(bad))
