"""What the Stability and Hugging Face simulators share: simulated latency settings and the
``/_sim/ledger`` + ``/_sim/faults`` control routes over the one fault book (:mod:`evalkit.sim.faults`).

Their faults are usually *scripted* — "the next ``count`` matching requests fail this way" (the book's
default count is 1 here) — rather than drawn at a seeded rate as a WaveSpeed benchmark does: these
servers stand in for providers whose failure modes tests pin down one at a time.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from evalkit.sim.faults import Fault, FaultBook


class ScriptedSim:
    """A simulator with scripted faults: ``.app`` serves ``routes`` plus ``GET /_sim/ledger`` (the
    subclass's :meth:`_ledger_view`) and ``POST|DELETE /_sim/faults`` (inject / clear faults).

    ``fault_kinds`` maps the simulator's fault kinds to their events (:data:`~evalkit.sim.faults.STABILITY_FAULTS`,
    …). ``time_scale`` multiplies a nominal latency, ``fixed_latency_ms`` replaces it (:meth:`_simulated_s`);
    ``_lock`` guards the subclass's records."""

    def __init__(
        self,
        fault_kinds: Mapping[str, str],
        routes: Sequence[BaseRoute],
        *,
        time_scale: float,
        fixed_latency_ms: float | None,
    ):
        if time_scale < 0 or (fixed_latency_ms is not None and fixed_latency_ms < 0):
            raise ValueError("time_scale and fixed_latency_ms must be ≥ 0")
        self.time_scale = time_scale
        self.fixed_latency_ms = fixed_latency_ms
        self.faults = FaultBook(kinds=fault_kinds, default_count=1)
        self._lock = threading.Lock()
        self.app = Starlette(
            routes=[
                *routes,
                Route("/_sim/ledger", self._ledger_view, methods=["GET"]),
                Route("/_sim/faults", self._faults_view, methods=["POST", "DELETE"]),
            ]
        )

    def inject(self, kind: str, **kw: Any) -> Fault:
        """Fail the next ``count`` (default 1; None = every) requests of ``endpoint`` (default: any) this way."""
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
            fault = self.faults.add_dict(await request.json())
        except (TypeError, ValueError) as exc:
            return self._control_json({"error": str(exc)}, 400)
        return self._control_json(fault.as_dict())
