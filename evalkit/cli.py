"""The `evalkit` command line: thin wrappers over the library (every command calls a public function).

Errors from evalkit are printed as one line plus a hint, with exit status 2; Ctrl-C exits with 130
after the run has stopped cleanly.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

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


def _cell(v, money: bool) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "—"
    if money and isinstance(v, (int, float)) and not isinstance(v, bool):
        return f"${v:,.4f}"
    if isinstance(v, float):
        return f"{v:,.1f}" if abs(v) >= 100 else f"{v:.3g}" if abs(v) >= 1 else f"{v:.3f}"
    return str(v)


def _table(
    df,
    title: str | None = None,
    money: tuple[str, ...] = (),
    *,
    labels: dict[str, str] | None = None,
    wide: bool = False,
    width: int | None = None,
    wrap: tuple[str, ...] = (),
    more: str = "--wide or --json",
) -> Table:
    """A rich table of a DataFrame that fits ``width`` (default: the terminal, at least 100 columns).

    No cell is ever wrapped or cut mid-word: columns are kept left to right while they fit at their full
    width, and the ones that do not fit are named in the caption (``--wide`` / ``--json`` show them).
    ``money`` columns print as dollars; ``labels`` gives shorter headers; ``wrap`` columns (lists) may
    wrap between words, so they need only their longest word's width.
    """
    from rich.cells import cell_len

    labels = labels or {}
    cols = [str(c) for c in df.columns]
    cells = {c: [_cell(v, c in money) for v in df[c]] for c in cols}
    need = {c: max([cell_len(labels.get(c, c))] + [cell_len(x) for x in cells[c]]) for c in cols}
    least = {
        c: max([cell_len(labels.get(c, c))] + [cell_len(w) for x in cells[c] for w in x.split()])
        if c in wrap
        else need[c]
        for c in cols
    }
    budget = (width or _width()) - 1  # the left border
    shown: list[str] = []
    hidden: list[str] = []
    for c in cols:
        cost = least[c] + 3  # padding and a border
        if wide or not shown or cost <= budget:
            shown.append(c)
            budget -= cost
        else:
            hidden.append(c)
    caption = f"more columns with {more}: {', '.join(hidden)}" if hidden else None
    t = Table(title=title, header_style="bold", caption=caption, caption_justify="left")
    for c in shown:
        right = df[c].dtype.kind in "if" or c in money
        t.add_column(labels.get(c, c), justify="right" if right else "left", no_wrap=c not in wrap, min_width=least[c])
    for i in range(len(df)):
        t.add_row(*(escape(cells[c][i]) for c in shown))
    return t


def _print_wide(table: Table, wide: bool) -> None:
    """Print a table; with ``wide`` at its natural width even past the terminal's edge."""
    if wide:
        Console(width=100_000).print(table, crop=False)
    else:
        out.print(table)


# ---- catalogue and suites ------------------------------------------------------------------------


@app.command()
def models(
    as_json: Annotated[
        bool, typer.Option("--json", help="print JSON (every fact, with its source and confidence)")
    ] = False,
    provider: Annotated[str | None, typer.Option(help="only this provider")] = None,
    operation: Annotated[str | None, typer.Option(help="only models supporting this operation")] = None,
    wide: Annotated[bool, typer.Option("--wide", help="also endpoint, price rule, inputs and size")] = False,
    workspace: WorkspaceOpt = None,
) -> None:
    """List the catalogue: id, provider, a 1024×1024 price, operations (--wide: endpoint, price rule, limits)."""
    from evalkit.catalog import Catalog, normalise_operation

    try:
        cat = Catalog.load(workspace)
        providers = sorted({m.provider for m in cat})
        if provider is not None and provider not in providers:
            raise EvalkitError(
                f"no provider named {provider!r} in the catalogue", hint=f"providers: {', '.join(providers)}"
            )
        op = normalise_operation(operation) if operation is not None else None
        specs = [m for m in cat if (provider is None or m.provider == provider) and (op is None or op in m.operations)]
    except EvalkitError as exc:
        _fail(exc)
    if as_json:
        typer.echo(json.dumps([m.details() for m in specs], indent=2, default=str))
        return
    if not specs:
        ops = sorted({o for m in cat if m.provider == provider for o in m.operations})
        out.print(
            f"no {provider} model supports {op!r}; its operations: {', '.join(ops)}", highlight=False, soft_wrap=True
        )
        return
    import pandas as pd

    rows = []
    for m in specs:
        price_fact = m.facts.get("price")
        p = m.price_for_1024()
        price = "unknown" if p is None else f"${p:.3f}"
        if p is not None and price_fact is not None and price_fact.confidence != "high":
            price += " ?" if price_fact.confidence == "low" else " ~"
        other = any(f.confidence == "low" for k, f in m.facts.items() if k != "price")
        size = {
            "wh": f"{m.size.min_px}–{m.size.max_px} px/side",
            "aspect_ratio": "aspect ratio" + (f" + {'/'.join(m.size.resolutions)}" if m.size.resolutions else ""),
            "enum": "/".join(m.size.values),
            "none": "follows input",
        }[m.size.kind]
        rows.append(
            {
                "id": m.id + (" *" if other else "") + (" (draft)" if m.draft else ""),
                "provider": m.provider,
                "$ 1024²": price,
                "operations": ", ".join(m.operations),
                "endpoint": m.endpoint,
                "price rule": m.price.describe(),
                "inputs": f"{m.inputs.param} ≤{m.inputs.max_images}" + (" +mask" if m.mask else ""),
                "size": size,
            }
        )
    df = pd.DataFrame(rows)
    if not wide:
        df = df[["id", "provider", "$ 1024²", "operations"]]
    _print_wide(_table(df, title=f"{len(specs)} models", wide=wide, wrap=("operations",)), wide)
    out.print("price: [bold]~[/] medium confidence, [bold]?[/] low confidence (unverified)", highlight=False)
    out.print(
        "[bold]*[/] other low-confidence facts — `evalkit models --json`: every fact and its source", highlight=False
    )
    if any(m.draft for m in specs):
        out.print(
            "[magenta](draft)[/] written by `evalkit catalog sync --write`: not run by `--models all` until a person "
            "reviews it and deletes `draft = true` from its entry"
        )


