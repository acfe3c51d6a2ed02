"""evalkit.viz: Pareto plots, comparison grids (matplotlib and HTML), latency plots — rendered headless."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
import pandas as pd
import pytest
from matplotlib.text import Annotation
from PIL import Image

from evalkit.analysis import SIMULATED_NOTE, model_table
from evalkit.errors import InvalidInputError
from evalkit.viz import (
    STATE_COLOURS, case_strip, comparison_grid, comparison_grid_html, failure_table, latency_distribution,
    plot_pareto, plot_tradeoffs,
)
from tests.plugins import synthetic as S
from tests.plugins.synthetic import build_grid_workspace

JUDGE = ("viescore_o", "judge")


def all_texts(fig) -> list[str]:
    return [t.get_text() for t in fig.findobj(lambda a: hasattr(a, "get_text"))]


def test_pareto_plot_labels_every_point_and_connects_the_front(synthetic_workspace):
    t = model_table(synthetic_workspace.ws, S.RUN_ID, quality=JUDGE)
    fig = plot_pareto(t)
    ax = fig.axes[0]
    labels = {a.get_text() for a in ax.texts if isinstance(a, Annotation)}
    assert labels == {"alpha", "beta", "gamma", "delta", "base"}  # mystery has no price
    assert any("not plotted" in x and "mystery" in x for x in all_texts(fig))
    front_line = ax.lines[0]
    assert list(front_line.get_xdata()) == [0.0, 0.01, 0.02, 0.04, 0.15]
    assert list(front_line.get_ydata()) == pytest.approx([3.0, 6.0, 7.375, 7.5, 9.0])
    assert ax.get_xscale() == "symlog"  # costs span > 10× and a free model sits at 0
    assert "log scale" in ax.get_xlabel() and "viescore_o" in ax.get_ylabel()
    assert SIMULATED_NOTE not in all_texts(fig)
    # labels do not overlap each other
    renderer = fig.canvas.get_renderer()
    boxes = [a.get_window_extent(renderer) for a in ax.texts if isinstance(a, Annotation)]
    assert not any(boxes[i].overlaps(boxes[j]) for i in range(len(boxes)) for j in range(i + 1, len(boxes)))


def test_pareto_plot_linear_scale_and_one_row_per_model(synthetic_workspace):
    t = model_table(synthetic_workspace.ws, S.RUN_ID, quality=JUDGE)
    narrow = t[t["model_id"].isin(["alpha", "beta"])]
    narrow.attrs = t.attrs
    assert plot_pareto(narrow).axes[0].get_xscale() == "linear"
    only_paid = t[t["model_id"].isin(["alpha", "delta", "gamma"])]  # $0.01 … $0.15
    assert plot_pareto(only_paid).axes[0].get_xscale() == "log"
    grouped = model_table(synthetic_workspace.ws, S.RUN_ID, by="operation")
    with pytest.raises(InvalidInputError, match="one row per model_id"):
        plot_pareto(grouped)


def test_simulated_runs_are_watermarked_everywhere(synthetic_workspace):
    ws = synthetic_workspace.ws
    ws.update_run(S.RUN_ID, simulated=1)
    t = model_table(ws, S.RUN_ID)
    for fig in (plot_pareto(t), plot_tradeoffs(t), comparison_grid(ws, S.RUN_ID, cases=["g1"]),
                latency_distribution(ws, S.RUN_ID)):
        texts = all_texts(fig)
        assert SIMULATED_NOTE in texts  # the watermark
        assert sum(SIMULATED_NOTE in x for x in texts) >= 2  # and the title
    assert SIMULATED_NOTE in comparison_grid_html(ws, S.RUN_ID, cases=["g1"])


def test_tradeoffs_has_cost_and_latency_panels(synthetic_workspace):
    fig = plot_tradeoffs(model_table(synthetic_workspace.ws, S.RUN_ID, quality=JUDGE))
    assert len(fig.axes) == 2
    assert "price" in fig.axes[0].get_xlabel() and "p95 latency" in fig.axes[1].get_xlabel()
    assert {a.get_text() for a in fig.axes[1].texts if isinstance(a, Annotation)} >= {"mystery", "gamma"}


def mosaic(fig) -> np.ndarray:
    return fig.axes[0].images[0].get_array()


def test_comparison_grid_layout_captions_and_cells(synthetic_workspace):
    fig = comparison_grid(synthetic_workspace.ws, S.RUN_ID, thumb_px=160)
    ax = fig.axes[0]
    assert ax.get_title() == "run synth: 11 case(s) × 6 model(s)"
    # 7 columns (source + 6 models) of 166 px; a 36 px header and 11 rows of 190 px
    arr = mosaic(fig)
    assert arr.shape[:2] == (36 + 11 * 190, 7 * 166)
    assert tuple(np.round(fig.get_size_inches() * fig.dpi)) == (7 * 166, 36 + 11 * 190 + 50)
    texts = all_texts(fig)
    assert ["source", "alpha", "beta", "gamma", "delta", "base", "mystery"] == [t for t in texts if t in (
        "source", *S.MODELS)]
    assert "$0.040 · 1.0 s · ssim 0.8" in texts
    assert texts.count("FAILED\ntimeout") == 3 and "FAILED\nserver" in texts and "FAILED\nmoderation" in texts
    assert texts.count("failed: timeout") == 3
    assert texts.count("n/a") == 12  # beta, gamma, delta, mystery × 3 erase cases
    assert any(t.startswith("n/a: beta does not") for t in texts)
    assert "UNKNOWN\noutcome" in texts

    def centre(row: int, col: int) -> np.ndarray:
        return arr[36 + row * 190 + 80, col * 166 + 3 + 80, :3].astype(int)

    assert np.abs(centre(0, 1) - S.output_colour("alpha", "g1")).max() <= 6  # g1 × alpha shows alpha's output
    assert np.abs(centre(0, 0) - S.source_colour("g1")).max() <= 6  # the source comes first
    assert tuple(centre(2, 4)) == STATE_COLOURS["failed"]  # g3 × delta
    assert tuple(centre(8, 2)) == STATE_COLOURS["not_applicable"]  # e1 × beta


def test_case_strip_and_subsets(synthetic_workspace):
    fig = case_strip(synthetic_workspace.ws, S.RUN_ID, "g3", models=["delta", "alpha"])
    assert fig.axes[0].get_title() == "run synth: 1 case(s) × 2 model(s)"
    assert mosaic(fig).shape[:2] == (36 + 256 + 30, 3 * (256 + 6))
    assert "FAILED\ntimeout" in all_texts(fig)
    with pytest.raises(InvalidInputError, match="unknown case"):
        case_strip(synthetic_workspace.ws, S.RUN_ID, "zz")
    with pytest.raises(InvalidInputError):
        comparison_grid(synthetic_workspace.ws, S.RUN_ID, thumb_px=8)


def data_uris(html: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/jpeg;base64,([A-Za-z0-9+/=]+)"', html)]


def test_comparison_grid_html(synthetic_workspace):
    ws = synthetic_workspace.ws
    ws.put_cases(S.RUN_ID, [{"case_id": "x1", "operation": "general_edit", "category": "color",
                             "input_sha256": [], "prompt": "<script>alert(1)</script> & more"}])
    html = comparison_grid_html(ws, S.RUN_ID, quality=JUDGE)
    assert SIMULATED_NOTE not in html
    assert html.count('class="cell failed"') == 5 and html.count('class="cell unknown"') == 1
    assert html.count('class="cell na"') == 12
    assert html.count('class="cell missing"') == 6  # case x1 has no calls
    assert "failed<br>timeout" in html and 'title="timeout on g3"' in html
    assert "n/a: beta does not support erase" in html
    assert "$0.040 · 1.0 s · viescore_o 7" in html
    assert "<script>" not in html and "&lt;script&gt;" in html
    images = data_uris(html)
    assert len(images) == 48 + 11  # completed cells + one source per case with an image
    with Image.open(io.BytesIO(images[0])) as im:
        assert im.format == "JPEG" and max(im.size) <= 160
    header = re.findall(r"<th>([^<]*)</th>", html)
    assert header == ["source", *S.MODELS]


def test_html_grid_of_24_cases_by_20_models_stays_small(tmp_path):
    ws = build_grid_workspace(tmp_path / "grid", n_cases=24, n_models=20, image_px=(320, 240), distinct_outputs=24)
    html = comparison_grid_html(ws, "grid", thumb_px=160)
    images = data_uris(html)
    assert len(images) == 24 * 21
    assert len(html.encode()) < 5_000_000
    with Image.open(io.BytesIO(images[-1])) as im:
        assert max(im.size) == 160
    ws.close()


def test_latency_distribution(synthetic_workspace):
    fig = latency_distribution(synthetic_workspace.ws, S.RUN_ID)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    order = [t.get_text() for t in ax.get_yticklabels()]
    assert order == ["base", "delta", "beta", "alpha", "mystery", "gamma"]  # by median total_ms
    assert "p95 3.6 s" in all_texts(fig)  # alpha over all its 11 calls: 3600 ms
    fig = latency_distribution(synthetic_workspace.ws, S.RUN_ID, models=["alpha"], column="inference_ms")
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["alpha"]
    with pytest.raises(InvalidInputError):
        latency_distribution(synthetic_workspace.ws, S.RUN_ID, column="price_usd")


def test_failure_table_is_available_from_viz(synthetic_workspace):
    f = failure_table(synthetic_workspace.ws, S.RUN_ID)
    assert isinstance(f, pd.DataFrame) and f["failures"].sum() == 6
