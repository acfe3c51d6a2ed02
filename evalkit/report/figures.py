"""Figures for notebooks and static reports: Pareto fronts, comparison grids, latency distributions.

Every function returns a matplotlib ``Figure`` (or an HTML string) and never calls ``plt.show()``:
the caller displays it and can ``plt.close(fig)``. Static reports need plain images, not widgets
(exported widget views need a CDN), so everything here renders without a kernel. When a run is
simulated, every figure carries :data:`evalkit.decide.tables.SIMULATED_NOTE` as a watermark and in its
title.

Comparison grids are drawn as **one mosaic image** (thumbnails pasted with PIL) in a single axes with
text captions, instead of one axes per cell: a 24-case × 20-model grid is then ~500 thumbnails and
~1,000 text objects, which renders in seconds, where 500 axes would not.
"""

from __future__ import annotations

import base64
import functools
import html
import io
import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.transforms import Bbox
from PIL import Image, ImageDraw

from evalkit.decide.quality import DEFAULT_QUALITY, QualityLike
from evalkit.decide.tables import (
    SIMULATED_NOTE,
    comparison_cells,
    failure_table,
    format_ms,
    pareto_front,
    run_is_simulated,
)
from evalkit.errors import InvalidInputError
from evalkit.images import thumbnail_jpeg
from evalkit.store import CallStatus, Workspace

DPI = 100
STATE_COLOURS = {
    "failed": (248, 215, 218),
    "not_applicable": (226, 227, 229),
    "unknown": (255, 236, 179),
    "not_run": (240, 240, 240),
    "missing": (240, 240, 240),
}
AXIS_LABELS = {
    "mean_cost_usd": "list price per edit (USD)",
    "p95_total_ms": "p95 latency, total (ms)",
    "p50_total_ms": "median latency, total (ms)",
    "p95_inference_ms": "p95 inference time (ms)",
}
FRONT_COLOUR = "#d62728"
THUMB_QUALITY = 75  # JPEG quality of grid thumbnails (one value, so figure and HTML share the cache)


@functools.lru_cache(maxsize=4096)
def cached_thumbnail(path: str, max_side: int, quality: int = THUMB_QUALITY) -> bytes:
    """JPEG thumbnail of an image file (blobs are content-addressed, so a path never changes content)."""
    return thumbnail_jpeg(path, max_side=max_side, quality=quality)


def mark_simulated(fig: Figure, *, behind: bool = False, title: bool = True) -> None:
    """A diagonal watermark and a title line saying the outputs are simulated.

    ``behind=True`` (charts) draws the watermark under the axes, whose backgrounds become transparent,
    so it never hides a point or a label; photo mosaics keep it on top, over the simulated images.
    ``title=False`` when the caller already put :data:`SIMULATED_NOTE` in its own title."""
    size = max(10.0, min(40.0, fig.get_figwidth() * 72 / 34))  # about the figure's width, rotated
    if behind:
        for ax in fig.axes:
            ax.set_facecolor("none")
    fig.text(
        0.5,
        0.5,
        SIMULATED_NOTE,
        fontsize=size,
        color="red",
        alpha=0.12 if behind else 0.18,
        ha="center",
        va="center",
        rotation=25,
        zorder=-1 if behind else 100,
        fontweight="bold",
    )
    if title:
        fig.suptitle(f"{SIMULATED_NOTE}\n{fig.get_suptitle()}".strip(), color="#b00000", fontsize=11)


# -- Pareto ------------------------------------------------------------------------------------------

#: Pareto figures have a fixed geometry in inches (panels, margins, note lines), so point labels are
#: placed once on final positions; notes added below afterwards grow the figure without moving them.
PANEL_W_IN, PANEL_H_IN = 5.9, 4.3
MARGIN_LEFT_IN, MARGIN_RIGHT_IN, PANEL_GAP_IN = 0.85, 0.3, 0.95
PANEL_HEAD_IN = 0.42  # the panel title and the legend, above each panel
TITLE_LINE_IN = 0.27  # one line of the figure title
AXIS_FOOT_IN = 0.62  # x tick labels and the x label
NOTE_LINE_IN = 0.165  # one line of notes or key
LABEL_PT, NUMBER_PT, NOTE_PT = 8.0, 7.5, 8.5
#: label positions tried around a point, in points (nearest first); the far ones get a leader line
_NEAR = [(7, 0), (-7, 0), (5, 5), (5, -5), (-5, 5), (-5, -5), (0, 8), (0, -8)]
_OFFSETS = _NEAR + [(2 * dx, 2 * dy) for dx, dy in _NEAR] + [(round(3.5 * dx), round(3.5 * dy)) for dx, dy in _NEAR]


