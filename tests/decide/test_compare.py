"""evalkit.decide.compare: threshold parsing, per-model drift between two runs, exit codes — on hand-built runs
with known numbers, and on two real runs against the local WaveSpeed server at different latencies."""

from __future__ import annotations

import math

import numpy as np
import pytest

from evalkit.credentials import Secret
from evalkit.decide.compare import Threshold, compare_runs, model_metrics, parse_fail_on, previous_run_id
from evalkit.engine.runner import run
from evalkit.errors import InvalidInputError
from evalkit.providers.wavespeed import PollSchedule
from evalkit.store import Workspace

# -- parsing ------------------------------------------------------------------------------------------


def test_parse_fail_on_reads_relative_absolute_and_points():
    t = parse_fail_on("latency_p95=+20%, cost=+10%,success=-5pp,quality=-0.3,latency_p50=+150")
    assert t["latency_p95"] == Threshold("latency_p95", 20.0, "%")
    assert t["cost"] == Threshold("cost", 10.0, "%")
    assert t["success"] == Threshold("success", -5.0, "pp") and t["success"].limit == pytest.approx(-0.05)
    assert t["quality"] == Threshold("quality", -0.3, "abs")
    assert t["latency_p50"] == Threshold("latency_p50", 150.0, "abs")
    assert parse_fail_on("success_rate=-0.1")["success"].change == -0.1  # alias


@pytest.mark.parametrize(
    "spec, words",
    [
        ("", "empty"),
        (" , ", "empty"),
        ("latency_p95", "expected METRIC=CHANGE"),
        ("latency_p59=+20%", "did you mean 'latency_p95'"),
        ("speed=+20%", "metrics: latency_p50"),
        ("latency_p95=20%", "sign says which direction"),
        ("latency_p95=+abc", "bad change"),
        ("latency_p95=+0%", "zero change"),
        ("latency_p95=+5pp", "only applies to success"),
        ("cost=+1%,cost=+2%", "given twice"),
    ],
)
def test_parse_fail_on_rejects_bad_specs_clearly(spec, words):
    with pytest.raises(InvalidInputError) as err:
        parse_fail_on(spec)
    assert words in str(err.value)


def test_threshold_direction_and_limits():
    up = Threshold("latency_p95", 20.0, "%")
    assert up.crossed(100.0, 121.0) is True
    assert up.crossed(100.0, 120.0) is False  # at the limit is not beyond it
    assert up.crossed(100.0, 50.0) is False  # faster is never a latency regression
    assert up.crossed(math.nan, 50.0) is None
    assert Threshold("cost", 10.0, "%").crossed(0.0, 0.01) is True  # from free to paid: +inf %
    assert Threshold("cost", 10.0, "%").crossed(0.0, 0.0) is False
    down = Threshold("success", -0.05, "abs")
    assert down.crossed(1.0, 0.94) is True and down.crossed(1.0, 0.96) is False and down.crossed(0.9, 1.0) is False
    assert Threshold("quality", -5.0, "%").crossed(8.0, 7.5) is True  # -6.25 %


# -- hand-built runs ----------------------------------------------------------------------------------


def _make_run(ws: Workspace, run_id: str, models: dict[str, dict], *, cases=("c1", "c2", "c3", "c4")) -> None:
    """One run: per model, ``total_ms`` per case (None = failed), ``cost`` per call, ``quality`` per case."""
    ws.create_run(
        run_id,
        suite_name="hand",
        suite_path=None,
        suite_fingerprint=None,
        catalog_fingerprint=None,
        models=list(models),
        repeats=1,
        budget_usd=None,
        config={},
    )
    src = ws.put_blob(b"\x89PNG fake source", "png")
    ws.put_cases(
        run_id,
        [{"case_id": c, "operation": "general_edit", "category": "color", "input_sha256": [src.sha256]} for c in cases],
    )
    rows, finals, scores = [], [], []
    for model, spec in models.items():
        for i, case in enumerate(cases):
            cid = f"{run_id}-{model}-{case}"
            rows.append(
                {
                    "call_id": cid,
                    "run_id": run_id,
                    "case_id": case,
                    "model_id": model,
                    "provider": "wavespeed",
                    "operation": "general_edit",
                    "category": "color",
                    "repeat": 0,
                    "price_usd": spec["cost"],
                }
            )
            ms = spec["total_ms"][i]
            if ms is None:
                finals.append((cid, {"status": "failed", "error_category": "server", "cost_usd": 0.0}))
                continue
            finals.append(
                (
                    cid,
                    {
                        "status": "completed",
                        "total_ms": float(ms),
                        "cost_usd": spec["cost"],
                        "cost_source": "list_price",
                    },
                )
            )
            scores.append(
                {
                    "run_id": run_id,
                    "call_id": cid,
                    "metric": "viescore_o",
                    "source": "judge",
                    "version": "j1",
                    "value": spec["quality"][i],
                }
            )
    ws.insert_calls(rows)
    for cid, fields in finals:
        ws.finish_call(cid, fields)
    ws.put_scores(scores)
    ws.update_run(run_id, status="completed")


