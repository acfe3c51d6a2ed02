"""Repeated judge passes, the judge's noise and what judging costs, against the simulated judge (with its
opt-in seeded per-request noise) over real HTTP on loopback."""

from __future__ import annotations

import hashlib
import json
import math
import statistics
from collections import Counter, defaultdict

import pytest

from evalkit.decide.tier_config import Tier
from evalkit.decide.tiers import choose_defaults
from evalkit.errors import InvalidInputError
from evalkit.scoring.judge import VIESCORE_METRICS, JudgeConfig, judge_run
from evalkit.scoring.judge.config import image_token_bound, parse_price_pair
from evalkit.scoring.judge.noise import DISAGREE_POINTS, judge_noise
from evalkit.scoring.judge.presets import JUDGE_PRESETS
from evalkit.sim.judge import _IMAGE_TOKENS
from evalkit.store import Workspace
from tests.plugins.synthetic import build_grid_workspace
from tests.scoring.test_judge import make_judge, viescore_run

NOISE_SD = 1.5


@pytest.fixture
def ws(tmp_path):
    w = Workspace(tmp_path / "ws")
    yield w
    w.close()


def _digest(rec) -> str:
    return hashlib.sha256(rec.text.encode() + b"".join(rec.images)).hexdigest()


def _passes_from_sim(requests) -> dict[bytes, dict[str, list[list[int]]]]:
    """What the sim answered, per edited image (one output): its SC and PQ scores, pass by pass in the order
    the sim answered them (an output's passes are asked one after the other)."""
    out: dict[bytes, dict[str, list[list[int]]]] = defaultdict(lambda: {"sc": [], "pq": []})
    for rec in requests:
        scores = json.loads(rec.reply)["score"]
        if len(rec.images) == 2:
            out[rec.images[1]]["sc"].append(scores)
        else:
            out[rec.images[0]]["pq"].append(scores)
    return out


async def test_n_passes_are_n_requests_per_prompt_with_the_spread_recorded_and_reused(judge_sim, ws):
    judge_sim.sim.set_noise(NOISE_SD, seed=7)
    viescore_run(ws)  # 6 outputs: 4 with SC + PQ, 2 (character_reference, no prompt) PQ only → 10 prompts
    async with make_judge(judge_sim) as judge:
        summary = await judge_run(ws, "r1", judge, passes=3, progress=False)
        reqs = judge_sim.sim.requests
        assert summary.requests_sent == len(reqs) == 3 * 10 and summary.passes == 3
        # each prompt (same text, same images) was asked exactly three times: one request per pass
        assert set(Counter(_digest(r) for r in reqs).values()) == {3}
        assert summary.scored == 6 and summary.unscored == 0

        passes = ws.judge_passes("r1")
        assert len(passes) == 6 * len(VIESCORE_METRICS) * 3 and set(passes["pass"]) == {1, 2, 3}
        assert passes[passes["status"] == "scored"]["cache_key"].notna().all()
        # each pass of a prompt is its own cache entry
        pq = passes[passes["metric"] == "viescore_pq"]
        assert pq.groupby("call_id")["cache_key"].nunique().eq(3).all()

        scores = ws.scores("r1")
        spread_seen = False
        for row in scores[(scores["metric"] == "viescore_pq")].itertuples():
            values = passes[(passes["call_id"] == row.call_id) & (passes["metric"] == "viescore_pq")]["value"].tolist()
            detail = json.loads(row.detail)["passes"]
            assert detail["values"] == values and detail["valid"] == 3 and detail["asked"] == 3
            assert row.value == pytest.approx(statistics.mean(values))
            assert detail["sd"] == pytest.approx(statistics.stdev(values))
            assert detail["range"] == max(values) - min(values)
            spread_seen |= detail["sd"] > 0
        assert spread_seen  # the sim's noise shows up as a spread between passes
        before = scores.sort_values(["call_id", "metric"])["value"].tolist()

        # a re-score reuses every cached pass: no new request, the same scores
        again = await judge_run(ws, "r1", judge, passes=3, progress=False)
        assert len(judge_sim.sim.requests) == 30 and again.requests_sent == 0 and again.requests_cached == 30
        after = ws.scores("r1").sort_values(["call_id", "metric"])["value"].tolist()
        assert after == pytest.approx(before, nan_ok=True)

        # one more pass asks only for the fourth
        more = await judge_run(ws, "r1", judge, passes=4, progress=False)
        assert more.requests_sent == 10 and more.requests_cached == 30 and len(judge_sim.sim.requests) == 40
        assert set(ws.judge_passes("r1")["pass"]) == {1, 2, 3, 4}


