"""The sections of the model-choice report: the data, tables, HTML pieces and figures its notebook shows.

``model_choice_report.ipynb`` (and ``cost_quality`` / ``compare`` / ``rate``) call these: first
:func:`prepare_report` (every table, computed once from the workspace, as :class:`ReportData`), then one
function per section (``header_html``, ``overview_html``, ``glance_html``, ``recommendations_html``,
``styled``, ``figure_image``, ``category_grids``, ``failures_html``, ``caveats_html`` …). Keeping them
here, not in the notebook, means tests reach every piece of logic without a kernel. Executing the
notebook and exporting it to HTML is :mod:`evalkit.report.build`, which re-exports every name below.
"""

from __future__ import annotations

import html
import io
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from evalkit.decide.quality import (
    AUTO_CAVEAT,
    AUTO_QUALITY,
    JUDGE_QUALITY,
    QualityLike,
    QualitySpec,
    choose_quality,
    parse_quality,
    quality_string,
)
from evalkit.decide.tables import (
    SIMULATED_NOTE,
    failure_table,
    format_ms,
    format_usd,
    model_table,
    run_is_simulated,
)
from evalkit.errors import InvalidInputError
from evalkit.store import ATTEMPTED_STATUSES, CallStatus, Workspace, check_id

#: thumbnails in the report's grids: this size up to GRID_CELL_BUDGET cells, smaller beyond (HTML size)
REPORT_THUMB_PX = 112
GRID_CELL_BUDGET = 600
MIN_CASES_FOR_EVIDENCE = 5

#: what the field knows about VLM judges (evaluation-anchors.md §0 and §3), shown when quality is a judge score
JUDGE_CAVEATS = (
    "Judge scores are only comparable within this toolkit's own runs: the same model on the same benchmark "
    "scores 7.66–7.81 across four papers, so never put these numbers next to published ones.",
    "Judges drift: GEdit-Bench's maintainers saw GPT-4.1 scores move between April and June 2025 and vary by "
    "about ±0.1 between two runs on the same day — treat quality gaps of a few tenths as ties unless the "
    "paired test says otherwise.",
    "VLM judges agree with people only moderately on edits (VIEScore: Spearman ≈ 0.4 with humans, where humans "
    "agree with each other at ≈ 0.45); pairwise votes rank models more reliably than pointwise scores.",
    "Judges refuse or fail silently on some images (e.g. photos of people); such replies are stored as "
    "unscored, never guessed, so a model's quality rests on its scored cases only (see the unscored counts).",
)


@dataclass
class ReportData:
    """Everything the report shows, computed once from the workspace."""

    ws: Workspace
    run_id: str
    run: dict[str, Any]
    quality: QualitySpec
    quality_reason: str
    simulated: bool
    models: pd.DataFrame
    by_operation: pd.DataFrame
    by_category: pd.DataFrame
    failures: pd.DataFrame
    decision: Any  # evalkit.decide.tiers.TierDecision


# -- data ---------------------------------------------------------------------------------------------


def prepare_report(
    workspace: Workspace | str | os.PathLike,
    run_id: str,
    *,
    quality: QualityLike | None = None,
    tiers: str | os.PathLike | None = None,
) -> ReportData:
    """Compute every table the report shows (the notebook's first cell after its parameters)."""
    from evalkit.decide.tiers import choose_defaults

    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace, create=False)
    check_id(run_id, "run id")
    run = ws.get_run(run_id)
    spec, why = choose_quality(ws, run_id, quality)
    decision = choose_defaults(ws, run_id, tiers or None, quality=spec)
    return ReportData(
        ws=ws,
        run_id=run_id,
        run=run,
        quality=spec,
        quality_reason=why,
        simulated=run_is_simulated(ws, run_id),
        models=model_table(ws, run_id, quality=spec),
        by_operation=model_table(ws, run_id, quality=spec, by="operation"),
        by_category=model_table(ws, run_id, quality=spec, by="category"),
        failures=failure_table(ws, run_id),
        decision=decision,
    )


