"""Session metrics and tables (issue 24): each turn scored against its own input and the session's original,
the per-session summary, quality by turn, and tiers decided on sessions."""

from __future__ import annotations

import math

import pytest

from evalkit.decide.sessions import quality_by_turn, session_model_table, session_table
from evalkit.decide.tiers import choose_defaults
from evalkit.errors import InvalidInputError
from evalkit.scoring import auto_score_run
from evalkit.scoring.auto import as_row, auto_metrics
from evalkit.store import Workspace
from tests.engine.test_sessions import SESSIONS, module_sim, run, sim, write_session_suite  # noqa: F401

MODELS = ["qwen-edit", "seededit-v3"]


@pytest.fixture
def scored(sim, tmp_path):  # noqa: F811
    sim.sim.add_fault("task_failed", model="seededit-v3", prompt=SESSIONS["cup"][1])
    suite = write_session_suite(tmp_path / "sess")
    run(sim, suite, tmp_path / "ws", "s", models=MODELS)
    ws = Workspace(tmp_path / "ws")
    auto_score_run(ws, "s", progress=False, workers=1)
    yield ws
    ws.close()


def test_a_turn_is_scored_against_its_own_input_and_the_sessions_original(scored) -> None:
    ws = scored
    calls = ws.calls("s").set_index("call_id")
    scores = ws.scores("s")
    got = scores[scores.call_id == "s/cat.t3/qwen-edit/0"].set_index("metric")["value"]
    parent = calls.loc["s/cat.t2/qwen-edit/0", "output_path"]
    output = calls.loc["s/cat.t3/qwen-edit/0", "output_path"]
    original = ws.case_images("s", "cat.t1")[0][0]
    against_input = as_row(auto_metrics(open(parent, "rb").read(), output, operation="general_edit"))
    against_original = as_row(auto_metrics(original, output, operation="general_edit"))
    assert got["ssim"] == pytest.approx(against_input["ssim"])
    assert got["drift_ssim"] == pytest.approx(against_original["ssim"])
    assert got["ssim"] != pytest.approx(got["drift_ssim"])  # the two references really differ
    single = scores[scores.call_id == "s/single/qwen-edit/0"]
    assert "drift_ssim" not in set(single.metric)  # a single edit has no session to drift from


def test_session_summary_final_mean_drift_cost_and_latency(scored) -> None:
    ws = scored
    table = session_table(ws, "s", "ssim:auto").set_index(["session_id", "model_id"])
    scores = ws.scores("s")
    ssim = scores[scores.metric == "ssim"].set_index("call_id")["value"]
    drift = scores[scores.metric == "drift_ssim"].set_index("call_id")["value"]
    row = table.loc[("cat", "qwen-edit")]
    ids = [f"s/cat.t{k}/qwen-edit/0" for k in (1, 2, 3)]
    assert row["complete"] and row["turns_completed"] == 3
    assert row["final_quality"] == pytest.approx(ssim[ids[2]])
    assert row["mean_quality"] == pytest.approx(sum(ssim[i] for i in ids) / 3)
    assert row["drift_ssim"] == pytest.approx(drift[ids[2]])
    calls = ws.calls("s").set_index("call_id")
    assert row["cost_usd"] == pytest.approx(calls.loc[ids, "cost_usd"].sum())
    assert row["latency_ms"] == pytest.approx(calls.loc[ids, "total_ms"].sum())
    broken = table.loc[("cup", "seededit-v3")]  # its turn 2 failed: no final quality, only turn 1 counted
    assert not broken["complete"] and broken["turns_completed"] == 1 and math.isnan(broken["final_quality"])

    per_model = session_model_table(ws, "s", quality="ssim:auto").set_index("model_id")
    assert per_model.loc["seededit-v3", "calls"] == 2 and per_model.loc["seededit-v3", "completed"] == 1
    assert per_model.loc["qwen-edit", "success_rate"] == 1.0
    assert per_model.loc["qwen-edit", "mean_cost_usd"] == pytest.approx(
        table.xs("qwen-edit", level="model_id")["cost_usd"].mean()
    )
    by_turn = quality_by_turn(ws, "s", "ssim:auto")
    assert list(by_turn.columns) == [1, 2, 3] and set(by_turn.index) == set(MODELS)


def test_tiers_decide_on_sessions(scored) -> None:
    decision = choose_defaults(scored, "s", quality="ssim:auto", unit="session")
    frame = decision.to_frame()
    assert set(frame["operation"]) == {"general_edit"}
    with pytest.raises(InvalidInputError, match="unit must be"):
        choose_defaults(scored, "s", unit="turns")


def test_the_cost_quality_view_takes_the_session_table(scored) -> None:
    from evalkit.report.figures import plot_tradeoffs

    table = session_model_table(scored, "s", quality="ssim:auto")
    fig = plot_tradeoffs(table, title="sessions: cost, latency and final-turn quality")
    texts = " ".join(t.get_text() for t in fig.findobj(lambda o: hasattr(o, "get_text")))
    assert "SIMULATED" in texts and "qwen-edit" in texts
    assert "cost per session (USD)" in texts and "final-turn quality: ssim (auto)" in texts


def test_a_session_with_a_turn_of_unknown_cost_costs_unknown_not_zero(scored) -> None:
    ws = scored
    ws._execute("UPDATE calls SET cost_usd = NULL, cost_source = 'unknown' WHERE call_id = 's/cat.t2/qwen-edit/0'")
    table = session_table(ws, "s", "ssim:auto").set_index(["session_id", "model_id"])
    assert math.isnan(table.loc[("cat", "qwen-edit"), "cost_usd"])  # not the sum of the two known turns
    calls = ws.calls("s").set_index("call_id")
    cup = [f"s/cup.t{k}/seededit-v3/0" for k in (1, 2, 3)]  # turn 2 failed, turn 3 was never sent
    assert calls.loc[cup[2], "status"] == "not_reached"
    want = sum(float(calls.loc[c, "cost_usd"] or 0.0) for c in cup[:2])
    assert table.loc[("cup", "seededit-v3"), "cost_usd"] == pytest.approx(want)
    models = session_model_table(ws, "s", quality="ssim:auto").set_index("model_id")
    assert math.isnan(models.loc["qwen-edit", "mean_cost_usd"])
