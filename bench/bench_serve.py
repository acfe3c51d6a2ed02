"""Benchmark: ``evalkit serve`` under load, memory per request, other requests while images decode (issue 21).

    python bench/bench_serve.py                      # every row (12–40 s on the shared 2-core VM)
    python bench/bench_serve.py --rows throughput --requests 500
    python bench/bench_serve.py --rows memory,decode

The server is the real thing: ``python -m evalkit serve`` (uvicorn, forwarded headers off, as shipped) in **its own
process**, so its resident memory is its own (read with psutil, and the kernel's high-water mark ``VmHWM`` after
resetting it). Its WaveSpeed upstream is the local simulator (``evalkit.sim.wavespeed.start_wavespeed_sim``, in a
thread of this process, ``time_scale`` 0.005: qwen-edit-plus takes ≈ 40 ms; outputs ≤ 64 px) through
``WAVESPEED_BASE_URL``; polls are fast (``EVALKIT_POLL_*``: 10 ms, then ≥ 20 ms apart). The tier file is the tests'
hand-written SIMULATED one (tests/plugins/tier_files.py), served with ``--allow-simulated``. For the bench the
server runs with ``--rate-limit 0`` (every request comes from one peer, 127.0.0.1; the default is 30 per minute)
and ``--max-in-flight 64`` (the default is sized from the machine's memory: printed below). Each row starts after
a warm-up (a few valid edits, a refused body, a small 16-bit image), so lazy imports are not counted.

Rows:

* ``throughput`` — ``--requests`` valid edits (a 64×48 PNG, tier ``standard``, each prompt distinct) at
  ``--concurrency`` in flight (default 50): requests/s over the whole batch, client-side p50/p95/max latency, and
  the simulator's submit count (each answered edit = one distinct upstream submit).
* ``memory`` — 4 concurrent 20 MB JSON bodies, three ways: 20 MB of padding in an unknown field, inside
  ``prompt``, inside ``image_base64`` (base64 text that decodes to a 15 MiB non-image, just under the image cap,
  so it is read, parsed and decoded before it is refused). Peak RSS of the server over its RSS before the row.
  Target: < +150 MB.
* ``decode`` — 4 concurrent valid edits of a 16-bit (``I;16``) 4096×4096 PNG while another client calls
  ``GET /api/image-studio/edit/models`` back to back: the worst (and median) listing latency while the 4 edits
  are in progress. Target: < 100 ms.

Timings are printed, never asserted. Every image the simulator returns is SIMULATED.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import io
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import PYTHON, ROOT, machine_lines, start_process, stop_process  # noqa: E402

EDIT = "/api/image-studio/edit/process"
MODELS = "/api/image-studio/edit/models"
ROWS = ("memory", "decode", "throughput")
TIME_SCALE = 0.005
MB = 1024 * 1024
PADDING_BYTES = 20 * MB
BIG_SIDE = 4096
RSS_TARGET_MB = 150.0
MODELS_TARGET_MS = 100.0
#: the bench's server settings beyond the defaults (printed with the table)
MAX_IN_FLIGHT = 64
#: a fast poll schedule for the local simulator (the provider reads these at start-up)
POLL_ENV = {
    "EVALKIT_POLL_ADAPTIVE": "0",
    "EVALKIT_POLL_LEARN_FIRST_DELAY": "0",
    "EVALKIT_POLL_INITIAL_S": "0.01",
    "EVALKIT_POLL_MIN_INTERVAL_S": "0.02",
    "EVALKIT_POLL_MAX_INTERVAL_S": "0.1",
    "EVALKIT_POLL_TIMEOUT_S": "120",
}


def png_bytes(width: int = 64, height: int = 48) -> bytes:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, size=(height, width, 3), dtype=np.uint8), "RGB").save(buf, format="PNG")
    return buf.getvalue()


def png16_bytes(side: int = BIG_SIDE) -> bytes:
    """A 16-bit grayscale (PIL mode ``I;16``) side×side PNG: a smooth pattern, so it compresses to a small file
    whose pixels are many (the issue's attack: a 43 KB file that decodes to 16.8 MP of 16-bit samples)."""
    import numpy as np
    from PIL import Image

    y, x = np.mgrid[0:side, 0:side].astype(np.uint32)
    arr = ((x * 13 + y * 7) % 65536).astype("<u2")
    img = Image.frombytes("I;16", (side, side), arr.tobytes())
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---- the server process -------------------------------------------------------------------------------


@dataclass
class ServeProcess:
    """``python -m evalkit serve`` on a free loopback port, in its own process, against the simulator."""

    tiers: Path
    workspace: Path
    sim_url: str
    sim_key: str = field(repr=False)
    log: Path
    max_in_flight: int = MAX_IN_FLIGHT
    proc: subprocess.Popen | None = field(default=None, repr=False)
    port: int = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, startup_timeout_s: float = 60.0) -> ServeProcess:
        import httpx

        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("EVALKIT_", "WAVESPEED_"))}
        env.update(POLL_ENV)
        env.update({"PYTHONPATH": str(ROOT), "WAVESPEED_BASE_URL": self.sim_url, "WAVESPEED_API_KEY": self.sim_key})
        argv = [PYTHON, "-m", "evalkit", "serve", "--tiers", str(self.tiers), "--port", str(self.port)]
        argv += ["--allow-simulated", "--rate-limit", "0", "--max-in-flight", str(self.max_in_flight)]
        argv += ["--workspace", str(self.workspace)]
        with self.log.open("wb") as out:
            self.proc = start_process(argv, env=env, cwd=str(ROOT), stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + startup_timeout_s
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"evalkit serve exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.base_url + MODELS, timeout=2).status_code == 200:
                    return self
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("evalkit serve did not start in time")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None


class RssWatch:
    """The server process's resident memory during a section: sampled with psutil every ``interval_s`` and the
    kernel's peak (``VmHWM``, reset at the start when /proc/<pid>/clear_refs lets us), whichever is higher."""

    def __init__(self, pid: int, interval_s: float = 0.002):
        import psutil

        self.proc = psutil.Process(pid)
        self.pid, self.interval_s = pid, interval_s
        self.peak_sampled = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.hwm_reset = False

    def rss_mb(self) -> float:
        return float(self.proc.memory_info().rss) / MB

    def _hwm_mb(self) -> float | None:
        m = re.search(r"VmHWM:\s+(\d+)\s+kB", Path(f"/proc/{self.pid}/status").read_text())
        return int(m.group(1)) / 1024 if m else None

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_sampled = max(self.peak_sampled, self.proc.memory_info().rss)
            self._stop.wait(self.interval_s)

    def __enter__(self) -> RssWatch:
        try:
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")
            self.hwm_reset = True
        except OSError:
            pass
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def peak_mb(self) -> float:
        sampled = self.peak_sampled / MB
        hwm = self._hwm_mb() if self.hwm_reset else None
        return max(sampled, hwm or 0.0)


# ---- the client ---------------------------------------------------------------------------------------


def edit_json(image_b64: str, prompt: str, tier: str = "standard") -> bytes:
    import json

    return json.dumps({"image_base64": image_b64, "prompt": prompt, "tier": tier}).encode()


async def post(client: Any, url: str, body: bytes) -> tuple[int | str, float]:
    """(status or the exception's name, seconds)."""
    import httpx

    t = time.perf_counter()
    try:
        r = await client.post(url, content=body, headers={"content-type": "application/json"})
        status: int | str = r.status_code
    except httpx.HTTPError as exc:
        status = type(exc).__name__
    return status, time.perf_counter() - t


def _counts(statuses: list[int | str]) -> str:
    out: dict[str, int] = {}
    for s in statuses:
        out[str(s)] = out.get(str(s), 0) + 1
    return ", ".join(f"{n}× {s}" for s, n in sorted(out.items()))


async def warm_up(base: str, small_b64: str) -> None:
    import httpx

    async with httpx.AsyncClient(timeout=120) as c:
        for i in range(3):
            await post(c, base + EDIT, edit_json(small_b64, f"warm-up {i}"))
        await post(
            c, base + EDIT, b'{"image_base64": "' + small_b64.encode() + b'", "padding": "' + b"x" * 1000 + b'"}'
        )
        await post(c, base + EDIT, edit_json(base64.b64encode(png16_bytes(256)).decode(), "warm-up 16-bit"))
        await c.get(base + MODELS)


async def row_throughput(base: str, small_b64: str, requests: int, concurrency: int) -> dict[str, Any]:
    import httpx

    sem = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=120, limits=limits) as c:

        async def one(i: int) -> tuple[int | str, float]:
            async with sem:
                return await post(c, base + EDIT, edit_json(small_b64, f"bench edit {i}"))

        t0 = time.perf_counter()
        results = await asyncio.gather(*(one(i) for i in range(requests)))
        wall = time.perf_counter() - t0
    ok = [s for st, s in results if st == 200]
    lat = sorted(s for _, s in results)
    return {
        "wall_s": wall,
        "rps": len(ok) / wall,
        "p50_ms": 1000 * statistics.median(lat),
        "p95_ms": 1000 * lat[max(0, int(round(0.95 * len(lat))) - 1)],
        "max_ms": 1000 * lat[-1],
        "statuses": _counts([st for st, _ in results]),
        "ok": len(ok),
    }


