"""Arena statistics: Bradley–Terry recovery and interval coverage on simulated votes, scheduling, agreement."""

from __future__ import annotations

import math
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit

from evalkit.errors import InvalidInputError
from evalkit.scoring.arena import (
    ELO_SCALE,
    RESULT_COLUMNS,
    bradley_terry,
    cohen_kappa,
    fleiss_kappa,
    inter_rater_agreement,
    rank_agreement,
    schedule_pairs,
)

TRUE_STRENGTHS = np.array([-1.0, -0.5, 0.0, 0.3, 0.6, 1.2])
MODELS = [f"m{i}" for i in range(len(TRUE_STRENGTHS))]


def simulate(n_votes: int, seed: int, *, n_cases: int = 100, strengths=TRUE_STRENGTHS) -> pd.DataFrame:
    """Votes drawn from a Bradley–Terry model with the given strengths (random pairs and cases)."""
    rng = np.random.default_rng(seed)
    k = len(strengths)
    a = rng.integers(0, k, n_votes)
    b = (a + rng.integers(1, k, n_votes)) % k  # never a model against itself
    a_wins = rng.random(n_votes) < expit(strengths[a] - strengths[b])
    return pd.DataFrame(
        {
            "model_a": [f"m{i}" for i in a],
            "model_b": [f"m{i}" for i in b],
            "winner": np.where(a_wins, "a", "b"),
            "case_id": [f"case{c}" for c in rng.integers(0, n_cases, n_votes)],
        }
    )


def votes(*rows: tuple[str, str, str]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["model_a", "model_b", "winner"])


def test_recovers_known_ordering_from_simulated_votes():
    result = bradley_terry(simulate(3000, seed=1), n_bootstrap=50)
    assert list(result.columns) == RESULT_COLUMNS
    fitted = result.set_index("model")["strength"]
    rho = rank_agreement(dict(zip(MODELS, TRUE_STRENGTHS, strict=True)), fitted.to_dict())["spearman_rho"]
    assert rho >= 0.95
    assert result["model"].iloc[0] == "m5" and result["rank"].tolist() == [1, 2, 3, 4, 5, 6]
    # strengths are mean-centred, and Elo is the same number on the 400/ln10 scale around 1000
    assert fitted.mean() == pytest.approx(0.0, abs=1e-9)
    assert np.allclose(result["elo"], 1000 + ELO_SCALE * result["strength"])
    # and close to the truth (centred), not merely in order
    truth = TRUE_STRENGTHS - TRUE_STRENGTHS.mean()
    assert np.abs(fitted.reindex(MODELS).to_numpy() - truth).max() < 0.2
    assert (result["ci_low"] < result["strength"]).all() and (result["strength"] < result["ci_high"]).all()


@pytest.mark.slow
@pytest.mark.parametrize("with_cases", [True, False])
def test_intervals_cover_the_true_strengths_at_about_the_nominal_rate(with_cases):
    truth = dict(zip(MODELS, TRUE_STRENGTHS - TRUE_STRENGTHS.mean(), strict=True))
    covered = []
    for s in range(40):
        data = simulate(800, seed=100 + s)
        if not with_cases:
            data = data.drop(columns="case_id")
        result = bradley_terry(data, n_bootstrap=100, seed=s, ci=0.95)
        assert result.attrs["resampled"] == ("cases" if with_cases else "votes")
        for row in result.itertuples():
            covered.append(row.ci_low <= truth[row.model] <= row.ci_high)
    coverage = float(np.mean(covered))
    assert 0.85 <= coverage <= 1.0, coverage
    assert coverage < 1.0 or len(covered) < 50  # intervals that always cover would be uselessly wide


def test_deterministic_for_a_seed():
    data = simulate(500, seed=3)
    first = bradley_terry(data, n_bootstrap=30, seed=7)
    pd.testing.assert_frame_equal(first, bradley_terry(data, n_bootstrap=30, seed=7))
    assert not first["ci_low"].equals(bradley_terry(data, n_bootstrap=30, seed=8)["ci_low"])


def test_two_models_three_to_one_gives_log_odds_of_three():
    result = bradley_terry(votes(("x", "y", "a"), ("x", "y", "a"), ("y", "x", "b"), ("x", "y", "b")), n_bootstrap=0)
    s = result.set_index("model")["strength"]
    assert s["x"] - s["y"] == pytest.approx(math.log(3), rel=0.01)  # only the tiny prior pulls it in
    assert result["ci_low"].isna().all()


