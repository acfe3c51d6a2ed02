"""The report's "How far to trust the quality column" section.

Which judge made the quality column (preset, model, prompt version, image encoding), what it left
unscored and why, its own noise (the spread between repeated passes over the same output, overall and
per operation), how far it agrees with the run's human scores (Rater scoring mode) overall and per
operation with bootstrap intervals, what the literature reports for that judge, the swap consistency of
pairwise judging, and plain warnings: agreement below the literature, too few human ratings, position bias.
"""

from __future__ import annotations

import html
import json
from typing import Any

from evalkit.decide.tables import SIMULATED_NOTE, QualitySpec
from evalkit.scoring.agreement import RunAgreement, run_agreement
from evalkit.scoring.judge.noise import DISAGREE_POINTS, JudgeNoise, judge_noise
from evalkit.scoring.judge.presets import JUDGE_PRESETS
from evalkit.store import Workspace

#: bootstrap resamples for the report's intervals (over cases)
REPORT_N_BOOT = 500


def _esc(x: Any) -> str:
    return html.escape(str(x))


def quality_trust(ws: Workspace, run_id: str, quality: QualitySpec, *, n_boot: int = REPORT_N_BOOT) -> RunAgreement:
    """:func:`evalkit.scoring.agreement.run_agreement` for the report's quality metric (the judge's
    ``viescore_o`` when the quality column is not a judge metric)."""
    metric = quality.metric if quality.source == "judge" else "viescore_o"
    version = quality.version if quality.source == "judge" else None
    return run_agreement(ws, run_id, metric=metric, version=version or None, n_boot=n_boot)


