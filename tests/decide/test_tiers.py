"""Tier definitions (validation, precedence) and per-tier default choice against the synthetic workspace."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from evalkit.decide.quality import QualitySpec
from evalkit.decide.tier_config import BUNDLED_TIERS, Tier, TierConfigError, load_tiers, parse_tiers
from evalkit.decide.tiers import SCHEMA, choose_defaults, paired_test, write_tier_defaults
from tests.plugins import synthetic as S

JUDGE = ("viescore_o", "judge")
WS = ("wavespeed",)


def tiers(**overrides) -> dict[str, Tier]:
    base = {
        "cheap": Tier("cheap", max_cost_usd=0.05, allowed_providers=WS, min_success_rate=0.8, min_calls=5),
        "premium": Tier("premium", max_cost_usd=0.20, allowed_providers=WS, min_success_rate=0.8, min_calls=5),
        "tiny": Tier("tiny", max_cost_usd=0.005, allowed_providers=WS, min_calls=5),
        "lowcost": Tier("lowcost", max_cost_usd=0.015, allowed_providers=WS, min_calls=5),
    }
    base.update(overrides)
    return base


# -- tier files -------------------------------------------------------------------------------------


def test_bundled_tiers_load():
    t = load_tiers()
    assert list(t) == ["free", "standard", "premium"]
    assert t["standard"].max_cost_usd == 0.05 and t["standard"].min_calls == 10
    assert "local" not in t["free"].allowed_providers
    assert t["premium"].origin == str(BUNDLED_TIERS)


def test_workspace_file_overrides_bundled_and_explicit_path_overrides_workspace(tmp_path):
    ws_dir = tmp_path / "ws"
    ws_dir.mkdir()
    (ws_dir / "tiers.toml").write_text("[tiers.gold]\nmax_cost_usd = 1.0\n")
    assert list(load_tiers(workspace=ws_dir)) == ["gold"]  # replaces, does not merge
    explicit = tmp_path / "mine.toml"
    explicit.write_text(
        'schema = "evalkit.tiers/1"\n[tiers.basic]\nmin_success_rate = 0.5\nallowed_vendors = ["Google"]\n'
    )
    t = load_tiers(explicit, workspace=ws_dir)
    assert list(t) == ["basic"]
    assert t["basic"].allowed_vendors == ("Google",) and t["basic"].max_cost_usd is None
    assert list(load_tiers(workspace=tmp_path / "nothing-here")) == ["free", "standard", "premium"]


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[tiers.std]\nmax_cost = 0.05\n", "tiers.std.max_cost: unknown key (did you mean 'max_cost_usd'?)"),
        ('[tiers.std]\nmax_cost_usd = "cheap"\n', "tiers.std.max_cost_usd: must be a number ≥ 0 (got 'cheap')"),
        ("[tiers.std]\nmax_cost_usd = -1\n", "tiers.std.max_cost_usd: must be ≥ 0"),
        ("[tiers.std]\nmin_success_rate = 1.5\n", "tiers.std.min_success_rate: must be ≥ 0 and ≤ 1"),
        ("[tiers.std]\nmin_calls = 0\n", "tiers.std.min_calls: must be a whole number ≥ 1"),
        ("[tiers.std]\nmin_calls = 2.5\n", "tiers.std.min_calls"),
        ("[tiers.std]\nmax_latency_p95_ms = 0\n", "tiers.std.max_latency_p95_ms: must be > 0"),
        ('[tiers.std]\nallowed_vendors = "Google"\n', "tiers.std.allowed_vendors: must be a non-empty list"),
        ("[tiers.std]\nallowed_providers = []\n", "tiers.std.allowed_providers: must be a non-empty list"),
        ("[tiers.std]\ndescription = 3\n", "tiers.std.description: must be text"),
        ('schema = "evalkit.tiers/9"\n[tiers.std]\n', "schema: this evalkit reads 'evalkit.tiers/1'"),
        ("[tier.std]\nmax_cost_usd = 1\n", "tier: unknown top-level key"),
        ('title = "x"\n', "tiers: no tiers defined"),
        ("[tiers]\nstd = 3\n", "tiers.std: must be a table"),
        ('[tiers."bad name"]\n', "tiers.bad name: the tier name must be a simple id"),
        ("[tiers.std\n", "not valid TOML"),
    ],
)
def test_invalid_tier_files_name_the_key(tmp_path, text, needle):
    path = tmp_path / "tiers.toml"
    path.write_text(text)
    with pytest.raises(TierConfigError) as err:
        load_tiers(path)
    assert needle in str(err.value)
    assert str(path) in str(err.value)


def test_every_problem_is_reported_at_once():
    with pytest.raises(TierConfigError) as err:
        parse_tiers({"tiers": {"a": {"max_cost_usd": "x"}, "b": {"min_calls": -1, "colour": "red"}}}, "t.toml")
    assert len(err.value.problems) == 3


def test_missing_tier_file(tmp_path):
    with pytest.raises(TierConfigError, match="does not exist"):
        load_tiers(tmp_path / "nope.toml")


# -- the paired test ----------------------------------------------------------------------------------


def test_paired_test_exact_values():
    spec = QualitySpec("q", "judge")
    per_case = pd.DataFrame(
        {
            "model_id": ["x"] * 6 + ["y"] * 6,
            "case_id": [f"c{i}" for i in range(6)] * 2,
            "value": [5, 6, 7, 8, 9, 10] + [4.9, 5.8, 6.7, 7.6, 8.5, 9.4],
        }
    )
    t = paired_test(per_case, "x", "y", spec)
    # six distinct positive differences: the exact one-sided signed-rank p is 1 / 2^6
    assert t.n_pairs == 6 and t.p_value == pytest.approx(1 / 64) and t.significant(0.05)
    assert t.mean_diff == pytest.approx(0.35)
    reverse = paired_test(per_case, "y", "x", spec)
    assert reverse.p_value == pytest.approx(1.0) and not reverse.significant(0.05)
    # lower-is-better metrics flip the direction
    assert paired_test(per_case, "y", "x", QualitySpec("l1", "auto", higher_is_better=False)).significant(0.05)
    same = per_case.assign(value=1.0)
    assert paired_test(same, "x", "y", spec).p_value == 1.0
    assert paired_test(per_case, "x", "nobody", spec).n_pairs == 0


# -- choosing defaults -------------------------------------------------------------------------------


def test_statistically_tied_cheaper_model_wins(synthetic_workspace):
    d = choose_defaults(synthetic_workspace.ws, S.RUN_ID, tiers(), quality=JUDGE)
    op = d.operations["cheap"]["general_edit"]
    # alpha scores 7.5, beta 7.375 (only g4 differs by 1): alpha is not significantly better, beta costs half
    assert (op.default, op.status) == ("beta", "ok")
    assert "not significantly better" in op.rationale and "alpha" in op.rationale
    assert op.cost_usd == pytest.approx(0.02) and op.quality == pytest.approx(7.375) and op.n == 8
    assert op.latency_p95_ms == pytest.approx(1465.0)
    alts = {a.model: a for a in op.alternatives}
    assert alts["alpha"].rationale.startswith("highest viescore_o 7.5, but not significantly better than beta")
    assert alts["gamma"].rationale == "excluded: costs $0.150 per edit > max $0.05"
    assert alts["delta"].rationale == "excluded: success rate 25% < min 80%"
    assert alts["base"].rationale.startswith("excluded: provider local not in allowed_providers")
    assert "price unknown" in alts["mystery"].rationale
    assert [a.model for a in op.alternatives][0] == "alpha"  # eligible first


def test_significantly_better_expensive_model_is_kept(synthetic_workspace):
    d = choose_defaults(synthetic_workspace.ws, S.RUN_ID, tiers(), quality=JUDGE)
    op = d.operations["premium"]["general_edit"]
    assert (op.default, op.status) == ("gamma", "ok")
    assert op.quality == 9.0 and op.n == 7 and op.quality_ci == (9.0, 9.0)
    assert "significantly better than every cheaper eligible model" in op.rationale
    alts = {a.model: a for a in op.alternatives}
    assert alts["alpha"].rationale.startswith("eligible; significantly below gamma")
    assert alts["beta"].rationale.startswith("eligible; significantly below gamma")


def test_rule_flips_when_the_cheaper_model_becomes_significantly_worse(synthetic_workspace):
    ws = synthetic_workspace.ws
    ws.put_scores(
        [
            {
                "run_id": S.RUN_ID,
                "call_id": S.call_id("beta", c),
                "metric": "viescore_o",
                "source": "judge",
                "version": S.JUDGE_VERSION,
                "value": v,
            }
            for c, v in zip(S.GENERAL_CASES, [6, 7, 5, 6, 4, 7, 5, 6], strict=True)
        ]
    )
    op = choose_defaults(ws, S.RUN_ID, tiers(), quality=JUDGE).operations["cheap"]["general_edit"]
    assert op.default == "alpha"
    assert {a.model: a for a in op.alternatives}["beta"].rationale.startswith("eligible; significantly below alpha")


def test_no_eligible_model_says_why(synthetic_workspace):
    d = choose_defaults(synthetic_workspace.ws, S.RUN_ID, tiers(), quality=JUDGE)
    op = d.operations["tiny"]["general_edit"]
    assert (op.status, op.default, op.provisional) == ("no_eligible_model", None, None)
    assert op.rationale == "all models exceed $0.005 per edit"
    assert op.cost_usd is None and op.quality is None
    only_local = {"x": Tier("x", allowed_providers=("stability",))}
    op = choose_defaults(synthetic_workspace.ws, S.RUN_ID, only_local, quality=JUDGE).operations["x"]["general_edit"]
    assert op.status == "no_eligible_model" and "allowed providers stability" in op.rationale
    mixed = {"m": Tier("m", max_cost_usd=0.03, max_latency_p95_ms=1000, allowed_providers=WS, min_success_rate=0.8)}
    op = choose_defaults(synthetic_workspace.ws, S.RUN_ID, mixed, quality=JUDGE).operations["m"]["general_edit"]
    assert op.rationale.startswith("no model meets every constraint: ")
    assert "beta: p95 latency 1.5 s > max 1.0 s" in op.rationale


def test_too_little_evidence_is_marked(synthetic_workspace):
    d = choose_defaults(synthetic_workspace.ws, S.RUN_ID, tiers(), quality=JUDGE)
    op = d.operations["lowcost"]["general_edit"]  # only delta ($0.01) fits, with 2 completed calls
    assert (op.status, op.default, op.provisional) == ("insufficient_evidence", None, "delta")
    assert "only 2 completed call(s) (< min_calls 5)" in op.rationale
    assert op.cost_usd == pytest.approx(0.01) and op.completed == 2
    erase = d.operations["cheap"]["erase"]  # alpha: 3 calls and no judge score on erase
    assert erase.status == "insufficient_evidence" and erase.provisional is None
    assert "no scored viescore_o (judge)" in erase.rationale
    # with enough calls allowed, erase still lacks a judge score, but has an auto one
    loose = {"l": Tier("l", min_calls=1)}
    assert (
        choose_defaults(synthetic_workspace.ws, S.RUN_ID, loose, quality=JUDGE).operations["l"]["erase"].status
        == "insufficient_evidence"
    )
    auto = choose_defaults(synthetic_workspace.ws, S.RUN_ID, loose, quality=("ssim", "auto")).operations["l"]["erase"]
    assert (auto.status, auto.default) == ("ok", "base")  # free, and alpha is not significantly better


def test_higher_quality_model_short_of_evidence_is_listed(synthetic_workspace):
    t = {"t": Tier("t", max_cost_usd=0.2, allowed_providers=WS, min_calls=8)}
    op = choose_defaults(synthetic_workspace.ws, S.RUN_ID, t, quality=JUDGE).operations["t"]["general_edit"]
    assert op.default == "gamma"
    t = {"t": Tier("t", max_cost_usd=0.2, allowed_providers=WS, min_calls=9)}
    op = choose_defaults(synthetic_workspace.ws, S.RUN_ID, t, quality=JUDGE).operations["t"]["general_edit"]
    assert op.status == "insufficient_evidence" and op.provisional == "gamma"


def test_vendor_and_latency_constraints(synthetic_workspace):
    ws = synthetic_workspace.ws
    t = {
        "g": Tier("g", allowed_vendors=("Globex",), min_calls=5),
        "fast": Tier("fast", max_latency_p95_ms=2000, allowed_providers=WS, min_calls=5),
    }
    d = choose_defaults(ws, S.RUN_ID, t, quality=JUDGE, vendors=S.VENDORS)
    assert d.operations["g"]["general_edit"].default == "gamma"
    alts = {a.model: a.rationale for a in d.operations["g"]["general_edit"].alternatives}
    assert "vendor Acme not in allowed_vendors (Globex)" in alts["alpha"]
    fast = d.operations["fast"]["general_edit"]
    assert fast.default == "beta"
    assert "p95 latency 4.0 s > max 2.0 s" in {a.model: a.rationale for a in fast.alternatives}["alpha"]
    # the synthetic ids are not in the catalogue: with no vendor map their vendor is unknown
    d = choose_defaults(ws, S.RUN_ID, {"g": t["g"]}, quality=JUDGE)
    assert d.operations["g"]["general_edit"].status == "no_eligible_model"


def test_tier_defaults_json_shape(synthetic_workspace, tmp_path):
    ws = synthetic_workspace.ws
    ws.update_run(S.RUN_ID, simulated=1)
    d = choose_defaults(ws, S.RUN_ID, tiers(), quality=JUDGE)
    path = write_tier_defaults(d, tmp_path / "out")
    assert path.name == "tier_defaults.json"
    doc = json.loads(path.read_text())
    assert doc["schema"] == SCHEMA == "evalkit.tier_defaults/1"
    assert doc["run_id"] == S.RUN_ID and doc["simulated"] is True
    assert doc["generated_at"].endswith("Z")
    assert doc["quality"] == {
        "metric": "viescore_o",
        "source": "judge",
        "version": S.JUDGE_VERSION,
        "higher_is_better": True,
    }
    assert set(doc["tiers"]) == {"cheap", "premium", "tiny", "lowcost"}
    cheap = doc["tiers"]["cheap"]
    assert cheap["constraints"] == {
        "max_cost_usd": 0.05,
        "max_latency_p95_ms": None,
        "allowed_vendors": None,
        "allowed_providers": ["wavespeed"],
        "min_success_rate": 0.8,
        "min_calls": 5,
    }
    ge = cheap["operations"]["general_edit"]
    keys = {
        "default",
        "status",
        "provisional",
        "cost_usd",
        "latency_p95_ms",
        "success_rate",
        "completed",
        "quality",
        "quality_ci",
        "n",
        "judge_noise_sd",  # added within /1 (null: the run's judge was asked once per output)
        "rationale",
        "alternatives",
    }
    assert set(ge) == keys and ge["judge_noise_sd"] is None
    assert ge["default"] == "beta" and ge["status"] == "ok" and len(ge["quality_ci"]) == 2
    for alt in ge["alternatives"]:
        assert set(alt) == {
            "model",
            "cost_usd",
            "latency_p95_ms",
            "quality",
            "rationale",
            "eligibility",
            "quality_ci",
            "n",
            "completed",
            "success_rate",
        }
        assert alt["eligibility"] == (
            "excluded"
            if alt["rationale"].startswith("excluded")
            else "insufficient_evidence"
            if alt["rationale"].startswith("meets the constraints but")
            else "eligible"
        )
    mystery = next(a for a in ge["alternatives"] if a["model"] == "mystery")
    assert mystery["cost_usd"] is None  # unknown price: null, never NaN
    for tier in doc["tiers"].values():
        for op in tier["operations"].values():
            assert op["status"] in {"ok", "insufficient_evidence", "no_eligible_model"}
            assert (op["default"] is None) == (op["status"] != "ok")
    assert "NaN" not in path.read_text()
    frame = d.to_frame()
    assert len(frame) == 4 * 2 and set(frame["status"]) == {"ok", "insufficient_evidence", "no_eligible_model"}


def test_defaults_use_the_workspace_tiers_file(synthetic_workspace):
    ws = synthetic_workspace.ws
    (ws.path / "tiers.toml").write_text(
        '[tiers.only]\nmax_cost_usd = 0.03\nallowed_providers = ["wavespeed"]\nmin_calls = 5\nmin_success_rate = 0.5\n'
    )
    d = choose_defaults(ws, S.RUN_ID, quality=JUDGE)
    assert list(d.tiers) == ["only"] and d.operations["only"]["general_edit"].default == "beta"
    with pytest.raises(TierConfigError):
        choose_defaults(ws, S.RUN_ID, {"x": "not a tier"}, quality=JUDGE)


def test_bundled_tiers_on_the_synthetic_run(synthetic_workspace):
    d = choose_defaults(synthetic_workspace.ws, S.RUN_ID, BUNDLED_TIERS, quality=JUDGE)
    # min_calls 10 in the bundled tiers: 8 cases are not enough evidence anywhere
    assert list(d.operations) == ["free", "standard", "premium"]
    for tier in d.operations.values():
        op = tier["general_edit"]
        assert op.status == "insufficient_evidence" and op.default is None
        assert "(< min_calls 10)" in op.rationale
    assert d.operations["free"]["general_edit"].provisional == "beta"  # the only hosted model ≤ $0.025 that works
    assert d.operations["premium"]["general_edit"].provisional == "gamma"
