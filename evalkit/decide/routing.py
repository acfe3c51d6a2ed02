"""Routing by tier: which model serves an edit for a price tier, and what to try when it fails.

A run's decision (``tier_defaults.json``, schema ``evalkit.tier_defaults/1``, written by
:func:`evalkit.decide.tiers.write_tier_defaults`) becomes a *route* per tier × operation: the tier's
default first, then its alternatives that meet the tier's constraints, in the file's order (best
quality first). :func:`route_call` drives the attempts over any async ``attempt(model_id)`` callable.

Loading a tier file (:func:`load_tier_defaults`)
------------------------------------------------
* ``tiers``: a path, an already parsed dict, or None → ``$EVALKIT_TIER_DEFAULTS``, else
  ``./tier_defaults.json``.
* An unknown ``schema`` is **refused** (:class:`TierDefaultsError`).
* A file from a **simulated** run (``"simulated": true``, local-server outputs) is **refused** unless
  ``allow_simulated=True``; when allowed it is used with a :class:`TierDefaultsWarning` and every
  result says so. (Tests and demos write simulated files: they pass ``allow_simulated=True``.)
* A file **older** than ``max_age_days`` (default ``$EVALKIT_TIER_DEFAULTS_MAX_AGE_DAYS``, else 30;
  ``math.inf`` turns the check off) is **used with a warning**: stale defaults still beat no edits, but
  a scheduled run has stopped refreshing them.

Which models a route may use
----------------------------
* ``status == "ok"``: the default, then each alternative whose rationale does not say ``excluded``
  and whose evidence was enough (``eligible``), re-checked against the tier's ``max_cost_usd`` /
  ``max_latency_p95_ms`` / ``allowed_providers`` / ``allowed_vendors``. Alternatives that met the
  constraints but lacked evidence are used only with ``allow_provisional=True``.
* ``status == "insufficient_evidence"``: the ``provisional`` model only with ``allow_provisional=True``;
  otherwise :class:`TierDefaultsError` naming the tier, the operation and what to run.
* ``status == "no_eligible_model"``: :class:`TierDefaultsError` with the file's reason.

When an attempt fails (:func:`failure_action`)
----------------------------------------------
The next candidate is tried when the failure proves nothing was charged, or proves this model cannot
serve this request: rate limit (after the provider's own retries), server error before acceptance or a
failed task (not billed), network error before sending, bad request / this model's limits, missing key
for its provider, a request priced over the tier's maximum, and a **moderation** refusal. Every
candidate is within the tier's constraints, so a refusal is never retried on a model of another (more
expensive, differently moderated) tier.

A submit of **unknown outcome** (the provider may have accepted and billed it: a read timeout after
sending, a 5xx after sending, a job that stopped being polled) **stops** the route and raises
:class:`UnknownOutcomeError` naming the prediction id — unless ``continue_after_unknown=True``, in
which case the next model is tried and the fallback record says ``charge="unknown"`` (the result's
notes say a second charge may have happened). Budget, cancellation and bad user input stop at once.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Generic, TypeVar

from evalkit.errors import Category, EvalkitError, InvalidInputError, ProviderError

#: the only schema this module reads (the same constant as evalkit.decide.tiers.SCHEMA; a test checks it)
TIER_DEFAULTS_SCHEMA = "evalkit.tier_defaults/1"
DEFAULT_MAX_AGE_DAYS = 30.0
ENV_PATH = "EVALKIT_TIER_DEFAULTS"
ENV_MAX_AGE = "EVALKIT_TIER_DEFAULTS_MAX_AGE_DAYS"

#: failure categories after which the next candidate is tried (when the charge is known)
FALLBACK_CATEGORIES = frozenset(
    {
        Category.RATE_LIMIT,
        Category.SERVER,
        Category.NETWORK,
        Category.BAD_REQUEST,
        Category.MODERATION,
        Category.AUTH,
        Category.TASK_FAILED,
        Category.BAD_OUTPUT,
        Category.TIMEOUT,
        # raised while preparing the request for one model: that model's limits (the user's image itself is
        # decoded before routing, so a broken image never reaches this point)
        Category.INVALID_INPUT,
    }
)

T = TypeVar("T")


class TierDefaultsError(InvalidInputError):
    """A tier file that cannot be used (missing, unknown schema, simulated, no route for the request)."""


class TierDefaultsWarning(UserWarning):
    """A tier file that is used but should be looked at (old, or from a simulated run when allowed)."""


class UnknownOutcomeError(ProviderError):
    """An attempt whose submit may have been accepted and billed; the route stopped instead of paying again."""


class NoModelServedError(ProviderError):
    """Every candidate of the route failed; ``fallbacks`` lists each attempt and why it failed."""

    def __init__(self, message: str, *, fallbacks: Sequence[Fallback], **kw: Any):
        super().__init__(message, **kw)
        self.fallbacks = tuple(fallbacks)


# ---- the tier file ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TierDefaults:
    """A loaded, checked ``tier_defaults.json``."""

    data: Mapping[str, Any] = field(repr=False)
    source: str
    run_id: str | None
    generated_at: str | None
    simulated: bool
    age_days: float | None
    warnings: tuple[str, ...] = ()

    @property
    def tiers(self) -> dict[str, Any]:
        return dict(self.data.get("tiers") or {})

    def tier_names(self) -> list[str]:
        return list(self.tiers)

    def operations(self, tier: str) -> list[str]:
        return list((self.tiers.get(tier) or {}).get("operations") or {})


def _default_path() -> Path:
    env = os.environ.get(ENV_PATH, "").strip()
    return Path(env).expanduser() if env else Path("tier_defaults.json")


def _max_age(max_age_days: float | None) -> float:
    if max_age_days is None:
        raw = os.environ.get(ENV_MAX_AGE, "").strip()
        if not raw:
            return DEFAULT_MAX_AGE_DAYS
        try:
            max_age_days = float(raw)
        except ValueError:
            raise InvalidInputError(f"{ENV_MAX_AGE}={raw!r} is not a number of days") from None
    if not max_age_days > 0:
        raise InvalidInputError(f"max_age_days must be > 0 (math.inf turns the check off), got {max_age_days!r}")
    return float(max_age_days)


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        t = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def read_tier_file(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON of a tier file, or TierDefaultsError saying what is wrong with it."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise TierDefaultsError(
            f"no tier defaults file at {p}",
            hint="write one with `evalkit tiers RUN_ID --out tier_defaults.json` (or `evalkit report RUN_ID`), "
            f"then pass tiers=PATH or set {ENV_PATH}",
        )
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TierDefaultsError(
            f"tier defaults file {p} is not readable JSON ({type(exc).__name__}: {exc})",
            hint="re-write it with `evalkit tiers RUN_ID --out …`",
        ) from None
    if not isinstance(data, dict):
        raise TierDefaultsError(f"tier defaults file {p} is not a JSON object")
    return data


def check_tier_defaults(
    data: Mapping[str, Any],
    *,
    source: str = "(dict)",
    allow_simulated: bool = False,
    max_age_days: float | None = None,
    now: datetime | None = None,
    warn: bool = True,
) -> TierDefaults:
    """Check a parsed tier file (schema, shape, simulated flag, age) — see the module docstring."""
    schema = data.get("schema")
    if schema != TIER_DEFAULTS_SCHEMA:
        raise TierDefaultsError(
            f"tier defaults {source} have schema {schema!r}; this evalkit reads only {TIER_DEFAULTS_SCHEMA!r}",
            hint="re-write the file with this evalkit: `evalkit tiers RUN_ID --out …`",
        )
    tiers = data.get("tiers")
    if not isinstance(tiers, dict) or not tiers or not all(isinstance(t, dict) for t in tiers.values()):
        raise TierDefaultsError(f"tier defaults {source} have no tiers (expected an object under 'tiers')")
    notes: list[str] = []
    simulated = bool(data.get("simulated"))
    run_id = data.get("run_id")
    if simulated:
        if not allow_simulated:
            raise TierDefaultsError(
                f"tier defaults {source} come from a SIMULATED run ({run_id}): local-server outputs, not model outputs",
                hint="use a file from a run against the real APIs, or pass allow_simulated=True "
                "(`evalkit serve --allow-simulated`) for tests and demos",
            )
        notes.append(f"tier defaults from a SIMULATED run ({run_id}): not real model outputs")
    limit = _max_age(max_age_days)
    generated = _parse_time(data.get("generated_at"))
    age: float | None = None
    if generated is None:
        notes.append(f"tier defaults {source} carry no readable generated_at; their age is unknown")
    else:
        age = ((now or datetime.now(UTC)) - generated).total_seconds() / 86400
        if age > limit:
            notes.append(
                f"tier defaults {source} are {age:.1f} days old (> {limit:g}; run {run_id}): "
                "is the scheduled run still writing them?"
            )
    if warn:
        for n in notes:
            warnings.warn(n, TierDefaultsWarning, stacklevel=3)
    return TierDefaults(
        data=data,
        source=source,
        run_id=run_id if isinstance(run_id, str) else None,
        generated_at=data.get("generated_at") if isinstance(data.get("generated_at"), str) else None,
        simulated=simulated,
        age_days=age,
        warnings=tuple(notes),
    )


def load_tier_defaults(
    tiers: str | os.PathLike | Mapping[str, Any] | TierDefaults | None = None,
    *,
    allow_simulated: bool = False,
    max_age_days: float | None = None,
    now: datetime | None = None,
    warn: bool = True,
) -> TierDefaults:
    """Load and check ``tier_defaults.json`` (path, dict, or the default location)."""
    if isinstance(tiers, TierDefaults):
        if tiers.simulated and not allow_simulated:
            return check_tier_defaults(tiers.data, source=tiers.source, allow_simulated=False)
        return tiers
    if isinstance(tiers, Mapping):
        return check_tier_defaults(
            tiers, allow_simulated=allow_simulated, max_age_days=max_age_days, now=now, warn=warn
        )
    path = Path(tiers).expanduser() if tiers is not None else _default_path()
    return check_tier_defaults(
        read_tier_file(path),
        source=str(path),
        allow_simulated=allow_simulated,
        max_age_days=max_age_days,
        now=now,
        warn=warn,
    )


# ---- routes -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    model: str
    #: default | provisional | alternative
    role: str
    cost_usd: float | None = None
    latency_p95_ms: float | None = None
    quality: float | None = None
    #: True when the run had enough evidence for this model (False: provisional use)
    evidence: bool = True


@dataclass(frozen=True)
class Route:
    tier: str
    operation: str
    status: str
    candidates: tuple[Candidate, ...]
    #: alternatives not used, with the reason (excluded by the run, constraint, evidence)
    skipped: tuple[tuple[str, str], ...]
    constraints: Mapping[str, Any]
    run_id: str | None
    simulated: bool
    warnings: tuple[str, ...] = ()

    @property
    def models(self) -> list[str]:
        return [c.model for c in self.candidates]


def _constraint_problem(alt: Mapping[str, Any], constraints: Mapping[str, Any], spec: Any | None) -> str | None:
    """Why an alternative breaks the tier's constraints (re-checked here, not only trusted), or None."""
    max_cost = constraints.get("max_cost_usd")
    cost = alt.get("cost_usd")
    if max_cost is not None:
        if cost is None:
            return f"price unknown (tier max ${max_cost:g})"
        if cost > max_cost + 1e-12:
            return f"costs ${cost:g} > tier max ${max_cost:g}"
    max_p95 = constraints.get("max_latency_p95_ms")
    p95 = alt.get("latency_p95_ms")
    if max_p95 is not None and p95 is not None and p95 > max_p95:
        return f"p95 latency {p95:.0f} ms > tier max {max_p95:.0f} ms"
    if spec is not None:
        providers = constraints.get("allowed_providers")
        if providers is not None and spec.provider not in providers:
            return f"provider {spec.provider} not allowed in this tier"
        vendors = constraints.get("allowed_vendors")
        if vendors is not None and spec.vendor not in vendors:
            return f"vendor {spec.vendor} not allowed in this tier"
    return None