catalog_app = typer.Typer(help="The model catalogue: compare it with the provider's own list and prices.")
app.add_typer(catalog_app, name="catalog")


@catalog_app.command("sync")
def catalog_sync(
    provider: Annotated[str, typer.Option(help="wavespeed (model list + pricing API) or stability")] = "wavespeed",
    workspace: WorkspaceOpt = None,
    write: Annotated[
        bool, typer.Option("--write", help="write <workspace>/catalog/wavespeed-sync.toml (reviewable override)")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the diff as JSON")] = False,
) -> None:
    """Diff the catalogue against the provider: new edit models, removed ones, quoted prices, schema changes.

    Reads GET /api/v3/models and asks POST /api/v3/model/pricing for a 1024×1024 sample per model
    ($WAVESPEED_API_KEY; $WAVESPEED_BASE_URL points it at another server). The bundled catalogue is
    never changed; --write puts quoted prices (confidence high, with source and date) and new models as
    drafts into one workspace file that later catalogue loads pick up.
    """
    from evalkit.catalog import Catalog
    from evalkit.catalog.pricing import WaveSpeedCatalogClient
    from evalkit.catalog.sync import stability_report, sync_wavespeed, write_override

    try:
        ws = workspace or Path(os.environ.get("EVALKIT_WORKSPACE") or "evalkit-workspace")  # as Workspace() does
        cat = Catalog.load(ws)
        if provider == "stability":
            rep = stability_report(cat)
            if as_json:
                typer.echo(json.dumps(rep, indent=2, default=str))
                return
            out.print(escape(rep["note"]), highlight=False)
            for r in rep["models"]:
                out.print(
                    escape(
                        f"  {r['id']}: {r['credits']:g} credits = ${r['usd']:.3f} "
                        f"(reserve ${r['reserve_usd']:.3f}; {r['confidence']}) — {r['source']}"
                    ),
                    highlight=False,
                )
            return
        if provider != "wavespeed":
            from evalkit.errors import InvalidInputError

            raise InvalidInputError(
                f"catalog sync knows no provider {provider!r}", hint="use --provider wavespeed or --provider stability"
            )
        with WaveSpeedCatalogClient() as client:
            report = sync_wavespeed(cat, client)
        if write:
            write_override(report, cat, ws)
    except EvalkitError as exc:
        _fail(exc)
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2, default=str))
    else:
        out.print(escape(report.to_text()), highlight=False, soft_wrap=True)


suites_app = typer.Typer(
    help="List the edit-case suites evalkit can find; `evalkit suites import` makes one from your own file.",
    invoke_without_command=True,
    no_args_is_help=False,
)
app.add_typer(suites_app, name="suites")


