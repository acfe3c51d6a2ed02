"""evalkit.report.history: small multiples of a suite's history — one panel per metric, one line per model,
alarms marked, SIMULATED on simulated runs — and the HTML page read in headless Chromium."""

from __future__ import annotations

import base64
import io
import os
import re
import shutil

import pytest
from PIL import Image

from evalkit.decide.trends import trends
from evalkit.report.history import history_html, history_section, plot_history, write_history_html
from evalkit.store import Workspace
from tests.plugins.browser import CHROMIUM, CHROMIUM_ARGS, require_browser
from tests.plugins.histories import Behaviour, write_history

B = Behaviour()


@pytest.fixture
def history(tmp_path):
    ws = Workspace(tmp_path / "ws")
    steady = {"qwen-edit": B, "flux-kontext-pro": B.but(latency_ms=4000)}
    ids = write_history(ws, "nightly", [steady] * 5 + [{**steady, "qwen-edit": B.but(latency_ms=3500)}], seed=2)
    return ws, ids


def test_one_panel_per_metric_and_one_line_per_model(history):
    ws, _ = history
    tr = trends(ws, "nightly", n_boot=100)
    fig = plot_history(tr)
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert len(panels) == 6
    assert all(len(ax.get_lines()) == 2 for ax in panels)
    assert {t.get_text() for t in fig.legends[0].get_texts()} == {"qwen-edit", "flux-kontext-pro"}
    html = history_html(tr)
    assert "SIMULATED" not in html and "latency_p50" in html and "REGRESSION" in html


def test_simulated_runs_are_labelled_and_the_page_is_self_contained(history, tmp_path):
    ws, ids = history
    for rid in ids:
        ws.update_run(rid, simulated=1)
    tr = trends(ws, "nightly", n_boot=100)
    out = write_history_html(tr, tmp_path / "out" / "trends.html")
    page = out.read_text()
    assert "SIMULATED" in page and "<title>evalkit trends — nightly — SIMULATED</title>" in page
    assert not re.search(r"(src|href)=\"https?://", page)
    png = base64.b64decode(re.search(r"base64,([^\"]+)", page).group(1))
    assert Image.open(io.BytesIO(png)).size[0] > 800


@pytest.mark.browser
def test_the_history_page_renders_in_headless_chromium(history, tmp_path):
    sync_api = require_browser(module=False)
    ws, ids = history
    for rid in ids:
        ws.update_run(rid, simulated=1)
    out = write_history_html(trends(ws, "nightly", n_boot=100), tmp_path / "trends.html")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            off: list[str] = []
            page.on("request", lambda r: off.append(r.url) if not r.url.startswith(("file:", "data:")) else None)
            page.goto(out.as_uri())
            img = page.locator("img").first
            img.wait_for(timeout=20_000)
            width = page.evaluate("() => document.querySelector('img').naturalWidth")
            assert width > 800  # the figure decoded
            assert page.locator(".evalkit-sim").is_visible()
            assert "REGRESSION" in page.locator("table").text_content()
            page.screenshot(path=str(tmp_path / "trends.png"), full_page=True)
            if os.environ.get("EVALKIT_SCREENSHOT_DIR"):
                shutil.copy(tmp_path / "trends.png", os.environ["EVALKIT_SCREENSHOT_DIR"])
        finally:
            browser.close()
    assert off == []


def test_the_reports_history_section_is_the_series_up_to_its_run(history):
    from evalkit.report.sections import prepare_report

    ws, ids = history
    latest = history_section(prepare_report(ws, ids[-1]))
    assert "5 earlier run(s)" in latest and "data:image/png;base64," in latest and "REGRESSION" in latest
    middle = history_section(prepare_report(ws, ids[2]))  # as of run 3: the later slowdown is not in it
    assert "2 earlier run(s)" in middle and "REGRESSION" not in middle
    assert "first counted run" in history_section(prepare_report(ws, ids[0]))


@pytest.mark.browser
@pytest.mark.slow
def test_the_built_reports_history_section_in_headless_chromium(history, tmp_path):
    sync_api = require_browser(module=False)
    from evalkit.report.build import build_report

    ws, ids = history
    for rid in ids:
        ws.update_run(rid, simulated=1)
    res = build_report(ws, ids[-1], out_dir=tmp_path / "report")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(res.html.as_uri())
            heading = page.locator("h2", has_text="History")
            heading.wait_for(timeout=30_000)
            img = page.locator("img[alt='history of suite nightly']")
            assert img.count() == 1
            assert img.evaluate("el => el.naturalWidth") > 800
            img.scroll_into_view_if_needed()
            assert page.locator("text=SIMULATED — local server outputs").first.is_visible()
            heading.scroll_into_view_if_needed()
            page.screenshot(path=str(tmp_path / "report-history.png"))
            if os.environ.get("EVALKIT_SCREENSHOT_DIR"):
                shutil.copy(tmp_path / "report-history.png", os.environ["EVALKIT_SCREENSHOT_DIR"])
        finally:
            browser.close()