def _axis_label(col: str, df: pd.DataFrame) -> str:
    session = df.attrs.get("unit") == "session"  # evalkit.decide.sessions.session_model_table
    if col == "quality":
        q = df.attrs.get("quality") or {}
        return f"{'final-turn ' if session else ''}quality: {q.get('metric', '?')} ({q.get('source', '?')})"
    if session and col == "mean_cost_usd":
        return "cost per session (USD)"
    if session and col == "p95_total_ms":
        return "p95 latency per session, all turns (ms)"
    return AXIS_LABELS.get(col, col)


def _short_axis(col: str) -> str:
    return {"mean_cost_usd": "price", "quality": "quality score"}.get(col, AXIS_LABELS.get(col, col).split(",")[0])


def _wrap(text: str, width_in: float, pt: float = NOTE_PT) -> list[str]:
    """``text`` wrapped to about ``width_in`` inches at ``pt`` (DejaVu Sans averages ~0.58 em a character)."""
    width = max(20, int(width_in * 72 / (pt * 0.58)))
    return textwrap.wrap(text, width, break_on_hyphens=False, break_long_words=False) if text else []


def _draw_front(
    ax, df: pd.DataFrame, x: str, y: str, *, minimize_x: bool, maximize_y: bool, label: str
) -> tuple[pd.DataFrame, str]:
    """Points, interval bars and the connected front on ``ax``; returns (plotted rows, "not plotted" note)."""
    data = df[df[x].notna() & df[y].notna()]
    front = pareto_front(data, x, y, minimize_x=minimize_x, maximize_y=maximize_y, label=label)
    on_front = data[label].astype(str).isin(front).to_numpy()
    xs, ys = data[x].to_numpy(float), data[y].to_numpy(float)
    if y == "quality" and {"quality_ci_low", "quality_ci_high"} <= set(data.columns):
        lo = np.nan_to_num(ys - data["quality_ci_low"].to_numpy(float), nan=0.0)
        hi = np.nan_to_num(data["quality_ci_high"].to_numpy(float) - ys, nan=0.0)
        ax.errorbar(xs, ys, yerr=[np.maximum(lo, 0), np.maximum(hi, 0)], fmt="none", ecolor="0.8", lw=1, zorder=1)
    ax.scatter(xs[~on_front], ys[~on_front], color="0.45", s=30, zorder=2, label="dominated")
    ax.scatter(xs[on_front], ys[on_front], color=FRONT_COLOUR, s=45, zorder=3, label="Pareto front")
    order = np.argsort(xs[on_front])
    ax.plot(xs[on_front][order], ys[on_front][order], color=FRONT_COLOUR, lw=1.2, zorder=2)
    positive = xs[xs > 0]
    if positive.size and positive.max() / positive.min() >= 10:
        if (xs <= 0).any():
            ax.set_xscale("symlog", linthresh=float(positive.min()))
        else:
            ax.set_xscale("log")
    ax.margins(x=0.06, y=0.08)
    ax.set_xlabel(_axis_label(x, df) + (" — log scale" if ax.get_xscale() != "linear" else ""), fontsize=9)
    ax.set_ylabel(_axis_label(y, df), fontsize=9)
    ax.tick_params(labelsize=8.5)
    ax.grid(True, alpha=0.3)
    ax.legend(
        loc="lower right",
        bbox_to_anchor=(1.0, 1.0),
        ncol=2,
        fontsize=8,
        frameon=False,
        borderaxespad=0.1,
        handletextpad=0.2,
        columnspacing=0.8,
    )
    reasons: list[str] = []
    for col in (x, y):
        names = df.loc[df[col].isna(), label].astype(str).tolist()
        names = [n for n in names if not any(n in r for r in reasons)]
        if names:
            what = "price unknown" if col == "mean_cost_usd" else f"no {_short_axis(col)}"
            reasons.append(f"{what}: {', '.join(names)}")
    note = f"not plotted ({len(df) - len(data)}) — " + "; ".join(reasons) if reasons else ""
    plotted = data.assign(_x=xs, _y=ys, _front=on_front)
    return plotted, note


def _priority(plotted: pd.DataFrame, maximize_y: bool) -> list[int]:
    """Which points get a name first: the front (by x), then the others best first."""
    front = plotted.index[plotted["_front"]].tolist()
    front.sort(key=lambda i: plotted.at[i, "_x"])
    rest = plotted[~plotted["_front"]].sort_values("_y", ascending=not maximize_y, kind="stable").index.tolist()
    return front + rest