def run_overview(ws: Workspace, run_id: str) -> dict[str, str]:
    """What was run, as label → text: suite, cases, models, repeats, calls, cost, wall time, dates, scorers."""
    run = ws.get_run(run_id)
    calls = ws.calls(run_id)
    scores = ws.scores(run_id)
    status = calls["status"].value_counts()
    attempted = int(status.reindex(list(ATTEMPTED_STATUSES)).fillna(0).sum())
    cached = int((calls["cost_source"] == "cache").sum())
    started = calls["submitting_at"].dropna()
    finished = calls["completed_at"].dropna()
    judge_versions = sorted(set(scores.loc[scores["source"] == "judge", "version"]))
    auto_versions = sorted(set(scores.loc[scores["source"] == "auto", "version"]))
    wall = run.get("wall_s")
    out = {
        "run": f"{run_id} (status {run['status']})",
        "suite": f"{run.get('suite_name') or '—'}",
        "cases": str(calls["case_id"].nunique()),
        "models": f"{len(run['models'])}: {', '.join(run['models'])}",
        "repeats": str(run["repeats"]),
        "calls": (
            f"{attempted} attempted — {int(status.get(CallStatus.COMPLETED, 0))} completed ({cached} from the cache), "
            f"{int(status.get(CallStatus.FAILED, 0))} failed, "
            f"{int(status.get(CallStatus.UNKNOWN, 0))} unknown outcome; "
            f"{int(status.get(CallStatus.NOT_APPLICABLE, 0))} not applicable"
        ),
        "cost": f"${math.fsum(calls['cost_usd'].dropna().astype(float)):.4f} billed" + _unknown_cost_note(calls),
        "judging cost": _judging_cost(ws, run_id),
        "wall time": "—" if wall is None else format_ms(float(wall) * 1000),
        "dates (UTC)": f"created {run['created_at'][:19]}"
        + (f"; calls {started.min()[:19]} → {finished.max()[:19]}" if len(started) and len(finished) else ""),
        "judge": ", ".join(judge_versions) if judge_versions else "none (not judged)",
        "automatic metrics": ", ".join(auto_versions) if auto_versions else "none",
        "evalkit": run.get("evalkit_version") or "—",
    }
    return out


def _judging_cost(ws: Workspace, run_id: str) -> str:
    """What the judge's requests for this run cost (the usage ledger), next to the generation cost."""
    usage = ws.usage()
    judged = usage[(usage["source"] == "judge") & (usage["run_id"] == run_id)]
    if judged.empty:
        return "$0 (no judge request sent for this run)"
    known = judged["cost_usd"].dropna().astype(float)
    text = f"${math.fsum(known):.4f} for {len(judged)} judge request(s)"
    unknown = len(judged) - len(known)
    if unknown:
        text += f"; {unknown} of unknown cost (no judge prices: `evalkit score --judge-price IN/OUT`)"
    return text


def _unknown_cost_note(calls: Any) -> str:
    """For calls still ``unknown``: how many, and the most they may have cost (their reservations)."""
    unknown = calls[calls["status"] == "unknown"]
    if unknown.empty:
        return ""
    most = math.fsum(unknown["reserved_usd"].dropna().astype(float))
    return (
        f"; {len(unknown)} call(s) with an unknown outcome may have cost up to ${most:.4f} more "
        "(`evalkit reconcile RUN_ID` settles them from the provider's history)"
    )


# -- HTML sections --------------------------------------------------------------------------------------

_esc = html.escape
_CSS = """<style>
.ek-banner{background:#b00000;color:#fff;padding:10px 14px;font:700 18px system-ui,sans-serif;margin:6px 0}
.ek-tbl{border-collapse:collapse;font:13px/1.4 system-ui,sans-serif;margin:4px 0 14px}
.jp-RenderedHTMLCommon .ek-tbl th,.jp-RenderedHTMLCommon .ek-tbl td,.ek-tbl th,.ek-tbl td{border-bottom:1px solid #ddd;
 padding:3px 8px;text-align:left;vertical-align:top}
.jp-RenderedHTMLCommon .evalkit-grid td,.jp-RenderedHTMLCommon .evalkit-grid th{text-align:center}
.ek-ok{color:#176b2c;font-weight:600}.ek-warn{color:#8a5a00;font-weight:600}.ek-bad{color:#a00000;font-weight:600}
.ek-note{color:#555;font:12px system-ui,sans-serif}
.ek-rec{table-layout:fixed;width:100%}.ek-rec td:last-child{font-size:12px;color:#333}
.ek-glance th,.ek-glance td{padding:4px 14px}
.ek-facts td{font-size:12px}
details{margin:6px 0 14px}details summary{cursor:pointer;font:600 13px system-ui,sans-serif;color:#333}
</style>"""


