"""The `evalkit` command line: thin wrappers over the library (every command calls a public function).

Errors from evalkit are printed as one line plus a hint, with exit status 2; Ctrl-C exits with 130
after the run has stopped cleanly.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from evalkit.errors import EvalkitError

app = typer.Typer(
    name="evalkit",
    help="Pick a default hosted image-editing model per price tier: run the same edits across every model, "
    "log latency and cost, score, and report.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _width() -> int:
    import shutil

    return max(100, shutil.get_terminal_size((160, 40)).columns)


# soft_wrap: a long path or id printed as text is never broken mid-word (tables still fit the width)
out = Console(width=_width(), soft_wrap=True)
err = Console(stderr=True, width=_width(), soft_wrap=True)

WorkspaceOpt = Annotated[
    Path | None,
    typer.Option("--workspace", "-w", help="workspace directory (default: $EVALKIT_WORKSPACE or ./evalkit-workspace)"),
]


def _fail(exc: EvalkitError) -> None:
    # the texts may contain brackets (paths, ids): escape them so rich prints them verbatim
    err.print(f"[bold red]error:[/] {escape(exc.message)}", highlight=False, markup=True, soft_wrap=True)
    if exc.hint:
        err.print(f"  [dim]→ {escape(exc.hint)}[/]", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def _table(df, title: str | None = None, money: tuple[str, ...] = ()) -> Table:
    """A rich table of a DataFrame; ``money`` columns print as dollars."""
    t = Table(title=title, show_lines=False, header_style="bold")
    for col in df.columns:
        t.add_column(str(col), justify="right" if df[col].dtype.kind in "if" else "left")
    for _, row in df.iterrows():
        cells = []
        for col in df.columns:
            v = row[col]
            if v is None or (isinstance(v, float) and v != v):
                cells.append("—")
            elif col in money and isinstance(v, (int, float)):
                cells.append(f"${v:,.4f}")
            elif isinstance(v, float):
                cells.append(f"{v:,.1f}" if abs(v) >= 100 else f"{v:.3g}" if abs(v) >= 1 else f"{v:.3f}")
            else:
                cells.append(str(v))
        t.add_row(*(escape(c) for c in cells))
    return t


# ---- catalogue and suites ------------------------------------------------------------------------


@app.command()
def models(
    as_json: Annotated[bool, typer.Option("--json", help="print JSON (every fact, with sources)")] = False,
    provider: Annotated[str | None, typer.Option(help="only this provider")] = None,
    operation: Annotated[str | None, typer.Option(help="only models supporting this operation")] = None,
    workspace: WorkspaceOpt = None,
) -> None:
    """List the catalogue: id, provider, endpoint, price rule and a 1024×1024 price, limits, operations."""
    from evalkit.catalog import Catalog

    try:
        cat = Catalog.load(workspace)
        specs = [
            m
            for m in cat
            if (provider is None or m.provider == provider) and (operation is None or m.supports(operation))
        ]
    except EvalkitError as exc:
        _fail(exc)
    if as_json:
        typer.echo(json.dumps([m.summary() for m in specs], indent=2, default=str))
        return
    t = Table(title=f"{len(specs)} models", header_style="bold")
    for col in ("id", "provider", "endpoint", "price (1024²)", "price rule", "inputs", "size", "operations"):
        t.add_column(col, overflow="fold")
    for m in specs:
        p = m.price_for_1024()
        size = {
            "wh": f"{m.size.min_px}–{m.size.max_px} px/side",
            "aspect_ratio": "aspect ratio" + (f" + {'/'.join(m.size.resolutions)}" if m.size.resolutions else ""),
            "enum": "/".join(m.size.values),
            "none": "follows input",
        }[m.size.kind]
        low = " [yellow]*[/]" if any(f.confidence == "low" for f in m.facts.values()) else ""
        t.add_row(
            m.id + low,
            m.provider,
            m.endpoint,
            "unknown" if p is None else f"${p:.3f}",
            m.price.describe(),
            f"{m.inputs.param} ≤{m.inputs.max_images}" + (" +mask" if m.mask else ""),
            size,
            ", ".join(m.operations),
        )
    out.print(t)
    out.print(
        "[yellow]*[/] has low-confidence facts (price, limits…): `evalkit models --json` shows each fact's source"
    )


@app.command()
def suites(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List the edit-case suites evalkit can find (bundled, and $EVALKIT_SUITES_PATH)."""
    from evalkit.suites import list_suites

    try:
        infos = list_suites()
    except EvalkitError as exc:
        _fail(exc)
    if as_json:
        typer.echo(
            json.dumps([vars(i) if not hasattr(i, "_asdict") else i._asdict() for i in infos], indent=2, default=str)
        )
        return
    t = Table(header_style="bold")
    for col in ("name", "cases", "operations", "languages", "path"):
        t.add_column(col, overflow="fold")
    for i in infos:
        t.add_row(i.name, str(i.n_cases), ", ".join(i.operations), ", ".join(i.languages), str(i.path))
    out.print(t)