BASE = {
    "alpha": {"total_ms": [100, 200, 300, 400], "cost": 0.04, "quality": [7, 8, 7, 8]},
    "beta": {"total_ms": [50, 50, 60, 60], "cost": 0.02, "quality": [6, 6, 6, 6]},
    "gone": {"total_ms": [10, 10, 10, 10], "cost": 0.01, "quality": [5, 5, 5, 5]},
}
NEW = {
    "alpha": {"total_ms": [150, 300, 450, 600], "cost": 0.04, "quality": [7, 8, 7, 8]},  # every call 1.5× slower
    "beta": {"total_ms": [50, 50, 60, None], "cost": 0.02, "quality": [6, 6, 5.5, 6]},  # one failure (c4), a bit worse
    "fresh": {"total_ms": [10, 10, 10, 10], "cost": 0.01, "quality": [9, 9, 9, 9]},
}


@pytest.fixture
def two_runs(tmp_path):
    ws = Workspace(tmp_path / "ws")
    _make_run(ws, "base", BASE)
    _make_run(ws, "new", NEW)
    yield ws
    ws.close()


def test_model_metrics_match_hand_computation(two_runs):
    from evalkit.decide.quality import QualitySpec

    m = model_metrics(two_runs, "base", QualitySpec("viescore_o", "judge", "j1"))
    # numpy linear percentile of [100, 200, 300, 400]: rank 0.95·3 = 2.85 → 300 + 0.85·100
    assert m.loc["alpha", "latency_p95"] == pytest.approx(385.0)
    assert m.loc["alpha", "latency_p50"] == pytest.approx(250.0)
    assert m.loc["alpha", "cost"] == pytest.approx(0.04)
    assert m.loc["alpha", "quality"] == pytest.approx(7.5)
    n = model_metrics(two_runs, "new", QualitySpec("viescore_o", "judge", "j1"))
    assert n.loc["beta", "success"] == pytest.approx(0.75)
    assert n.loc["beta", "n_latency"] == 3


def test_a_run_compared_with_itself_passes(two_runs):
    c = compare_runs(two_runs, "base", "base", fail_on="latency_p95=+1%,cost=+1%,success=-0.01,quality=-0.01")
    assert c.exit_code() == 0 and c.breaches == []
    assert set(c.table["delta"].dropna()) == {0.0}
    checked = c.table[c.table["threshold"].notna()]
    assert len(checked) == 4 * 3 and checked["breached"].eq(False).all()
    assert c.table.loc[c.table["threshold"].isna(), "breached"].isna().all()  # latency_p50: no limit given
    assert c.added == [] and c.removed == []
    assert "no regressions" in c.render()


def test_regressions_are_named_by_model_and_metric(two_runs):
    c = compare_runs(two_runs, "base", "new", fail_on="latency_p95=+20%,success=-0.1,quality=-0.3")
    assert c.exit_code() == 1
    got = {(b.model_id, b.metric) for b in c.breaches}
    # beta's quality: mean of its scored cases 6, 6, 5.5 (c4 failed) = 5.83, down 0.17 < 0.3: not flagged
    assert got == {("alpha", "latency_p95"), ("beta", "success")}
    lat = next(b for b in c.breaches if b.metric == "latency_p95")
    assert lat.base == pytest.approx(385.0) and lat.new == pytest.approx(577.5) and lat.delta_pct == pytest.approx(50.0)
    text = c.render()
    assert "REGRESSION" in text and "alpha: latency_p95 385 ms → 578 ms" in text and "limit latency_p95 +20%" in text
    assert "beta: success 100.0% → 75.0%" in text


