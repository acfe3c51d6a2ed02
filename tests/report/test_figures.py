"""evalkit.report.figures: Pareto plots, comparison grids (matplotlib and HTML), latency plots — rendered headless."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
import pandas as pd
import pytest
from matplotlib.text import Annotation
from PIL import Image

from evalkit.decide.tables import SIMULATED_NOTE, comparison_cells, model_table
from evalkit.errors import InvalidInputError
from evalkit.report.figures import (
    STATE_COLOURS,
    case_strip,
    comparison_grid,
    comparison_grid_html,
    failure_table,
    latency_distribution,
    plot_pareto,
    plot_tradeoffs,
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
    for fig in (
        plot_pareto(t),
        plot_tradeoffs(t),
        comparison_grid(ws, S.RUN_ID, cases=["g1"]),
        latency_distribution(ws, S.RUN_ID),
    ):
        texts = all_texts(fig)
        assert SIMULATED_NOTE in texts  # the watermark
        assert sum(SIMULATED_NOTE in x for x in texts) >= 2  # and the title
    assert SIMULATED_NOTE in comparison_grid_html(ws, S.RUN_ID, cases=["g1"])


def test_tradeoffs_has_cost_and_latency_panels(synthetic_workspace):
    fig = plot_tradeoffs(model_table(synthetic_workspace.ws, S.RUN_ID, quality=JUDGE))
    assert len(fig.axes) == 2
    assert "price" in fig.axes[0].get_xlabel() and "p95 latency" in fig.axes[1].get_xlabel()
    assert {a.get_text() for a in fig.axes[1].texts if isinstance(a, Annotation)} >= {"mystery", "gamma"}
    for ax in fig.axes:  # each panel a readable size, side by side
        width_in, height_in = (
            ax.get_position().width * fig.get_figwidth(),
            ax.get_position().height * fig.get_figheight(),
        )
        assert width_in >= 5.5 and height_in >= 4
    assert fig.axes[0].get_position().x1 < fig.axes[1].get_position().x0


def crowded_table(n: int = 30, simulated: bool = False) -> pd.DataFrame:
    """n models, most packed into a small region of price, latency and quality, a few far out (as in a
    31-model run)."""
    rng = np.random.default_rng(3)
    cost, p95, quality = rng.uniform(0.02, 0.04, n), rng.uniform(2000, 4000, n), rng.uniform(3.0, 3.6, n)
    cost[-4:], p95[-4:], quality[-4:] = [0.0, 0.15, 0.14, 0.08], [100, 7000, 500, 6000], [1.5, 5.5, 2.0, 4.8]
    df = pd.DataFrame(
        {
            "model_id": [f"vendor-model-{i:02d}-edit" for i in range(n)],
            "mean_cost_usd": np.round(cost, 3),
            "p95_total_ms": p95,
            "quality": quality,
            "quality_ci_low": np.nan,
            "quality_ci_high": np.nan,
        }
    )
    df.loc[0, "mean_cost_usd"] = np.nan  # price unknown: not on the price panel
    df.loc[1, ["quality", "p95_total_ms"]] = np.nan  # no quality: on neither
    df.attrs.update(
        run_id="crowd",
        quality={"metric": "viescore_o", "source": "judge", "higher_is_better": True},
        simulated=simulated,
    )
    return df.sort_values("quality", ascending=False, na_position="last").reset_index(drop=True)


def test_crowded_fronts_name_or_number_every_point_without_overlap():
    df = crowded_table()
    fig = plot_tradeoffs(df)
    renderer = fig.canvas.get_renderer()
    key = next(t.get_text() for t in fig.texts if t.get_text().startswith("Numbered points:"))
    numbered = dict(re.findall(r"(\d+)\u00a0=\u00a0(\S+)", key))  # number -> model, one key for both panels
    assert numbered, "30 points in a small region cannot all be named: the numbered key must be used"
    assert len(set(numbered.values())) == len(numbered)
    for ax, column in zip(fig.axes, ("mean_cost_usd", "p95_total_ms"), strict=True):
        plotted = set(df.loc[df[column].notna() & df["quality"].notna(), "model_id"])
        anns = [a for a in ax.texts if isinstance(a, Annotation)]
        shown = {a.get_text() for a in anns}
        identified = (shown & plotted) | {numbered[t] for t in shown if t in numbered}
        assert identified == plotted  # every point: by name, or by a number the key resolves
        named = [a.get_window_extent(renderer) for a in anns if a.get_text() in plotted]
        assert len(named) >= len(plotted) // 3  # most of the front and the best points keep their names
        assert not any(named[i].overlaps(named[j]) for i in range(len(named)) for j in range(i + 1, len(named)))
        area = ax.get_window_extent(renderer)
        assert all(
            area.x0 - 3 <= b.x0 and b.x1 <= area.x1 + 3 and area.y0 - 3 <= b.y0 and b.y1 <= area.y1 + 3 for b in named
        )  # labels stay in their panel
    notes = [t for t in fig.texts if t.get_text().startswith("not plotted")]
    assert len(notes) == 2 and "price unknown: vendor-model" in notes[0].get_text()
    panel_px = fig.axes[0].get_window_extent(renderer).width
    for note in notes:  # wrapped to its panel, in readable type
        assert note.get_window_extent(renderer).width <= panel_px + 4 and note.get_fontsize() >= 8


def test_simulated_watermark_sits_behind_the_data():
    fig = plot_tradeoffs(crowded_table(simulated=True), title="general_edit: cost, latency and quality")
    marks = [t for t in fig.texts if t.get_text() == SIMULATED_NOTE]
    assert len(marks) == 1 and marks[0].get_zorder() < min(ax.get_zorder() for ax in fig.axes)
    assert all(ax.get_facecolor()[3] == 0 for ax in fig.axes)  # transparent panels let it show, under the points
    title = fig.get_suptitle()
    assert title.startswith(SIMULATED_NOTE) and "general_edit: cost, latency and quality" in title


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
    assert ["source", "alpha", "beta", "gamma", "delta", "base", "mystery"] == [
        t for t in texts if t in ("source", *S.MODELS)
    ]
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
    ws.put_cases(
        S.RUN_ID,
        [
            {
                "case_id": "x1",
                "operation": "general_edit",
                "category": "color",
                "input_sha256": [],
                "prompt": "<script>alert(1)</script> & more",
            }
        ],
    )
    html = comparison_grid_html(ws, S.RUN_ID, quality=JUDGE)
    assert SIMULATED_NOTE not in html
    assert html.count('class="cell failed"') == 5 and html.count('class="cell unknown"') == 1
    assert html.count('class="cell na"') == 12
    assert html.count('class="cell missing"') == 6  # case x1 has no calls
    assert "failed<br>timeout" in html and 'title="timeout on g3"' in html
    assert "n/a: beta does not support erase" in html
    text = re.sub(r'<span class="nw">|</span>', "", html)  # captions keep each value on one line
    assert '<span class="nw">$0.040</span> · <span class="nw">1.0 s</span><br>' in html
    assert "$0.040 · 1.0 s<br>viescore_o 7" in text
    assert "price unknown · 3.0 s" in text and "price ?" not in html  # mystery has no list price
    assert "<script>" not in html and "&lt;script&gt;" in html
    images = data_uris(html)
    assert len(images) == 48 + 11  # completed cells + one source per case with an image
    with Image.open(io.BytesIO(images[0])) as im:
        assert im.format == "JPEG" and max(im.size) <= 160
    header = re.findall(r"<th>([^<]*)</th>", html)
    assert header == ["source", *S.MODELS]


def test_html_grid_shows_only_models_that_ran_and_says_which_did_not(synthetic_workspace):
    ws = synthetic_workspace.ws
    ws.put_cases(
        S.RUN_ID, [{"case_id": "x2", "operation": "erase", "category": "object", "input_sha256": [], "prompt": None}]
    )
    html = comparison_grid_html(ws, S.RUN_ID, cases=["e1", "e2", "e3", "x2"], quality=JUDGE, applicable_only=True)
    assert re.findall(r"<th>([^<]*)</th>", html) == ["source", "alpha", "base"]  # the source first
    assert "Showing the 2 of 6 models that ran on these cases; not applicable (4): beta, gamma, delta, mystery." in html
    assert html.count('class="cell na"') == 0 and "(no prompt: erase)" in html and ">nan<" not in html
    # failed cells stay visible, in their own style
    html = comparison_grid_html(ws, S.RUN_ID, cases=["g3", "g4"], quality=JUDGE, applicable_only=True)
    assert "delta" in re.findall(r"<th>([^<]*)</th>", html) and html.count('class="cell failed"') == 2
    assert "not applicable" not in html  # every model ran on general edits


def test_html_grid_orders_models_best_first(synthetic_workspace):
    ws = synthetic_workspace.ws
    cases = ["g1", "g2", "g3", "g4"]
    html = comparison_grid_html(ws, S.RUN_ID, cases=cases, quality=JUDGE, order_by_score=True)
    cells = comparison_cells(ws, S.RUN_ID, cases=cases, quality=JUDGE)
    means = cells.groupby("model_id")["score"].mean()
    run_order = list(S.MODELS)
    expected = sorted(means.dropna().index, key=lambda m: (-means[m], run_order.index(m)))
    expected += [m for m in run_order if pd.isna(means.get(m))]
    assert re.findall(r"<th>([^<]*)</th>", html) == ["source", *expected]
    assert expected[0] == "gamma" and "best mean viescore_o on these cases first" in html


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
