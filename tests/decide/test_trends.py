"""evalkit.decide.trends: the tests behind each metric, run selection, verdicts and exit codes — on synthetic
histories written through the store's API (fast, many seeds: the false-alarm rate) and on a history of real
runs against the local WaveSpeed simulator with one model slowed and one failing."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from evalkit.decide import _trend_tests as T
from evalkit.decide.trends import MIN_EFFECT, parse_min_effect, trends
from evalkit.errors import InvalidInputError
from evalkit.store import Workspace
from tests.plugins.histories import Behaviour, write_history, write_run

ROOT = Path(__file__).resolve().parents[2]
B = Behaviour()
STEADY = {"steady-a": B, "steady-b": B.but(latency_ms=6000, price_usd=0.05, quality=6.0), "slowing": B, "failing": B}


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# -- the statistics ---------------------------------------------------------------------------------------


def test_latency_test_is_mann_whitney_with_a_bootstrap_interval_of_the_percentile_change():
    rng = _rng()
    base, new = rng.lognormal(7, 0.3, 300), rng.lognormal(7, 0.3, 60) * 1.5
    t = T.latency_test(base, new, 95, rng=_rng(1))
    assert t.p_value == pytest.approx(stats.mannwhitneyu(new, base, alternative="two-sided").pvalue)
    assert t.change == pytest.approx(np.percentile(new, 95) / np.percentile(base, 95) - 1)
    assert t.ci[0] < t.change < t.ci[1] and t.ci[0] > 0
    assert T.latency_test(base, new, 95, rng=_rng(1)) == t  # seeded: the same interval every time
    same = T.latency_test(base, rng.lognormal(7, 0.3, 60), 50, rng=_rng(1))
    assert same.p_value > 0.01 and same.ci[0] < 0 < same.ci[1]


@pytest.mark.parametrize("n, q", [(500, 95.0), (37, 50.0), (2, 95.0), (5, 100.0)])
def test_resampled_percentiles_are_drawn_exactly_as_brute_force_resampling(n, q):
    x = np.arange(n, dtype=float)
    fast = T._resampled_percentile(x, q, 20_000, _rng(1))
    slow = np.percentile(x[_rng(2).integers(0, n, size=(20_000, n))], q, axis=1)
    assert stats.ks_2samp(fast.round(6), slow.round(6)).pvalue > 0.001
    assert np.percentile(fast, [2.5, 50, 97.5]) == pytest.approx(np.percentile(slow, [2.5, 50, 97.5]), abs=1.01)


def test_success_test_is_fisher_exact_on_the_counts():
    t = T.success_test(190, 200, 30, 40, rng=_rng())
    assert t.p_value == pytest.approx(stats.fisher_exact([[30, 10], [190, 10]]).pvalue)
    assert t.change == pytest.approx(30 / 40 - 190 / 200) and t.ci[1] < 0


def test_quality_test_is_paired_wilcoxon_over_cases():
    rng = _rng()
    base = rng.normal(7, 1.5, 25)  # cases differ a lot; the pairing removes that
    new = base - 0.5 + rng.normal(0, 0.2, 25)
    t = T.quality_test(base, new, rng=_rng(1))
    assert t.p_value == pytest.approx(stats.wilcoxon(new - base, zero_method="pratt").pvalue)
    assert t.p_value < 1e-4 and t.change == pytest.approx(np.mean(new - base))
    unpaired = stats.mannwhitneyu(new, base).pvalue
    assert unpaired > 0.05  # unpaired, the same change would be lost in the cases' spread


def test_cost_change_is_exact_and_bh_matches_a_hand_computation():
    assert T.cost_change(0.04, 0.042, 10, 10).change == pytest.approx(0.05)
    assert T.cost_change(0.04, 0.04, 10, 10).change == 0.0 and T.cost_change(0.04, 0.04, 1, 1).p_value is None
    p = [0.01, 0.04, 0.03, 0.5]
    # sorted 0.01, 0.03, 0.04, 0.5 → p·m/rank = 0.04, 0.04, 0.0533, 0.5 (then monotone from the top)
    assert T.bh_qvalues(p) == pytest.approx([0.04, 0.0533333, 0.0533333, 0.5])


def test_min_effect_parsing():
    assert parse_min_effect(None) == MIN_EFFECT
    e = parse_min_effect("latency=+30%,success=-10pp,quality=-0.5")
    assert e["latency_p95"] == e["inference_p50"] == pytest.approx(0.3)
    assert e["success"] == pytest.approx(-0.1) and e["quality"] == -0.5
    assert parse_min_effect("latency_p95=25%")["latency_p95"] == pytest.approx(0.25)
    for bad in ("speed=+2%", "latency=+200", "success=-x"):
        with pytest.raises(InvalidInputError):
            parse_min_effect(bad)


# -- synthetic histories ----------------------------------------------------------------------------------


@pytest.fixture
def history(tmp_path):
    ws = Workspace(tmp_path / "ws")
    latest = {**STEADY, "slowing": B.but(latency_ms=3000), "failing": B.but(success=0.6)}
    write_history(ws, "nightly", [STEADY] * 7 + [latest], cases=20, repeats=2, seed=3)
    return ws


def test_a_slowed_and_a_failing_model_are_flagged_the_others_not(history):
    tr = trends(history, "nightly")
    alarms = {(r.model, r.metric) for r in tr.rows if r.alarm}
    assert alarms == {("slowing", "latency_p50"), ("slowing", "latency_p95"), ("slowing", "inference_p50"),
                      ("failing", "success")}  # fmt: skip
    assert tr.exit_code() == 1
    assert not [r for r in tr.rows if r.model.startswith("steady") and r.significant]
    d = tr.to_dict()
    flagged = {(c["model"], c["metric"]) for c in d["changes"]}
    assert alarms <= flagged
    c = next(c for c in d["changes"] if (c["model"], c["metric"]) == ("failing", "success"))
    assert set(c) >= {"model", "metric", "kind", "significant", "baseline", "latest", "change", "ci", "p_value",
                      "q_value"}  # fmt: skip
    assert c["kind"] == "regression" and c["significant"] and c["change"] < -0.2 and c["q_value"] < 0.05
    assert c["ci"][0] < c["change"] < c["ci"][1] and c["p_value"] <= c["q_value"]
    json.dumps(d, allow_nan=False)
    assert len(d["series"]) == 8 * 4 * 6 and d["baseline_runs"] == [f"nightly-{i:03d}" for i in range(7)]
    assert max(len(line) for line in tr.render().splitlines()) <= 100


def test_history_without_a_change_exits_0(tmp_path):
    ws = Workspace(tmp_path)
    write_history(ws, "nightly", [STEADY] * 6, cases=20, repeats=2, seed=5)
    tr = trends(ws, "nightly")
    assert tr.exit_code() == 0 and not [r for r in tr.rows if r.alarm]
    assert "no regressions" in tr.render()


def test_false_alarm_rate_over_many_seeded_histories_is_at_most_5_percent(tmp_path):
    """30 histories of 8 runs where nothing changes (calls vary, and each run's latency shifts a little as
    days do): the share of model × metric pairs alarmed, and of those flagged significant, stays ≤ 5 %."""
    ws = Workspace(tmp_path)
    pairs = alarmed = significant = exits = 0
    for seed in range(30):
        suite = f"h{seed}"
        write_history(ws, suite, [STEADY] * 8, cases=15, repeats=2, seed=seed, run_jitter=0.03)
        tr = trends(ws, suite, n_boot=100)
        pairs += len(tr.rows)
        alarmed += sum(r.alarm for r in tr.rows)
        significant += sum(r.significant for r in tr.rows)
        exits += tr.exit_code()
    assert pairs == 30 * 4 * 6
    assert alarmed / pairs <= 0.05 and significant / pairs <= 0.05
    # a history has 24 pairs: with FDR control, few nights of 30 alarm at all (about 1 in 10 at this noise)
    assert exits / 30 <= 0.15


def test_a_significant_but_small_change_is_reported_not_alarmed(tmp_path):
    ws = Workspace(tmp_path)
    steady = {"m": B.but(sigma=0.1)}
    write_history(ws, "s", [steady] * 4 + [{"m": B.but(sigma=0.1, latency_ms=2200)}], cases=100, repeats=3, seed=1)
    tr = trends(ws, "s", metrics=["latency_p50"])
    (row,) = tr.rows
    assert row.significant and row.kind == "regression" and not row.alarm and row.verdict == "small regression"
    assert tr.exit_code() == 0 and [c["metric"] for c in tr.to_dict()["changes"]] == ["latency_p50"]
    stricter = trends(ws, "s", metrics=["latency_p50"], min_effect="latency=+5%")
    assert stricter.exit_code() == 1


def test_a_price_change_is_exact_and_flagged_beyond_the_cost_tolerance(tmp_path):
    ws = Workspace(tmp_path)
    write_history(ws, "s", [{"m": B}] * 3 + [{"m": B.but(price_usd=0.0315)}], seed=2)
    tr = trends(ws, "s", metrics=["cost"])
    (row,) = tr.rows
    assert row.test.change == pytest.approx(0.05) and row.alarm and row.q_value is None and tr.exit_code() == 1
    assert trends(ws, "s", metrics=["cost"], cost_tolerance=0.1).exit_code() == 0


def test_quality_drop_is_tested_paired_over_cases(tmp_path):
    ws = Workspace(tmp_path)
    write_history(ws, "s", [{"m": B}] * 4 + [{"m": B.but(quality=6.0)}], cases=25, seed=4)
    (row,) = trends(ws, "s", metrics=["quality"]).rows
    assert row.alarm and row.test.test == "wilcoxon_signed_rank" and row.test.n_latest == 25


def test_runs_that_do_not_count_are_skipped_with_the_reason(tmp_path):
    ws = Workspace(tmp_path)
    rng = _rng()
    write_run(ws, "r0", "s", {"m": B}, rng=rng)
    write_run(ws, "r1", "s", {"m": B}, rng=rng, fingerprint="older-suite-files")
    write_run(ws, "r2", "s", {"m": B}, rng=rng)
    write_run(ws, "r3", "s", {"m": B}, rng=rng, cached=3)
    write_run(ws, "r4", "s", {"m": B}, rng=rng, status="interrupted")
    write_run(ws, "other", "another-suite", {"m": B}, rng=rng)
    write_run(ws, "r5", "s", {"m": B}, rng=rng)
    tr = trends(ws, "s")
    assert [r.run_id for r in tr.runs] == ["r0", "r2", "r5"]
    reasons = {s["run_id"]: s["reason"] for s in tr.skipped}
    assert set(reasons) == {"r1", "r3", "r4"}
    assert "another version" in reasons["r1"] and "cache" in reasons["r3"] and "interrupted" in reasons["r4"]
    assert "skipped 3 run(s)" in tr.render()
    assert [r.run_id for r in trends(ws, "s", last=2).runs] == ["r2", "r5"]
    since = ws.get_run("r2")["created_at"]
    assert [r.run_id for r in trends(ws, "s", since=since).runs] == ["r2", "r5"]


def test_bad_requests_say_what_to_do(tmp_path):
    ws = Workspace(tmp_path)
    write_history(ws, "nightly", [{"m": B}] * 2)
    with pytest.raises(InvalidInputError, match="did you mean 'nightly'"):
        trends(ws, "nightlyy")
    with pytest.raises(InvalidInputError, match="not in the latest run"):
        trends(ws, "nightly", models=["nope"])
    with pytest.raises(InvalidInputError, match="unknown metric"):
        trends(ws, "nightly", metrics=["speed"])
    with pytest.raises(InvalidInputError, match="is not a date"):
        trends(ws, "nightly", since="last tuesday")
    only = Workspace(tmp_path / "one")
    write_history(only, "s", [{"m": B}])
    tr = trends(only, "s")
    assert tr.exit_code() == 0 and "no baseline" in tr.render() and all(not math.isfinite(r.test.change)
                                                                        for r in tr.rows)  # fmt: skip


@pytest.mark.e2e
def test_cli_exit_codes_json_and_table(history, tmp_path):
    env = {**os.environ, "COLUMNS": "100", "PYTHONPATH": str(ROOT)}

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "evalkit", "trends", "-w", str(history.path), *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )

    res = cli("--suite", "nightly")
    assert res.returncode == 1, res.stderr
    assert "REGRESSION" in res.stdout and max(len(x) for x in res.stdout.splitlines()) <= 100
    ok = cli("--suite", "nightly", "--models", "steady-a,steady-b", "--json")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["changes"] == []
    bad = cli("--suite", "nope")
    assert bad.returncode == 2 and "no run of suite" in bad.stderr


# -- a history of real runs against the local WaveSpeed simulator -----------------------------------------------


def test_history_against_the_local_simulator_flags_the_slowed_and_the_failing_model(wavespeed_sim_factory, tmp_path):
    from evalkit.credentials import Secret
    from evalkit.engine.runner import run
    from evalkit.providers.wavespeed import PollSchedule

    poll = PollSchedule(initial_delay_s=0.01, factor=1.5, quick_polls=3, min_interval_s=0.02, max_interval_s=0.04)
    models = ["qwen-edit", "seedream-v4.5-edit", "flux-kontext-pro"]
    steady = {m: 600.0 for m in models}  # well above what polling (≤ 40 ms) and a loaded machine add

    def nightly(i: int, latency: dict[str, float], fail: str | None = None) -> None:
        sim = wavespeed_sim_factory(model_latency_ms=latency, latency_jitter=0.15, seed=i)
        if fail:
            sim.sim.add_fault("task_failed", count=6, model=fail)  # 6 of its 10 calls: deterministic
        opts = {"wavespeed": {"base_url": sim.base_url, "api_key": Secret(sim.api_key, "WAVESPEED_API_KEY"),
                              "poll": poll}}  # fmt: skip
        run("smoke", ",".join(models), repeats=10, workspace=tmp_path, run_id=f"nightly-{i}", no_cache=True,
            provider_options=opts, progress=False)  # fmt: skip
        sim.stop()

    for i in range(3):
        nightly(i, steady)
    nightly(3, {**steady, "qwen-edit": 2400.0}, fail="flux-kontext-pro")
    tr = trends(Workspace(tmp_path), "smoke", metrics=["latency_p50", "inference_p50", "success"])
    assert tr.simulated and "SIMULATED" in tr.render()
    alarms = {(r.model, r.metric) for r in tr.rows if r.alarm}
    assert ("qwen-edit", "inference_p50") in alarms and ("qwen-edit", "latency_p50") in alarms, tr.render()
    assert ("flux-kontext-pro", "success") in alarms, tr.render()
    assert not [r for r in tr.rows if r.model == "seedream-v4.5-edit" and r.alarm], tr.render()
    assert tr.exit_code() == 1