# ---- runs ----------------------------------------------------------------------------------------


@app.command("run")
def run_cmd(
    suite: Annotated[str | None, typer.Option("--suite", "-s", help="suite name or path")] = None,
    models: Annotated[
        str, typer.Option("--models", "-m", help="'all', 'provider:NAME' or comma-separated ids")
    ] = "all",
    repeats: Annotated[int, typer.Option(min=1, help="samples per (case, model); a distinct seed each")] = 1,
    concurrency: Annotated[int, typer.Option(min=1, help="calls in flight at once, across providers")] = 16,
    budget: Annotated[float | None, typer.Option(min=0, help="hard cap in USD for this run")] = None,
    workspace: WorkspaceOpt = None,
    run_id: Annotated[str | None, typer.Option("--run-id", help="name the run (re-using a name resumes it)")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="continue RUN_ID: poll accepted jobs, run the rest")] = False,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="do not reuse identical completed requests")] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="print the plan and its cost estimate; spend nothing")
    ] = False,
    provider_limit: Annotated[
        str | None, typer.Option(help="per-provider limits, e.g. wavespeed=100/500 (concurrent/images per min)")
    ] = None,
    resubmit_unknown: Annotated[
        bool, typer.Option(help="re-send calls whose submit outcome is unknown (may pay twice)")
    ] = False,
    retry_failed: Annotated[
        bool, typer.Option(help="on resume, retry calls that failed with a transient error")
    ] = False,
    sync_mode: Annotated[
        bool,
        typer.Option(
            "--sync-mode",
            help="WaveSpeed: wait on the submit itself instead of polling, for models whose endpoint supports it "
            "(a dropped connection is settled from the prediction history, never paid twice)",
        ),
    ] = False,
    settle_wait: Annotated[
        float,
        typer.Option(
            "--settle-wait",
            min=0,
            help="seconds to wait for the provider's history to settle unknown submits (at the end of the run and "
            "on --resume); 0 settles only what the history already can",
        ),
    ] = 0.0,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON summary object")] = False,
    resume_id: Annotated[str | None, typer.Argument(help="run id to resume (same as --run-id X --resume)")] = None,
) -> None:
    """Run a suite across models: latency, cost and output of every call, resumable and budget-capped."""
    from evalkit.engine import parse_provider_limits, run

    if resume_id:
        run_id, resume = resume_id, True
    try:
        result = run(
            suite,
            models,
            repeats=repeats,
            concurrency=concurrency,
            budget_usd=budget,
            workspace=workspace,
            run_id=run_id,
            resume=resume,
            no_cache=no_cache,
            dry_run=dry_run,
            provider_limits=parse_provider_limits(provider_limit),
            progress=not as_json,
            resubmit_unknown=resubmit_unknown,
            retry_failed=retry_failed,
            provider_options={"wavespeed": {"sync_mode": True}} if sync_mode else None,
            settle_wait_s=settle_wait,
        )
    except EvalkitError as exc:
        _fail(exc)
    if dry_run:
        if as_json:
            typer.echo(
                json.dumps(
                    {
                        "dry_run": True,
                        "planned": result.planned,
                        "not_applicable": result.not_applicable,
                        "estimate": result.estimate.to_dict(orient="records"),
                    },
                    default=float,
                )
            )
        else:
            out.print(_table(result.estimate, "Plan (nothing was spent)", money=("list_price_usd", "max_usd")))
            out.print(f"{result.planned} calls; {result.not_applicable} (case, model) pairs not applicable.")
        return
    if as_json:
        typer.echo(
            json.dumps(
                {
                    k: result.to_dict()[k]
                    for k in (
                        "run_id",
                        "planned",
                        "completed",
                        "failed",
                        "skipped",
                        "not_applicable",
                        "unknown",
                        "pending",
                        "cached",
                        "cost_usd",
                        "wall_s",
                        "stop_reason",
                        "simulated",
                        "reconciled",
                        "unknown_max_usd",
                    )
                }
            )
        )
    else:
        _print_run_summary(result)
    if result.stop_reason == "interrupted":
        raise typer.Exit(130)
    if result.completed == 0 and (result.failed or result.unknown):
        raise typer.Exit(1)  # nothing worked (wrong base URL? expired key?): let cron and CI notice


