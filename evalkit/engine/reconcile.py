"""Settle ``unknown`` submits from the provider's own prediction history — pure decision logic.

A submit is *unknown* when the request may have reached the provider but no usable answer came back
(a 500 after sending, a dropped connection, a crash between "submitting" and "submitted"). Re-sending it
blindly may pay twice; never re-sending it leaves a hole. WaveSpeed lists its predictions of the last
7 days (``POST /api/v3/predictions`` with ``model``, ``created_after``, ``created_before``; reference
wavespeed-models-2026.md §4), so each unknown call gets one of three verdicts:

* **matched** — a prediction of the same model, created inside the call's submit window, whose input
  equals the body evalkit sent (and that no other call owns): the call takes that prediction id and is
  collected like any accepted job (polled, downloaded, billed once); nothing is sent again.
* **resubmit** — no such prediction, the history was read completely for the window, and the settle
  delay after the window has passed: the submit is proven unaccepted and goes out again as a normal submit.
* **unknown** — anything ambiguous stays unknown with the reason: the history could not be read, it has
  unreadable items, it returned no inputs and several candidates fit, the window is (nearly) older than
  the 7 days kept, or the window closed too recently to rule out a late entry (``retry_after_s`` says when
  asking again can settle it).

The history is read a page at a time per (model, window) — unknown calls of one model whose windows
overlap share one read — never once per call. :func:`reconcile` only decides; the engine acts on it.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from evalkit.providers.history import HistoryItem, HistoryPage, compact_body

__all__ = [
    "Decision",
    "FetchPage",
    "ReconcilePolicy",
    "UnknownCall",
    "Verdict",
    "inputs_match",
    "reconcile",
    "settle_wait_s",
]

log = logging.getLogger("evalkit.engine.reconcile")

#: flags evalkit adds that do not change the request's meaning; a history may or may not echo them
IGNORED_KEYS = frozenset({"enable_sync_mode", "enable_base64_output", "webhook", "webhook_url"})

#: fetch one page: (model, created_after, created_before, page (1-based), page_size) -> the page
FetchPage = Callable[[str, datetime, datetime, int, int], Awaitable[HistoryPage]]


class Verdict(StrEnum):
    MATCHED = "matched"
    RESUBMIT = "resubmit"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class UnknownCall:
    """A call whose submit's fate is unknown."""

    call_id: str
    #: the model as the provider's history names it (WaveSpeed: the endpoint path)
    model: str
    #: when the call was marked ``submitting`` (written before the request went out)
    window_start: datetime
    #: when the unknown outcome was recorded; None (a crash mid-submit) → start + ``policy.max_submit_s``
    window_end: datetime | None
    #: the body as sent, in :func:`~evalkit.providers.history.compact_body` form; None if not recorded
    sent: Any = None


@dataclass(frozen=True)
class ReconcilePolicy:
    #: padding on both sides of a submit window for clock skew between us and the provider
    clock_skew_s: float = 120.0
    #: how long after a window closes a prediction created in it is certain to be listed
    settle_s: float = 60.0
    #: how long the provider keeps predictions
    retention_s: float = 7 * 24 * 3600.0
    #: a window starting closer than this to the retention edge is too close to trust
    retention_margin_s: float = 3600.0
    #: the longest a submit can take (a sync-mode POST waits up to ~150 s) — the window of a crashed one
    max_submit_s: float = 300.0
    page_size: int = 100
    #: stop reading (ambiguous: "history too long") after this many pages for one (model, window)
    max_pages: int = 200

    def __post_init__(self) -> None:
        if not 1 <= self.page_size <= 100:
            raise ValueError("page_size must be within 1–100 (WaveSpeed's maximum is 100)")
        if min(self.clock_skew_s, self.settle_s, self.retention_margin_s, self.max_submit_s) < 0:
            raise ValueError("reconcile policy durations must be ≥ 0")


@dataclass(frozen=True)
class Decision:
    call_id: str
    verdict: Verdict
    reason: str
    prediction_id: str | None = None
    #: the matched prediction's status as listed (completed / failed / processing …)
    status: str | None = None
    #: for an unsettled window: seconds until asking again can settle it
    retry_after_s: float | None = None


@dataclass
class _Group:
    model: str
    start: datetime
    end: datetime
    calls: list[tuple[UnknownCall, datetime, datetime]] = field(default_factory=list)


@dataclass
class _Read:
    items: list[HistoryItem]
    complete: bool
    unreadable: int
    pages: int
    problem: str | None = None


