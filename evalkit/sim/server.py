"""Run an ASGI app (a local provider-compatible server) on loopback: in a thread (:func:`start_in_thread`),
and in the foreground until a signal (:func:`wait_for_stop_signal`, used by :mod:`evalkit.sim.launch`).

A real HTTP server, not an in-process mock: other processes (a notebook kernel, the CLI) can reach it.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import uvicorn

from evalkit.providers.http import is_loopback_host


@dataclass
class RunningServer:
    host: str
    port: int
    _server: uvicorn.Server = field(repr=False)
    _thread: threading.Thread = field(repr=False)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self, timeout_s: float = 10.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=timeout_s)

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class SimServerHandle:
    """A simulator serving in a background thread: ``sim``, its ``server``, ``base_url``; ``stop()``
    (once; also as a context manager). Subclasses add what stopping their simulator needs."""

    sim: Any
    server: RunningServer = field(repr=False)
    _stopped: bool = field(default=False, repr=False)

    @property
    def base_url(self) -> str:
        return self.server.base_url

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._shut_down()

    def _shut_down(self) -> None:
        self.server.stop()

    def __enter__(self) -> SimServerHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_for_stop_signal(poll_s: float = 0.5) -> None:
    """Block until SIGINT or SIGTERM arrives, then restore the previous handlers: how ``evalkit sim`` keeps
    simulators started in threads in the foreground."""
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not stop.wait(poll_s):
            pass
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _config(app, host: str, port: int | None, sock: socket.socket | None = None) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port or 0,
        lifespan="off",
        log_level="warning",
        access_log=False,
        backlog=4096,
        timeout_keep_alive=30,
        http="h11",
        ws="none",
    )


def start_in_thread(app, host: str = "127.0.0.1", port: int = 0, startup_timeout_s: float = 15.0) -> RunningServer:
    """Start ``app`` with uvicorn on ``host:port`` (0 = a free port) in a daemon thread; returns when it listens."""
    if not is_loopback_host(host):
        raise ValueError("local servers bind loopback only")
    # IPPROTO_TCP explicitly: asyncio only sets TCP_NODELAY on accepted sockets whose proto says TCP
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    real_port = sock.getsockname()[1]
    server = uvicorn.Server(_config(app, host, real_port))
    setattr(server, "install_signal_handlers", lambda: None)  # noqa: B010 — not the main thread; newer uvicorn lacks it

    def run() -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(server.serve(sockets=[sock]))
        finally:
            loop.close()
            sock.close()

    thread = threading.Thread(target=run, name=f"evalkit-sim-{real_port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"local server on {host}:{real_port} did not start")
        time.sleep(0.01)
    return RunningServer(host=host, port=real_port, _server=server, _thread=thread)