def test_a_tie_is_half_a_win_for_each_side():
    with_ties = votes(("x", "y", "a"), ("x", "y", "a"), ("x", "y", "tie"), ("y", "x", "tie"))
    as_wins = votes(("x", "y", "a"), ("x", "y", "a"), ("x", "y", "a"), ("x", "y", "b"))
    s_ties = bradley_terry(with_ties, n_bootstrap=0).set_index("model")
    s_wins = bradley_terry(as_wins, n_bootstrap=0).set_index("model")
    assert s_ties["strength"]["x"] == pytest.approx(s_wins["strength"]["x"], rel=1e-6)
    assert s_ties.loc["x", ["wins", "losses", "ties"]].tolist() == [2, 0, 2]
    assert s_ties.loc["y", ["wins", "losses", "ties"]].tolist() == [0, 2, 2]
    only_ties = bradley_terry(votes(("x", "y", "tie"), ("y", "x", "tie")), n_bootstrap=0)
    assert only_ties["strength"].abs().max() < 1e-9


def test_both_bad_is_counted_but_not_fitted():
    data = votes(("x", "y", "a"), ("x", "y", "both_bad"), ("y", "z", "a"), ("z", "w", "tie (bothbad)"))
    result = bradley_terry(data, n_bootstrap=0).set_index("model")
    assert result.loc["x", "both_bad"] == 1 and result.loc["x", "n_comparisons"] == 1
    assert result.loc["w", "both_bad"] == 1 and result.loc["w", "n_comparisons"] == 0
    assert math.isnan(result.loc["w", "strength"]) and pd.isna(result.loc["w", "rank"])
    assert result.loc["z", "both_bad"] == 1
    with_both_bad = bradley_terry(data, n_bootstrap=0).set_index("model")["strength"].dropna()
    without = bradley_terry(data.iloc[[0, 2]], n_bootstrap=0).set_index("model")["strength"]
    pd.testing.assert_series_equal(with_both_bad.sort_index(), without.sort_index())


def test_a_model_with_only_wins_stays_finite():
    data = pd.concat([votes(("champ", "m1", "a")) for _ in range(30)] + [simulate(300, seed=5)], ignore_index=True)
    result = bradley_terry(data, n_bootstrap=30).set_index("model")
    assert np.isfinite(result[["strength", "elo", "ci_low", "ci_high"]].to_numpy()).all()
    assert result["strength"].idxmax() == "champ" and result.loc["champ", "rank"] == 1
    assert result.loc["champ", "losses"] == 0


def test_bad_votes_are_clear_errors():
    with pytest.raises(InvalidInputError, match="missing column"):
        bradley_terry(pd.DataFrame({"model_a": ["x"], "model_b": ["y"]}))
    with pytest.raises(InvalidInputError, match="unknown winner"):
        bradley_terry(votes(("x", "y", "left")))
    with pytest.raises(InvalidInputError, match="itself"):
        bradley_terry(votes(("x", "x", "a")))


# -- scheduling --------------------------------------------------------------------------------------


def _pair_counts(schedule) -> dict[frozenset, int]:
    counts: dict[frozenset, int] = {}
    for _, a, b in schedule:
        counts[frozenset((a, b))] = counts.get(frozenset((a, b)), 0) + 1
    return counts


@pytest.mark.parametrize("n", [1, 14, 15, 16, 100, 157])
def test_schedule_is_balanced_on_an_empty_history(n):
    models = ["a", "b", "c", "d", "e", "f"]
    cases = [f"c{i}" for i in range(7)]
    schedule = schedule_pairs(models, cases, None, n, seed=2)
    assert len(schedule) == n
    assert all(a != b for _, a, b in schedule)
    counts = _pair_counts(schedule)
    all_pairs = [frozenset(p) for p in combinations(models, 2)]
    per_pair = [counts.get(p, 0) for p in all_pairs]
    assert max(per_pair) - min(per_pair) <= 1
    per_case = pd.Series([c for c, _, _ in schedule]).value_counts().reindex(cases, fill_value=0)
    assert per_case.max() - per_case.min() <= 2  # pairs are spread over cases first, then cases evened out
    # a/b order is randomised, not always alphabetical
    if n >= 100:
        assert 0.3 < np.mean([a < b for _, a, b in schedule]) < 0.7


