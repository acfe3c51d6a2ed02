"""Bad-input plumbing shared by the tests that feed evalkit bad input at each entry point.

Split out of the former tests/test_bad_input.py: :func:`evalkit.agenerate_image_edit` (tests/test_images.py,
tests/providers/test_bad_requests.py, tests/providers/test_bad_replies.py), the runner (tests/engine/test_bad_runs.py,
tests/suites/test_bad_suites.py, tests/store/test_bad_workspaces.py) and the CLI (tests/test_cli_bad_input.py).
Every test that touches a workspace starts from a copy of one holding a finished run (``ws``), and checks afterwards
with :func:`assert_intact` that the run's rows and every stored file are unchanged.

"Clear" means: an :class:`~evalkit.errors.EvalkitError` subclass whose message names the problem (the
file, the id, the variable…), raised without a chained library exception that a traceback would show
(:func:`assert_clear`).

Fixtures (registered in tests/conftest.py; a test module's own fixture of the same name wins): ``ws_sim`` (a local
WaveSpeed server per module), ``sim`` (the same, reset), ``template_ws`` / ``ws`` (a workspace holding the run
``BEFORE``, copied per test)."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import shutil
import sqlite3
import struct
import subprocess
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from evalkit.credentials import Secret
from evalkit.engine.runner import arun
from evalkit.errors import EvalkitError
from evalkit.providers.retry import RetryPolicy
from evalkit.providers.wavespeed import PollSchedule
from evalkit.sim.server import RunningServer, start_in_thread
from evalkit.sim.wavespeed import start_wavespeed_sim
from tests.plugins.common import toml_value

FAST_POLL = PollSchedule(initial_delay_s=0.01, factor=1.5, quick_polls=3, min_interval_s=0.02, max_interval_s=0.1)


FAST_RETRY = RetryPolicy(max_attempts=3, base_s=0.01, max_backoff_s=0.02, max_retry_after_s=0.02)


BEFORE = "before"  # the run every workspace copy already holds


# ---- images made here ----------------------------------------------------------------------------


def encode(img: Image.Image, fmt: str, **kw: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def photo(size: tuple[int, int] = (96, 64), colour=(200, 60, 40)) -> Image.Image:
    img = Image.new("RGB", size, colour)
    img.paste((30, 90, 200), (size[0] // 4, size[1] // 4, size[0] // 2, size[1] // 2))
    return img


PNG = encode(photo(), "PNG")


JPEG = encode(photo(), "JPEG", quality=90)


def png_declaring(width: int, height: int) -> bytes:
    """A real PNG whose header claims ``width``×``height`` (a decompression bomb's calling card)."""
    data = bytearray(PNG)
    ihdr = b"IHDR" + struct.pack(">II", width, height) + bytes(data[24:29])
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(ihdr) & 0xFFFFFFFF)
    return bytes(data)


