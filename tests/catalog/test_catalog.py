"""The catalogue: every required model with the reference's facts; size/price rules; user overrides."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import pytest

from evalkit.catalog import Catalog
from evalkit.catalog.spec import fit_size, nearest_aspect_ratio, resolution_tier_for
from evalkit.errors import CatalogError, UnknownModelError

# (id, endpoint, image param, max images, price of a 1024×1024 edit) — from shared/reference/wavespeed-api.md §3,
# corrected by its 2026 addendum wavespeed-models-2026.md §1 (wan-2.5 $0.03, nano-banana edit $0.038)
REFERENCE = [
    ("qwen-edit", "wavespeed-ai/qwen-image/edit", "image", 1, 0.02),
    ("qwen-edit-plus", "wavespeed-ai/qwen-image/edit-plus", "images", 3, 0.02),
    ("nano-banana-pro-edit-ultra", "google/nano-banana-pro/edit-ultra", "images", 14, 0.15),
    ("nano-banana-pro-edit", "google/nano-banana-pro/edit", "images", 14, 0.14),
    ("nano-banana-edit", "google/nano-banana/edit", "images", 10, 0.038),
    ("seedream-v4.5-edit", "bytedance/seedream-v4.5/edit", "images", 10, 0.04),
    ("seedream-v4-edit", "bytedance/seedream-v4/edit", "images", 10, 0.027),
    ("step1x-edit", "wavespeed-ai/step1x-edit", "image", 1, 0.03),
    ("hidream-e1-full", "wavespeed-ai/hidream-e1-full", "image", 1, 0.024),
    ("seededit-v3", "bytedance/seededit-v3", "image", 1, 0.027),
    ("wan-2.5-image-edit", "alibaba/wan-2.5/image-edit", "images", 2, 0.03),
    ("flux-kontext-pro", "wavespeed-ai/flux-kontext-pro", "image", 1, 0.04),
    ("flux-kontext-pro-multi", "wavespeed-ai/flux-kontext-pro/multi", "images", 5, 0.04),
    ("flux-kontext-max", "wavespeed-ai/flux-kontext-max", "image", 1, 0.08),
    ("ideogram-character", "ideogram-ai/ideogram-character", "image", 1, 0.15),
    ("gpt-image-1-edit", "openai/gpt-image-1", "image", 1, 0.042),
    ("z-image-turbo-inpaint", "wavespeed-ai/z-image/turbo-inpaint", "image", 1, 0.02),
    ("image-zoom-out", "wavespeed-ai/image-zoom-out", "image", 1, 0.02),
]

# The newer edit models (wavespeed-models-2026.md §2): (id, path, operations ⊇, max images, price of a 1024² edit
# or None when not found, price confidence, what a budget holds back for it at least)
NEWER = [
    ("qwen-edit-2511", "wavespeed-ai/qwen-image/edit-2511", {"general_edit", "multi_image"}, 3, 0.02, "low", 0.05),
    ("qwen-image-2.0-edit", "wavespeed-ai/qwen-image-2.0/edit", {"general_edit"}, 3, 0.03, "low", 0.06),
    ("nano-banana-2-edit", "google/nano-banana-2/edit", {"general_edit", "multi_image"}, 14, 0.08, "low", 0.08),
    ("nano-banana-pro-edit-multi", "google/nano-banana-pro/edit-multi", {"multi_image"}, 14, 0.14, "low", 0.28),
    ("gpt-image-1.5-edit", "openai/gpt-image-1.5/edit", {"general_edit"}, 1, 0.034, "low", 0.20),
    ("gpt-image-2-edit", "openai/gpt-image-2/edit", {"general_edit", "multi_image"}, 16, 0.06, "low", 0.30),
    ("seedream-v5.0-lite-edit", "bytedance/seedream-v5.0-lite/edit", {"general_edit"}, 10, 0.035, "high", 0.035),
    ("grok-imagine-v2-edit", "x-ai/grok-imagine-image-v2.0/edit", {"general_edit"}, 1, 0.06, "high", 0.06),
    ("flux-2-pro-edit", "wavespeed-ai/flux-2-pro/edit", {"general_edit", "multi_image"}, 3, 0.04, "low", 0.08),
    ("flux-2-dev-edit", "wavespeed-ai/flux-2-dev/edit", {"general_edit"}, 1, 0.02, "low", 0.04),
    ("wan-2.6-image-edit", "alibaba/wan-2.6/image-edit", {"general_edit"}, 1, 0.03, "low", 0.06),
    ("flux-kontext-max-multi", "wavespeed-ai/flux-kontext-max/multi", {"multi_image"}, 5, 0.08, "low", 0.16),
]


@pytest.mark.parametrize("mid, endpoint, param, max_images, price", REFERENCE)
def test_required_models_match_reference(catalog: Catalog, mid, endpoint, param, max_images, price):
    m = catalog.get(mid)
    assert m.provider == "wavespeed"
    assert m.endpoint == endpoint
    assert m.inputs.param == param and m.inputs.max_images == max_images
    assert m.price_for_1024() == pytest.approx(price)
    # every non-high-confidence fact names a source
    for name, fact in m.facts.items():
        assert fact.source, f"{mid}.facts.{name} has no source"


def test_model_specific_facts(catalog: Catalog):
    assert catalog.get("image-zoom-out").prompt == "none"
    assert catalog.get("image-zoom-out").operations == ("zoom_out",)
    z = catalog.get("z-image-turbo-inpaint")
    assert z.mask is not None and z.mask.required and z.mask.convention == "white_edit"
    g = catalog.get("gpt-image-1-edit")
    assert g.mask is not None and not g.mask.required and g.mask.convention == "transparent_edit"
    assert catalog.get("nano-banana-pro-edit-ultra").seed is None
    assert catalog.get("flux-kontext-pro").seed is None and catalog.get("flux-kontext-max").seed is not None
    step = catalog.get("step1x-edit")
    assert step.params["guidance_scale"].default == 4 and step.params["num_inference_steps"].max == 50
    assert catalog.get("seededit-v3").params["guidance_scale"].max == 1.0
    assert catalog.get("hidream-e1-full").sync_mode is False
    # addendum §1.5: pages that list neither flag, or only sync mode
    for mid in ("wan-2.5-image-edit", "step1x-edit"):
        m = catalog.get(mid)
        assert (m.sync_mode, m.base64_output) == (False, False), mid
        assert m.facts["flags"].confidence == "high"
    for mid in ("flux-kontext-pro", "flux-kontext-pro-multi", "flux-kontext-max", "flux-kontext-max-multi"):
        m = catalog.get(mid)
        assert (m.sync_mode, m.base64_output) == (True, False), mid
    # confidences raised by the addendum (§1.4, §1.8, §1.11) and the Seedream 4.5 minimum-size question (§1.6)
    assert catalog.get("qwen-edit-plus").facts["price"].confidence == "high"
    assert catalog.get("gpt-image-1-edit").facts["endpoint"].confidence == "high"
    assert catalog.get("nano-banana-pro-edit").facts["price"].confidence == "high"
    assert catalog.get("ideogram-character").facts["price"].confidence == "medium"
    s45 = catalog.get("seedream-v4.5-edit")
    assert s45.facts["min_size"].confidence == "low" and "3,686,400" in s45.notes
    for mid in ("wan-2.5-image-edit", "nano-banana-edit"):
        assert catalog.get(mid).facts["price"].confidence == "high"
    assert catalog.get("seedream-v4.5-edit").size.min_px == 1024
    assert catalog.get("wan-2.5-image-edit").size.max_px == 5000
    assert "zh" in catalog.get("qwen-edit").languages


def test_prices_by_rule(catalog: Catalog):
    ultra = catalog.get("nano-banana-pro-edit-ultra")
    assert ultra.price_usd({"resolution": "8k"}) == 0.18
    assert ultra.size_params(5000, 5000)[0]["resolution"] == "8k"
    pro = catalog.get("nano-banana-pro-edit")
    assert pro.price_usd({"resolution": "4k"}) == 0.24
    assert pro.size_params(3000, 2000, explicit=False)[0]["resolution"] == "1k"  # size from the input: default tier
    assert pro.size_params(3000, 2000, explicit=True)[0]["resolution"] == "4k"
    gpt = catalog.get("gpt-image-1-edit")
    assert gpt.price_usd({"quality": "high", "size": "1536*1024"}) == 0.25
    assert gpt.price_usd({"quality": "low", "size": "1024*1024"}) == 0.011
    assert gpt.price_usd({"size": "auto"}) is None
    assert gpt.reserve_usd({"size": "auto"}) == 0.063  # most a medium-quality edit can cost
    ideo = catalog.get("ideogram-character")
    assert ideo.price_usd({"rendering_speed": "Turbo"}) == 0.10
    multi = catalog.get("flux-kontext-pro-multi")
    assert multi.price_usd({}) == 0.04


def test_fit_size_keeps_aspect_and_range():
    assert fit_size(512, 256, 256, 1536)[:2] == (512, 256)
    w, h, notes = fit_size(4000, 2000, 256, 1536)
    assert (w, h) == (1536, 768) and notes
    w, h, _ = fit_size(300, 300, 1024, 4096)
    assert (w, h) == (1024, 1024)
    w, h, notes = fit_size(5000, 100, 256, 1536)  # too extreme: short side clamped up
    assert w == 1536 and h == 256 and any("does not fit" in n for n in notes)


def test_nearest_aspect_ratio_and_tiers():
    ratios = ["1:1", "16:9", "9:16", "4:3", "3:4"]
    assert nearest_aspect_ratio(1920, 1080, ratios) == "16:9"
    assert nearest_aspect_ratio(1000, 1010, ratios) == "1:1"
    assert nearest_aspect_ratio(600, 800, ratios) == "3:4"
    assert resolution_tier_for(1024, ["1k", "2k", "4k"]) == "1k"
    assert resolution_tier_for(1500, ["1k", "2k", "4k"]) == "2k"
    assert resolution_tier_for(9000, ["4k", "8k"]) == "8k"


def test_unknown_model_suggests(catalog: Catalog):
    with pytest.raises(UnknownModelError) as ei:
        catalog.get("qwen-edt")
    assert "qwen-edit" in str(ei.value)


def test_workspace_catalogue_adds_and_overrides(tmp_path):
    (tmp_path / "catalog").mkdir()
    (tmp_path / "catalog" / "mine.toml").write_text(
        """
