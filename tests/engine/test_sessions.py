"""Sessions of turns (issue 24) run against the local WaveSpeed simulator: each later turn edits that model's own
previous output (checked at the server), a failed turn ends only its own session, the budget never starts a
session it cannot finish, the cache serves a turn only for identical input bytes, and the bill matches."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from evalkit.credentials import Secret
from evalkit.engine.runner import arun
from evalkit.providers.wavespeed import PollSchedule
from evalkit.resources import datasets_dir
from evalkit.sim.wavespeed import SimHandle, start_wavespeed_sim
from evalkit.store import CallStatus, Workspace

MODELS = ["qwen-edit", "seededit-v3", "step1x-edit"]
SESSIONS = {
    "cat": ["Make the cat's fur blue", "Add a small red hat on its head", "Make it night time"],
    "cup": ["Make the cup out of glass", "Add steam rising from the coffee", "Warm evening light"],
}


def write_session_suite(folder: Path, sessions: dict[str, list[str]] = SESSIONS, *, single: bool = True) -> Path:
    (folder / "images").mkdir(parents=True, exist_ok=True)
    for name in ("chelsea.jpg", "coffee.jpg"):
        shutil.copy(datasets_dir() / "smoke" / "images" / name, folder / "images" / name)
    lines = [f'name = "{folder.name}"']
    for i, (sid, turns) in enumerate(sessions.items()):
        image = "chelsea.jpg" if i % 2 == 0 else "coffee.jpg"
        quoted = ", ".join(f'"{t}"' for t in turns)
        lines += ["[[case]]", f'id = "{sid}"', f'images = ["images/{image}"]', f"turns = [{quoted}]"]
    if single:
        lines += [
            "[[case]]",
            'id = "single"',
            'operation = "general_edit"',
            'prompt = "Make it red"',
            'images = ["images/coffee.jpg"]',
        ]
    (folder / "suite.toml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def module_sim(catalog) -> Iterator[SimHandle]:
    with start_wavespeed_sim(catalog, fixed_latency_ms=30, output_max_side=64) as handle:
        yield handle


@pytest.fixture
def sim(module_sim) -> SimHandle:
    module_sim.sim.reset()
    return module_sim


def options(sim: SimHandle) -> dict:
    poll = PollSchedule(initial_delay_s=0.01, factor=1.5, quick_polls=3, min_interval_s=0.02, max_interval_s=0.05)
    return {"wavespeed": {"base_url": sim.base_url, "api_key": Secret(sim.api_key), "poll": poll}}


def run(sim: SimHandle, suite: Path, ws: Path, run_id: str, **kw):
    kw.setdefault("models", MODELS)
    kw.setdefault("concurrency", 4)
    return asyncio.run(arun(suite, workspace=ws, run_id=run_id, progress=False, provider_options=options(sim), **kw))


def rows_of(ws: Path, run_id: str) -> list[dict]:
    with Workspace(ws, create=False) as store:
        return store.call_rows(run_id)


def assert_bill_matches(sim: SimHandle, rows: list[dict]) -> None:
    billed = {e.prediction_id: e.usd for e in sim.sim.ledger}
    paid = [r for r in rows if r["cost_source"] != "cache" and r["prediction_id"]]
    assert Counter(r["prediction_id"] for r in paid).most_common(1)[0][1] == 1  # no job claimed twice
    assert sum(billed.values()) == pytest.approx(sum(r["cost_usd"] or 0 for r in rows), abs=1e-9)
    for r in paid:
        if r["status"] == CallStatus.COMPLETED:
            assert billed[r["prediction_id"]] == pytest.approx(r["cost_usd"]), r["call_id"]


def assert_chained_at_the_server(sim: SimHandle, rows: list[dict]) -> int:
    """Every later turn the server received had, as its input, the very bytes it served for the same model's
    previous turn of the same session: not the original image, not another model's output. Returns how many."""
    by_id = {r["call_id"]: r for r in rows}
    submits = {s.prediction_id: s for s in sim.sim.submits}
    served = sim.sim.served
    checked = 0
    for r in rows:
        if not r["parent_call_id"] or r["status"] != CallStatus.COMPLETED or r["cost_source"] == "cache":
            continue
        parent = by_id[r["parent_call_id"]]
        assert parent["model_id"] == r["model_id"] and parent["session_id"] == r["session_id"]
        assert parent["turn"] == r["turn"] - 1
        got = submits[r["prediction_id"]].input_sha256[0]
        assert got == served[parent["prediction_id"]], r["call_id"]
        assert got == parent["output_sha256"]  # …which is also what the workspace stored for that turn
        others = {
            served[o["prediction_id"]]
            for o in rows
            if o["session_id"] == r["session_id"]
            and o["turn"] == r["turn"] - 1
            and o["model_id"] != r["model_id"]
            and o["prediction_id"] in served
        }
        assert got not in others
        original = submits[by_id[r["call_id"].replace(f".t{r['turn']}/", ".t1/")]["prediction_id"]].input_sha256[0]
        assert got != original
        checked += 1
    return checked


