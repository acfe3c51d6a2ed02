"""What the benchmark scripts share: a simulator in its own process, client-process measurements, the machine.

* :class:`SimProcess` runs ``python -m evalkit.sim`` as a **separate process** on a free loopback port, so
  the server's CPU never counts against the client being measured; it is stopped on exit, on Ctrl-C and
  on SIGTERM (each started process is remembered and terminated by its own pid).
* :func:`reset_peak_rss` / :func:`peak_rss_mb` read the kernel's high-water mark of resident memory
  (``VmHWM``) after resetting it, so a row's peak covers only its timed section, not imports or setup.
* :func:`machine_lines` describes the machine (cores, memory, CPU model, Python, package versions).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable

#: every child process started here and not yet stopped (pid → Popen); stopped at exit and on signals.
_CHILDREN: dict[int, subprocess.Popen] = {}


def stop_children() -> None:
    """Stop every process started with :func:`start_process` that is still running."""
    for proc in list(_CHILDREN.values()):
        stop_process(proc)


_INSTALLED_BY = os.getpid()


def _on_signal(signum: int, _frame: object) -> None:
    if os.getpid() != _INSTALLED_BY:  # a forked worker (e.g. a multiprocessing pool) inherited this handler
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    stop_children()
    raise KeyboardInterrupt(f"signal {signum}")


atexit.register(stop_children)
with contextlib.suppress(ValueError):  # not in the main thread: the caller handles signals
    signal.signal(signal.SIGTERM, _on_signal)


def start_process(argv: list[str], **kw: object) -> subprocess.Popen:
    """Popen that is stopped automatically when this process exits or is interrupted."""
    proc = subprocess.Popen(argv, **kw)  # type: ignore[call-overload]
    _CHILDREN[proc.pid] = proc
    return proc


def stop_process(proc: subprocess.Popen, timeout_s: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout_s``; only this one process, by its pid."""
    try:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=timeout_s)
    finally:
        _CHILDREN.pop(proc.pid, None)


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a live process (all its threads), from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class SimProcess:
    """``python -m evalkit.sim`` in its own process (SIMULATED outputs; loopback only)."""

    fixed_latency_ms: float = 500.0
    max_concurrent: int = 2000
    output_max_side: int = 64
    api_key: str = field(default_factory=lambda: "sim-bench-" + os.urandom(8).hex(), repr=False)
    port: int = 0
    proc: subprocess.Popen | None = field(default=None, repr=False)
    _dir: tempfile.TemporaryDirectory | None = field(default=None, repr=False)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, startup_timeout_s: float = 60.0) -> SimProcess:
        self._dir = tempfile.TemporaryDirectory(prefix="evalkit-bench-sim-")
        port_file = Path(self._dir.name) / "port"
        env = {**os.environ, "EVALKIT_SIM_API_KEY": self.api_key, "PYTHONPATH": str(ROOT)}
        self.proc = start_process(
            [
                PYTHON,
                "-m",
                "evalkit.sim",
                "--port",
                "0",
                "--port-file",
                str(port_file),
                "--fixed-latency-ms",
                str(self.fixed_latency_ms),
                "--max-concurrent",
                str(self.max_concurrent),
                "--output-max-side",
                str(self.output_max_side),
            ],
            env=env,
            cwd=str(ROOT),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + startup_timeout_s
        while not port_file.exists():
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise RuntimeError(f"the simulator exited with {self.proc.returncode}: {err[-2000:]}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the simulator did not start in time")
            time.sleep(0.05)
        self.port = int(port_file.read_text().strip())
        return self

    def _get(self, path: str) -> dict:
        with urllib.request.urlopen(f"{self.base_url}{path}", timeout=30) as resp:  # loopback only
            return json.loads(resp.read())

    def stats(self) -> dict:
        """The server's counters: submits, polls, downloads, accepted/completed/failed, peaks."""
        return self._get("/_sim/stats")

    def cpu_s(self) -> float:
        assert self.proc is not None
        return process_cpu_s(self.proc.pid)

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.stderr:
                self.proc.stderr.close()
            stop_process(self.proc)
            self.proc = None
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def __enter__(self) -> SimProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---- measurements inside a client process ------------------------------------------------------


def reset_peak_rss() -> None:
    """Reset the kernel's peak-RSS mark of this process (Linux ≥ 4.0), so a later peak covers only what follows."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def peak_rss_mb() -> float:
    """Peak resident memory of this process since the last :func:`reset_peak_rss` (MB)."""
    m = re.search(r"VmHWM:\s+(\d+)\s+kB", Path("/proc/self/status").read_text())
    return int(m.group(1)) / 1024 if m else float("nan")


def rss_mb() -> float:
    m = re.search(r"VmRSS:\s+(\d+)\s+kB", Path("/proc/self/status").read_text())
    return int(m.group(1)) / 1024 if m else float("nan")


# ---- the machine -------------------------------------------------------------------------------


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _mem_total_gib() -> float:
    m = re.search(r"MemTotal:\s+(\d+)\s+kB", Path("/proc/meminfo").read_text())
    return int(m.group(1)) / 1024**2 if m else float("nan")


def versions(
    names: tuple[str, ...] = (
        "httpx",
        "httpcore",
        "h11",
        "uvicorn",
        "starlette",
        "requests",
        "urllib3",
        "wavespeed",
        "aiohttp",
        "httpx-aiohttp",
        "sniffio",
        "numpy",
        "opencv-python-headless",
    ),
) -> str:
    out = []
    for n in names:
        with contextlib.suppress(metadata.PackageNotFoundError):
            out.append(f"{n} {metadata.version(n)}")
    return ", ".join(out)


def evalkit_revision() -> str:
    """The commit measured, and whether evalkit/ had uncommitted changes (others work in the same checkout)."""
    try:
        head = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--", "evalkit"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head}" + (f" + uncommitted changes in {len(dirty)} evalkit/ file(s)" if dirty else "")


def machine_lines() -> list[str]:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return [
        f"evalkit: commit {evalkit_revision()}",
        f"date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        f"machine: {os.cpu_count()} CPUs ({_cpu_model()}), {_mem_total_gib():.1f} GiB memory, "
        f"{platform.system()} {platform.release()}, load average {load}",
        f"python {platform.python_version()}: {versions()}",
    ]
