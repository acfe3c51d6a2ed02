"""Deciding: from scores to a choice — model tables, Pareto fronts, per-tier defaults, run-to-run comparison.

* :mod:`~evalkit.decide.tables` — per-model tables, quality specs, bootstrap intervals, Pareto front;
* :mod:`~evalkit.decide.tier_config` — the price tiers (``tiers.toml``) and their constraints;
* :mod:`~evalkit.decide.tiers` — per-tier defaults with paired tests, ``tier_defaults.json``;
* :mod:`~evalkit.decide.tier_drift` — what tonight's decision would change in the served tier defaults;
* :mod:`~evalkit.decide.compare` — run-to-run drift checks with ``--fail-on`` thresholds;
* :mod:`~evalkit.decide.trends` — a suite's runs as a series: the latest against the earlier ones, with
  tests, bootstrap intervals and false-discovery-rate control (`evalkit trends`).
"""

from __future__ import annotations
