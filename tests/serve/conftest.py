"""The serve tests' WaveSpeed simulator: one per module, reset by each test's config (tests/serve/test_app.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from evalkit.catalog import Catalog
from evalkit.sim.wavespeed import SimHandle, start_wavespeed_sim
from tests.plugins.sim_wavespeed import FAST_TIME_SCALE


@pytest.fixture(scope="module")
def sim() -> Iterator[SimHandle]:
    with start_wavespeed_sim(Catalog.load(), time_scale=FAST_TIME_SCALE) as handle:
        yield handle
