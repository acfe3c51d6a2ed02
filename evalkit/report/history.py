"""A picture of a suite's history: small multiples of :func:`evalkit.decide.trends.trends`, one panel per
metric, one line per model with its 95 % interval band, the latest run's flagged changes ringed in red.

:func:`plot_history` returns the matplotlib figure (notebooks, the report's history section);
:func:`write_history_html` writes a self-contained page (``evalkit trends --html OUT``). Simulated runs
carry :data:`~evalkit.decide.tables.SIMULATED_NOTE` on the figure and at the top of the page.
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg", force=False)
from matplotlib.figure import Figure  # noqa: E402

from evalkit.decide._trend_view import fmt_change, fmt_value  # noqa: E402
from evalkit.decide.tables import SIMULATED_NOTE  # noqa: E402
from evalkit.decide.trends import DEFAULT_LAST, METRICS, Trends, trends  # noqa: E402
from evalkit.report.figures import mark_simulated  # noqa: E402

_SCALE = {"success": 100.0}
_UNIT = {"latency_p50": "ms", "latency_p95": "ms", "inference_p50": "ms", "cost": "USD", "success": "%"}


def plot_history(tr: Trends, *, panel_w_in: float = 4.6, panel_h_in: float = 3.0) -> Figure:
    """One panel per metric; x = the runs (oldest → latest), y = the value, a band = its 95 % interval."""
    s = tr.series()
    metrics = list(dict.fromkeys(s["metric"]))
    models = list(dict.fromkeys(s["model"]))
    runs = [r.run_id for r in tr.runs]
    cols = min(3, max(1, len(metrics)))
    rows = math.ceil(len(metrics) / cols) or 1
    fig = Figure(figsize=(panel_w_in * cols, panel_h_in * rows + 1.2), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    colours = matplotlib.colormaps["tab10"]
    x = list(range(len(runs)))
    for ax, metric in zip(axes, metrics, strict=False):
        k = _SCALE.get(metric, 1.0)
        for i, model in enumerate(models):
            d = s[(s["metric"] == metric) & (s["model"] == model)].set_index("run_id").reindex(runs)
            c = colours(i % 10)
            y = d["value"].astype(float) * k
            ax.plot(x, y, marker="o", ms=3, lw=1.4, color=c, label=model)
            ax.fill_between(x, d["ci_low"].astype(float) * k, d["ci_high"].astype(float) * k, color=c, alpha=0.15)
            for col, edge, style in (("flagged", "#e69500", "--"), ("alarm", "red", "-")):
                hit = d[col].fillna(False).astype(bool).to_numpy()
                if hit.any():
                    xs = [xx for xx, h in zip(x, hit, strict=True) if h]
                    ax.scatter(xs, y[hit], s=110, facecolors="none", edgecolors=edge, linewidths=2, linestyles=style,
                               zorder=5)  # fmt: skip
        ax.set_title(f"{METRICS[metric][0]}" + (f" ({_UNIT[metric]})" if metric in _UNIT else ""), fontsize=10)
        ax.set_xticks(x, [r if len(runs) <= 8 else "" for r in runs], rotation=30, ha="right", fontsize=7)
        ax.grid(alpha=0.3)
    for ax in axes[len(metrics) :]:
        ax.set_visible(False)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=min(4, len(models)), fontsize=8, frameon=False)
    fig.suptitle(
        f"suite {tr.suite}: {len(runs)} runs, {runs[0]} → {runs[-1]} (red ring: an alarm; orange: a change reported)",
        fontsize=11,
    )
    if tr.simulated:
        mark_simulated(fig, behind=True)
    return fig


def figure_png(fig: Figure, dpi: int = 110) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def history_html(tr: Trends) -> str:
    """The figure and the changes as an HTML fragment (the page body and the report's history section)."""
    esc = html.escape
    img = base64.b64encode(figure_png(plot_history(tr))).decode("ascii")
    parts = []
    if tr.simulated:
        parts.append(f'<p class="evalkit-sim" style="color:#b00000;font-weight:bold">{esc(SIMULATED_NOTE)}</p>')
    parts.append(
        f'<img alt="history of suite {esc(tr.suite)}" style="max-width:100%" src="data:image/png;base64,{img}">'
    )
    rows = "".join(
        f"<tr><td>{esc(r.model)}</td><td>{esc(r.metric)}</td><td>{esc(fmt_value(r.metric, r.test.baseline))}</td>"
        f"<td>{esc(fmt_value(r.metric, r.test.latest))}</td><td>{esc(fmt_change(r.metric, r.test))}</td>"
        f"<td>{'—' if r.q_value is None else f'{r.q_value:.2g}'}</td><td>{esc(r.verdict)}</td></tr>"
        for r in tr.changes
    )
    if rows:
        parts.append(
            "<table><thead><tr><th>model</th><th>metric</th><th>baseline</th><th>latest</th>"
            f"<th>change [95% CI]</th><th>q</th><th>verdict</th></tr></thead><tbody>{rows}</tbody></table>"
        )
    else:
        parts.append(f"<p>No change flagged in {esc(tr.latest)}.</p>")
    if tr.skipped:
        items = "".join(f"<li>{esc(s['run_id'])}: {esc(s['reason'])}</li>" for s in tr.skipped)
        parts.append(f"<p>Skipped runs:</p><ul>{items}</ul>")
    return "\n".join(parts)


def write_history_html(tr: Trends, path: str | os.PathLike) -> Path:
    """A self-contained HTML page of the history (no external resources)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    title = f"evalkit trends — {tr.suite}" + (" — SIMULATED" if tr.simulated else "")
    page = (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        "<style>body{font-family:sans-serif;margin:1.5em;max-width:1400px}td,th{padding:2px 8px;text-align:left}"
        "</style></head><body>"
        f"<h1>{html.escape(title)}</h1>{history_html(tr)}</body></html>"
    )
    target.write_text(page, encoding="utf-8")
    return target


def history_section(data: Any) -> str:
    """The report's "history" section: the run's suite as a series up to this run (``data``: ReportData),
    or a sentence saying why there is none yet."""
    from evalkit.errors import InvalidInputError

    esc = html.escape
    suite = data.run.get("suite_name")
    if not suite:
        return "<p>This run has no suite name, so it belongs to no series.</p>"
    try:
        tr = trends(data.ws, suite, last=DEFAULT_LAST, until=data.run_id, quality=data.quality)
    except InvalidInputError as exc:
        return f"<p>No history for suite {esc(suite)}: {esc(exc.message)}</p>"
    if tr.latest != data.run_id:
        why = next((s["reason"] for s in tr.skipped if s["run_id"] == data.run_id), "it does not count")
        return f"<p>This run is not part of suite {esc(suite)}'s series ({esc(why)}).</p>"
    if len(tr.runs) < 2:
        return (
            f"<p>This is the first counted run of suite {esc(suite)}: later runs of the suite will be compared "
            "with it here and by <code>evalkit trends</code>.</p>"
        )
    intro = (
        f"<p>This run against the {len(tr.runs) - 1} earlier run(s) of suite {esc(suite)} (the same tests as "
        "<code>evalkit trends</code>: q-values over every test, alarms only past the minimum effects): one panel "
        "per metric, one line per model with its 95% interval band, alarms ringed red.</p>"
    )
    return intro + history_html(tr)


__all__ = ["history_html", "history_section", "plot_history", "write_history_html"]
