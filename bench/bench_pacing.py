"""Benchmark: waiting for results at the provider's pace (issue 15), and memory over the plan's size.

    python bench/bench_pacing.py                       # the pacing rows (630 calls of 3 s at 100 in flight)
    python bench/bench_pacing.py --memory 1000,10000,100000   # + peak memory per plan size (short tasks)
    python bench/bench_pacing.py --rows adaptive,sync --calls 630
    python bench/bench_pacing.py --rows adaptive,sync --cold-import   # aiohttp's import inside the clock

Pacing rows — the same job as bench_runner.py (one synthetic case, ``qwen-edit``, distinct seeds) against a
fresh ``python -m evalkit.sim`` in its own process with a **fixed task latency of 3 s**, ``--max-concurrent
2000``, 64-px outputs; the client in a second process; WaveSpeed's guidance of **≥ 2 s between two polls of
one task** kept by every evalkit row:

* ``adaptive`` — evalkit as shipped: ``PollSchedule()`` (adaptive pacing: the first wave probed by 8 tasks,
  later first polls at the model's completion-time quantile + a margin steered by first-poll misses, then
  ≥ 2 s apart), a finished task's slot freed before its output downloads;
* ``warm`` — the same after an earlier 20-call run of the model in the same workspace (its times seed the pacer);
* ``fixed`` — the schedule before (``PollSchedule(adaptive=False)``: 1.0 s, 1.25 s, then ≥ 2 s, with the
  learnt first delay = the fastest inference seen);
* ``sync`` — evalkit with ``sync_mode`` (one blocking POST per task, no polls);
* ``sdk`` — the official SDK, ``Client.run(..., poll_interval=1.0)`` from 100 threads.

Ideal = ⌈calls / 100⌉ waves × 3 s. ``polls/call`` from the server's counters. Timings are printed, never asserted.

Memory rows — evalkit as shipped with 0.05 s tasks at ``--memory`` sizes: peak RSS of the client process over
its RSS before the run (``ru_maxrss``), in MB.
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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import PYTHON, ROOT, SimProcess, machine_lines, start_process, stop_process  # noqa: E402
from bench.bench_runner import KEY_ENV, ClientResult, _timed, arun_job, client_sdk, write_suite  # noqa: E402

ROWS = ("adaptive", "warm", "fixed", "sync", "sdk")
#: the "warm" row first runs this many calls in the same workspace (an earlier run, untimed and not counted)
WARM_CALLS = 20
TASK_S = 3.0
MEMORY_TASK_S = 0.05
CONCURRENCY = 100


def pacing_options(row: str, base_url: str, key: str) -> dict[str, Any]:
    """The WaveSpeed provider options of an evalkit pacing row (``adaptive``, ``warm``, ``fixed`` or ``sync``)."""
    from evalkit.credentials import Secret
    from evalkit.providers.wavespeed import PollSchedule

    poll = PollSchedule(adaptive=row != "fixed", timeout_s=600.0)
    opts: dict[str, Any] = {"base_url": base_url, "api_key": Secret(key, "WAVESPEED_API_KEY"), "poll": poll}
    if row == "sync":
        opts["sync_mode"] = True
    return opts


def client_evalkit(row: str, calls: int, base_url: str, key: str, concurrency: int, workdir: Path) -> ClientResult:
    import asyncio

    import evalkit.engine.runner  # noqa: F401  (arun_job's import, done before the clock starts)

    if not os.environ.get("EVALKIT_BENCH_COLD_IMPORT"):
        # evalkit's HTTP stack (aiohttp, ~0.35 s to import once per process) is imported before the clock starts,
        # as the SDK row imports requests: the rows time waiting for results, not imports (--cold-import: not)
        import evalkit.providers.transport  # noqa: F401

    suite = write_suite(workdir)
    opts = pacing_options(row, base_url, key)

    def one_run(n: int) -> Any:
        return asyncio.run(arun_job(suite, workdir, n, concurrency, opts))

    warm_counts: dict[str, int] = {}
    if row == "warm":  # an earlier run of the model in this workspace: its completion times seed the pacer
        import httpx

        one_run(WARM_CALLS)
        stats = httpx.get(f"{base_url}/_sim/stats", timeout=10).json()
        warm_counts = {"warm_polls": int(stats["poll"]), "warm_submits": int(stats["submit"])}

    def work() -> tuple[int, int, dict[str, Any]]:
        r = one_run(calls)
        return r.completed, r.failed + r.unknown + r.pending + r.skipped, {"cost_usd": r.cost_usd, **warm_counts}

    return _timed(row, calls, work)


def client_main(args: argparse.Namespace) -> None:
    key = os.environ[KEY_ENV]
    with tempfile.TemporaryDirectory(prefix="evalkit-bench-pacing-") as tmp:
        if args.client == "sdk":
            res = client_sdk(args.calls, args.base_url, key, 1.0, args.concurrency, Path(tmp))
        else:
            res = client_evalkit(args.client, args.calls, args.base_url, key, args.concurrency, Path(tmp))
    Path(args.result_file).write_text(json.dumps(res.__dict__))


def measure(row: str, calls: int, task_s: float, concurrency: int, cold_import: bool = False) -> dict[str, Any]:
    with (
        SimProcess(fixed_latency_ms=task_s * 1000, output_max_side=64) as sim,
        tempfile.TemporaryDirectory(prefix="evalkit-bench-") as tmp,
    ):
        result_file = Path(tmp) / "result.json"
        argv = [PYTHON, str(Path(__file__).resolve()), "--client", row, "--calls", str(calls)]
        argv += ["--base-url", sim.base_url, "--concurrency", str(concurrency), "--result-file", str(result_file)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("EVALKIT_POLL_")}
        env.update({KEY_ENV: sim.api_key, "TQDM_DISABLE": "1"})
        if cold_import:
            env["EVALKIT_BENCH_COLD_IMPORT"] = "1"
        proc = start_process(argv, env=env, cwd=str(ROOT))
        try:
            rc = proc.wait(timeout=600 + 20 * calls * task_s / concurrency)
        except subprocess.TimeoutExpired:
            rc = None
        finally:
            stop_process(proc)
        stats = sim.stats()
        if rc != 0 or not result_file.exists():
            return {"row": row, "calls": calls, "error": "timed out" if rc is None else f"exit code {rc}"}
        r = json.loads(result_file.read_text())
    ideal = math.ceil(calls / concurrency) * task_s
    n = max(1, r["completed"])
    return {
        "row": row,
        "calls": calls,
        "wall_s": r["wall_s"],
        "ideal_s": ideal,
        "of_ideal": ideal / r["wall_s"],
        "polls_per_call": (stats["poll"] - r["extra"].get("warm_polls", 0)) / n,
        "submits_per_call": (stats["submit"] - r["extra"].get("warm_submits", 0)) / n,
        "ok": f"{r['completed']}/{calls}",
        "peak_rss_mb": r["peak_rss_mb"],
        "rss_before_mb": r["rss_before_mb"],
        "load": os.getloadavg()[0],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--client", help=argparse.SUPPRESS)
    ap.add_argument("--base-url", help=argparse.SUPPRESS)
    ap.add_argument("--result-file", help=argparse.SUPPRESS)
    ap.add_argument("--rows", default=",".join(ROWS))
    ap.add_argument("--calls", type=int, default=630)
    ap.add_argument("--concurrency", type=int, default=CONCURRENCY)
    ap.add_argument("--memory", default="", help="comma-separated plan sizes for the memory rows (e.g. 1000,10000)")
    ap.add_argument(
        "--cold-import", action="store_true", help="evalkit rows import their HTTP stack (aiohttp) inside the clock"
    )
    args = ap.parse_args()
    if args.client:
        client_main(args)
        return
    print(f"# bench_pacing — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, load before {os.getloadavg()[0]:.2f}")
    for line in machine_lines():
        print(f"# {line}")
    rows = [r for r in args.rows.split(",") if r]
    if rows:
        cold = ", HTTP stack imported inside the clock" if args.cold_import else ""
        print(f"\n{args.calls} calls of {TASK_S:g} s at {args.concurrency} in flight (SIMULATED server{cold})\n")
        print("| row | wall s | ideal s | of ideal | polls/call | submits/call | ok | load |")
        print("|---|---:|---:|---:|---:|---:|---|---:|")
        for row in rows:
            m = measure(row, args.calls, TASK_S, args.concurrency, cold_import=args.cold_import)
            if "error" in m:
                print(f"| {row} | — | — | — | — | — | {m['error']} | |")
                continue
            print(
                f"| {row} | {m['wall_s']:.2f} | {m['ideal_s']:.1f} | {m['of_ideal']:.3f} | {m['polls_per_call']:.2f} "
                f"| {m['submits_per_call']:.2f} | {m['ok']} | {m['load']:.2f} |",
                flush=True,
            )
    sizes = [int(s) for s in args.memory.split(",") if s.strip()]
    if sizes:
        print(f"\nmemory: evalkit as shipped, {MEMORY_TASK_S:g} s tasks at {args.concurrency} in flight\n")
        print("| calls | wall s | RSS before MB | peak MB | peak over before MB | ok | load |")
        print("|---:|---:|---:|---:|---:|---|---:|")
        for n in sizes:
            t = time.perf_counter()
            m = measure("adaptive", n, MEMORY_TASK_S, args.concurrency)
            if "error" in m:
                print(f"| {n} | {time.perf_counter() - t:.0f} | — | — | — | {m['error']} | |")
                continue
            print(
                f"| {n} | {m['wall_s']:.1f} | {m['rss_before_mb']:.1f} | {m['peak_rss_mb']:.1f} | "
                f"{m['peak_rss_mb'] - m['rss_before_mb']:.1f} | {m['ok']} | {m['load']:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
