"""Plan a run: cases × models × repeats, with not-applicable pairs recorded and a cost estimate.

Planning is pure (no network): each pair is resolved through its provider's ``prepare()``, which
checks the case against the model's catalogue entry and prices it. A pair that cannot run (the model
lacks the operation, the case has too many images, a needed parameter is missing…) becomes a
``not_applicable`` call with the reason, so the report can say why a cell is empty.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from evalkit.catalog import ModelSpec
from evalkit.errors import EvalkitError
from evalkit.images import InputImage
from evalkit.providers.base import (
    EditRequest,
    ImageEditOptions,
    ImageEditProvider,
    PreparedRequest,
    QuotesPrices,
)
from evalkit.providers.prepare import resize_mask
from evalkit.store import CallStatus

#: seed of repeat r is BASE_SEED + r: the same for every model, so repeats are comparable across models.
BASE_SEED = 1000


@dataclass(slots=True)
class PlannedCall:
    """One (case, model, repeat) of a run. ``request`` and ``prepared`` can be dropped (:meth:`release`)
    once the call's row is written and rebuilt when it runs (:meth:`build`; planning is pure and
    deterministic), so a run holds a few hundred bytes per waiting call, not its whole request."""

    #: ``run/case/model/repeat``: the call's primary key in the workspace
    call_id: str
    #: the run it belongs to
    run_id: str
    #: the suite case it edits
    case_id: str
    #: the catalogue entry of the model it calls
    model: ModelSpec
    #: which repeat of the (case, model) pair, from 0
    repeat: int
    #: the case's operation (general_edit, inpaint, …)
    operation: str
    #: the case's category, for per-category tables (None when the suite gives none)
    category: str | None
    #: the seed sent (``base_seed + repeat``), or None when the model takes no seed
    seed: int | None
    #: the provider-neutral request (None once released, or when not applicable)
    request: EditRequest | None = field(default=None, repr=False)
    #: the provider's prepared body, price, reservation and fingerprint (None once released / not applicable)
    prepared: PreparedRequest | None = field(default=None, repr=False)
    #: ``planned``, or ``not_applicable`` when the model cannot do the case (``reason`` says why)
    status: CallStatus = CallStatus.PLANNED
    #: why the call is not applicable
    reason: str | None = None
    #: what earlier attempts of this call already cost (a retried paid failure)
    prior_cost_usd: float = 0.0
    #: the suite case and its decoded (images, mask), shared by every call of the case: what :meth:`build` needs
    case: Any = field(default=None, repr=False)
    inputs: tuple | None = field(default=None, repr=False)
    #: a session's turn (1-based), None for a single edit
    turn: int | None = None
    #: the session (suite case id) the turn belongs to, None for a single edit
    session_id: str | None = None
    #: the call whose output is this turn's input (None for turn 1 and single edits)
    parent_call_id: str | None = None
    #: this turn's input image: the parent's output as it was stored (None before the parent completed, when
    #: planning prices the turn on the session's original image instead)
    turn_input: InputImage | None = field(default=None, repr=False)
    #: while a session's turn runs: the budget reservation held for its later turns (engine bookkeeping)
    session_hold: Any = field(default=None, repr=False)

    @property
    def model_id(self) -> str:
        return self.model.id

    @property
    def built(self) -> tuple[EditRequest, PreparedRequest]:
        """``(request, prepared)`` of a call that is built (planned and not released); a bug otherwise."""
        assert self.request is not None and self.prepared is not None, f"{self.call_id} is not built"
        return self.request, self.prepared

    def build(self, provider: ImageEditProvider) -> PlannedCall:
        """Make ``request`` and ``prepared`` again after :meth:`release` (a no-op when they are there)."""
        if self.status == CallStatus.PLANNED and (self.request is None or self.prepared is None):
            if self.case is None or self.inputs is None:
                raise EvalkitError(f"call {self.call_id} was released without what it needs to be rebuilt")
            self.request = _request_for(
                self.case, self.model, self.repeat, self.seed, self.inputs, turn=self.turn, turn_input=self.turn_input
            )
            self.prepared = provider.prepare(self.request)
        return self

    def release(self) -> None:
        """Drop the request and the prepared body (rebuilt by :meth:`build`); keeps ids and status."""
        if self.case is not None and self.inputs is not None:
            self.request = self.prepared = None

    def row(self) -> dict[str, Any]:
        """The call's row as first written to the workspace."""
        p = self.prepared
        req_w = req_h = None
        if p is not None and p.expected_size:
            req_w, req_h = p.expected_size
        return {
            "call_id": self.call_id,
            "run_id": self.run_id,
            "case_id": self.case_id,
            "model_id": self.model.id,
            "provider": self.model.provider,
            "operation": self.operation,
            "category": self.category,
            "repeat": self.repeat,
            "seed": self.seed,
            "fingerprint": p.fingerprint if p else None,
            "status": self.status,
            "reason": self.reason,
            "price_usd": p.price_usd if p else None,
            "reserved_usd": p.reserve_usd if p else None,
            "price_source": p.price_source if p else None,
            "requested_width": req_w,
            "requested_height": req_h,
            "params": p.public_params() if p else None,
            "notes": list(p.notes) if p else [],
            "turn": self.turn,
            "session_id": self.session_id,
            "parent_call_id": self.parent_call_id,
        }


