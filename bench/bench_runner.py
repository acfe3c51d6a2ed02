"""Benchmark: evalkit's runner against the alternatives, side by side, on the local WaveSpeed server.

    python bench/bench_runner.py                      # 100, 1,000 and 10,000 calls
    python bench/bench_runner.py --quick              # 100 and 1,000 calls
    python bench/bench_runner.py --sizes 1000 --tools evalkit,sdk
    python bench/bench_runner.py --diagnose           # + variants, cProfile, HTTP client probe, transport safety

Every row runs the same job — N image edits of one synthetic case (64×48 PNG sent inline, model
``qwen-edit``, seed 1000+i so every request is distinct) — against a fresh ``python -m evalkit.sim``
started in its **own process** with a fixed task latency of 0.5 s, no account concurrency limit in the
way (``--max-concurrent 2000``) and outputs capped at 64 px (``--output-max-side 64``: a distinct
1024-px output costs the server 30–50 ms to render, which would measure the simulator, not the client).
Outputs are SIMULATED. The client runs in a **second process** so its CPU time and peak memory are its own.

Tools (rows; ``--tools`` takes the ids on the left):

* ``evalkit`` — ``evalkit.arun`` as shipped (its default HTTP client: httpx on
  ``evalkit.providers.transport.SafeAiohttpTransport``) on a one-case suite with ``repeats=N``,
  ``concurrency=100``, ``no_cache=True`` and a flat poll every ``--poll-s`` seconds
  (``PollSchedule(initial_delay_s=g, factor=1, quick_polls=0, min_interval_s=g, max_interval_s=g)``).
  Timed: the whole ``arun`` call (planning, the workspace writes, outputs streamed to the blob store,
  the summary).
* ``evalkit-httpcore`` — the same with ``EVALKIT_HTTP_TRANSPORT=httpcore`` in the client process
  (httpx's own transport, evalkit's HTTP client before the change): the contrast row.
  As shipped it learns each model's first poll delay: once a task has completed, later tasks of the model are
  first polled after the fastest inference the server reported (0.5 s here), then every ``--poll-s``.
* ``evalkit-flat-poll`` — the same with ``learn_first_delay=False``: a flat poll every ``--poll-s`` from
  the start (evalkit before the learnt first delay).
* ``evalkit-sync`` (``--diagnose`` only) — the provider's ``sync_mode`` (one blocking POST, no polls).
* ``sdk`` — the official ``wavespeed`` SDK (``Client(api_key, base_url).run(model, input,
  poll_interval=g)``, one blocking call per task) from a ``ThreadPoolExecutor(100)``, then the output
  downloaded with ``requests`` and written to disk (the SDK returns only URLs).
* ``original-sync`` — the original app's pattern (reference §4): one call at a time,
  ``requests.post(..., timeout=120)`` with ``enable_sync_mode: True``; if the reply is not completed,
  poll every 2 s; then download ``outputs[0]``.
* ``original-poll`` — the same app's polling path (``enable_sync_mode: False``): submit, poll at once
  and then every 2 s (``poll_until_complete(interval_seconds=2.0)``), download.

The sequential rows would take hours at 1,000+ calls: they are measured at ``--seq-calls`` /
``--seq-poll-calls`` calls and **extrapolated** linearly (marked ``~``). Columns: see bench/README.md.
Bounded: loopback only, each client process has a time limit, every server process is stopped on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import (  # noqa: E402
    PYTHON,
    ROOT,
    SimProcess,
    machine_lines,
    peak_rss_mb,
    reset_peak_rss,
    rss_mb,
    start_process,
    stop_process,
)

TASK_LATENCY_S = 0.5
CONCURRENCY = 100
MODEL_ID = "qwen-edit"
ENDPOINT = "wavespeed-ai/qwen-image/edit"
BASE_SEED = 1000
KEY_ENV = "EVALKIT_BENCH_SIM_KEY"  # the simulator's random key, handed to the client process
TOOLS = ("evalkit", "sdk", "original-sync", "original-poll")
#: evalkit with one setting changed *in the client process only* (evalkit's modules are not edited).
VARIANTS = ("evalkit-httpcore", "evalkit-flat-poll", "evalkit-sync")
DEFAULT_TOOLS = ("evalkit", "evalkit-httpcore", "evalkit-flat-poll", "sdk", "original-sync", "original-poll")
#: what the table calls each tool
LABELS = {
    "evalkit-httpcore": "evalkit (httpcore)",
    "evalkit-flat-poll": "evalkit (flat 0.1 s polls)",
    "evalkit-sync": "evalkit (sync mode)",
}
#: environment of the client process, per tool: evalkit's own switches, as a user would set them. The
#: variables are removed for every other row, so the shipped default is what the ``evalkit`` row measures.
CLIENT_ENV = {"evalkit-httpcore": {"EVALKIT_HTTP_TRANSPORT": "httpcore"}}
EVALKIT_SWITCHES = (
    "EVALKIT_HTTP_TRANSPORT",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
)
SEQUENTIAL = {"original-sync", "original-poll"}
ORIGINAL_POLL_S = 2.0


def label(tool: str) -> str:
    return LABELS.get(tool, tool)


# ---- the job -------------------------------------------------------------------------------------


def write_suite(folder: Path) -> Path:
    """A one-case suite (a 64×48 PNG, general edit) in ``folder``/bench; returns the suite folder."""
    from PIL import Image

    suite = folder / "bench"
    (suite / "images").mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (64, 48), (200, 30, 30)).save(suite / "images" / "a.png")
    (suite / "suite.toml").write_text(
        'name = "bench"\ndescription = "one synthetic case for the runner benchmark"\nversion = 1\n\n'
        '[[case]]\nid = "a"\noperation = "general_edit"\ncategory = "style_change"\nprompt = "Make it blue"\n'
        'images = ["images/a.png"]\n',
        encoding="utf-8",
    )
    return suite


def request_bodies(suite: Path, calls: int) -> list[dict[str, Any]]:
    """The exact bodies evalkit sends for this suite (its own ``build_body``), seed 1000+i: every tool sends these."""
    from evalkit.catalog import Catalog
    from evalkit.providers.base import EditRequest, ImageEditOptions
    from evalkit.providers.wavespeed import WaveSpeedEditProvider
    from evalkit.suites import load_suite

    case = load_suite(str(suite)).cases[0]
    images, _ = case.load_inputs()
    model = Catalog.load().select(MODEL_ID)[0]
    template = WaveSpeedEditProvider().build_body(
        EditRequest(
            model=model,
            images=tuple(images),
            prompt=case.prompt,
            operation=case.operation,
            options=ImageEditOptions(seed=BASE_SEED),
        )
    )
    return [{**template, "seed": BASE_SEED + i} for i in range(calls)]


# ---- request timing (wrappers installed in the client process only) -----------------------------


class RequestClock:
    """Wall time of every HTTP request a client library sends (send → response headers + body read)."""

    def __init__(self) -> None:
        self.ms: list[float] = []

    def summary(self) -> dict[str, float]:
        if not self.ms:
            return {}
        q = statistics.quantiles(self.ms, n=20)
        return {"req_p50_ms": statistics.median(self.ms), "req_p95_ms": q[18], "requests": len(self.ms)}

    def wrap_httpx(self) -> None:
        import httpx

        original = httpx.AsyncClient.send
        clock = self

        async def send(self, request, *args, **kw):  # type: ignore[no-untyped-def]
            t = time.perf_counter()
            try:
                return await original(self, request, *args, **kw)
            finally:
                clock.ms.append((time.perf_counter() - t) * 1000)

        httpx.AsyncClient.send = send  # type: ignore[method-assign]

    def wrap_requests(self) -> None:
        import requests

        original = requests.Session.send
        clock = self

        def send(self, request, **kw):  # type: ignore[no-untyped-def]
            t = time.perf_counter()
            try:
                return original(self, request, **kw)
            finally:
                clock.ms.append((time.perf_counter() - t) * 1000)

        requests.Session.send = send  # type: ignore[method-assign]


class StoreClock:
    """Time spent inside the Workspace writes a call makes. The SQLite writes run on the event-loop
    thread (every other call waits meanwhile); ``put_blob_file`` (the output's fsync + rename) runs in
    a worker thread since evalkit moved it off the loop, so several can overlap — hence the lock."""

    METHODS = (
        "mark_submitting",
        "mark_submitted",
        "finish_call",
        "record_usage",
        "put_blob_file",
        "insert_calls",
        "find_completed",
        "get_call",
    )
    OFF_LOOP = ("put_blob_file",)

    def __init__(self) -> None:
        self.wall_s: dict[str, float] = {m: 0.0 for m in self.METHODS}
        self.count: dict[str, int] = {m: 0 for m in self.METHODS}
        self._lock = threading.Lock()

    def install(self) -> None:
        from evalkit.store import Workspace

        for name in self.METHODS:
            original = getattr(Workspace, name)

            def timed(*a, __original=original, __name=name, **kw):  # type: ignore[no-untyped-def]
                t = time.perf_counter()
                try:
                    return __original(*a, **kw)
                finally:
                    with self._lock:
                        self.wall_s[__name] += time.perf_counter() - t
                        self.count[__name] += 1

            setattr(Workspace, name, timed)


# ---- the clients (each runs in its own process) ---------------------------------------------------


@dataclass
class ClientResult:
    tool: str
    calls: int
    completed: int = 0
    failed: int = 0
    wall_s: float = 0.0
    cpu_s: float = 0.0
    peak_rss_mb: float = 0.0
    rss_before_mb: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def _timed(tool: str, calls: int, work) -> ClientResult:  # type: ignore[no-untyped-def]
    import gc

    gc.collect()
    res = ClientResult(tool, calls, rss_before_mb=rss_mb())
    reset_peak_rss()
    c0, t0 = time.process_time(), time.perf_counter()
    res.completed, res.failed, res.extra = work()
    res.wall_s, res.cpu_s = time.perf_counter() - t0, time.process_time() - c0
    res.peak_rss_mb = peak_rss_mb()
    res.extra["t0"] = t0  # the phase marks' clock starts here
    return res


def record_transport() -> list[str]:
    """The class name of every transport evalkit's WaveSpeed provider gets from ``new_client`` (this process
    only): proof of what a row measured (``SafeAiohttpTransport``, or ``AsyncHTTPTransport`` = httpcore)."""
    import evalkit.providers.wavespeed as wavespeed

    seen: list[str] = []
    original = wavespeed.new_client

    def recorded(*a, **kw):  # type: ignore[no-untyped-def]
        client = original(*a, **kw)
        seen.append(type(client._transport).__name__)  # noqa: SLF001 (a measurement, not a dependency)
        return client

    wavespeed.new_client = recorded  # type: ignore[assignment]
    return seen


def poll_schedule(tool: str, poll_s: float):  # type: ignore[no-untyped-def]
    """The row's poll schedule: every ``poll_s`` with evalkit's learnt first delay (the ``evalkit`` row, as
    shipped), or without it (``evalkit-flat-poll``)."""
    from evalkit.providers.wavespeed import PollSchedule

    return PollSchedule(
        initial_delay_s=poll_s,
        factor=1.0,
        quick_polls=0,
        min_interval_s=poll_s,
        max_interval_s=poll_s,
        timeout_s=120.0,
        learn_first_delay=tool != "evalkit-flat-poll",
    )


async def arun_job(suite: Path, workdir: Path, calls: int, concurrency: int, wavespeed: dict[str, Any]) -> Any:
    """evalkit's run of the benchmark job: ``calls`` edits of the one case, distinct seeds, no cache, in
    ``workdir``/ws, with these WaveSpeed provider options (every evalkit row of every bench goes through here)."""
    from evalkit.engine.runner import arun

    return await arun(
        str(suite),
        MODEL_ID,
        repeats=calls,
        concurrency=concurrency,
        no_cache=True,
        workspace=workdir / "ws",
        provider_options={"wavespeed": wavespeed},
        progress=False,
        grace_period_s=5.0,
    )


def client_evalkit(
    calls: int,
    base_url: str,
    key: str,
    poll_s: float,
    concurrency: int,
    workdir: Path,
    profile: Path | None = None,
    variant: str = "evalkit",
) -> ClientResult:
    import evalkit.engine.runner  # noqa: F401  (arun_job's import, done before the clock starts)
    from evalkit.credentials import Secret

    suite = write_suite(workdir)
    poll = poll_schedule(variant, poll_s)
    requests_clock, store_clock = RequestClock(), StoreClock()
    requests_clock.wrap_httpx()
    store_clock.install()
    marks = record_memory_phases()
    transports = record_transport()

    async def run_once():  # type: ignore[no-untyped-def]
        opts: dict[str, Any] = {"base_url": base_url, "api_key": Secret(key, "WAVESPEED_API_KEY"), "poll": poll}
        if variant == "evalkit-sync":
            opts["sync_mode"] = True
        return await arun_job(suite, workdir, calls, concurrency, opts)

    def work() -> tuple[int, int, dict[str, Any]]:
        if profile is not None:
            import cProfile

            prof = cProfile.Profile()
            r = prof.runcall(asyncio.run, run_once())
            prof.dump_stats(str(profile))
        else:
            r = asyncio.run(run_once())
        extra = {
            **requests_clock.summary(),
            "store_s": dict(store_clock.wall_s),
            "store_n": dict(store_clock.count),
            "cost_usd": r.cost_usd,
            "unknown": r.unknown,
            "pending": r.pending,
            "rss_marks": marks,
            "transport": ",".join(sorted(set(transports))) or "?",
        }
        return r.completed, r.failed + r.unknown + r.pending + r.skipped, extra

    return _timed(variant, calls, work)


def record_memory_phases() -> list[tuple[str, float, float, float]]:
    """(phase, RSS MB, peak MB since the reset, perf_counter) at the edges of a run's phases, from wrappers around
    evalkit.engine.execution's ``Execution.execute`` and evalkit.engine.runner's ``summarise`` (this process only)."""
    import evalkit.engine.execution as execution
    import evalkit.engine.runner as runner

    marks: list[tuple[str, float, float, float]] = []

    def mark(phase: str) -> None:
        marks.append((phase, rss_mb(), peak_rss_mb(), time.perf_counter()))

    execute = execution.Execution.execute

    async def timed_execute(self):  # type: ignore[no-untyped-def]
        mark("planned + inserted")
        try:
            await execute(self)
        finally:
            mark("all calls done")

    summarise = runner.summarise

    def timed_summarise(*a, **kw):  # type: ignore[no-untyped-def]
        try:
            return summarise(*a, **kw)
        finally:
            mark("summarised")

    execution.Execution.execute = timed_execute  # type: ignore[method-assign]
    runner.summarise = timed_summarise  # type: ignore[assignment]
    return marks


def client_sdk(calls: int, base_url: str, key: str, poll_s: float, concurrency: int, workdir: Path) -> ClientResult:
    import requests
    import wavespeed

    bodies = request_bodies(write_suite(workdir), calls)
    out_dir = workdir / "outputs"
    out_dir.mkdir()
    client = wavespeed.Client(api_key=key, base_url=base_url)
    clock = RequestClock()
    clock.wrap_requests()

    def one(i: int) -> bool:
        result = client.run(ENDPOINT, bodies[i], poll_interval=poll_s, timeout=120.0)
        with requests.get(result["outputs"][0], timeout=60, stream=True) as resp:
            resp.raise_for_status()
            with open(out_dir / f"{i}.jpg", "wb") as fh:
                for chunk in resp.iter_content(65536):
                    fh.write(chunk)
        return True

    def work() -> tuple[int, int, dict[str, Any]]:
        ok = failed = 0
        errors: dict[str, int] = {}
        with ThreadPoolExecutor(concurrency) as pool:
            for fut in [pool.submit(one, i) for i in range(calls)]:
                try:
                    fut.result()
                    ok += 1
                except Exception as exc:  # noqa: BLE001 (count and go on, as a batch script would)
                    failed += 1
                    errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
        return ok, failed, {**clock.summary(), "errors": errors}

    return _timed("sdk", calls, work)


def client_original(calls: int, base_url: str, key: str, sync: bool, workdir: Path) -> ClientResult:
    """The original app's WaveSpeedEditProvider + WaveSpeedPolling, reduced to their HTTP (reference §4)."""
    import requests

    bodies = request_bodies(write_suite(workdir), calls)
    out_dir = workdir / "outputs"
    out_dir.mkdir()
    api = f"{base_url}/api/v3"
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    clock = RequestClock()
    clock.wrap_requests()

    def poll_until_complete(prediction_id: str, timeout_s: float = 180.0) -> dict[str, Any]:
        start = time.time()
        while True:  # polls at once, then sleeps interval_seconds (WaveSpeedPolling.poll_until_complete)
            r = requests.get(
                f"{api}/predictions/{prediction_id}/result", headers={"Authorization": f"Bearer {key}"}, timeout=30
            )
            r.raise_for_status()
            data = r.json()["data"]
            if data["status"] in ("completed", "failed"):
                return data
            if time.time() - start > timeout_s:
                raise TimeoutError(prediction_id)
            time.sleep(ORIGINAL_POLL_S)

    def one(i: int) -> None:
        body = {**bodies[i], "enable_sync_mode": sync, "enable_base64_output": False}
        r = requests.post(f"{api}/{ENDPOINT}", json=body, headers=headers, timeout=120)
        r.raise_for_status()
        data = r.json().get("data") or r.json()
        if not (data.get("status") == "completed" and data.get("outputs")):
            data = poll_until_complete(data["id"])
        if data["status"] != "completed":
            raise RuntimeError(data.get("error"))
        img = requests.get(data["outputs"][0], timeout=120)
        img.raise_for_status()
        (out_dir / f"{i}.jpg").write_bytes(img.content)

    def work() -> tuple[int, int, dict[str, Any]]:
        ok = failed = 0
        for i in range(calls):
            try:
                one(i)
                ok += 1
            except Exception:  # noqa: BLE001
                failed += 1
        return ok, failed, clock.summary()

    return _timed("original-sync" if sync else "original-poll", calls, work)