def plan_route(
    defaults: TierDefaults,
    tier: str,
    operation: str,
    *,
    allow_provisional: bool = False,
    catalog: Any | None = None,
) -> Route:
    """The models to try, in order, for ``tier`` × ``operation`` (rules in the module docstring)."""
    tiers = defaults.tiers
    if tier not in tiers:
        raise TierDefaultsError(
            f"no tier {tier!r} in the tier defaults {defaults.source}",
            hint=f"tiers there: {', '.join(tiers) or 'none'}",
        )
    entry = tiers[tier]
    ops = entry.get("operations") or {}
    if operation not in ops:
        raise TierDefaultsError(
            f"tier {tier!r} has no decision for operation {operation!r} (run {defaults.run_id} had no such cases)",
            hint=f"operations decided: {', '.join(ops) or 'none'}; run a suite with {operation} cases "
            "(`evalkit run --suite …`, `evalkit score`, `evalkit tiers RUN_ID`), or pass model=…",
        )
    d = ops[operation]
    constraints = entry.get("constraints") or {}
    status = d.get("status")
    cands: list[Candidate] = []
    if status == "ok" and d.get("default"):
        cands.append(Candidate(d["default"], "default", d.get("cost_usd"), d.get("latency_p95_ms"), d.get("quality")))
    elif status == "insufficient_evidence":
        prov = d.get("provisional")
        if not allow_provisional or not prov:
            what = f"its provisional model is {prov}" if prov else "no model has a scored quality yet"
            raise TierDefaultsError(
                f"tier {tier!r}, operation {operation!r}: insufficient evidence in run {defaults.run_id} ({what}). "
                f"{d.get('rationale') or ''}".strip(),
                hint=f"run more {operation} cases and score them (`evalkit run --suite … --repeats N`, "
                "`evalkit score RUN_ID --judge`, `evalkit tiers RUN_ID`), "
                + ("or pass allow_provisional=True to use the provisional model" if prov else "or pass model=…"),
            )
        cands.append(
            Candidate(prov, "provisional", d.get("cost_usd"), d.get("latency_p95_ms"), d.get("quality"), False)
        )
    else:
        raise TierDefaultsError(
            f"tier {tier!r}, operation {operation!r}: no model can be the default (status {status!r}): "
            f"{d.get('rationale') or 'no reason given'}",
            hint="relax the tier's constraints (tiers.toml) and re-decide, or pass model=…",
        )
    skipped: list[tuple[str, str]] = []
    for alt in d.get("alternatives") or []:
        model = alt.get("model")
        if not isinstance(model, str) or any(c.model == model for c in cands):
            continue
        why = str(alt.get("rationale") or "")
        eligibility = alternative_eligibility(alt)
        short = eligibility == "insufficient_evidence"
        if eligibility not in ("eligible", "insufficient_evidence"):
            skipped.append((model, why or "excluded by the run's decision"))
            continue
        if short and not allow_provisional:
            skipped.append((model, f"{why} (allow_provisional=True would use it)"))
            continue
        spec = catalog.get(model) if catalog is not None and model in catalog else None
        problem = _constraint_problem(alt, constraints, spec)
        if problem:
            skipped.append((model, problem))
            continue
        cands.append(
            Candidate(
                model, "alternative", alt.get("cost_usd"), alt.get("latency_p95_ms"), alt.get("quality"), not short
            )
        )
    return Route(
        tier=tier,
        operation=operation,
        status=str(status),
        candidates=tuple(cands),
        skipped=tuple(skipped),
        constraints=dict(constraints),
        run_id=defaults.run_id,
        simulated=defaults.simulated,
        warnings=defaults.warnings,
    )