def _label_points(ax, plotted: pd.DataFrame, label: str, numbers: dict[str, int], *, maximize_y: bool) -> set[str]:
    """Name every point where its name fits without overlapping another label or point (the front and
    the best points first); a point whose name does not fit gets its number from the figure's key.
    Returns the names shown as numbers."""
    fig = ax.figure
    if not hasattr(fig.canvas, "get_renderer"):  # a bare Figure(): give it an Agg canvas to measure text
        FigureCanvasAgg(fig)
    fig.canvas.draw()  # final limits and positions
    renderer = fig.canvas.get_renderer()
    area = ax.get_window_extent(renderer)
    pts = ax.transData.transform(plotted[["_x", "_y"]].to_numpy(float)) if len(plotted) else np.empty((0, 2))
    taken = [Bbox.from_bounds(px - 4, py - 4, 8, 8) for px, py in pts]
    numbered: set[str] = set()

    def attempt(i: int, text: str, offsets, *, pt: float, force: bool, **style) -> bool:
        row = plotted.loc[i]
        for dx, dy in offsets:
            far = abs(dx) > 10 or abs(dy) > 10
            ann = ax.annotate(
                text,
                (row["_x"], row["_y"]),
                xytext=(dx, dy),
                textcoords="offset points",
                fontsize=pt,
                ha="left" if dx > 0 else "right" if dx < 0 else "center",
                va="bottom" if dy > 0 else "top" if dy < 0 else "center",
                zorder=4,
                arrowprops={"arrowstyle": "-", "color": "0.4", "lw": 0.6} if far else None,
                **style,
            )
            ann.set_in_layout(False)
            box = ann.get_window_extent(renderer)
            inside = box.x0 >= area.x0 - 2 and box.x1 <= area.x1 + 2 and box.y0 >= area.y0 - 2 and box.y1 <= area.y1 + 2
            if inside and not any(box.overlaps(b) for b in taken):
                taken.append(box)
                return True
            ann.remove()
        if force:  # nowhere free: the nearest spot, overlapping rather than missing
            dx, dy = offsets[0]
            ann = ax.annotate(
                text,
                (row["_x"], row["_y"]),
                xytext=(dx, dy),
                textcoords="offset points",
                fontsize=pt,
                ha="left",
                va="center",
                zorder=4,
                **style,
            )
            ann.set_in_layout(False)
            taken.append(ann.get_window_extent(renderer))
            return True
        return False

    for i in _priority(plotted, maximize_y):
        name = str(plotted.at[i, label])
        style = {"color": "#8b0000", "fontweight": "bold"} if plotted.at[i, "_front"] else {"color": "0.2"}
        if attempt(i, name, _OFFSETS, pt=LABEL_PT, force=False, **style):
            continue
        attempt(i, str(numbers[name]), _OFFSETS, pt=NUMBER_PT, force=True, color=style["color"], fontweight="bold")
        numbered.add(name)
    return numbered


def _key_text(numbered: set[str], numbers: dict[str, int]) -> str:
    if not numbered:
        return ""
    nbsp = "\u00a0"  # keeps "7 = name" on one line when wrapped
    entries = (f"{numbers[n]}{nbsp}={nbsp}{n}" for n in sorted(numbered, key=numbers.__getitem__))
    return "Numbered points: " + "   ".join(entries)


def _numbers(df: pd.DataFrame, plotted: list[pd.DataFrame], label: str) -> dict[str, int]:
    """One number per plotted model, the same in every panel (the table's order: the best first)."""
    shown = set().union(*(set(p[label].astype(str)) for p in plotted)) if plotted else set()
    names = [str(n) for n in df[label] if str(n) in shown]
    return {n: k for k, n in enumerate(dict.fromkeys(names), start=1)}