def padding_bodies(small_b64: str) -> dict[str, bytes]:
    pad = b"x" * PADDING_BYTES
    img = small_b64.encode()
    return {
        "padding field": b'{"image_base64": "' + img + b'", "padding": "' + pad + b'"}',
        "inside prompt": b'{"image_base64": "' + img + b'", "prompt": "' + pad + b'"}',
        "inside image_base64": b'{"image_base64": "' + pad + b'", "prompt": "x"}',
    }


async def row_memory(base: str, pid: int, small_b64: str, parallel: int = 4) -> list[dict[str, Any]]:
    import httpx

    out = []
    baseline = None
    for name, body in padding_bodies(small_b64).items():
        watch = RssWatch(pid)
        before = watch.rss_mb()
        baseline = before if baseline is None else baseline
        async with httpx.AsyncClient(timeout=120) as c:
            with watch:
                t0 = time.perf_counter()
                results = await asyncio.gather(*(post(c, base + EDIT, body) for _ in range(parallel)))
                wall = time.perf_counter() - t0
                await asyncio.sleep(0.05)  # a last sample after the answers
        peak = watch.peak_mb()
        out.append(
            {
                "variant": name,
                "body_mb": len(body) / MB,
                "before_mb": before,
                "peak_mb": peak,
                "over_row_mb": peak - baseline,
                "statuses": _counts([st for st, _ in results]),
                "wall_s": wall,
                "hwm": watch.hwm_reset,
            }
        )
    return out