@suites_app.callback()
def suites(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    wide: Annotated[bool, typer.Option("--wide", help="full paths and every category")] = False,
) -> None:
    """List the edit-case suites evalkit can find (bundled, ./suites and $EVALKIT_SUITES_PATH)."""
    if ctx.invoked_subcommand is not None:
        return
    from evalkit.suites import list_suites

    try:
        infos = list_suites()
    except EvalkitError as exc:
        _fail(exc)
    if as_json:
        typer.echo(json.dumps([asdict(i) for i in infos], indent=2, default=str))
        return
    t = Table(header_style="bold")
    t.add_column("name", no_wrap=True)
    t.add_column("cases", justify="right")
    t.add_column("operations", overflow="fold")
    t.add_column("languages")
    t.add_column("path", no_wrap=True, overflow="ellipsis", max_width=None if wide else 40)
    for i in infos:
        path = str(i.path) if wide else _short_path(i.path)
        t.add_row(
            i.name,
            str(i.n_cases) if not i.error else "[red]error[/]",
            ", ".join(i.operations),
            ", ".join(i.languages),
            escape(path),
        )
    out.print(t)
    bad = [i for i in infos if i.error]
    for i in bad:
        out.print(
            f"[red]{escape(i.name)}[/] does not load: {escape((i.error or '').splitlines()[0])} "
            "(`--json` lists every problem)"
        )


@suites_app.command("import")
def suites_import(
    src: Annotated[Path, typer.Argument(help="CSV, JSON Lines, or GEdit-Bench records (Parquet file/folder, JSONL)")],
    name: Annotated[str, typer.Option("--name", "-n", help="suite name (a slug: lowercase a-z, 0-9, -, _)")],
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="folder to write the suite into (default ./suites)")
    ] = None,
    fmt: Annotated[
        str | None, typer.Option("--format", "-f", help="csv | jsonl | gedit-bench (default: from the extension)")
    ] = None,
) -> None:
    """Turn your own cases into a validated suite folder (suite.toml + copied images and masks).

    Columns: image (paths relative to the file, ';'-separated), prompt; optional id, operation, mask,
    category, language, target_size (WxH), tags (';'-separated), source_caption, target_caption (for the
    semantic metrics; never sent to a model).
    """
    from evalkit.suites.importer import import_suite

    try:
        result = import_suite(src, name, out=out_dir, fmt=fmt)
    except EvalkitError as exc:
        _fail(exc)
    typer.echo(str(result.path))
    typer.echo(result.summary())