def header_html(data: ReportData) -> str:
    title = f"Which image-editing model for each price tier — run {_esc(data.run_id)}"
    out = [_CSS, f"<h1>{title}</h1>"]
    if data.simulated:
        out.append(
            f'<div class="ek-banner">{_esc(SIMULATED_NOTE)}. Every image, latency and cost below comes '
            "from local simulated servers: the recommendations say nothing about the real models.</div>"
        )
    out.append(f'<p class="ek-note">{_esc(data.quality_reason)}</p>')
    return "".join(out)


def overview_html(data: ReportData) -> str:
    rows = "".join(
        f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in run_overview(data.ws, data.run_id).items()
    )
    return f'{_CSS}<table class="ek-tbl">{rows}</table>'


#: the same column widths in every tier's table, so tiers read side by side down the page
_REC_COLS = (
    "<colgroup><col style='width:11.5em'><col style='width:16em'><col style='width:6.5em'>"
    "<col style='width:5em'><col style='width:10em'><col style='width:4em'><col></colgroup>"
)


def _q(v: Any) -> str:
    return "—" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.3g}"


def _glance_cell(dec: Any) -> str:
    if dec is None:
        return '<td class="ek-note">not run</td>'
    if dec.status == "ok":
        return f'<td><span class="ek-ok">{_esc(dec.default)}</span></td>'
    if dec.status == "insufficient_evidence":
        maybe = f"<br><span class='ek-note'>provisional: {_esc(dec.provisional)}</span>" if dec.provisional else ""
        return f'<td><span class="ek-warn">too little evidence</span>{maybe}</td>'
    return '<td><span class="ek-bad">no eligible model</span></td>'


def glance_html(data: ReportData) -> str:
    """The decision on one screen: operations × tiers, each cell the default model (or why there is none)."""
    d = data.decision
    tiers = list(d.tiers)
    operations = sorted({op for name in tiers for op in d.operations[name]})
    head = "".join(f"<th>tier {_esc(t)}</th>" for t in tiers)
    rows = "".join(
        f"<tr><th>{_esc(op)}</th>" + "".join(_glance_cell(d.operations[t].get(op)) for t in tiers) + "</tr>"
        for op in operations
    )
    return f'<table class="ek-tbl ek-glance"><tr><th>operation</th>{head}</tr>{rows}</table>'


def recommendations_html(data: ReportData) -> str:
    """At a glance (operations × tiers), then per tier: the default model for each operation, its
    numbers and the rationale."""
    d = data.decision
    out = [_CSS]
    if data.simulated:
        out.append(f'<div class="ek-banner">{_esc(SIMULATED_NOTE)} — not a basis for a decision.</div>')
    out.append(
        f'<p class="ek-note">Ranked by {_esc(d.quality.label)}; a cheaper model replaces the best one when '
        f"a one-sided Wilcoxon signed-rank test over shared cases (α = {d.alpha:g}) does not show it is worse.</p>"
    )
    out.append("<h3>At a glance</h3>" + glance_html(data))
    for name, tier in d.tiers.items():
        c = tier.constraints()
        limits = [
            f"≤ {format_usd(c['max_cost_usd'])} per edit" if c["max_cost_usd"] is not None else "",
            f"p95 ≤ {format_ms(c['max_latency_p95_ms'])}" if c["max_latency_p95_ms"] is not None else "",
            f"success ≥ {c['min_success_rate']:.0%}",
            f"≥ {c['min_calls']} completed calls",
            f"providers {', '.join(c['allowed_providers'])}" if c["allowed_providers"] else "",
            f"vendors {', '.join(c['allowed_vendors'])}" if c["allowed_vendors"] else "",
        ]
        out.append(
            f"<h3>Tier {_esc(name)}</h3><p class='ek-note'>{_esc(tier.description)} "
            f"Constraints: {_esc('; '.join(x for x in limits if x))}.</p>"
        )
        out.append(
            '<table class="ek-tbl ek-rec">' + _REC_COLS + "<tr><th>operation</th><th>default model</th>"
            "<th>price</th><th>p95</th><th>quality (95% CI)</th><th>cases</th><th>why</th></tr>"
        )
        for op, dec in d.operations[name].items():
            if dec.status == "ok":
                who = f'<span class="ek-ok">{_esc(dec.default)}</span>'
            elif dec.status == "insufficient_evidence":
                who = '<span class="ek-warn">none yet: too little evidence</span>' + (
                    f"<br>provisional: {_esc(dec.provisional)}" if dec.provisional else ""
                )
            else:
                who = '<span class="ek-bad">no eligible model</span>'
            lo, hi = dec.quality_ci
            ci = f" ({_q(lo)}–{_q(hi)})" if lo is not None and hi is not None else ""
            named = dec.default or dec.provisional
            price = ("price unknown" if dec.cost_usd is None else format_usd(dec.cost_usd)) if named else "—"
            p95 = format_ms(dec.latency_p95_ms) if named and dec.latency_p95_ms is not None else "—"
            out.append(
                f"<tr><td>{_esc(op)}</td><td>{who}</td><td>{_esc(price)}</td>"
                f"<td style='white-space:nowrap'>{_esc(p95)}</td>"
                f"<td style='white-space:nowrap'>{_q(dec.quality)}{ci}</td>"
                f"<td>{'—' if dec.n is None else dec.n}</td><td>{_esc(dec.rationale)}</td></tr>"
            )
        out.append("</table>")
    return "".join(out)