[[model]]
id = "my-edit"
display_name = "My edit"
vendor = "Me"
provider = "wavespeed"
endpoint = "me/my-edit"
operations = ["general_edit"]
inputs = { param = "image" }
price = { kind = "flat", usd = 0.5 }

[[model]]
id = "qwen-edit"
display_name = "Qwen (negotiated price)"
vendor = "Alibaba"
provider = "wavespeed"
endpoint = "wavespeed-ai/qwen-image/edit"
operations = ["general_edit"]
inputs = { param = "image" }
size = { kind = "wh", param = "size", min_px = 256, max_px = 1536 }
price = { kind = "flat", usd = 0.015 }
"""
    )
    cat = Catalog.load(tmp_path)
    assert cat.get("my-edit").price_for_1024() == 0.5
    assert cat.get("qwen-edit").price_for_1024() == 0.015
    assert cat.get("qwen-edit").origin.endswith("mine.toml")
    assert len(cat) == len(Catalog.load()) + 1


def test_provider_facts_are_data_and_a_workspace_file_can_replace_them(tmp_path):
    bundled = Catalog.load()
    assert bundled.default_edit_model == "qwen-edit-plus"  # the original app's default, as catalogue data
    assert bundled.default_edit_model in bundled
    (tmp_path / "catalog").mkdir()
    (tmp_path / "catalog" / "mine.toml").write_text(
        """