def animated_gif() -> bytes:
    frames = [Image.new("P", (96, 64), i * 40) for i in range(3)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    return buf.getvalue()


# ---- shared plumbing -----------------------------------------------------------------------------


def assert_clear(exc: BaseException, cls: type[EvalkitError], *words: str) -> None:
    """An evalkit error of ``cls`` naming the problem (``words``, any case), with no library exception chained to it."""
    assert isinstance(exc, cls), f"{type(exc).__name__}: {exc}"
    text = str(exc)
    for w in words:
        assert w.lower() in text.lower(), f"{w!r} not in {text!r}"
    assert exc.__cause__ is None and (exc.__context__ is None or exc.__suppress_context__), (
        f"a traceback would show the library error behind it: {exc.__context__!r}"
    )


@pytest.fixture(scope="module")
def ws_sim(catalog):
    handle = start_wavespeed_sim(catalog, time_scale=0.0004, output_max_side=256)
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture
def sim(ws_sim):
    ws_sim.sim.reset()
    return ws_sim


def ws_options(handle, **kw) -> dict:
    return {
        "wavespeed": {
            "base_url": handle.base_url,
            "api_key": Secret(handle.api_key),
            "poll": FAST_POLL,
            "retry": FAST_RETRY,
            **kw,
        }
    }


def request_count(handle) -> int:
    s = handle.sim.stats()
    return s["submit"] + s["poll"] + s["download"] + s["upload"] + s["unauthorized"]


@pytest.fixture(scope="module")
def template_ws(ws_sim, tmp_path_factory) -> Path:
    """A workspace holding one finished run (outputs, inputs, usage) — copied for each test."""
    path = tmp_path_factory.mktemp("template") / "ws"
    res = asyncio.run(
        arun(
            "smoke",
            models="qwen-edit,image-zoom-out",
            workspace=path,
            run_id=BEFORE,
            progress=False,
            provider_options=ws_options(ws_sim),
        )
    )
    assert res.completed == 2
    return path


@pytest.fixture
def ws(template_ws, tmp_path) -> Path:
    dest = tmp_path / "ws"
    shutil.copytree(template_ws, dest)
    return dest


def state(path: Path) -> dict:
    """Everything a bad input must not change: the earlier run's rows, the usage ledger and every file."""
    con = sqlite3.connect(f"file:{path / 'evalkit.sqlite'}?mode=ro", uri=True)
    con.row_factory = sqlite3.Row
    try:
        tables = {
            t: [dict(r) for r in con.execute(f"SELECT * FROM {t} WHERE run_id = ? ORDER BY rowid", (BEFORE,))]
            for t in ("runs", "cases", "calls")
        }
        tables["usage"] = [dict(r) for r in con.execute("SELECT * FROM usage ORDER BY usage_id")]
        runs = [r[0] for r in con.execute("SELECT run_id FROM runs")]
    finally:
        con.close()
    blobs = {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted((path / "blobs").rglob("*"))
        if p.is_file()
    }
    return {"tables": tables, "blobs": blobs, "runs": runs}


def assert_intact(before: dict, path: Path, *, new_runs: bool = False) -> None:
    after = state(path)
    assert after["tables"] == before["tables"], "the earlier run's rows changed"
    assert after["blobs"] == before["blobs"], "stored files changed (or files were added for a refused input)"
    if not new_runs:
        assert after["runs"] == before["runs"], f"a refused input left a run behind: {after['runs']}"


def write_suite(folder: Path, cases: list[dict], images: dict[str, bytes]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for rel, data in images.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    lines = []
    for case in cases:
        lines.append("[[case]]")
        lines += [f"{k} = {toml_value(v)}" for k, v in case.items()]
    (folder / "suite.toml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def edit_case(case_id: str = "c1", image: str = "images/a.png", **kw) -> dict:
    return {
        "id": case_id,
        "operation": "general_edit",
        "category": "color_alter",
        "prompt": "Make it blue",
        "images": [image],
        **kw,
    }


# ---- a server answering garbage ------------------------------------------------------------------


@dataclass
class GarbageServer:
    """A running garbage server and the requests it answered, as ``"METHOD /path"`` in arrival order."""

    server: RunningServer
    requests: list[str] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return self.server.base_url

    def posts(self) -> list[str]:
        return [r for r in self.requests if r.startswith("POST ")]

    def stop(self) -> None:
        self.server.stop()


def garbage_server(status: int, body: bytes, content_type: str) -> GarbageServer:
    """A loopback server that answers every request with the same reply (a misconfigured proxy, a web page…)."""
    requests: list[str] = []

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        requests.append(f"{scope['method']} {scope['path']}")
        more = True
        while more:
            more = (await receive()).get("more_body", False)
        await send(
            {"type": "http.response.start", "status": status, "headers": [(b"content-type", content_type.encode())]}
        )
        await send({"type": "http.response.body", "body": body})

    return GarbageServer(start_in_thread(app), requests)


HTML = b"<!DOCTYPE html><html><body><h1>Welcome</h1></body></html>"


def garbage_options(provider: str, base_url: str) -> dict:
    return {
        "wavespeed": {
            "wavespeed": {
                "base_url": base_url,
                "api_key": Secret("k-test-1234"),
                "poll": FAST_POLL,
                "retry": FAST_RETRY,
            }
        },
        "stability": {
            "stability": {
                "base_url": base_url,
                "api_key": Secret("sk-test-1234"),
                "retry": FAST_RETRY,
                "poll_interval_s": 0.01,
            }
        },
        "huggingface": {"huggingface": {"endpoint_url": base_url, "token": Secret("hf_test1234"), "retry": FAST_RETRY}},
    }[provider]


# ---- the CLI in a separate process ---------------------------------------------------------------


REPO = Path(__file__).resolve().parents[2]


def cli(args: list[str], env: dict, cwd: Path) -> subprocess.CompletedProcess:
    """The CLI in a fresh process, run from an empty folder (so nothing lands in the checkout by accident)."""
    return subprocess.run(
        [sys.executable, "-m", "evalkit", *args], capture_output=True, text=True, env=env, timeout=120, cwd=cwd
    )


def cli_env(handle, **extra) -> dict:
    env = dict(os.environ)
    env.update(
        WAVESPEED_BASE_URL=handle.base_url,
        WAVESPEED_API_KEY=handle.api_key,
        TQDM_DISABLE="1",
        EVALKIT_POLL_INITIAL_S="0.01",
        EVALKIT_POLL_MIN_INTERVAL_S="0.02",
        EVALKIT_POLL_MAX_INTERVAL_S="0.05",
        COLUMNS="300",
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        **extra,
    )
    return env


def assert_one_line_error(proc: subprocess.CompletedProcess, *words: str, max_lines: int = 2) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-500:], proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines and lines[0].startswith("error: "), proc.stderr
    assert len(lines) <= max_lines, proc.stderr  # the error, then its hint
    for w in words:
        assert w in proc.stderr, (w, proc.stderr)
