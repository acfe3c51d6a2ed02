"""Figures for notebooks and static reports: Pareto fronts, comparison grids, latency distributions.

Every function returns a matplotlib ``Figure`` (or an HTML string) and never calls ``plt.show()``:
the caller displays it and can ``plt.close(fig)``. Static reports need plain images, not widgets
(exported widget views need a CDN), so everything here renders without a kernel. When a run is
simulated, every figure carries :data:`evalkit.analysis.SIMULATED_NOTE` as a watermark and in its
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
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.transforms import Bbox
from PIL import Image, ImageDraw

from evalkit.analysis import (
    DEFAULT_QUALITY, SIMULATED_NOTE, QualityLike, comparison_cells, failure_table, format_ms, pareto_front, run_is_simulated,
)
from evalkit.errors import InvalidInputError
from evalkit.images import thumbnail_jpeg
from evalkit.store import Workspace

DPI = 100
STATE_COLOURS = {"failed": (248, 215, 218), "not_applicable": (226, 227, 229), "unknown": (255, 236, 179),
                 "not_run": (240, 240, 240), "missing": (240, 240, 240)}
AXIS_LABELS = {"mean_cost_usd": "list price per edit (USD)", "p95_total_ms": "p95 latency, total (ms)",
               "p50_total_ms": "median latency, total (ms)", "p95_inference_ms": "p95 inference time (ms)"}
FRONT_COLOUR = "#d62728"
THUMB_QUALITY = 75  # JPEG quality of grid thumbnails (one value, so figure and HTML share the cache)


@functools.lru_cache(maxsize=4096)
def cached_thumbnail(path: str, max_side: int, quality: int = THUMB_QUALITY) -> bytes:
    """JPEG thumbnail of an image file (blobs are content-addressed, so a path never changes content)."""
    return thumbnail_jpeg(path, max_side=max_side, quality=quality)


def mark_simulated(fig: Figure) -> None:
    """A diagonal watermark and a title line saying the outputs are simulated."""
    size = max(10.0, min(40.0, fig.get_figwidth() * 72 / 34))  # about the figure's width, rotated
    fig.text(0.5, 0.5, SIMULATED_NOTE, fontsize=size, color="red", alpha=0.18, ha="center", va="center",
             rotation=25, zorder=100, fontweight="bold")
    title = fig.get_suptitle()
    fig.suptitle(f"{SIMULATED_NOTE}\n{title}".strip(), color="#b00000", fontsize=11)


# -- Pareto ------------------------------------------------------------------------------------------


def _axis_label(col: str, df: pd.DataFrame) -> str:
    if col == "quality":
        q = df.attrs.get("quality") or {}
        return f"quality: {q.get('metric', '?')} ({q.get('source', '?')})"
    return AXIS_LABELS.get(col, col)


def _place_labels(ax, xs: np.ndarray, ys: np.ndarray, labels: list[str]) -> None:
    """Label every point, trying offsets around it until the label overlaps no other label or point."""
    fig = ax.figure
    if not hasattr(fig.canvas, "get_renderer"):  # a bare Figure(): give it an Agg canvas to measure text
        FigureCanvasAgg(fig)
    fig.canvas.draw()  # applies the layout, so positions below are final
    renderer = fig.canvas.get_renderer()
    points = ax.transData.transform(np.column_stack([xs, ys]))
    taken = [Bbox.from_bounds(px - 4, py - 4, 8, 8) for px, py in points]
    offsets = [(6, 5), (6, -11), (-6, 5), (-6, -11), (9, -3), (-9, -3), (0, 9), (0, -15)]
    offsets += [(2 * dx, 2 * dy) for dx, dy in offsets] + [(3 * dx, 3 * dy) for dx, dy in offsets]
    for i in np.argsort(-points[:, 1]):
        for dx, dy in offsets:
            ann = ax.annotate(labels[i], (xs[i], ys[i]), xytext=(dx, dy), textcoords="offset points", fontsize=8,
                              ha="left" if dx >= 0 else "right", va="bottom",
                              arrowprops={"arrowstyle": "-", "color": "0.6", "lw": 0.5} if abs(dx) > 12 else None)
            box = ann.get_window_extent(renderer).expanded(1.02, 1.1)
            if not any(box.overlaps(b) for b in taken) or (dx, dy) == offsets[-1]:
                taken.append(box)
                break
            ann.remove()


def plot_pareto(df: pd.DataFrame, x: str = "mean_cost_usd", y: str = "quality", *, minimize_x: bool = True,
                maximize_y: bool | None = None, label: str = "model_id", ax=None, title: str | None = None,
                simulated: bool | None = None) -> Figure:
    """Scatter of ``y`` against ``x`` with the Pareto front highlighted and connected; every point labelled.

    ``df`` is a :func:`evalkit.analysis.model_table` (one row per model: filter a grouped table to one
    operation first). The x axis is logarithmic when the values span 10× or more (symlog when free
    models sit at 0). Quality intervals are drawn as error bars when present.
    """
    if df[label].duplicated().any():
        raise InvalidInputError(f"plot_pareto needs one row per {label}",
                                hint="filter a grouped model_table to one operation or category first")
    q = df.attrs.get("quality") or {}
    if maximize_y is None:
        maximize_y = bool(q.get("higher_is_better", True)) if y == "quality" else True
    data = df[df[x].notna() & df[y].notna()]
    if ax is None:
        fig = Figure(figsize=(7.5, 5), dpi=DPI, layout="constrained")
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    front = pareto_front(data, x, y, minimize_x=minimize_x, maximize_y=maximize_y, label=label)
    on_front = data[label].astype(str).isin(front)
    xs, ys = data[x].to_numpy(float), data[y].to_numpy(float)
    if y == "quality" and {"quality_ci_low", "quality_ci_high"} <= set(data.columns):
        lo = np.nan_to_num(ys - data["quality_ci_low"].to_numpy(float), nan=0.0)
        hi = np.nan_to_num(data["quality_ci_high"].to_numpy(float) - ys, nan=0.0)
        ax.errorbar(xs, ys, yerr=[np.maximum(lo, 0), np.maximum(hi, 0)], fmt="none", ecolor="0.75", lw=1, zorder=1)
    ax.scatter(xs[~on_front.to_numpy()], ys[~on_front.to_numpy()], color="0.45", s=30, zorder=2, label="dominated")
    ax.scatter(xs[on_front.to_numpy()], ys[on_front.to_numpy()], color=FRONT_COLOUR, s=45, zorder=3,
               label="Pareto front")
    order = np.argsort(xs[on_front.to_numpy()])
    ax.plot(xs[on_front.to_numpy()][order], ys[on_front.to_numpy()][order], color=FRONT_COLOUR, lw=1.2, zorder=2)
    positive = xs[xs > 0]
    if positive.size and positive.max() / positive.min() >= 10:
        if (xs <= 0).any():
            ax.set_xscale("symlog", linthresh=float(positive.min()))
        else:
            ax.set_xscale("log")
    ax.set_xlabel(_axis_label(x, df) + (" — log scale" if ax.get_xscale() != "linear" else ""))
    ax.set_ylabel(_axis_label(y, df))
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    missing = df.loc[~df.index.isin(data.index), label].astype(str).tolist()
    if missing:
        ax.text(0.01, 0.01, f"not plotted (no {x} or {y}): {', '.join(missing)}", transform=ax.transAxes,
                fontsize=7, color="0.4", va="bottom")
    ax.set_title(title or f"{_axis_label(y, df)} vs {_axis_label(x, df)}", fontsize=10)
    if len(data):
        _place_labels(ax, xs, ys, data[label].astype(str).tolist())
    if (df.attrs.get("simulated") if simulated is None else simulated):
        mark_simulated(fig)
    return fig


def plot_tradeoffs(df: pd.DataFrame, *, title: str | None = None) -> Figure:
    """Two panels: price vs quality and p95 latency vs quality, each with its Pareto front."""
    fig = Figure(figsize=(14, 5.5), dpi=DPI, layout="constrained")
    left, right = fig.subplots(1, 2)
    plot_pareto(df, "mean_cost_usd", "quality", ax=left, simulated=False)
    plot_pareto(df, "p95_total_ms", "quality", ax=right, simulated=False)
    fig.suptitle(title or f"run {df.attrs.get('run_id', '')}: cost, latency and quality")
    if df.attrs.get("simulated"):
        mark_simulated(fig)
    return fig


# -- comparison grids --------------------------------------------------------------------------------


def _source_path(ws: Workspace, cases: pd.DataFrame, case_id: str) -> tuple[str | None, int]:
    row = cases[cases["case_id"] == case_id]
    shas = row["input_sha256"].iloc[0] if len(row) else []
    path = ws.find_blob(shas[0]) if shas else None
    return (str(path) if path else None), len(shas)


def _grid_frame(ws: Workspace, run_id: str, cases, models, quality) -> tuple[pd.DataFrame, pd.DataFrame]:
    cells = comparison_cells(ws, run_id, cases=cases, models=models, quality=quality)
    return cells, ws.cases(run_id)


def comparison_grid(ws: Workspace, run_id: str, *, cases: Sequence[str] | None = None,
                    models: Sequence[str] | None = None, quality: QualityLike = DEFAULT_QUALITY,
                    thumb_px: int = 160) -> Figure:
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
        with Image.open(_as_bytes_io(cached_thumbnail(path, thumb_px))) as im:
            im = im.convert("RGB")
            canvas.paste(im, (x0 + (thumb_px - im.width) // 2, y0 + (thumb_px - im.height) // 2))

    texts.append((cell_w / 2, head_h - 4, "source", {"weight": "bold"}))
    for j, m in enumerate(model_list, start=1):
        texts.append((j * cell_w + cell_w / 2, head_h - 4, _fit(m, thumb_px), {"weight": "bold"}))
    for i, case_id in enumerate(case_list):
        src, n_inputs = _source_path(ws, case_frame, case_id)
        paste(src, 0, i)
        prompt = case_frame.loc[case_frame["case_id"] == case_id, "prompt"]
        prompt_text = str(prompt.iloc[0]) if len(prompt) and prompt.iloc[0] else ""
        more = f" (+{n_inputs - 1} inputs)" if n_inputs > 1 else ""
        texts.append((cell_w / 2, head_h + i * cell_h + thumb_px + 2, f"{case_id}{more}\n{_fit(prompt_text, thumb_px)}",
                      {"va": "top"}))
        for j, model_id in enumerate(model_list, start=1):
            cell = by_key.loc[(case_id, model_id)]
            x0, y0 = j * cell_w + pad // 2, head_h + i * cell_h
            if cell["state"] == "ok" and isinstance(cell["output_path"], str) and Path(cell["output_path"]).exists():
                paste(cell["output_path"], j, i)
            else:
                colour = STATE_COLOURS.get(cell["state"], (240, 240, 240))
                draw.rectangle([x0, y0, x0 + thumb_px - 1, y0 + thumb_px - 1], fill=colour,
                               outline=(200, 60, 60) if cell["state"] == "failed" else (170, 170, 170), width=2)
                big = {"failed": f"FAILED\n{cell['error_category'] or ''}", "not_applicable": "n/a",
                       "unknown": "UNKNOWN\noutcome"}.get(cell["state"], "not run")
                texts.append((x0 + thumb_px / 2, y0 + thumb_px / 2, big,
                              {"va": "center", "weight": "bold", "fontsize": 8,
                               "color": "#a00000" if cell["state"] == "failed" else "0.35"}))
            texts.append((x0 + thumb_px / 2, y0 + thumb_px + 2, _fit(cell["caption"], thumb_px, lines=2),
                          {"va": "top", "color": "#a00000" if cell["state"] == "failed" else "black"}))
    fig = Figure(figsize=(width / DPI, height / DPI + 0.5), dpi=DPI)
    ax = fig.add_axes((0, 0, 1, height / (height + 0.5 * DPI)))
    ax.imshow(np.asarray(canvas), interpolation="none")
    ax.set_axis_off()
    for tx, ty, text, kw in texts:
        opts = {"ha": "center", "va": "bottom", "fontsize": 6.5} | kw
        ax.text(tx, ty, text, **opts)
    simulated = cells.attrs["simulated"]
    ax.set_title(f"run {run_id}: {nrows} case(s) × {len(model_list)} model(s)"
                 + (" — SIMULATED" if simulated else ""), fontsize=9)
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


def case_strip(ws: Workspace, run_id: str, case_id: str, *, models: Sequence[str] | None = None,
               quality: QualityLike = DEFAULT_QUALITY, thumb_px: int = 256) -> Figure:
    """One case across every model (the source first), larger than in the full grid."""
    return comparison_grid(ws, run_id, cases=[case_id], models=models, quality=quality, thumb_px=thumb_px)


_HTML_CSS = """
.evalkit-grid{border-collapse:collapse;font:11px/1.3 system-ui,sans-serif}
.evalkit-grid th{position:sticky;top:0;background:#fff;padding:4px;font-weight:600}
.evalkit-grid td{vertical-align:top;padding:3px;text-align:center}
.evalkit-grid .cell{width:%(px)dpx}
.evalkit-grid .box{width:%(px)dpx;height:%(px)dpx;display:flex;align-items:center;justify-content:center}
.evalkit-grid img{max-width:%(px)dpx;max-height:%(px)dpx}
.evalkit-grid .failed .box{background:#f8d7da;border:2px solid #c83c3c;color:#a00000;font-weight:600}
.evalkit-grid .na .box{background:#e2e3e5;border:2px dashed #aaa;color:#555}
.evalkit-grid .unknown .box,.evalkit-grid .not_run .box,.evalkit-grid .missing .box{background:#fff3cd;color:#555}
.evalkit-grid .cap{color:#333;margin-top:2px;word-break:break-word}
.evalkit-grid .failed .cap{color:#a00000}
.evalkit-sim{background:#b00000;color:#fff;padding:6px 10px;font:600 13px system-ui,sans-serif}
"""


def comparison_grid_html(ws: Workspace, run_id: str, *, cases: Sequence[str] | None = None,
                         models: Sequence[str] | None = None, quality: QualityLike = DEFAULT_QUALITY,
                         thumb_px: int = 160, jpeg_quality: int = THUMB_QUALITY) -> str:
    """The comparison grid as a self-contained HTML table (JPEG thumbnails as data URIs) for reports."""
    if thumb_px < 32 or thumb_px > 1024:
        raise InvalidInputError(f"thumb_px must be between 32 and 1024, got {thumb_px}")
    cells, case_frame = _grid_frame(ws, run_id, cases, models, quality)
    model_list = cells.attrs["models"]
    esc = html.escape

    def img(path: str, alt: str) -> str:
        data = base64.b64encode(cached_thumbnail(path, thumb_px, jpeg_quality)).decode("ascii")
        return f'<img alt="{esc(alt)}" src="data:image/jpeg;base64,{data}">'

    out = [f"<style>{_HTML_CSS % {'px': thumb_px}}</style>"]
    if cells.attrs["simulated"]:
        out.append(f'<div class="evalkit-sim">{esc(SIMULATED_NOTE)}</div>')
    out.append(f'<table class="evalkit-grid" data-run="{esc(run_id)}"><thead><tr><th>source</th>')
    out += [f"<th>{esc(m)}</th>" for m in model_list]
    out.append("</tr></thead><tbody>")
    by_key = cells.set_index(["case_id", "model_id"])
    for case_id in cells.attrs["cases"]:
        src, n_inputs = _source_path(ws, case_frame, case_id)
        prompt = case_frame.loc[case_frame["case_id"] == case_id, "prompt"]
        prompt_text = str(prompt.iloc[0]) if len(prompt) and prompt.iloc[0] else ""
        more = f" (+{n_inputs - 1} inputs)" if n_inputs > 1 else ""
        box = img(src, f"source {case_id}") if src else "no source image"
        out.append(f'<tr><td class="cell source"><div class="box">{box}</div>'
                   f'<div class="cap"><b>{esc(case_id)}</b>{esc(more)}<br>{esc(prompt_text)}</div></td>')
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
            out.append(f'<td class="cell {css}"{call}{title}><div class="box">{inner}</div>'
                       f'<div class="cap">{esc(cell["caption"])}</div></td>')
        out.append("</tr>")
    out.append("</tbody></table>")
    return "".join(out)


# -- latency -----------------------------------------------------------------------------------------


def latency_distribution(ws: Workspace, run_id: str, *, models: Sequence[str] | None = None,
                         column: str = "total_ms") -> Figure:
    """Per model: a box plot and every completed call's latency (log scale), p50 and p95 marked."""
    if column not in ("total_ms", "inference_ms", "queue_ms", "submit_ms", "download_ms"):
        raise InvalidInputError(f"column must be a latency column (total_ms, inference_ms, …), got {column!r}")
    calls = ws.calls(run_id)
    done = calls[(calls["status"] == "completed") & calls[column].notna() & (calls[column] > 0)]
    if models is not None:
        done = done[done["model_id"].isin(list(models))]
    groups = {m: g[column].to_numpy(float) for m, g in done.groupby("model_id")}
    order = sorted(groups, key=lambda m: np.percentile(groups[m], 50))
    fig = Figure(figsize=(8, 0.45 * max(len(order), 2) + 1.6), dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    if order:
        data = [groups[m] for m in order]
        ax.boxplot(data, orientation="horizontal", tick_labels=order, whis=(5, 95), showfliers=False,
                   widths=0.6, medianprops={"color": "none"})
        rng = np.random.default_rng(0)
        for i, values in enumerate(data, start=1):
            ax.scatter(values, i + rng.uniform(-0.18, 0.18, values.size), s=8, alpha=0.5, color="#1f77b4", zorder=3)
            p50, p95 = np.percentile(values, [50, 95])
            ax.plot([p50, p50], [i - 0.32, i + 0.32], color="black", lw=2, zorder=4)
            ax.plot([p95, p95], [i - 0.32, i + 0.32], color=FRONT_COLOUR, lw=2, zorder=4)
            ax.annotate(f"p95 {format_ms(p95)}", (p95, i + 0.32), fontsize=7, color=FRONT_COLOUR,
                        xytext=(2, 0), textcoords="offset points", va="bottom")
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
        mark_simulated(fig)
    return fig


__all__ = ["plot_pareto", "plot_tradeoffs", "comparison_grid", "case_strip", "comparison_grid_html",
           "latency_distribution", "failure_table", "mark_simulated", "cached_thumbnail"]
