"""evalkit.engine.budget: reserve before a paid call, settle to what was billed, never cross the cap."""

from __future__ import annotations

import asyncio
import random
import threading

import pytest

from evalkit.engine.budget import Budget
from evalkit.errors import BudgetExceededError


def test_reserve_then_settle_replaces_the_hold_by_the_bill():
    b = Budget(1.0)
    r = b.reserve(0.30, "call-1")
    assert (b.reserved_usd, b.spent_usd) == (pytest.approx(0.30), 0.0)
    b.settle(r, 0.12)  # billed less than its maximum: the difference is free again
    assert b.reserved_usd == pytest.approx(0.0) and b.spent_usd == pytest.approx(0.12)
    assert b.committed_usd == pytest.approx(0.12) and b.can_reserve(0.88) and not b.can_reserve(0.89)


def test_a_reservation_that_would_cross_the_cap_is_refused_with_what_was_spent_and_held():
    b = Budget(0.10)
    b.settle(b.reserve(0.04), 0.04)
    b.reserve(0.05)  # in flight
    with pytest.raises(BudgetExceededError) as info:
        b.reserve(0.02)
    msg = str(info.value)
    assert "$0.1000" in msg and "$0.0400 spent" in msg and "$0.0500 held" in msg and "$0.0200" in msg
    assert info.value.hint and "--budget" in info.value.hint
    assert b.reserved_usd == pytest.approx(0.05)  # the refused reservation held nothing


def test_the_cap_itself_can_be_reached_exactly():
    b = Budget(0.3)
    for _ in range(3):
        b.reserve(0.1)  # 0.1 + 0.1 + 0.1 is 0.30000000000000004 in floats: still within the cap
    assert not b.can_reserve(0.001)


def test_settling_twice_counts_once():
    b = Budget(1.0)
    r = b.reserve(0.5)
    b.settle(r, 0.5)
    b.settle(r, 0.5)
    assert b.spent_usd == pytest.approx(0.5) and b.reserved_usd == 0.0


@pytest.mark.parametrize("billed", [None, 0.0])
def test_nothing_billed_releases_the_whole_reservation(billed):
    b = Budget(0.2)
    r = b.reserve(0.2)
    assert not b.can_reserve(0.01)
    b.settle(r, billed)
    assert b.spent_usd == 0.0 and b.reserved_usd == 0.0 and b.can_reserve(0.2)


def test_unknown_cost_settled_at_its_maximum_keeps_counting_against_the_cap():
    """The runner settles a call whose cost nobody reported at its reservation (the most it can cost)."""
    b = Budget(0.25)
    r = b.reserve(0.2)
    b.settle(r, r.amount_usd)
    assert b.spent_usd == pytest.approx(0.2)
    with pytest.raises(BudgetExceededError):
        b.reserve(0.1)


def test_unlimited_budget_still_accounts():
    b = Budget(None)
    rs = [b.reserve(1000.0) for _ in range(5)]
    assert b.reserved_usd == pytest.approx(5000.0)
    for r in rs:
        b.settle(r, 2.0)
    assert b.spent_usd == pytest.approx(10.0) and b.reserved_usd == 0.0


def test_hold_ignores_the_cap_but_counts_against_it():
    """A job an earlier process already submitted is owed whatever the cap says."""
    b = Budget(0.1)
    b.record_spent(0.08)
    h = b.hold(0.05, "resumed")
    assert b.committed_usd == pytest.approx(0.13)
    with pytest.raises(BudgetExceededError):
        b.reserve(0.0 + 0.01)
    b.settle(h, 0.05)
    assert b.spent_usd == pytest.approx(0.13) and b.reserved_usd == 0.0


def test_bad_amounts_are_refused():
    with pytest.raises(BudgetExceededError):
        Budget(-1.0)
    with pytest.raises(ValueError):
        Budget(1.0).reserve(-0.01)


def test_zero_budget_allows_only_free_calls():
    b = Budget(0.0)
    b.settle(b.reserve(0.0), 0.0)
    with pytest.raises(BudgetExceededError):
        b.reserve(0.001)


def test_concurrent_reservations_from_threads_never_exceed_the_cap():
    cap = 1.0
    b = Budget(cap)
    rng = random.Random(7)
    amounts = [rng.choice([0.01, 0.03, 0.05, 0.07]) for _ in range(2000)]
    accepted: list[float] = []
    peak = [0.0]
    lock = threading.Lock()
    start = threading.Barrier(8)

    def worker(chunk: list[float]) -> None:
        start.wait()
        for amount in chunk:
            try:
                r = b.reserve(amount)
            except BudgetExceededError:
                continue
            with lock:
                accepted.append(amount)
                peak[0] = max(peak[0], b.committed_usd)
            b.settle(r, amount if len(accepted) % 3 else None)  # some bill in full, some bill nothing

    threads = [threading.Thread(target=worker, args=(amounts[i::8],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert accepted, "no reservation succeeded"
    assert peak[0] <= cap + 1e-9
    assert b.spent_usd <= cap + 1e-9 and b.reserved_usd == pytest.approx(0.0, abs=1e-9)
    assert len(accepted) < len(amounts)  # the cap really stopped some calls


async def test_concurrent_calls_in_flight_never_hold_more_than_the_cap():
    """Like the runner: reserve, await the (simulated) call, settle; 100 calls at once under $0.50."""
    b = Budget(0.5)
    in_flight = 0
    peak_committed = 0.0
    sent = 0

    async def call(i: int) -> None:
        nonlocal in_flight, peak_committed, sent
        try:
            r = b.reserve(0.04, f"call-{i}")
        except BudgetExceededError:
            return
        sent += 1
        in_flight += 1
        peak_committed = max(peak_committed, b.committed_usd)
        await asyncio.sleep(0.001 * (i % 5))
        in_flight -= 1
        b.settle(r, 0.03)

    await asyncio.gather(*(call(i) for i in range(100)))
    assert peak_committed <= 0.5 + 1e-9
    assert b.spent_usd == pytest.approx(0.03 * sent) and b.spent_usd <= 0.5
    assert 0 < sent < 100