def client_main(args: argparse.Namespace) -> None:
    """Entry of the client process: run one tool, write its measurements as JSON."""
    import shutil
    import signal

    key = os.environ[KEY_ENV]
    with tempfile.TemporaryDirectory(prefix="evalkit-bench-client-") as tmp:
        workdir = Path(tmp)

        def stop_now(signum: int, _frame: object) -> None:  # interrupted: nothing here is worth finishing
            shutil.rmtree(tmp, ignore_errors=True)
            os._exit(128 + signum)

        signal.signal(signal.SIGINT, stop_now)
        signal.signal(signal.SIGTERM, stop_now)
        if args.client.startswith("evalkit"):
            res = client_evalkit(
                args.calls,
                args.base_url,
                key,
                args.poll_s,
                args.concurrency,
                workdir,
                Path(args.profile) if args.profile else None,
                variant=args.client,
            )
        elif args.client == "sdk":
            res = client_sdk(args.calls, args.base_url, key, args.poll_s, args.concurrency, workdir)
        else:
            res = client_original(args.calls, args.base_url, key, args.client == "original-sync", workdir)
    Path(args.result_file).write_text(json.dumps(res.__dict__))


# ---- the orchestrator -----------------------------------------------------------------------------


@dataclass
class Row:
    calls: int
    tool: str
    wall_s: float
    ideal_s: float
    submits: float  # per call
    polls: float
    downloads: float
    cpu_ms: float  # client CPU per call
    server_cpu_ms: float
    peak_rss_mb: float
    ok: str
    load: float
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return self.wall_s / self.ideal_s


