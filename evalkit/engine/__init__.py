"""The run engine: plan every (case × model × repeat) call, hold the budget, execute resumably.

* :mod:`~evalkit.engine.planning` — ``PlannedCall``: a call's request and prepared body, deterministic;
* :mod:`~evalkit.engine.budget` — the hard budget cap (reservations before a call is sent);
* :mod:`~evalkit.engine.limits` — ``ProviderLimits``: per-provider concurrency and rate (defaults from the catalogue);
* :mod:`~evalkit.engine.control` — ``StopController``: stop submitting, then stop waiting (Ctrl-C, budget);
* :mod:`~evalkit.engine.execution` — ``Execution``: queues, workers, patience, resume, cache hits, storing outcomes;
* :mod:`~evalkit.engine.sessions` — ``SessionTurns``: a session's turns in order, their budget hold, turns not reached;
* :mod:`~evalkit.engine.runner` — the public ``run`` / ``arun`` and ``RunResult``.

(The folder is ``engine``, not ``run``: ``evalkit.run`` is the public function.)
"""

from __future__ import annotations

from evalkit.engine.control import StopController
from evalkit.engine.limits import ProviderLimits, default_provider_limits, parse_provider_limits
from evalkit.engine.runner import DEFAULT_PATIENCE, RunResult, arun, run, summarise

__all__ = [
    "DEFAULT_PATIENCE",
    "ProviderLimits",
    "RunResult",
    "StopController",
    "arun",
    "default_provider_limits",
    "parse_provider_limits",
    "run",
    "summarise",
]
