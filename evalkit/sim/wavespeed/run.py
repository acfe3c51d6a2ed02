"""Running the WaveSpeed simulator in a background thread (:func:`start_wavespeed_sim`: tests and the demo);
``evalkit sim`` and ``python -m evalkit.sim`` run it in the foreground (:mod:`evalkit.sim.launch`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from evalkit.catalog import Catalog
from evalkit.sim.server import SimServerHandle, start_in_thread
from evalkit.sim.wavespeed.app import WaveSpeedSim
from evalkit.sim.wavespeed.state import SimConfig


@dataclass
class SimHandle(SimServerHandle):
    """A started simulator: ``base_url``, ``api_key``, ``sim``; ``stop()`` (also as a context manager)."""

    sim: WaveSpeedSim

    @property
    def api_key(self) -> str:
        return self.sim.config.api_key

    def _shut_down(self) -> None:
        self.sim.shutdown()
        self.server.stop()
        self.sim.close()


def start_wavespeed_sim(
    catalog: Catalog | None = None, *, host: str = "127.0.0.1", port: int = 0, **config_kw: Any
) -> SimHandle:
    """Start a simulator in a background thread on ``host:port`` (0 = a free port)."""
    sim = WaveSpeedSim(catalog, SimConfig(**config_kw))
    try:
        server = start_in_thread(sim.app, host=host, port=port)
    except BaseException:
        sim.close()
        raise
    return SimHandle(sim=sim, server=server)