def test_added_and_removed_models_are_listed_not_compared(two_runs):
    c = compare_runs(two_runs, "base", "new", fail_on="latency_p95=+20%")
    assert c.added == ["fresh"] and c.removed == ["gone"]
    assert set(c.table["model_id"]) == {"alpha", "beta"}
    text = c.render()
    assert "added in new: fresh" in text and "removed since base: gone" in text
    d = c.to_dict()
    assert (
        d["exit_code"] == 1 and d["added"] == ["fresh"] and all(r["model_id"] in ("alpha", "beta") for r in d["rows"])
    )


def test_no_thresholds_reports_but_never_fails(two_runs):
    c = compare_runs(two_runs, "base", "new")
    assert c.exit_code() == 0 and "nothing checked" in c.render()
    row = c.table[(c.table.model_id == "alpha") & (c.table.metric == "latency_p50")].iloc[0]
    assert row["base"] == pytest.approx(250.0) and row["new"] == pytest.approx(375.0)


def test_previous_run_is_the_latest_earlier_run_of_the_suite(two_runs):
    assert previous_run_id(two_runs, "new") == "base"
    assert previous_run_id(two_runs, "base") is None
    c = compare_runs(two_runs, "previous", "new", fail_on="latency_p95=+20%")
    assert c.base_run == "base" and c.exit_code() == 1
    with pytest.raises(InvalidInputError, match="no run of the same suite before 'base'"):
        compare_runs(two_runs, "latest-before", "base")


def test_unknown_runs_and_missing_values_are_explicit(two_runs):
    with pytest.raises(InvalidInputError, match="no run 'nope'"):
        compare_runs(two_runs, "nope", "new")
    c = compare_runs(two_runs, "base", "new", quality="ssim:auto", fail_on="quality=-0.1")
    assert c.exit_code() == 0
    assert any("quality -0.1 not checked" in n for n in c.notes)


# -- real runs against the local server ------------------------------------------------------------------

POLL = PollSchedule(initial_delay_s=0.01, factor=1.5, quick_polls=3, min_interval_s=0.02, max_interval_s=0.05)


def _run_on(sim, ws_path, run_id):
    opts = {"wavespeed": {"base_url": sim.base_url, "api_key": Secret(sim.api_key, "WAVESPEED_API_KEY"), "poll": POLL}}
    return run(
        "smoke",
        "qwen-edit,gpt-image-1-edit",
        repeats=2,
        workspace=ws_path,
        run_id=run_id,
        no_cache=True,
        provider_options=opts,
        progress=False,
    )


def test_injected_latency_regression_on_the_local_server_fails_the_check(wavespeed_sim_factory, tmp_path):
    ws_path = tmp_path / "ws"
    fast = wavespeed_sim_factory(fixed_latency_ms=10)
    _run_on(fast, ws_path, "nightly-1")
    slow = wavespeed_sim_factory(fixed_latency_ms=1500)  # far above anything a loaded machine adds to the fast run
    _run_on(slow, ws_path, "nightly-2")
    ws = Workspace(ws_path)
    same = compare_runs(ws, "nightly-1", "nightly-1", fail_on="latency_p95=+50%,success=-0.1")
    assert same.exit_code() == 0
    c = compare_runs(ws, "previous", "nightly-2", fail_on="latency_p95=+50%,success=-0.1")
    assert c.base_run == "nightly-1"
    assert c.exit_code() == 1
    assert {b.model_id for b in c.breaches if b.metric == "latency_p95"} == {"qwen-edit", "gpt-image-1-edit"}
    assert not any(b.metric == "success" for b in c.breaches)
    assert all(b.new >= 1500 for b in c.breaches)  # the server held every job for 1.5 s
    assert "SIMULATED" in c.render() and "qwen-edit: latency_p95" in c.render()
    assert not any("cache" in n for n in c.notes)  # --no-cache: every call was really made
    latency = c.table[c.table["metric"].str.startswith("latency")]
    assert np.isfinite(latency["delta"]).all() and (latency["delta"] > 0).all()
    assert c.table.loc[c.table["metric"] == "quality", "base"].isna().all()  # not scored: never a breach
    ws.close()
