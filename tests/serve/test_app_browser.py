"""The model selector page of ``evalkit serve`` in headless Chromium (Playwright, Debian's chromium).

A real uvicorn server on 127.0.0.1 (port 0) serves a simulated tier file; its edits go to the local
WaveSpeed simulator. The page must show the tiers, change the table when the tier changes, and return an
edited (SIMULATED) image for an upload. Every request the page makes off loopback fails the test.

Needs /usr/bin/chromium (or EVALKIT_CHROMIUM) and the playwright package; skipped otherwise. A screenshot
at 1280 px is written to the test's tmp_path (and to $EVALKIT_SCREENSHOT_DIR when set).
"""

from __future__ import annotations

import base64
import io
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from PIL import Image

from evalkit.catalog import Catalog
from evalkit.credentials import Secret
from evalkit.serve import ServeConfig, create_app
from evalkit.sim.server import start_in_thread
from evalkit.sim.wavespeed import start_wavespeed_sim
from tests.engine.test_runner import FAST_POLL
from tests.plugins.browser import CHROMIUM, CHROMIUM_ARGS, require_browser
from tests.plugins.common import make_png
from tests.plugins.sim_wavespeed import FAST_TIME_SCALE
from tests.plugins.tier_files import write_tier_defaults_file

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]

sync_api = require_browser()
WAIT_MS = 20_000


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("serve-browser")
    with start_wavespeed_sim(Catalog.load(), time_scale=FAST_TIME_SCALE) as sim:
        config = ServeConfig(
            tiers=write_tier_defaults_file(tmp / "tier_defaults.json"),
            workspace=tmp / "ws",
            provider_options={
                "wavespeed": {"base_url": sim.base_url, "api_key": Secret(sim.api_key), "poll": FAST_POLL}
            },
            allow_simulated=True,
        )
        running = start_in_thread(create_app(config))
        try:
            yield running.base_url
        finally:
            running.stop()


def _rows(page) -> list[str]:
    return page.eval_on_selector_all("[data-testid=models-table] tbody tr", "rows => rows.map(r => r.dataset.model)")


def test_the_selector_page_shows_tiers_switches_and_edits(server, tmp_path):
    off_loopback: list[str] = []
    upload = tmp_path / "photo.png"
    upload.write_bytes(make_png(320, 240, seed=3))
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on(
                "request",
                lambda req: (
                    off_loopback.append(req.url)
                    if urlsplit(req.url).hostname not in ("127.0.0.1", None)
                    and not req.url.startswith(("data:", "blob:"))
                    else None
                ),
            )
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(server + "/")
            page.wait_for_selector("body[data-ready='1']", timeout=WAIT_MS)

            tabs = page.locator("[data-testid=tier-tabs] button")
            assert tabs.all_text_contents() == ["free", "standard", "premium"]
            assert page.locator("[data-testid=tier-tabs] button[aria-selected=true]").text_content() == "standard"
            assert page.locator("[data-testid=simulated-banner]").is_visible()
            assert "run-test-1" in page.locator("[data-testid=run-info]").text_content()
            standard = _rows(page)
            assert standard[0] == "qwen-edit-plus" and "flux-kontext-max" in standard
            assert page.locator("[data-testid=chart] circle").count() == len(standard)
            assert (
                "qwen-edit-plus → seedream-v4-edit → step1x-edit"
                in page.locator("[data-testid=route-note]").text_content()
            )

            page.locator("[data-testid=tier-tabs] button", has_text="free").click()
            free = _rows(page)
            assert free[0] == "qwen-edit" and free != standard
            assert page.locator("[data-testid=tier-tabs] button[aria-selected=true]").text_content() == "free"
            assert "$0.025" in page.locator("[data-testid=tier-desc]").text_content()

            page.locator("[data-testid=tier-tabs] button", has_text="standard").click()
            page.select_option("[data-testid=operation]", "multi_image")
            assert "insufficient evidence" in page.locator("[data-testid=status-badge]").text_content()
            page.select_option("[data-testid=operation]", "general_edit")

            page.set_input_files("[data-testid=image-input]", str(upload))
            page.fill("[data-testid=prompt]", "Change the background to a beach scene")
            page.click("[data-testid=run]")
            # (a selector, not wait_for_function: the page's CSP forbids eval, which that would need)
            page.wait_for_selector("[data-testid=after][src^='data:image/']", timeout=WAIT_MS)
            src = page.get_attribute("[data-testid=after]", "src")
            assert src is not None
            edited = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
            assert edited.width > 0 and edited.height > 0
            assert page.get_attribute("[data-testid=after]", "data-model") == "qwen-edit-plus"
            assert page.locator("#after-label").text_content() == "SIMULATED"
            info = page.locator("[data-testid=result-info]").text_content()
            assert "qwen-edit-plus" in info and "standard" in info and "$0.020" in info
            assert page.get_attribute("[data-testid=before]", "src").startswith("blob:")

            shot = tmp_path / "selector-1280.png"
            page.screenshot(path=str(shot), full_page=True)
            if os.environ.get("EVALKIT_SCREENSHOT_DIR"):
                shutil.copy(shot, Path(os.environ["EVALKIT_SCREENSHOT_DIR"]) / shot.name)
            assert errors == []
        finally:
            browser.close()
    assert off_loopback == []