[provider]
name = "wavespeed"
level_env = "MY_LEVEL"
default_level = "team"
levels.team = { max_concurrent = 7, images_per_minute = 70 }
default_edit_model = "qwen-edit"
facts.levels = { source = "our contract", confidence = "high" }

[[model]]
id = "my-edit"
display_name = "My edit"
vendor = "Me"
provider = "wavespeed"
endpoint = "me/my-edit"
operations = ["general_edit"]
inputs = { param = "image" }
price = { kind = "flat", usd = 0.5 }
"""
    )
    cat = Catalog.load(tmp_path)
    info = cat.provider("wavespeed")
    assert info.origin.endswith("mine.toml") and cat.default_edit_model == "qwen-edit"
    assert info.default_limits({}) == (7, 70.0) and info.default_limits({"MY_LEVEL": "nope"}) == (7, 70.0)
    (tmp_path / "catalog" / "mine.toml").write_text(
        """
[provider]
name = "wavespeed"
max_concurrent = 0
default_level = "gold"
colour = "red"

[[model]]
id = "my-edit"
display_name = "My edit"
vendor = "Me"
provider = "wavespeed"
endpoint = "me/my-edit"
operations = ["general_edit"]
inputs = { param = "image" }
price = { kind = "flat", usd = 0.5 }
"""
    )
    with pytest.raises(CatalogError) as ei:
        Catalog.load(tmp_path)
    for needle in ("max_concurrent must be a whole number", "colour"):
        assert needle in str(ei.value)


def test_bad_catalogue_file_lists_every_problem(tmp_path):
    (tmp_path / "catalog").mkdir()
    (tmp_path / "catalog" / "bad.toml").write_text(
        """