def quality_trust_html(
    ws: Workspace, run_id: str, quality: QualitySpec, *, simulated: bool = False, n_boot: int = REPORT_N_BOOT
) -> str:
    res = quality_trust(ws, run_id, quality, n_boot=n_boot)
    out: list[str] = []
    warnings = list(res.warnings)
    if quality.source != "judge":
        warnings.insert(
            0,
            f"the quality column is {quality.metric} ({quality.source}), not a judge: nothing below measures how "
            "far it agrees with people",
        )
    if simulated:
        warnings.insert(
            0, f"{SIMULATED_NOTE}: the judge is a local simulator; its agreement with people measures nothing"
        )
    preset = JUDGE_PRESETS.get(res.preset) if res.preset else None
    parts = res.version.split("|") if res.version else []
    rows = [
        ("judge preset", f"{preset.name} — {preset.title}" if preset else "none (custom judge settings)"),
        ("judge version", res.version or "no judge scores in this run"),
        ("judge model", parts[0] if len(parts) > 1 else "—"),
        ("prompt version", res.prompt_version or "—"),
        ("image encoding", parts[2] if len(parts) > 2 else "—"),
        ("scored outputs", f"{res.judge_scored} ({res.metric})"),
        (
            "unscored outputs",
            f"{sum(res.unscored.values())}"
            + (" — " + ", ".join(f"{k}: {v}" for k, v in sorted(res.unscored.items())) if res.unscored else ""),
        ),
        ("human scores", str(res.human_ratings)),
    ]
    if res.version:
        rows.append(("SC judged against", _instruction_sources(ws, run_id, res.version)))
    noise = judge_noise(ws, run_id, res.version) if res.version else None
    metric = res.metric
    if noise is not None and noise.passes >= 2:
        rows.append(("judge passes", f"{noise.passes} per output (the score is the mean of the valid passes)"))
        fig = noise.by_metric.get(metric)
        rows.append(("judge noise", f"{metric}: " + (fig.describe() if fig else "no valid passes")))
    else:
        rows.append(
            (
                "judge noise",
                "not measured: one pass per output (`evalkit score RUN --judge --judge-passes 3` measures it)",
            )
        )
    if preset is not None:
        exp = preset.expected
        figure = f"instance Spearman ≈ {exp.instance_spearman:.3f}" if exp.instance_spearman is not None else "none"
        rows.append(("literature", f"{figure}: {exp.summary} ({exp.source})"))
    if res.other_versions:
        rows.append(("other judge versions in this run", ", ".join(res.other_versions)))
    # JupyterLab's CSS right-aligns output table cells (`:not(.jp-RenderedMarkdown).jp-RenderedHTMLCommon td`);
    # these hold words, whose long lines read badly pushed to the right: a more specific rule wins
    out.append(
        "<style>.jp-RenderedHTMLCommon table.evalkit-trust td, .jp-RenderedHTMLCommon table.evalkit-trust th, "
        "table.evalkit-trust td, table.evalkit-trust th {text-align: left}</style>"
    )
    out.append(
        '<table class="evalkit-trust">'
        + "".join(f"<tr><th style='text-align:left'>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in rows)
        + "</table>"
    )
    if noise is not None and noise.passes >= 2:
        out.append(_noise_table(noise, metric))
    if res.overall is not None:
        head = (
            "<tr><th>scope</th><th>outputs</th><th>instance Spearman</th><th>instance Kendall</th>"
            "<th>model Spearman</th><th>model Kendall</th><th>human–human Spearman</th><th>Krippendorff α</th></tr>"
        )
        body = []
        for scope, a in [("all operations", res.overall), *sorted(res.by_operation.items())]:
            cells = [
                a.instance_spearman,
                a.instance_kendall,
                a.model_spearman,
                a.model_kendall,
                a.inter_rater_spearman,
                a.krippendorff_alpha,
            ]
            body.append(
                f"<tr><td>{_esc(scope)}</td><td>{a.n_outputs}</td>"
                + "".join(f"<td>{_esc(c)}</td>" for c in cells)
                + "</tr>"
            )
        out.append(
            "<h4>Agreement with the run's human scores</h4>"
            f"<p><small>value [95% bootstrap interval over cases, {res.overall.n_boot} resamples]; instance = the "
            "judge's score against the mean human score per output; model = per-model means</small></p>"
            f'<table class="evalkit-trust">{head}{"".join(body)}</table>'
        )
    if res.swap:
        out.append(
            "<h4>Position bias (pairs asked in both orders; a flip counts as a tie)</h4><ul>"
            + "".join(
                f"<li>{_esc(s['rater'])}: {s['consistent']} of {s['pairs_checked']} kept their verdict "
                f"({s['rate']:.0%}) — {_esc(s['version'])}</li>"
                for s in res.swap
            )
            + "</ul>"
        )
    if warnings:
        out.append(
            '<div style="border-left:4px solid #b00000;padding:4px 10px;margin:6px 0">'
            + "".join(f"<p><b>Warning:</b> {_esc(w)}</p>" for w in warnings)
            + "</div>"
        )
    return "".join(out)


def _instruction_sources(ws: Workspace, run_id: str, version: str) -> str:
    """Per operation, what VIEScore SC judged the outputs against (:func:`evalkit.scoring.judge.prompts.
    sc_instruction`): the case's prompt, the operation's fixed instruction, or nothing (PQ only)."""
    scores = ws.scores(run_id)
    sc = scores[(scores["metric"] == "viescore_sc") & (scores["source"] == "judge") & (scores["version"] == version)]
    if sc.empty:
        return "—"
    parts = []
    for op, g in sc.groupby("operation", sort=True):
        kinds: dict[str, int] = {}
        for status, reason, detail in zip(g["status"], g["reason"], g["detail"], strict=True):
            if reason == "no_instruction":
                kind = "no instruction: PQ only"
            else:
                try:
                    src = json.loads(detail).get("instruction_source") if isinstance(detail, str) else None
                except ValueError:
                    src = None
                kind = {"case": "the case's prompt", "operation": "the operation's fixed instruction"}.get(
                    src or "", "the case's prompt" if status == "scored" else "unscored"
                )
            kinds[kind] = kinds.get(kind, 0) + 1
        parts.append(f"{op}: " + ", ".join(f"{k} ({n})" for k, n in sorted(kinds.items())))
    return "; ".join(parts)


def _noise_table(noise: JudgeNoise, metric: str) -> str:
    """The judge's spread between passes per operation, for the quality metric and its parts."""
    metrics = [m for m in (metric, "viescore_sc", "viescore_pq") if m in noise.by_operation]
    metrics = list(dict.fromkeys(metrics))
    ops = sorted({op for m in metrics for op in noise.by_operation[m]})
    if not ops:
        return ""
    head = (
        "<tr><th>operation</th>"
        + "".join(f"<th>{_esc(m)}: median SD (outputs)</th>" for m in metrics)
        + (f"<th>{_esc(metric)}: passes ≥ {DISAGREE_POINTS:g} points apart</th></tr>")
    )
    body = []
    for op in ops:
        cells = []
        for m in metrics:
            fig = noise.by_operation[m].get(op)
            cells.append("—" if fig is None or fig.median_sd is None else f"{fig.median_sd:.3g} ({fig.outputs})")
        fig = noise.by_operation.get(metric, {}).get(op)
        share = "—" if fig is None or fig.share_disagree is None else f"{fig.share_disagree:.0%}"
        body.append(
            f"<tr><td>{_esc(op)}</td>" + "".join(f"<td>{_esc(c)}</td>" for c in cells) + f"<td>{share}</td></tr>"
        )
    return (
        f"<h4>The judge's own noise ({noise.passes} passes per output)</h4>"
        "<p><small>median over outputs of the standard deviation between an output's valid passes; the tier "
        "rule prefers a cheaper model when the best's advantage on an operation is below this figure</small></p>"
        f'<table class="evalkit-trust">{head}{"".join(body)}</table>'
    )


__all__ = ["REPORT_N_BOOT", "quality_trust", "quality_trust_html"]
