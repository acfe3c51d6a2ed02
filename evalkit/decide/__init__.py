"""Deciding: from scores to a choice — model tables, Pareto fronts, per-tier defaults, run-to-run comparison.

* :mod:`~evalkit.decide.tables` — per-model tables, quality specs, bootstrap intervals, Pareto front;
* :mod:`~evalkit.decide.tier_config` — the price tiers (``tiers.toml``) and their constraints;
* :mod:`~evalkit.decide.tiers` — per-tier defaults with paired tests, ``tier_defaults.json``;
* :mod:`~evalkit.decide.compare` — run-to-run drift checks with ``--fail-on`` thresholds.
"""

from __future__ import annotations