async def test_an_outputs_images_are_encoded_once_for_all_its_passes(judge_sim, ws, monkeypatch):
    from evalkit.scoring.judge.config import ImageEncoding

    encodes: Counter[int] = Counter()
    original = ImageEncoding.data_uri

    def counting(self, img, size=None):
        encodes[1] += 1
        return original(self, img, size)

    monkeypatch.setattr(ImageEncoding, "data_uri", counting)
    judge_sim.sim.set_noise(NOISE_SD, seed=3)
    viescore_run(ws)  # 6 outputs, each encoded as [source, edited]
    async with make_judge(judge_sim) as judge:
        summary = await judge_run(ws, "r1", judge, passes=3, progress=False)
    assert summary.requests_sent == 30 and summary.scored == 6
    assert encodes[1] == 6 * 2  # not 3 × that: the passes share the encoded images


async def test_one_pass_is_todays_judge(judge_sim, ws):
    viescore_run(ws)
    async with make_judge(judge_sim) as judge:
        one = await judge_run(ws, "r1", judge, progress=False)
        assert one.passes == 1 and one.requests_sent == 10 and one.noise_sd is None
        assert not one.noise.measured and "not measured" in one.noise.describe()
        # the score rows carry no pass bookkeeping, and pass 1 is the cache entry a single pass always had
        scores = ws.scores("r1")
        assert not any("passes" in json.loads(d) for d in scores["detail"])
        three = await judge_run(ws, "r1", judge, passes=3, progress=False)
        assert three.requests_cached == 10 and three.requests_sent == 20
    with pytest.raises(InvalidInputError, match="1–20"):
        await judge_run(ws, "r1", judge, passes=0, progress=False)


async def test_noise_equals_an_independent_computation(judge_sim, ws):
    judge_sim.sim.set_noise(NOISE_SD, seed=11)
    viescore_run(ws)
    async with make_judge(judge_sim) as judge:
        summary = await judge_run(ws, "r1", judge, passes=4, concurrency=3, progress=False)
    answered = _passes_from_sim(judge_sim.sim.requests)
    pq_sd, o_sd, o_disagree = [], [], []
    for parts in answered.values():
        pq = [min(s) for s in parts["pq"]]
        assert len(pq) == 4
        pq_sd.append(statistics.stdev(pq))
        if parts["sc"]:
            o = [math.sqrt(min(sc) * p) for sc, p in zip(parts["sc"], pq, strict=True)]
            o_sd.append(statistics.stdev(o))
            o_disagree.append(max(o) - min(o) >= DISAGREE_POINTS)
    assert len(pq_sd) == 6 and len(o_sd) == 4
    noise = summary.noise
    assert noise.passes == 4
    assert noise.sd("viescore_pq") == pytest.approx(statistics.median(pq_sd))
    assert summary.noise_sd == noise.sd("viescore_o") == pytest.approx(statistics.median(o_sd))
    assert noise.by_metric["viescore_o"].outputs == 4
    assert noise.by_metric["viescore_o"].share_disagree == pytest.approx(sum(o_disagree) / 4)
    # per operation: viescore_o exists for general_edit only (the character_reference case has no instruction)
    assert set(noise.by_operation["viescore_o"]) == {"general_edit"}
    assert noise.sd("viescore_o", "general_edit") == pytest.approx(statistics.median(o_sd))
    assert noise.by_operation["viescore_pq"]["character_reference"].outputs == 2
    assert summary.noise_sd > 0
    assert judge_noise(ws, "r1").as_dict() == noise.as_dict()  # the same figure read back from the workspace
    obj = summary.judge_object()
    assert obj["noise_sd"] == summary.noise_sd and obj["passes"] == 4
    assert "judge noise viescore_o: median SD" in str(summary)


