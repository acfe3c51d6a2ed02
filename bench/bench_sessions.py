"""Sessions against single edits: what chaining turns costs in wall time (prints a table; asserts nothing).

The job: S sessions of 3 turns on M models, against the same 3·S prompts sent as single edits, through the
local WaveSpeed simulator (in this process, 127.0.0.1, free port) with a fixed task latency. A session's turns
run one after the other (turn k waits for turn k−1's output), so a session takes ≥ 3 × the latency however
wide the concurrency; the single edits all run at once. Outputs are SIMULATED.

    python bench/bench_sessions.py [--sessions 8] [--models 3] [--latency-ms 500] [--concurrency 48]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
from pathlib import Path

from evalkit.catalog import Catalog
from evalkit.credentials import Secret
from evalkit.engine.runner import arun
from evalkit.providers.wavespeed import PollSchedule
from evalkit.resources import datasets_dir
from evalkit.sim.wavespeed import start_wavespeed_sim

MODELS = ["qwen-edit", "seededit-v3", "step1x-edit", "flux-kontext-pro", "nano-banana-edit"]
TURNS = ["Make the fur blue", "Add a small red hat", "Make it night time"]


def write_suite(folder: Path, n: int, *, sessions: bool) -> Path:
    (folder / "images").mkdir(parents=True)
    shutil.copy(datasets_dir() / "smoke" / "images" / "chelsea.jpg", folder / "images" / "cat.jpg")
    lines = [f'name = "{folder.name}"']
    for i in range(n):
        prompts = [f"{t} ({i})" for t in TURNS]
        if sessions:
            quoted = ", ".join(f'"{p}"' for p in prompts)
            lines += ["[[case]]", f'id = "s{i}"', 'images = ["images/cat.jpg"]', f"turns = [{quoted}]"]
        else:
            for k, p in enumerate(prompts, start=1):
                lines += ["[[case]]", f'id = "s{i}-{k}"', 'operation = "general_edit"', f'prompt = "{p}"']
                lines += ['images = ["images/cat.jpg"]']
    (folder / "suite.toml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sessions", type=int, default=8)
    ap.add_argument("--models", type=int, default=3)
    ap.add_argument("--latency-ms", type=float, default=500.0)
    ap.add_argument("--concurrency", type=int, default=48)
    args = ap.parse_args()
    models = MODELS[: args.models]
    poll = PollSchedule(initial_delay_s=0.05, factor=1.0, quick_polls=0, min_interval_s=0.05, max_interval_s=0.05)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-sessions-") as tmp:
        for mode in ("single edits", "sessions"):
            with start_wavespeed_sim(
                Catalog.load(), fixed_latency_ms=args.latency_ms, output_max_side=64, max_concurrent=2000
            ) as sim:
                suite = write_suite(Path(tmp) / mode.replace(" ", "-"), args.sessions, sessions=mode == "sessions")
                opts = {"wavespeed": {"base_url": sim.base_url, "api_key": Secret(sim.api_key), "poll": poll}}
                t0 = time.perf_counter()
                res = asyncio.run(
                    arun(suite, models=models, workspace=Path(tmp) / f"ws-{mode}", progress=False, no_cache=True,
                         concurrency=args.concurrency, provider_options=opts)
                )  # fmt: skip
                wall = time.perf_counter() - t0
                rows.append((mode, res.completed, len(sim.sim.submits), wall, res.cost_usd, sim.sim.billed_usd))
    print(f"SIMULATED — {args.sessions} × 3 prompts on {len(models)} models, task latency {args.latency_ms:.0f} ms, "
          f"concurrency {args.concurrency}")  # fmt: skip
    print(f"{'mode':<14}{'calls':>7}{'submits':>9}{'wall s':>9}{'recorded $':>12}{'billed $':>10}")
    for mode, calls, submits, wall, cost, billed in rows:
        print(f"{mode:<14}{calls:>7}{submits:>9}{wall:>9.2f}{cost:>12.3f}{billed:>10.3f}")


if __name__ == "__main__":
    main()
