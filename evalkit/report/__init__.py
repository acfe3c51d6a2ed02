"""Report: what a person looks at — figures, widgets, the report's sections, and building the HTML.

* :mod:`evalkit.report.figures` — matplotlib grids and plots (comparison grids, Pareto, cost–quality);
* :mod:`evalkit.report.widgets` — the ipywidgets Explorer and Rater for JupyterLab;
* :mod:`evalkit.report.sections` — the sections the report notebook calls as ``report.<name>``;
* :mod:`evalkit.report.build` — papermill → nbconvert HTML, tier_defaults.json and CSV tables;
* :mod:`evalkit.report.history` — a suite's runs as a series (small multiples; the report's history section).

Notebooks use ``from evalkit import report`` and call the names below.
"""

from __future__ import annotations

from evalkit.report import figures
from evalkit.report.build import (
    ReportResult,
    build_report,
    execute_notebook,
    export_html,
    external_references,
    write_tables,
)
from evalkit.report.history import history_section
from evalkit.report.sections import (
    AUTO_CAVEAT,
    AUTO_QUALITY,
    GRID_CELL_BUDGET,
    JUDGE_CAVEATS,
    JUDGE_QUALITY,
    MIN_CASES_FOR_EVIDENCE,
    REPORT_THUMB_PX,
    ReportData,
    catalogue_facts,
    category_grids,
    caveats,
    caveats_html,
    choose_quality,
    failures_html,
    figure_image,
    glance_html,
    grid_thumb_px,
    groups,
    header_html,
    overview_html,
    parse_quality,
    prepare_report,
    quality_string,
    recommendations_html,
    run_overview,
    select_cases,
    semantic_html,
    semantic_table,
    session_grids,
    sessions_summary_html,
    split_ids,
    strip_cases,
    styled,
    trust_html,
)

__all__ = [
    "history_section",
    "AUTO_CAVEAT",
    "AUTO_QUALITY",
    "GRID_CELL_BUDGET",
    "JUDGE_CAVEATS",
    "JUDGE_QUALITY",
    "MIN_CASES_FOR_EVIDENCE",
    "REPORT_THUMB_PX",
    "ReportData",
    "ReportResult",
    "build_report",
    "catalogue_facts",
    "category_grids",
    "caveats",
    "caveats_html",
    "choose_quality",
    "execute_notebook",
    "export_html",
    "external_references",
    "failures_html",
    "figure_image",
    "figures",
    "glance_html",
    "grid_thumb_px",
    "groups",
    "semantic_html",
    "semantic_table",
    "header_html",
    "overview_html",
    "parse_quality",
    "prepare_report",
    "quality_string",
    "recommendations_html",
    "run_overview",
    "select_cases",
    "session_grids",
    "sessions_summary_html",
    "split_ids",
    "strip_cases",
    "styled",
    "trust_html",
    "write_tables",
]
