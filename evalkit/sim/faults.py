"""Fault injection for every local simulator: what can go wrong, when, and how often — one book for all.

A :class:`Fault` names a failure *kind* and when it fires: with ``rate`` on a seeded RNG (so a run
with the same seed and the same request order fails the same way), for the first ``count`` matching
events, or — with neither — on every matching event. ``model`` narrows it to one target: a catalogue id
or endpoint path (WaveSpeed), an edit op or ``"results"`` (Stability polls), a hub model id (Hugging Face);
``endpoint`` is accepted as another name for it. A simulator asks its :class:`FaultBook` at each *event*
(or for a set of kinds); the first fault in insertion order that fires decides the outcome, and its hit
is counted. Each simulator's book knows that simulator's kinds (:data:`WAVESPEED_FAULTS`,
:data:`STABILITY_FAULTS`, :data:`HUGGINGFACE_FAULTS`: kind → event); the Stability and Hugging Face books
default ``count`` to 1 ("the next request fails this way"), the WaveSpeed book to ``None`` (always).

WaveSpeed (:mod:`evalkit.sim.wavespeed`; what each does: :mod:`evalkit.sim.wavespeed.app` and ``.tasks``)

========================  ==========  ==========================================================
kind                      event       effect
========================  ==========  ==========================================================
rate_limit                submit      429 + Retry-After; the task is NOT created
submit_5xx                submit      ``status`` (default 503); the task is NOT created
wrong_shape_submit        submit      200 JSON without ``data.id``; the task is NOT created
submit_accepted_5xx       accepted    the task IS created, the response is ``status`` (default 500)
submit_timeout            accepted    the task IS created, the response waits ``delay_s`` first
submit_accepted_drop      accepted    the task IS created (and billed when it completes), then the connection drops
                                      mid-reply (the client sees a broken response after its body was sent)
task_failed               task        the task fails with ``code`` (default 1403)
moderation                task        the task fails with code 1200
never_finish              task        the task stays "processing" forever
rate_limit_poll           poll        429 + Retry-After
poll_5xx                  poll        ``status`` (default 503)
garbage_poll              poll        200 with a body that is not JSON
download_5xx              download    ``status`` (default 503)
truncated_download        download    200 with the first half of the image bytes
non_image_download        download    200, image content-type, HTML bytes
history_5xx               history     the prediction history answers ``status`` (default 503)
slow_response             response    ``delay_s`` before the response (submit, poll, download, upload)
========================  ==========  ==========================================================

Stability AI (:mod:`evalkit.sim.stability`; ``model="results"`` puts rate_limit/server_error on polls)

========================  ==========  ==========================================================
rate_limit                request     429 + Retry-After; nothing generated
moderation                request     403 content_moderation; not charged
payload_too_large         request     413
unprocessable             request     422 well-formed but rejected
server_error              request     500; nothing generated
content_filtered          output      200 with finish-reason CONTENT_FILTERED and a blurred image (charged)
never_finish              job         the relight job stays 202 forever
slow                      response    waits ``delay_s`` before answering; the generation still happens, charged
========================  ==========  ==========================================================

Hugging Face (:mod:`evalkit.sim.huggingface`)

========================  ==========  ==========================================================
loading                   request     503 ``{"error": "Model … is currently loading", "estimated_time": retry_after_s}``
rate_limit                request     429 + Retry-After: ``retry_after_s``
payment_required          request     402: monthly included credits exhausted
server_error              request     500
bad_request               request     400
slow                      response    waits ``delay_s`` before answering; the generation still happens
========================  ==========  ==========================================================
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

#: WaveSpeed simulator: fault kind -> the event it is drawn at.
WAVESPEED_FAULTS: dict[str, str] = {
    "rate_limit": "submit",
    "submit_5xx": "submit",
    "wrong_shape_submit": "submit",
    "submit_accepted_5xx": "accepted",
    "submit_timeout": "accepted",
    "submit_accepted_drop": "accepted",
    "task_failed": "task",
    "moderation": "task",
    "never_finish": "task",
    "rate_limit_poll": "poll",
    "poll_5xx": "poll",
    "garbage_poll": "poll",
    "download_5xx": "download",
    "truncated_download": "download",
    "non_image_download": "download",
    "history_5xx": "history",
    "slow_response": "response",
}
#: Stability simulator: fault kind -> event (rate_limit/server_error with ``model="results"`` act on polls).
STABILITY_FAULTS: dict[str, str] = {
    "rate_limit": "request",
    "moderation": "request",
    "payload_too_large": "request",
    "unprocessable": "request",
    "server_error": "request",
    "content_filtered": "output",
    "never_finish": "job",
    "slow": "response",
}
#: Hugging Face simulator: fault kind -> event.
HUGGINGFACE_FAULTS: dict[str, str] = {
    "loading": "request",
    "rate_limit": "request",
    "payment_required": "request",
    "server_error": "request",
    "bad_request": "request",
    "slow": "response",
}
#: every kind some simulator knows (a :class:`FaultBook` accepts only its own simulator's kinds).
FAULT_KINDS = tuple(dict.fromkeys([*WAVESPEED_FAULTS, *STABILITY_FAULTS, *HUGGINGFACE_FAULTS]))
#: WaveSpeed request kinds a ``slow_response`` fault delays.
SLOW_REQUEST_KINDS = ("submit", "poll", "download", "upload")

_DEFAULT_STATUS = {"submit_accepted_5xx": 500}
_FIELDS = ("kind", "rate", "count", "model", "status", "code", "retry_after_s", "delay_s")
#: another name for ``model`` (the Stability and Hugging Face simulators call their targets endpoints)
_ALIASES = {"endpoint": "model"}


@dataclass
class Fault:
    """One injected failure. ``rate`` (probability per matching event) or ``count`` (first N), or always."""

    kind: str
    rate: float | None = None
    count: int | None = None
    model: str | None = None
    status: int | None = None
    code: int | None = None
    retry_after_s: float = 1.0
    delay_s: float = 0.0
    #: fires only for a request whose prompt contains this text (WaveSpeed ``task`` faults: one turn of one session)
    prompt: str | None = None
    #: matching events seen and times fired (kept by the FaultBook)
    matched: int = field(default=0, init=False, compare=False)
    hits: int = field(default=0, init=False, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; known: {', '.join(FAULT_KINDS)}")
        if self.rate is not None and not (0.0 <= float(self.rate) <= 1.0):
            raise ValueError(f"fault rate must be within 0–1, got {self.rate!r}")
        if self.count is not None and (
            not isinstance(self.count, int) or isinstance(self.count, bool) or self.count < 0
        ):
            raise ValueError(f"fault count must be a non-negative integer, got {self.count!r}")
        if self.status is not None and not (400 <= int(self.status) <= 599):
            raise ValueError(f"fault status must be an HTTP error status (400–599), got {self.status!r}")
        if self.retry_after_s < 0 or self.delay_s < 0:
            raise ValueError("retry_after_s and delay_s must be ≥ 0")

    @property
    def http_status(self) -> int:
        """The status a *_5xx fault answers with."""
        return int(self.status or _DEFAULT_STATUS.get(self.kind, 503))

    def matches_model(self, model_keys: tuple[str, ...], *, wildcard: bool = True) -> bool:
        """Whether this fault targets one of ``model_keys`` (a fault without ``model`` targets all when
        ``wildcard``)."""
        return self.model in model_keys if self.model is not None else wildcard

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: Any, *, default_count: int | None = None) -> Fault:
        """A fault from JSON (the ``POST /_sim/faults`` body) or keywords; raises ValueError naming a bad key.
        ``count`` defaults to ``default_count``; ``endpoint`` is another name for ``model``."""
        if not isinstance(raw, Mapping):
            raise ValueError("a fault must be a JSON object")
        raw = dict(raw)
        for alias, name in _ALIASES.items():
            if alias in raw:
                if name in raw:
                    raise ValueError(f"give a fault {name!r} or {alias!r}, not both")
                raw[name] = raw.pop(alias)
        unknown = set(raw) - set(_FIELDS)
        if unknown:
            raise ValueError(f"unknown fault field(s) {sorted(unknown)}; known: {', '.join([*_FIELDS, *_ALIASES])}")
        if "kind" not in raw:
            raise ValueError("a fault needs a 'kind'")
        raw.setdefault("count", default_count)
        try:
            return cls(**raw)
        except TypeError as exc:
            raise ValueError(str(exc)) from None


class FaultBook:
    """One simulator's active faults, their seeded RNG and hit counts. Safe to change from another thread.

    ``kinds`` maps the kinds this simulator knows to the event each is drawn at (default: WaveSpeed's);
    ``default_count`` is the ``count`` of a fault added without one (None: every matching event)."""

    def __init__(self, seed: int = 0, *, kinds: Mapping[str, str] = WAVESPEED_FAULTS, default_count: int | None = None):
        self.kinds = dict(kinds)
        self.default_count = default_count
        self._lock = threading.Lock()
        self._seed = seed
        self._rng = random.Random(seed)
        self._faults: tuple[Fault, ...] = ()
        self.hits_by_kind: Counter[str] = Counter()

    def add(self, fault: Fault) -> Fault:
        if fault.kind not in self.kinds:
            raise ValueError(f"unknown fault kind {fault.kind!r}; known: {', '.join(self.kinds)}")
        with self._lock:
            self._faults = (*self._faults, fault)
        return fault

    def inject(self, kind: str, **kw: Any) -> Fault:
        """Add a fault from keywords (``count`` defaults to the book's ``default_count``)."""
        return self.add(Fault.from_dict({"kind": kind, **kw}, default_count=self.default_count))

    def add_dict(self, raw: Any) -> Fault:
        """Add a fault from a ``POST /_sim/faults`` JSON body; ValueError names what is wrong."""
        return self.add(Fault.from_dict(raw, default_count=self.default_count))

    def clear(self) -> None:
        with self._lock:
            self._faults = ()

    def reset(self) -> None:
        """Forget faults and hit counts; reseed the RNG (a reset run fails the same way again)."""
        with self._lock:
            self._faults = ()
            self._rng = random.Random(self._seed)
            self.hits_by_kind = Counter()

    def hits(self) -> dict[str, int]:
        """Fault hits by kind (a copy)."""
        with self._lock:
            return dict(self.hits_by_kind)

    @property
    def faults(self) -> tuple[Fault, ...]:
        return self._faults

    def draw(
        self,
        event: str | Collection[str],
        model_keys: str | tuple[str, ...] = (),
        *,
        wildcard: bool = True,
        prompt: str | None = None,
    ) -> Fault | None:
        """The first fault that fires now (counting its hit), or None. ``event`` is an event name (every kind
        drawn at it) or a collection of kinds; ``model_keys`` the target's names (a fault with a ``model``
        fires only for one of them; one without, only when ``wildcard``)."""
        faults = self._faults
        if not faults:
            return None
        kinds = {k for k, e in self.kinds.items() if e == event} if isinstance(event, str) else set(event)
        keys = (model_keys,) if isinstance(model_keys, str) else model_keys
        with self._lock:
            for f in faults:
                if f.kind not in kinds or not f.matches_model(keys, wildcard=wildcard):
                    continue
                if f.prompt is not None and (not isinstance(prompt, str) or f.prompt not in prompt):
                    continue
                f.matched += 1
                if f.count is not None and f.hits >= f.count:
                    continue
                if f.rate is not None and self._rng.random() >= f.rate:
                    continue
                f.hits += 1
                self.hits_by_kind[f.kind] += 1
                return f
        return None