def _pareto_figure(
    df: pd.DataFrame,
    axes_spec: list[tuple[str, str, str]],
    *,
    title: str | None,
    simulated: bool,
    minimize_x: bool,
    maximize_y: bool | None,
    label: str,
) -> Figure:
    """Panels side by side at a fixed, readable size, the notes and the numbered key wrapped below."""
    if df[label].duplicated().any():
        raise InvalidInputError(
            f"plot_pareto needs one row per {label}",
            hint="filter a grouped model_table to one operation or category first",
        )
    q = df.attrs.get("quality") or {}
    n = len(axes_spec)
    head = ([SIMULATED_NOTE] if simulated else []) + (title.split("\n") if title else [])
    top_in = 0.08 + len(head) * TITLE_LINE_IN + PANEL_HEAD_IN
    width_in = MARGIN_LEFT_IN + n * PANEL_W_IN + (n - 1) * PANEL_GAP_IN + MARGIN_RIGHT_IN
    base_h_in = top_in + PANEL_H_IN + AXIS_FOOT_IN
    fig = Figure(figsize=(width_in, base_h_in), dpi=DPI)
    FigureCanvasAgg(fig)
    lefts = [MARGIN_LEFT_IN + k * (PANEL_W_IN + PANEL_GAP_IN) for k in range(n)]

    def place(ax, k: int, height_in: float) -> None:
        bottom = height_in - top_in - PANEL_H_IN
        ax.set_position((lefts[k] / width_in, bottom / height_in, PANEL_W_IN / width_in, PANEL_H_IN / height_in))

    axes, drawn = [], []
    for k, (x, y, panel_title) in enumerate(axes_spec):
        ax = fig.add_axes((0, 0, 1, 1))
        place(ax, k, base_h_in)
        want_max = (
            (bool(q.get("higher_is_better", True)) if y == "quality" else True) if maximize_y is None else maximize_y
        )
        plotted, note = _draw_front(ax, df, x, y, minimize_x=minimize_x, maximize_y=want_max, label=label)
        ax.set_title(panel_title, loc="left", fontsize=10.5)
        axes.append((ax, want_max))
        drawn.append((plotted, note))
    numbers = _numbers(df, [p for p, _ in drawn], label)
    numbered: set[str] = set()
    for (ax, want_max), (plotted, _) in zip(axes, drawn, strict=True):
        numbered |= _label_points(ax, plotted, label, numbers, maximize_y=want_max)
    notes = [_wrap(note, PANEL_W_IN) for _, note in drawn]
    key = _wrap(_key_text(numbered, numbers), width_in - MARGIN_LEFT_IN - MARGIN_RIGHT_IN)
    n_note = max((len(x) for x in notes), default=0)
    extra_in = (n_note + len(key)) * NOTE_LINE_IN + (0.15 if n_note or key else 0)
    height_in = base_h_in + extra_in
    fig.set_size_inches(width_in, height_in)
    for k, (ax, _) in enumerate(axes):
        place(ax, k, height_in)
    y_in = extra_in - 0.05
    for k, lines in enumerate(notes):
        if lines:
            fig.text(
                lefts[k] / width_in,
                y_in / height_in,
                "\n".join(lines),
                fontsize=NOTE_PT,
                color="0.35",
                ha="left",
                va="top",
                linespacing=1.25,
            )
    if key:
        fig.text(
            MARGIN_LEFT_IN / width_in,
            (y_in - n_note * NOTE_LINE_IN) / height_in,
            "\n".join(key),
            fontsize=NOTE_PT,
            color="0.15",
            ha="left",
            va="top",
            linespacing=1.25,
        )
    if head:
        fig.suptitle(
            "\n".join(head),
            x=0.5,
            y=1 - 0.06 / height_in,
            va="top",
            fontsize=11.5,
            color="#b00000" if simulated else "black",
        )
    if simulated:
        mark_simulated(fig, behind=True, title=False)
    return fig


def plot_pareto(
    df: pd.DataFrame,
    x: str = "mean_cost_usd",
    y: str = "quality",
    *,
    minimize_x: bool = True,
    maximize_y: bool | None = None,
    label: str = "model_id",
    ax=None,
    title: str | None = None,
    simulated: bool | None = None,
) -> Figure:
    """Scatter of ``y`` against ``x`` with the Pareto front highlighted and connected; every point is
    named, or numbered (with a key below) where its name would overlap another.

    ``df`` is a :func:`evalkit.decide.tables.model_table` (one row per model: filter a grouped table to one
    operation first). The x axis is logarithmic when the values span 10× or more (symlog when free
    models sit at 0). Quality intervals are drawn as error bars when present. Models without an x or
    y value are listed under the plot as "not plotted". With ``ax`` the panel is drawn there (the
    caller owns the figure's layout and title).
    """
    simulated = bool(df.attrs.get("simulated")) if simulated is None else simulated
    if ax is None:
        return _pareto_figure(
            df,
            [(x, y, title or f"{_short_axis(y).capitalize()} vs {_short_axis(x)}")],
            title=None,
            simulated=simulated,
            minimize_x=minimize_x,
            maximize_y=maximize_y,
            label=label,
        )
    if df[label].duplicated().any():
        raise InvalidInputError(
            f"plot_pareto needs one row per {label}",
            hint="filter a grouped model_table to one operation or category first",
        )
    q = df.attrs.get("quality") or {}
    if maximize_y is None:
        maximize_y = bool(q.get("higher_is_better", True)) if y == "quality" else True
    plotted, note = _draw_front(ax, df, x, y, minimize_x=minimize_x, maximize_y=maximize_y, label=label)
    ax.set_title(title or f"{_short_axis(y).capitalize()} vs {_short_axis(x)}", loc="left", fontsize=10.5)
    numbers = _numbers(df, [plotted], label)
    numbered = _label_points(ax, plotted, label, numbers, maximize_y=maximize_y)
    width_in = ax.get_position().width * ax.figure.get_figwidth()
    below = _wrap(note, width_in) + _wrap(_key_text(numbered, numbers), width_in)
    if below:
        ax.text(0, -0.16, "\n".join(below), transform=ax.transAxes, fontsize=NOTE_PT, color="0.35", va="top")
    if simulated:
        mark_simulated(ax.figure, behind=True)
    return ax.figure