def test_each_later_turn_edits_that_models_own_previous_output_at_the_server(sim, tmp_path) -> None:
    suite = write_session_suite(tmp_path / "sess")
    res = run(sim, suite, tmp_path / "ws", "chain")
    rows = rows_of(tmp_path / "ws", "chain")
    assert res.completed == len(rows) == 3 * (3 + 3 + 1)
    assert assert_chained_at_the_server(sim, rows) == 3 * 2 * 2  # 3 models × 2 sessions × turns 2 and 3
    turns = Counter(r["turn"] for r in rows)
    assert turns == {1: 6, 2: 6, 3: 6, None: 3}
    assert all(r["session_id"] is None and r["parent_call_id"] is None for r in rows if r["turn"] is None)
    assert res.cost_usd == pytest.approx(sim.sim.billed_usd)
    assert_bill_matches(sim, rows)
    # no needless re-upload: a later turn sends the URL the server already serves its input at
    later = [json.loads(r["metadata"]) for r in rows if r["parent_call_id"]]
    assert [m.get("inputs_by_url") for m in later] == [1] * len(later)
    assert not any(json.loads(r["metadata"]).get("inputs_by_url") for r in rows if not r["parent_call_id"])
    with Workspace(tmp_path / "ws", create=False) as store:
        cases = store.cases("chain").set_index("case_id")
    assert cases.loc["cat.t2", "prompt"] == SESSIONS["cat"][1] and cases.loc["cat.t2", "session_id"] == "cat"


def test_dry_run_shows_what_a_whole_session_costs(sim, tmp_path) -> None:
    suite = write_session_suite(tmp_path / "sess")
    res = run(sim, suite, tmp_path / "ws", "plan", dry_run=True)
    per = res.session_estimate.set_index(["session_id", "model_id"])
    assert per.loc[("cat", "qwen-edit"), "turns"] == 3
    single = res.estimate.set_index("model_id").loc["qwen-edit", "list_price_usd"] / 7  # 7 calls, one price
    assert per.loc[("cat", "qwen-edit"), "list_price_usd"] == pytest.approx(3 * single)
    assert per.loc[("cat", "qwen-edit"), "max_usd"] >= per.loc[("cat", "qwen-edit"), "list_price_usd"]
    assert not sim.sim.submits


def test_a_failing_middle_turn_stops_only_its_own_session(sim, tmp_path) -> None:
    sim.sim.add_fault("task_failed", model="seededit-v3", prompt=SESSIONS["cat"][1])
    suite = write_session_suite(tmp_path / "sess")
    res = run(sim, suite, tmp_path / "ws", "fail")
    rows = {r["call_id"]: r for r in rows_of(tmp_path / "ws", "fail")}
    assert rows["fail/cat.t1/seededit-v3/0"]["status"] == CallStatus.COMPLETED
    assert rows["fail/cat.t2/seededit-v3/0"]["status"] == CallStatus.FAILED
    third = rows["fail/cat.t3/seededit-v3/0"]
    assert third["status"] == CallStatus.NOT_REACHED and third["prediction_id"] is None
    assert "turn 2" in third["reason"] and "task_failed" in third["reason"]
    others = [r for cid, r in rows.items() if cid not in ("fail/cat.t2/seededit-v3/0", "fail/cat.t3/seededit-v3/0")]
    assert all(r["status"] == CallStatus.COMPLETED for r in others)  # other models, other sessions: untouched
    assert (res.failed, res.not_reached, res.completed) == (1, 1, len(rows) - 2)
    assert_bill_matches(sim, list(rows.values()))
    assert_chained_at_the_server(sim, list(rows.values()))


