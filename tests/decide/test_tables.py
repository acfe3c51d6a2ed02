"""evalkit.decide.tables against the synthetic workspace: every number checked against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from evalkit.decide.quality import QualitySpec, as_quality, resolve_quality
from evalkit.decide.tables import (
    bootstrap_ci,
    case_quality,
    comparison_cells,
    failure_table,
    model_table,
    pareto_front,
    percentile,
    style_table,
)
from evalkit.errors import InvalidInputError
from tests.plugins import synthetic as S

JUDGE = ("viescore_o", "judge")


def row(df: pd.DataFrame, model: str, **keys) -> pd.Series:
    sel = df["model_id"] == model
    for k, v in keys.items():
        sel &= df[k] == v
    assert sel.sum() == 1, (model, keys)
    return df[sel].iloc[0]


def test_counts_costs_and_success_rates_are_exact(synthetic_workspace):
    t = model_table(synthetic_workspace.ws, S.RUN_ID, quality=JUDGE)
    alpha = row(t, "alpha")
    # 8 general_edit + 3 erase calls, all completed; 7 general + 3 erase paid $0.04, g8 came from the cache
    assert (alpha["calls"], alpha["completed"], alpha["failed"], alpha["not_applicable"]) == (11, 11, 0, 0)
    assert alpha["success_rate"] == 1.0
    assert alpha["mean_cost_usd"] == pytest.approx(0.04)
    assert alpha["total_cost_usd"] == pytest.approx(0.40)
    delta = row(t, "delta")
    # 2 completed, 5 failed + 1 unknown outcome; erase is not applicable (3 calls)
    assert (delta["calls"], delta["completed"], delta["failed"], delta["not_applicable"]) == (8, 2, 6, 3)
    assert delta["success_rate"] == pytest.approx(0.25)
    assert delta["mean_cost_usd"] == pytest.approx(0.01)  # list price of every attempted request
    assert delta["total_cost_usd"] == pytest.approx(0.02)  # only the 2 completed calls were paid; unknown is left out
    base = row(t, "base")
    assert base["mean_cost_usd"] == 0.0 and base["total_cost_usd"] == 0.0
    mystery = row(t, "mystery")
    assert math.isnan(mystery["mean_cost_usd"]) and mystery["total_cost_usd"] == 0.0


def test_latency_percentiles_use_numpy_linear_definition(synthetic_workspace):
    t = model_table(synthetic_workspace.ws, S.RUN_ID)
    alpha = row(t, "alpha")
    # the 11 completed totals sorted: 1000 1200 1400 1600 1800 2000 2000 2100 2200 2200 5000
    assert alpha["p50_total_ms"] == pytest.approx(2000.0)
    assert alpha["p95_total_ms"] == pytest.approx(2200 + 0.5 * (5000 - 2200))  # rank 9.5
    delta = row(t, "delta")
    assert delta["p50_total_ms"] == pytest.approx(600.0)
    assert delta["p95_total_ms"] == pytest.approx(500 + 0.95 * 200)
    assert delta["p95_inference_ms"] == pytest.approx(300 + 0.95 * 100)
    gamma = row(t, "gamma")
    expected = np.percentile(S.TOTAL_MS["gamma"], 95)
    assert gamma["p95_total_ms"] == pytest.approx(expected) == pytest.approx(14000 + 0.65 * 26000)
    assert percentile([None, 1.0, float("nan"), 3.0], 50) == 2.0
    assert math.isnan(percentile([], 50))


def test_quality_means_intervals_value_and_unscored(synthetic_workspace):
    t = model_table(synthetic_workspace.ws, S.RUN_ID, quality=JUDGE)
    assert t.attrs["quality"] == {
        "metric": "viescore_o",
        "source": "judge",
        "version": S.JUDGE_VERSION,
        "higher_is_better": True,
    }
    alpha = row(t, "alpha")
    assert alpha["quality"] == pytest.approx(7.5) and alpha["quality_n"] == 8
    assert alpha["unscored"] == 3  # its 3 erase outputs have no judge score
    assert alpha["quality_ci_low"] <= 7.5 <= alpha["quality_ci_high"]
    # an independent percentile bootstrap agrees to within resampling noise
    rng = np.random.default_rng(123)
    vals = np.array(S.JUDGE["alpha"], dtype=float)
    boots = vals[rng.integers(0, 8, size=(20000, 8))].mean(axis=1)
    lo, hi = np.percentile(boots, [2.5, 97.5])
    assert alpha["quality_ci_low"] == pytest.approx(lo, abs=0.13)
    assert alpha["quality_ci_high"] == pytest.approx(hi, abs=0.13)
    beta = row(t, "beta")
    assert beta["quality"] == pytest.approx(59 / 8)
    assert beta["value_per_usd"] == pytest.approx((59 / 8) / 0.02)
    assert beta["value_note"] == ""
    gamma = row(t, "gamma")
    assert gamma["quality"] == 9.0 and gamma["quality_n"] == 7 and gamma["unscored"] == 1
    assert (gamma["quality_ci_low"], gamma["quality_ci_high"]) == (9.0, 9.0)  # identical values: a point
    delta = row(t, "delta")
    assert delta["quality"] == 6.0 and delta["quality_n"] == 2
    base = row(t, "base")
    assert math.isnan(base["value_per_usd"]) and "free" in base["value_note"]
    mystery = row(t, "mystery")
    assert math.isnan(mystery["value_per_usd"]) and "price unknown" in mystery["value_note"]
    # best first
    assert list(t["model_id"]) == ["gamma", "alpha", "beta", "mystery", "delta", "base"]


def test_bootstrap_is_deterministic_and_nan_below_two_cases():
    assert bootstrap_ci([1.0, 2.0, 3.0, 4.0]) == bootstrap_ci([1.0, 2.0, 3.0, 4.0])
    assert all(math.isnan(v) for v in bootstrap_ci([5.0]))
    assert bootstrap_ci([2.0, 2.0, 2.0]) == (2.0, 2.0)


def test_grouped_tables(synthetic_workspace):
    ws = synthetic_workspace.ws
    by_op = model_table(ws, S.RUN_ID, by="operation")
    erase = row(by_op, "alpha", operation="erase")
    assert (erase["calls"], erase["quality_n"]) == (3, 3)
    assert erase["quality"] == pytest.approx(np.mean(S.ERASE_SSIM["alpha"]))
    assert erase["p50_total_ms"] == 2100.0
    general = row(by_op, "alpha", operation="general_edit")
    assert general["quality"] == pytest.approx(np.mean(S.SSIM["alpha"]))
    assert general["p95_total_ms"] == pytest.approx(np.percentile(S.TOTAL_MS["alpha"], 95))
    beta_erase = row(by_op, "beta", operation="erase")
    assert (beta_erase["calls"], beta_erase["not_applicable"]) == (0, 3)
    assert math.isnan(beta_erase["success_rate"])
    by_cat = model_table(ws, S.RUN_ID, by="category")
    assert row(by_cat, "alpha", category="color")["quality"] == pytest.approx(np.mean([0.80, 0.82, 0.78, 0.85]))
    assert row(by_cat, "alpha", category="style")["quality"] == pytest.approx(np.mean([0.81, 0.79, 0.83, 0.84]))
    assert row(by_cat, "delta", category="style")["completed"] == 0
    with pytest.raises(InvalidInputError):
        model_table(ws, S.RUN_ID, by="vendor")


def test_repeats_are_averaged_per_case_so_each_case_weighs_the_same(synthetic_workspace):
    ws = synthetic_workspace.ws
    extra = S.call_id("alpha", "g1", repeat=1)
    ws.insert_calls(
        [
            {
                "call_id": extra,
                "run_id": S.RUN_ID,
                "case_id": "g1",
                "model_id": "alpha",
                "provider": "wavespeed",
                "operation": "general_edit",
                "category": "color",
                "repeat": 1,
                "price_usd": 0.04,
            }
        ]
    )
    ws.finish_call(extra, {"status": "completed", "total_ms": 900.0, "cost_usd": 0.04})
    ws.put_scores(
        [
            {
                "run_id": S.RUN_ID,
                "call_id": extra,
                "metric": "viescore_o",
                "source": "judge",
                "version": S.JUDGE_VERSION,
                "value": 9.0,
            }
        ]
    )
    t = model_table(ws, S.RUN_ID, quality=JUDGE, by="operation")
    alpha = row(t, "alpha", operation="general_edit")
    assert alpha["quality"] == pytest.approx((8 + 8 + 7 + 8 + 7 + 8 + 7 + 8) / 8)  # g1 = mean(7, 9)
    assert alpha["quality_n"] == 8 and alpha["calls"] == 9
    assert alpha["total_cost_usd"] == pytest.approx(7 * 0.04 + 0.04)
    per_case, _ = case_quality(ws, S.RUN_ID, JUDGE)
    g1 = per_case[(per_case["model_id"] == "alpha") & (per_case["case_id"] == "g1")].iloc[0]
    assert (g1["value"], g1["n_scored"]) == (8.0, 2)


def test_quality_version_resolution(synthetic_workspace):
    ws = synthetic_workspace.ws
    ws.put_scores(
        [
            {
                "run_id": S.RUN_ID,
                "call_id": S.call_id("beta", "g1"),
                "metric": "viescore_o",
                "source": "judge",
                "version": "judge-v2",
                "value": 1.0,
            }
        ]
    )
    scores = ws.scores(S.RUN_ID)
    assert resolve_quality(scores, JUDGE).version == "judge-v2"  # the most recently written
    t_new = model_table(ws, S.RUN_ID, quality=JUDGE)
    assert row(t_new, "beta")["quality"] == 1.0 and row(t_new, "beta")["quality_n"] == 1
    t_old = model_table(ws, S.RUN_ID, quality=("viescore_o", "judge", S.JUDGE_VERSION))
    assert row(t_old, "beta")["quality"] == pytest.approx(59 / 8)
    none = model_table(ws, S.RUN_ID, quality=("clip_t", "auto"))
    assert none["quality"].isna().all() and none.attrs["quality"]["version"] is None


def test_quality_spec_parsing():
    assert as_quality(("ssim", "auto")) == QualitySpec("ssim", "auto", None, True)
    assert as_quality("l1:auto").higher_is_better is False
    assert as_quality(("viescore_o", "judge", "v3")).version == "v3"
    with pytest.raises(InvalidInputError):
        as_quality(("ssim", "oracle"))
    with pytest.raises(InvalidInputError):
        as_quality(42)  # type: ignore[arg-type]


def test_lower_is_better_quality_sorts_ascending(synthetic_workspace):
    ws = synthetic_workspace.ws
    ws.put_scores(
        [
            {
                "run_id": S.RUN_ID,
                "call_id": S.call_id(m, "g1"),
                "metric": "l1",
                "source": "auto",
                "version": S.AUTO_VERSION,
                "value": v,
            }
            for m, v in (("alpha", 0.3), ("beta", 0.1), ("gamma", 0.2))
        ]
    )
    t = model_table(ws, S.RUN_ID, quality=("l1", "auto"))
    assert list(t["model_id"][:3]) == ["beta", "gamma", "alpha"]
    assert pareto_front(t, maximize_y=False) == {"beta"}


def test_pareto_front_pure():
    df = pd.DataFrame(
        {
            "model_id": ["a", "b", "c", "d", "e", "f"],
            "cost": [1.0, 2.0, 2.0, 3.0, 1.0, float("nan")],
            "q": [5.0, 7.0, 6.0, 7.0, 5.0, 9.0],
        }
    )
    # c is dominated by b (same cost, lower q); d by b (more cost, same q); a and e tie (both kept); f has no cost
    assert pareto_front(df, "cost", "q") == {"a", "b", "e"}
    assert pareto_front(df, "cost", "q", minimize_x=False) == {"d"}  # d: most cost and best q
    assert pareto_front(df, "cost", "q", maximize_y=False) == {"a", "e"}
    by_index = df.set_index("model_id")
    assert pareto_front(by_index, "cost", "q", label="name") == {"a", "b", "e"}
    assert pareto_front(df.iloc[:0], "cost", "q") == set()


def test_pareto_of_the_synthetic_table(synthetic_workspace):
    t = model_table(synthetic_workspace.ws, S.RUN_ID, quality=JUDGE)
    # price vs judge: base 0/3, delta .01/6, beta .02/7.375, alpha .04/7.5, gamma .15/9; mystery has no price
    assert pareto_front(t) == {"base", "delta", "beta", "alpha", "gamma"}
    # latency: mystery (3000 ms, 6.375) is beaten by beta (1465 ms, 7.375)
    assert "mystery" not in pareto_front(t, "p95_total_ms", "quality")


def test_failure_table(synthetic_workspace):
    f = failure_table(synthetic_workspace.ws, S.RUN_ID)
    assert set(f["model_id"]) == {"delta"}
    counts = dict(zip(f["error_category"], f["failures"], strict=True))
    assert counts == {"timeout": 3, "server": 1, "unknown_outcome": 1, "moderation": 1}
    timeout = f[f["error_category"] == "timeout"].iloc[0]
    assert timeout["share_of_calls"] == pytest.approx(3 / 8)
    assert timeout["example"] == "timeout on g3"
    assert f.iloc[0]["error_category"] == "timeout"  # most frequent first


def test_comparison_cells_states_and_captions(synthetic_workspace):
    cells = comparison_cells(synthetic_workspace.ws, S.RUN_ID, quality=JUDGE)
    assert len(cells) == 11 * 6
    c = cells.set_index(["case_id", "model_id"])
    assert c.loc[("g1", "alpha"), "caption"] == "$0.040 · 1.0 s · viescore_o 7"
    assert c.loc[("g1", "beta"), "caption"] == "$0.020 · 800 ms · viescore_o 7"
    assert c.loc[("g8", "alpha"), "caption"].startswith("$0.040 (cached)")
    assert c.loc[("g1", "base"), "caption"].startswith("free · 10 ms")
    assert c.loc[("g1", "mystery"), "caption"].startswith("price ? · 3.0 s")
    assert c.loc[("g8", "gamma"), "caption"].endswith("viescore_o —")  # unscored
    assert (c.loc[("g3", "delta"), "state"], c.loc[("g3", "delta"), "caption"]) == ("failed", "failed: timeout")
    assert c.loc[("g7", "delta"), "state"] == "unknown"
    assert c.loc[("e1", "beta"), "state"] == "not_applicable"
    assert c.loc[("e1", "beta"), "caption"] == "n/a: beta does not support erase"
    sub = comparison_cells(synthetic_workspace.ws, S.RUN_ID, cases=["g2"], models=["gamma", "alpha"])
    assert list(sub["model_id"]) == ["gamma", "alpha"]
    with pytest.raises(InvalidInputError):
        comparison_cells(synthetic_workspace.ws, S.RUN_ID, models=["nope"])


def test_style_table_renders_and_warns_when_simulated(synthetic_workspace):
    ws = synthetic_workspace.ws
    html = style_table(model_table(ws, S.RUN_ID)).to_html()
    assert "SIMULATED" not in html and "$0.0400" in html
    ws.update_run(S.RUN_ID, simulated=1)
    t = model_table(ws, S.RUN_ID)
    assert t.attrs["simulated"] is True
    assert "SIMULATED — local server outputs, not model outputs" in style_table(t).to_html()