def plot_tradeoffs(df: pd.DataFrame, *, title: str | None = None) -> Figure:
    """Two panels side by side: price vs quality and p95 latency vs quality, each with its Pareto front.
    A model keeps one number in both panels when its name does not fit."""
    unit = df.attrs.get("unit")
    return _pareto_figure(
        df,
        [
            ("mean_cost_usd", "quality", "Quality vs price per " + ("session" if unit == "session" else "edit")),
            ("p95_total_ms", "quality", "Quality vs p95 latency"),
        ],
        title=title or f"run {df.attrs.get('run_id', '')}: cost, latency and quality",
        simulated=bool(df.attrs.get("simulated")),
        minimize_x=True,
        maximize_y=None,
        label="model_id",
    )


# -- comparison grids --------------------------------------------------------------------------------


def _source_path(ws: Workspace, cases: pd.DataFrame, case_id: str) -> tuple[str | None, int]:
    row = cases[cases["case_id"] == case_id]
    shas = row["input_sha256"].iloc[0] if len(row) else []
    path = ws.find_blob(shas[0]) if shas else None
    return (str(path) if path else None), len(shas)


def _prompt_text(cases: pd.DataFrame, case_id: str) -> str:
    """The case's prompt, or "(no prompt: <operation>)" for operations that take none (erase, zoom_out, …)."""
    row = cases[cases["case_id"] == case_id]
    prompt = row["prompt"].iloc[0] if len(row) else None
    if isinstance(prompt, str) and prompt.strip():
        return prompt
    operation = row["operation"].iloc[0] if len(row) and "operation" in row else None
    return f"(no prompt: {operation})" if isinstance(operation, str) and operation else "(no prompt)"


def _display_caption(cell: pd.Series) -> str:
    """The cell's caption for a reader: an unknown price reads "price unknown" (the analysis caption
    keeps its terse "price ?", which its tests pin)."""
    caption = str(cell["caption"])
    if cell["state"] == "ok" and pd.isna(cell["price_usd"]) and caption.startswith("price ?"):
        caption = "price unknown" + caption[len("price ?") :]
    return caption


def best_first(cells: pd.DataFrame, model_list: list[str]) -> list[str]:
    """``model_list`` ordered by the mean score of the cells shown (best first, by the quality's
    direction); models without a score keep their order, after the scored ones."""
    q = cells.attrs.get("quality") or {}
    sign = 1.0 if q.get("higher_is_better", True) else -1.0
    means = cells[cells["model_id"].isin(model_list)].groupby("model_id")["score"].mean()
    position = {m: k for k, m in enumerate(model_list)}

    def key(m: str) -> tuple:
        v = means.get(m, np.nan)
        return (1, 0.0, position[m]) if pd.isna(v) else (0, -sign * float(v), position[m])

    return sorted(model_list, key=key)


def applicable_models(cells: pd.DataFrame) -> tuple[list[str], list[str]]:
    """(models with a call on at least one of the cells' cases that is not "not applicable" — completed,
    failed, unknown or planned —, the others), each in the grid's order."""
    model_list = cells.attrs.get("models") or list(dict.fromkeys(cells["model_id"]))
    ran = set(cells.loc[~cells["state"].isin(["not_applicable", "missing"]), "model_id"])
    return [m for m in model_list if m in ran], [m for m in model_list if m not in ran]


def _grid_frame(ws: Workspace, run_id: str, cases, models, quality) -> tuple[pd.DataFrame, pd.DataFrame]:
    cells = comparison_cells(ws, run_id, cases=cases, models=models, quality=quality)
    return cells, ws.cases(run_id)


