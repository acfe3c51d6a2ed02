"""The run engine: plan every (case × model × repeat) call, hold the budget, execute resumably.

* :mod:`~evalkit.engine.planning` — ``PlannedCall``: a call's request and prepared body, deterministic;
* :mod:`~evalkit.engine.budget` — the hard budget cap (reservations before a call is sent);
* :mod:`~evalkit.engine.execution` — queues, workers, patience, resume, cache hits, storing outcomes;
* :mod:`~evalkit.engine.runner` — the public ``run`` / ``arun`` and ``RunResult``.

(The folder is ``engine``, not ``run``: ``evalkit.run`` is the public function.)
"""

from __future__ import annotations

from evalkit.engine.runner import DEFAULT_PATIENCE, ProviderLimits, RunResult, StopController, arun, run, summarise

__all__ = ["DEFAULT_PATIENCE", "ProviderLimits", "RunResult", "StopController", "arun", "run", "summarise"]