def _print_run_summary(r) -> None:
    sim = " [yellow](SIMULATED: local server outputs, not model outputs)[/]" if r.simulated else ""
    out.print(f"[bold]run {r.run_id}[/]{sim}")
    out.print(
        f"  {r.completed} completed ({r.cached} from cache), {r.failed} failed, {r.unknown} unknown, "
        f"{r.pending} still running, {r.skipped} not run, {r.not_applicable} not applicable — "
        f"${r.cost_usd:.4f} in {r.wall_s:.1f} s"
    )
    if r.failures_by_category:
        out.print("  failures: " + ", ".join(f"{k} {v}" for k, v in r.failures_by_category.items()))
    if r.reconciled:
        out.print(
            f"  reconciled from the provider's history: {r.reconciled.get('matched', 0)} collected (accepted earlier), "
            f"{r.reconciled.get('resubmit', 0)} sent again (proven not accepted), "
            f"{r.reconciled.get('unknown', 0)} still unknown"
        )
    if r.unknown:
        out.print(
            f"  [yellow]{r.unknown} unknown[/] — may have cost up to ${r.unknown_max_usd:.4f} more; "
            f"`evalkit reconcile {r.run_id}` settles them from the provider's history"
        )
    if r.stop_reason or r.pending or r.skipped:
        why = f"stopped: {r.stop_reason}" if r.stop_reason else "unfinished"
        out.print(
            f"  [yellow]{why}[/] — `evalkit run --resume {r.run_id}` continues it (accepted jobs are polled, never re-sent)"
        )
    out.print(f"  workspace: {r.workspace}")