def comparison_grid(
    ws: Workspace,
    run_id: str,
    *,
    cases: Sequence[str] | None = None,
    models: Sequence[str] | None = None,
    quality: QualityLike = DEFAULT_QUALITY,
    thumb_px: int = 160,
) -> Figure:
    """Rows = cases, columns = the source image then each model; each cell captioned with price,
    latency and score. Failed cells (red) name the error category; not-applicable cells (grey) say
    "n/a" and why.

    A 24 × 20 grid is a ~3500 × 4600 px figure: a notebook's inline PNG of it weighs 10+ MB, so for
    reports prefer :func:`comparison_grid_html` (JPEG thumbnails, ~1–2 MB) or show a few cases."""
    if thumb_px < 32 or thumb_px > 1024:
        raise InvalidInputError(f"thumb_px must be between 32 and 1024, got {thumb_px}")
    cells, case_frame = _grid_frame(ws, run_id, cases, models, quality)
    case_list, model_list = cells.attrs["cases"], cells.attrs["models"]
    pad, cap_h, head_h, label_w = 6, 30, 36, 0
    cell_w, cell_h = thumb_px + pad, thumb_px + cap_h
    ncols, nrows = 1 + len(model_list), len(case_list)
    width, height = ncols * cell_w + label_w, head_h + nrows * cell_h
    canvas = Image.new("RGBA", (width, height), "white")  # uint8 RGBA: matplotlib draws it without float copies
    draw = ImageDraw.Draw(canvas)
    texts: list[tuple[float, float, str, dict]] = []
    by_key = cells.set_index(["case_id", "model_id"])

    def paste(path: str | None, col: int, row: int) -> None:
        x0, y0 = col * cell_w + pad // 2, head_h + row * cell_h
        if path is None:
            return
        with Image.open(_as_bytes_io(cached_thumbnail(path, thumb_px))) as opened:
            im = opened.convert("RGB")
            canvas.paste(im, (x0 + (thumb_px - im.width) // 2, y0 + (thumb_px - im.height) // 2))

    texts.append((cell_w / 2, head_h - 4, "source", {"weight": "bold"}))
    for j, m in enumerate(model_list, start=1):
        texts.append((j * cell_w + cell_w / 2, head_h - 4, _fit(m, thumb_px), {"weight": "bold"}))
    for i, case_id in enumerate(case_list):
        src, n_inputs = _source_path(ws, case_frame, case_id)
        paste(src, 0, i)
        prompt_text = _prompt_text(case_frame, case_id)
        more = f" (+{n_inputs - 1} input{'s' if n_inputs > 2 else ''})" if n_inputs > 1 else ""
        texts.append(
            (
                cell_w / 2,
                head_h + i * cell_h + thumb_px + 2,
                f"{case_id}{more}\n{_fit(prompt_text, thumb_px)}",
                {"va": "top"},
            )
        )
        for j, model_id in enumerate(model_list, start=1):
            cell = by_key.loc[(case_id, model_id)]
            x0, y0 = j * cell_w + pad // 2, head_h + i * cell_h
            if cell["state"] == "ok" and isinstance(cell["output_path"], str) and Path(cell["output_path"]).exists():
                paste(cell["output_path"], j, i)
            else:
                colour = STATE_COLOURS.get(cell["state"], (240, 240, 240))
                draw.rectangle(
                    [x0, y0, x0 + thumb_px - 1, y0 + thumb_px - 1],
                    fill=colour,
                    outline=(200, 60, 60) if cell["state"] == "failed" else (170, 170, 170),
                    width=2,
                )
                big = {
                    "failed": f"FAILED\n{cell['error_category'] or ''}",
                    "not_applicable": "n/a",
                    "unknown": "UNKNOWN\noutcome",
                }.get(cell["state"], "not run")
                texts.append(
                    (
                        x0 + thumb_px / 2,
                        y0 + thumb_px / 2,
                        big,
                        {
                            "va": "center",
                            "weight": "bold",
                            "fontsize": 8,
                            "color": "#a00000" if cell["state"] == "failed" else "0.35",
                        },
                    )
                )
            texts.append(
                (
                    x0 + thumb_px / 2,
                    y0 + thumb_px + 2,
                    _fit(_display_caption(cell), thumb_px, lines=2),
                    {"va": "top", "color": "#a00000" if cell["state"] == "failed" else "black"},
                )
            )
    fig = Figure(figsize=(width / DPI, height / DPI + 0.5), dpi=DPI)
    ax = fig.add_axes((0, 0, 1, height / (height + 0.5 * DPI)))
    ax.imshow(np.asarray(canvas), interpolation="none")
    ax.set_axis_off()
    for tx, ty, text, kw in texts:
        opts = {"ha": "center", "va": "bottom", "fontsize": 6.5} | kw
        ax.text(tx, ty, text, **opts)
    simulated = cells.attrs["simulated"]
    ax.set_title(
        f"run {run_id}: {nrows} case(s) × {len(model_list)} model(s)" + (" — SIMULATED" if simulated else ""),
        fontsize=9,
    )
    if simulated:
        mark_simulated(fig)
    return fig


def _as_bytes_io(data: bytes) -> io.BytesIO:
    return io.BytesIO(data)


def _fit(text: str, px: int, lines: int = 1) -> str:
    """Shorten ``text`` to about what fits in ``px`` pixels at the grid's font size (wrapped to ``lines``)."""
    per_line = max(8, int(px / 5.2))
    words, out, line = str(text).split(), [], ""
    for w in words:
        if len(line) + len(w) + 1 <= per_line:
            line = f"{line} {w}".strip()
        else:
            out.append(line)
            line = w[:per_line]
    out.append(line)
    out = [x for x in out if x] or [""]
    if len(out) > lines:
        out = out[:lines]
        out[-1] = out[-1][: per_line - 1] + "…"
    return "\n".join(out)


def case_strip(
    ws: Workspace,
    run_id: str,
    case_id: str,
    *,
    models: Sequence[str] | None = None,
    quality: QualityLike = DEFAULT_QUALITY,
    thumb_px: int = 256,
) -> Figure:
    """One case across every model (the source first), larger than in the full grid."""
    return comparison_grid(ws, run_id, cases=[case_id], models=models, quality=quality, thumb_px=thumb_px)


_HTML_CSS = """
.evalkit-grid{border-collapse:collapse;font:11px/1.3 system-ui,sans-serif}
.evalkit-grid th{position:sticky;top:0;background:#fff;padding:4px;font-weight:600;vertical-align:bottom;
 word-break:break-word}
.evalkit-grid td{vertical-align:top;padding:3px;text-align:center}
.evalkit-grid .cell{width:%(px)dpx}
.evalkit-grid .source{width:%(src)dpx;border-right:2px solid #999;position:sticky;left:0;background:#fff;z-index:1}
.evalkit-grid th:first-child{left:0;z-index:2}
.evalkit-grid .source .cap{text-align:left}
.evalkit-grid .box{width:%(px)dpx;height:%(px)dpx;display:flex;align-items:center;justify-content:center;margin:auto}
.evalkit-grid img{max-width:%(px)dpx;max-height:%(px)dpx}
.evalkit-grid .failed .box{background:#f8d7da;border:2px solid #c83c3c;color:#a00000;font-weight:600}
.evalkit-grid .na .box{background:#e2e3e5;border:2px dashed #aaa;color:#555}
.evalkit-grid .unknown .box,.evalkit-grid .not_run .box,.evalkit-grid .missing .box{background:#fff3cd;color:#555}
.evalkit-grid .cap{color:#333;margin-top:2px;word-break:break-word}
.evalkit-grid .failed .cap{color:#a00000;font-weight:600}
.evalkit-grid .nw{white-space:nowrap}
.evalkit-sim{background:#b00000;color:#fff;padding:6px 10px;font:600 13px system-ui,sans-serif}
.evalkit-na{color:#555;font:12px/1.4 system-ui,sans-serif;margin:4px 0}
"""


def comparison_grid_html(
    ws: Workspace,
    run_id: str,
    *,
    cases: Sequence[str] | None = None,
    models: Sequence[str] | None = None,
    quality: QualityLike = DEFAULT_QUALITY,
    thumb_px: int = 160,
    jpeg_quality: int = THUMB_QUALITY,
    applicable_only: bool = False,
    order_by_score: bool = False,
) -> str:
    """The comparison grid as a self-contained HTML table (JPEG thumbnails as data URIs) for reports.

    ``applicable_only``: columns only for the models that ran on at least one of these cases (see
    :func:`applicable_models`); a line above the table counts and names the others. Failed cells stay,
    in red with their error category. ``order_by_score``: model columns best first by their mean
    score on these cases (:func:`best_first`); the source column always comes first."""
    if thumb_px < 32 or thumb_px > 1024:
        raise InvalidInputError(f"thumb_px must be between 32 and 1024, got {thumb_px}")
    cells, case_frame = _grid_frame(ws, run_id, cases, models, quality)
    model_list = cells.attrs["models"]
    hidden: list[str] = []
    if applicable_only:
        model_list, hidden = applicable_models(cells)
    if order_by_score:
        model_list = best_first(cells, model_list)
    esc = html.escape

    def img(path: str, alt: str) -> str:
        data = base64.b64encode(cached_thumbnail(path, thumb_px, jpeg_quality)).decode("ascii")
        return f'<img alt="{esc(alt)}" src="data:image/jpeg;base64,{data}">'

    out = [f"<style>{_HTML_CSS % {'px': thumb_px, 'src': max(thumb_px, 170)}}</style>"]
    if cells.attrs["simulated"]:
        out.append(f'<div class="evalkit-sim">{esc(SIMULATED_NOTE)}</div>')
    notes = []
    if hidden:
        total = len(model_list) + len(hidden)
        notes.append(
            f"Showing the {len(model_list)} of {total} models that ran on these cases; "
            f"not applicable ({len(hidden)}): {', '.join(hidden)}."
        )
    if order_by_score and len(model_list) > 1 and cells.loc[cells["model_id"].isin(model_list), "score"].notna().any():
        notes.append(
            f"Columns: best mean {(cells.attrs.get('quality') or {}).get('metric', 'score')} on these cases first."
        )
    if notes:
        out.append(f'<p class="evalkit-na">{esc(" ".join(notes))}</p>')
    out.append(f'<table class="evalkit-grid" data-run="{esc(run_id)}"><thead><tr><th>source</th>')
    out += [f"<th>{esc(m)}</th>" for m in model_list]
    out.append("</tr></thead><tbody>")
    by_key = cells.set_index(["case_id", "model_id"])
    for case_id in cells.attrs["cases"]:
        src, n_inputs = _source_path(ws, case_frame, case_id)
        more = f" (+{n_inputs - 1} input{'s' if n_inputs > 2 else ''})" if n_inputs > 1 else ""
        box = img(src, f"source {case_id}") if src else "no source image"
        out.append(
            f'<tr><td class="cell source"><div class="box">{box}</div>'
            f'<div class="cap"><b>{esc(case_id)}</b>{esc(more)}<br>{esc(_prompt_text(case_frame, case_id))}'
            "</div></td>"
        )
        for model_id in model_list:
            cell = by_key.loc[(case_id, model_id)]
            state = cell["state"]
            css = {"ok": "ok", "failed": "failed", "not_applicable": "na"}.get(state, state)
            if state == "ok" and isinstance(cell["output_path"], str) and Path(cell["output_path"]).exists():
                inner = img(cell["output_path"], f"{model_id} on {case_id}")
                title = ""
            elif state == "failed":
                inner = f"failed<br>{esc(str(cell['error_category'] or ''))}"
                title = f' title="{esc(str(cell["error_message"] or ""))}"'
            elif state == "not_applicable":
                inner, title = "n/a", f' title="{esc(str(cell["reason"] or ""))}"'
            else:
                inner, title = esc(cell["caption"]), ""
            call = f' data-call="{esc(str(cell["call_id"]))}"' if isinstance(cell["call_id"], str) else ""
            caption = esc(_display_caption(cell))
            if state == "ok":  # "price · latency" then the score on its own line; no value split across lines
                parts = [f'<span class="nw">{part}</span>' for part in caption.split(" · ")]
                caption = " · ".join(parts[:-1]) + "<br>" + parts[-1] if len(parts) > 1 else caption
            out.append(
                f'<td class="cell {css}"{call}{title}><div class="box">{inner}</div>'
                f'<div class="cap">{caption}</div></td>'
            )
        out.append("</tr>")
    out.append("</tbody></table>")
    return "".join(out)


# -- latency -----------------------------------------------------------------------------------------


def latency_distribution(
    ws: Workspace, run_id: str, *, models: Sequence[str] | None = None, column: str = "total_ms"
) -> Figure:
    """Per model: a box plot and every completed call's latency (log scale), p50 and p95 marked."""
    if column not in ("total_ms", "inference_ms", "queue_ms", "submit_ms", "download_ms"):
        raise InvalidInputError(f"column must be a latency column (total_ms, inference_ms, …), got {column!r}")
    calls = ws.calls(run_id)
    done = calls[(calls["status"] == CallStatus.COMPLETED) & calls[column].notna() & (calls[column] > 0)]
    if models is not None:
        done = done[done["model_id"].isin(list(models))]
    groups = {m: g[column].to_numpy(float) for m, g in done.groupby("model_id")}
    order = sorted(groups, key=lambda m: np.percentile(groups[m], 50))
    fig = Figure(figsize=(8, 0.45 * max(len(order), 2) + 1.6), dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    if order:
        data = [groups[m] for m in order]
        ax.boxplot(
            data,
            orientation="horizontal",
            tick_labels=order,
            whis=(5, 95),
            showfliers=False,
            widths=0.6,
            medianprops={"color": "none"},
        )
        rng = np.random.default_rng(0)
        for i, values in enumerate(data, start=1):
            ax.scatter(values, i + rng.uniform(-0.18, 0.18, values.size), s=8, alpha=0.5, color="#1f77b4", zorder=3)
            p50, p95 = np.percentile(values, [50, 95])
            ax.plot([p50, p50], [i - 0.32, i + 0.32], color="black", lw=2, zorder=4)
            ax.plot([p95, p95], [i - 0.32, i + 0.32], color=FRONT_COLOUR, lw=2, zorder=4)
            ax.annotate(
                f"p95 {format_ms(p95)}",
                (max(p95, values.max()), i),
                fontsize=7.5,
                color=FRONT_COLOUR,
                xytext=(5, 0),
                textcoords="offset points",
                va="center",
            )
        ax.set_xscale("log")
        ax.plot([], [], color="black", lw=2, label="p50")
        ax.plot([], [], color=FRONT_COLOUR, lw=2, label="p95")
        ax.legend(loc="lower right", fontsize=8)
    else:
        ax.text(0.5, 0.5, "no completed calls", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel(f"{column} per completed call (ms, log scale; box = p25–p75, whiskers p5–p95)")
    ax.set_title(f"run {run_id}: latency per model", fontsize=10)
    ax.grid(True, axis="x", alpha=0.3, which="both")
    if run_is_simulated(ws, run_id, calls):
        mark_simulated(fig, behind=True)
    return fig


__all__ = [
    "plot_pareto",
    "plot_tradeoffs",
    "comparison_grid",
    "case_strip",
    "comparison_grid_html",
    "applicable_models",
    "best_first",
    "latency_distribution",
    "failure_table",
    "mark_simulated",
    "cached_thumbnail",
]
