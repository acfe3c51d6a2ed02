"""A session's turns in the engine: turn k runs once turn k−1 has completed, on its output.

:class:`SessionTurns` is mixed into :class:`~evalkit.engine.execution.Execution`. What it adds to the life of a
call (:mod:`evalkit.engine.runner`):

* **budget** — a session's first turn (or the turn a resumed run continues it from) reserves the planned maximum
  of every remaining turn; each turn then draws its own reservation from that hold, so a session is never begun
  that the cap cannot finish (``allow_partial_sessions``: turn by turn). When no new call can be reserved, the
  sessions begun still finish, then the run stops for the budget;
* **the next turn** — a completed turn queues the next one on its provider's queue of next turns, which workers
  take before any new call (the input is the stored output: :func:`evalkit.engine.execution.CallSource.stub`);
* **the end of a session** — a turn that ends without an output (failed, unknown, not applicable) marks every
  later turn ``not_reached`` with the reason; one still running (``submitted``) keeps its session waiting.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from evalkit.engine.budget import Budget, Reservation
from evalkit.engine.planning import PlannedCall
from evalkit.errors import BudgetExceededError
from evalkit.store import Workspace


class SessionTurns:
    """The session bookkeeping of an execution (see the module docstring); state set up by ``Execution``."""

    ws: Workspace
    run_id: str
    budget: Budget
    source: Any
    allow_partial_sessions: bool
    _bar: Any
    #: per provider, the next turns of sessions begun: taken before any new call
    _next_turns: dict[str, deque[PlannedCall]]
    #: per provider, session turns being run: its workers wait for their next turns instead of quitting
    _turns_running: dict[str, int]
    _turn_done: dict[str, asyncio.Event]
    #: the money held back for a session's later turns, by the call id of the turn that runs next
    _session_holds: dict[str, Reservation]

    def _reserve(self, pc: PlannedCall, amount_usd: float) -> Reservation:
        """The budget reservation of one call. A session's turn is only started when the budget also holds its
        later turns (their planned maximum), so a session is never begun that the budget cannot finish —
        unless ``allow_partial_sessions``; what is held for the later turns travels with the session."""
        if pc.turn is None:
            return self.budget.reserve(amount_usd, pc.call_id)
        held = self._session_holds.pop(pc.call_id, None)
        if held is None:
            later = 0.0 if self.allow_partial_sessions else self.ws.later_turns_reserved_usd(pc.call_id)
            held = self.budget.reserve(amount_usd + later, f"session of {pc.call_id}")
        try:
            reservation = self.budget.take(held, amount_usd, pc.call_id)
        except BudgetExceededError:
            self.budget.settle(held, 0.0)
            raise
        pc.session_hold = held
        return reservation

    def _sessions_in_progress(self, pc: PlannedCall | None = None) -> bool:
        """Whether sessions other than ``pc``'s are between turns: a turn running or a next turn queued."""
        running = sum(self._turns_running.values()) - (1 if pc is not None and pc.turn is not None else 0)
        return running > 0 or any(self._next_turns.values())

    def _release_session_hold(self, pc: PlannedCall) -> None:
        held, pc.session_hold = pc.session_hold, None
        if held is not None:
            self.budget.settle(held, 0.0)

    def _put_back(self, pc: PlannedCall, queue: deque[PlannedCall]) -> None:
        """A call not sent after all (the run is stopping): planned, at the front of its queue, nothing held."""
        self._release_session_hold(pc)
        (self._next_turns[pc.model.provider] if pc.parent_call_id else queue).appendleft(pc)

    def _continue_session(self, pc: PlannedCall) -> None:
        """``pc`` completed: queue its session's next turn (at the front: sessions finish before new ones start),
        with what the budget holds for the rest of the session."""
        if pc.turn is None:
            return
        row = self.ws.next_turn(pc.call_id)
        held, pc.session_hold = pc.session_hold, None
        if row is None:
            if held is not None:
                self.budget.settle(held, 0.0)
            return
        child = self.source.stub(row)
        queue = self._next_turns.get(pc.model.provider)
        if child is None or queue is None:
            if held is not None:
                self.budget.settle(held, 0.0)
            return
        if held is not None:
            self._session_holds[child.call_id] = held
        queue.append(child)

    def _end_session(self, pc: PlannedCall, why: str) -> None:
        """``pc`` ended without an output: its session's later turns are not reached (``why`` says why)."""
        if pc.turn is None:
            return
        self._release_session_hold(pc)
        n = self.ws.mark_not_reached(self.run_id, f"not reached: {why}", after=pc.call_id)
        if self._bar is not None and n:
            self._bar.update(n)
