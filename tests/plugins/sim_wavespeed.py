"""Fixtures for the local WaveSpeed simulator (evalkit/sim/wavespeed/). Stable: other areas use them.

``wavespeed_sim``
    Function scope. A started simulator whose models all finish in ≤ ~50 ms (``time_scale`` =
    :data:`FAST_TIME_SCALE`), yielding a :class:`~evalkit.sim.wavespeed.SimHandle`:
    ``handle.base_url`` (``http://127.0.0.1:<port>``, give it to a client as the API root),
    ``handle.api_key`` (the key it accepts), ``handle.sim`` (``add_fault``, ``ledger``, ``billed_usd``,
    ``submits``, ``stats()``, ``reset()``). Stopped afterwards.

``wavespeed_sim_factory``
    Function scope. ``wavespeed_sim_factory(**config_kw) -> SimHandle`` starts another simulator with
    :class:`~evalkit.sim.wavespeed.SimConfig` values (``max_concurrent=2``, ``fixed_latency_ms=300``,
    ``sync_timeout_s=0.2``, ``api_key=...``, ``catalog=...``). Latencies are fast unless ``time_scale`` or
    ``fixed_latency_ms`` is given. Every simulator it started is stopped at teardown.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest

from evalkit.sim.wavespeed import SimHandle, start_wavespeed_sim

#: the slowest catalogue model (120 s) finishes in ~48 ms at this scale.
FAST_TIME_SCALE = 0.0004


@pytest.fixture
def wavespeed_sim(catalog) -> Iterator[SimHandle]:
    with start_wavespeed_sim(catalog, time_scale=FAST_TIME_SCALE) as handle:
        yield handle


@pytest.fixture
def wavespeed_sim_factory(catalog) -> Iterator[Callable[..., SimHandle]]:
    with ExitStack() as started:  # every handle is a context manager that stops its simulator

        def start(**config_kw: Any) -> SimHandle:
            cat = config_kw.pop("catalog", catalog)
            if "time_scale" not in config_kw and "fixed_latency_ms" not in config_kw:
                config_kw["time_scale"] = FAST_TIME_SCALE
            return started.enter_context(start_wavespeed_sim(cat, **config_kw))

        yield start