def ideal_s(calls: int, poll_s: float, concurrency: int = CONCURRENCY) -> float:
    """⌈calls/concurrency⌉ waves × (task latency + one poll interval): a worker cannot see a result sooner."""
    return math.ceil(calls / concurrency) * (TASK_LATENCY_S + poll_s)


def measure(
    tool: str, calls: int, *, poll_s: float, concurrency: int, output_max_side: int, profile: Path | None = None
) -> Row:
    """One row: a fresh simulator process, one client process, the server's counters."""
    seq = tool in SEQUENTIAL
    per_call_s = (
        (TASK_LATENCY_S + (ORIGINAL_POLL_S if tool == "original-poll" else 0.1))
        if seq
        else (TASK_LATENCY_S + poll_s) / concurrency
    )
    limit_s = 300 + 15 * calls * per_call_s  # generous (evalkit on httpcore ran 5–7× ideal); then it is killed
    with (
        SimProcess(fixed_latency_ms=TASK_LATENCY_S * 1000, output_max_side=output_max_side) as sim,
        tempfile.TemporaryDirectory(prefix="evalkit-bench-") as tmp,
    ):
        result_file = Path(tmp) / "result.json"
        argv = [
            PYTHON,
            str(Path(__file__).resolve()),
            "--client",
            tool,
            "--calls",
            str(calls),
            "--base-url",
            sim.base_url,
            "--poll-s",
            str(poll_s),
            "--concurrency",
            str(concurrency),
            "--result-file",
            str(result_file),
        ]
        if profile is not None:
            argv += ["--profile", str(profile)]
        server_cpu0 = sim.cpu_s()
        env = {k: v for k, v in os.environ.items() if k not in EVALKIT_SWITCHES and not k.startswith("EVALKIT_POLL_")}
        env.update({KEY_ENV: sim.api_key, "TQDM_DISABLE": "1", **CLIENT_ENV.get(tool, {})})
        proc = start_process(argv, env=env, cwd=str(ROOT))
        try:
            rc = proc.wait(timeout=limit_s)
        except subprocess.TimeoutExpired:
            rc = None
        finally:
            stop_process(proc)
        server_cpu = sim.cpu_s() - server_cpu0
        stats = sim.stats()
        if rc != 0 or not result_file.exists():
            why = "timed out" if rc is None else f"exit code {rc}"
            return Row(
                calls,
                tool,
                float("nan"),
                ideal_s(calls, poll_s, concurrency),
                0,
                0,
                0,
                float("nan"),
                float("nan"),
                float("nan"),
                f"client {why}",
                os.getloadavg()[0],
            )
        r = json.loads(result_file.read_text())
    n = max(1, calls)
    return Row(
        calls=calls,
        tool=tool,
        wall_s=r["wall_s"],
        ideal_s=ideal_s(calls, poll_s, concurrency),
        submits=stats["submit"] / n,
        polls=stats["poll"] / n,
        downloads=stats["download"] / n,
        cpu_ms=1000 * r["cpu_s"] / n,
        server_cpu_ms=1000 * server_cpu / n,
        peak_rss_mb=r["peak_rss_mb"],
        ok=f"{r['completed']}/{calls}" + (f" ({r['failed']} failed)" if r["failed"] else ""),
        load=os.getloadavg()[0],
        extra={
            **r["extra"],
            "billed": stats.get("completed"),
            "rss_before_mb": r["rss_before_mb"],
            "peak_in_flight": stats.get("peak_in_flight"),
        },
    )