async def test_an_unscored_pass_stays_missing(judge_sim, ws):
    ids = viescore_run(ws)
    first = ids[("c1", "model-a")]
    judge_sim.sim.script(["I'm sorry, but I can't help with that."])  # pass 1 of the first SC prompt
    async with make_judge(judge_sim) as judge:
        await judge_run(ws, "r1", judge, passes=2, concurrency=1, progress=False)
    passes = ws.judge_passes("r1")
    sc = passes[(passes["call_id"] == first) & (passes["metric"] == "viescore_sc")].set_index("pass")
    assert sc.loc[1, "status"] == "unscored" and sc.loc[1, "reason"] == "refused" and math.isnan(sc.loc[1, "value"])
    assert sc.loc[2, "status"] == "scored"
    row = ws.scores("r1").set_index(["call_id", "metric"]).loc[(first, "viescore_sc")]
    assert row["value"] == sc.loc[2, "value"]  # the mean of the one valid pass: never a zero or a guess
    detail = json.loads(row["detail"])["passes"]
    assert detail["valid"] == 1 and detail["values"][0] is None and detail["sd"] is None


# ---- judging cost -----------------------------------------------------------------------------------------
def _sim_usage(rec) -> tuple[int, int]:
    """The simulator's token counts, recomputed from what it received and answered."""
    return math.ceil(len(rec.text) / 4) + _IMAGE_TOKENS * len(rec.images), math.ceil(len(rec.reply) / 4)


async def test_judging_cost_is_reported_tokens_times_prices_to_the_cent(judge_sim, ws):
    viescore_run(ws)
    price_in, price_out = 250.0, 1000.0  # large, so cents matter
    async with make_judge(judge_sim, usd_per_1m_input_tokens=price_in, usd_per_1m_output_tokens=price_out) as judge:
        summary = await judge_run(ws, "r1", judge, passes=2, progress=False)
    expected = sum(i * price_in + o * price_out for i, o in map(_sim_usage, judge_sim.sim.requests)) / 1e6
    assert expected > 1.0
    assert round(summary.cost_usd, 2) == round(expected, 2)
    assert summary.cost_usd == pytest.approx(expected, abs=1e-9)
    ledger = ws.usage()
    assert math.fsum(ledger[ledger["source"] == "judge"]["cost_usd"]) == pytest.approx(expected, abs=1e-9)
    assert summary.judge_object()["cost_usd"] == pytest.approx(expected, abs=1e-9)
    runs = ws.runs().set_index("run_id")
    assert runs.loc["r1", "judge_cost_usd"] == pytest.approx(expected, abs=1e-9)
    assert runs.loc["r1", "judge_requests"] == 20 and runs.loc["r1", "judge_unknown_cost"] == 0