def _utc(t: datetime) -> datetime:
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def inputs_match(sent: Any, listed: Any) -> bool:
    """Whether a listed prediction's input is the body we sent: every key we sent (but the flags in
    :data:`IGNORED_KEYS`) is present with an equal value; keys the provider added (defaults it filled
    in) are ignored. Both sides are compared in :func:`compact_body` form."""
    if not isinstance(sent, Mapping) or not isinstance(listed, Mapping):
        return False
    a, b = compact_body(sent), compact_body(listed)
    for key, value in a.items():
        if key in IGNORED_KEYS:
            continue
        if key not in b or not _equal(value, b[key]):
            return False
    return True


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b or a == b and type(a) is type(b)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return float(a) == float(b)
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def settle_wait_s(calls: Iterable[UnknownCall], now: datetime, policy: ReconcilePolicy | None = None) -> float:
    """Seconds until every call's window has settled (0 when all have)."""
    policy = policy or ReconcilePolicy()
    now = _utc(now)
    wait = 0.0
    for c in calls:
        end = _utc(c.window_end) if c.window_end else _utc(c.window_start) + timedelta(seconds=policy.max_submit_s)
        wait = max(wait, (end + timedelta(seconds=policy.settle_s) - now).total_seconds())
    return wait


def _groups(calls: Sequence[UnknownCall], policy: ReconcilePolicy) -> list[_Group]:
    """Per model, the calls' padded windows merged where they overlap: one history read per group."""
    pad = timedelta(seconds=policy.clock_skew_s)
    by_model: dict[str, list[tuple[UnknownCall, datetime, datetime]]] = defaultdict(list)
    for c in calls:
        start = _utc(c.window_start)
        end = _utc(c.window_end) if c.window_end else start + timedelta(seconds=policy.max_submit_s)
        if end < start:
            end = start
        by_model[c.model].append((c, start - pad, end + pad))
    groups: list[_Group] = []
    for model, entries in by_model.items():
        entries.sort(key=lambda e: e[1])
        current: _Group | None = None
        for entry in entries:
            if current is None or entry[1] > current.end:
                current = _Group(model, entry[1], entry[2])
                groups.append(current)
            current.end = max(current.end, entry[2])
            current.calls.append(entry)
    return groups


async def _read(fetch: FetchPage, group: _Group, policy: ReconcilePolicy) -> _Read:
    """Every listed prediction of ``group.model`` inside the group's window, page by page (newest first).
    Filters the server may ignore (model, window) are applied here too."""
    items: list[HistoryItem] = []
    unreadable = 0
    seen: set[str] = set()
    for page_no in range(1, policy.max_pages + 1):
        try:
            page = await fetch(group.model, group.start, group.end, page_no, policy.page_size)
        except Exception as exc:  # noqa: BLE001 - any failure makes the history unavailable, never fatal
            msg = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
            return _Read(items, False, unreadable, page_no - 1, f"the history could not be read ({str(msg)[:200]})")
        unreadable += page.unreadable
        older = 0
        fresh = 0
        for item in page.items:
            if item.id in seen:
                continue
            seen.add(item.id)
            fresh += 1
            if item.model is not None and item.model != group.model:
                continue
            if item.created_at is None:
                if item.model == group.model or item.model is None:
                    unreadable += 1  # cannot be placed in time: might be ours
                continue
            if item.created_at < group.start:
                older += 1
                continue
            if item.created_at > group.end:
                continue
            items.append(item)
        n = page.raw_count or len(page.items) + page.unreadable
        last = (
            n == 0
            or n < policy.page_size
            or (page.total is not None and page_no * policy.page_size >= page.total)
            or (page.items and older == len(page.items))  # newest first: everything further is older still
            or (fresh == 0 and page.items)  # the server ignores `page`: it keeps sending the same items
        )
        if last:
            return _Read(items, True, unreadable, page_no)
    return _Read(
        items, False, unreadable, policy.max_pages, f"the history has more than {policy.max_pages} pages for the window"
    )


async def reconcile(
    calls: Sequence[UnknownCall],
    fetch: FetchPage,
    *,
    claimed: Iterable[str] = (),
    now: datetime | None = None,
    policy: ReconcilePolicy | None = None,
) -> list[Decision]:
    """A decision per call (in the order given). ``claimed`` are prediction ids other calls already own
    (never handed to a second call); ``fetch`` reads one history page (see :data:`FetchPage`)."""
    policy = policy or ReconcilePolicy()
    now = _utc(now or datetime.now(UTC))
    owned = set(claimed)
    decisions: dict[str, Decision] = {}
    oldest_ok = now - timedelta(seconds=policy.retention_s - policy.retention_margin_s)
    live: list[UnknownCall] = []
    for c in calls:
        if _utc(c.window_start) - timedelta(seconds=policy.clock_skew_s) < oldest_ok:
            decisions[c.call_id] = Decision(
                c.call_id,
                Verdict.UNKNOWN,
                "its submit is (nearly) older than the 7 days the provider keeps predictions, so its history "
                "cannot settle it",
            )
        else:
            live.append(c)
    for group in _groups(live, policy):
        for d in await _decide_group(group, fetch, owned, now, policy):
            decisions[d.call_id] = d
    return [decisions[c.call_id] for c in calls]