[[model]]
id = "Bad Id"
provider = "wavespeed"
endpoint = "../etc/passwd"
operations = ["teleport"]
inputs = { param = "image" }
price = { kind = "per_resolution" }
colour = "red"
"""
    )
    with pytest.raises(CatalogError) as ei:
        Catalog.load(tmp_path)
    text = str(ei.value)
    for needle in ("not a safe slug", "not a safe path", "teleport", "needs price.param", "colour"):
        assert needle in text
    (tmp_path / "catalog" / "bad.toml").write_text("[[model]\nid=")
    with pytest.raises(CatalogError, match="not valid TOML"):
        Catalog.load(tmp_path)


@pytest.mark.parametrize("mid, endpoint, ops, max_images, price, confidence, reserve_at_least", NEWER)
def test_newer_edit_models(catalog: Catalog, mid, endpoint, ops, max_images, price, confidence, reserve_at_least):
    m = catalog.get(mid)
    assert m.provider == "wavespeed" and m.endpoint == endpoint and not m.draft
    assert ops <= set(m.operations)
    assert m.inputs.param == "images" and m.inputs.max_images == max_images
    assert m.facts["price"].confidence == confidence and m.facts["price"].source
    if price is None:  # not found: no invented price, but a reserve a budget holds back
        assert m.price.kind == "unknown" and m.price_for_1024() is None
    else:
        assert m.price_for_1024() == pytest.approx(price)
    # a low or unknown price never lets a budget hold back less than a safe ceiling (above every source's figure)
    params, _ = m.size_params(1024, 1024)
    assert m.reserve_usd(params) >= reserve_at_least


def test_low_confidence_price_reserves_its_ceiling_but_estimates_the_price(catalog: Catalog):
    m = catalog.get("flux-2-pro-edit")
    assert m.price_usd({}) == 0.04 and m.reserve_usd({}) == 0.08
    multi = catalog.get("nano-banana-pro-edit-multi")
    assert multi.price_usd({}) == pytest.approx(0.14)  # num_images defaults to 2, both billed
    assert multi.price_usd({"num_images": 1}) == pytest.approx(0.07)
    assert "reserved" in m.price.describe()


def test_bundled_catalogue_says_when_its_facts_were_checked():
    import datetime
    import tomllib
    from pathlib import Path

    import evalkit.catalog as pkg

    for name in ("wavespeed.toml", "stability.toml"):
        text = (Path(pkg.__file__).parent / name).read_text()
        meta = tomllib.loads(text)["catalog"]
        assert isinstance(meta["facts_checked"], datetime.date)
        assert "FACTS LAST CHECKED" in text or "checked 2026" in text
    assert "evalkit catalog sync" in (Path(pkg.__file__).parent / "wavespeed.toml").read_text()


def _draft_file(tmp_path):
    (tmp_path / "catalog").mkdir(exist_ok=True)
    (tmp_path / "catalog" / "wavespeed-sync.toml").write_text(
        """
