"""Retry timing shared by every HTTP provider: capped exponential backoff with full jitter, and
``Retry-After`` (seconds or HTTP date) honoured up to a cap.

What is *safe* to retry is each provider's decision (a paid submit is retried only when the response
proves it was not accepted); this module only answers "how long to wait before attempt n".
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime


@dataclass(frozen=True)
class RetryPolicy:
    #: attempts in all, including the first
    max_attempts: int = 5
    base_s: float = 0.5
    factor: float = 2.0
    max_backoff_s: float = 30.0
    #: a Retry-After longer than this is clamped (a server asking for an hour should not stall a run)
    max_retry_after_s: float = 120.0
    jitter: bool = True

    def backoff_s(self, attempt: int, retry_after_s: float | None = None, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        if retry_after_s is not None and retry_after_s >= 0:
            return min(retry_after_s, self.max_retry_after_s)
        cap = min(self.max_backoff_s, self.base_s * self.factor ** max(0, attempt - 1))
        if not self.jitter:
            return cap
        return (rng or random).uniform(cap / 2, cap)


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """``Retry-After`` as seconds: delay-seconds or an HTTP date; None when absent or unparseable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    now = now or datetime.now(UTC)
    return max(0.0, (when - now).total_seconds())
