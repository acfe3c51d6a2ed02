"""Money assertions shared by the fault and crash suites: reconcile a workspace against a simulator.

Imported directly by the test files (``from tests.plugins.money import ...``); it defines no fixtures,
so it needs no registration in tests/conftest.py.

The question every helper here answers is the one a user asks before trusting evalkit with real
money: *did the server bill exactly what the workspace recorded, and was no accepted job paid twice?*
Bodies cannot tell two calls apart (two models may receive identical bodies; a seedless model's
repeats are identical requests), so everything is matched by **prediction id**: the simulator keeps
every accepted submit (``sim.submits``) and every billed task (``sim.ledger``), the workspace keeps
the id of every job it learnt about.

Where the store legitimately cannot know a cost:

* an *unknown-outcome* submit (the connection dropped or the reply was unusable after the request was
  sent) may have created a task the store never heard of — an **orphan** — which the server bills
  when it completes. Each unknown call owns at most one orphan, so per model
  ``orphans ≤ unknown calls`` and in money ``billed = recorded + billed(orphans)`` with
  ``billed(orphans) ≤ Σ reserved_usd(unknown calls)``;
* a job accepted but still running when the run stopped waiting stays ``submitted`` (resumable); the
  simulator has not billed it, so it adds nothing to either side.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

from evalkit.errors import Category
from evalkit.store import Workspace

#: every value a stored error_category may take
CATEGORIES = frozenset(c.value for c in Category)
#: statuses a call may have once a run has finished (``submitted`` only for a job still running)
FINAL_STATUSES = frozenset({"completed", "failed", "unknown", "not_applicable", "submitted", "not_reached"})
#: WaveSpeed task codes → the category evalkit must record (reference §1.6)
TASK_CODE_CATEGORY = {
    1200: "moderation",
    1400: "bad_request",
    1401: "bad_request",
    1402: "bad_request",
    1403: "task_failed",
    1405: "task_failed",
    5000: "server",
    5003: "server",
    5004: "server",
}
#: money compared "to the cent" — in practice every sum here is exact up to float rounding
CENT = 0.005


@dataclass
class SimPrediction:
    id: str
    model: str
    status: str
    code: int | None


@dataclass
class Reconciliation:
    """What the server billed against what the workspace recorded, matched by prediction id."""

    rows: list[dict[str, Any]]
    predictions: dict[str, SimPrediction]
    billed_by_pid: dict[str, float]
    billed_usd: float
    recorded_usd: float
    orphans: set[str] = field(default_factory=set)
    orphan_billed_usd: float = 0.0
    unknown_reserved_usd: float = 0.0

    @property
    def by_status(self) -> Counter:
        return Counter(r["status"] for r in self.rows)

    def failures(self) -> Counter:
        return Counter(r["error_category"] for r in self.rows if r["status"] == "failed")


def wait_until_idle(sim, *, still_running: int = 0, timeout_s: float = 15.0) -> None:
    """Wait until the simulator's tasks have all ended, except ``still_running`` that never will
    (orphaned jobs may still be processing when a run returns; they must be billed before we count)."""
    deadline = time.monotonic() + timeout_s
    while sim.stats()["in_flight"] > still_running:
        if time.monotonic() > deadline:
            raise AssertionError(f"simulator still has {sim.stats()['in_flight']} tasks in flight")
        time.sleep(0.02)


def sim_predictions(handle, pids: Iterable[str]) -> dict[str, SimPrediction]:
    """Status and task code of each prediction, read over HTTP like a client would (faults cleared first)."""
    handle.sim.clear_faults()
    out: dict[str, SimPrediction] = {}
    headers = {"Authorization": f"Bearer {handle.api_key}"}
    with httpx.Client(base_url=handle.base_url, headers=headers, timeout=10.0) as client:
        for pid in pids:
            data = client.get(f"/api/v3/predictions/{pid}/result").json()["data"]
            out[pid] = SimPrediction(pid, data["model"], data["status"], data.get("code"))
    return out


def reconcile_wavespeed(handle, ws_path: str | Path, run_ids: Iterable[str] | None = None) -> Reconciliation:
    """Match every accepted job at the server with the call that owns it and check the money rules.

    Asserts: no two calls claim one job; every claimed job exists; orphans (accepted jobs no call
    knows) are at most the unknown calls, per model; each completed call's cost is what the server
    billed for its job; ``billed = recorded + billed(orphans)`` and billed(orphans) ≤ the reservations
    of the unknown calls. Returns the figures for further, fault-specific checks.
    """
    sim = handle.sim
    ws = Workspace(ws_path, create=False)
    try:
        ids = list(run_ids) if run_ids is not None else list(ws.runs().run_id)
        rows = [r for rid in ids for r in ws.call_rows(rid)]
    finally:
        ws.close()
    own = [r for r in rows if r["provider"] == "wavespeed"]
    submits = {s.prediction_id: s for s in sim.submits}
    assert len(submits) == len(sim.submits), "the server handed out one prediction id twice"

    claimed = [r["prediction_id"] for r in own if r["prediction_id"] and r["cost_source"] != "cache"]
    dup = [pid for pid, n in Counter(claimed).items() if n > 1]
    assert not dup, f"two calls claim the same accepted job: {dup[:3]}"
    unknown_ids = set(claimed) - set(submits)
    assert not unknown_ids, f"calls claim jobs the server never accepted: {sorted(unknown_ids)[:3]}"

    predictions = sim_predictions(handle, submits)
    billed_by_pid: dict[str, float] = {}
    for entry in sim.ledger:
        assert entry.prediction_id not in billed_by_pid, f"job {entry.prediction_id} billed twice"
        billed_by_pid[entry.prediction_id] = entry.usd

    orphans = set(submits) - set(claimed)
    unknown_by_model = Counter(r["model_id"] for r in own if r["status"] == "unknown")
    orphans_by_model = Counter(submits[p].model_id for p in orphans)
    for model, n in orphans_by_model.items():
        assert n <= unknown_by_model[model], (
            f"{model}: {n} accepted jobs belong to no call but only {unknown_by_model[model]} calls have an unknown "
            "outcome — an accepted submit was sent again (paid twice)"
        )

    # per call: the recorded cost is exactly what the server billed for that call's job
    for r in own:
        pid = r["prediction_id"]
        if r["cost_source"] == "cache" or r["status"] == "not_applicable":
            continue
        billed = billed_by_pid.get(pid, 0.0) if pid else 0.0
        if r["status"] == "completed":
            assert pid and pid in billed_by_pid, f"{r['call_id']} completed but its job was never billed"
            assert abs((r["cost_usd"] or 0.0) - billed) < 1e-9, (
                f"{r['call_id']}: recorded ${r['cost_usd']} but the server billed ${billed}"
            )
        elif r["status"] == "failed":
            assert r["cost_usd"] is not None, (
                f"{r['call_id']} failed with an unknown cost although its job is "
                f"{predictions[pid].status if pid else 'absent'}: "
                f"{r['error_category']}: {r['error_message']}"
            )
            assert abs(r["cost_usd"] - billed) < 1e-9, (
                f"{r['call_id']} ({r['error_category']}): recorded ${r['cost_usd']} but the server billed ${billed}"
            )
        elif r["status"] == "submitted":
            assert pid, f"{r['call_id']} is left 'submitted' without a prediction id: it cannot be resumed"
            assert predictions[pid].status in ("created", "processing") and pid not in billed_by_pid, (
                f"{r['call_id']} is still 'submitted' but its job is {predictions[pid].status}"
            )
        elif r["status"] == "unknown":
            assert r["cost_usd"] is None and r["cost_source"] == "unknown"
        elif r["status"] in ("not_reached", "planned") and r.get("parent_call_id"):
            # a session's later turn never sent (an earlier turn failed) or waiting for one still running
            assert pid is None and not r["cost_usd"], f"{r['call_id']} was never sent but claims a job or a cost"
        else:
            raise AssertionError(f"{r['call_id']} ended in status {r['status']!r}")

    recorded = sum(r["cost_usd"] or 0.0 for r in own)
    orphan_billed = sum(billed_by_pid.get(p, 0.0) for p in orphans)
    unknown_reserved = sum(r["reserved_usd"] or 0.0 for r in own if r["status"] == "unknown")
    billed = sim.billed_usd
    assert abs(billed - (recorded + orphan_billed)) < CENT, (
        f"server billed ${billed:.4f}; the workspace recorded ${recorded:.4f} and orphaned jobs account for "
        f"${orphan_billed:.4f}"
    )
    assert orphan_billed <= unknown_reserved + 1e-9, (
        f"orphaned jobs billed ${orphan_billed:.4f}, more than the ${unknown_reserved:.4f} reserved for unknown calls"
    )
    return Reconciliation(
        rows=rows,
        predictions=predictions,
        billed_by_pid=billed_by_pid,
        billed_usd=billed,
        recorded_usd=recorded,
        orphans=orphans,
        orphan_billed_usd=orphan_billed,
        unknown_reserved_usd=unknown_reserved,
    )


def _own_rows(ws_path: str | Path, provider: str, run_ids: Iterable[str] | None) -> list[dict[str, Any]]:
    ws = Workspace(ws_path, create=False)
    try:
        ids = list(run_ids) if run_ids is not None else list(ws.runs().run_id)
        rows = [r for rid in ids for r in ws.call_rows(rid)]
    finally:
        ws.close()
    return [
        r for r in rows if r["provider"] == provider and r["status"] != "not_applicable" and r["cost_source"] != "cache"
    ]


@dataclass
class OutputMatch:
    """Billed generations matched with the calls that own them (Stability or Hugging Face)."""

    rows: list[dict[str, Any]]
    #: call id → the billed generation it owns (its index in the simulator's ledger / generations)
    owner_of: dict[str, int]
    #: generations no call owns: each may only belong to a call whose outcome is unknown (or paid, failed)
    orphans: list[int]


def _match_outputs(rows: list[dict[str, Any]], billed_sha: list[str], by_id: dict[str, int]) -> OutputMatch:
    """Give each completed call the billed generation it owns: by job id where the API has one (``by_id``:
    prediction id → generation), else by the sha256 of the image the server answered — the only identity
    a synchronous answer carries. No generation is given to two calls; a completed call owns exactly one."""
    free: dict[str, list[int]] = defaultdict(list)
    taken: set[int] = set(by_id.values())
    for i, sha in enumerate(billed_sha):
        if i not in taken:
            free[sha].append(i)
    owner_of: dict[str, int] = {}
    claimed = [r["prediction_id"] for r in rows if r["prediction_id"]]
    dup = [pid for pid, n in Counter(claimed).items() if n > 1]
    assert not dup, f"two calls claim the same job: {dup[:3]}"
    for r in rows:
        if r["status"] != "completed":
            continue
        pid = r["prediction_id"]
        if pid:
            assert pid in by_id, f"{r['call_id']} completed job {pid}, which the server never billed"
            owner_of[r["call_id"]] = by_id[pid]
            assert billed_sha[by_id[pid]] == r["output_sha256"], f"{r['call_id']}: its output is not its job's"
        else:
            left = free.get(r["output_sha256"])
            assert left, f"{r['call_id']} completed with an output the server never billed (or billed once for two)"
            owner_of[r["call_id"]] = left.pop(0)
    orphans = sorted(i for i in range(len(billed_sha)) if i not in set(owner_of.values()))
    return OutputMatch(rows=rows, owner_of=owner_of, orphans=orphans)


def reconcile_stability(handle, ws_path: str | Path, run_ids: Iterable[str] | None = None) -> OutputMatch:
    """Stability's ledger against the workspace: the relight's jobs by generation id, the synchronous edits by
    the output they answered. Asserts: no job billed twice; no two calls own one billed generation; each
    completed call's cost is what the server billed for its generation; a call left ``submitted`` holds a job
    the server created and has not billed; the billed generations no completed call owns are at most the calls
    whose outcome is unknown or that failed after being billed; and billed = recorded + those generations."""
    sim = handle.sim
    rows = _own_rows(ws_path, "stability", run_ids)
    ledger = list(sim.ledger)
    gids = [e.generation_id for e in ledger]
    assert len(gids) == len(set(gids)), "a job was billed twice"
    jobs = sim.job_ids
    by_id = {e.generation_id: i for i, e in enumerate(ledger) if e.generation_id in jobs}
    match = _match_outputs(rows, [e.output_sha256 for e in ledger], by_id)
    for r in rows:
        if r["status"] == "completed":
            billed = ledger[match.owner_of[r["call_id"]]].usd
            assert abs((r["cost_usd"] or 0.0) - billed) < 1e-9, (
                f"{r['call_id']}: recorded ${r['cost_usd']} but the server billed ${billed}"
            )
        elif r["status"] == "submitted":
            pid = r["prediction_id"]
            assert pid in jobs and pid not in by_id, f"{r['call_id']} is 'submitted' but its job is {pid!r}"
    paid_failures = [r for r in rows if r["status"] == "failed" and (r["cost_usd"] or 0) > 0]
    unknown = [r for r in rows if r["status"] == "unknown"]
    unclaimed_jobs = jobs - {r["prediction_id"] for r in rows}
    assert len(unclaimed_jobs) <= len(unknown), (
        f"{len(unclaimed_jobs)} jobs the server created belong to no call — a job was submitted again"
    )
    assert len(match.orphans) <= len(unknown) + len(paid_failures), (
        f"{len(match.orphans)} billed generations belong to no completed call, but only {len(unknown)} calls have "
        f"an unknown outcome and {len(paid_failures)} failed after being billed — a request was paid twice"
    )
    recorded = sum(r["cost_usd"] or 0.0 for r in rows)
    orphan_usd = sum(ledger[i].usd for i in match.orphans) - sum(r["cost_usd"] for r in paid_failures)
    assert abs(sim.total_usd - (recorded + orphan_usd)) < CENT, (
        f"server billed ${sim.total_usd:.4f}; the workspace recorded ${recorded:.4f}"
    )
    assert orphan_usd <= sum(r["reserved_usd"] or 0.0 for r in unknown) + 1e-9
    return match


def reconcile_huggingface(handle, ws_path: str | Path, run_ids: Iterable[str] | None = None) -> OutputMatch:
    """Hugging Face's generations against the workspace, matched by the output each answered (the API gives
    no id). Asserts: each completed call owns one generation of its own, no cost was guessed, and the
    generations no call owns are at most the calls whose outcome is unknown (nothing was paid twice)."""
    rows = _own_rows(ws_path, "huggingface", run_ids)
    gens = list(handle.sim.generations)
    match = _match_outputs(rows, [g.output_sha256 for g in gens], {})
    sent = [r for r in rows if r["status"] in ("completed", "failed", "unknown")]
    assert all(r["cost_usd"] is None and r["cost_source"] == "unknown" for r in sent), "a cost was guessed"
    unknown = sum(r["status"] == "unknown" for r in rows)
    assert len(match.orphans) <= unknown, (
        f"{len(match.orphans)} generations belong to no completed call but only {unknown} calls have an unknown "
        "outcome — a request was sent again (paid twice)"
    )
    return match


def assert_every_call_accounted(rows: Iterable[dict[str, Any]]) -> None:
    """Each call ended in a recorded success or a categorised failure (or is an accepted job still running)."""
    rows = list(rows)
    status_of = {r["call_id"]: r["status"] for r in rows}
    for r in rows:
        where = f"{r['call_id']} ({r['status']})"
        parent = r.get("parent_call_id")
        if r["status"] == "planned" and parent and status_of.get(parent) in ("submitted", "planned"):
            continue  # a session's later turn waiting for an earlier turn still running at the provider
        assert r["status"] in FINAL_STATUSES, f"{where}: not a final status"
        if r["status"] == "not_reached":  # a session's later turn: an earlier turn ended without an output
            assert parent and status_of.get(parent) in ("failed", "unknown", "not_reached"), where
            assert r["reason"] and r["prediction_id"] is None, where
        if r["status"] == "completed":
            assert r["output_sha256"] and r["error_category"] is None, where
        elif r["status"] == "failed":
            assert r["error_category"] in CATEGORIES, f"{where}: category {r['error_category']!r}"
            assert r["error_category"] != Category.UNKNOWN_OUTCOME, f"{where}: unknown outcome recorded as failed"
            assert r["error_message"], f"{where}: no message"
        elif r["status"] == "unknown":
            assert r["error_category"] == Category.UNKNOWN_OUTCOME and r["error_message"], where
        elif r["status"] == "submitted":
            assert r["prediction_id"], f"{where}: an accepted job must keep its prediction id"


def assert_outputs_intact(ws_path: str | Path, rows: Iterable[dict[str, Any]]) -> int:
    """Every completed call's output file exists, matches its sha256 name and decodes. Returns the count."""
    import hashlib

    ws = Workspace(ws_path, create=False)
    n = 0
    try:
        for r in rows:
            if r["status"] != "completed":
                continue
            path = ws.blob_path(r["output_sha256"], r["output_ext"])
            assert path.is_file(), f"{r['call_id']}: output {path.name} is missing"
            data = path.read_bytes()
            assert hashlib.sha256(data).hexdigest() == r["output_sha256"], f"{r['call_id']}: output bytes changed"
            with Image.open(path) as img:
                img.load()
                assert (img.width, img.height) == (r["width"], r["height"]), f"{r['call_id']}: size differs from row"
            n += 1
    finally:
        ws.close()
    return n


def per_model(rows: Iterable[dict[str, Any]], status: str) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for r in rows:
        if r["status"] == status:
            out[r["model_id"]] += 1
    return dict(out)
