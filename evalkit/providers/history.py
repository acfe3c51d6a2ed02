"""A provider's list of recent predictions, read tolerantly: the types the reconciliation works on.

WaveSpeed keeps its predictions for 7 days and lists them with ``POST /api/v3/predictions``
(shared/reference/wavespeed-models-2026.md §4): ``data: {page, total, items: [...]}``, newest first,
≤ 100 per page. The docs conflict (one page shows ``GET /api/v3/predictions``; the desktop app types
``data`` as the item list) and an ``input`` field on items is *not documented* (the desktop app sends
``include_inputs: true`` and says "the API might return 'input'"). So everything here is parsed
defensively: an item that cannot be read is *counted* (``HistoryPage.unreadable``) rather than dropped
silently, because an unreadable item might be the very job a reconciliation is looking for.

These types live with the providers (upstream); :mod:`evalkit.engine.reconcile` decides with them.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

__all__ = ["HistoryItem", "HistoryPage", "compact_body", "parse_history_page", "parse_time"]

#: strings longer than this are kept as their sha256 in a compact body (images as data URIs or URLs)
COMPACT_STRING_LIMIT = 200

_FRACTION = re.compile(r"^(?P<head>[^.]*?)(?:\.(?P<frac>\d+))?(?P<tz>Z|[+-]\d\d:?\d\d)?$", re.IGNORECASE)


def parse_time(value: Any) -> datetime | None:
    """An aware UTC datetime from an ISO-8601 string (any fraction length — WaveSpeed sends nanoseconds —
    ``Z`` or an offset; no zone means UTC) or from epoch seconds / milliseconds. None when unreadable."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        if value != value or value <= 0:
            return None
        secs = value / 1000 if value > 1e11 else value  # milliseconds since the epoch
        try:
            return datetime.fromtimestamp(secs, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if not isinstance(value, str) or not value.strip() or len(value) > 64:
        return None
    m = _FRACTION.match(value.strip().replace(" ", "T", 1))
    if m is None:
        return None
    text = m["head"]
    if m["frac"]:
        text += "." + m["frac"][:6].ljust(6, "0")
    tz = m["tz"] or "Z"
    text += "+00:00" if tz.upper() == "Z" else (tz if ":" in tz else f"{tz[:3]}:{tz[3:]}")
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def compact_body(value: Any) -> Any:
    """A small, comparable form of a request body: long strings (inline images, media URLs) become
    ``"sha256:<hex>"`` of the string; mappings get sorted keys. Two bodies compare equal in this form
    exactly when they were equal (up to a sha256 collision). Stored per call so a reconciliation can
    later recognise the request among the provider's predictions without keeping megabytes of pixels."""
    if isinstance(value, str):
        if len(value) > COMPACT_STRING_LIMIT and not value.startswith("sha256:"):
            return "sha256:" + hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()
        return value
    if isinstance(value, Mapping):
        return {str(k): compact_body(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [compact_body(v) for v in value]
    return value


@dataclass(frozen=True)
class HistoryItem:
    """One prediction as the history lists it."""

    id: str
    model: str | None
    status: str
    created_at: datetime | None
    #: the request's input in :func:`compact_body` form, or None when the history did not return it
    input: Any = None


@dataclass(frozen=True)
class HistoryPage:
    """One page of the history. ``total`` is the count over all pages when the server says it."""

    items: tuple[HistoryItem, ...]
    page: int
    total: int | None = None
    #: items present in the reply that could not be read (no id, wrong types): they might be anyone's job
    unreadable: int = 0
    raw_count: int = field(default=0)


def _items_and_meta(envelope: Any) -> tuple[list[Any], dict[str, Any]] | None:
    """The raw item list and page metadata from any of the shapes the sources describe, else None."""
    if isinstance(envelope, list):
        return envelope, {}
    if not isinstance(envelope, Mapping):
        return None
    data = envelope.get("data", envelope)
    if isinstance(data, list):
        return data, dict(envelope)
    if isinstance(data, Mapping):
        for key in ("items", "predictions", "list", "data"):
            items = data.get(key)
            if isinstance(items, list):
                return items, dict(data)
    return None


def _item(raw: Any) -> HistoryItem | None:
    if not isinstance(raw, Mapping):
        return None
    pid = raw.get("id")
    if not isinstance(pid, str) or not pid.strip() or len(pid) > 200:
        return None
    model = raw.get("model") if isinstance(raw.get("model"), str) else raw.get("model_id")
    status = raw.get("status")
    created = raw.get("created_at", raw.get("createdAt"))
    inp = None
    for key in ("input", "inputs"):
        if isinstance(raw.get(key), Mapping):
            inp = compact_body(raw[key])
            break
    return HistoryItem(
        id=pid.strip(),
        model=model if isinstance(model, str) else None,
        status=status.lower() if isinstance(status, str) else "",
        created_at=parse_time(created),
        input=inp,
    )


def parse_history_page(envelope: Any, page: int) -> HistoryPage | None:
    """A :class:`HistoryPage` from a decoded reply, or None when the reply has no item list at all."""
    found = _items_and_meta(envelope)
    if found is None:
        return None
    raw_items, meta = found
    items = []
    unreadable = 0
    for raw in raw_items:
        item = _item(raw)
        if item is None:
            unreadable += 1
        else:
            items.append(item)
    total = meta.get("total")
    if isinstance(total, bool) or not isinstance(total, int) or total < 0:
        total = None
    got_page = meta.get("page")
    return HistoryPage(
        items=tuple(items),
        page=got_page if isinstance(got_page, int) and not isinstance(got_page, bool) else page,
        total=total,
        unreadable=unreadable,
        raw_count=len(raw_items),
    )


def canonical_json(value: Any) -> str:
    return json.dumps(compact_body(value), sort_keys=True, separators=(",", ":"), default=str)
