"""evalkit.engine.planning: pure, deterministic plans; seeds per repeat; not-applicable pairs with their
reason; released calls rebuilt exactly; the estimate."""

from __future__ import annotations

import pytest

from evalkit.engine.planning import BASE_SEED, PlannedCall, call_id_for, estimate, iter_plan
from evalkit.errors import EvalkitError
from evalkit.providers import create_provider
from evalkit.store import CallStatus
from evalkit.suites import load_suite

MODELS = ("qwen-edit", "flux-kontext-pro", "z-image-turbo-inpaint", "image-zoom-out", "stability-search-replace")


@pytest.fixture(scope="module")
def smoke():
    return load_suite("smoke")


@pytest.fixture(scope="module")
def models(catalog):
    return [catalog.get(m) for m in MODELS]


@pytest.fixture(scope="module")
def providers(models):
    return {name: create_provider(name) for name in {m.provider for m in models}}


def plan(smoke, models, providers, **kw) -> list[PlannedCall]:
    return list(iter_plan(kw.pop("run_id", "r1"), smoke.cases, models, providers, **kw))


def test_every_case_model_repeat_once_in_a_fixed_order(smoke, models, providers):
    calls = plan(smoke, models, providers, repeats=2)
    assert len(calls) == len(smoke.cases) * len(models) * 2
    keys = [(pc.repeat, pc.case_id, pc.model_id) for pc in calls]
    expected = [(r, c.id, m.id) for r in range(2) for c in smoke.cases for m in models]
    assert keys == expected  # repeat-major, then case, then model: a budget cut leaves whole cases compared
    assert len({pc.call_id for pc in calls}) == len(calls)
    assert all(pc.call_id == call_id_for("r1", pc.case_id, pc.model_id, pc.repeat) for pc in calls)
    assert calls[0].call_id == f"r1/{smoke.cases[0].id}/{models[0].id}/0"


def test_planning_is_deterministic(smoke, models, providers):
    a = [pc.row() for pc in plan(smoke, models, providers, repeats=2)]
    b = [pc.row() for pc in plan(smoke, models, providers, repeats=2)]
    assert a == b
    fps = [r["fingerprint"] for r in a if r["status"] == CallStatus.PLANNED]
    assert fps and all(isinstance(f, str) and len(f) == 64 for f in fps)


def test_seeds_follow_the_repeat_and_only_where_the_model_takes_one(smoke, models, providers):
    calls = [pc for pc in plan(smoke, models, providers, repeats=3) if pc.status == CallStatus.PLANNED]
    seeded = [pc for pc in calls if pc.model_id == "qwen-edit"]
    assert sorted(pc.seed for pc in seeded) == [BASE_SEED, BASE_SEED + 1, BASE_SEED + 2]
    assert all(pc.prepared.params["seed"] == pc.seed for pc in seeded)
    seedless = [pc for pc in calls if pc.model_id == "flux-kontext-pro"]
    assert len(seedless) == 3 and all(pc.seed is None for pc in seedless)
    # a seedless model's repeats are still distinct requests (their fingerprints differ by sample index)
    assert len({pc.prepared.fingerprint for pc in seedless}) == 3
    custom = [pc for pc in plan(smoke, models, providers, repeats=2, base_seed=7) if pc.model_id == "qwen-edit"]
    assert sorted(pc.seed for pc in custom if pc.status == CallStatus.PLANNED) == [7, 8]


def test_the_same_repeat_gets_the_same_seed_for_every_model(smoke, models, providers):
    calls = [pc for pc in plan(smoke, models, providers, repeats=2) if pc.seed is not None]
    by_repeat: dict[int, set[int]] = {}
    for pc in calls:
        by_repeat.setdefault(pc.repeat, set()).add(pc.seed)
    assert by_repeat == {0: {BASE_SEED}, 1: {BASE_SEED + 1}}