def _short_path(path: Path) -> str:
    """A path as the user would type it: relative to the working directory when inside it, else ~-abbreviated."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        pass
    home = str(Path.home())
    text = str(path)
    if text.startswith(home + "/"):
        text = "~" + text[len(home) :]
    if len(text) > 40:
        text = "…" + text[-39:]
    return text


@app.command()
def doctor(
    judge: Annotated[
        bool, typer.Option("--judge", help="also send the judge one paid 1-token request (otherwise all free)")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON (one object per provider)")] = False,
) -> None:
    """Pre-flight check before money is spent: per provider its key (never shown), base URL, reachability,
    balance and the limits evalkit will use. Exits 1 when a configured provider fails."""
    from evalkit.doctor import run_doctor

    try:
        checks = run_doctor(paid_judge=judge)
    except EvalkitError as exc:
        _fail(exc)
    failed = [c for c in checks if c.configured and not c.ok]
    if as_json:
        typer.echo(json.dumps([c.to_dict() for c in checks], indent=2))
    else:
        for c in checks:
            colour = "dim" if not c.configured else "green" if c.ok else "red"
            out.print(f"[{colour}]{escape(c.line())}[/]", highlight=False, soft_wrap=False)  # wraps between words
        out.print("local: ok — offline baselines, no key needed", style="green", highlight=False)
        if not any(c.configured for c in checks):
            out.print("no provider is configured: `evalkit run --models all` runs the local baselines only")
    if failed:
        raise typer.Exit(1)


# ---- runs ----------------------------------------------------------------------------------------


@app.command("run")
def run_cmd(
    suite: Annotated[str | None, typer.Option("--suite", "-s", help="suite name or path")] = None,
    models: Annotated[
        str, typer.Option("--models", "-m", help="'all', 'provider:NAME' or comma-separated ids")
    ] = "all",
    repeats: Annotated[int, typer.Option(min=1, help="samples per (case, model); a distinct seed each")] = 1,
    concurrency: Annotated[int, typer.Option(min=1, help="tasks running at the providers at once")] = 16,
    budget: Annotated[float | None, typer.Option(min=0, help="hard cap in USD for this run")] = None,
    workspace: WorkspaceOpt = None,
    run_id: Annotated[str | None, typer.Option("--run-id", help="name the run (re-using a name resumes it)")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="continue RUN_ID: poll accepted jobs, run the rest")] = False,
    no_cache: Annotated[
        bool | None,
        typer.Option(
            "--no-cache/--cache",
            help="do not reuse identical completed requests (default: off; a resume keeps the run's setting)",
        ),
    ] = None,
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
    quote_prices: Annotated[
        bool | None,
        typer.Option(
            "--quote-prices/--no-quote-prices",
            help="ask WaveSpeed's pricing API for each distinct request before sending; the quotes drive the "
            "estimate, budget and recorded costs (a failed quote falls back to the catalogue price); "
            "default: off, and a resume keeps the run's setting",
        ),
    ] = None,
    allow_partial_sessions: Annotated[
        bool,
        typer.Option(
            "--allow-partial-sessions",
            help="let the budget start a session it cannot finish (by default a session starts only when the "
            "budget holds all its turns)",
        ),
    ] = False,
    resume_id: Annotated[str | None, typer.Argument(help="run id to resume (same as --run-id X --resume)")] = None,
) -> None:
    """Run a suite across models: latency, cost and output of every call, resumable and budget-capped.

    A session (a case with turns) runs turn by turn, each turn on the same model's previous output."""
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
            quote_prices=quote_prices,
            allow_partial_sessions=allow_partial_sessions,
        )
    except EvalkitError as exc:
        _fail(exc)
    pq = result.price_quotes
    if pq is not None and not as_json:
        n = pq["quoted"]
        out.print(f"prices quoted by the provider: {n} distinct request{'' if n == 1 else 's'}", highlight=False)
        for model_id, why in pq["errors"].items():
            err.print(
                escape(f"warning: price quote failed for {model_id} ({why}); the catalogue price is used"),
                highlight=False,
            )
    if dry_run:
        if as_json:
            typer.echo(
                json.dumps(
                    {
                        "dry_run": True,
                        "models_left_out": result.models_left_out,
                        "planned": result.planned,
                        "not_applicable": result.not_applicable,
                        "estimate": [] if result.estimate is None else result.estimate.to_dict(orient="records"),
                        "sessions": []
                        if result.session_estimate is None
                        else result.session_estimate.to_dict(orient="records"),
                        "price_quotes": result.price_quotes,
                    },
                    default=float,
                )
            )
        else:
            out.print(
                _table(
                    result.estimate,
                    "Plan (nothing was spent)",
                    money=("list_price_usd", "max_usd"),
                    labels=PLAN_LABELS,
                )
            )
            if result.session_estimate is not None:
                out.print(
                    _table(
                        result.session_estimate,
                        "One whole session (later turns priced on the original image)",
                        money=("list_price_usd", "max_usd"),
                        labels=PLAN_LABELS,
                    )
                )
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
                        "not_reached",
                        "waiting",
                        "unknown",
                        "pending",
                        "cached",
                        "cost_usd",
                        "wall_s",
                        "stop_reason",
                        "stop_message",
                        "models_left_out",
                        "simulated",
                        "reconciled",
                        "unknown_max_usd",
                        "price_quotes",
                    )
                }
            )
        )
    else:
        _print_run_summary(result)
    if result.stop_reason == "interrupted":
        raise typer.Exit(130)
    if result.stop_reason == "balance":
        raise typer.Exit(1)  # an account ran dry: the run is not finished (cron and CI notice)
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
    if r.not_reached:
        out.print(f"  {r.not_reached} later session turn(s) not reached: an earlier turn of theirs did not complete")
    if r.waiting:
        out.print(f"  {r.waiting} later session turn(s) wait for an earlier turn: `--resume` runs them after it")
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
    if r.stop_message:
        out.print(f"  [yellow]stopped ({r.stop_reason}):[/] {escape(r.stop_message)}", soft_wrap=False)
    if not r.stop_message and (r.stop_reason or r.pending or r.skipped or r.waiting):
        why = f"stopped: {r.stop_reason}" if r.stop_reason else "unfinished"
        out.print(
            f"  [yellow]{why}[/] — `evalkit run --resume {r.run_id}` continues it "
            "(accepted jobs are polled, never re-sent)"
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


PLAN_LABELS = {
    "model_id": "model",
    "session_id": "session",
    "not_applicable": "n/a",
    "list_price_usd": "list $",
    "max_usd": "max $",
    "unknown_price_calls": "price?",
}


@app.command()
def runs(
    workspace: WorkspaceOpt = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    wide: Annotated[bool, typer.Option("--wide", help="every column (budget, repeats, wall time…)")] = False,
) -> None:
    """List the runs in a workspace (with what judging cost and the judge's noise between passes)."""
    from evalkit.scoring.judge.noise import judge_noise
    from evalkit.store import Workspace

    try:
        ws = Workspace(workspace)
        df = ws.runs()
        df["judge_noise_sd"] = [
            judge_noise(ws, r).sd() if n else None for r, n in zip(df["run_id"], df["judge_requests"], strict=True)
        ]
        holders = ws.lock_holders()
    except EvalkitError as exc:
        _fail(exc)
    if not df.empty:  # who executes the run now (its lock's live holder), e.g. a nightly job still running
        df["lock"] = [holders[r].describe() if r in holders else None for r in df["run_id"]]
    if as_json:
        typer.echo(df.to_json(orient="records"))
    elif df.empty:
        out.print("no runs yet — `evalkit run --suite smoke --dry-run` shows a plan")
    else:
        view = df.copy()
        view["created_at"] = view["created_at"].astype(str).str.slice(0, 16).str.replace("T", " ")
        view["done"] = [f"{c}/{p}" for c, p in zip(view["completed"], view["planned"], strict=True)]
        view["simulated"] = view["simulated"].map(lambda v: "SIM" if v else "")
        order = ["run_id", "status", "suite_name", "done", "failed", "cost_usd", "judge_cost_usd", "simulated"]
        order += ["judge_noise_sd"] if view["judge_noise_sd"].notna().any() else []
        order += ["created_at", "models"]
        if holders:
            order.insert(2, "lock")
        if int(view["unknown"].sum()):  # submits whose acceptance is not known, and the most they may have cost
            order[5:5] = ["unknown", "unknown_max_usd"]
        rest = [c for c in view.columns if c not in order and c not in ("completed", "planned")]
        view = view[order + (rest if wide else [])]
        labels = {
            "created_at": "created (UTC)",
            "suite_name": "suite",
            "cost_usd": "cost",
            "budget_usd": "budget",
            "simulated": "",
            "unknown_max_usd": "unknown may cost",
            "judge_cost_usd": "judging",
            "judge_noise_sd": "judge noise",
            "lock": "held by",
        }
        money = ("budget_usd", "cost_usd", "unknown_max_usd", "judge_cost_usd")
        _print_wide(_table(view, money=money, labels=labels, wide=wide), wide)
        if int(df["unknown"].sum()):
            out.print(
                "[yellow]unknown[/]: submits whose acceptance is not known (not sent again); 'unknown may cost' is "
                "the most they may have cost. `evalkit reconcile RUN_ID` settles them from the provider's history."
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
    judge_preset: Annotated[
        str | None,
        typer.Option(
            "--judge-preset",
            envvar="EVALKIT_JUDGE_PRESET",
            help="pin the judge: " + ", ".join(_judge_presets()) + " (described above)",
        ),
    ] = None,
    swap_fraction: Annotated[
        float, typer.Option(min=0, max=1, help="pairwise: share of pairs also asked in the other order")
    ] = 0.0,
    judge_passes: Annotated[
        int | None,
        typer.Option(
            "--judge-passes",
            min=1,
            envvar="EVALKIT_JUDGE_PASSES",
            help="judge each output N times: score = mean of the valid passes; measures the judge's noise",
        ),
    ] = None,
    judge_price: Annotated[
        str | None,
        typer.Option(
            "--judge-price",
            metavar="IN/OUT",
            help="judge prices in USD per 1M input/output tokens, e.g. 2/8 (default: env, preset, loopback $0)",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object (with a 'judge' object)")] = False,
    semantic: Annotated[
        bool,
        typer.Option(
            "--semantic", help="CLIP-I, CLIP-T, CLIP direction, DINO (evalkit\\[semantic]; evalkit download-semantic)"
        ),
    ] = False,
    workspace: WorkspaceOpt = None,
) -> None:
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
            judge_preset=judge_preset,
            swap_fraction=swap_fraction,
            judge_passes=judge_passes,
            judge_price=judge_price,
            progress=not as_json,
            semantic=semantic,
        )
    except EvalkitError as exc:
        _fail(exc)
    if as_json:
        typer.echo(json.dumps(summary.as_dict(), default=str))
        return
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


@app.command("download-semantic")
def download_semantic(
    to: Annotated[
        Path | None,
        typer.Option(help="write a local copy here (then set EVALKIT_SEMANTIC_MODEL_DIR to it); default: HF cache"),
    ] = None,
) -> None:
    """Fetch the ONNX models of the semantic metrics (CLIP ViT-B/32, DINOv2-small; ~700 MB, once).

    Needs the network and `pip install 'evalkit\\[semantic]'`. Files go to the Hugging Face cache
    (HF_HOME) unless --to is given; their repositories, revisions and licences are listed in
    evalkit/scoring/semantic_models.toml. `evalkit score RUN --semantic` then works offline.
    """
    from evalkit.scoring.semantic import download_semantic_models, model_sources

    try:
        folders = download_semantic_models(to)
    except EvalkitError as exc:
        _fail(exc)
    for key, src in model_sources().items():
        out.print(escape(f"{key}: {src.pinned} ({src.licence.split(' (')[0]}) → {folders[key]}"), highlight=False)


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
    against: Annotated[
        Path | None,
        typer.Option("--against", help="the tier_defaults.json served now: list defaults that would change, exit 1"),
    ] = None,
    workspace: WorkspaceOpt = None,
    unit: Annotated[
        str,
        typer.Option(
            help="'call' (every edit) or 'session' (a whole session of turns: final-turn quality, cost and "
            "latency per session)"
        ),
    ] = "call",
) -> None:
    """Choose a default model per price tier and operation; write tier_defaults.json (--against SERVED.json:
    list every default that would change and why, and exit 1 when one would)."""
    from evalkit.decide.quality import choose_quality
    from evalkit.decide.tiers import choose_defaults, write_tier_defaults
    from evalkit.store import Workspace

    try:
        ws = Workspace(workspace, create=False)
        decision = choose_defaults(ws, run_id, tiers_file, quality=quality or choose_quality(ws, run_id)[0], unit=unit)
        path = write_tier_defaults(decision, output or Path("reports") / run_id / "tier_defaults.json")
    except EvalkitError as exc:
        _fail(exc)
    frame = decision.to_frame()
    out.print(
        _table(
            frame.drop(columns=["rationale"]),
            money=("cost_usd",),
            title=f"Tier defaults for run {run_id} — quality = {decision.quality.metric} ({decision.quality.source})"
            + (" — SIMULATED run" if decision.simulated else ""),
            more="the JSON file",
        )
    )
    for _, row in frame.iterrows():  # the why, one line per (tier, operation), wrapped between words
        if isinstance(row.get("rationale"), str) and row["rationale"]:
            out.print(
                f"  {escape(str(row['tier']))} / {escape(str(row['operation']))}: {escape(row['rationale'])}",
                soft_wrap=False,
                highlight=False,
            )
    out.print(f"wrote {path}")
    if against is not None:
        _tiers_against(decision, against, path)


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
        f"  also: {result.tier_defaults.name}, {', '.join(p.name for p in result.tables)}, "
        f"{result.notebook.name} in {result.out_dir}"
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


# ---- scheduled runs: trends, retention (issue 22) -------------------------------------------------


def _tiers_against(decision, served: Path, new_file: Path) -> None:
    """`evalkit tiers --against`: the defaults that would change, why, and exit 1 when any would."""
    from evalkit.decide.tier_drift import changes_frame, diff_against

    try:
        changes = diff_against(decision, served)
    except EvalkitError as exc:
        _fail(exc)
    if not changes:
        out.print(f"no default would change against {served}")
        return
    out.print(_table(changes_frame(changes), title=f"{len(changes)} default(s) would change against {served}"))
    for c in changes:
        out.print(f"  {escape(c.tier)} / {escape(c.operation)}: {escape(c.why)}", soft_wrap=False, highlight=False)
    out.print(f"review, then promote {new_file} to {served} (`evalkit serve` reloads it)")
    raise typer.Exit(1)


@app.command()
def trends(
    suite: Annotated[str, typer.Option("--suite", help="the suite whose scheduled runs form the series")],
    last: Annotated[int, typer.Option(min=1, help="how many runs count (the latest included)")] = 14,
    since: Annotated[str | None, typer.Option(help="count every run since this ISO date instead of --last")] = None,
    models: Annotated[str | None, typer.Option(help="comma-separated model ids (default: the latest run's)")] = None,
    metrics: Annotated[
        str | None,
        typer.Option(
            help="comma-separated; default all: latency_p50, latency_p95, inference_p50, cost, success, quality"
        ),
    ] = None,
    quality: Annotated[str | None, typer.Option(help="quality metric as METRIC:SOURCE")] = None,
    q: Annotated[float, typer.Option("--q", help="false-discovery rate (Benjamini–Hochberg)")] = 0.05,
    min_effect: Annotated[
        str | None, typer.Option("--min-effect", help="alarm minimums, e.g. latency=+20%,success=-5pp,quality=-0.3")
    ] = None,
    cost_tolerance: Annotated[
        float, typer.Option("--cost-tolerance", help="relative cost change that is flagged (0.01 = 1%)")
    ] = 0.01,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    html: Annotated[Path | None, typer.Option("--html", help="write small multiples of the history (HTML)")] = None,
    workspace: WorkspaceOpt = None,
) -> None:
    """The latest run of a suite against its earlier runs, per model × metric, with tests and FDR control;
    exits 1 when a regression is significant and over its minimum effect (for cron/CI alerts)."""
    from evalkit.decide.trends import trends as compute_trends

    def names(text: str | None) -> list[str] | None:
        return [x.strip() for x in text.split(",") if x.strip()] if text else None

    try:
        result = compute_trends(
            workspace,
            suite,
            last=last,
            since=since,
            models=names(models),
            metrics=names(metrics),
            quality=quality,
            q=q,
            min_effect=min_effect,
            cost_tolerance=cost_tolerance,
        )
        if html is not None:
            from evalkit.report.history import write_history_html

            write_history_html(result, html)
    except EvalkitError as exc:
        _fail(exc)
    if as_json:
        typer.echo(json.dumps(result.to_dict(), default=str, allow_nan=False))
    else:
        typer.echo(result.render())
        if html is not None:
            typer.echo(f"wrote {html}")
    raise typer.Exit(result.exit_code())


@app.command()
def gc(
    keep_last: Annotated[int, typer.Option("--keep-last", min=0, help="keep the outputs of the newest N runs")],
    suite: Annotated[str | None, typer.Option(help="only this suite's runs (default: every suite, N each)")] = None,
    keep_outputs_of: Annotated[
        list[str] | None, typer.Option("--keep-outputs-of", help="also keep this run's outputs (repeatable)")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="only print what would be freed")] = False,
    workspace: WorkspaceOpt = None,
) -> None:
    """Delete the output images of older runs (blobs no kept run uses); every row, metric, score and vote stays."""
    from evalkit.store import Workspace
    from evalkit.store.retention import collect_outputs

    try:
        result = collect_outputs(
            Workspace(workspace, create=False),
            keep_last=keep_last,
            suite=suite,
            keep_outputs_of=keep_outputs_of or (),
            dry_run=dry_run,
        )
    except EvalkitError as exc:
        _fail(exc)
    out.print(escape(result.describe()), highlight=False)


