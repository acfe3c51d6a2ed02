"""Fault injection for the local WaveSpeed simulator: what can go wrong, when, and how often.

A :class:`Fault` names a failure *kind* and when it fires: with ``rate`` on a seeded RNG (so a run
with the same seed and the same request order fails the same way), for the first ``count`` matching
events, or — with neither — on every matching event. ``model`` restricts it to one catalogue id or
endpoint path. The simulator asks a :class:`FaultBook` at each *event* (a submit before or after the
task is created, a task, a poll, a download, any response for ``slow_response``); the first fault
in insertion order that fires decides the outcome, and its hit is counted.

Kinds, grouped by the event they act on (see evalkit/sim/wavespeed.py for what each one does):

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
slow_response             any         ``delay_s`` before the response (submit, poll, download, upload)
========================  ==========  ==========================================================
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

#: fault kind -> the event it is drawn at.
FAULT_EVENTS: dict[str, str] = {
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
FAULT_KINDS = tuple(FAULT_EVENTS)
#: request kinds a ``slow_response`` fault delays.
SLOW_REQUEST_KINDS = ("submit", "poll", "download", "upload")

_DEFAULT_STATUS = {"submit_accepted_5xx": 500}
_FIELDS = ("kind", "rate", "count", "model", "status", "code", "retry_after_s", "delay_s")


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
    #: matching events seen and times fired (kept by the FaultBook)
    matched: int = field(default=0, init=False, compare=False)
    hits: int = field(default=0, init=False, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in FAULT_EVENTS:
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
    def event(self) -> str:
        return FAULT_EVENTS[self.kind]

    @property
    def http_status(self) -> int:
        """The status a *_5xx fault answers with."""
        return int(self.status or _DEFAULT_STATUS.get(self.kind, 503))

    def matches_model(self, model_keys: tuple[str, ...]) -> bool:
        return self.model is None or self.model in model_keys

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: Any) -> Fault:
        """A fault from JSON (the ``POST /_sim/faults`` body); raises ValueError naming a bad key."""
        if not isinstance(raw, dict):
            raise ValueError("a fault must be a JSON object")
        unknown = set(raw) - set(_FIELDS)
        if unknown:
            raise ValueError(f"unknown fault field(s) {sorted(unknown)}; known: {', '.join(_FIELDS)}")
        if "kind" not in raw:
            raise ValueError("a fault needs a 'kind'")
        try:
            return cls(**raw)
        except TypeError as exc:
            raise ValueError(str(exc)) from None


class FaultBook:
    """The active faults, their seeded RNG and hit counts. Safe to change from another thread."""

    def __init__(self, seed: int = 0):
        self._lock = threading.Lock()
        self._seed = seed
        self._rng = random.Random(seed)
        self._faults: tuple[Fault, ...] = ()
        self.hits_by_kind: Counter[str] = Counter()

    def add(self, fault: Fault) -> Fault:
        with self._lock:
            self._faults = (*self._faults, fault)
        return fault

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

    def draw(self, event: str, model_keys: tuple[str, ...] = ()) -> Fault | None:
        """The first fault for ``event`` that fires now (counting its hit), or None."""
        faults = self._faults
        if not faults:
            return None
        with self._lock:
            for f in faults:
                if f.event != event or not f.matches_model(model_keys):
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
