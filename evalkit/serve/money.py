"""``evalkit serve``'s money: the tier's price contract for each attempt and the daily budgets (server-wide
and per client), persisted through the workspace's usage ledger so a restart does not reset the day.

Each attempt *reserves* its maximum price before it is sent and is *settled* to the billed cost after
(:class:`evalkit.edit.SpendGuard`); an attempt whose outcome is unknown keeps its reservation counted. The
reservation is made synchronously on the event loop (no await between check and update), so with any number
of edits in flight the committed total never passes a cap.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pandas as pd

from evalkit.errors import BudgetExceededError, InvalidInputError

#: the usage ledger's ``source`` of the server's attempts
LEDGER_SOURCE = "serve"
_EPS = 1e-9


class TierContractError(InvalidInputError):
    """A request the tier does not cover (a model outside it, a price over its cap): answered 403."""


def _day_start(day: date) -> str:
    return f"{day.isoformat()}T00:00:00"


@dataclass
class DailyBudgets:
    """Committed spend (billed + held for attempts in flight or of unknown outcome) per UTC day, server-wide and
    per client, against ``server_usd`` and ``client_usd`` (None: no cap, still counted)."""

    server_usd: float | None
    client_usd: float | None
    workspace: Any = None  # evalkit.store.Workspace, or None (no ledger: a restart starts the day at $0)
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC), repr=False)
    day: date | None = None
    committed_usd: float = 0.0
    per_client: dict[str, float] = field(default_factory=dict)

    def _roll(self) -> date:
        today = self.now().astimezone(UTC).date()
        if today != self.day:
            self.day = today
            self.committed_usd, self.per_client = 0.0, {}
            if self.workspace is not None:
                self.committed_usd, self.per_client = self.workspace.usage_spent(
                    since=_day_start(today), source=LEDGER_SOURCE
                )
        return today

    def resets_at(self) -> str:
        day = self._roll()
        return _day_start(day + timedelta(days=1)) + "Z"

    def _refusal(self, which: str, cap: float, committed: float, amount: float | None) -> BudgetExceededError:
        need = f"; this edit needs up to ${amount:.4f}" if amount is not None else ""
        return BudgetExceededError(
            f"the {which} budget of ${cap:.2f} for today (UTC) is spent: ${committed:.4f} committed{need}; "
            f"it resets at {self.resets_at()}",
            hint="nothing was sent; try again after the reset, or ask the operator to raise it",
        )

    def check_open(self, client: str) -> None:
        """Refuse at once (before the request is read) when a budget has nothing left at all."""
        self._roll()
        if self.server_usd is not None and self.committed_usd >= self.server_usd - _EPS:
            raise self._refusal("server's daily", self.server_usd, self.committed_usd, None)
        spent = self.per_client.get(client, 0.0)
        if self.client_usd is not None and spent >= self.client_usd - _EPS:
            raise self._refusal("per-client daily", self.client_usd, spent, None)

    def reserve(self, client: str, amount_usd: float) -> date:
        """Hold ``amount_usd`` on both budgets, or raise :class:`BudgetExceededError` holding nothing."""
        day = self._roll()
        if self.server_usd is not None and self.committed_usd + amount_usd > self.server_usd + _EPS:
            raise self._refusal("server's daily", self.server_usd, self.committed_usd, amount_usd)
        spent = self.per_client.get(client, 0.0)
        if self.client_usd is not None and spent + amount_usd > self.client_usd + _EPS:
            raise self._refusal("per-client daily", self.client_usd, spent, amount_usd)
        self.committed_usd += amount_usd
        self.per_client[client] = spent + amount_usd
        return day

    def settle(self, client: str, day: date, reserved_usd: float, cost_usd: float | None) -> None:
        """Replace a hold made on ``day`` by the billed cost (None: unknown, the hold stays counted)."""
        if cost_usd is None or self._roll() != day:
            return  # a hold of an earlier day: that day is over
        delta = float(cost_usd) - reserved_usd
        self.committed_usd = max(0.0, self.committed_usd + delta)
        self.per_client[client] = max(0.0, self.per_client.get(client, 0.0) + delta)

    def status(self) -> dict[str, Any]:
        self._roll()
        return {
            "day": str(self.day),
            "resets_at": self.resets_at(),
            "daily_budget_usd": self.server_usd,
            "committed_usd": round(self.committed_usd, 6),
            "client_daily_budget_usd": self.client_usd,
        }


@dataclass
class RequestSpend:
    """One request's :class:`evalkit.edit.SpendGuard`: the tier's price cap, then the daily budgets."""

    budgets: DailyBudgets
    client: str
    tier: str | None
    max_cost_usd: float | None
    explicit_model: bool
    source: str = LEDGER_SOURCE
    _days: list[date] = field(default_factory=list, repr=False)

    def reserve(self, model_id: str, price_usd: float | None) -> float:
        cap = self.max_cost_usd
        if self.explicit_model and cap is not None:
            if price_usd is None:
                raise TierContractError(
                    f"the price of this request with {model_id} is unknown, so it cannot be shown to fit tier "
                    f"{self.tier}'s ${cap:g} cap; nothing was sent",
                    hint="leave out `model` to let the tier choose",
                )
            if price_usd > cap + 1e-12:
                raise TierContractError(
                    f"this request costs ${price_usd:g} with {model_id} > tier {self.tier} max ${cap:g} "
                    "(its resolution, quality, size or number of outputs set the price); nothing was sent",
                    hint="ask for a smaller or cheaper edit, or leave out `model` to let the tier choose",
                )
        amount = price_usd if price_usd is not None else cap
        if amount is None:
            if self.budgets.server_usd is not None or self.budgets.client_usd is not None:
                raise BudgetExceededError(
                    f"the price of this request with {model_id} is unknown and the tier sets no cap, so the daily "
                    "budget cannot hold it; nothing was sent",
                    hint="give the tier a max_cost_usd (tiers.toml) or name a model with a catalogue price",
                )
            amount = 0.0
        self._days.append(self.budgets.reserve(self.client, amount))
        return amount

    def settle(self, reserved_usd: float, cost_usd: float | None) -> None:
        day = self._days.pop(0) if self._days else self.budgets._roll()  # noqa: SLF001
        self.budgets.settle(self.client, day, reserved_usd, cost_usd)


def spend_summary(usage: pd.DataFrame) -> dict[str, Any]:
    """Spend per tier and per client of a slice of the usage ledger (``Workspace.usage(since=…, source=…)``):
    requests, billed, pending or unknown (counted at their reservation) and the committed total."""
    from evalkit.store import usage_charge

    def group(col: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if usage.empty:
            return out
        for key, rows in usage.groupby(usage[col].fillna("—"), sort=True):
            billed = float(rows["cost_usd"].fillna(0).sum())
            open_rows = rows[rows["cost_usd"].isna()]
            committed = sum(usage_charge(c, r) for c, r in zip(rows["cost_usd"], rows["reserved_usd"], strict=True))
            out.append(
                {
                    col: key,
                    "requests": int(len(rows)),
                    "billed_usd": round(billed, 6),
                    "unsettled": int(len(open_rows)),
                    "committed_usd": round(committed, 6),
                }
            )
        return out

    return {"by_tier": group("tier"), "by_client": group("client")}