def caveats(data: ReportData) -> list[str]:
    """What a reader must know before acting on the report (the doubtful catalogue facts themselves
    are in :func:`catalogue_facts`; the list only counts them)."""
    notes: list[str] = []
    if data.simulated:
        notes.append(
            f"{SIMULATED_NOTE}: outputs, latencies and costs come from local servers that imitate the "
            "providers' APIs. They exercise the pipeline; they do not measure the models."
        )
    if data.run.get("status") != "completed":
        notes.append(
            f"The run ended with status {data.run.get('status')!r}: some calls were not made, so some "
            "models have fewer cases than others."
        )
    if data.run.get("outputs_collected_at"):
        day = str(data.run["outputs_collected_at"])[:10]
        notes.append(
            f"The output images of this run were deleted by `evalkit gc` on {day} "
            "(retention): its calls, metrics, scores and votes are all here, but image grids show captions only."
        )
    if data.quality.source == "judge":
        notes.extend(JUDGE_CAVEATS)
    elif data.quality.source == "auto":
        notes.append(AUTO_CAVEAT.format(metric=data.quality.metric, source=data.quality.source))
    unscored = int(data.models["unscored"].sum()) if len(data.models) else 0
    if unscored:
        notes.append(
            f"{unscored} completed call(s) have no {data.quality.label} score (unscored or refused); "
            "they count for latency, cost and success but not for quality."
        )
    facts, unknown = catalogue_facts(data)
    if len(facts):
        n_price = int((facts["fact"] == "price").sum())
        notes.append(
            f"{len(facts)} catalogue fact(s) about the models in this run are below high confidence, "
            f"{n_price} of them prices: prices are list prices from the sources in the table below — "
            "check them with the provider before deciding."
        )
    if unknown:
        notes.append(f"Not in the catalogue, so their prices and limits are unverified: {', '.join(unknown)}.")
    thin = []
    for op, g in data.by_operation.groupby("operation"):
        n_cases = int(g["quality_n"].max()) if len(g) else 0
        statuses = {dec.status for ops in data.decision.operations.values() for o, dec in ops.items() if o == op}
        if n_cases < MIN_CASES_FOR_EVIDENCE or "insufficient_evidence" in statuses:
            thin.append(f"{op} ({n_cases} scored case(s))")
    if thin:
        notes.append("Too little evidence to trust a choice for: " + ", ".join(thin) + ". Add cases or repeats.")
    return notes


