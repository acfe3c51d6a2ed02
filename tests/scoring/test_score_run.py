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
    """Two raters rank the three edits alike, a third dissents on one pair, and together they disagree with
    the judge about the top model; ρ, τ and Fleiss' κ are worked out by hand below."""
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
    i, s, q = "identity", "seededit-v3", "qwen-edit"
    # the judge simulator is deterministic: it ranks the unchanged image first
    assert sorted(by_model, key=lambda m: -judge[m]) == [i, s, q]
    rankings_by_rater = {"ana": [s, i, q], "ben": [s, i, q], "cy": [s, q, i]}  # cy dissents on identity–qwen
    for rater, order in rankings_by_rater.items():
        for k, better in enumerate(order):
            for n, worse in enumerate(order[k + 1 :]):
                left, right, choice = (better, worse, "left") if n % 2 else (worse, better, "right")
                ws.add_rating(
                    run_id=run_id,
                    case_id=case,
                    rater=rater,
                    call_left=by_model[left],
                    call_right=by_model[right],
                    choice=choice,
                )
    result = agreement(ws, run_id)
    raters = result["human_raters"]
    assert (raters["n_raters"], raters["n_items"], raters["n_votes"]) == (3, 3, 9)
    # Fleiss: pairs oriented by name (identity–qwen, identity–seededit, qwen–seededit): first-named wins
    # 2, 0, 0 times and second-named 1, 3, 3 times. Pᵢ = 1/3, 1, 1 → P̄ = 7/9; p = (2/9, 7/9) → Pₑ = 53/81;
    # κ = (7/9 − 53/81) / (1 − 53/81) = 10/28
    assert raters["percent_agreement"] == pytest.approx(7 / 9)
    assert raters["fleiss_kappa"] == pytest.approx(10 / 28)
    assert raters["cohen_kappa"] is None  # three raters
    # people: seededit beats both 3–0, identity beats qwen 2–1 → s > i > q; the judge: i > s > q.
    # ranks (judge, people): i (3, 2), s (2, 3), q (1, 1): Σd² = 2 → ρ = 1 − 6·2 / (3·8) = 0.5;
    # pairs: i–s discordant, i–q and s–q concordant → τ = (2 − 1) / 3
    vs = result["judge_vs_human"]
    assert vs["models"] == sorted([i, s, q])
    assert vs["spearman_rho"] == pytest.approx(0.5)
    assert vs["kendall_tau"] == pytest.approx(1 / 3)


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