def call_id_for(run_id: str, case_id: str, model_id: str, repeat: int) -> str:
    return f"{run_id}/{case_id}/{model_id}/{repeat}"


def _request_for(
    case: Any,
    model: ModelSpec,
    repeat: int,
    seed: int | None,
    inputs: tuple,
    *,
    turn: int | None = None,
    turn_input: InputImage | None = None,
) -> EditRequest:
    images, mask = inputs
    prompt, operation, params = case.prompt, case.operation, case.params
    if turn is not None:  # a session's turn: its own instruction, on the previous turn's output
        t = case.turns[turn - 1]
        prompt, operation, params, mask = t.prompt, t.operation, t.params, case.turn_mask(turn)
        if turn > 1:
            images = (turn_input,) if turn_input is not None else tuple(images)[:1]
            if mask is not None and (mask.width, mask.height) != (images[0].width, images[0].height):
                # the mask was drawn on the original; the previous output may have another size
                mask = resize_mask(mask, images[0].width, images[0].height)
    tw, th = case.target_size if case.target_size else (None, None)
    return EditRequest(
        model=model,
        images=tuple(images),
        prompt=prompt,
        operation=operation,
        options=ImageEditOptions(width=tw, height=th, seed=seed, extra=dict(params or {})),
        mask=mask,
        sample_index=repeat,
    )


def iter_plan(
    run_id: str,
    cases: Sequence[Any],
    models: Sequence[ModelSpec],
    providers: Mapping[str, ImageEditProvider],
    *,
    repeats: int = 1,
    base_seed: int = BASE_SEED,
    inputs: dict[str, tuple] | None = None,
) -> Iterator[PlannedCall]:
    """Every (case, model, repeat), ordered case-major so a budget cut leaves whole cases compared.

    ``inputs`` maps case id → (images, mask) already decoded; cases decoded here are added to it, so
    a second pass over the same dict decodes nothing.
    """
    if repeats < 1:
        raise EvalkitError(f"repeats must be ≥ 1, got {repeats}")
    decoded = inputs if inputs is not None else {}
    for repeat in range(repeats):
        for case in cases:
            if case.id not in decoded:
                decoded[case.id] = case.load_inputs()
            case_inputs = decoded[case.id]
            for model in models:
                seed = base_seed + repeat if model.seed is not None else None
                if case.turns:
                    yield from _plan_session(run_id, case, model, repeat, seed, case_inputs, providers)
                    continue
                pc = PlannedCall(
                    call_id=call_id_for(run_id, case.id, model.id, repeat),
                    run_id=run_id,
                    case_id=case.id,
                    model=model,
                    repeat=repeat,
                    operation=case.operation,
                    category=case.category,
                    seed=seed,
                )
                if case.operation not in model.operations:
                    pc.status, pc.reason = CallStatus.NOT_APPLICABLE, f"{model.id} does not support {case.operation}"
                    yield pc
                    continue
                pc.case, pc.inputs = case, case_inputs
                try:
                    pc.build(providers[model.provider])
                except EvalkitError as exc:
                    pc.status, pc.reason, pc.request = CallStatus.NOT_APPLICABLE, exc.message, None
                    pc.case = pc.inputs = None
                yield pc


def _plan_session(
    run_id: str,
    case: Any,
    model: ModelSpec,
    repeat: int,
    seed: int | None,
    case_inputs: tuple,
    providers: Mapping[str, ImageEditProvider],
) -> Iterator[PlannedCall]:
    """The calls of one (session, model, repeat): one per turn, each turn's parent the turn before. Later turns
    are priced on the session's original image (their real input exists once the turn before has run). When the
    model cannot do any one turn, every turn is not applicable, with the reason of the turn it cannot do."""
    calls: list[PlannedCall] = []
    parent = None
    for k, t in enumerate(case.turns, start=1):
        turn_id = case.turn_id(k)
        pc = PlannedCall(
            call_id=call_id_for(run_id, turn_id, model.id, repeat),
            run_id=run_id,
            case_id=turn_id,
            model=model,
            repeat=repeat,
            operation=t.operation,
            category=case.category,
            seed=seed,
            turn=k,
            session_id=case.id,
            parent_call_id=parent,
        )
        parent = pc.call_id
        calls.append(pc)
    reason = None
    for pc, t in zip(calls, case.turns, strict=True):
        if t.operation not in model.operations:
            reason = f"turn {pc.turn}: {model.id} does not support {t.operation}"
            break
        pc.case, pc.inputs = case, case_inputs
        try:
            pc.build(providers[model.provider])
        except EvalkitError as exc:
            reason = f"turn {pc.turn}: {exc.message}"
            break
    for pc in calls:
        if reason is not None:
            pc.status, pc.reason, pc.request, pc.prepared = CallStatus.NOT_APPLICABLE, reason, None, None
            pc.case = pc.inputs = None
        yield pc