def extrapolate(row: Row, calls: int, poll_s: float, concurrency: int) -> Row:
    """A sequential tool's row scaled linearly to ``calls`` (per-call costs stay, wall time scales)."""
    factor = calls / row.calls
    return Row(
        calls,
        row.tool,
        row.wall_s * factor,
        ideal_s(calls, poll_s, concurrency),
        row.submits,
        row.polls,
        row.downloads,
        row.cpu_ms,
        row.server_cpu_ms,
        row.peak_rss_mb,
        f"~{calls} (from {row.calls})",
        row.load,
        note=f"extrapolated from {row.calls} calls",
        extra=row.extra,
    )


COLUMNS = (  # (title, width) — see bench/README.md for what each means
    ("calls", 6),
    ("tool", 26),
    ("wall s", 8),
    ("ideal s", 7),
    ("× ideal", 7),
    ("submits", 7),
    ("polls", 6),
    ("downl.", 6),
    ("CPU ms", 7),
    ("srv ms", 6),
    ("peak MB", 7),
    ("+MB", 5),
    ("req p50", 7),
    ("req p95", 7),
    ("ok", 21),
    ("load", 4),
)
HEADER = " ".join(f"{t:<{w}}" if t in ("tool", "ok") else f"{t:>{w}}" for t, w in COLUMNS)


