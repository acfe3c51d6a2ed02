"""Reconciliation of unknown submits from synthetic history pages (evalkit.engine.reconcile)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from evalkit.engine.reconcile import (
    Decision,
    ReconcilePolicy,
    UnknownCall,
    Verdict,
    inputs_match,
    reconcile,
    settle_wait_s,
)
from evalkit.errors import Category, ProviderError
from evalkit.providers.history import HistoryItem, HistoryPage, compact_body, parse_history_page, parse_time

T0 = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)
NOW = T0 + timedelta(hours=1)
MODEL = "wavespeed-ai/qwen-image/edit-plus"
POLICY = ReconcilePolicy(clock_skew_s=5, settle_s=30, page_size=3)
BIG = "data:image/png;base64," + "A" * 5000


def body(prompt: str, seed: int = 1) -> dict:
    return {"prompt": prompt, "images": [BIG], "seed": seed, "enable_sync_mode": True}


def call(
    cid: str, prompt: str | None, at: float, *, seed: int = 1, dur: float = 2.0, model: str = MODEL
) -> UnknownCall:
    start = T0 + timedelta(seconds=at)
    sent = compact_body(body(prompt, seed)) if prompt is not None else None
    return UnknownCall(cid, model, start, start + timedelta(seconds=dur), sent)


def item(pid: str, at: float, prompt: str | None = None, *, seed: int = 1, model: str = MODEL, status="completed"):
    inp = None
    if prompt is not None:
        inp = compact_body(
            {k: v for k, v in body(prompt, seed).items() if k != "enable_sync_mode"} | {"size": "1024*1024"}
        )
    return HistoryItem(pid, model, status, T0 + timedelta(seconds=at), inp)


class History:
    """A fake history: newest first, honouring (or, if told, ignoring) the filters; records every request."""

    def __init__(self, items, *, honour_filters=True, fail_on_page=None, total=True, unreadable=0):
        self.items = sorted(items, key=lambda i: i.created_at or T0, reverse=True)
        self.honour, self.fail_on_page, self.total, self.unreadable = honour_filters, fail_on_page, total, unreadable
        self.requests: list[tuple] = []

    async def __call__(self, model, after, before, page, size):
        self.requests.append((model, after, before, page, size))
        if self.fail_on_page == page:
            raise ProviderError("HTTP 503", category=Category.SERVER)
        rows = self.items
        if self.honour:
            rows = [i for i in rows if i.model == model and (i.created_at is None or after <= i.created_at <= before)]
        chunk = rows[(page - 1) * size : page * size]
        return HistoryPage(
            tuple(chunk),
            page,
            total=len(rows) if self.total else None,
            unreadable=self.unreadable if page == 1 else 0,
            raw_count=len(chunk) + (self.unreadable if page == 1 else 0),
        )


async def decide(calls, history, **kw) -> dict[str, Decision]:
    kw.setdefault("now", NOW)
    kw.setdefault("policy", POLICY)
    return {d.call_id: d for d in await reconcile(calls, history, **kw)}


async def test_a_listed_prediction_with_the_sent_body_is_matched_and_others_are_not_taken():
    h = History([item("p-other", 10.5, "other prompt"), item("p-mine", 10.8, "mine"), item("p-late", 300, "mine")])
    d = await decide([call("c1", "mine", 10)], h)
    assert d["c1"].verdict == Verdict.MATCHED and d["c1"].prediction_id == "p-mine"
    assert d["c1"].status == "completed"


async def test_no_listed_prediction_after_the_settle_delay_proves_the_submit_unaccepted():
    h = History([item("p-other", 10.5, "other prompt")])
    d = await decide([call("c1", "mine", 10)], h)
    assert d["c1"].verdict == Verdict.RESUBMIT


async def test_a_window_too_recent_stays_unknown_with_when_to_ask_again():
    h = History([])
    now = T0 + timedelta(seconds=22)  # window ended at 12 s; settle 30 s
    d = await decide([call("c1", "mine", 10)], h, now=now)
    assert d["c1"].verdict == Verdict.UNKNOWN and d["c1"].retry_after_s == pytest.approx(20, abs=0.01)
    assert settle_wait_s([call("c1", "mine", 10)], now, POLICY) == pytest.approx(20, abs=0.01)
    d = await decide([call("c1", "mine", 10)], h, now=now + timedelta(seconds=21))
    assert d["c1"].verdict == Verdict.RESUBMIT


async def test_a_prediction_another_call_owns_is_never_handed_out_twice():
    h = History([item("p-owned", 10.5, "mine")])
    d = await decide([call("c1", "mine", 10)], h, claimed={"p-owned"})
    assert d["c1"].verdict == Verdict.RESUBMIT


async def test_identical_bodies_get_one_prediction_each_and_the_surplus_call_is_resubmitted():
    calls = [call("c1", "same", 10), call("c2", "same", 10.2), call("c3", "same", 10.4)]
    h = History([item("p1", 10.6, "same"), item("p2", 11.0, "same")])
    d = await decide(calls, h)
    matched = sorted(x.prediction_id for x in d.values() if x.verdict == Verdict.MATCHED)
    assert matched == ["p1", "p2"]
    assert [x.verdict for x in d.values()].count(Verdict.RESUBMIT) == 1


async def test_the_history_is_read_once_per_model_and_window_not_per_call():
    calls = [call(f"c{i}", f"prompt {i}", 10 + i * 0.5) for i in range(8)]  # overlapping windows → one group
    calls += [call("far", "prompt far", 2000)]  # a separate window
    calls += [call("m2", "prompt m2", 10, model="other/model")]
    items = [item(f"p{i}", 10.2 + i * 0.5, f"prompt {i}") for i in range(8)]
    items += [item("pfar", 2000.5, "prompt far"), item("pm2", 10.3, "prompt m2", model="other/model")]
    h = History(items)
    d = await decide(calls, h)
    assert all(x.verdict == Verdict.MATCHED for x in d.values())
    assert d["c3"].prediction_id == "p3" and d["far"].prediction_id == "pfar" and d["m2"].prediction_id == "pm2"
    windows = {(m, a, b) for m, a, b, _, _ in h.requests}
    assert len(windows) == 3  # (model, window) groups: two windows for MODEL, one for the other model
    pages_first = [p for m, a, b, p, _ in h.requests if m == MODEL and a < T0 + timedelta(seconds=100)]
    assert pages_first == [1, 2, 3]  # 8 items at page_size 3, read a page at a time
    assert all(size == 3 for *_, size in h.requests)


async def test_history_unavailable_keeps_every_call_unknown_with_the_reason():
    h = History([item("p1", 10.5, "mine")], fail_on_page=1)
    d = await decide([call("c1", "mine", 10), call("c2", "x", 11)], h)
    assert all(x.verdict == Verdict.UNKNOWN for x in d.values())
    assert "could not be read" in d["c1"].reason and "HTTP 503" in d["c1"].reason


async def test_a_failure_on_a_later_page_keeps_matches_found_and_leaves_the_rest_unknown():
    items = [item(f"p{i}", 10 + i * 0.1, f"prompt {i}") for i in range(6)]
    h = History(items, fail_on_page=2)
    calls = [call("c5", "prompt 5", 10), call("none", "absent", 10)]
    d = await decide(calls, h)
    assert d["c5"].verdict == Verdict.MATCHED and d["c5"].prediction_id == "p5"  # newest first: on page 1
    assert d["none"].verdict == Verdict.UNKNOWN and "could not be read" in d["none"].reason


async def test_no_inputs_listed_one_candidate_one_call_matches_several_stay_unknown():
    d = await decide([call("c1", "mine", 10)], History([item("p1", 10.5)]))
    assert d["c1"].verdict == Verdict.MATCHED and d["c1"].prediction_id == "p1"
    d = await decide([call("c1", "mine", 10)], History([item("p1", 10.5), item("p2", 11)]))
    assert d["c1"].verdict == Verdict.UNKNOWN and "no inputs" in d["c1"].reason
    d = await decide([call("c1", "a", 10), call("c2", "b", 10.5)], History([item("p1", 11)]))
    assert {x.verdict for x in d.values()} == {Verdict.UNKNOWN}


async def test_unreadable_entries_in_the_window_block_a_resubmit():
    d = await decide([call("c1", "mine", 10)], History([], unreadable=1))
    assert d["c1"].verdict == Verdict.UNKNOWN and "unreadable" in d["c1"].reason
    undated = HistoryItem("p?", MODEL, "completed", None, None)
    d = await decide([call("c1", "mine", 10)], History([undated]))
    assert d["c1"].verdict == Verdict.UNKNOWN


async def test_outside_the_seven_day_window_stays_unknown_without_reading():
    h = History([])
    d = await decide([call("old", "mine", 10)], h, now=T0 + timedelta(days=7))
    assert d["old"].verdict == Verdict.UNKNOWN and "7 days" in d["old"].reason
    assert h.requests == []


async def test_a_server_that_ignores_the_filters_is_filtered_here_and_paging_ends():
    noise = [item(f"n{i}", 5000 + i, "noise") for i in range(7)]  # newer, other calls
    noise += [item("m", 10.5, "mine", model="other/model")]
    older = [item(f"o{i}", -5000 - i, "mine") for i in range(5)]  # older than the window, same body
    h = History(noise + older + [item("p", 10.4, "mine")], honour_filters=False, total=False)
    d = await decide([call("c1", "mine", 10)], h)
    assert d["c1"].verdict == Verdict.MATCHED and d["c1"].prediction_id == "p"
    h = History(noise + older, honour_filters=False, total=False)
    d = await decide([call("c1", "mine", 10)], h)
    assert d["c1"].verdict == Verdict.RESUBMIT
    assert max(p for *_, p, _ in h.requests) <= 5  # stopped once the pages were older than the window


async def test_a_server_that_ignores_page_does_not_loop_forever():
    class SamePage(History):
        async def __call__(self, model, after, before, page, size):
            self.requests.append(page)
            return HistoryPage(tuple(self.items[:size]), 1, total=None, raw_count=size)

    h = SamePage([item(f"p{i}", 10 + i * 0.01, "x") for i in range(3)])
    d = await decide([call("c1", "mine", 10)], h)
    assert d["c1"].verdict == Verdict.RESUBMIT and len(h.requests) == 2


async def test_too_many_pages_is_ambiguous():
    items = [item(f"p{i}", 10 + i * 0.001, f"x{i}") for i in range(30)]
    d = await decide(
        [call("c1", "mine", 10)], History(items), policy=ReconcilePolicy(clock_skew_s=5, page_size=3, max_pages=4)
    )
    assert d["c1"].verdict == Verdict.UNKNOWN and "more than 4 pages" in d["c1"].reason


async def test_a_call_without_a_recorded_body_is_not_matched_by_guessing():
    d = await decide([call("c1", None, 10)], History([item("p1", 10.5, "mine"), item("p2", 10.6, "other")]))
    assert d["c1"].verdict == Verdict.UNKNOWN and "not recorded" in d["c1"].reason
    d = await decide([call("c1", None, 10)], History([]))
    assert d["c1"].verdict == Verdict.RESUBMIT


async def test_a_crashed_submit_without_an_end_uses_the_longest_submit_as_its_window():
    c = UnknownCall("c1", MODEL, T0 + timedelta(seconds=10), None, compact_body(body("mine")))
    d = await decide([c], History([item("p1", 200, "mine")]), policy=ReconcilePolicy(clock_skew_s=5, max_submit_s=300))
    assert d["c1"].verdict == Verdict.MATCHED
    d = await decide([c], History([item("p1", 400, "mine")]), policy=ReconcilePolicy(clock_skew_s=5, max_submit_s=300))
    assert d["c1"].verdict == Verdict.RESUBMIT


def test_inputs_match_compares_sent_keys_and_ignores_flags_and_server_defaults():
    sent = {"prompt": "a", "images": [BIG], "seed": 3, "enable_base64_output": True}
    assert inputs_match(sent, {"prompt": "a", "images": [BIG], "seed": 3.0, "size": "1024*1024"})
    assert not inputs_match(sent, {"prompt": "a", "images": [BIG], "seed": 4})
    assert not inputs_match(sent, {"prompt": "a", "seed": 3})
    assert not inputs_match(sent, {"prompt": "a", "images": [BIG + "x"], "seed": 3})
    assert not inputs_match({"flag": True}, {"flag": 1})
    assert inputs_match(compact_body(sent), {"prompt": "a", "images": [BIG], "seed": 3})
    assert not inputs_match(sent, None)


def test_compact_body_hashes_long_strings_and_sorts_keys():
    c = compact_body({"b": BIG, "a": [1, "short"]})
    assert list(c) == ["a", "b"] and c["b"].startswith("sha256:") and len(c["b"]) == 71
    assert compact_body(c) == c  # idempotent


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2025-05-19T06:09:15.948268264Z", datetime(2025, 5, 19, 6, 9, 15, 948268, tzinfo=UTC)),
        ("2025-09-29T23:09:43.027Z", datetime(2025, 9, 29, 23, 9, 43, 27000, tzinfo=UTC)),
        ("2025-09-29T23:09:43+02:00", datetime(2025, 9, 29, 21, 9, 43, tzinfo=UTC)),
        ("2025-09-29 23:09:43", datetime(2025, 9, 29, 23, 9, 43, tzinfo=UTC)),
        (1_700_000_000, datetime.fromtimestamp(1_700_000_000, UTC)),
        (1_700_000_000_000, datetime.fromtimestamp(1_700_000_000, UTC)),
        ("yesterday", None),
        (None, None),
        (True, None),
        ("", None),
    ],
)
def test_parse_time(raw, expected):
    assert parse_time(raw) == expected


def test_parse_history_page_tolerates_both_shapes_and_counts_garbage():
    documented = {
        "code": 200,
        "data": {
            "page": 1,
            "total": 505,
            "items": [
                {"id": "e68", "model": MODEL, "status": "completed", "created_at": "2025-05-19T06:09:15.948268264Z"},
                {"id": "", "status": "completed"},
                "garbage",
                {
                    "id": "x2",
                    "model": MODEL,
                    "status": "failed",
                    "created_at": "2025-05-19T06:09:16Z",
                    "input": {"prompt": BIG},
                },
            ],
        },
    }
    page = parse_history_page(documented, 1)
    assert page is not None and page.total == 505 and page.unreadable == 2 and page.raw_count == 4
    assert [i.id for i in page.items] == ["e68", "x2"] and page.items[0].input is None
    assert page.items[1].input == {"prompt": compact_body(BIG)}
    as_list = {
        "code": 200,
        "data": [{"id": "a", "model": MODEL, "status": "processing", "created_at": 1_700_000_000, "inputs": {"p": 1}}],
    }
    page = parse_history_page(as_list, 2)
    assert page is not None and page.page == 2 and page.total is None and page.items[0].input == {"p": 1}
    assert parse_history_page({"code": 200, "data": {"nothing": 1}}, 1) is None
    assert parse_history_page("not json", 1) is None


# ---- the provider's side: WaveSpeedEditProvider.list_predictions on a scripted API -----------------

import httpx  # noqa: E402

from evalkit.credentials import Secret  # noqa: E402
from evalkit.errors import InvalidInputError  # noqa: E402
from evalkit.providers.retry import RetryPolicy  # noqa: E402
from evalkit.providers.wavespeed import WaveSpeedEditProvider  # noqa: E402


def scripted(replies):
    """A provider whose API answers ``replies`` in turn (each an httpx.Response or an exception); records requests."""
    seen: list[httpx.Request] = []
    queue = list(replies)

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        reply = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(reply, Exception):
            raise reply
        return reply

    async def no_sleep(_s: float) -> None:
        return None

    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    p = WaveSpeedEditProvider(
        base_url="https://api.example",
        api_key=Secret("sk-test"),
        client=client,
        sleep=no_sleep,
        retry=RetryPolicy(max_attempts=3, jitter=False),
    )
    return p, seen


async def test_list_predictions_sends_the_documented_request_and_reads_the_documented_shape():
    reply = {
        "code": 200,
        "message": "success",
        "data": {
            "page": 2,
            "total": 150,
            "items": [
                {
                    "id": "e6832d4a",
                    "model": MODEL,
                    "outputs": ["https://cdn/x.jpg"],
                    "status": "completed",
                    "created_at": "2025-05-19T06:09:15.948268264Z",
                    "input": {"prompt": "p", "seed": 3},
                }
            ],
        },
    }
    p, seen = scripted([httpx.Response(200, json=reply)])
    page = await p.list_predictions(MODEL, T0, T0 + timedelta(minutes=5), page=2, page_size=100)
    assert [r.method for r in seen] == ["POST"] and seen[0].url.path == "/api/v3/predictions"
    sent = __import__("json").loads(seen[0].content)
    assert sent == {
        "page": 2,
        "page_size": 100,
        "model": MODEL,
        "created_after": "2026-12-01T12:00:00.000000Z",
        "created_before": "2026-12-01T12:05:00.000000Z",
        "include_inputs": True,
    }
    assert seen[0].headers["authorization"] == "Bearer sk-test"
    assert page.total == 150 and page.page == 2 and page.items[0].input == {"prompt": "p", "seed": 3}
    assert page.items[0].created_at == datetime(2025, 5, 19, 6, 9, 15, 948268, tzinfo=UTC)


async def test_list_predictions_reads_the_list_shape_and_counts_unreadable_items():
    reply = {
        "code": 200,
        "data": [
            {"id": "a", "model": MODEL, "status": "failed", "created_at": "2026-12-01T12:00:01Z"},
            {"model": MODEL},
            7,
        ],
    }
    p, _ = scripted([httpx.Response(200, json=reply)])
    page = await p.list_predictions(MODEL, T0, T0, include_inputs=False)
    assert [i.id for i in page.items] == ["a"] and page.unreadable == 2 and page.total is None


async def test_list_predictions_retries_transient_trouble_and_garbage_then_answers():
    good = httpx.Response(200, json={"code": 200, "data": {"items": [], "total": 0}})
    p, seen = scripted([httpx.Response(503, json={"message": "busy"}), httpx.Response(200, text="<html>oops"), good])
    page = await p.list_predictions(MODEL, T0, T0)
    assert len(seen) == 3 and page.items == () and page.total == 0


@pytest.mark.parametrize(
    ("reply", "category"),
    [
        (httpx.Response(404, json={"message": "no such endpoint"}), "bad_request"),
        (httpx.Response(401, json={"message": "bad key"}), "auth"),
        (httpx.Response(200, json={"code": 200, "data": {"what": 1}}), "server"),
        (httpx.Response(200, json={"code": 500, "message": "internal"}), "server"),
        (httpx.ReadError("reset"), "network"),
    ],
)
async def test_list_predictions_that_cannot_answer_raises_a_categorised_error(reply, category):
    p, _ = scripted([reply])
    with pytest.raises(ProviderError) as info:
        await p.list_predictions(MODEL, T0, T0)
    assert info.value.category == category
    assert "sk-test" not in str(info.value)


async def test_list_predictions_rejects_a_page_size_over_100():
    p, seen = scripted([httpx.Response(200, json={"data": []})])
    with pytest.raises(InvalidInputError):
        await p.list_predictions(MODEL, T0, T0, page_size=101)
    with pytest.raises(InvalidInputError):
        await p.list_predictions(MODEL, T0, T0, page=0)
    assert seen == []


# ---- acting on the decisions (evalkit.engine.settle) ---------------------------------------------

from evalkit.engine.settle import settle_unknown  # noqa: E402


class FakeStore:
    """The few Workspace methods settle_unknown uses, over rows in memory."""

    def __init__(self, rows, claimed=()):
        self.rows = {r["call_id"]: r for r in rows}
        self.claimed = set(claimed)
        self.actions: list[tuple] = []

    def call_rows(self, run_id, statuses=None, columns=None):
        return [dict(r) for r in self.rows.values() if statuses is None or r["status"] in statuses]

    def claimed_prediction_ids(self, provider):
        return set(self.claimed)

    def adopt_prediction(self, call_id, pid, note=None):
        self.actions.append(("adopt", call_id, pid))
        self.rows[call_id].update(status="submitted")
        self.claimed.add(pid)

    def reset_call(self, call_id):
        self.actions.append(("reset", call_id))
        self.rows[call_id].update(status="planned")

    def note_unknown(self, call_id, reason):
        self.actions.append(("unknown", call_id, reason))


class FakeProvider:
    reconcilable = True

    def __init__(self, history):
        self.history = history

    async def list_predictions(self, model, after, before, page=1, page_size=100, include_inputs=True):
        return await self.history(model, after, before, page, page_size)


def _row(cid, start, end, prompt, status="unknown"):
    iso = "%Y-%m-%dT%H:%M:%S.%fZ"
    return {
        "call_id": cid,
        "model_id": "qwen-edit-plus",
        "provider": "wavespeed",
        "status": status,
        "submitting_at": start.strftime(iso),
        "completed_at": end.strftime(iso) if end else None,
        "sent_body": __import__("json").dumps(compact_body(body(prompt))),
    }


async def test_settle_waits_for_a_recent_window_and_never_hands_one_prediction_to_two_calls():
    now = datetime.now(UTC)
    old = now - timedelta(seconds=30)
    # two calls with the same body (a seedless model's repeats): the first window is settled, the second closes now
    store = FakeStore(
        [_row("c1", old, old + timedelta(seconds=1), "same"), _row("c2", now - timedelta(seconds=1), now, "same")]
    )
    history = History([item("p1", (old - T0).total_seconds() + 0.5, "same")])
    providers = {"wavespeed": FakeProvider(history)}
    policy = ReconcilePolicy(clock_skew_s=40, settle_s=0.3)
    report = await settle_unknown(store, "r", providers, {"qwen-edit-plus": MODEL}, policy=policy, wait_for_settle_s=2)
    assert ("adopt", "c1", "p1") in store.actions and ("reset", "c2") in store.actions
    assert report.matched == 1 and report.resubmit == 1 and report.unknown == 0


async def test_settle_skips_calls_of_providers_without_a_history_and_keeps_ambiguous_ones_unknown():
    now = datetime.now(UTC) - timedelta(seconds=60)
    rows = [_row("c1", now, now + timedelta(seconds=1), "x"), {**_row("c2", now, None, "y"), "provider": "stability"}]
    store = FakeStore(rows)
    history = History([], fail_on_page=1)
    report = await settle_unknown(
        store, "r", {"wavespeed": FakeProvider(history), "stability": object()}, {}, policy=POLICY
    )
    assert report.skipped == 1 and report.unknown == 1
    assert store.actions[0][0] == "unknown" and "could not be read" in store.actions[0][2]
