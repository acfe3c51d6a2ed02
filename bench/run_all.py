"""Every benchmark in one command, one table.

    python bench/run_all.py              # runner rows at 100, 1,000, 10,000 calls + metrics + report
    python bench/run_all.py --quick      # runner rows at 100 and 1,000 calls, 200 metric pairs
    python bench/run_all.py --diagnose   # + the variants again, a cProfile, the HTTP client probe, transport safety

Rows, in order: the runner comparison of bench/bench_runner.py (evalkit as shipped; evalkit on httpx's
own transport, the contrast; evalkit with flat polls, without the learnt first delay; the official SDK from 100
threads; the original app's sequential pattern — measured at 100/25 calls and extrapolated, marked
``~``), then automatic-metric throughput from
bench/bench_metrics.py (synthetic 1024² pairs, 2 worker processes, decode included), then the time to build
the HTML model-choice report for 24 cases × 20 models (``evalkit.report.build_report``, run in its own
process with a time limit) and the report's size. Columns that do not apply to a row are blank; the
``ok`` column carries each row's own result. See bench/README.md for every column.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import PYTHON, ROOT, machine_lines, start_process, stop_process  # noqa: E402
from bench.bench_runner import (  # noqa: E402
    HEADER,
    Row,
    add_runner_arguments,
    conditions_line,
    format_row,
    interruptible,
    print_diagnostics,
    print_memory_phases,
    print_store_share,
    runner_rows,
    sizes_of,
)

NAN = float("nan")
REPORT_CASES, REPORT_MODELS = 24, 20
REPORT_TIME_LIMIT_S = 900


def _other_row(calls: int, tool: str, wall_s: float, ok: str) -> Row:
    return Row(
        calls=calls,
        tool=tool,
        wall_s=wall_s,
        ideal_s=NAN,
        submits=NAN,
        polls=NAN,
        downloads=NAN,
        cpu_ms=NAN,
        server_cpu_ms=NAN,
        peak_rss_mb=NAN,
        ok=ok,
        load=os.getloadavg()[0],
    )


def metrics_row(n: int, workers: int = 2) -> Row:
    """bench_metrics' reference measurement: auto_metrics per pair (decode included), ``workers`` processes."""
    from bench import bench_metrics

    pairs = bench_metrics.ensure_pairs(n, 1024, workers)
    measured = bench_metrics.run(pairs, workers, grouped=False)  # (wall s, decoded[, CPU s of the workers])
    wall, decoded = measured[0], measured[1]
    row = _other_row(
        len(pairs), f"auto_metrics ({workers} proc.)", wall, f"{len(pairs) / wall:.1f} img/s, {decoded} ok"
    )
    if len(measured) > 2:
        row.cpu_ms = 1000 * measured[2] / len(pairs)  # CPU of the worker processes per image
    return row


def report_row_child(result_file: Path) -> None:
    """In a child process: a 24 × 20 workspace of distinct images, then ``build_report`` timed."""
    out: dict[str, object] = {}
    try:
        from evalkit.report.build import build_report
        from tests.plugins.synthetic import build_grid_workspace

        with tempfile.TemporaryDirectory(prefix="evalkit-bench-report-") as tmp:
            ws = build_grid_workspace(Path(tmp) / "ws", REPORT_CASES, REPORT_MODELS, (512, 384))
            t0 = time.perf_counter()
            res = build_report(ws, "grid", out_dir=Path(tmp) / "report")
            out["wall_s"] = time.perf_counter() - t0
            out["html_bytes"] = res.html.stat().st_size
            ws.close()
    except ImportError as exc:
        out["pending"] = f"{type(exc).__name__}: {exc}"
    except Exception as exc:  # noqa: BLE001 (reported in the table, with the traceback below it)
        out["error"] = f"{type(exc).__name__}: {exc}"
        out["traceback"] = traceback.format_exc(limit=6)
    result_file.write_text(json.dumps(out))


def report_row() -> tuple[Row, str | None]:
    """``build_report`` for 24 cases × 20 models, in its own process, bounded in time."""
    cells = REPORT_CASES * REPORT_MODELS
    tool = f"build_report {REPORT_CASES}×{REPORT_MODELS}"
    with tempfile.TemporaryDirectory() as tmp:
        result_file = Path(tmp) / "report.json"
        log = open(Path(tmp) / "stderr.txt", "w+b")  # noqa: SIM115 (the kernel's warnings stay out of the table)
        proc = start_process(
            [PYTHON, str(Path(__file__).resolve()), "--report-row", str(result_file)],
            cwd=str(ROOT),
            env={**os.environ, "TQDM_DISABLE": "1"},
            stdout=log,
            stderr=log,
        )
        try:
            proc.wait(timeout=REPORT_TIME_LIMIT_S)
        except subprocess.TimeoutExpired:
            return _other_row(cells, tool, NAN, f"over {REPORT_TIME_LIMIT_S} s"), None
        finally:
            stop_process(proc)
            log.seek(0)
            child_output = log.read().decode(errors="replace")[-3000:]
            log.close()
        if not result_file.exists():
            return _other_row(cells, tool, NAN, f"failed (exit {proc.returncode})"), child_output
        r = json.loads(result_file.read_text())
    if "pending" in r:
        return _other_row(cells, tool, NAN, "pending (no report)"), str(r["pending"])
    if "error" in r:
        return _other_row(cells, tool, NAN, "failed (see below)"), f"{r['error']}\n{r.get('traceback', '')}"
    return _other_row(cells, tool, float(r["wall_s"]), f"HTML {int(r['html_bytes']) / 1e6:.2f} MB"), None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_runner_arguments(ap)
    ap.add_argument("--metrics-n", type=int, default=None, help="metric pairs (default 1000; 200 with --quick)")
    ap.add_argument("--skip", default="", help="comma-separated: runner,metrics,report")
    ap.add_argument("--diagnose", action="store_true", help="also the HTTP client probe and transport safety check")
    ap.add_argument("--report-row", help=argparse.SUPPRESS)  # internal: the report child process
    args = ap.parse_args()
    if args.report_row:
        report_row_child(Path(args.report_row))
        return
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    for line in machine_lines():
        print(line)
    print(conditions_line(args))
    print(HEADER)
    print("-" * len(HEADER))
    rows: list[Row] = []

    def echo(row: Row) -> None:
        rows.append(row)
        print(format_row(row), flush=True)

    notes: list[str] = []
    if "runner" not in skip:
        runner_rows(
            sizes_of(args),
            tools,
            poll_s=args.poll_s,
            concurrency=args.concurrency,
            output_max_side=args.output_max_side,
            seq_calls=args.seq_calls,
            seq_poll_calls=args.seq_poll_calls,
            echo=echo,
        )
    if "metrics" not in skip:
        echo(metrics_row(args.metrics_n or (200 if args.quick else 1000)))
    if "report" not in skip:
        row, note = report_row()
        echo(row)
        if note:
            notes.append(f"report: {note}")
    print_store_share(rows)
    print_memory_phases(rows)
    for n in notes:
        print(f"\n{n}")
    if args.diagnose:
        print_diagnostics(args.concurrency, args.poll_s, args.output_max_side)
    if any(math.isnan(r.wall_s) for r in rows if not r.ok.startswith(("pending", "skipped"))):
        sys.exit(1)


if __name__ == "__main__":
    interruptible(main)
