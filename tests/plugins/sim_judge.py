"""Fixtures for the simulated VLM judge (evalkit/sim/judge.py). Stable: other areas may use them.

``judge_sim``
    Function scope. A started :class:`~evalkit.sim.judge.JudgeSimHandle` with an empty script and no
    recorded requests: ``handle.base_url`` (``http://127.0.0.1:<port>/v1``, the judge's base URL),
    ``handle.api_key``, ``handle.sim`` (``script([...])``, ``requests``, ``reset()``). One server is
    shared by the session and reset before each test (starting uvicorn per test is the slow part).

``judge_sim_factory``
    Function scope. ``judge_sim_factory(api_key=..., model=..., latency_ms=...)`` starts a separate
    simulated judge (e.g. with a canary key); all are stopped at teardown.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest

from evalkit.sim.judge import JudgeSimHandle, start_judge_sim


@pytest.fixture(scope="session")
def _judge_sim_session() -> Iterator[JudgeSimHandle]:
    with start_judge_sim() as handle:
        yield handle


@pytest.fixture
def judge_sim(_judge_sim_session: JudgeSimHandle) -> Iterator[JudgeSimHandle]:
    _judge_sim_session.sim.reset()
    yield _judge_sim_session
    _judge_sim_session.sim.reset()


@pytest.fixture
def judge_sim_factory() -> Iterator[Callable[..., JudgeSimHandle]]:
    with ExitStack() as started:  # every handle is a context manager that stops its server

        def start(**kw: Any) -> JudgeSimHandle:
            return started.enter_context(start_judge_sim(**kw))

        yield start
