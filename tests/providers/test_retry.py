"""evalkit.providers.retry: capped exponential backoff with jitter, and Retry-After in both forms."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from evalkit.providers.retry import RetryPolicy, parse_retry_after


def test_backoff_without_jitter_doubles_up_to_the_cap():
    p = RetryPolicy(base_s=0.5, factor=2.0, max_backoff_s=3.0, jitter=False)
    assert [p.backoff_s(n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]
    assert p.backoff_s(0) == p.backoff_s(1) == 0.5  # attempt numbers start at 1; 0 is treated like 1


def test_backoff_with_jitter_stays_between_half_and_the_full_step():
    p = RetryPolicy(base_s=1.0, factor=3.0, max_backoff_s=20.0)
    rng = random.Random(1)
    for attempt, full in ((1, 1.0), (2, 3.0), (3, 9.0), (4, 20.0), (9, 20.0)):
        waits = [p.backoff_s(attempt, rng=rng) for _ in range(200)]
        assert all(full / 2 <= w <= full for w in waits), (attempt, min(waits), max(waits))
        assert len(set(waits)) > 100  # really jittered, not one fixed value


def test_jitter_is_reproducible_with_a_seeded_rng():
    p = RetryPolicy()
    a = [p.backoff_s(n, rng=random.Random(42)) for n in range(1, 6)]
    b = [p.backoff_s(n, rng=random.Random(42)) for n in range(1, 6)]
    assert a == b


def test_retry_after_wins_over_the_backoff_and_is_clamped():
    p = RetryPolicy(base_s=0.5, max_backoff_s=1.0, max_retry_after_s=10.0)
    assert p.backoff_s(1, retry_after_s=4.0) == 4.0  # longer than any backoff step: the server knows best
    assert p.backoff_s(5, retry_after_s=0.0) == 0.0
    assert p.backoff_s(1, retry_after_s=3600.0) == 10.0  # a server asking for an hour does not stall a run
    # a negative value is no instruction: the normal backoff applies
    assert 0.25 <= p.backoff_s(1, retry_after_s=-5.0) <= 0.5


@pytest.mark.parametrize(
    "value,seconds",
    [("5", 5.0), (" 12 ", 12.0), ("1.5", 1.5), ("0", 0.0), ("-3", 0.0)],
)
def test_retry_after_in_seconds(value, seconds):
    assert parse_retry_after(value) == seconds


def test_retry_after_as_an_http_date():
    now = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
    later = format_datetime(now + timedelta(seconds=90), usegmt=True)  # "Sun, 01 Mar 2026 12:01:30 GMT"
    assert parse_retry_after(later, now=now) == pytest.approx(90.0)
    earlier = format_datetime(now - timedelta(minutes=5), usegmt=True)
    assert parse_retry_after(earlier, now=now) == 0.0  # already past: go now, never a negative wait
    # a date without a zone is read as UTC
    assert parse_retry_after("Sun, 01 Mar 2026 12:00:30 -0000", now=now) == pytest.approx(30.0)


def test_retry_after_relative_to_the_clock_by_default():
    in_a_minute = format_datetime(datetime.now(UTC) + timedelta(seconds=60), usegmt=True)
    assert 50.0 <= parse_retry_after(in_a_minute) <= 60.0


@pytest.mark.parametrize("value", [None, "", "   ", "soon", "Mon, 99 Foo 2026", "5s"])
def test_absent_or_unparseable_retry_after_is_none(value):
    assert parse_retry_after(value) is None