def test_schedule_spreads_a_pair_over_cases_before_repeating():
    schedule = schedule_pairs(["x", "y"], ["c1", "c2", "c3"], None, 6, seed=0)
    assert sorted(c for c, _, _ in schedule[:3]) == ["c1", "c2", "c3"]
    assert sorted(c for c, _, _ in schedule[3:]) == ["c1", "c2", "c3"]


def test_schedule_fills_the_least_compared_pairs_first():
    existing = votes(*[("a", "b", "a")] * 5, *[("a", "c", "a")] * 5)
    schedule = schedule_pairs(["a", "b", "c"], ["c1"], existing, 5, seed=0)
    assert _pair_counts(schedule)[frozenset(("b", "c"))] >= 4


def test_schedule_favours_close_uncertain_pairs_once_there_is_data():
    rng = np.random.default_rng(0)
    rows = []
    for _ in range(60):  # "top" beats everyone; "p" and "q" are even
        for other in ("p", "q"):
            rows.append(("top", other, "a" if rng.random() < 0.97 else "b"))
        rows.append(("p", "q", "a" if rng.random() < 0.5 else "b"))
    existing = votes(*rows)
    schedule = schedule_pairs(["top", "p", "q"], ["c1", "c2"], existing, 200, seed=1)
    counts = _pair_counts(schedule)
    assert counts[frozenset(("p", "q"))] > counts.get(frozenset(("top", "p")), 0)
    assert counts[frozenset(("p", "q"))] > counts.get(frozenset(("top", "q")), 0)
    assert counts.get(frozenset(("top", "p")), 0) > 0  # settled pairs still get their turn


def test_schedule_is_deterministic_and_validates_input():
    assert schedule_pairs(["a", "b", "c"], ["x", "y"], None, 9, seed=4) == schedule_pairs(
        ["a", "b", "c"], ["x", "y"], None, 9, seed=4
    )
    with pytest.raises(InvalidInputError):
        schedule_pairs(["a", "a"], ["x"], None, 3)
    with pytest.raises(InvalidInputError):
        schedule_pairs(["a", "b"], [], None, 3)


# -- agreement ---------------------------------------------------------------------------------------


