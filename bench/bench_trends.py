"""Benchmark: `evalkit trends --last 30` and `evalkit gc` over 30 scheduled runs of 1,000 calls each.

    python bench/bench_trends.py                     # 30 runs × 1,000 calls (5 models × 100 cases × 2 repeats)
    python bench/bench_trends.py --runs 10 --cases 50

The history is synthetic, written through the Workspace API (tests/plugins/histories.py): per call a
log-normal latency, success, the list price, a judge score, and a small distinct output blob. Timed: the
`evalkit trends` command as a user runs it (a fresh process: imports included, exit code 0/1), the same
computation in-process (what a notebook pays), its `--json` (with the per-run series and their bootstrap
intervals), its `--html`, then `evalkit gc --keep-last 7 --dry-run` and `evalkit gc --keep-last 7` in
fresh processes. Target: trends < 5 s. Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evalkit.decide.trends import trends  # noqa: E402
from evalkit.store import Workspace  # noqa: E402
from tests.plugins.histories import Behaviour, write_history  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args: str) -> tuple[float, subprocess.CompletedProcess]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "100"}
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "evalkit", *args], capture_output=True, text=True, env=env)
    return time.perf_counter() - t0, res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--cases", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--keep-last", type=int, default=7)
    args = ap.parse_args()
    b = Behaviour()
    models = {
        "qwen-edit": b,
        "qwen-edit-plus": b.but(latency_ms=3000, price_usd=0.04),
        "seedream-v4.5-edit": b.but(latency_ms=5000, price_usd=0.04, quality=7.5),
        "flux-kontext-pro": b.but(latency_ms=4000, price_usd=0.04),
        "nano-banana-pro-edit-ultra": b.but(latency_ms=9000, price_usd=0.15, quality=8.0),
    }
    latest = {**models, "qwen-edit": b.but(latency_ms=2600)}  # one slowed model: the alarm path is timed too
    calls = len(models) * args.cases * args.repeats
    rows: list[tuple[str, float, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace(Path(tmp) / "ws")
        t0 = time.perf_counter()
        write_history(
            ws, "nightly", [models] * (args.runs - 1) + [latest], cases=args.cases, repeats=args.repeats, outputs=True
        )
        ws.close()  # checkpoints the write-ahead log, as the nightly run's own process does when it ends
        ws = Workspace(Path(tmp) / "ws")
        rows.append(("build workspace", time.perf_counter() - t0, f"{args.runs} runs × {calls:,} calls"))
        w = str(ws.path)
        secs, res = _cli("trends", "--suite", "nightly", "--last", str(args.runs), "-w", w)
        rows.append(
            ("evalkit trends --last N (CLI)", secs, f"exit {res.returncode}; {len(res.stdout.splitlines())} lines")
        )
        t0 = time.perf_counter()
        tr = trends(ws, "nightly", last=args.runs)
        rows.append(
            ("trends() in-process", time.perf_counter() - t0, f"{len(tr.rows)} tests, {len(tr.changes)} flagged")
        )
        secs, res = _cli("trends", "--suite", "nightly", "--last", str(args.runs), "-w", w, "--json")
        rows.append(("evalkit trends --json (CLI)", secs, f"{len(res.stdout) / 1e3:,.0f} kB (series with intervals)"))
        html = Path(tmp) / "trends.html"
        secs, res = _cli("trends", "--suite", "nightly", "--last", str(args.runs), "-w", w, "--html", str(html))
        rows.append(
            (
                "evalkit trends --html (CLI)",
                secs,
                f"{html.stat().st_size / 1e3:,.0f} kB" if html.exists() else res.stderr[-80:],
            )
        )
        secs, res = _cli("gc", "--keep-last", str(args.keep_last), "--dry-run", "-w", w)
        rows.append(
            ("evalkit gc --dry-run (CLI)", secs, res.stdout.splitlines()[0] if res.stdout else res.stderr[-80:])
        )
        secs, res = _cli("gc", "--keep-last", str(args.keep_last), "-w", w)
        rows.append(("evalkit gc (CLI)", secs, res.stdout.splitlines()[0] if res.stdout else res.stderr[-80:]))
        t0 = time.perf_counter()
        trends(ws, "nightly", last=args.runs)
        rows.append(("trends() after gc", time.perf_counter() - t0, "rows and scores kept"))
    width = max(len(r[0]) for r in rows)
    print(f"{'what':<{width}}  {'seconds':>8}  notes")
    for name, secs, note in rows:
        print(f"{name:<{width}}  {secs:>8.2f}  {note}")


if __name__ == "__main__":
    main()