def test_judge_prices_come_from_arguments_environment_loopback_or_the_preset(monkeypatch):
    for name in ("EVALKIT_JUDGE_USD_PER_1M_INPUT", "EVALKIT_JUDGE_USD_PER_1M_OUTPUT", "EVALKIT_JUDGE_PRESET"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("EVALKIT_JUDGE_API_KEY", "sk-test-prices-000")
    hosted = "https://judge.example/v1"
    gpt = JudgeConfig.from_env(preset="gedit-gpt-4.1", base_url=hosted)
    assert (gpt.usd_per_1m_input_tokens, gpt.usd_per_1m_output_tokens) == (2.0, 8.0)
    assert gpt.price_source.startswith("preset gedit-gpt-4.1") and "confidence" in gpt.price_source
    assert JUDGE_PRESETS["gedit-gpt-4.1"].price.as_of and JUDGE_PRESETS["gedit-gpt-4.1"].price.source
    # the same model without naming the preset is priced too; another model is unknown
    assert JudgeConfig.from_env(model="gpt-4.1-2025-04-14", base_url=hosted).usd_per_1m_input_tokens == 2.0
    other = JudgeConfig.from_env(model="some-vlm", base_url=hosted)
    assert not other.prices_known and other.price_source is None
    # a loopback server costs $0 even with a preset
    local = JudgeConfig.from_env(preset="gedit-gpt-4.1", base_url="http://127.0.0.1:8000/v1")
    assert (local.usd_per_1m_input_tokens, local.usd_per_1m_output_tokens) == (0.0, 0.0)
    # the environment overrides the preset and loopback; arguments override the environment
    monkeypatch.setenv("EVALKIT_JUDGE_USD_PER_1M_INPUT", "3")
    monkeypatch.setenv("EVALKIT_JUDGE_USD_PER_1M_OUTPUT", "12.5")
    env = JudgeConfig.from_env(preset="gedit-gpt-4.1", base_url="http://127.0.0.1:8000/v1")
    assert (env.usd_per_1m_input_tokens, env.usd_per_1m_output_tokens) == (3.0, 12.5)
    assert env.cost_usd(1_000_000, 100_000) == pytest.approx(3.0 + 1.25)
    arg = JudgeConfig.from_env(base_url=hosted, model="m", usd_per_1m_input_tokens=1.0, usd_per_1m_output_tokens=4.0)
    assert arg.usd_per_1m_output_tokens == 4.0
    monkeypatch.delenv("EVALKIT_JUDGE_USD_PER_1M_OUTPUT")
    with pytest.raises(InvalidInputError, match="EVALKIT_JUDGE_USD_PER_1M_OUTPUT is not set"):
        JudgeConfig.from_env(model="m", base_url=hosted)
    assert parse_price_pair("2/8") == (2.0, 8.0)
    for bad in ("2", "a/b", "-1/2", "2/8/9"):
        with pytest.raises(InvalidInputError, match="judge price"):
            parse_price_pair(bad)


def test_worst_case_bounds_the_image_token_counts():
    # OpenAI high detail for 1024×1024 is 765 tokens; Qwen2-VL 37×37 + 2 = 1371; gpt-4.1-mini patches 1659
    assert image_token_bound(1024, 1024) >= max(765, 1371, 1659)
    assert image_token_bound(64, 48) >= 255  # one 512-px tile: 85 + 170
    cfg = JudgeConfig("http://127.0.0.1:9", "m", usd_per_1m_input_tokens=2.0, usd_per_1m_output_tokens=8.0)
    worst = cfg.worst_case_usd("x" * 1000, [(1024, 1024)])
    assert worst >= (1000 + image_token_bound(1024, 1024)) * 2e-6 + 1400 * 8e-6
    assert JudgeConfig("http://127.0.0.1:9", "m", usd_per_1m_input_tokens=None).worst_case_usd("x", []) == 0.02


@pytest.mark.parametrize("concurrency", [1, 4])
async def test_a_judge_budget_stops_judging_before_it_is_crossed(judge_sim, ws, concurrency):
    viescore_run(ws)
    prices = {"usd_per_1m_input_tokens": 250.0, "usd_per_1m_output_tokens": 1000.0, "max_tokens": 200}
    budget = 0.9
    async with make_judge(judge_sim, **prices) as judge:
        summary = await judge_run(ws, "r1", judge, passes=2, budget_usd=budget, concurrency=concurrency, progress=False)
        worst = max(
            judge.config.worst_case_usd(r.text, [im.size for im in r.pil_images()]) for r in judge_sim.sim.requests
        )
    spent = sum(i * 250.0 + o * 1000.0 for i, o in map(_sim_usage, judge_sim.sim.requests)) / 1e6
    assert summary.stopped_by_budget and 0 < summary.requests_sent < 20
    assert summary.cost_usd == pytest.approx(spent, abs=1e-9)
    assert spent <= budget  # never crossed
    # and it did not stop early: one more worst case would have crossed the cap (up to the requests in flight)
    assert spent + concurrency * worst > budget
    assert summary.skipped_budget > 0 and summary.judge_object()["stopped_by_budget"]


# ---- the tier rule uses the judge's noise ---------------------------------------------------------------
def _noisy_quality_run(tmp_path, pass_offsets: list[float] | None, n_models: int = 2):
    """12 cases × 2 models (model-00 $0.01, model-01 $0.02); model-01 scores 0.3 higher on every case (the
    paired test calls it significantly better); each score is the mean of passes at ``pass_offsets``."""
    ws = build_grid_workspace(tmp_path / "ws", n_cases=12, n_models=n_models, image_px=(32, 24), distinct_outputs=2)
    version = "sim-judge-1|viescore-gedit-v1|jpeg-q90-max1024"
    rows = []
    for i in range(12):
        for j in range(n_models):
            cid = f"grid-{i}-{j}"
            mean = 6.0 + 0.1 * i + 0.3 * j
            rows.append(
                {
                    "run_id": "grid",
                    "call_id": cid,
                    "metric": "viescore_o",
                    "source": "judge",
                    "version": version,
                    "value": mean,
                    "status": "scored",
                }
            )
            if pass_offsets is not None:
                ws.put_judge_passes(
                    "grid",
                    cid,
                    version,
                    [
                        {"metric": "viescore_o", "pass": k + 1, "value": mean + d, "status": "scored"}
                        for k, d in enumerate(pass_offsets)
                    ],
                )
    ws.put_scores(rows)
    return ws


@pytest.mark.parametrize(
    ("offsets", "default", "noise"),
    [
        (None, "model-01", None),  # one pass: today's rule, the significantly better model
        ([-0.05, 0.0, 0.05], "model-01", 0.05),  # advantage 0.3 > noise 0.05: still the better model
        ([-0.5, 0.0, 0.5], "model-00", 0.5),  # advantage 0.3 < noise 0.5: the cheaper model
    ],
)
def test_the_tier_rule_prefers_the_cheaper_model_when_the_advantage_is_below_the_noise(
    tmp_path, offsets, default, noise
):
    ws = _noisy_quality_run(tmp_path, offsets)
    tier = Tier("std", max_cost_usd=1.0, min_calls=5)
    decision = choose_defaults(ws, "grid", {"std": tier}, quality=("viescore_o", "judge"), vendors={})
    d = decision.operations["std"]["general_edit"]
    assert d.status == "ok" and d.default == default
    assert d.judge_noise_sd == (pytest.approx(noise) if noise is not None else None)
    if default == "model-00":
        assert "below the judge's noise on general_edit" in d.rationale and "significantly better" in d.rationale
        assert "advantage of 0.3" in d.rationale
        best = next(a for a in d.alternatives if a.model == "model-01")
        assert "below the judge's noise" in best.rationale
    elif noise is not None:
        assert "by more than the judge's noise" in d.rationale
    else:
        assert "noise" not in d.rationale
    assert decision.to_dict()["tiers"]["std"]["operations"]["general_edit"]["judge_noise_sd"] == (
        pytest.approx(noise) if noise is not None else None
    )
    ws.close()


# ---- the CLI ------------------------------------------------------------------------------------------------
def test_score_cli_judge_passes_price_and_json(judge_sim, ws, monkeypatch):
    from typer.testing import CliRunner

    from evalkit.cli import app

    viescore_run(ws)
    judge_sim.sim.set_noise(NOISE_SD, seed=5)
    monkeypatch.setenv("EVALKIT_JUDGE_BASE_URL", judge_sim.base_url)
    monkeypatch.setenv("EVALKIT_JUDGE_MODEL", "sim-judge-1")
    monkeypatch.setenv("EVALKIT_JUDGE_API_KEY", judge_sim.api_key)
    monkeypatch.setenv("EVALKIT_JUDGE_PASSES", "3")  # the variable sets the passes
    monkeypatch.setenv("TQDM_DISABLE", "1")
    runner = CliRunner()
    args = ["score", "r1", "--no-auto", "--judge", "--workspace", str(ws.path)]
    res = runner.invoke(app, [*args, "--judge-price", "20/80", "--json"])
    assert res.exit_code == 0, res.output
    judge = json.loads(res.stdout)["judge"]
    assert {"requests", "cached", "scored", "unscored", "cost_usd", "noise_sd"} <= set(judge)
    assert judge["passes"] == 3 and judge["requests"] == 30 and judge["cached"] == 0 and judge["scored"] == 6
    expected = sum(i * 20.0 + o * 80.0 for i, o in map(_sim_usage, judge_sim.sim.requests)) / 1e6
    assert judge["cost_usd"] == pytest.approx(expected, abs=1e-9) and judge["price_source"] == "--judge-price"
    assert judge["noise_sd"] == pytest.approx(judge_noise(ws, "r1").sd("viescore_o"))
    # the flag wins over the variable; a re-score with fewer passes pays nothing
    res = runner.invoke(app, [*args, "--judge-passes", "2"])
    assert res.exit_code == 0, res.output
    assert "0 requests (20 cached)" in res.stdout and "judging cost $0.0000" in res.stdout
    assert "2 judge passes per output" in res.stdout and "median SD" in res.stdout
    res = runner.invoke(app, [*args, "--judge-price", "cheap"])
    assert res.exit_code == 2 and "bad judge price 'cheap'" in res.output
    # evalkit runs shows what judging cost
    res = runner.invoke(app, ["runs", "--workspace", str(ws.path), "--json"])
    row = json.loads(res.stdout)[0]
    assert row["judge_cost_usd"] == pytest.approx(expected, abs=1e-9) and row["judge_requests"] == 30


# ---- the report -------------------------------------------------------------------------------------------
async def test_report_shows_judging_cost_next_to_generation_cost_and_the_noise(judge_sim, ws):
    from evalkit.decide.quality import QualitySpec
    from evalkit.report.sections import run_overview
    from evalkit.report.trust import quality_trust_html

    viescore_run(ws)
    assert run_overview(ws, "r1")["judging cost"].startswith("$0 (no judge request")
    quality = QualitySpec("viescore_o", "judge")
    assert "not measured: one pass per output" in quality_trust_html(ws, "r1", quality, n_boot=20)
    judge_sim.sim.set_noise(NOISE_SD, seed=2)
    async with make_judge(judge_sim, usd_per_1m_input_tokens=2.0, usd_per_1m_output_tokens=8.0) as judge:
        summary = await judge_run(ws, "r1", judge, passes=3, progress=False)
    overview = run_overview(ws, "r1")
    assert list(overview).index("judging cost") == list(overview).index("cost") + 1
    assert overview["judging cost"] == f"${summary.cost_usd:.4f} for 30 judge request(s)"
    page = quality_trust_html(ws, "r1", quality, n_boot=20)
    noise = judge_noise(ws, "r1")
    assert "3 per output" in page and f"median SD {noise.sd():.3g} between passes" in page
    assert "The judge's own noise (3 passes per output)" in page
    assert f"{noise.sd('viescore_pq', 'character_reference'):.3g} (2)" in page  # per operation


async def test_compare_shows_judging_cost_next_to_generation_cost(judge_sim, ws):
    from evalkit.decide.compare import compare_runs

    viescore_run(ws, "r1")
    viescore_run(ws, "r2")
    async with make_judge(judge_sim, usd_per_1m_input_tokens=20.0, usd_per_1m_output_tokens=80.0) as judge:
        summary = await judge_run(ws, "r2", judge, passes=2, progress=False)
    comparison = compare_runs(ws, "r1", "r2")
    costs = comparison.costs
    assert costs["r1"] == {"generation_usd": 0.0, "judging_usd": 0.0, "judge_requests": 0, "judge_unknown_cost": 0}
    assert (
        costs["r2"]["judging_usd"] == pytest.approx(summary.cost_usd, abs=1e-9) and costs["r2"]["judge_requests"] == 20
    )
    text = comparison.render()
    assert f"new r2: generation $0.0000, judging ${summary.cost_usd:.4f} (20 judge request(s))" in text
    assert comparison.to_dict()["costs"] == costs


def test_score_run_reads_the_passes_from_the_environment(judge_sim, ws, monkeypatch):
    from evalkit.credentials import Secret
    from evalkit.scoring import score_run

    viescore_run(ws)
    overrides = {"base_url": judge_sim.base_url, "api_key": Secret(judge_sim.api_key), "model": "sim-judge-1"}
    monkeypatch.setenv("EVALKIT_JUDGE_PASSES", "2")
    summary = score_run(ws, "r1", auto=False, judge=True, judge_overrides=overrides, progress=False)
    assert summary.judge.passes == 2 and len(judge_sim.sim.requests) == 20
    assert summary.as_dict()["judge"]["requests"] == 20
    summary = score_run(ws, "r1", auto=False, judge=True, judge_overrides=overrides, judge_passes=3, progress=False)
    assert summary.judge.passes == 3 and len(judge_sim.sim.requests) == 30  # the argument wins
    monkeypatch.setenv("EVALKIT_JUDGE_PASSES", "three")
    with pytest.raises(InvalidInputError, match="EVALKIT_JUDGE_PASSES"):
        score_run(ws, "r1", auto=False, judge=True, judge_overrides=overrides, progress=False)


def test_the_noise_only_lets_in_cheaper_models_within_it(tmp_path):
    # model-02 ($0.03) is 0.3 above model-01 ($0.02) and 0.6 above model-00 ($0.01); the noise is 0.5
    ws = _noisy_quality_run(tmp_path, [-0.5, 0.0, 0.5], n_models=3)
    decision = choose_defaults(
        ws, "grid", {"std": Tier("std", min_calls=5)}, quality=("viescore_o", "judge"), vendors={}
    )
    d = decision.operations["std"]["general_edit"]
    assert d.default == "model-01" and "below the judge's noise" in d.rationale
    why = {a.model: a.rationale for a in d.alternatives}
    assert "significantly below model-02" in why["model-00"] and "noise" not in why["model-00"]
    assert "below the judge's noise" in why["model-02"]
    ws.close()