async def row_decode(base: str, big_b64: str, parallel: int = 4) -> dict[str, Any]:
    import httpx

    async with httpx.AsyncClient(timeout=60) as lister:
        idle = []
        for _ in range(20):
            t = time.perf_counter()
            await lister.get(base + MODELS)
            idle.append(time.perf_counter() - t)

        async with httpx.AsyncClient(timeout=300) as editor:
            edits = [
                asyncio.create_task(post(editor, base + EDIT, edit_json(big_b64, f"big 16-bit {i}")))
                for i in range(parallel)
            ]
            busy: list[float] = []
            statuses: list[int] = []
            t0 = time.perf_counter()
            while not all(e.done() for e in edits):
                t = time.perf_counter()
                r = await lister.get(base + MODELS)
                busy.append(time.perf_counter() - t)
                statuses.append(r.status_code)
            wall = time.perf_counter() - t0
            results = [e.result() for e in edits]
    return {
        "idle_p50_ms": 1000 * statistics.median(idle),
        "idle_max_ms": 1000 * max(idle),
        "busy_n": len(busy),
        "busy_p50_ms": 1000 * statistics.median(busy) if busy else float("nan"),
        "busy_p95_ms": 1000 * sorted(busy)[max(0, int(round(0.95 * len(busy))) - 1)] if busy else float("nan"),
        "busy_max_ms": 1000 * max(busy) if busy else float("nan"),
        "listing_statuses": _counts(list(statuses)),
        "edit_statuses": _counts([st for st, _ in results]),
        "edit_max_s": max(s for _, s in results),
        "wall_s": wall,
    }


