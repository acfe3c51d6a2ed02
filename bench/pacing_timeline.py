"""Where a pacing row's seconds go: one run's per-call timeline, wave by wave (a diagnostic for bench_pacing.py).

    python bench/pacing_timeline.py sync            # or adaptive | fixed | warm; --calls 630 --concurrency 100

Runs the bench_pacing job (630 calls of ``qwen-edit``, tasks of exactly 3 s, 100 in flight) **in this
process** against ``python -m evalkit.sim`` in its own process, keeps the workspace, and prints: the wall time
and its share of the ideal, then per wave of ``concurrency`` calls (in submit order) when their submits were
written and when they completed, the lag from a call's ``submitting`` row to the server creating its task
(the server's history), and the median latency breakdown. Times are seconds from the start of ``arun``.
Printed, never asserted; outputs are SIMULATED.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import SimProcess  # noqa: E402
from bench.bench_pacing import TASK_S, WARM_CALLS, pacing_options  # noqa: E402
from bench.bench_runner import arun_job, write_suite  # noqa: E402


def _history(base_url: str, key: str) -> dict[str, dict[str, Any]]:
    import httpx

    items: dict[str, dict[str, Any]] = {}
    for page in range(1, 10_000):
        data = httpx.post(
            f"{base_url}/api/v3/predictions",
            json={"page": page, "page_size": 100},
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
        ).json()["data"]
        items.update({it["id"]: it for it in data["items"]})
        if len(data["items"]) < 100:
            return items
    return items


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("row", choices=("adaptive", "warm", "fixed", "sync"))
    ap.add_argument("--calls", type=int, default=630)
    ap.add_argument("--concurrency", type=int, default=100)
    args = ap.parse_args()

    import evalkit.engine.runner  # noqa: F401  (imported before the clock, as in bench_pacing)
    import evalkit.providers.transport  # noqa: F401

    with SimProcess(fixed_latency_ms=TASK_S * 1000, output_max_side=64) as sim:
        work = Path(tempfile.mkdtemp(prefix="evalkit-timeline-"))
        suite = write_suite(work)
        opts = pacing_options(args.row, sim.base_url, sim.api_key)

        def one_run(n: int) -> Any:
            return asyncio.run(arun_job(suite, work, n, args.concurrency, opts))

        if args.row == "warm":
            one_run(WARM_CALLS)
        polls0 = sim.stats()["poll"]
        t0 = time.time()
        result = one_run(args.calls)
        wall = time.time() - t0
        polls = sim.stats()["poll"] - polls0
        history = _history(sim.base_url, sim.api_key)

    ideal = math.ceil(args.calls / args.concurrency) * TASK_S
    per_call = polls / max(1, result.completed)
    print(f"{args.row}: wall {wall:.2f} s, {ideal / wall:.3f} of ideal, {per_call:.2f} polls/call")
    print(f"workspace kept: {work / 'ws'} (SIMULATED outputs)\n")
    db = sqlite3.connect(work / "ws" / "evalkit.sqlite")
    rows = db.execute(
        "SELECT prediction_id, submitting_at, completed_at, submit_ms, queue_ms, inference_ms, download_ms, total_ms "
        "FROM calls WHERE run_id = ? ORDER BY submitting_at",
        (result.run_id,),
    ).fetchall()

    def at(iso: str) -> float:
        return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() - t0

    print("| wave | submits written s | completed s | row → task created s (median) |")
    print("|---:|---|---|---:|")
    for w in range(0, len(rows), args.concurrency):
        wave = rows[w : w + args.concurrency]
        sub = sorted(at(r[1]) for r in wave)
        done = sorted(at(r[2]) for r in wave if r[2])
        lags = [at(history[r[0]]["created_at"]) - at(r[1]) for r in wave if r[0] in history]
        lag = f"{statistics.median(lags):.3f}" if lags else "—"
        print(
            f"| {w // args.concurrency} | {sub[0]:.2f}–{sub[-1]:.2f} | {done[0]:.2f}–{done[-1]:.2f} | {lag} |"
            if done
            else f"| {w // args.concurrency} | {sub[0]:.2f}–{sub[-1]:.2f} | — | {lag} |"
        )
    print("\n| latency | median ms | p90 ms |")
    print("|---|---:|---:|")
    for i, name in enumerate(("submit", "queue", "inference", "download", "total"), start=3):
        values = sorted(r[i] for r in rows if r[i] is not None)
        if values:
            print(f"| {name} | {statistics.median(values):.0f} | {values[int(0.9 * (len(values) - 1))]:.0f} |")


if __name__ == "__main__":
    main()
