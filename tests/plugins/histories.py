"""Synthetic histories of scheduled runs, written through the Workspace API (fast: one transaction per step).

:func:`write_history` writes one run per entry of ``runs`` (a map model → :class:`Behaviour`), all of one
suite and suite version, each call drawn from its model's behaviour with a seeded numpy Generator: a
log-normal latency around ``latency_ms``, success with probability ``success``, the list price, and a
judge score per completed call (a per-case difficulty shared by every run, so cases pair across runs).
Used by tests/decide/test_trends.py and bench/bench_trends.py; never by the library.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace

import numpy as np

from evalkit.store import Workspace

JUDGE_VERSION = "judge-v1"


@dataclass(frozen=True)
class Behaviour:
    latency_ms: float = 2000.0
    sigma: float = 0.3  # of log latency, per call
    success: float = 0.97
    price_usd: float = 0.03
    quality: float = 7.0  # mean judge score (0–10)
    quality_noise: float = 0.8  # per call

    def but(self, **changes: float) -> Behaviour:
        return replace(self, **changes)


def write_run(
    ws: Workspace,
    run_id: str,
    suite: str,
    behaviour: dict[str, Behaviour],
    *,
    cases: int = 20,
    repeats: int = 1,
    rng: np.random.Generator,
    difficulty: np.ndarray | None = None,
    run_jitter: float = 0.0,
    outputs: bool = False,
    cached: int = 0,
    status: str = "completed",
    fingerprint: str | None = None,
) -> None:
    """One run of ``suite``; ``cached`` calls are marked as served from the request cache."""
    ws.create_run(
        run_id,
        suite_name=suite,
        suite_path=None,
        suite_fingerprint=fingerprint or f"fp-{suite}",
        catalog_fingerprint=None,
        models=list(behaviour),
        repeats=repeats,
        budget_usd=None,
        config={"no_cache": True},
    )
    difficulty = np.zeros(cases) if difficulty is None else difficulty
    plan = [(f"{run_id}/c{c}/{m}/{r}", f"c{c}", m, r) for m in behaviour for c in range(cases) for r in range(repeats)]
    ws.insert_calls(
        {
            "call_id": cid,
            "run_id": run_id,
            "case_id": case,
            "model_id": m,
            "provider": "wavespeed",
            "operation": "general_edit",
            "repeat": r,
            "price_usd": behaviour[m].price_usd,
        }
        for cid, case, m, r in plan
    )
    shift = {m: float(np.exp(rng.normal(0, run_jitter))) if run_jitter else 1.0 for m in behaviour}
    scores = []
    with ws.transaction():
        for i, (cid, case, m, _r) in enumerate(plan):
            b = behaviour[m]
            ok = rng.random() < b.success
            total = float(b.latency_ms * shift[m] * np.exp(rng.normal(0, b.sigma)))
            fields: dict = {"status": "completed" if ok else "failed", "price_source": "catalogue"}
            if ok:
                fields.update(total_ms=total, inference_ms=0.8 * total, cost_usd=b.price_usd, cost_source="list_price")
                if outputs:  # a small distinct blob per call, written without fsync (test data, thousands)
                    data = f"{cid}".encode() + b"\x89PNG-synthetic"
                    sha = hashlib.sha256(data).hexdigest()
                    path = ws.blob_path(sha, "png")
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_bytes(data)
                    fields.update(output_sha256=sha, output_ext="png")
                q = b.quality + difficulty[int(case[1:])] + rng.normal(0, b.quality_noise)
                scores.append((cid, float(np.clip(q, 0, 10))))
            else:
                fields.update(cost_usd=0.0, cost_source="list_price", error_category="task_failed")
            if i < cached:
                fields.update(cost_usd=0.0, cost_source="cache")
            ws.finish_call(cid, fields)
    ws.put_scores(
        {
            "run_id": run_id,
            "call_id": cid,
            "metric": "viescore_o",
            "source": "judge",
            "version": JUDGE_VERSION,
            "value": v,
        }
        for cid, v in scores
    )
    ws.update_run(run_id, status=status)


def write_history(
    ws: Workspace,
    suite: str,
    runs: list[dict[str, Behaviour]],
    *,
    cases: int = 20,
    repeats: int = 1,
    seed: int = 0,
    run_jitter: float = 0.0,
    outputs: bool = False,
    prefix: str | None = None,
) -> list[str]:
    """One run per entry of ``runs`` (oldest first); returns their ids."""
    rng = np.random.default_rng(seed)
    difficulty = rng.normal(0, 1.0, cases)
    ids = []
    for i, behaviour in enumerate(runs):
        run_id = f"{prefix or suite}-{i:03d}"
        write_run(
            ws,
            run_id,
            suite,
            behaviour,
            cases=cases,
            repeats=repeats,
            rng=rng,
            difficulty=difficulty,
            run_jitter=run_jitter,
            outputs=outputs,
        )
        ids.append(run_id)
    return ids