def price_problem(route: Route, price_usd: float | None) -> str | None:
    """Why this request's price breaks the tier's ``max_cost_usd`` (None: fine or no limit)."""
    limit = route.constraints.get("max_cost_usd")
    if limit is None or price_usd is None:
        return None
    if price_usd > limit + 1e-12:
        return f"this request costs ${price_usd:g} with this model > tier {route.tier} max ${limit:g}"
    return None


# ---- attempts and fallbacks -------------------------------------------------------------------------


@dataclass(frozen=True)
class Fallback:
    """One attempt that did not serve the edit, and why the route moved on (or stopped)."""

    model: str
    category: str
    reason: str
    #: none (proven: nothing billed) | known (billed, amount in cost_usd) | unknown (may have been billed)
    charge: str
    cost_usd: float | None = None
    prediction_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class AttemptFailed(Exception):
    """Raised by an ``attempt(model)`` callable: this model did not serve the edit."""

    def __init__(
        self,
        category: Category | str,
        message: str,
        *,
        charge: str = "none",
        cost_usd: float | None = 0.0,
        prediction_id: str | None = None,
        error: EvalkitError | None = None,
    ):
        super().__init__(message)
        self.category = Category(category)
        self.message = message
        self.charge = charge
        self.cost_usd = cost_usd
        self.prediction_id = prediction_id
        self.error = error