def _num(v: float | None, fmt: str, prefix: str = "") -> str:
    return "" if v is None or v != v else f"{prefix}{v:{fmt}}"


def format_row(row: Row) -> str:
    """One line of the table; ``~`` marks extrapolated numbers, blank cells do not apply."""
    approx = "~" if row.note.startswith("extrapolated") else ""
    before = row.extra.get("rss_before_mb")
    cells = (
        str(row.calls),
        label(row.tool),
        _num(row.wall_s, ".1f", approx),
        _num(row.ideal_s, ".1f"),
        _num(row.ratio if row.ideal_s else None, ".2f", approx),
        _num(row.submits, ".2f"),
        _num(row.polls, ".2f"),
        _num(row.downloads, ".2f"),
        _num(row.cpu_ms, ".2f"),
        _num(row.server_cpu_ms, ".2f"),
        _num(row.peak_rss_mb, ".0f"),
        _num(row.peak_rss_mb - before if before else None, ".0f", "+"),
        _num(row.extra.get("req_p50_ms"), ".1f"),
        _num(row.extra.get("req_p95_ms"), ".1f"),
        row.ok,
        _num(row.load, ".1f"),
    )
    return " ".join(
        f"{c:<{w}}" if t in ("tool", "ok") else f"{c:>{w}}" for c, (t, w) in zip(cells, COLUMNS, strict=True)
    )


def runner_rows(
    sizes: list[int],
    tools: list[str],
    *,
    poll_s: float,
    concurrency: int,
    output_max_side: int,
    seq_calls: int,
    seq_poll_calls: int,
    echo=None,
) -> list[Row]:  # type: ignore[no-untyped-def]
    """Every (size, tool) row; sequential tools are measured once and extrapolated to the other sizes."""
    rows: list[Row] = []
    measured_seq: dict[str, Row] = {}
    for calls in sorted(sizes):
        for tool in tools:
            if tool in SEQUENTIAL:
                m = min(calls, seq_calls if tool == "original-sync" else seq_poll_calls)
                if tool not in measured_seq or measured_seq[tool].calls != m:
                    if tool not in measured_seq or measured_seq[tool].calls < m:
                        measured_seq[tool] = measure(
                            tool, m, poll_s=poll_s, concurrency=concurrency, output_max_side=output_max_side
                        )
                base = measured_seq[tool]
                row = base if base.calls == calls else extrapolate(base, calls, poll_s, concurrency)
            else:
                row = measure(tool, calls, poll_s=poll_s, concurrency=concurrency, output_max_side=output_max_side)
            rows.append(row)
            if echo:
                echo(row)
    return rows


def add_runner_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument(
        "--sizes", default="100,1000,10000", help="comma-separated numbers of calls (default 100,1000,10000)"
    )
    ap.add_argument("--quick", action="store_true", help="sizes 100 and 1000 only")
    ap.add_argument(
        "--tools",
        default=",".join(DEFAULT_TOOLS),
        help=f"comma-separated, from {','.join(TOOLS + VARIANTS)} (default {','.join(DEFAULT_TOOLS)})",
    )
    ap.add_argument("--poll-s", type=float, default=0.1, help="poll interval of evalkit and the SDK (default 0.1 s)")
    ap.add_argument("--concurrency", type=int, default=CONCURRENCY, help="evalkit's and the SDK pool's (default 100)")
    ap.add_argument("--output-max-side", type=int, default=64, help="simulated output size cap in px (default 64)")
    ap.add_argument("--seq-calls", type=int, default=100, help="calls measured for original-sync (default 100)")
    ap.add_argument("--seq-poll-calls", type=int, default=25, help="calls measured for original-poll (default 25)")


def sizes_of(args: argparse.Namespace) -> list[int]:
    return [100, 1000] if args.quick else [int(s) for s in args.sizes.split(",") if s.strip()]