# ---- local servers and demo ----------------------------------------------------------------------


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []},
    add_help_option=False,
)
def sim(ctx: typer.Context) -> None:
    """Serve local provider-compatible servers (SIMULATED outputs) and print the export lines a client needs.

    Same options as `python -m evalkit.sim` (`evalkit sim --help` lists them): --provider
    wavespeed|stability|huggingface|judge|all, --api-key, --port, --port-file, --max-concurrent, --time-scale,
    --fixed-latency-ms, --fault, --balance, --catalog-drift.
    """
    from evalkit.sim.launch import main as sim_main

    sim_main(ctx.args, prog="evalkit sim")


@app.command()
def serve(
    tiers_file: Annotated[
        Path | None,
        typer.Option("--tiers", help="tier_defaults.json (default: $EVALKIT_TIER_DEFAULTS, else ./tier_defaults.json)"),
    ] = None,
    host: Annotated[str, typer.Option(help="address to bind (off loopback: EVALKIT_SERVE_TOKEN)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port")] = 8000,
    default_tier: Annotated[str, typer.Option(help="tier for requests that name none")] = "standard",
    allow_simulated: Annotated[
        bool, typer.Option("--allow-simulated", help="serve tier defaults from a SIMULATED run (demos, tests)")
    ] = False,
    allow_provisional: Annotated[
        bool, typer.Option("--allow-provisional", help="serve provisional models where evidence is insufficient")
    ] = False,
    max_age_days: Annotated[
        float | None, typer.Option(help="warn when the tier defaults are older (default 30, env var)")
    ] = None,
    allow_origin: Annotated[
        list[str] | None,
        typer.Option("--allow-origin", help="another origin (scheme://host:port) whose pages may call the API"),
    ] = None,
    allow_any_model: Annotated[
        bool,
        typer.Option("--allow-any-model", help="serve a named model outside its tier (its price must still fit)"),
    ] = False,
    daily_budget: Annotated[
        float | None, typer.Option("--daily-budget", help="server-wide USD cap per UTC day (survives restarts)")
    ] = None,
    client_daily_budget: Annotated[
        float | None, typer.Option("--client-daily-budget", help="USD cap per client (peer) per UTC day")
    ] = None,
    rate_limit: Annotated[
        int | None, typer.Option("--rate-limit", help="edits per minute per client (default 30; 0: off)")
    ] = None,
    max_in_flight: Annotated[
        int | None, typer.Option("--max-in-flight", help="edits held at once; 503 beyond (default: sized for RAM)")
    ] = None,
    forwarded_allow_ips: Annotated[
        str | None,
        typer.Option("--forwarded-allow-ips", help="proxy IPs whose X-Forwarded-For names the client (default: none)"),
    ] = None,
    workspace: WorkspaceOpt = None,
) -> None:
    """Serve the Image Studio edit endpoint and the model selector page from a run's tier defaults.

    Same-origin only by default; money is capped by the tier's price, --daily-budget and
    --client-daily-budget (docs/serve.md has the threat model)."""
    from evalkit.serve import serve as run_server

    limits: dict[str, Any] = {"edits_per_minute": rate_limit} if rate_limit is not None else {}
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
            allow_origins=tuple(allow_origin or ()),
            allow_any_model=allow_any_model,
            daily_budget_usd=daily_budget,
            client_daily_budget_usd=client_daily_budget,
            max_in_flight=max_in_flight,
            forwarded_allow_ips=forwarded_allow_ips,
            announce=lambda text: out.print(escape(text), highlight=False),
            **limits,
        )
    except EvalkitError as exc:
        _fail(exc)


