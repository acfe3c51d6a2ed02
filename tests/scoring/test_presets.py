"""Judge presets (request shapes against the local judge server), position-bias swap checks with a judge
scripted to prefer the first position, and a run's judge–human agreement (`run_agreement`, `evalkit agreement`)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats
from typer.testing import CliRunner

from evalkit.cli import app
from evalkit.errors import InvalidInputError
from evalkit.scoring.agreement import human_scores, run_agreement, swap_consistency
from evalkit.scoring.judge import Judge, JudgeConfig, judge_run
from evalkit.scoring.judge.config import preset_for_version
from evalkit.scoring.judge.presets import JUDGE_PRESETS, resolve_preset
from evalkit.scoring.judge.prompts import EDITSCORE_PQ_PROMPT, EDITSCORE_SC_PROMPT, VIESCORE_SC_PROMPT
from evalkit.store import Workspace
from tests.plugins.common import make_png
from tests.scoring.test_judge import FAST_RETRY, build_run, pairwise_run


@pytest.fixture
def ws(tmp_path):
    w = Workspace(tmp_path / "ws")
    yield w
    w.close()


def preset_judge(handle, preset: str, **kw) -> Judge:
    config = JudgeConfig.from_env(preset=preset, base_url=handle.base_url, api_key=handle.api_key, **kw)
    return Judge(config, retry_policy=FAST_RETRY)


# ---- presets --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(JUDGE_PRESETS))
async def test_each_preset_sends_its_pinned_request(judge_sim, name):
    preset = JUDGE_PRESETS[name]
    top = 25 if preset.prompt_set == "editscore" else 10
    judge_sim.sim.script(
        [
            json.dumps({"reasoning": "ok", "score": [top, top * 0.8]}),
            json.dumps({"reasoning": "ok", "score": [top, top]}),
        ]
    )
    async with preset_judge(judge_sim, name) as judge:
        res = await judge.viescore(make_png(40, 32, 1), make_png(40, 32, 2), "make it blue")
    sc_req, pq_req = judge_sim.sim.requests
    for req in (sc_req, pq_req):
        assert req.status == 200 and req.model == preset.model
        assert req.body["max_tokens"] == preset.max_tokens
        assert req.body.get("temperature") == preset.temperature
        assert req.image_mimes == ["image/jpeg"] * len(req.images)  # jpeg-q90-max1024
    assert len(sc_req.images) == 2 and len(pq_req.images) == 1
    if preset.prompt_set == "editscore":
        assert sc_req.text == EDITSCORE_SC_PROMPT.replace("<instruction>", "make it blue")
        assert pq_req.text == EDITSCORE_PQ_PROMPT
        assert "From scale 0 to 25" in sc_req.text and "10" not in sc_req.text.split("RULES")[1]
        assert sc_req.text.index('"reasoning"') < sc_req.text.index('"score"')  # reasoning first
    else:
        assert sc_req.text == VIESCORE_SC_PROMPT.replace("<instruction>", "make it blue")
    # answers come back on VIEScore's 0–10 scale whatever the preset's own range
    assert res.status == "scored"
    assert (res.editing_success, res.over_editing, res.sc, res.pq) == (10.0, 8.0, 8.0, 10.0)
    assert res.o == pytest.approx(math.sqrt(80.0))
    version = judge.config.version()
    assert version.split("|")[:3] == [preset.model, preset.prompt_version, preset.image_encoding]
    assert preset_for_version(version) is preset


async def test_editscore_answer_above_its_range_is_unscored(judge_sim):
    judge_sim.sim.script(['{"reasoning": "x", "score": [26, 3]}', '{"reasoning": "x", "score": [3, 3]}'])
    async with preset_judge(judge_sim, "editscore-7b") as judge:
        res = await judge.viescore(make_png(32, 32, 1), make_png(32, 32, 2), "edit")
    assert res.status == "unscored" and res.reason == "out_of_range" and res.sc is None and res.o is None


def test_preset_selection_env_and_precedence(monkeypatch):
    monkeypatch.setenv("EVALKIT_JUDGE_PRESET", "qwen2.5-vl-72b")
    monkeypatch.setenv("EVALKIT_JUDGE_MODEL", "something-else")
    cfg = JudgeConfig.from_env(base_url="http://127.0.0.1:1")
    assert cfg.model == "Qwen/Qwen2.5-VL-72B-Instruct" and cfg.temperature == 0.1 and cfg.max_tokens == 512
    assert JudgeConfig.from_env(base_url="http://127.0.0.1:1", max_tokens=900).max_tokens == 900  # explicit wins
    monkeypatch.delenv("EVALKIT_JUDGE_PRESET")
    assert resolve_preset() is None
    assert JudgeConfig.from_env(base_url="http://127.0.0.1:1").model == "something-else"
    with pytest.raises(InvalidInputError, match="unknown judge preset"):
        JudgeConfig.from_env(base_url="http://127.0.0.1:1", preset="gpt-5-judge")
    # every preset names what the literature reports, with a source
    for p in JUDGE_PRESETS.values():
        assert p.expected.source and p.expected.summary


def test_score_help_lists_presets_and_their_expected_agreement():
    res = CliRunner().invoke(app, ["score", "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0
    for name in JUDGE_PRESETS:
        assert name in res.output
    assert "0.589" in res.output and "--judge-preset" in res.output


# ---- position bias ----------------------------------------------------------------------------------------


async def test_judge_preferring_the_first_position_is_caught_by_swaps(judge_sim, ws):
    pairwise_run(ws)  # 8 cases × 3 pairs
    judge_sim.sim.script(['{"choice": "A", "reasoning": "the first one"}'] * 48)
    async with Judge(base_url=judge_sim.base_url, api_key=judge_sim.api_key, model="sim-judge-1") as judge:
        summary = await judge_run(ws, "p1", judge, mode="pairwise", swap_fraction=1.0, progress=False)
    assert summary.requests_sent == 48 and summary.ratings_written == 24
    ratings = ws.ratings("p1", source="judge")
    assert set(ratings["choice"]) == {"tie"}  # every verdict flipped with the order: a tie
    checks = [json.loads(d)["swap_check"] for d in ratings["detail"]]
    assert all(not c["consistent"] and c["verdicts"] == ["A", "A"] for c in checks)
    assert all(sorted(c["shown_first"]) == ["left", "right"] for c in checks)
    table = swap_consistency(ws, "p1")
    assert table[["pairs_checked", "consistent", "rate"]].iloc[0].tolist() == [24, 0, 0.0]
    assert any("position bias" in w for w in run_agreement(ws, "p1", n_boot=0).warnings)


async def test_a_position_invariant_judge_is_consistent_and_only_the_fraction_is_checked(judge_sim, ws):
    pairwise_run(ws)
    # the sim's default reply picks the candidate closer to the original, whichever side it is shown on
    async with Judge(base_url=judge_sim.base_url, api_key=judge_sim.api_key, model="sim-judge-1") as judge:
        summary = await judge_run(ws, "p1", judge, mode="pairwise", swap_fraction=0.5, seed=3, progress=False)
        checked = swap_consistency(ws, "p1").iloc[0]
        assert 0 < checked["pairs_checked"] < 24
        assert summary.requests_sent == 24 + checked["pairs_checked"]
        assert checked["rate"] == 1.0
        again = await judge_run(ws, "p1", judge, mode="pairwise", swap_fraction=0.5, seed=3, progress=False)
    assert again.requests_sent == 0  # both orders are cached under their own keys
    with pytest.raises(InvalidInputError, match="swap_fraction"):
        await judge_run(ws, "p1", judge, mode="pairwise", swap_fraction=1.5, progress=False)


# ---- a run's judge against its human scores -----------------------------------------------------------


def _scored_run(ws: Workspace, n_cases: int = 12, seed: int = 0) -> tuple[dict, str]:
    rng = np.random.default_rng(seed)
    cases, outputs = [], {}
    for i in range(n_cases):
        op = "general_edit" if i % 2 else "inpaint"
        cases.append({"case_id": f"c{i}", "operation": op, "prompt": f"edit {i}", "source": make_png(16, 16, i)})
        for m in ("m1", "m2", "m3"):
            outputs[(f"c{i}", m)] = make_png(16, 16, 100 + 3 * i + int(m[1]))
    ids = build_run(ws, "h1", cases, outputs)
    cfg = JudgeConfig(base_url="http://127.0.0.1:1", **JUDGE_PRESETS["gedit-gpt-4.1"].settings())
    version = cfg.version()
    rows = []
    for (case, model), cid in ids.items():
        quality = {"m1": 0.2, "m2": 0.5, "m3": 0.8}[model] + rng.normal(0, 0.15)
        judge_value = None if (case, model) == ("c0", "m1") else round(10 * quality + rng.normal(0, 1), 2)
        rows.append(
            {
                "run_id": "h1", "call_id": cid, "metric": "viescore_o", "source": "judge", "version": version,
                "value": judge_value, "reason": None if judge_value is not None else "refused",
            }
        )  # fmt: skip
        for rater in ("ann", "bob"):
            sc = float(np.clip(np.round(2 * (quality + rng.normal(0, 0.2))) / 2, 0, 1))
            pr = float(np.clip(np.round(2 * (quality + rng.normal(0, 0.2))) / 2, 0, 1))
            ws.add_rating(
                run_id="h1", case_id=case, rater=rater, kind="single", call_id=cid,
                instruction=sc, quality=pr, scale="imagenhub",
            )  # fmt: skip
    ws.put_scores(rows)
    return ids, version


def test_run_agreement_matches_an_independent_computation(ws):
    ids, version = _scored_run(ws)
    res = run_agreement(ws, "h1", n_boot=50)
    assert res.version == version and res.preset == "gedit-gpt-4.1" and res.prompt_version == "viescore-gedit-v1"
    assert res.unscored == {"refused": 1} and res.judge_scored == 35 and res.human_ratings == 72
    # independent: ratings straight from the table, O = sqrt(SC·PR), mean over raters, scipy
    r = ws.ratings("h1", source="human")
    r = r.assign(o=np.sqrt(r["instruction"].astype(float) * r["quality"].astype(float)))
    hm = r.groupby("call_id")["o"].mean()
    s = ws.scores("h1")
    s = s[s["status"] == "scored"].set_index("call_id")
    common = s.index.intersection(hm.index)
    expected = stats.spearmanr(s.loc[common, "value"], hm.loc[common]).statistic
    assert res.overall.n_outputs == 35
    assert res.overall.instance_spearman.value == pytest.approx(expected, abs=1e-12)
    assert res.overall.instance_spearman.ci_low is not None
    assert set(res.by_operation) == {"general_edit", "inpaint"}
    assert sum(a.n_outputs for a in res.by_operation.values()) == 35
    assert not any("too few" in w or "no human" in w for w in res.warnings)
    json.dumps(res.as_dict(), default=str)  # JSON-ready


def test_run_without_human_scores_says_so(ws):
    _scored_run(ws)
    with ws.transaction() as conn:
        conn.execute("DELETE FROM ratings")
    res = run_agreement(ws, "h1", n_boot=0)
    assert res.overall is None and any("no human scores" in w for w in res.warnings)


def test_few_human_scores_warn(ws):
    _scored_run(ws, n_cases=3)
    res = run_agreement(ws, "h1", n_boot=0)
    assert res.overall.n_outputs < 30 and any("too few human ratings" in w for w in res.warnings)


def test_one_to_five_scale_scores_follow_viescores_shape(ws):
    ids, _ = _scored_run(ws, n_cases=1)
    cid = ids[("c0", "m2")]
    ws.add_rating(
        run_id="h1", case_id="c0", rater="cy", kind="single", call_id=cid, instruction=4, quality=3, preservation=2
    )
    ws.add_rating(run_id="h1", case_id="c0", rater="dee", kind="single", call_id=cid, instruction=4)  # no quality
    h = human_scores(ws, "h1")
    cy = h[h["rater"] == "cy"].iloc[0]
    assert cy["score"] == pytest.approx(math.sqrt(min(4, 2) * 3)) and cy["scale"] == "1-5"
    assert "dee" not in set(h["rater"])  # incomplete: no score rather than a default
    with pytest.raises(InvalidInputError, match="imagenhub"):
        ws.add_rating(
            run_id="h1", case_id="c0", rater="x", kind="single", call_id=cid, instruction=0.7, scale="imagenhub"
        )
    with pytest.raises(InvalidInputError):
        ws.add_rating(run_id="h1", case_id="c0", rater="x", kind="single", call_id=cid, instruction=0.5)  # 1–5 scale


def test_cli_agreement_json_and_text(ws):
    _scored_run(ws)
    ws.close()
    runner = CliRunner()
    res = runner.invoke(app, ["agreement", "h1", "--workspace", str(ws.path), "--json", "--n-boot", "20"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["overall"]["n_outputs"] == 35 and data["preset"] == "gedit-gpt-4.1"
    assert set(data["by_operation"]) == {"general_edit", "inpaint"}
    text = runner.invoke(app, ["agreement", "h1", "--workspace", str(ws.path), "--n-boot", "0"])
    assert text.exit_code == 0 and "instance_spearman" in text.output and "refused 1" in text.output
    bad = runner.invoke(app, ["agreement", "nope", "--workspace", str(ws.path)])
    assert bad.exit_code == 2


def test_agreement_below_the_literature_is_a_warning_in_the_report_section(ws):
    from evalkit.decide.tables import QualitySpec
    from evalkit.report.trust import quality_trust_html

    _, version = _scored_run(ws, n_cases=12)
    # turn the judge upside down: it now ranks outputs against the people
    with ws.transaction() as conn:
        conn.execute("UPDATE scores SET value = 10 - value WHERE value IS NOT NULL")
    res = run_agreement(ws, "h1", n_boot=0)
    assert res.overall.instance_spearman.value < 0
    assert any("less than the literature reports" in w and "0.589" in w for w in res.warnings)
    page = quality_trust_html(ws, "h1", QualitySpec("viescore_o", "judge"), n_boot=50)
    assert "gedit-gpt-4.1" in page and "viescore-gedit-v1" in page and "instance Spearman ≈ 0.589" in page
    assert "less than the literature reports" in page and "refused: 1" in page