[[model]]
id = "acme-edit-9"
display_name = "Acme Edit 9 (draft)"
vendor = "Acme"
provider = "wavespeed"
endpoint = "acme/edit-9"
operations = ["general_edit"]
inputs = { param = "image" }
price = { kind = "flat", usd = 0.05 }
draft = true
"""
    )


def test_a_draft_is_listed_but_not_selected_by_all(tmp_path):
    _draft_file(tmp_path)
    cat = Catalog.load(tmp_path)
    assert "acme-edit-9" in cat and cat.get("acme-edit-9").draft
    assert "acme-edit-9" not in [m.id for m in cat.select("all")]
    assert "acme-edit-9" not in [m.id for m in cat.select("provider:wavespeed")]
    assert "acme-edit-9" not in [m.id for m in cat.for_operation("general_edit")]
    assert [m.id for m in cat.select("acme-edit-9")] == ["acme-edit-9"]  # named by id: a person chose it
    proc = subprocess.run(
        [sys.executable, "-m", "evalkit.cli", "models", "--json", "--workspace", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    rows = {r["id"]: r for r in json.loads(proc.stdout)}
    assert rows["acme-edit-9"]["draft"] is True and rows["qwen-edit"]["draft"] is False


async def test_newer_models_requests_are_accepted_by_the_local_server(catalog: Catalog, wavespeed_sim, tmp_path):
    """Each newer model's request, built from its entry, is accepted by the local WaveSpeed server."""
    from evalkit.credentials import Secret
    from evalkit.images import load_image
    from evalkit.providers.base import EditRequest
    from evalkit.providers.wavespeed import PollSchedule, WaveSpeedEditProvider
    from tests.plugins.common import make_png

    poll = PollSchedule(initial_delay_s=0.005, quick_polls=1000, min_interval_s=0.0, max_interval_s=0.03, timeout_s=10)
    p = WaveSpeedEditProvider(
        base_url=wavespeed_sim.base_url, api_key=Secret(wavespeed_sim.api_key, "WAVESPEED_API_KEY"), poll=poll
    )
    image = load_image(make_png(600, 400, seed=3), name="case.png")
    try:
        for mid, *_ in NEWER:
            m = catalog.get(mid)
            req = EditRequest(model=m, images=(image,), prompt="make it dusk", operation="general_edit")
            out = await p.edit(req)
            assert out.ok, (mid, out.error)
            sent = wavespeed_sim.sim.submits[-1]
            assert sent.model_id == mid
        assert wavespeed_sim.sim.stats()["rejected"] == 0
        # and a request the entry forbids is refused by the server, as the real API would (grok: exactly 1 image)
        grok = catalog.get("grok-imagine-v2-edit")
        body = p.build_body(EditRequest(model=grok, images=(image,), prompt="x", operation="general_edit"))
        body["images"] = body["images"] * 2
        async with httpx.AsyncClient() as c:
            r = await c.post(
                f"{wavespeed_sim.base_url}/api/v3/{grok.endpoint}",
                json=body,
                headers={"Authorization": f"Bearer {wavespeed_sim.api_key}"},
            )
        assert r.status_code == 400 and "at most 1" in r.json()["message"]
    finally:
        await p.aclose()


@pytest.mark.e2e
def test_models_json_cli_lists_every_required_id():
    proc = subprocess.run(
        [sys.executable, "-m", "evalkit.cli", "models", "--json"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    rows = {r["id"]: r for r in json.loads(proc.stdout)}
    for mid, endpoint, _param, max_images, price in REFERENCE:
        r = rows[mid]
        assert r["endpoint"] == endpoint
        assert r["price_1024_usd"] == pytest.approx(price)
        assert r["price_rule"]["kind"]
        assert r["operations"]
        assert r["inputs"]["max_images"] == max_images
    for mid, endpoint, ops, max_images, price, confidence, _ in NEWER:
        r = rows[mid]
        assert r["endpoint"] == endpoint and ops <= set(r["operations"]) and r["inputs"]["max_images"] == max_images
        assert r["price_rule"]["kind"] and r["price_description"]
        assert r["price_1024_usd"] == (pytest.approx(price) if price is not None else None)
        if confidence != "high":
            assert r["uncertain"]["price"]["confidence"] == confidence