@app.command()
def usage(
    workspace: WorkspaceOpt = None,
    day: Annotated[str | None, typer.Option(help="UTC day YYYY-MM-DD (default: today)")] = None,
    source: Annotated[str, typer.Option(help="ledger source: serve | generate_image_edit | run | judge")] = "serve",
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Spend of one UTC day per tier and per client, from the workspace's usage ledger (evalkit serve's by
    default): billed, unsettled (pending or unknown, counted at what was held for them) and committed."""
    from datetime import UTC, date, datetime

    from evalkit.serve.money import spend_summary
    from evalkit.store import Workspace

    try:
        the_day = date.fromisoformat(day) if day else datetime.now(UTC).date()
    except ValueError:
        from evalkit.errors import InvalidInputError

        _fail(InvalidInputError(f"--day {day!r} is not a date", hint="use YYYY-MM-DD"))
    try:
        ws = Workspace(workspace)
        rows = ws.usage(since=f"{the_day.isoformat()}T00:00:00", source=source)
        rows = rows[rows["at"] < f"{the_day.isoformat()}T99"]  # that day only
    except EvalkitError as exc:
        _fail(exc)
    summary = {"day": the_day.isoformat(), "source": source, **spend_summary(rows)}
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    import pandas as pd

    for col in ("tier", "client"):
        frame = pd.DataFrame(
            summary[f"by_{col}"], columns=[col, "requests", "billed_usd", "unsettled", "committed_usd"]
        )
        if frame.empty:
            out.print(f"no {source} spend on {the_day} (UTC)")
            break
        out.print(
            _table(frame, f"{source} spend on {the_day} (UTC) by {col}", money=("billed_usd", "committed_usd")),
        )


@app.command()
def demo(
    workspace: WorkspaceOpt = None,
    suite: Annotated[str, typer.Option(help="suite to run")] = "core",
    out_dir: Annotated[Path | None, typer.Option("--out", help="report folder (default reports/<run>)")] = None,
    models: Annotated[
        str | None, typer.Option(help="models to run (default: the catalogue less a few near-duplicates; 'all')")
    ] = None,
) -> None:
    """Offline end-to-end demo: local simulated servers, the catalogue's models, scores and the HTML report."""
    from evalkit.demo import run_demo

    try:
        run_demo(workspace=workspace, suite=suite, out_dir=out_dir, console=out, models=models)
    except EvalkitError as exc:
        _fail(exc)