def quote_plan_prices(planned: Iterable[PlannedCall], providers: Mapping[str, ImageEditProvider]) -> dict[str, Any]:
    """Ask every provider that has a pricing API (``quote_prices``: WaveSpeed) for the plan's prices.

    Each distinct (model, parameters) is quoted once; the providers keep the quotes, so the planning
    passes that follow price, reserve and record those calls at the quoted price. A failed quote leaves
    the catalogue price (the call's notes and ``price_source`` say so). Blocking: run it off the event loop.
    """
    wanted: dict[str, tuple[QuotesPrices, list[PreparedRequest]]] = {}
    for pc in planned:
        provider = providers.get(pc.model.provider)
        if pc.status == "planned" and pc.prepared is not None and isinstance(provider, QuotesPrices):
            wanted.setdefault(pc.model.provider, (provider, []))[1].append(pc.prepared)
    summary: dict[str, Any] = {"quoted": 0, "failed": 0, "errors": {}}
    for quoter, prepared in wanted.values():
        for q in quoter.quote_prices(prepared).values():
            if q.usd is None:
                summary["failed"] += 1
                summary["errors"].setdefault(q.model_id, q.error)
            else:
                summary["quoted"] += 1
    return summary


def estimate(planned: Iterable[PlannedCall]) -> pd.DataFrame:
    """Per model: calls to make, not-applicable pairs, list-price total and the most it can cost
    (one pass: ``planned`` may be a generator)."""
    return estimate_with_sessions(planned)[0]


#: columns of the per-session estimate
SESSION_ESTIMATE_COLUMNS = ["session_id", "model_id", "sessions", "turns", "list_price_usd", "max_usd"]


def estimate_with_sessions(planned: Iterable[PlannedCall]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`estimate`, and per (session, model) what one whole session costs: its turns, their list-price
    total and the most they can cost (``sessions`` = its repeats). Later turns are priced on the session's
    original image. The second frame is empty for a suite without sessions."""
    rows: dict[str, dict[str, Any]] = {}
    sessions: dict[tuple[str, str], dict[str, Any]] = {}
    for pc in planned:
        if pc.session_id is not None and pc.status != CallStatus.NOT_APPLICABLE:
            _, p = pc.built
            s = sessions.setdefault(
                (pc.session_id, pc.model.id),
                {"session_id": pc.session_id, "model_id": pc.model.id, "sessions": 0, "turns": 0, "list": 0.0},
            )
            s["max"] = s.get("max", 0.0) + p.reserve_usd
            s["list"] += p.price_usd or 0.0
            s["turns"] += 1
            s["sessions"] += int(pc.turn == 1)
        r = rows.setdefault(
            pc.model.id,
            {
                "model_id": pc.model.id,
                "provider": pc.model.provider,
                "calls": 0,
                "not_applicable": 0,
                "list_price_usd": 0.0,
                "max_usd": 0.0,
                "unknown_price_calls": 0,
            },
        )
        if pc.status == CallStatus.NOT_APPLICABLE:
            r["not_applicable"] += 1
            continue
        r["calls"] += 1
        _, p = pc.built
        if p.price_usd is None:
            r["unknown_price_calls"] += 1
        else:
            r["list_price_usd"] += p.price_usd
        r["max_usd"] += p.reserve_usd
    df = pd.DataFrame(
        list(rows.values()),
        columns=["model_id", "provider", "calls", "not_applicable", "list_price_usd", "max_usd", "unknown_price_calls"],
    )
    if not df.empty:
        total = {"model_id": "TOTAL", "provider": "", **{c: df[c].sum() for c in df.columns[2:]}}
        df = pd.concat([df, pd.DataFrame([total])], ignore_index=True)
        df["list_price_usd"] = df["list_price_usd"].round(4)
        df["max_usd"] = df["max_usd"].round(4)
    per_session = pd.DataFrame(
        [
            {
                "session_id": s["session_id"],
                "model_id": s["model_id"],
                "sessions": s["sessions"],
                "turns": s["turns"] // max(1, s["sessions"]),
                "list_price_usd": round(s["list"] / max(1, s["sessions"]), 4),
                "max_usd": round(s["max"] / max(1, s["sessions"]), 4),
            }
            for s in sessions.values()
        ],
        columns=SESSION_ESTIMATE_COLUMNS,
    )
    return df, per_session