def catalogue_facts(data: ReportData) -> tuple[pd.DataFrame, list[str]]:
    """The catalogue facts a reader should doubt, for the models in the run: every low-confidence fact
    and every price below high confidence — columns model, fact, confidence, source, note; prices
    first, then low before medium. Also returns the run's models missing from the catalogue."""
    from evalkit.catalog import Catalog
    from evalkit.errors import CatalogError

    try:
        catalog = Catalog.load(data.ws.path)
    except CatalogError:
        catalog = None
    rows, unknown = [], []
    for model in data.run["models"]:
        if catalog is None or model not in catalog:
            unknown.append(model)
            continue
        for name, fact in sorted(catalog.get(model).facts.items()):
            if fact.confidence == "low" or (name == "price" and fact.confidence != "high"):
                rows.append(
                    {
                        "model": model,
                        "fact": name,
                        "confidence": fact.confidence,
                        "source": fact.source,
                        "note": fact.note or "",
                    }
                )
    frame = pd.DataFrame(rows, columns=["model", "fact", "confidence", "source", "note"])
    if len(frame):
        frame = (
            frame.assign(_price=frame["fact"] != "price", _low=frame["confidence"] != "low")
            .sort_values(["_price", "_low", "model", "fact"], kind="stable")
            .drop(columns=["_price", "_low"])
            .reset_index(drop=True)
        )
    return frame, unknown