def conditions_line(args: argparse.Namespace) -> str:
    """The row conditions, printed above every table."""
    return (
        f"runner rows: task latency {TASK_LATENCY_S:g} s (fixed), concurrency {args.concurrency}, evalkit and sdk "
        f"poll every {args.poll_s:g} s (evalkit, as shipped: the first poll of a model's task after its fastest "
        f"reported inference once one task completed), outputs ≤ {args.output_max_side} px, server and client in "
        "separate processes; "
        "outputs are SIMULATED"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_runner_arguments(ap)
    ap.add_argument("--diagnose", action="store_true", help="also: HTTP client probe, store share, cProfile of evalkit")
    ap.add_argument(
        "--client", choices=TOOLS + VARIANTS, help=argparse.SUPPRESS
    )  # internal: run one client in this process
    ap.add_argument("--calls", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--base-url", help=argparse.SUPPRESS)
    ap.add_argument("--result-file", help=argparse.SUPPRESS)
    ap.add_argument("--profile", help=argparse.SUPPRESS)
    ap.add_argument("--probe", choices=PROBE_CLIENTS, help=argparse.SUPPRESS)
    ap.add_argument("--rounds", type=int, default=20, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.client:
        client_main(args)
        return
    if args.probe:
        probe_main(args)
        return
    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    bad = set(tools) - set(TOOLS) - set(VARIANTS)
    if bad:
        ap.error(f"unknown tools {sorted(bad)}; choose from {', '.join(TOOLS + VARIANTS)}")
    for line in machine_lines():
        print(line)
    print(conditions_line(args))
    print(HEADER)
    print("-" * len(HEADER))
    rows = runner_rows(
        sizes_of(args),
        tools,
        poll_s=args.poll_s,
        concurrency=args.concurrency,
        output_max_side=args.output_max_side,
        seq_calls=args.seq_calls,
        seq_poll_calls=args.seq_poll_calls,
        echo=lambda r: print(format_row(r), flush=True),
    )
    print_store_share(rows)
    print_memory_phases(rows)
    if args.diagnose:
        print_diagnostics(args.concurrency, args.poll_s, args.output_max_side)


# ---- diagnostics: the HTTP client alone, and what a transport reports when a sent POST is dropped --------

#: probe clients: httpx with its own transport (httpcore) at its defaults; evalkit's ``new_client()`` with
#: ``EVALKIT_HTTP_TRANSPORT=httpcore`` (its pool limits, httpx's transport) and as shipped
#: (SafeAiohttpTransport); httpx on httpx-aiohttp's transport without evalkit's error mapping (what the
#: wrapper costs); aiohttp alone (the floor).
PROBE_CLIENTS = ("httpx (httpcore)", "evalkit client (httpcore)", "evalkit client", "httpx-aiohttp", "aiohttp")
PROBE_SINGLE = ("httpx (httpcore)", "evalkit client", "aiohttp")


async def _probe(kind: str, url: str, key: str, workers: int, rounds: int, gap_s: float) -> dict[str, Any]:
    """``workers`` tasks, each ``rounds`` × (sleep ``gap_s``; GET a poll URL) — the shape of evalkit's polling."""
    import httpx

    from evalkit.providers.http import DEFAULT_LIMITS, new_client

    headers = {"Authorization": f"Bearer {key}"}
    latencies: list[float] = []
    if kind == "aiohttp":
        import aiohttp

        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=workers))

        async def get() -> None:
            async with session.get(url, headers=headers) as resp:
                await resp.read()
                assert resp.status == 200

        close = session.close
    else:
        if kind == "httpx (httpcore)":
            client = httpx.AsyncClient()
        elif kind == "httpx-aiohttp":
            from httpx_aiohttp import AiohttpTransport

            client = httpx.AsyncClient(transport=AiohttpTransport(limits=DEFAULT_LIMITS))
        else:  # evalkit's client; which transport depends on EVALKIT_HTTP_TRANSPORT (set by the caller)
            client = new_client()

        async def get() -> None:
            resp = await client.get(url, headers=headers)
            assert resp.status_code == 200

        close = client.aclose

    async def worker() -> None:
        for _ in range(rounds):
            await asyncio.sleep(gap_s)
            t = time.perf_counter()
            await get()
            latencies.append((time.perf_counter() - t) * 1000)

    await get()  # warm-up (connection, imports)
    c0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(workers)))
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    await close()
    q = statistics.quantiles(latencies, n=20)
    return {
        "client": kind,
        "requests": len(latencies),
        "wall_s": wall,
        "req_per_s": len(latencies) / wall,
        "p50_ms": statistics.median(latencies),
        "p95_ms": q[18],
        "cpu_us": 1e6 * cpu / len(latencies),
    }


def probe_main(args: argparse.Namespace) -> None:
    """Entry of a probe process: one HTTP client, the poll-shaped load, JSON out."""
    res = asyncio.run(
        _probe(args.probe, args.base_url, os.environ[KEY_ENV], args.concurrency, args.rounds, args.poll_s)
    )
    Path(args.result_file).write_text(json.dumps(res))


