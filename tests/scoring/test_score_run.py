"""Scoring a whole run: automatic metrics over the workspace, the judge over a run, rankings, the CLI."""

from __future__ import annotations

import os
import subprocess
import sys

import pandas as pd
import pytest

from evalkit.credentials import Secret
from evalkit.engine.runner import arun
from evalkit.scoring import auto_score_run, rankings, score_run
from evalkit.scoring.auto import AUTO_METRICS_VERSION
from evalkit.store import Workspace
from tests.engine.test_runner import FAST_POLL


@pytest.fixture
def small_run(wavespeed_sim, tmp_path):
    import asyncio

    opts = {
        "wavespeed": {"base_url": wavespeed_sim.base_url, "api_key": Secret(wavespeed_sim.api_key), "poll": FAST_POLL}
    }
    res = asyncio.run(
        arun(
            "smoke",
            models="qwen-edit,seededit-v3,z-image-turbo-inpaint,image-zoom-out,identity",
            workspace=tmp_path,
            provider_options=opts,
            progress=False,
        )
    )
    return Workspace(tmp_path), res.run_id


def test_auto_scores_every_completed_call_once(small_run):
    ws, run_id = small_run
    calls = ws.calls(run_id)
    done = calls[calls.status == "completed"]
    first = auto_score_run(ws, run_id, progress=False)
    assert first.auto_scored == len(done) and first.auto_skipped == 0
    scores = ws.scores(run_id)
    assert set(scores.call_id) == set(done.call_id)
    assert set(scores.source) == {"auto"} and set(scores.version) == {AUTO_METRICS_VERSION}
    # identity returns the input: preservation is perfect and the null edit is flagged
    ident = scores[(scores.model_id == "identity") & (scores.operation == "general_edit")].set_index("metric")["value"]
    assert ident["ssim"] == pytest.approx(1.0) and ident["no_change"] == 1.0
    # simulated edits changed something
    qwen = scores[(scores.model_id == "qwen-edit")].set_index("metric")["value"]
    assert qwen["no_change"] == 0.0 and qwen["ssim"] < 1.0
    # zoom-out consistency for the zoom-out model; masked metrics for the inpaint model
    zo = scores[scores.model_id == "image-zoom-out"].metric.tolist()
    assert "zoom_consistency" in zo
    inp = scores[scores.model_id == "z-image-turbo-inpaint"].metric.tolist()
    assert "change_inside_mask" in inp and "ssim_outside_mask" in inp
    again = auto_score_run(ws, run_id, progress=False)
    assert again.auto_scored == 0 and again.auto_skipped == len(done)
    assert len(ws.scores(run_id)) == len(scores)


def test_auto_scoring_in_a_worker_pool_matches_in_process(small_run, tmp_path):
    ws, run_id = small_run
    auto_score_run(ws, run_id, workers=1, progress=False)
    single = ws.scores(run_id).sort_values(["call_id", "metric"]).reset_index(drop=True)
    import evalkit.scoring as scoring

    old = scoring._POOL_THRESHOLD
    scoring._POOL_THRESHOLD = 1
    try:
        auto_score_run(ws, run_id, workers=2, force=True, progress=False)
    finally:
        scoring._POOL_THRESHOLD = old
    pooled = ws.scores(run_id).sort_values(["call_id", "metric"]).reset_index(drop=True)
    pd.testing.assert_series_equal(single["value"], pooled["value"])


def test_judge_and_pairwise_through_score_run(small_run, judge_sim):
    ws, run_id = small_run
    overrides = {"base_url": judge_sim.base_url, "api_key": Secret(judge_sim.api_key), "model": judge_sim.sim.model}
    summary = score_run(ws, run_id, auto=True, judge=True, pairwise=True, judge_overrides=overrides, progress=False)
    assert summary.judge.scored > 0 and summary.pairwise.scored > 0
    scores = ws.scores(run_id)
    judged = scores[(scores.source == "judge") & (scores.metric == "viescore_o") & (scores.status == "scored")]
    assert not judged.empty and judged.value.between(0, 10).all()
    table = rankings(ws, run_id, source="judge")
    assert (
        set(table.model) <= {"qwen-edit", "seededit-v3", "identity", "z-image-turbo-inpaint", "image-zoom-out"}
        and table["rank"].min() == 1
    )
    assert table.n_comparisons.sum() > 0
    n_requests = len(judge_sim.sim.requests)
    score_run(ws, run_id, auto=False, judge=True, judge_overrides=overrides, progress=False)
    assert len(judge_sim.sim.requests) == n_requests  # the same judge, prompt and images are never paid twice


def test_rankings_from_human_votes(small_run):
    ws, run_id = small_run
    calls = ws.calls(run_id)
    case = calls[(calls.operation == "general_edit") & (calls.status == "completed")]
    by_model = dict(zip(case.model_id, case.call_id, strict=True))
    for _ in range(6):
        ws.add_rating(
            run_id=run_id,
            case_id=case.case_id.iloc[0],
            rater="ana",
            call_left=by_model["qwen-edit"],
            call_right=by_model["identity"],
            choice="left",
        )
        ws.add_rating(
            run_id=run_id,
            case_id=case.case_id.iloc[0],
            rater="ana",
            call_left=by_model["identity"],
            call_right=by_model["seededit-v3"],
            choice="right",
        )
    table = rankings(ws, run_id, source="human")
    assert table.set_index("model").loc["identity", "rank"] == 3
    assert table.loc[table["rank"] == 3, "ci_high"].iloc[0] < table.loc[table["rank"] == 1, "ci_high"].iloc[0]


def test_agreement_between_raters_and_with_the_judge(small_run, judge_sim):
    from evalkit.scoring import agreement

    ws, run_id = small_run
    assert agreement(ws, run_id) == {"human_raters": None, "judge_vs_human": None}  # no votes yet
    overrides = {"base_url": judge_sim.base_url, "api_key": Secret(judge_sim.api_key), "model": judge_sim.sim.model}
    score_run(ws, run_id, auto=False, pairwise=True, judge_overrides=overrides, progress=False)
    judge = rankings(ws, run_id, source="judge").set_index("model")["strength"]
    calls = ws.calls(run_id)
    edits = calls[(calls.operation == "general_edit") & (calls.status == "completed")]
    by_model = dict(zip(edits.model_id, edits.call_id, strict=True))
    case = edits.case_id.iloc[0]
    order = sorted(by_model, key=lambda m: -judge.get(m, float("-inf")))  # humans who agree with the judge
    for rater in ("ana", "ben"):
        for i, better in enumerate(order):
            for worse in order[i + 1 :]:
                ws.add_rating(
                    run_id=run_id,
                    case_id=case,
                    rater=rater,
                    call_left=by_model[worse],
                    call_right=by_model[better],
                    choice="right",
                )
    result = agreement(ws, run_id)
    assert result["human_raters"]["percent_agreement"] == 1.0 and result["human_raters"]["n_raters"] == 2
    assert result["judge_vs_human"]["spearman_rho"] == pytest.approx(1.0)


@pytest.mark.e2e
def test_score_cli(small_run):
    ws, run_id = small_run
    env = dict(os.environ, TQDM_DISABLE="1")
    proc = subprocess.run(
        [sys.executable, "-m", "evalkit", "score", run_id, "--workspace", str(ws.path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "automatic metrics" in proc.stdout
    proc = subprocess.run(
        [sys.executable, "-m", "evalkit", "score", "no-such-run", "--workspace", str(ws.path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 2 and "no run 'no-such-run'" in proc.stderr and "Traceback" not in proc.stderr