@pytest.mark.parametrize("concurrency", [1, 3])
def test_budget_never_starts_a_session_it_cannot_finish_and_finishes_those_it_began(sim, tmp_path, concurrency) -> None:
    sessions = {**SESSIONS, "cat-2": ["Make the cat grey", "Add a bow tie", "Make it snow"]}
    suite = write_session_suite(tmp_path / "three", sessions, single=False)
    # qwen-edit costs $0.02 a turn: $0.13 holds two 3-turn sessions ($0.06 each), not three
    res = run(sim, suite, tmp_path / "ws3", "whole3", models=["qwen-edit"], budget_usd=0.13, concurrency=concurrency)
    done = Counter(r["session_id"] for r in rows_of(tmp_path / "ws3", "whole3") if r["status"] == "completed")
    assert res.stop_reason == "budget"
    assert sorted(done.values()) == [3, 3]  # the sessions begun all finished, the third was never begun
    assert res.cost_usd == pytest.approx(0.12) and sim.sim.billed_usd == pytest.approx(0.12)
    sim.sim.reset()
    suite = write_session_suite(tmp_path / "sess", single=False)

    # allowed partial sessions spend up to the cap, turn by turn
    sim.sim.reset()
    res = run(
        sim,
        suite,
        tmp_path / "ws2",
        "partial",
        models=["qwen-edit"],
        budget_usd=0.10,
        concurrency=1,
        allow_partial_sessions=True,
    )
    done = Counter(r["session_id"] for r in rows_of(tmp_path / "ws2", "partial") if r["status"] == "completed")
    assert sorted(done.values()) == [2, 3] and res.cost_usd == pytest.approx(0.10)

    # raising the budget and resuming finishes the session where it stopped, paying no turn twice
    before = len(sim.sim.submits)
    res = run(sim, suite, tmp_path / "ws2", "partial", budget_usd=1.0, resume=True)
    rows = rows_of(tmp_path / "ws2", "partial")
    assert res.completed == 6 and len(sim.sim.submits) == before + 1
    assert_bill_matches(sim, rows)
    assert_chained_at_the_server(sim, rows)


def test_the_cache_serves_a_turn_only_for_the_same_input_bytes_model_params_and_seed(sim, tmp_path) -> None:
    ws = tmp_path / "ws"
    suite = write_session_suite(tmp_path / "sess", single=False)
    run(sim, suite, ws, "first", models=["qwen-edit"])
    paid = len(sim.sim.submits)
    assert paid == 6

    res = run(sim, suite, ws, "again", models=["qwen-edit"])  # identical: every turn from the cache
    assert res.cached == 6 and len(sim.sim.submits) == paid and res.cost_usd == 0

    res = run(sim, suite, ws, "seed", models=["qwen-edit"], base_seed=7)  # another seed: nothing cached
    assert res.cached == 0 and len(sim.sim.submits) == paid + 6

    # the same last turn after a different first turn has other input bytes: not served from the cache
    other = write_session_suite(
        tmp_path / "other",
        {"cat": ["Make the cat's fur green", *SESSIONS["cat"][1:]], "cup": SESSIONS["cup"]},
        single=False,
    )
    res = run(sim, other, ws, "changed", models=["qwen-edit"])
    rows = {r["call_id"]: r for r in rows_of(ws, "changed")}
    assert [rows[f"changed/cat.t{k}/qwen-edit/0"]["cost_source"] == "cache" for k in (1, 2, 3)] == [False] * 3
    assert [rows[f"changed/cup.t{k}/qwen-edit/0"]["cost_source"] == "cache" for k in (1, 2, 3)] == [True] * 3
    first = {r["call_id"]: r for r in rows_of(ws, "first")}
    hit = rows["changed/cup.t3/qwen-edit/0"]
    assert hit["output_sha256"] == first["first/cup.t3/qwen-edit/0"]["output_sha256"]
    assert hashlib.sha256(b"").hexdigest() != hit["fingerprint"]


def test_retrying_a_failed_middle_turn_continues_its_session(sim, tmp_path) -> None:
    # a transient failure (task code 5000: server) of one middle turn, once
    sim.sim.add_fault("task_failed", code=5000, count=1, model="qwen-edit", prompt=SESSIONS["cup"][1])
    suite = write_session_suite(tmp_path / "sess", single=False)
    res = run(sim, suite, tmp_path / "ws", "retry", models=["qwen-edit"])
    rows = {r["call_id"]: r for r in rows_of(tmp_path / "ws", "retry")}
    assert rows["retry/cup.t2/qwen-edit/0"]["error_category"] == "server" and res.not_reached == 1
    res = run(sim, suite, tmp_path / "ws", "retry", resume=True, retry_failed=True)
    rows = {r["call_id"]: r for r in rows_of(tmp_path / "ws", "retry")}
    assert res.completed == 6 and res.not_reached == 0 and res.failed == 0
    assert rows["retry/cup.t3/qwen-edit/0"]["reason"] is None  # planned again once its turn 2 completed
    assert_bill_matches(sim, list(rows.values()))
    assert assert_chained_at_the_server(sim, list(rows.values())) == 4