def http_client_probe(
    concurrency: int = CONCURRENCY,
    rounds: int = 20,
    gap_s: float = 0.1,
    clients: tuple[str, ...] = PROBE_CLIENTS,
    repeats: int = 3,
) -> list[dict[str, Any]]:
    """Each HTTP client in its own process polling one completed prediction, against one simulator process;
    ``repeats`` processes per client, the one with the median throughput reported."""
    import httpx

    out = []
    with SimProcess(fixed_latency_ms=0, output_max_side=64) as sim, tempfile.TemporaryDirectory() as tmp:
        body = request_bodies(write_suite(Path(tmp)), 1)[0]
        auth = {"Authorization": f"Bearer {sim.api_key}"}
        pid = httpx.post(f"{sim.base_url}/api/v3/{ENDPOINT}", json=body, headers=auth).json()["data"]["id"]
        url = f"{sim.base_url}/api/v3/predictions/{pid}/result"
        base_env = {k: v for k, v in os.environ.items() if k not in EVALKIT_SWITCHES}
        for single in (True, False):
            for kind in PROBE_SINGLE if single else clients:
                env = {**base_env, KEY_ENV: sim.api_key}
                if kind.endswith("(httpcore)"):
                    env["EVALKIT_HTTP_TRANSPORT"] = "httpcore"
                runs = []
                for _ in range(repeats):
                    result_file = Path(tmp) / "probe.json"
                    argv = [
                        PYTHON,
                        str(Path(__file__).resolve()),
                        "--probe",
                        kind,
                        "--base-url",
                        url,
                        "--result-file",
                        str(result_file),
                        "--concurrency",
                        str(1 if single else concurrency),
                        "--rounds",
                        str(200 if single else rounds),
                        "--poll-s",
                        str(0.0 if single else gap_s),
                    ]
                    proc = start_process(argv, env=env, cwd=str(ROOT))
                    try:
                        proc.wait(timeout=300)
                    finally:
                        stop_process(proc)
                    runs.append(json.loads(result_file.read_text()))
                runs.sort(key=lambda r: r["req_per_s"])
                r = runs[len(runs) // 2]
                r["workers"] = 1 if single else concurrency
                r["req_per_s_range"] = (runs[0]["req_per_s"], runs[-1]["req_per_s"])
                out.append(r)
    return out


def transport_safety_check() -> list[tuple[str, str, str, int]]:
    """What a transport raises when the server drops the connection after a POST arrived whole (before
    replying, or half-way through the reply body), and how many times evalkit's WaveSpeed provider then
    sends that (paid) POST. It must be once: the task may exist and be billed, the outcome is unknown.
    The last transport is the one evalkit ships (``new_client()``, i.e. ``SafeAiohttpTransport``)."""
    from importlib import metadata

    import httpx
    from httpx_aiohttp import AiohttpTransport

    from evalkit.catalog import Catalog
    from evalkit.credentials import Secret
    from evalkit.providers.base import EditRequest, ImageEditOptions
    from evalkit.providers.http import new_client
    from evalkit.providers.wavespeed import WaveSpeedEditProvider
    from evalkit.suites import load_suite

    async def main() -> list[tuple[str, str, str, int]]:
        posts = 0
        mode = "no reply"

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal posts
            with contextlib.suppress(Exception):
                head = await reader.readuntil(b"\r\n\r\n")
                if head.startswith(b"POST"):
                    posts += 1
                if mode == "half a reply":
                    writer.write(
                        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 400\r\n\r\n"
                        b'{"code":200,"data":{"id":"'
                    )
                    await writer.drain()
            writer.close()

        async def no_sleep(_s: float) -> None:
            return None

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        base = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        with tempfile.TemporaryDirectory() as tmp:
            case = load_suite(str(write_suite(Path(tmp)))).cases[0]
            images, _ = case.load_inputs()
        model = Catalog.load().select(MODEL_ID)[0]
        request = EditRequest(model=model, images=tuple(images), prompt=case.prompt, options=ImageEditOptions(seed=1))
        rows = []
        makers = (
            ("httpx (httpcore)", httpx.AsyncClient),
            (
                f"httpx-aiohttp {metadata.version('httpx-aiohttp')}",
                lambda: httpx.AsyncClient(transport=AiohttpTransport()),
            ),
            ("evalkit new_client()", new_client),
        )
        for mode in ("no reply", "half a reply"):
            for name, make in makers:
                client = make()
                if name.startswith("evalkit"):
                    name = f"evalkit ({type(client._transport).__name__})"  # noqa: SLF001
                try:
                    await client.post(base + "/probe", json={})
                    raised = "no error"
                except httpx.HTTPError as exc:
                    raised = type(exc).__name__
                posts = 0
                provider = WaveSpeedEditProvider(base_url=base, api_key=Secret("k"), client=client, sleep=no_sleep)
                outcome = await provider.edit(request)
                rows.append((mode, name, f"{raised} → {outcome.error.category if outcome.error else 'ok'}", posts))
                await client.aclose()
        server.close()
        return rows

    return asyncio.run(main())


#: (file, function) whose share of the client's time the profile summary states, when they appear in it:
#: the HTTP transport; the download (spool file created, written, renamed on the loop thread) and its
#: mkstemp; the SQLite statements; storing an outcome; httpcore's pool pass (the httpcore contrast only)
PROFILE_HIGHLIGHTS = (
    ("transport.py", "handle_async_request"),
    ("http.py", "download_image"),
    ("tempfile.py", "mkstemp"),
    ("store.py", "_execute"),
    ("execution.py", "_store"),
    ("connection_pool.py", "_assign_requests_to_connections"),
)


def profile_summary(calls: int, poll_s: float, concurrency: int, output_max_side: int, top: int = 15) -> list[str]:
    """cProfile of evalkit as shipped (client process): the functions with the most own time."""
    import pstats

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "evalkit.prof"
        row = measure(
            "evalkit", calls, poll_s=poll_s, concurrency=concurrency, output_max_side=output_max_side, profile=path
        )
        stats = pstats.Stats(str(path))
        total = stats.total_tt  # type: ignore[attr-defined]
        lines = [
            f"cProfile of evalkit as shipped, {calls} calls ({row.wall_s:.1f} s wall under the profiler, "
            f"{row.cpu_ms:.1f} ms CPU per call, {total:.1f} s profiled on the main thread): own time, and time "
            "including callees"
        ]
        entries = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)  # type: ignore[attr-defined]
        for (file, line, fn), (_cc, nc, tt, ct, _callers) in entries[:top]:
            where = f"{Path(file).parent.name}/{Path(file).name}:{line}({fn})" if line else fn
            lines.append(f"  {100 * tt / total:5.1f}% own {100 * ct / total:5.1f}% incl. {nc:>10} calls  {where}")
        for file_name, name in PROFILE_HIGHLIGHTS:
            for (file, line, fn), (_cc, nc, _tt, ct, _c) in entries:
                if fn == name and Path(file).name == file_name:
                    lines.append(
                        f"  → {file_name}:{line}({name}): {100 * ct / total:.1f}% of the profiled time "
                        f"incl. callees, {nc / calls:.1f} calls per edit"
                    )
                    break
    return lines