def _clip(text: str, n: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"


def _facts_table(frame: pd.DataFrame) -> str:
    """A compact table of catalogue facts; long sources and notes are clipped (the full text is the
    cell's tooltip)."""
    out = [
        '<table class="ek-tbl ek-facts"><tr><th>model</th><th>fact</th><th>confidence</th>'
        "<th>source</th><th>note</th></tr>"
    ]
    for r in frame.itertuples(index=False):
        out.append(
            f"<tr><td style='white-space:nowrap'>{_esc(r.model)}</td><td>{_esc(r.fact)}</td>"
            f"<td>{_esc(r.confidence)}</td><td title='{_esc(r.source)}'>{_esc(_clip(r.source, 90))}</td>"
            f"<td title='{_esc(r.note)}'>{_esc(_clip(r.note, 110))}</td></tr>"
        )
    out.append("</table>")
    return "".join(out)


def caveats_html(data: ReportData) -> str:
    """The caveats as a list, then the doubtful catalogue facts: prices in a table, the rest in a
    collapsed <details> (works in static HTML without scripts)."""
    out = [_CSS, "<ul>" + "".join(f"<li>{_esc(n)}</li>" for n in caveats(data)) + "</ul>"]
    facts, _ = catalogue_facts(data)
    prices, others = facts[facts["fact"] == "price"], facts[facts["fact"] != "price"]
    if len(prices):
        out.append(f"<h4>Prices below high confidence ({len(prices)})</h4>{_facts_table(prices)}")
    if len(others):
        out.append(
            f"<details><summary>Other low-confidence catalogue facts ({len(others)}: "
            f"{_esc(', '.join(sorted(set(others['fact']))))})</summary>{_facts_table(others)}</details>"
        )
    return "".join(out)


#: the model table's columns in the report, with their headers; everything else (calls, failures,
#: total cost, inference latency, value notes …) is in the CSV files written beside the report
_COLUMNS = {
    "model_id": "model",
    "provider": "provider",
    "success_rate": "success",
    "mean_cost_usd": "price / edit",
    "p50_total_ms": "p50 latency",
    "p95_total_ms": "p95 latency",
    "quality": "quality",
    "quality_ci": "95% CI",
    "quality_n": "cases scored",
    "value_per_usd": "quality per $",
}
_VALUE_NOTES = {"undefined: free model (cost $0)": "— (free)", "undefined: price unknown": "— (price unknown)"}


def _ci_text(lo: Any, hi: Any) -> str:
    return "" if pd.isna(lo) or pd.isna(hi) else f"{lo:.2f}–{hi:.2f}"


def _value_text(v: Any) -> str:
    return f"{v:,.1f}" if isinstance(v, (int, float)) and not pd.isna(v) else str(v)


def styled(df: pd.DataFrame, *, group: str | None = None) -> Any:
    """A compact, formatted Styler of a model table for the page: the columns a reader needs (model,
    provider, success, price, p50/p95 latency, quality with its 95% CI, cases, quality per dollar) with
    readable headers; ``group`` first, shown once per group, when given. Rows of models that made no
    attempt (in a group: they cannot do that operation) are left out. Missing values show "—" without
    colour; an undefined quality per $ says why (free, price unknown)."""
    from evalkit.decide.tables import style_table

    rows = df[df["calls"] > 0] if "calls" in df.columns else df
    view = rows.assign(
        quality_ci=[_ci_text(lo, hi) for lo, hi in zip(rows["quality_ci_low"], rows["quality_ci_high"], strict=True)],
        value_per_usd=[
            v if not pd.isna(v) else _VALUE_NOTES.get(note, "—")
            for v, note in zip(rows["value_per_usd"], rows["value_note"], strict=True)
        ],
    )
    cols = ([group] if group else []) + [c for c in _COLUMNS if c in view.columns and c != group]
    view = view[cols].reset_index(drop=True)
    view["value_per_usd"] = view["value_per_usd"].astype(object)
    firsts = pd.Series(True, index=view.index)
    if group:
        firsts = view[group].ne(view[group].shift())
        view[group] = view[group].where(firsts, "")  # each group's name once, on its first row
    view.attrs = dict(df.attrs)
    styler = style_table(view)
    styler = styler.format(lambda v: "—" if pd.isna(v) else format_ms(v), subset=["p50_total_ms", "p95_total_ms"])
    styler = styler.format(_value_text, subset=["value_per_usd"])
    text_cols = [c for c in ([group] if group else []) + ["model_id", "provider"]]
    styler = (
        styler.hide(axis="index")
        .relabel_index([_COLUMNS.get(c, c) for c in cols], axis="columns")
        .set_properties(subset=text_cols, **{"text-align": "left", "white-space": "nowrap"})
        .set_properties(subset=["quality_ci", "quality_n"], **{"color": "#555"})
        .set_properties(subset=["quality_ci", "value_per_usd"], **{"white-space": "nowrap"})
        .set_table_styles(
            [
                {"selector": "th", "props": "text-align: center; white-space: nowrap;"},
                {"selector": "caption", "props": "caption-side: top; text-align: left; color: #555;"},
            ],
            overwrite=False,
        )
    )
    missing = [c for c in view.columns if c != group and view[c].isna().any()]
    if missing:
        styler = styler.map(lambda v: "color: #777" if pd.isna(v) else "", subset=missing)
    if group:
        starts = firsts.to_numpy()
        styler = styler.apply(
            lambda r: ["border-top: 2px solid #888" if starts[r.name] and r.name else ""] * len(r), axis=1
        )
    return styler


def figure_image(fig: Any, *, fmt: str = "png", dpi: int | None = None, alt: str | None = None) -> Any:
    """A matplotlib Figure as an IPython Image (PNG for plots, JPEG for photo grids): inlined in the
    notebook and the HTML whatever the kernel's matplotlib backend is; ``alt`` defaults to its title."""
    from IPython.display import Image

    if alt is None:
        titles = [fig.get_suptitle()] + [ax.get_title() for ax in fig.axes]
        alt = " — ".join(t.replace("\n", " ") for t in titles if t) or "figure"

    buf = io.BytesIO()
    kw: dict[str, Any] = {"format": fmt, "dpi": dpi or fig.dpi, "bbox_inches": "tight"}
    if fmt in ("jpg", "jpeg"):
        kw["pil_kwargs"] = {"quality": 80, "optimize": True}
    fig.savefig(buf, **kw)
    return Image(data=buf.getvalue(), format="jpeg" if fmt in ("jpg", "jpeg") else fmt, metadata={"alt": alt})


def grid_thumb_px(n_cells: int, base_px: int = REPORT_THUMB_PX) -> int:
    """Smaller thumbnails when a grid has more than GRID_CELL_BUDGET cells, so the HTML stays small."""
    if n_cells <= GRID_CELL_BUDGET:
        return base_px
    return max(48, int(base_px * math.sqrt(GRID_CELL_BUDGET / n_cells)))


def split_ids(text: str | Sequence[str] | None) -> list[str] | None:
    """A notebook parameter ``"a, b"`` (or a list) → ``["a", "b"]``; empty → None (no filter)."""
    if text is None:
        return None
    items = text.split(",") if isinstance(text, str) else list(text)
    out = [str(i).strip() for i in items if str(i).strip()]
    return out or None


def select_cases(
    ws: Workspace,
    run_id: str,
    *,
    categories: str | Sequence[str] | None = None,
    cases: str | Sequence[str] | None = None,
) -> pd.DataFrame:
    """The run's cases (category "(none)" when missing), filtered; unknown names raise with the known ones."""
    frame = ws.cases(run_id)
    if frame.empty:
        return pd.DataFrame(columns=["case_id", "operation", "category", "prompt"])
    frame = frame.assign(category=frame["category"].fillna("(none)"))
    for column, wanted, what in (
        ("case_id", split_ids(cases), "case"),
        ("category", split_ids(categories), "category"),
    ):
        if wanted:
            missing = sorted(set(wanted) - set(frame[column]))
            if missing:
                raise InvalidInputError(
                    f"unknown {what}(s) {missing} in run {run_id!r}",
                    hint=f"known: {', '.join(sorted(set(frame[column]))[:30])}",
                )
            frame = frame[frame[column].isin(wanted)]
    return frame


def strip_cases(ws: Workspace, run_id: str, **filters: Any) -> list[str]:
    """The first case of each category (after ``select_cases`` filters): one strip per category."""
    frame = select_cases(ws, run_id, **filters)
    return list(frame.groupby("category", sort=True).head(1).sort_values("category")["case_id"])


def category_grids(
    ws: Workspace,
    run_id: str,
    *,
    quality: QualityLike = AUTO_QUALITY,
    categories: str | Sequence[str] | None = None,
    cases: str | Sequence[str] | None = None,
    thumb_px: int | None = None,
) -> list[tuple[str, str]]:
    """One HTML comparison grid (JPEG thumbnails as data URIs) per case category: (category, html).

    Each grid has columns only for the models that ran on at least one of its cases, best mean score
    first (the source before them); a line above it counts and names the models not applicable there.
    Thumbnails shrink when the grids together have more than GRID_CELL_BUDGET cells."""
    from evalkit.report.figures import comparison_grid_html

    frame = select_cases(ws, run_id, categories=categories, cases=cases)
    if "session_id" in frame:  # a session's turns are drawn as rows of turns per model (session_grids)
        frame = frame[frame["session_id"].isna()]
    calls = ws.calls(run_id)
    ran = calls[calls["status"] != CallStatus.NOT_APPLICABLE]
    n_cells = sum(
        len(g) * (1 + ran.loc[ran["case_id"].isin(g["case_id"]), "model_id"].nunique())
        for _, g in frame.groupby("category", sort=True)
    )
    px = thumb_px or grid_thumb_px(n_cells)
    out = []
    for category, group in frame.groupby("category", sort=True):
        grid = comparison_grid_html(
            ws,
            run_id,
            cases=list(group["case_id"]),
            quality=quality,
            thumb_px=px,
            applicable_only=True,
            order_by_score=True,
        )
        out.append((str(category), f'<div style="overflow-x:auto">{grid}</div>'))
    return out


def sessions_summary_html(ws: Workspace, run_id: str, quality: QualityLike) -> str:
    """The sessions table of the report (see :func:`evalkit.report.sessions.sessions_summary_html`)."""
    from evalkit.report.sessions import sessions_summary_html as summary

    return summary(ws, run_id, quality)


def session_grids(ws: Workspace, run_id: str, *, thumb_px: int | None = None) -> list[tuple[str, str]]:
    """One HTML grid per session of the run: (session id, html), each model a row of its turns
    (original → turn 1 → … → turn k); empty for a run without sessions."""
    from evalkit.report.sessions import session_grid_html, session_ids

    return [
        (sid, f'<div style="overflow-x:auto">{session_grid_html(ws, run_id, sid, thumb_px=thumb_px or 128)}</div>')
        for sid in session_ids(ws, run_id)
    ]


def groups(table: pd.DataFrame, by: str, *, min_models: int = 2) -> list[tuple[str, pd.DataFrame]]:
    """A grouped model table split per group (attrs kept), for one Pareto plot per operation: only the
    models that made an attempt in the group; groups with fewer than ``min_models`` of them with a
    quality are left out (nothing to trade off)."""
    out = []
    for key, g in table.groupby(by, sort=True):
        g = g[g["calls"] > 0] if "calls" in g.columns else g  # the others cannot do it: not "not plotted"
        if int(g["quality"].notna().sum()) >= min_models:
            g = g.reset_index(drop=True)
            g.attrs = dict(table.attrs)
            out.append((str(key), g))
    return out


#: the semantic metrics' columns, in the order the report shows them (evalkit.scoring.semantic)
SEMANTIC_COLUMNS = ("clip_t", "clip_dir", "clip_i", "dino")


def semantic_table(ws: Workspace, run_id: str) -> pd.DataFrame:
    """Mean CLIP-T, CLIP directional, CLIP-I and DINO per model and operation (the latest semantic version),
    with the number of outputs behind them; empty when the run has no semantic scores."""
    scores = ws.scores(run_id)
    sem = scores[(scores["source"] == "auto") & scores["metric"].isin(SEMANTIC_COLUMNS)]
    sem = sem[sem["status"] == "scored"]
    if sem.empty:
        return pd.DataFrame(columns=["model_id", "operation", *SEMANTIC_COLUMNS, "n"])
    sem = sem[sem["version"] == sem["version"].iloc[-1]]
    wide = sem.pivot_table(index=["model_id", "operation"], columns="metric", values="value", aggfunc="mean")
    wide = wide.reindex(columns=list(SEMANTIC_COLUMNS))
    wide["n"] = sem.groupby(["model_id", "operation"])["call_id"].nunique()
    out = wide.reset_index().sort_values(["operation", "clip_t", "model_id"], ascending=[True, False, True])
    out.attrs["version"] = str(sem["version"].iloc[-1])
    return out.reset_index(drop=True)


def semantic_html(data: ReportData) -> str:
    """The semantic metrics table, or how to get it (``evalkit score RUN --semantic``)."""
    table = semantic_table(data.ws, data.run_id)
    if table.empty:
        return (
            "<p>No semantic metrics for this run. With the <code>evalkit[semantic]</code> extra and its models "
            "(<code>evalkit download-semantic</code>, once), <code>evalkit score RUN --semantic</code> adds "
            "CLIP-T, CLIP directional similarity, CLIP-I and DINO, computed offline on the CPU.</p>"
        )
    shown = table.copy()
    for col in SEMANTIC_COLUMNS:
        shown[col] = shown[col].map(lambda v: "—" if pd.isna(v) else f"{v:.3f}")
    note = (
        f"<p>Version <code>{html.escape(table.attrs['version'])}</code>. CLIP-T and CLIP directional "
        "similarity (higher = closer to the target caption, and changed in its direction; an unchanged output "
        "scores 0) measure the edit; CLIP-I and DINO measure how much of the source survives, which the "
        "do-nothing baseline wins. — means the case gives no caption.</p>"
    )
    return note + shown.to_html(index=False, classes="ek-tbl", border=0, escape=True)


def failures_html(data: ReportData) -> str:
    """Failures per model and error category, or a sentence when there were none."""
    if data.failures.empty:
        return "<p>No call failed.</p>"
    view = data.failures.assign(share_of_calls=data.failures["share_of_calls"].map(lambda v: f"{v:.0%}"))
    return view.to_html(index=False, classes="ek-tbl", border=0, escape=True)


__all__ = [
    "AUTO_CAVEAT",
    "AUTO_QUALITY",
    "GRID_CELL_BUDGET",
    "JUDGE_CAVEATS",
    "JUDGE_QUALITY",
    "MIN_CASES_FOR_EVIDENCE",
    "REPORT_THUMB_PX",
    "ReportData",
    "prepare_report",
    "choose_quality",
    "parse_quality",
    "quality_string",
    "run_overview",
    "header_html",
    "overview_html",
    "glance_html",
    "recommendations_html",
    "caveats",
    "caveats_html",
    "catalogue_facts",
    "styled",
    "figure_image",
    "category_grids",
    "session_grids",
    "sessions_summary_html",
    "select_cases",
    "strip_cases",
    "split_ids",
    "groups",
    "failures_html",
    "grid_thumb_px",
    "semantic_table",
    "semantic_html",
]


def trust_html(data: ReportData) -> str:
    """ "How far to trust the quality column": judge, preset, prompt version, unscored reasons, agreement
    with the run's human scores (with intervals), swap consistency and warnings (:mod:`evalkit.report.trust`)."""
    from evalkit.report.trust import quality_trust_html

    return quality_trust_html(data.ws, data.run_id, data.quality, simulated=data.simulated)
