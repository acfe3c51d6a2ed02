"""Shared fixtures. Each area keeps its fixtures in tests/plugins/<area>.py (registered below)."""

import os

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TQDM_DISABLE", "1")

pytest_plugins = [
    "tests.plugins.common",
    "tests.plugins.sim_wavespeed",
    "tests.plugins.sim_others",
    "tests.plugins.sim_judge",
    "tests.plugins.synthetic",
    "tests.plugins.bad_input",
    "tests.plugins.semantic",
]
