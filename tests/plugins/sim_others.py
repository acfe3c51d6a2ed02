"""Fixtures for the Stability and Hugging Face simulators: real servers on 127.0.0.1 (port 0).

``stability_sim`` / ``huggingface_sim`` yield a :class:`RunningSim` — the server's ``base_url``, the
key it accepts (a canary value that must never show up in logs, errors or reprs) and the simulator
object itself (``.sim``) to inject faults (``inject(kind, count=…, retry_after_s=…)``) and read what it
received and billed (``.sim.requests``, ``.sim.ledger`` …). One server per test module (starting one
costs ~0.2 s); the simulator is reset before each test, so faults and records start empty.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from evalkit.sim.huggingface import HuggingFaceSim
from evalkit.sim.server import RunningServer, start_in_thread
from evalkit.sim.stability import StabilitySim

#: canary keys: a test fails if either appears in a log line, an exception, a repr or an outcome
STABILITY_CANARY_KEY = "sk-CANARY-stability-7f3a9c1e5b"
HF_CANARY_TOKEN = "hf_CANARYhuggingface8d2b6e4a0c"


@dataclass
class RunningSim:
    base_url: str
    api_key: str
    sim: Any

    def inject(self, kind: str, **kw: Any) -> Any:
        return self.sim.inject(kind, **kw)


def _serving(sim: Any) -> Iterator[tuple[RunningServer, Any]]:
    """``sim`` served on loopback for as long as the fixture lasts."""
    with start_in_thread(sim.app) as server:
        yield server, sim


@pytest.fixture(scope="module")
def _stability_server() -> Iterator[tuple[RunningServer, StabilitySim]]:
    yield from _serving(StabilitySim(api_key=STABILITY_CANARY_KEY))


@pytest.fixture(scope="module")
def _huggingface_server() -> Iterator[tuple[RunningServer, HuggingFaceSim]]:
    yield from _serving(HuggingFaceSim(token=HF_CANARY_TOKEN))


@pytest.fixture
def stability_sim(_stability_server) -> RunningSim:
    server, sim = _stability_server
    sim.reset()
    return RunningSim(server.base_url, STABILITY_CANARY_KEY, sim)


@pytest.fixture
def huggingface_sim(_huggingface_server) -> RunningSim:
    server, sim = _huggingface_server
    sim.reset()
    return RunningSim(server.base_url, HF_CANARY_TOKEN, sim)