def test_fleiss_kappa_matches_the_textbook_example():
    """Fleiss (1971) worked example as reproduced on Wikipedia: 10 subjects, 14 raters, κ ≈ 0.210."""
    table = np.array(
        [
            [0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
            [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7],
        ]
    )  # fmt: skip
    kappa, p_bar = fleiss_kappa(table)
    assert kappa == pytest.approx(0.210, abs=0.001)
    assert p_bar == pytest.approx(0.378, abs=0.001)


def test_cohen_kappa_two_raters_known_value():
    """50 items: both 'a' 20, both 'b' 15, disagreements 5 + 10 → p_o 0.7, p_e 0.5, κ = 0.4."""
    r1 = ["a"] * 20 + ["a"] * 5 + ["b"] * 10 + ["b"] * 15
    r2 = ["a"] * 20 + ["b"] * 5 + ["a"] * 10 + ["b"] * 15
    assert cohen_kappa(r1, r2) == pytest.approx(0.4)
    rows = []
    for i, (v1, v2) in enumerate(zip(r1, r2, strict=True)):
        # rater 2 saw the pair the other way round: the same opinion has the opposite letter
        rows.append({"case_id": f"c{i}", "model_a": "m1", "model_b": "m2", "winner": v1, "rater": "r1"})
        rows.append(
            {"case_id": f"c{i}", "model_a": "m2", "model_b": "m1", "winner": "b" if v2 == "a" else "a", "rater": "r2"}
        )
    result = inter_rater_agreement(pd.DataFrame(rows))
    assert result["n_items"] == 50 and result["n_raters"] == 2 and result["n_votes"] == 100
    assert result["percent_agreement"] == pytest.approx(0.7)
    assert result["cohen_kappa"] == pytest.approx(0.4)
    # Fleiss' κ uses pooled marginals: p = (0.55, 0.45) → Pₑ = 0.505, κ = (0.7 − 0.505)/0.495
    assert result["fleiss_kappa"] == pytest.approx((0.7 - 0.505) / 0.495)


def test_agreement_perfect_and_unusable_cases():
    rows = [
        {"case_id": c, "model_a": "x", "model_b": "y", "winner": w, "rater": r}
        for c, w in [("c1", "a"), ("c2", "b"), ("c3", "tie")]
        for r in ("r1", "r2", "r3")
    ]
    rows.append({"case_id": "c4", "model_a": "x", "model_b": "y", "winner": "a", "rater": "r1"})  # single rater
    result = inter_rater_agreement(pd.DataFrame(rows))
    assert result["n_items"] == 3 and result["n_raters"] == 3
    assert result["percent_agreement"] == 1.0 and result["fleiss_kappa"] == pytest.approx(1.0)
    assert result["cohen_kappa"] is None  # three raters
    lonely = inter_rater_agreement(pd.DataFrame(rows[-1:]))
    assert lonely["n_items"] == 0 and lonely["fleiss_kappa"] is None


def test_rank_agreement_known_values():
    a = {"m1": 1.0, "m2": 2.0, "m3": 3.0, "m4": 4.0, "m5": 5.0, "extra": 9.0}
    same = rank_agreement(a, {"m1": 10, "m2": 20, "m3": 30, "m4": 40, "m5": 50})
    assert same["n"] == 5 and same["spearman_rho"] == pytest.approx(1.0) and same["kendall_tau"] == pytest.approx(1.0)
    reversed_ = rank_agreement(a, {"m1": 5, "m2": 4, "m3": 3, "m4": 2, "m5": 1})
    assert reversed_["spearman_rho"] == pytest.approx(-1.0) and reversed_["kendall_tau"] == pytest.approx(-1.0)
    one_swap = rank_agreement(a, {"m1": 2, "m2": 1, "m3": 3, "m4": 4, "m5": 5})
    assert one_swap["spearman_rho"] == pytest.approx(1 - 6 * 2 / (5 * 24))  # Σd² = 2, n = 5 → 0.9
    assert one_swap["kendall_tau"] == pytest.approx(0.8)  # 9 concordant, 1 discordant of 10 pairs
    assert 0 < one_swap["spearman_p"] < 1 and 0 < one_swap["kendall_p"] < 1
    assert rank_agreement({"m1": 1, "m2": 2}, {"m1": 1, "m2": 2})["spearman_rho"] is None  # too few


# ---- GenAI-Arena's published editing leaderboard (real votes, tests/data/imagenhub) -------------------------

_ARENA = Path(__file__).parents[1] / "data" / "imagenhub"


@pytest.mark.parametrize(("anony", "column"), [(True, "Arena Elo rating (anony)"), (False, "Arena Elo rating (full)")])
def test_both_bad_as_tie_reproduces_the_genai_arena_editing_leaderboard(anony, column):
    from evalkit.scoring.arena import GENAI_ARENA_L2

    votes = pd.read_json(_ARENA / "genai_arena_editing_votes.jsonl", lines=True)
    votes = votes[votes["anony"]] if anony else votes
    board = pd.read_csv(_ARENA / "genai_arena_editing_leaderboard.csv")
    published = board.set_index("key")[column].sort_values(ascending=False)
    assert len(votes) == (64 if anony else 83)

    # the arena convention with evalkit's default prior: the published order, Elo within ~50 points
    tie = bradley_terry(votes, both_bad="tie", n_bootstrap=0)
    assert list(tie["model"]) == list(published.index)
    assert np.abs(tie.set_index("model")["elo"].reindex(published.index) - published).max() < 60
    assert tie["both_bad"].sum() > 0  # both_bad votes are still counted as such

    # with GenAI-Arena's own penalty (sklearn C=1 on doubled battles) the ratings themselves reproduce
    exact = bradley_terry(votes, both_bad="tie", l2=GENAI_ARENA_L2, n_bootstrap=0).set_index("model")["elo"]
    assert np.abs(exact.reindex(published.index) - published).max() < 0.05

    # dropping both_bad votes (evalkit's default) gives a different order: the option matters on this data
    dropped = bradley_terry(votes, both_bad="drop", n_bootstrap=0)
    assert list(dropped["model"]) != list(published.index)


def test_both_bad_option_is_checked():
    votes = pd.DataFrame({"model_a": ["x"], "model_b": ["y"], "winner": ["a"]})
    with pytest.raises(InvalidInputError, match="both_bad"):
        bradley_terry(votes, both_bad="half")
    with pytest.raises(InvalidInputError, match="l2"):
        bradley_terry(votes, l2=0)