def test_pairs_a_model_cannot_do_are_not_applicable_with_the_reason(smoke, models, providers):
    calls = {(pc.case_id, pc.model_id): pc for pc in plan(smoke, models, providers)}
    zoom = calls[("rocket-zoom-out", "qwen-edit")]
    assert zoom.status == CallStatus.NOT_APPLICABLE and "does not support zoom_out" in zoom.reason
    assert zoom.request is None and zoom.prepared is None and zoom.case is None
    assert zoom.row()["fingerprint"] is None and zoom.row()["price_usd"] is None
    # the operation is supported, but preparation refuses the case (it lacks the model's required parameter)
    sr = calls[("chelsea-background-sofa", "stability-search-replace")]
    assert sr.status == CallStatus.NOT_APPLICABLE and "search_prompt" in sr.reason
    assert sr.request is None and sr.case is None and sr.inputs is None
    ok = calls[("chelsea-background-sofa", "qwen-edit")]
    assert ok.status == CallStatus.PLANNED and ok.reason is None and ok.prepared.price_usd > 0


def test_repeats_below_one_are_refused(smoke, models, providers):
    with pytest.raises(EvalkitError, match="repeats must be ≥ 1"):
        plan(smoke, models, providers, repeats=0)


def test_each_case_is_decoded_once_and_shared(smoke, models, providers):
    inputs: dict[str, tuple] = {}
    first = plan(smoke, models, providers, inputs=inputs)
    assert set(inputs) == {c.id for c in smoke.cases}
    second = plan(smoke, models, providers, inputs=inputs)
    for a, b in zip(first, second, strict=True):
        if a.status == CallStatus.PLANNED:
            assert a.inputs is b.inputs is inputs[a.case_id]  # the second pass decoded nothing


def test_release_then_build_gives_the_planned_call_back(smoke, models, providers):
    for pc in plan(smoke, models, providers, repeats=2):
        if pc.status != CallStatus.PLANNED:
            continue
        row, body = pc.row(), pc.prepared.params
        pc.release()
        assert pc.request is None and pc.prepared is None
        assert pc.call_id and pc.status == CallStatus.PLANNED  # ids and status stay
        rebuilt = pc.build(providers[pc.model.provider])
        assert rebuilt is pc and pc.row() == row and pc.prepared.params == body
        prepared = pc.prepared
        assert pc.build(providers[pc.model.provider]).prepared is prepared  # a no-op when present


def test_a_call_released_without_its_case_cannot_be_rebuilt(smoke, models, providers, catalog):
    pc = next(p for p in plan(smoke, models, providers) if p.status == CallStatus.PLANNED)
    stub = PlannedCall(
        call_id=pc.call_id,
        run_id=pc.run_id,
        case_id=pc.case_id,
        model=pc.model,
        repeat=0,
        operation=pc.operation,
        category=pc.category,
        seed=pc.seed,
    )
    stub.release()  # nothing to drop: a stub without its case keeps what it has
    with pytest.raises(EvalkitError, match="released without what it needs"):
        stub.build(providers[pc.model.provider])


def test_estimate_sums_per_model_with_a_total(smoke, models, providers):
    calls = plan(smoke, models, providers, repeats=2)
    df = estimate(iter(calls)).set_index("model_id")  # one pass: a generator is enough
    for m in models:
        mine = [pc for pc in calls if pc.model_id == m.id]
        applicable = [pc for pc in mine if pc.status == CallStatus.PLANNED]
        assert df.loc[m.id, "calls"] == len(applicable)
        assert df.loc[m.id, "not_applicable"] == len(mine) - len(applicable)
        assert df.loc[m.id, "max_usd"] == pytest.approx(sum(pc.prepared.reserve_usd for pc in applicable), abs=1e-4)
        assert df.loc[m.id, "max_usd"] >= df.loc[m.id, "list_price_usd"]
    assert df.loc["TOTAL", "calls"] == sum(pc.status == CallStatus.PLANNED for pc in calls)
    assert df.loc["TOTAL", "not_applicable"] == sum(pc.status == CallStatus.NOT_APPLICABLE for pc in calls)
    assert estimate([]).empty
