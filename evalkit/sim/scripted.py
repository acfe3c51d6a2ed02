"""What the Stability and Hugging Face simulators share: faults scripted by a test or a demo, simulated
latency settings, and the ``/_sim/ledger`` + ``/_sim/faults`` control routes.

Their faults are *scripted* — "the next ``count`` matching requests fail this way" — rather than drawn
at a seeded rate like the WaveSpeed simulator's (:mod:`evalkit.sim.faults`): these servers stand in
for providers whose failure modes tests pin down one at a time.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route


@dataclass
class ScriptedFault:
    """A fault that fires on the next ``count`` matching requests (``None``: on every one)."""

    kind: str
    count: int | None = 1
    endpoint: str | None = None
    retry_after_s: float = 1.0
    delay_s: float = 0.0
    fired: int = 0


class ScriptedFaults:
    """Faults queued by a test or a demo, drawn in insertion order; safe to change from another thread."""

    def __init__(self, kinds: dict[str, str]):
        self.kinds = kinds
        self._lock = threading.Lock()
        self._faults: list[ScriptedFault] = []

    def inject(
        self,
        kind: str,
        *,
        count: int | None = 1,
        endpoint: str | None = None,
        retry_after_s: float = 1.0,
        delay_s: float = 0.0,
    ) -> ScriptedFault:
        if kind not in self.kinds:
            raise ValueError(f"unknown fault kind {kind!r}; known: {', '.join(self.kinds)}")
        fault = ScriptedFault(kind, count, endpoint, retry_after_s, delay_s)
        with self._lock:
            self._faults.append(fault)
        return fault

    def draw(self, kinds: set[str], endpoint: str, *, wildcard: bool = True) -> ScriptedFault | None:
        """The first live fault of one of ``kinds`` for ``endpoint`` (counting its use), or None."""
        with self._lock:
            for f in self._faults:
                if f.kind not in kinds or (f.count is not None and f.fired >= f.count):
                    continue
                if f.endpoint == endpoint or (wildcard and f.endpoint is None):
                    f.fired += 1
                    return f
        return None

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()


class ScriptedSim:
    """A simulator with scripted faults: ``.app`` serves ``routes`` plus ``GET /_sim/ledger`` (the
    subclass's :meth:`_ledger_view`) and ``POST|DELETE /_sim/faults`` (inject / clear faults).

    ``time_scale`` multiplies a nominal latency, ``fixed_latency_ms`` replaces it (:meth:`_simulated_s`);
    ``_lock`` guards the subclass's records."""

    def __init__(
        self,
        fault_kinds: dict[str, str],
        routes: Sequence[BaseRoute],
        *,
        time_scale: float,
        fixed_latency_ms: float | None,
    ):
        if time_scale < 0 or (fixed_latency_ms is not None and fixed_latency_ms < 0):
            raise ValueError("time_scale and fixed_latency_ms must be ≥ 0")
        self.time_scale = time_scale
        self.fixed_latency_ms = fixed_latency_ms
        self.faults = ScriptedFaults(fault_kinds)
        self._lock = threading.Lock()
        self.app = Starlette(
            routes=[
                *routes,
                Route("/_sim/ledger", self._ledger_view, methods=["GET"]),
                Route("/_sim/faults", self._faults_view, methods=["POST", "DELETE"]),
            ]
        )

    def inject(self, kind: str, **kw: Any) -> ScriptedFault:
        return self.faults.inject(kind, **kw)

    def _simulated_s(self, nominal_ms: float) -> float:
        """Seconds a generation takes: ``fixed_latency_ms`` when set, else ``nominal_ms × time_scale``."""
        ms = self.fixed_latency_ms if self.fixed_latency_ms is not None else nominal_ms * self.time_scale
        return ms / 1000.0

    def _control_json(self, body: Any, status: int = 200) -> Response:
        """How this simulator answers its ``/_sim/`` control routes."""
        raise NotImplementedError

    async def _ledger_view(self, request: Request) -> Response:
        raise NotImplementedError

    async def _faults_view(self, request: Request) -> Response:
        if request.method == "DELETE":
            self.faults.clear()
            return self._control_json({"cleared": True})
        try:
            fault = self.inject(**(await request.json()))
        except (TypeError, ValueError) as exc:
            return self._control_json({"error": str(exc)}, 400)
        return self._control_json(asdict(fault))
