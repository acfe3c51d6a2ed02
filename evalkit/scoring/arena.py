"""Arena statistics: Bradley–Terry strengths from pairwise votes, pair scheduling, agreement.

Pairwise preference is the protocol the arenas use (GenAI-Arena, LMArena, Artificial Analysis) and
the one that tracks human rankings best when a VLM is the judge (GenArena: Spearman 0.86 pairwise vs
0.36 pointwise). Inputs here are plain DataFrames of votes; outputs are DataFrames and dicts.

Votes have columns ``model_a``, ``model_b``, ``winner`` in {``a``, ``b``, ``tie``, ``both_bad``}
(the FastChat/GenAI-Arena spellings ``model_a``, ``model_b``, ``tie (bothbad)`` are accepted too),
optionally ``case_id`` and ``rater``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import optimize, stats
from scipy.special import expit, log_expit

from evalkit.errors import InvalidInputError

#: ridge penalty λ/2·Σθ² on the log-strengths (a N(0, 10²) prior): keeps a model with only wins finite.
L2_PRIOR = 0.01
#: GenAI-Arena's fit (sklearn LogisticRegression, C=1, features ±ln 10, every battle counted twice) is this
#: model with penalty ½‖c‖² on c = θ/ln 10 over doubled data, i.e. λ = 1/(2·ln² 10) on θ with each vote once.
GENAI_ARENA_L2 = 1.0 / (2.0 * math.log(10.0) ** 2)
ELO_SCALE = 400.0 / math.log(10.0)
ELO_BASE = 1000.0
WINNERS = ("a", "b", "tie", "both_bad")
_WINNER_ALIASES = {
    "a": "a",
    "model_a": "a",
    "b": "b",
    "model_b": "b",
    "tie": "tie",
    "both_bad": "both_bad",
    "tie (bothbad)": "both_bad",
    "bothbad": "both_bad",
}
RESULT_COLUMNS = [
    "model", "strength", "elo", "ci_low", "ci_high", "elo_ci_low", "elo_ci_high", "rank",
    "n_comparisons", "wins", "losses", "ties", "both_bad",
]  # fmt: skip


# -- votes -------------------------------------------------------------------------------------------


def normalise_votes(votes: pd.DataFrame, *, need: Sequence[str] = ()) -> pd.DataFrame:
    """A copy of ``votes`` with ``winner`` in :data:`WINNERS`; raises a clear error for bad rows."""
    if not isinstance(votes, pd.DataFrame):
        raise InvalidInputError(f"votes must be a pandas DataFrame, got {type(votes).__name__}")
    required = ["model_a", "model_b", "winner", *need]
    missing = [c for c in required if c not in votes.columns]
    if missing:
        raise InvalidInputError(
            f"votes are missing column(s) {', '.join(missing)} (have: {', '.join(map(str, votes.columns))})",
            hint="each vote needs model_a, model_b and winner in {a, b, tie, both_bad}",
        )
    df = votes.copy()
    if df[required].isna().any().any():
        bad = df[df[required].isna().any(axis=1)].index[:5].tolist()
        raise InvalidInputError(f"votes have empty values in {', '.join(required)} (rows {bad})")
    df["model_a"] = df["model_a"].astype(str)
    df["model_b"] = df["model_b"].astype(str)
    winner = df["winner"].astype(str).str.strip().str.lower().map(_WINNER_ALIASES)
    if winner.isna().any():
        bad = sorted(set(df.loc[winner.isna(), "winner"].astype(str)))[:5]
        raise InvalidInputError(f"unknown winner value(s) {bad}", hint=f"use one of {', '.join(WINNERS)}")
    df["winner"] = winner
    same = df["model_a"] == df["model_b"]
    if same.any():
        raise InvalidInputError(
            f"{int(same.sum())} vote(s) compare a model with itself (e.g. {df.loc[same, 'model_a'].iloc[0]!r})",
            hint="drop those rows; a model cannot be ranked against itself",
        )
    return df


# -- Bradley–Terry -----------------------------------------------------------------------------------


def bradley_terry(
    comparisons: pd.DataFrame,
    *,
    n_bootstrap: int = 200,
    seed: int = 0,
    ci: float = 0.95,
    both_bad: str = "drop",
    l2: float = L2_PRIOR,
) -> pd.DataFrame:
    """Bradley–Terry strengths with bootstrap intervals, one row per model, best first.

    Model: P(i beats j) = σ(θᵢ − θⱼ). **Ties** count as half a win for each side — the treatment of
    GenAI-Arena/FastChat's ``compute_mle_elo`` (a tie adds one to each side while a win adds two).
    The alternative, Davidson's tie parameter, changes strengths little when ties are rare and
    needs an extra parameter per dataset; half-wins keep the numbers comparable with the arenas.
    **both_bad** votes say nothing about which model is better, so they are left out of the fit and
    only counted (column ``both_bad``; FastChat counts ``tie (bothbad)`` as a tie instead); a model
    seen only in both_bad votes has no strength (NaN). ``both_bad="tie"`` follows the arena convention
    instead: a both_bad vote is fitted as a tie (half a win each) and still counted in ``both_bad``.

    ``l2`` is the ridge penalty (default :data:`L2_PRIOR`); :data:`GENAI_ARENA_L2` reproduces GenAI-Arena's
    ``compute_elo_mle_with_tie`` (sklearn ``LogisticRegression(C=1)`` on every battle counted twice).

    The fit is the maximum of the log-likelihood minus ``L2_PRIOR``/2·Σθ² (a N(0, 10²) prior per
    log-strength, negligible next to tens of votes), which keeps a model with only wins or only
    losses finite; strengths are then mean-centred. ``elo`` = 1000 + θ·400/ln 10, so 400 Elo points
    are a factor 10 in odds. If the comparison graph is disconnected, strengths of models in
    different components are not comparable (only the prior ties them together).

    Intervals (``ci_low``/``ci_high`` on θ, ``elo_ci_*`` on Elo) are bootstrap percentiles of the
    centred strengths over ``n_bootstrap`` resamples: of cases (all votes of a case together) when a
    ``case_id`` column is present, since votes on one case are correlated, else of votes.
    Deterministic for a given ``seed``; ``n_bootstrap=0`` gives NaN intervals.
    """
    if not 0.0 < ci < 1.0:
        raise InvalidInputError(f"ci must be between 0 and 1, got {ci}")
    if n_bootstrap < 0:
        raise InvalidInputError(f"n_bootstrap must be ≥ 0, got {n_bootstrap}")
    if both_bad not in ("drop", "tie"):
        raise InvalidInputError(f"both_bad must be 'drop' or 'tie', got {both_bad!r}")
    if not (isinstance(l2, (int, float)) and l2 > 0 and math.isfinite(l2)):
        raise InvalidInputError(f"l2 must be a number > 0, got {l2!r}")
    df = normalise_votes(comparisons)
    models = sorted(set(df["model_a"]) | set(df["model_b"]))
    counts = _vote_counts(df, models)
    if both_bad == "tie":
        decisive = df.assign(winner=df["winner"].replace("both_bad", "tie"))
    else:
        decisive = df[df["winner"] != "both_bad"]
    fitted = sorted(set(decisive["model_a"]) | set(decisive["model_b"]))

    result = counts.assign(strength=np.nan, ci_low=np.nan, ci_high=np.nan)
    if fitted:
        index = {m: i for i, m in enumerate(fitted)}
        ia = decisive["model_a"].map(index).to_numpy()
        ib = decisive["model_b"].map(index).to_numpy()
        score_a = decisive["winner"].map({"a": 1.0, "b": 0.0, "tie": 0.5}).to_numpy()
        k = len(fitted)
        theta = _fit(_win_matrix(ia, ib, score_a, np.ones(len(ia)), k), l2=l2)
        result.loc[fitted, "strength"] = theta
        if n_bootstrap > 0:
            boot = _bootstrap(ia, ib, score_a, decisive.get("case_id"), k, n_bootstrap, seed, theta, l2)
            alpha = (1.0 - ci) / 2.0
            result.loc[fitted, "ci_low"] = np.quantile(boot, alpha, axis=0)
            result.loc[fitted, "ci_high"] = np.quantile(boot, 1.0 - alpha, axis=0)

    result["elo"] = ELO_BASE + ELO_SCALE * result["strength"]
    result["elo_ci_low"] = ELO_BASE + ELO_SCALE * result["ci_low"]
    result["elo_ci_high"] = ELO_BASE + ELO_SCALE * result["ci_high"]
    result["rank"] = result["strength"].rank(ascending=False, method="min").astype("Int64")
    result = result.reset_index(names="model")
    result = result.sort_values(["strength", "model"], ascending=[False, True], na_position="last")
    result = result[RESULT_COLUMNS].reset_index(drop=True)
    result.attrs.update(
        method="bradley_terry", ties="half a win each", l2_prior=l2, both_bad=both_bad, ci=ci,
        n_bootstrap=n_bootstrap, resampled="cases" if "case_id" in df.columns else "votes", seed=seed,
    )  # fmt: skip
    return result


def _vote_counts(df: pd.DataFrame, models: list[str]) -> pd.DataFrame:
    """wins / losses / ties / both_bad / n_comparisons (excluding both_bad) per model."""
    long = pd.concat(
        [
            pd.DataFrame({"model": df["model_a"], "outcome": df["winner"].map(_OUTCOME_FOR_A)}),
            pd.DataFrame({"model": df["model_b"], "outcome": df["winner"].map(_OUTCOME_FOR_B)}),
        ]
    )
    table = pd.crosstab(long["model"], long["outcome"]).reindex(
        index=models, columns=["wins", "losses", "ties", "both_bad"], fill_value=0
    )
    table = table.astype(int)
    table["n_comparisons"] = table["wins"] + table["losses"] + table["ties"]
    table.index.name = None
    table.columns.name = None
    return table


_OUTCOME_FOR_A = {"a": "wins", "b": "losses", "tie": "ties", "both_bad": "both_bad"}
_OUTCOME_FOR_B = {"a": "losses", "b": "wins", "tie": "ties", "both_bad": "both_bad"}


def _win_matrix(ia: np.ndarray, ib: np.ndarray, score_a: np.ndarray, weight: np.ndarray, k: int) -> np.ndarray:
    """W[i, j] = (weighted, fractional) wins of i over j."""
    w = np.bincount(ia * k + ib, weights=weight * score_a, minlength=k * k)
    w += np.bincount(ib * k + ia, weights=weight * (1.0 - score_a), minlength=k * k)
    return w.reshape(k, k)


def _fit(wins: np.ndarray, start: np.ndarray | None = None, l2: float = L2_PRIOR) -> np.ndarray:
    """Mean-centred MAP log-strengths for a win matrix (convex: Newton trust region converges fast)."""
    k = wins.shape[0]
    games = wins + wins.T

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        d = theta[:, None] - theta[None, :]
        nll = -float(np.sum(wins * log_expit(d))) + 0.5 * l2 * float(theta @ theta)
        grad = -(wins - games * expit(d)).sum(axis=1) + l2 * theta
        return nll, grad

    def hessian(theta: np.ndarray) -> np.ndarray:
        p = expit(theta[:, None] - theta[None, :])
        c = games * p * (1.0 - p)
        h = -c
        h[np.diag_indices(k)] = c.sum(axis=1) - np.diag(c) + l2
        return h

    x0 = np.zeros(k) if start is None else start
    res = optimize.minimize(objective, x0, jac=True, hess=hessian, method="trust-exact", options={"gtol": 1e-8})
    theta = res.x
    return theta - theta.mean()


def _bootstrap(
    ia: np.ndarray,
    ib: np.ndarray,
    score_a: np.ndarray,
    case_id: pd.Series | None,
    k: int,
    n_bootstrap: int,
    seed: int,
    start: np.ndarray,
    l2: float = L2_PRIOR,
) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = len(ia)
    if case_id is not None:
        codes, uniques = pd.factorize(case_id.astype(str))
        n_units = len(uniques)
    else:
        codes, n_units = np.arange(n), n
    out = np.empty((n_bootstrap, k))
    for b in range(n_bootstrap):
        unit_weight = np.bincount(rng.integers(0, n_units, n_units), minlength=n_units).astype(float)
        out[b] = _fit(_win_matrix(ia, ib, score_a, unit_weight[codes], k), start, l2)
    return out


# -- scheduling --------------------------------------------------------------------------------------


def schedule_pairs(
    models: Sequence[str],
    cases: Sequence[str],
    existing: pd.DataFrame | None,
    n: int,
    *,
    seed: int = 0,
) -> list[tuple[str, str, str]]:
    """The next ``n`` comparisons to ask for, as ``(case_id, model_a, model_b)``.

    Greedy, one comparison at a time: the pair with the lowest *priority* = (comparisons so far + 1)
    / (0.25 + informativeness) goes next; for that pair, the case it has been compared on least (then
    the least-used case overall). Informativeness (0–1) is uniform without data, so an empty history
    gives a round-robin over pairs (counts differ by at most 1). Once votes exist, a Bradley–Terry
    fit scores each pair by p(1 − p)·(width of both intervals): close pairs with uncertain strengths
    are up to 5× more valuable than settled ones, which still get their turn. Never pairs a model
    with itself; a/b order is random. Deterministic for a given ``seed``.
    """
    models = list(dict.fromkeys(map(str, models)))
    cases = list(dict.fromkeys(map(str, cases)))
    if len(models) < 2:
        raise InvalidInputError(f"need at least two models to compare, got {models}")
    if not cases:
        raise InvalidInputError("need at least one case to schedule comparisons on")
    if n < 0:
        raise InvalidInputError(f"n must be ≥ 0, got {n}")
    rng = np.random.default_rng(seed)
    k = len(models)
    pairs = [(i, j) for i in range(k) for j in range(i + 1, k)]
    pair_index = {p: x for x, p in enumerate(pairs)}
    model_index = {m: i for i, m in enumerate(models)}
    case_index = {c: i for i, c in enumerate(cases)}
    pair_count = np.zeros(len(pairs))
    case_pair = np.zeros((len(cases), len(pairs)))
    case_count = np.zeros(len(cases))
    info = np.ones(len(pairs))

    if existing is not None and len(existing):
        df = normalise_votes(existing)
        df = df[df["model_a"].isin(model_index) & df["model_b"].isin(model_index)]
        case_ids = df["case_id"].astype(str) if "case_id" in df.columns else pd.Series([None] * len(df))
        for model_a, model_b, case_id in zip(df["model_a"], df["model_b"], case_ids, strict=True):
            i, j = sorted((model_index[model_a], model_index[model_b]))
            p = pair_index[(i, j)]
            pair_count[p] += 1
            c = case_index.get(case_id) if case_id is not None else None
            if c is not None:
                case_pair[c, p] += 1
                case_count[c] += 1
        info = _pair_information(df, models, pairs)

    schedule: list[tuple[str, str, str]] = []
    for _ in range(n):
        priority = (pair_count + 1.0) / (0.25 + info)
        best = np.flatnonzero(np.isclose(priority, priority.min()))
        p = int(rng.choice(best))
        candidates = np.flatnonzero(case_pair[:, p] == case_pair[:, p].min())
        candidates = candidates[case_count[candidates] == case_count[candidates].min()]
        c = int(rng.choice(candidates))
        i, j = pairs[p]
        a, b = (models[i], models[j]) if rng.random() < 0.5 else (models[j], models[i])
        schedule.append((cases[c], a, b))
        pair_count[p] += 1
        case_pair[c, p] += 1
        case_count[c] += 1
    return schedule


def _pair_information(df: pd.DataFrame, models: list[str], pairs: list[tuple[int, int]]) -> np.ndarray:
    """0–1 per pair: p(1 − p) × (sum of CI widths), scaled by the largest; uniform without votes."""
    decisive = df[df["winner"] != "both_bad"]
    if decisive.empty:
        return np.ones(len(pairs))
    bt = bradley_terry(decisive, n_bootstrap=50, seed=0).set_index("model")
    strength = bt["strength"].reindex(models)
    width = (bt["ci_high"] - bt["ci_low"]).reindex(models)
    # a model without votes: average strength, the widest interval seen
    widest = float(width.max()) if width.notna().any() else 1.0
    strength = strength.fillna(0.0).to_numpy()
    width = width.fillna(widest * 2.0 if widest > 0 else 1.0).to_numpy()
    value = np.array([_closeness(strength[i] - strength[j]) * (width[i] + width[j]) for i, j in pairs])
    top = value.max()
    return value / top if top > 0 else np.ones(len(pairs))


def _closeness(diff: float) -> float:
    p = float(expit(diff))
    return p * (1.0 - p)


# -- agreement ---------------------------------------------------------------------------------------


def inter_rater_agreement(votes: pd.DataFrame) -> dict:
    """Agreement between raters who voted on the same item (case + unordered model pair).

    Votes are first put in one orientation per pair (a vote for ``a`` on (B, A) is a vote for the
    second model on (A, B)); a rater's latest vote on an item counts. Items with at least two raters
    are used. Returns ``n_items``, ``n_raters``, ``n_votes``, ``percent_agreement`` (share of rater
    pairs on an item that agree, averaged over items — for two raters, the share of items they agree
    on), ``fleiss_kappa`` (Fleiss 1971, allowing a different number of raters per item),
    ``cohen_kappa`` (only when exactly two raters rated every item, else None). Kappas are None when
    undefined (every vote in one category). 1 = perfect agreement, 0 = chance level.
    """
    df = normalise_votes(votes, need=("case_id", "rater"))
    swap = df["model_a"] > df["model_b"]
    first = df["model_a"].where(~swap, df["model_b"])
    second = df["model_b"].where(~swap, df["model_a"])
    flipped = df["winner"].map({"a": "b", "b": "a", "tie": "tie", "both_bad": "both_bad"})
    df = df.assign(first=first, second=second, winner=df["winner"].where(~swap, flipped))
    df["item"] = df["case_id"].astype(str) + "\x1f" + df["first"] + "\x1f" + df["second"]
    df = df.drop_duplicates(subset=["item", "rater"], keep="last")
    raters_per_item = df.groupby("item")["rater"].transform("nunique")
    df = df[raters_per_item >= 2]
    empty = {
        "n_items": 0, "n_raters": 0, "n_votes": 0, "percent_agreement": None,
        "fleiss_kappa": None, "cohen_kappa": None, "categories": list(WINNERS),
    }  # fmt: skip
    if df.empty:
        return empty
    table = pd.crosstab(df["item"], df["winner"]).reindex(columns=list(WINNERS), fill_value=0).to_numpy()
    kappa, agreement = fleiss_kappa(table)
    raters = sorted(df["rater"].astype(str).unique())
    cohen = None
    if len(raters) == 2:
        wide = df.pivot(index="item", columns="rater", values="winner").dropna()
        if len(wide) == table.shape[0]:
            cohen = cohen_kappa(wide.iloc[:, 0].to_numpy(), wide.iloc[:, 1].to_numpy())
    return {
        "n_items": int(table.shape[0]),
        "n_raters": len(raters),
        "n_votes": int(table.sum()),
        "percent_agreement": agreement,
        "fleiss_kappa": kappa,
        "cohen_kappa": cohen,
        "categories": list(WINNERS),
    }


def fleiss_kappa(counts: np.ndarray) -> tuple[float | None, float]:
    """(κ, mean observed agreement P̄) from an items × categories matrix of rating counts.

    Fleiss (1971) with per-item rater counts nᵢ (identical to the textbook formula when all nᵢ are
    equal): Pᵢ = (Σₖ nᵢₖ² − nᵢ) / (nᵢ(nᵢ − 1)), P̄ = mean Pᵢ, pₖ = Σᵢ nᵢₖ / Σᵢ nᵢ, Pₑ = Σₖ pₖ².
    """
    counts = np.asarray(counts, dtype=float)
    n_i = counts.sum(axis=1)
    if counts.ndim != 2 or (n_i < 2).any():
        raise InvalidInputError("fleiss_kappa needs an items × categories matrix with ≥ 2 ratings per item")
    p_i = ((counts**2).sum(axis=1) - n_i) / (n_i * (n_i - 1))
    p_bar = float(p_i.mean())
    p_k = counts.sum(axis=0) / counts.sum()
    p_e = float((p_k**2).sum())
    kappa = None if math.isclose(p_e, 1.0) else (p_bar - p_e) / (1.0 - p_e)
    return kappa, p_bar


def cohen_kappa(rater1: Sequence[str], rater2: Sequence[str]) -> float | None:
    """Cohen's κ for two raters' labels on the same items (None when chance agreement is 1)."""
    r1, r2 = np.asarray(rater1), np.asarray(rater2)
    if r1.shape != r2.shape or r1.size == 0:
        raise InvalidInputError("cohen_kappa needs two equally long, non-empty label sequences")
    labels = np.union1d(r1, r2)
    p_o = float(np.mean(r1 == r2))
    p_e = float(sum(np.mean(r1 == lab) * np.mean(r2 == lab) for lab in labels))
    return None if math.isclose(p_e, 1.0) else (p_o - p_e) / (1.0 - p_e)


def rank_agreement(a: Mapping[str, float], b: Mapping[str, float]) -> dict:
    """Spearman ρ and Kendall τ (with p-values, scipy.stats) between two scorings of the same models.

    Use it to check a judge against human votes, or one run against another. Only models present
    (and not NaN) in both are used; values are None when fewer than 3 models are shared or a side
    is constant.
    """
    common = sorted(m for m in set(a) & set(b) if _finite(a[m]) and _finite(b[m]))
    out: dict = {"n": len(common), "models": common, "spearman_rho": None, "spearman_p": None,
                 "kendall_tau": None, "kendall_p": None}  # fmt: skip
    if len(common) < 3:
        return out
    x = np.array([a[m] for m in common], dtype=float)
    y = np.array([b[m] for m in common], dtype=float)
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return out
    rho = stats.spearmanr(x, y)
    tau = stats.kendalltau(x, y)
    out.update(
        spearman_rho=float(rho.statistic), spearman_p=float(rho.pvalue),
        kendall_tau=float(tau.statistic), kendall_p=float(tau.pvalue),
    )  # fmt: skip
    return out


def _finite(v: object) -> bool:
    try:
        return math.isfinite(float(v))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