def _judge_presets() -> dict[str, str]:
    from evalkit.scoring.judge.presets import JUDGE_PRESETS

    return {name: p.describe() for name, p in JUDGE_PRESETS.items()}


score.__doc__ = (
    "Score a run's outputs: automatic metrics, a pinned VLM judge, pairwise votes.\n\n"
    "Judge presets (--judge-preset / EVALKIT_JUDGE_PRESET) and the agreement with people the literature "
    "reports for each:\n\n" + "\n\n".join(_judge_presets().values())
)


@app.command()
def agreement(
    run_id: str,
    metric: Annotated[str, typer.Option(help="the judge metric compared with human scores")] = "viescore_o",
    n_boot: Annotated[int, typer.Option("--n-boot", min=0, help="bootstrap resamples over cases")] = 1000,
    workspace: WorkspaceOpt = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """How far the run's judge agrees with its human scores (Rater scoring mode), overall and per
    operation, with bootstrap intervals, unscored reasons, swap consistency and warnings."""
    from evalkit.scoring.agreement import run_agreement
    from evalkit.store import Workspace

    try:
        res = run_agreement(Workspace(workspace, create=False), run_id, metric=metric, n_boot=n_boot)
    except EvalkitError as exc:
        _fail(exc)
    if as_json:
        print(json.dumps(res.as_dict(), default=str, indent=2))
    else:
        out.print(escape(str(res)))


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