@app.command("reconcile")
def reconcile_cmd(
    run_id: Annotated[str, typer.Argument(help="the run whose unknown submits to settle")],
    workspace: WorkspaceOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Settle a run's `unknown` submits from the provider's prediction history (WaveSpeed keeps 7 days).

    A listed prediction with the body evalkit sent → the call takes it (`--resume` collects it; nothing is
    re-sent); none listed over the whole window → proven unaccepted (`--resume` sends it); anything
    ambiguous stays unknown with the reason."""
    import asyncio

    from evalkit.engine.settle import areconcile_run

    try:
        report = asyncio.run(areconcile_run(run_id, workspace=workspace, wait_for_settle_s=90.0))
    except EvalkitError as exc:
        _fail(exc)
    summary = report.as_dict()
    if as_json:
        typer.echo(json.dumps({"run_id": run_id, **summary}))
        return
    out.print(
        f"run {run_id}: {summary['matched']} matched to an accepted prediction, {summary['resubmit']} proven not "
        f"accepted, {summary['unknown']} still unknown"
        + (f", {summary['skipped']} not reconcilable (provider keeps no history)" if summary["skipped"] else "")
    )
    for reason in summary["reasons"]:
        out.print(f"  unknown: {reason}")
    if summary["matched"] or summary["resubmit"]:
        out.print(f"  `evalkit run --resume {run_id}` collects the matched jobs and sends the proven-unaccepted ones")


@app.command()
def runs(workspace: WorkspaceOpt = None, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List the runs in a workspace."""
    from evalkit.store import Workspace

    try:
        df = Workspace(workspace).runs()
    except EvalkitError as exc:
        _fail(exc)
    if as_json:
        typer.echo(df.to_json(orient="records"))
    elif df.empty:
        out.print("no runs yet — `evalkit run --suite smoke --dry-run` shows a plan")
    else:
        out.print(_table(df, money=("budget_usd", "cost_usd", "unknown_max_usd")))
        if int(df["unknown"].sum()):
            out.print(
                "[yellow]unknown[/]: submits whose acceptance is not known (not sent again); unknown_max_usd is the "
                "most they may have cost. `evalkit reconcile RUN_ID` settles them from the provider's history."
            )


@app.command()
def export(
    run_id: str,
    fmt: Annotated[str, typer.Option("--format", "-f", help="csv | parquet | jsonl")] = "csv",
    output: Annotated[
        Path | None, typer.Option("--out", "-o", help="file to write (default: <run>-calls.<ext>)")
    ] = None,
    workspace: WorkspaceOpt = None,
) -> None:
    """Export a run's calls (one row per call) as CSV, Parquet or JSON Lines."""
    from evalkit.store.export import export_calls

    try:
        path = export_calls(run_id, fmt, output, workspace=workspace)
    except EvalkitError as exc:
        _fail(exc)
    out.print(f"wrote {path}")


# ---- scoring and deciding ------------------------------------------------------------------------


@app.command()
def score(
    run_id: str,
    auto: Annotated[bool, typer.Option("--auto/--no-auto", help="automatic image metrics (offline)")] = True,
    judge: Annotated[
        bool, typer.Option("--judge", help="VIEScore by the VLM judge (EVALKIT_JUDGE_* env vars)")
    ] = False,
    pairwise: Annotated[bool, typer.Option("--pairwise", help="pairwise judge votes → Bradley–Terry rankings")] = False,
    budget: Annotated[float | None, typer.Option(min=0, help="cap in USD for judge requests")] = None,
    concurrency: Annotated[int, typer.Option(min=1, help="judge requests in flight")] = 4,
    pairs_per_case: Annotated[
        int | None, typer.Option(min=1, help="pairwise: pairs judged per case (default all)")
    ] = None,
    workspace: WorkspaceOpt = None,
) -> None:
    """Score a run's outputs: automatic metrics, a pinned VLM judge, pairwise votes."""
    from evalkit.scoring import score_run

    try:
        summary = score_run(
            workspace,
            run_id,
            auto=auto,
            judge=judge,
            pairwise=pairwise,
            budget_usd=budget,
            concurrency=concurrency,
            pairs_per_case=pairs_per_case,
        )
    except EvalkitError as exc:
        _fail(exc)
    out.print(str(summary))
    if pairwise:
        from evalkit.scoring import rankings
        from evalkit.store import Workspace

        table = rankings(Workspace(workspace, create=False), run_id)
        if not table.empty:
            out.print(
                _table(
                    table[["model", "elo", "elo_ci_low", "elo_ci_high", "rank", "n_comparisons"]],
                    "Bradley–Terry (judge votes)",
                )
            )


@app.command()
def tiers(
    run_id: str,
    tiers_file: Annotated[
        Path | None,
        typer.Option("--tiers", help="tier definitions (TOML); default: workspace tiers.toml, else bundled"),
    ] = None,
    quality: Annotated[
        str | None, typer.Option(help="quality metric as METRIC:SOURCE, e.g. viescore_o:judge or ssim:auto")
    ] = None,
    output: Annotated[Path | None, typer.Option("--out", "-o", help="where to write tier_defaults.json")] = None,
    workspace: WorkspaceOpt = None,
) -> None:
    """Choose a default model per price tier and operation; write tier_defaults.json."""
    from evalkit.decide.quality import choose_quality
    from evalkit.decide.tiers import choose_defaults, write_tier_defaults
    from evalkit.store import Workspace

    try:
        ws = Workspace(workspace, create=False)
        decision = choose_defaults(ws, run_id, tiers_file, quality=quality or choose_quality(ws, run_id)[0])
        path = write_tier_defaults(decision, output or Path("reports") / run_id / "tier_defaults.json")
    except EvalkitError as exc:
        _fail(exc)
    frame = decision.to_frame()
    frame["rationale"] = frame["rationale"].map(lambda r: r if not isinstance(r, str) or len(r) <= 90 else r[:89] + "…")
    out.print(
        _table(
            frame,
            money=("cost_usd",),
            title=f"Tier defaults for run {run_id} — quality = {decision.quality.metric} ({decision.quality.source})"
            + (" — SIMULATED run" if decision.simulated else ""),
        )
    )
    out.print(f"wrote {path}")


@app.command()
def report(
    run_id: str,
    out_dir: Annotated[Path | None, typer.Option("--out", help="folder to write (default reports/<run-id>/)")] = None,
    quality: Annotated[
        str | None,
        typer.Option(help="quality metric as METRIC:SOURCE (default: judge VIEScore if scored, else ssim:auto)"),
    ] = None,
    tiers_file: Annotated[Path | None, typer.Option("--tiers", help="tier definitions (TOML)")] = None,
    workspace: WorkspaceOpt = None,
) -> None:
    """Execute the report notebook with papermill → self-contained HTML, tier_defaults.json, tables as CSV."""
    from evalkit.report.build import build_report

    try:
        result = build_report(workspace, run_id, out_dir=out_dir, quality=quality, tiers=tiers_file)
    except EvalkitError as exc:
        _fail(exc)
    out.print(f"report: {result.html}")
    out.print(
        f"  also: {result.tier_defaults.name}, {', '.join(p.name for p in result.tables)}, {result.notebook.name} in {result.out_dir}"
    )


@app.command()
def compare(
    base_run: Annotated[
        str, typer.Argument(help="the earlier run (or 'latest-before': the previous run of the same suite)")
    ],
    new_run: str,
    fail_on: Annotated[
        str | None, typer.Option("--fail-on", help="e.g. latency_p95=+20%,cost=+10%,success=-5%,quality=-0.3")
    ] = None,
    quality: Annotated[str | None, typer.Option(help="quality metric as METRIC:SOURCE")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    workspace: WorkspaceOpt = None,
) -> None:
    """Per-model changes between two runs; exits 1 when a --fail-on threshold is crossed (for cron/CI alerts)."""
    from evalkit.decide.compare import compare_runs

    try:
        comparison = compare_runs(workspace, base_run, new_run, quality=quality, fail_on=fail_on)
    except EvalkitError as exc:
        _fail(exc)
    if as_json:
        typer.echo(json.dumps(comparison.to_dict(), default=str))
    else:
        typer.echo(comparison.render())
    raise typer.Exit(comparison.exit_code())


# ---- local servers and demo ----------------------------------------------------------------------


@app.command()
def sim(
    host: Annotated[str, typer.Option(help="loopback address to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port (0 = any free port)")] = 8765,
    provider: Annotated[str, typer.Option(help="wavespeed | stability | huggingface | judge")] = "wavespeed",
    time_scale: Annotated[float, typer.Option(help="multiply simulated model latencies")] = 1.0,
    fixed_latency_ms: Annotated[float | None, typer.Option(help="one latency for every model")] = None,
) -> None:
    """Serve a local provider-compatible server (SIMULATED outputs) for offline runs and tests."""
    import importlib

    mod = importlib.import_module(f"evalkit.sim.{provider}")
    kw = {"time_scale": time_scale}
    if fixed_latency_ms is not None:
        kw["fixed_latency_ms"] = fixed_latency_ms
    out.print(f"serving a SIMULATED {provider} API on http://{host}:{port} (Ctrl-C to stop)")
    mod.serve(host, port, **kw)


@app.command()
def serve(
    tiers_file: Annotated[
        Path | None,
        typer.Option("--tiers", help="tier_defaults.json (default: $EVALKIT_TIER_DEFAULTS, else ./tier_defaults.json)"),
    ] = None,
    host: Annotated[str, typer.Option(help="address to bind (off loopback: EVALKIT_SERVE_TOKEN)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port")] = 8000,
    default_tier: Annotated[str, typer.Option(help="tier for requests that name neither tier nor model")] = "standard",
    allow_simulated: Annotated[
        bool, typer.Option("--allow-simulated", help="serve tier defaults from a SIMULATED run (demos, tests)")
    ] = False,
    allow_provisional: Annotated[
        bool, typer.Option("--allow-provisional", help="serve provisional models where evidence is insufficient")
    ] = False,
    max_age_days: Annotated[
        float | None, typer.Option(help="warn when the tier defaults are older (default 30, env var)")
    ] = None,
    workspace: WorkspaceOpt = None,
) -> None:
    """Serve the Image Studio edit endpoint and the model selector page from a run's tier defaults."""
    from evalkit.serve import serve as run_server

    try:
        run_server(
            tiers_file,
            host=host,
            port=port,
            default_tier=default_tier,
            allow_simulated=allow_simulated,
            allow_provisional=allow_provisional,
            max_age_days=max_age_days,
            workspace=workspace,
            announce=lambda text: out.print(escape(text), highlight=False),
        )
    except EvalkitError as exc:
        _fail(exc)


@app.command()
def demo(
    workspace: WorkspaceOpt = None,
    suite: Annotated[str, typer.Option(help="suite to run")] = "core",
    out_dir: Annotated[Path | None, typer.Option("--out", help="report folder (default reports/<run>)")] = None,
) -> None:
    """Offline end-to-end demo: local simulated servers, every catalogue model, scores and the HTML report."""
    from evalkit.demo import run_demo

    try:
        run_demo(workspace=workspace, suite=suite, out_dir=out_dir, console=out)
    except EvalkitError as exc:
        _fail(exc)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