# ---- main ---------------------------------------------------------------------------------------------


def _verdict(met: bool) -> str:
    return "met" if met else "NOT met"


def report_memory(base: str, pid: int, small_b64: str, sim: Any) -> str:
    submits = len(sim.sim.submits)
    mem = asyncio.run(row_memory(base, pid, small_b64))
    sent = len(sim.sim.submits) - submits
    print("memory: 4 concurrent 20 MB JSON bodies (server RSS; peak = the higher of psutil every 2 ms and VmHWM)\n")
    print("| 20 MB inside | body MB | answers | RSS before MB | peak MB | peak over row start MB | wall s |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for m in mem:
        print(
            f"| {m['variant']} | {m['body_mb']:.1f} | {m['statuses']} | {m['before_mb']:.0f} | {m['peak_mb']:.0f} | "
            f"+{m['over_row_mb']:.0f} | {m['wall_s']:.2f} |"
        )
    hwm = "yes" if mem[0]["hwm"] else "no"
    print(f"\n(load {os.getloadavg()[0]:.2f}; VmHWM reset: {hwm}; upstream submits during the row: {sent})\n")
    worst = max(m["over_row_mb"] for m in mem)
    return (
        f"peak RSS increase with 4 concurrent 20 MB bodies: +{worst:.0f} MB (target < +{RSS_TARGET_MB:.0f} MB): "
        f"{_verdict(worst < RSS_TARGET_MB)}; upstream submits {sent}"
    )


def report_decode(base: str) -> str:
    big = png16_bytes()
    d = asyncio.run(row_decode(base, base64.b64encode(big).decode()))
    print(
        f"decode: GET {MODELS} back to back while 4 valid edits of a 16-bit {BIG_SIDE}×{BIG_SIDE} PNG "
        f"({len(big) / 1024:.0f} KB) are in progress (from their send to their answer)\n"
    )
    print("| idle p50 / max ms | listings during | p50 ms | p95 ms | worst ms | listings | edits | slowest edit s |")
    print("|---|---:|---:|---:|---:|---|---|---:|")
    print(
        f"| {d['idle_p50_ms']:.1f} / {d['idle_max_ms']:.1f} | {d['busy_n']} | {d['busy_p50_ms']:.1f} | "
        f"{d['busy_p95_ms']:.1f} | {d['busy_max_ms']:.1f} | {d['listing_statuses']} | {d['edit_statuses']} | "
        f"{d['edit_max_s']:.2f} |"
    )
    print(f"\n(load {os.getloadavg()[0]:.2f})\n")
    met = d["busy_max_ms"] < MODELS_TARGET_MS
    return (
        f"worst GET /models latency while 4 large 16-bit PNGs decode: {d['busy_max_ms']:.0f} ms "
        f"(target < {MODELS_TARGET_MS:.0f} ms): {_verdict(met)}"
    )


def report_throughput(base: str, small_b64: str, requests: int, concurrency: int, sim: Any) -> str:
    submits = len(sim.sim.submits)
    t = asyncio.run(row_throughput(base, small_b64, requests, concurrency))
    sent = len(sim.sim.submits) - submits
    print(f"throughput: {requests} valid edits (64×48 PNG, tier standard) at {concurrency} in flight\n")
    print("| edits | in flight | wall s | requests/s | p50 ms | p95 ms | max ms | answers | submits |")
    print("|---:|---:|---:|---:|---:|---:|---:|---|---:|")
    print(
        f"| {requests} | {concurrency} | {t['wall_s']:.2f} | {t['rps']:.1f} | {t['p50_ms']:.0f} | {t['p95_ms']:.0f} | "
        f"{t['max_ms']:.0f} | {t['statuses']} | {sent} |"
    )
    print(f"\n(load {os.getloadavg()[0]:.2f})\n")
    return (
        f"{concurrency} in flight: {t['rps']:.1f} requests/s, p95 {t['p95_ms']:.0f} ms; {t['ok']}/{requests} answered "
        f"200 with {sent} upstream submits (no target)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated, of {', '.join(ROWS)}")
    ap.add_argument("--requests", type=int, default=300, help="valid edits in the throughput row")
    ap.add_argument("--concurrency", type=int, default=50, help="edits in flight in the throughput row")
    ap.add_argument("--time-scale", type=float, default=TIME_SCALE, help="the simulator's latency multiplier")
    args = ap.parse_args()
    rows = [r for r in args.rows.split(",") if r]
    unknown = set(rows) - set(ROWS)
    if unknown:
        ap.error(f"unknown rows: {', '.join(sorted(unknown))}")

    from evalkit.catalog import Catalog
    from evalkit.serve.config import default_max_in_flight
    from evalkit.sim.wavespeed import start_wavespeed_sim
    from tests.plugins.tier_files import write_tier_defaults_file

    started = time.perf_counter()
    command = " ".join(["python bench/bench_serve.py", *sys.argv[1:]])
    print(f"# bench_serve — `{command}` — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, load before {os.getloadavg()[0]:.2f}")
    for line in machine_lines():
        print(f"# {line}")
    catalog = Catalog.load()
    sim_ms = (catalog.get("qwen-edit-plus").sim or {}).get("latency_ms", 0) * args.time_scale
    print(
        f"# server: `evalkit serve --allow-simulated --rate-limit 0 --max-in-flight {MAX_IN_FLIGHT}` in its own "
        f"process (default max-in-flight here: {default_max_in_flight(25 * MB)}); upstream: the WaveSpeed simulator "
        f"(time scale {args.time_scale:g}: qwen-edit-plus ≈ {sim_ms:.0f} ms, outputs ≤ 64 px, SIMULATED)"
    )
    small_b64 = base64.b64encode(png_bytes()).decode()
    verdicts = []
    with (
        tempfile.TemporaryDirectory(prefix="evalkit-bench-serve-") as tmp,
        start_wavespeed_sim(catalog, time_scale=args.time_scale, output_max_side=64, max_concurrent=2000) as sim,
    ):
        server = ServeProcess(
            tiers=write_tier_defaults_file(Path(tmp) / "tier_defaults.json"),
            workspace=Path(tmp) / "ws",
            sim_url=sim.base_url,
            sim_key=sim.api_key,
            log=Path(tmp) / "serve.log",
        ).start()
        try:
            assert server.proc is not None
            asyncio.run(warm_up(server.base_url, small_b64))
            rss = RssWatch(server.proc.pid).rss_mb()
            print(f"# server up and warmed up after {time.perf_counter() - started:.1f} s; RSS {rss:.0f} MB\n")
            # memory first: the rows after it would reuse memory the big decodes left to the allocator
            if "memory" in rows:
                verdicts.append(report_memory(server.base_url, server.proc.pid, small_b64, sim))
            if "decode" in rows:
                verdicts.append(report_decode(server.base_url))
            if "throughput" in rows:
                verdicts.append(report_throughput(server.base_url, small_b64, args.requests, args.concurrency, sim))
        finally:
            server.stop()
    for v in verdicts:
        print(f"* {v}")
    print(f"\n# total {time.perf_counter() - started:.1f} s, load after {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