async def _decide_group(
    group: _Group, fetch: FetchPage, owned: set[str], now: datetime, policy: ReconcilePolicy
) -> list[Decision]:
    read = await _read(fetch, group, policy)
    log.info(
        "reconcile: %s %s … %s: %d listed in the window over %d page(s)%s",
        group.model,
        group.start.isoformat(),
        group.end.isoformat(),
        len(read.items),
        read.pages,
        f" ({read.problem})" if read.problem else "",
    )
    if read.problem is not None and not read.items:
        return [Decision(c.call_id, Verdict.UNKNOWN, read.problem) for c, _, _ in group.calls]
    free = [i for i in sorted(read.items, key=lambda i: i.created_at or group.start) if i.id not in owned]
    out: dict[str, Decision] = {}
    # 1. exact matches on the input, one prediction per call, in time order (identical bodies are interchangeable)
    for c, start, end in group.calls:
        if c.sent is None:
            continue
        for item in free:
            if item.id in owned or item.input is None:
                continue
            assert item.created_at is not None
            if start <= item.created_at <= end and inputs_match(c.sent, item.input):
                owned.add(item.id)
                out[c.call_id] = Decision(
                    c.call_id,
                    Verdict.MATCHED,
                    f"the provider's history lists prediction {item.id} ({item.status or 'status not given'}) of "
                    f"{group.model} created at {item.created_at.isoformat()} with the body evalkit sent",
                    prediction_id=item.id,
                    status=item.status or None,
                )
                break
    # 2. the rest: predictions without an input listed make the answer uncertain
    rest = [(c, s, e) for c, s, e in group.calls if c.call_id not in out]
    blind = [i for i in free if i.id not in owned and i.input is None]
    for c, start, end in rest:
        near = [i for i in blind if i.id not in owned and start <= i.created_at <= end]  # type: ignore[operator]
        if near:
            rivals = [
                r
                for r, s, e in rest
                if not (r.call_id in out and out[r.call_id].verdict == Verdict.MATCHED)
                and any(s <= i.created_at <= e for i in near)  # type: ignore[operator]
            ]
            if len(near) == 1 and len(rivals) == 1:
                item = near[0]
                owned.add(item.id)
                out[c.call_id] = Decision(
                    c.call_id,
                    Verdict.MATCHED,
                    f"the provider's history lists exactly one unclaimed prediction of {group.model} in the submit "
                    f"window ({item.id}, {item.status or 'status not given'}; no input listed to compare)",
                    prediction_id=item.id,
                    status=item.status or None,
                )
            else:
                out[c.call_id] = Decision(
                    c.call_id,
                    Verdict.UNKNOWN,
                    f"the provider's history returned no inputs and {len(near)} unclaimed predictions of "
                    f"{group.model} fit the submit window of {len(rivals)} unknown call(s), so which is whose "
                    "cannot be told",
                )
            continue
        if read.problem is not None:
            out[c.call_id] = Decision(c.call_id, Verdict.UNKNOWN, read.problem)
            continue
        if read.unreadable:
            out[c.call_id] = Decision(
                c.call_id,
                Verdict.UNKNOWN,
                f"the provider's history had {read.unreadable} unreadable entr{'y' if read.unreadable == 1 else 'ies'} "
                "in the window, one of which might be this submit",
            )
            continue
        if c.sent is None and any(i.input is not None for i in free if start <= i.created_at <= end):  # type: ignore[operator]
            out[c.call_id] = Decision(
                c.call_id,
                Verdict.UNKNOWN,
                "the body this call sent was not recorded, so the listed predictions cannot be compared with it",
            )
            continue
        settled_at = end - timedelta(seconds=policy.clock_skew_s) + timedelta(seconds=policy.settle_s)
        if now < settled_at:
            wait = (settled_at - now).total_seconds()
            out[c.call_id] = Decision(
                c.call_id,
                Verdict.UNKNOWN,
                f"no matching prediction listed yet, but the submit window closed too recently to be sure "
                f"(ask again in {wait:.0f} s)",
                retry_after_s=wait,
            )
            continue
        out[c.call_id] = Decision(
            c.call_id,
            Verdict.RESUBMIT,
            f"the provider's history for {group.model} over the whole submit window lists no prediction with "
            "this body, so the submit was not accepted",
        )
    return [out[c.call_id] for c, _, _ in group.calls]


def describe(decisions: Iterable[Decision]) -> dict[str, Any]:
    """Counts per verdict (for logs and the CLI)."""
    counts: dict[str, int] = defaultdict(int)
    for d in decisions:
        counts[str(d.verdict)] += 1
    return dict(counts)