def print_diagnostics(concurrency: int, poll_s: float, output_max_side: int = 64, calls: int = 1000) -> None:
    print(f"\nevalkit and each variant again, {calls} calls (same settings as the table):")
    print(HEADER)
    rows = runner_rows(
        [calls],
        ["evalkit", *VARIANTS],
        poll_s=poll_s,
        concurrency=concurrency,
        output_max_side=output_max_side,
        seq_calls=0,
        seq_poll_calls=0,
        echo=lambda r: print(format_row(r), flush=True),
    )
    print_store_share(rows)
    print_memory_phases(rows)
    print()
    for line in profile_summary(calls, poll_s, concurrency, output_max_side):
        print(line, flush=True)
    print(
        f"\nHTTP clients alone: {concurrency} tasks × 20 × (sleep {poll_s:g} s; GET one poll URL), "
        "each client in its own process; the first rows are 1 task × 200 back-to-back GETs (an idle server)"
    )
    print("(median of 3 processes by throughput; the range of the 3 in brackets)")
    print(
        f"{'client':<26} {'tasks':>5} {'requests':>8} {'req/s':>7} {'(range)':>11} {'p50 ms':>7} {'p95 ms':>7} "
        f"{'CPU µs/req':>10}"
    )
    for r in http_client_probe(concurrency, gap_s=poll_s):
        lo, hi = r["req_per_s_range"]
        print(
            f"{r['client']:<26} {r['workers']:>5} {r['requests']:>8} {r['req_per_s']:>7.0f} "
            f"{f'({lo:.0f}–{hi:.0f})':>11} "
            f"{r['p50_ms']:>7.1f} {r['p95_ms']:>7.1f} {r['cpu_us']:>10.0f}",
            flush=True,
        )
    rows = transport_safety_check()
    print("\nA submit POST the server received whole, then the connection dropped (the task may exist and be billed):")
    print(f"{'dropped':<13} {'transport':<32} {'raised → evalkit outcome':<40} {'POSTs sent by one edit()':>24}")
    for mode, name, what, posts in rows:
        print(f"{mode:<13} {name:<32} {what:<40} {posts:>24}")


def print_memory_phases(rows: list[Row]) -> None:
    """Peak memory of evalkit's client by phase: the execution itself is flat; the bookkeeping is per call."""
    ev = [r for r in rows if r.tool.startswith("evalkit") and r.extra.get("rss_marks")]
    if not ev:
        return
    print(
        "\nevalkit client memory: peak MB above the RSS before arun at the end of each phase, and when it ended "
        "(s into arun; compare sizes: what grows with calls is per-call bookkeeping)"
    )
    for r in ev:
        before, t0 = r.extra["rss_before_mb"], r.extra.get("t0", float("nan"))
        parts = [f"{name} +{peak - before:.0f} MB at {t - t0:.2f} s" for name, _rss, peak, t in r.extra["rss_marks"]]
        print(f"  {label(r.tool):<26} {r.calls:>6} calls: " + ", ".join(parts))


def print_store_share(rows: list[Row]) -> None:
    """Where an evalkit call's time goes in the store: the SQLite writes on the event-loop thread (every
    other call in flight waits meanwhile), the blob move (its fsync waits on the disk) in a worker thread."""
    ev = [r for r in rows if r.tool.startswith("evalkit") and "store_s" in r.extra]
    if not ev:
        return
    print(
        "\nevalkit workspace writes per call: SQLite on the event-loop thread, the blob move (fsync + rename) in a "
        "worker thread (wall ms; × = times per call); HTTP transport as recorded in the client"
    )
    for r in ev:
        s, n = r.extra["store_s"], r.extra["store_n"]
        on_loop = [k for k in s if k not in StoreClock.OFF_LOOP]
        sqlite_ms = 1000 * sum(s[k] for k in on_loop) / r.calls
        parts = ", ".join(
            f"{k} {1000 * v / r.calls:.2f} ms ×{n[k] / r.calls:.1f}" for k, v in s.items() if n[k] >= r.calls / 2
        )
        print(
            f"  {label(r.tool):<26} {r.calls:>6} calls: SQLite {sqlite_ms:.2f} ms on the loop, blob move "
            f"{1000 * s['put_blob_file'] / r.calls:.2f} ms off it (client CPU {r.cpu_ms:.2f} ms/call; "
            f"{r.extra.get('transport', '?')}) — {parts}"
        )


def interruptible(fn) -> None:  # type: ignore[no-untyped-def]
    """Run ``fn``; on Ctrl-C or SIGTERM every server and client process is stopped, then exit 130."""
    from bench._common import stop_children

    try:
        fn()
    except KeyboardInterrupt:
        stop_children()
        print("\ninterrupted: every server and client process was stopped", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    interruptible(main)
