"""The catalogue: every required model with the reference's facts; size/price rules; user overrides."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from evalkit.catalog import Catalog
from evalkit.catalog.spec import fit_size, nearest_aspect_ratio, resolution_tier_for
from evalkit.errors import CatalogError, UnknownModelError

# (id, endpoint, image param, max images, price of a 1024×1024 edit) — from shared/reference/wavespeed-api.md §3
REFERENCE = [
    ("qwen-edit", "wavespeed-ai/qwen-image/edit", "image", 1, 0.02),
    ("qwen-edit-plus", "wavespeed-ai/qwen-image/edit-plus", "images", 3, 0.02),
    ("nano-banana-pro-edit-ultra", "google/nano-banana-pro/edit-ultra", "images", 14, 0.15),
    ("nano-banana-pro-edit", "google/nano-banana-pro/edit", "images", 14, 0.14),
    ("nano-banana-edit", "google/nano-banana/edit", "images", 10, 0.039),
    ("seedream-v4.5-edit", "bytedance/seedream-v4.5/edit", "images", 10, 0.04),
    ("seedream-v4-edit", "bytedance/seedream-v4/edit", "images", 10, 0.027),
    ("step1x-edit", "wavespeed-ai/step1x-edit", "image", 1, 0.03),
    ("hidream-e1-full", "wavespeed-ai/hidream-e1-full", "image", 1, 0.024),
    ("seededit-v3", "bytedance/seededit-v3", "image", 1, 0.027),
    ("wan-2.5-image-edit", "alibaba/wan-2.5/image-edit", "images", 2, 0.035),
    ("flux-kontext-pro", "wavespeed-ai/flux-kontext-pro", "image", 1, 0.04),
    ("flux-kontext-pro-multi", "wavespeed-ai/flux-kontext-pro/multi", "images", 5, 0.04),
    ("flux-kontext-max", "wavespeed-ai/flux-kontext-max", "image", 1, 0.08),
    ("ideogram-character", "ideogram-ai/ideogram-character", "image", 1, 0.15),
    ("gpt-image-1-edit", "openai/gpt-image-1", "image", 1, 0.042),
    ("z-image-turbo-inpaint", "wavespeed-ai/z-image/turbo-inpaint", "image", 1, 0.02),
    ("image-zoom-out", "wavespeed-ai/image-zoom-out", "image", 1, 0.02),
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