def failure_action(category: Category | str, charge: str, *, continue_after_unknown: bool = False) -> str:
    """``"fallback"`` or ``"stop"`` for a failed attempt (pure; rules in the module docstring)."""
    cat = Category(category)
    if cat in (Category.BUDGET, Category.CANCELLED):
        return "stop"
    if charge == "unknown" or cat == Category.UNKNOWN_OUTCOME:
        return "fallback" if continue_after_unknown else "stop"
    return "fallback" if cat in FALLBACK_CATEGORIES else "stop"


@dataclass
class Routed(Generic[T]):
    value: T
    model: str
    candidate: Candidate
    fallbacks: list[Fallback]
    notes: list[str]


async def route_call(
    route: Route,
    attempt: Callable[[Candidate], Awaitable[T]],
    *,
    continue_after_unknown: bool = False,
    on_fallback: Callable[[Fallback], None] | None = None,
) -> Routed[T]:
    """Try ``route``'s candidates in order with ``attempt`` until one serves; see the module docstring.

    ``attempt(candidate)`` returns the value on success and raises :class:`AttemptFailed` when the model
    did not serve. Input errors of a specific model (its limits) count as "cannot serve"; if *every*
    candidate fails the same way the last error is raised as :class:`NoModelServedError`."""
    fallbacks: list[Fallback] = []
    notes: list[str] = []
    last: AttemptFailed | None = None
    for cand in route.candidates:
        try:
            value = await attempt(cand)
        except AttemptFailed as failed:
            last = failed
            fb = Fallback(
                cand.model, failed.category.value, failed.message, failed.charge, failed.cost_usd, failed.prediction_id
            )
            action = failure_action(failed.category, failed.charge, continue_after_unknown=continue_after_unknown)
            fallbacks.append(fb)
            if on_fallback is not None:
                on_fallback(fb)
            if action == "stop":
                if failed.charge == "unknown" or failed.category == Category.UNKNOWN_OUTCOME:
                    raise UnknownOutcomeError(
                        f"{cand.model} (tier {route.tier}): {failed.message}; the route stopped so that no other "
                        "model is paid for while this submit may have been accepted",
                        category=Category.UNKNOWN_OUTCOME,
                        prediction_id=failed.prediction_id,
                        hint="check the provider's dashboard for this prediction; pass continue_after_unknown=True "
                        "to fall back anyway (the result then says a second charge may have happened)",
                    ) from None
                if failed.error is not None:
                    raise failed.error from None
                raise ProviderError(
                    failed.message, category=failed.category, prediction_id=failed.prediction_id
                ) from None
            if failed.charge == "unknown":
                notes.append(
                    f"{cand.model}'s submit had an unknown outcome (prediction {failed.prediction_id or '?'}); "
                    "it may have been billed as well as the model that served"
                )
            continue
        return Routed(value, cand.model, cand, fallbacks, notes)
    tried = "; ".join(f"{f.model}: {f.category} ({f.reason})" for f in fallbacks) or "no candidate"
    raise NoModelServedError(
        f"no model of tier {route.tier!r} could serve this {route.operation} edit — {tried}",
        category=last.category if last is not None else Category.INVALID_INPUT,
        prediction_id=last.prediction_id if last is not None else None,
        fallbacks=fallbacks,
        hint="see each model's reason; skipped alternatives: "
        + (", ".join(f"{m} ({why[:60]})" for m, why in route.skipped) or "none"),
    )


def alternative_eligibility(alt: Mapping[str, Any]) -> str:
    """``eligible`` | ``insufficient_evidence`` | ``excluded`` for one alternative of a tier file. Newer
    evalkits write ``eligibility``; older files say it only in the rationale's first words."""
    why = str(alt.get("rationale") or "")
    return str(
        alt.get("eligibility")
        or (
            "excluded"
            if why.startswith("excluded")
            else "insufficient_evidence"
            if why.startswith("meets the constraints but")
            else "eligible"
        )
    )


__all__ = [
    "alternative_eligibility",
    "AttemptFailed",
    "Candidate",
    "Fallback",
    "NoModelServedError",
    "Route",
    "Routed",
    "TIER_DEFAULTS_SCHEMA",
    "TierDefaults",
    "TierDefaultsError",
    "TierDefaultsWarning",
    "UnknownOutcomeError",
    "check_tier_defaults",
    "failure_action",
    "load_tier_defaults",
    "plan_route",
    "price_problem",
    "read_tier_file",
    "route_call",
]
