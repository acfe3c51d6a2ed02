"""A hard spending cap that holds under concurrency.

Before a paid call is submitted its maximum price is *reserved*; the call may only go out if
spent + reserved + this call's maximum ≤ cap. When the outcome is known the reservation is replaced
by the actual cost (or released if nothing was billed). With 100 calls in flight the billed total
therefore never exceeds the cap, as long as no call costs more than what was reserved for it.

All methods are synchronous and are called from one event loop (no awaits between check and
update), so no lock is needed; a threading lock guards use from several threads anyway.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from evalkit.errors import BudgetExceededError

_EPS = 1e-9


@dataclass
class Reservation:
    amount_usd: float
    label: str = ""
    settled: bool = False


@dataclass
class Budget:
    cap_usd: float | None = None  # None = unlimited (still accounted)
    spent_usd: float = 0.0
    reserved_usd: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        if self.cap_usd is not None and self.cap_usd < 0:
            raise BudgetExceededError(f"budget must be ≥ 0, got {self.cap_usd}")

    @property
    def committed_usd(self) -> float:
        return self.spent_usd + self.reserved_usd

    def can_reserve(self, amount_usd: float) -> bool:
        return self.cap_usd is None or self.committed_usd + amount_usd <= self.cap_usd + _EPS

    def reserve(self, amount_usd: float, label: str = "") -> Reservation:
        """Hold ``amount_usd`` back, or raise :class:`BudgetExceededError` if it would cross the cap."""
        if amount_usd < 0:
            raise ValueError("reservation must be ≥ 0")
        with self._lock:
            if not self.can_reserve(amount_usd):
                raise BudgetExceededError(
                    f"budget ${self.cap_usd:.4f} reached: ${self.spent_usd:.4f} spent, ${self.reserved_usd:.4f} "
                    f"held for calls in flight, next call needs up to ${amount_usd:.4f}",
                    hint="raise --budget to run the rest (completed calls are kept; re-run to resume)",
                )
            self.reserved_usd += amount_usd
            return Reservation(amount_usd, label)

    def take(self, held: Reservation, amount_usd: float, label: str = "") -> Reservation:
        """A reservation of ``amount_usd`` for one call, drawn first from ``held`` (money already held back for
        it, e.g. a session's later turns); only what ``held`` cannot cover is checked against the cap (raises
        :class:`BudgetExceededError` then, leaving ``held`` as it was)."""
        if amount_usd < 0:
            raise ValueError("reservation must be ≥ 0")
        with self._lock:
            covered = min(max(0.0, held.amount_usd), amount_usd) if not held.settled else 0.0
            extra = amount_usd - covered
            if extra > _EPS and not self.can_reserve(extra):
                raise BudgetExceededError(
                    f"budget ${self.cap_usd:.4f} reached: ${self.spent_usd:.4f} spent, ${self.reserved_usd:.4f} "
                    f"held, and this session turn needs ${extra:.4f} more than was held for it",
                    hint="raise --budget to run the rest (completed turns are kept; re-run to resume)",
                )
            held.amount_usd -= covered
            self.reserved_usd += max(0.0, extra)
            return Reservation(amount_usd, label)

    def hold(self, amount_usd: float, label: str = "") -> Reservation:
        """Reserve without checking the cap: for a call an earlier process already submitted (it is owed
        whatever the cap says, and must still count against it)."""
        with self._lock:
            self.reserved_usd += amount_usd
            return Reservation(amount_usd, label)

    def settle(self, reservation: Reservation, actual_usd: float | None) -> None:
        """Replace a reservation by what was actually billed (None or 0: nothing billed)."""
        with self._lock:
            if reservation.settled:
                return
            reservation.settled = True
            self.reserved_usd = max(0.0, self.reserved_usd - reservation.amount_usd)
            self.spent_usd += float(actual_usd or 0.0)

    def record_spent(self, amount_usd: float) -> None:
        """Count money already spent (e.g. by an earlier attempt of a resumed run)."""
        with self._lock:
            self.spent_usd += float(amount_usd or 0.0)
