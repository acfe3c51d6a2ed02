"""Session grids: each session of a run as rows of turns per model (original → turn 1 → … → turn k).

A row is one model's chain of edits on one session (its first repeat): the original image, then each turn's
output, which is the next turn's input. A turn that failed is a red cell with its error category; the turns
after it are grey *not reached* cells with the reason. A simulated run carries the SIMULATED banner, as every
other figure does. The HTML is self-contained (JPEG thumbnails as data URIs), for the report and notebooks.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

import pandas as pd

from evalkit.decide.quality import QualityLike
from evalkit.decide.tables import SIMULATED_NOTE, format_usd, run_is_simulated
from evalkit.errors import InvalidInputError
from evalkit.report.figures import _HTML_CSS, THUMB_QUALITY, cached_thumbnail
from evalkit.store import CallStatus, Workspace


def session_ids(ws: Workspace, run_id: str) -> list[str]:
    """The run's sessions, in suite order."""
    cases = ws.cases(run_id)
    if cases.empty or "session_id" not in cases:
        return []
    return list(dict.fromkeys(cases["session_id"].dropna()))


def session_grid_html(
    ws: Workspace,
    run_id: str,
    session_id: str,
    *,
    models: list[str] | None = None,
    thumb_px: int = 160,
    repeat: int = 0,
) -> str:
    """One session as a table: a row per model, a column per turn after the original (see the module doc)."""
    if thumb_px < 32 or thumb_px > 1024:
        raise InvalidInputError(f"thumb_px must be between 32 and 1024, got {thumb_px}")
    cases = ws.cases(run_id)
    turns = cases[cases.get("session_id", pd.Series(dtype=object)) == session_id].sort_values("turn")
    if turns.empty:
        known = ", ".join(session_ids(ws, run_id)) or "none"
        raise InvalidInputError(f"run {run_id!r} has no session {session_id!r}", hint=f"sessions: {known}")
    calls = ws.calls(run_id)
    calls = calls[(calls["session_id"] == session_id) & (calls["repeat"] == repeat)]
    ran = calls[calls["status"] != CallStatus.NOT_APPLICABLE]
    model_list = models or list(dict.fromkeys(ran["model_id"]))
    by_key = {(r.model_id, int(r.turn)): r for r in calls.itertuples()}
    esc = html.escape

    def img(path: str, alt: str) -> str:
        data = base64.b64encode(cached_thumbnail(path, thumb_px, THUMB_QUALITY)).decode("ascii")
        return f'<img alt="{esc(alt)}" src="data:image/jpeg;base64,{data}">'

    out = [f"<style>{_HTML_CSS % {'px': thumb_px, 'src': max(thumb_px, 170)}}</style>"]
    if run_is_simulated(ws, run_id, calls):
        out.append(f'<div class="evalkit-sim">{esc(SIMULATED_NOTE)}</div>')
    skipped = sorted(set(calls["model_id"]) - set(model_list))
    if skipped:
        out.append(f'<p class="evalkit-na">Not applicable to this session: {esc(", ".join(skipped))}.</p>')
    out.append(
        f'<table class="evalkit-grid evalkit-session" data-run="{esc(run_id)}" data-session="{esc(session_id)}">'
    )
    out.append("<thead><tr><th>model</th><th>original</th>")
    for t in turns.itertuples():
        out.append(f"<th>turn {int(t.turn)}<br><span class='cap'>{esc(str(t.prompt or t.operation))}</span></th>")
    out.append("</tr></thead><tbody>")
    first = turns.iloc[0]
    original = ws.find_blob(first["input_sha256"][0]) if first["input_sha256"] else None
    for model_id in model_list:
        box = img(str(original), f"original of {session_id}") if original and Path(original).exists() else "—"
        out.append(
            f'<tr><th style="vertical-align:middle">{esc(model_id)}</th>'
            f'<td class="cell source"><div class="box">{box}</div></td>'
        )
        for t in turns.itertuples():
            r = by_key.get((model_id, int(t.turn)))
            if r is None:
                out.append('<td class="cell missing"><div class="box">—</div></td>')
                continue
            if r.status == CallStatus.COMPLETED and isinstance(r.output_path, str) and Path(r.output_path).exists():
                cost = f"${r.cost_usd:.3f}" if pd.notna(r.cost_usd) else "$?"
                secs = f"{r.total_ms / 1000:.1f} s" if pd.notna(r.total_ms) else ""
                inner, css, title, cap = img(r.output_path, f"{model_id} turn {t.turn}"), "ok", "", f"{cost} · {secs}"
            elif r.status == CallStatus.FAILED:
                inner, css = f"failed<br>{esc(str(r.error_category or ''))}", "failed"
                title, cap = str(r.error_message or ""), "turn failed"
            elif r.status == CallStatus.NOT_REACHED:
                inner, css, title, cap = "not reached", "na", str(r.reason or ""), ""
            else:
                inner, css, title, cap = esc(str(r.status)), "not_run", str(r.reason or ""), ""
            out.append(
                f'<td class="cell {css}" data-call="{esc(r.call_id)}" title="{esc(title)}">'
                f'<div class="box">{inner}</div><div class="cap">{esc(cap)}</div></td>'
            )
        out.append("</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def sessions_summary_html(ws: Workspace, run_id: str, quality: QualityLike) -> str:
    """Per model over the run's sessions: sessions completed, final-turn and mean turn quality, drift from the
    original after the last turn, cost and p50 latency per session, then quality by turn. Empty without
    sessions."""
    from evalkit.decide.sessions import quality_by_turn, session_model_table

    if not session_ids(ws, run_id):
        return ""
    table = session_model_table(ws, run_id, quality=quality)
    by_turn = quality_by_turn(ws, run_id, quality)
    esc = html.escape

    def num(v: object, fmt: str = "{:.3f}") -> str:
        return "—" if v is None or pd.isna(v) else fmt.format(v)

    metric = (table.attrs.get("quality") or {}).get("metric", "quality")
    out = []
    if run_is_simulated(ws, run_id):
        out.append(f'<div class="evalkit-sim">{esc(SIMULATED_NOTE)}</div>')
    turns = list(by_turn.columns)
    head = ["model", "sessions done", f"final {metric}", f"mean turn {metric}", "drift ssim", "$ / session"]
    head += ["p50 s / session"] + [f"turn {t}" for t in turns]
    out.append('<table class="evalkit-sessions"><thead><tr>' + "".join(f"<th>{esc(h)}</th>" for h in head))
    out.append("</tr></thead><tbody>")
    for r in table.itertuples():
        cells = [
            esc(str(r.model_id)),
            f"{r.completed}/{r.calls}",
            num(r.quality),
            num(r.mean_turn_quality),
            num(r.drift_ssim),
            format_usd(r.mean_cost_usd),
            num(r.p50_total_ms / 1000 if pd.notna(r.p50_total_ms) else None, "{:.1f}"),
        ]
        cells += [num(by_turn.loc[r.model_id, t]) if r.model_id in by_turn.index else "—" for t in turns]
        out.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    out.append("</tbody></table>")
    out.append(
        '<p class="evalkit-na">A session counts as done when every turn completed; final = its last turn\'s '
        f"{esc(metric)}; drift ssim = the last output against the session's original image (1 = unchanged); "
        "turn k = the mean over the models' turn-k outputs, each against its own input.</p>"
    )
    return "".join(out)
