"""The pinned VLM judge (evalkit/scoring/judge.py) against the simulated judge (evalkit/sim/judge.py), over
real HTTP on loopback."""

from __future__ import annotations

import io
import json
import logging
import math
import random
import sqlite3
from collections import Counter
from pathlib import Path

import httpx
import pytest
from PIL import Image

from evalkit.credentials import Secret
from evalkit.errors import ImageError, InvalidInputError, MissingKeyError
from evalkit.providers.retry import RetryPolicy
from evalkit.scoring.judge import (
    OPERATION_INSTRUCTIONS,
    PAIRWISE_PROMPT,
    SCORE_CONTRACT,
    VIESCORE_METRICS,
    VIESCORE_PQ_PROMPT,
    VIESCORE_SC_PROMPT,
    Judge,
    JudgeConfig,
    judge_run,
    parse_reply,
)
from evalkit.scoring.judge.prompts import sc_instruction
from evalkit.sim.judge import mean_abs_diff, simulated_reply
from evalkit.store import Workspace
from tests.plugins.common import make_png, refused_port

SC_OK = '{"score": [6, 8], "reasoning": "the sky is purple"}'
PQ_OK = '{"score": [9, 4], "reasoning": "some artifacts"}'
FAST_RETRY = RetryPolicy(max_attempts=3, base_s=0.001, max_backoff_s=0.01, jitter=False)


def make_judge(handle, *, retry_policy: RetryPolicy = FAST_RETRY, **kw) -> Judge:
    kw.setdefault("model", "sim-judge-1")
    kw.setdefault("api_key", handle.api_key)
    return Judge(base_url=handle.base_url, retry_policy=retry_policy, **kw)


def flat_png(width: int, height: int) -> bytes:
    """A large image that is quick to make (noise at 2000 px is slow to encode)."""
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (180, 40, 90)).save(buf, format="PNG")
    return buf.getvalue()


def jpeg_sizes(rec) -> list[tuple[int, int]]:
    assert rec.image_mimes == ["image/jpeg"] * len(rec.images)
    return [img.size for img in rec.pil_images()]


# ---- VIEScore round trip -------------------------------------------------------------------------
async def test_viescore_round_trip_reduces_exactly_and_sends_gedit_prompts(judge_sim):
    judge_sim.sim.script([SC_OK, PQ_OK])
    source, edited = make_png(96, 64, seed=1), make_png(50, 50, seed=2)
    async with make_judge(judge_sim) as judge:
        res = await judge.viescore(source, edited, "make the sky purple")
    assert res.status == "scored" and res.reason is None
    assert (res.editing_success, res.over_editing, res.naturalness, res.artifacts) == (6, 8, 9, 4)
    assert res.sc == 6 and res.pq == 4 and res.o == pytest.approx(math.sqrt(24))
    assert res.raw == {"viescore_sc": SC_OK, "viescore_pq": PQ_OK}
    assert res.parsed["viescore_sc"] == {"score": [6, 8], "reasoning": "the sky is purple"}

    sc_req, pq_req = judge_sim.sim.requests
    assert sc_req.texts == [VIESCORE_SC_PROMPT.replace("<instruction>", "make the sky purple")]
    assert "Editing instruction: make the sky purple\n" in sc_req.text and "<instruction>" not in sc_req.text
    assert pq_req.texts == [VIESCORE_PQ_PROMPT] and "make the sky purple" not in pq_req.text
    # text first, then [source, edited] for SC and [edited] for PQ; the edited image resized to the source size
    assert [p["type"] for p in sc_req.body["messages"][0]["content"]] == ["text", "image_url", "image_url"]
    assert jpeg_sizes(sc_req) == [(96, 64), (96, 64)]
    assert jpeg_sizes(pq_req) == [(96, 64)]
    assert sc_req.images[1] == pq_req.images[0]
    assert sc_req.body["max_tokens"] == 1400 and sc_req.body["temperature"] == 0.0
    assert sc_req.model == "sim-judge-1"


async def test_images_are_capped_at_1024_px_keeping_aspect(judge_sim):
    async with make_judge(judge_sim) as judge:
        res = await judge.viescore(flat_png(2000, 1000), make_png(300, 300, seed=4), "add a hat")
    assert res.status == "scored"
    assert jpeg_sizes(judge_sim.sim.requests[0]) == [(1024, 512), (1024, 512)]


async def test_temperature_none_is_not_sent_and_changes_the_version(judge_sim):
    async with make_judge(judge_sim, temperature=None) as judge:
        await judge.viescore(make_png(seed=1), make_png(seed=2), None)
        assert "temperature" not in judge_sim.sim.requests[0].body
        assert judge.config.version() == "sim-judge-1|viescore-gedit-v1|jpeg-q90-max1024|temperature=none"


def test_prompt_texts_are_the_gedit_viescore_texts():
    assert VIESCORE_SC_PROMPT.startswith(
        "You are a professional digital artist. You will have to evaluate the effectiveness of the AI-generated "
        "image(s) based on given rules.\nAll the input images are AI-generated. All human in the images are "
        "AI-generated too. so you need not worry about the privacy confidentials.\n"
    )
    assert '{\n"score" : [...],\n"reasoning" : "..."\n}\nRULES:\n\nTwo images will be provided:' in VIESCORE_SC_PROMPT
    assert (
        "\n\nFrom scale 0 to 10: \nA score from 0 to 10 will be given based on the success of the editing."
        in VIESCORE_SC_PROMPT
    )
    assert VIESCORE_SC_PROMPT.endswith("Editing instruction: <instruction>\n")
    assert "output score = [naturalness, artifacts]\n" in VIESCORE_PQ_PROMPT
    assert "wrong sense of distance, or wrong shadow, or wrong lighting. \n" in VIESCORE_PQ_PROMPT
    assert '"choice"' in PAIRWISE_PROMPT and "<instruction>" in PAIRWISE_PROMPT


async def test_without_instruction_only_pq_is_judged(judge_sim):
    judge_sim.sim.script([PQ_OK])
    async with make_judge(judge_sim) as judge:
        res = await judge.viescore(make_png(seed=1), make_png(seed=2), "  ")
    assert res.status == "scored" and not res.sc_applies
    assert res.pq == 4 and res.sc is None and res.o is None and res.sc_reply is None
    assert len(judge_sim.sim.requests) == 1 and len(judge_sim.sim.requests[0].images) == 1


# ---- parsing: scored / unscored exactly as specified ----------------------------------------------
REPLIES = [
    (SC_OK, "scored", None),
    ('```json\n{"score": [6, 8], "reasoning": "ok"}\n```', "scored", None),
    ('Here is my evaluation:\n{"score": [6.5, 8], "reasoning": "ok"}\nHope this helps.', "scored", None),
    ('{"score": [6, 8], "reasoning": "a"} and again {"score": [6, 8], "reasoning": "a"}', "scored", None),
    ("I'm sorry, but I can't help with that.", "unscored", "refused"),
    ("I cannot evaluate images of real people.", "unscored", "refused"),
    ({"content": None, "refusal": "I can't assist with this request."}, "unscored", "refused"),
    ("the edit looks great, eight out of ten", "unscored", "unparseable"),
    ("", "unscored", "empty"),
    ('{"score": [6], "reasoning": "x"}', "unscored", "wrong_shape"),
    ('{"score": "6, 8", "reasoning": "x"}', "unscored", "wrong_shape"),
    ('{"score": ["6", "8"], "reasoning": "x"}', "unscored", "wrong_shape"),
    ('{"score": [true, 8], "reasoning": "x"}', "unscored", "wrong_shape"),
    ('{"score": [6, 8]}', "unscored", "wrong_shape"),
    ('{"score": [6, 8], "reasoning": "x", "confidence": 0.9}', "unscored", "wrong_shape"),
    ('{"scores": [6, 8], "reasoning": "x"}', "unscored", "wrong_shape"),
    ('{"score": [6, 11], "reasoning": "x"}', "unscored", "out_of_range"),
    ('{"score": [-1, 8], "reasoning": "x"}', "unscored", "out_of_range"),
    ('{"score": [NaN, 8], "reasoning": "x"}', "unscored", "unparseable"),
    ('{"score": [6, 8], "reasoning": "a"} or maybe {"score": [2, 3], "reasoning": "b"}', "unscored", "ambiguous"),
    ({"content": '{"score": [6, ', "finish_reason": "length"}, "unscored", "truncated"),
    ({"finish_reason": "content_filter"}, "unscored", "content_filter"),
    ({"content": SC_OK, "finish_reason": "content_filter"}, "unscored", "content_filter"),
    (
        {"status": 400, "error": {"code": "content_filter", "message": "The response was filtered"}},
        "unscored",
        "content_filter",
    ),
    (
        {"status": 400, "error": {"code": None, "innererror": {"code": "ResponsibleAIPolicyViolation"}}},
        "unscored",
        "content_filter",
    ),
    ({"status": 400, "error": {"message": "Invalid image"}}, "unscored", "bad_request"),
    ({"body": "<html>502 Bad Gateway</html>"}, "unscored", "bad_response"),
    ({"body": '{"choices": []}'}, "unscored", "bad_response"),
]


@pytest.mark.parametrize("reply,status,reason", REPLIES, ids=[f"{i}-{r[2] or 'ok'}" for i, r in enumerate(REPLIES)])
async def test_sc_reply_parsing(judge_sim, reply, status, reason):
    judge_sim.sim.script([reply, PQ_OK])
    async with make_judge(judge_sim) as judge:
        res = await judge.viescore(make_png(seed=1), make_png(seed=2), "make the sky purple")
    assert (res.sc_reply.status, res.sc_reply.reason) == (status, reason)
    assert res.pq == 4  # the other part is unaffected
    if status == "scored":
        assert res.status == "scored" and res.sc is not None and res.o == pytest.approx(math.sqrt(res.sc * 4))
    else:
        assert res.status == "unscored" and res.reason == reason
        assert res.sc is None and res.editing_success is None and res.over_editing is None and res.o is None
        assert res.sc_reply.parsed is None
    assert len(judge_sim.sim.requests) == 2  # never retried: the judge answered


def test_parse_reply_takes_the_answer_object_only():
    assert parse_reply('{"score": [0, 10], "reasoning": ""}', SCORE_CONTRACT).parsed == {
        "score": [0, 10],
        "reasoning": "",
    }
    # prose with an unrelated JSON object is not an answer
    assert parse_reply('note {"a": 1}', SCORE_CONTRACT).reason == "wrong_shape"
    assert parse_reply('{"score": [1, 2], "reasoning": "x"', SCORE_CONTRACT).reason == "unparseable"


# ---- retries, timeouts, auth -------------------------------------------------------------------------
async def test_429_then_success_is_retried_honouring_retry_after(judge_sim):
    judge_sim.sim.script([{"status": 429, "headers": {"Retry-After": "0"}}, SC_OK, PQ_OK])
    async with make_judge(judge_sim, retry_policy=RetryPolicy(max_attempts=3, base_s=30.0, jitter=False)) as judge:
        res = await judge.viescore(make_png(seed=1), make_png(seed=2), "make the sky purple")
    assert res.status == "scored" and res.sc == 6
    assert res.sc_reply.attempts == 2
    assert [r.status for r in judge_sim.sim.requests] == [429, 200, 200]


async def test_500_then_success_is_retried(judge_sim):
    judge_sim.sim.script([{"status": 500}, {"status": 503}, SC_OK, PQ_OK])
    async with make_judge(judge_sim) as judge:
        res = await judge.viescore(make_png(seed=1), make_png(seed=2), "make the sky purple")
    assert res.status == "scored" and res.sc_reply.attempts == 3


async def test_exhausted_rate_limit_is_unscored_and_not_cached(judge_sim, tmp_path):
    judge_sim.sim.script([{"status": 429, "headers": {"Retry-After": "0"}}] * 3)
    ws = Workspace(tmp_path / "ws")
    async with make_judge(judge_sim) as judge:
        res = await judge.viescore(make_png(seed=1), make_png(seed=2), "make the sky purple", cache=ws)
        assert res.sc_reply.reason == "rate_limit" and res.sc_reply.attempts == 3 and res.sc is None
        assert res.sc_reply.cost_usd == 0.0  # assumption: a 429 is not billed
        assert ws.judge_cache_get(res.sc_reply.key) is None  # nothing was processed: a later run tries again
        assert ws.judge_cache_get(res.pq_reply.key)["status"] == "scored"
        n = len(judge_sim.sim.requests)
        again = await judge.viescore(make_png(seed=1), make_png(seed=2), "make the sky purple", cache=ws)
    assert again.status == "scored" and again.pq_reply.cached
    assert len(judge_sim.sim.requests) == n + 1  # only SC was asked again


async def test_timeout_after_sending_is_not_retried(judge_sim, tmp_path):
    # margins wide enough for a loaded machine: the retried request must answer well inside the timeout
    judge_sim.sim.script([{"delay_s": 3.0, "content": SC_OK}, PQ_OK])
    ws = Workspace(tmp_path / "ws")
    async with make_judge(judge_sim, timeout_s=1.0) as judge:
        res = await judge.viescore(make_png(seed=1), make_png(seed=2), "make the sky purple", cache=ws)
        assert res.status == "unscored" and res.reason == "timeout" and res.sc is None and res.pq == 4
        assert res.sc_reply.cost_usd is None  # unknown outcome
        sc_requests = [r for r in judge_sim.sim.requests if len(r.images) == 2]
        assert len(sc_requests) == 1
        # cached as unscored: a re-run does not silently pay again ...
        await judge.viescore(make_png(seed=1), make_png(seed=2), "make the sky purple", cache=ws)
        assert len([r for r in judge_sim.sim.requests if len(r.images) == 2]) == 1
        # ... unless asked to
        judge_sim.sim.script([SC_OK])
        res = await judge.viescore(
            make_png(seed=1), make_png(seed=2), "make the sky purple", cache=ws, retry_unscored={"timeout"}
        )
    assert res.status == "scored" and res.sc == 6


async def test_wrong_key_is_unscored_auth_without_retry(judge_sim):
    async with make_judge(judge_sim, api_key="not-the-key") as judge:
        res = await judge.viescore(make_png(seed=1), make_png(seed=2), "make the sky purple")
    assert res.status == "unscored" and res.reason == "auth" and res.sc is None and res.pq is None
    assert [r.status for r in judge_sim.sim.requests] == [401, 401]


async def test_undecodable_image_raises_before_sending(judge_sim):
    async with make_judge(judge_sim) as judge:
        with pytest.raises(ImageError, match="edited image cannot be judged"):
            await judge.viescore(make_png(seed=1), b"\x89PNG\r\n\x1a\nnot really", "make the sky purple")
    assert judge_sim.sim.requests == []


async def test_connection_refused_is_retried_then_unscored_without_cost():
    async with Judge(
        base_url=f"http://127.0.0.1:{refused_port()}/v1", api_key=None, model="m", retry_policy=FAST_RETRY
    ) as judge:
        res = await judge.viescore(make_png(seed=1), make_png(seed=2), "make the sky purple")
    assert res.status == "unscored" and res.reason == "connect"
    assert res.sc_reply.attempts == 3 and not res.sc_reply.sent and res.sc_reply.cost_usd == 0.0


# ---- cost ---------------------------------------------------------------------------------------------
async def test_cost_is_usage_times_prices_or_unknown(judge_sim):
    usage = {"prompt_tokens": 1000, "completion_tokens": 100, "total_tokens": 1100}
    judge_sim.sim.script([{"content": SC_OK, "usage": usage}, {"content": PQ_OK, "usage": None}])
    async with make_judge(judge_sim, usd_per_1m_input_tokens=2.0, usd_per_1m_output_tokens=8.0) as judge:
        res = await judge.viescore(make_png(seed=1), make_png(seed=2), "make the sky purple")
    assert res.sc_reply.cost_usd == pytest.approx(0.0028)
    assert res.pq_reply.cost_usd is None  # no usage reported: unknown, not guessed
    assert res.cost_usd is None
    judge_sim.sim.script([SC_OK, PQ_OK])
    unpriced = {"usd_per_1m_input_tokens": None, "usd_per_1m_output_tokens": None}
    async with make_judge(judge_sim, **unpriced) as judge:  # usage reported, but no prices configured
        res = await judge.viescore(make_png(seed=1), make_png(seed=2), "make the sky purple")
    assert res.sc_reply.usage is not None and res.sc_reply.cost_usd is None
    async with make_judge(judge_sim) as judge:  # a loopback judge with no prices given: the user's machine, $0
        assert judge.config.price_source == "loopback server: $0"
        res = await judge.viescore(make_png(seed=1), make_png(seed=2), "make the sky purple")
    assert res.sc_reply.usage is not None and res.cost_usd == 0.0


# ---- configuration --------------------------------------------------------------------------------------
def test_config_from_environment_and_validation(monkeypatch):
    monkeypatch.setenv("EVALKIT_JUDGE_BASE_URL", "https://judge.example/v1/")
    monkeypatch.setenv("EVALKIT_JUDGE_MODEL", "gpt-4.1-2025-04-14")
    monkeypatch.setenv("EVALKIT_JUDGE_API_KEY", "sk-env-value-1234")
    cfg = JudgeConfig.from_env()
    assert cfg.base_url == "https://judge.example/v1" and isinstance(cfg.api_key, Secret)
    assert cfg.version() == "gpt-4.1-2025-04-14|viescore-gedit-v1|jpeg-q90-max1024"
    assert cfg.version("pairwise") == "gpt-4.1-2025-04-14|pairwise-v1|jpeg-q90-max1024"
    assert (
        JudgeConfig.from_env(model="other", max_tokens=500).version()
        == "other|viescore-gedit-v1|jpeg-q90-max1024|max_tokens=500"
    )
    assert "sk-env-value-1234" not in repr(cfg)

    monkeypatch.delenv("EVALKIT_JUDGE_MODEL")
    with pytest.raises(InvalidInputError, match="EVALKIT_JUDGE_MODEL"):
        JudgeConfig.from_env()
    monkeypatch.delenv("EVALKIT_JUDGE_API_KEY")
    with pytest.raises(MissingKeyError):
        JudgeConfig.from_env(model="m")
    assert JudgeConfig.from_env(model="m", base_url="http://127.0.0.1:9/v1").api_key is None  # loopback: optional
    with pytest.raises(InvalidInputError, match="image encoding"):
        JudgeConfig("http://127.0.0.1:9", "m", image_encoding="webp-max99")
    with pytest.raises(InvalidInputError, match="together"):  # one price alone says nothing about a request's cost
        JudgeConfig("http://127.0.0.1:9", "m", usd_per_1m_output_tokens=8.0)
    with pytest.raises(InvalidInputError, match="not an http"):
        JudgeConfig("ftp://x", "m")


# ---- pairwise (single) -------------------------------------------------------------------------------
@pytest.mark.parametrize("seed,shown_first", [(0, "right"), (1, "left")])
@pytest.mark.parametrize("verdict", ["A", "B", "tie"])
async def test_pairwise_maps_the_verdict_back_for_both_orders(judge_sim, seed, shown_first, verdict):
    assert (random.Random(seed).random() < 0.5) == (shown_first == "left")
    source, left, right = make_png(seed=1), make_png(seed=2), make_png(seed=3)
    judge_sim.sim.script([json.dumps({"choice": verdict, "reasoning": "x"})])
    async with make_judge(judge_sim) as judge:
        res = await judge.pairwise(source, left, right, "add a hat", rng=random.Random(seed))
    assert res.status == "scored" and res.shown_first == shown_first and res.verdict == verdict
    expected = {"A": shown_first, "B": "right" if shown_first == "left" else "left", "tie": "tie"}[verdict]
    assert res.choice == expected
    rec = judge_sim.sim.requests[0]
    assert "Editing instruction: add a hat" in rec.text and len(rec.images) == 3
    first_sent = rec.pil_images()[1]
    shown = left if shown_first == "left" else right
    # the image shown as A is the one recorded as shown first (JPEG: compare pixels loosely)
    assert _grey_distance(first_sent, Image.open(io.BytesIO(shown))) < _grey_distance(
        first_sent, Image.open(io.BytesIO(right if shown is left else left))
    )


async def test_pairwise_wrong_choice_is_unscored(judge_sim):
    judge_sim.sim.script(['{"choice": "C", "reasoning": "x"}'])
    async with make_judge(judge_sim) as judge:
        res = await judge.pairwise(make_png(seed=1), make_png(seed=2), make_png(seed=3), "x", rng=random.Random(0))
    assert res.status == "unscored" and res.reason == "wrong_shape" and res.choice is None


def _grey_distance(a: Image.Image, b: Image.Image) -> float:
    import numpy as np

    x = np.asarray(a.convert("L").resize((32, 32)), dtype=float)
    y = np.asarray(b.convert("L").resize((32, 32)), dtype=float)
    return float(np.abs(x - y).mean())


# ---- judge_run over a workspace run -------------------------------------------------------------------
def build_run(
    ws: Workspace,
    run_id: str,
    cases: list[dict],
    outputs: dict[tuple[str, str], bytes],
    failed: tuple[tuple[str, str], ...] = (),
) -> dict[tuple[str, str], str]:
    """A run with completed calls and blobs, written with the Workspace API only."""
    models = sorted({m for _, m in outputs} | {m for _, m in failed})
    ws.create_run(
        run_id,
        suite_name="judge-test",
        suite_path=None,
        suite_fingerprint=None,
        catalog_fingerprint=None,
        models=models,
        repeats=1,
        budget_usd=None,
        config={},
    )
    ws.put_cases(
        run_id,
        [
            {
                "case_id": c["case_id"],
                "operation": c["operation"],
                "prompt": c.get("prompt"),
                "input_sha256": [ws.put_blob(c["source"], "png").sha256],
            }
            for c in cases
        ],
    )
    ops = {c["case_id"]: c["operation"] for c in cases}
    ids = {key: f"{run_id}.{key[0]}.{key[1]}" for key in [*outputs, *failed]}
    ws.insert_calls(
        [
            {
                "call_id": cid,
                "run_id": run_id,
                "case_id": case,
                "model_id": model,
                "provider": "sim",
                "operation": ops[case],
                "repeat": 0,
            }
            for (case, model), cid in ids.items()
        ]
    )
    for key, data in outputs.items():
        ws.finish_call(
            ids[key], {"status": "completed", "output_sha256": ws.put_blob(data, "png").sha256, "output_ext": "png"}
        )
    for key in failed:
        ws.finish_call(ids[key], {"status": "failed", "error_category": "server"})
    return ids


def viescore_run(ws: Workspace, run_id: str = "r1") -> dict[tuple[str, str], str]:
    cases = [
        {"case_id": "c1", "operation": "general_edit", "prompt": "make the sky purple", "source": make_png(64, 48, 1)},
        {"case_id": "c2", "operation": "general_edit", "prompt": "add a red hat", "source": make_png(48, 64, 2)},
        # a character reference without a description: no instruction to judge SC against → PQ only
        {"case_id": "c3", "operation": "character_reference", "prompt": None, "source": make_png(40, 40, 3)},
    ]
    outputs = {
        (c, m): make_png(56, 56, 10 + i * 3 + j)
        for i, c in enumerate(("c1", "c2", "c3"))
        for j, m in enumerate(("model-a", "model-b"))
    }
    return build_run(ws, run_id, cases, outputs, failed=(("c1", "model-c"),))


@pytest.fixture
def ws(tmp_path):
    w = Workspace(tmp_path / "ws")
    yield w
    w.close()


async def test_judge_run_viescore_writes_pinned_scores_and_never_pays_twice(judge_sim, ws):
    ids = viescore_run(ws)
    async with make_judge(judge_sim) as judge:
        summary = await judge_run(ws, "r1", judge, progress=False)
        assert summary.items == 6 and summary.scored == 6 and summary.unscored == 0 and summary.pq_only == 2
        assert summary.requests_sent == len(judge_sim.sim.requests) == 4 * 2 + 2 * 1
        df = ws.scores("r1")
        assert set(df["version"]) == {judge.config.version()} == {"sim-judge-1|viescore-gedit-v1|jpeg-q90-max1024"}
        assert set(df["source"]) == {"judge"} and ids[("c1", "model-c")] not in set(df["call_id"])
        assert len(df) == 6 * len(VIESCORE_METRICS)
        for call_id, rows in df.groupby("call_id"):
            v = dict(zip(rows["metric"], rows["value"], strict=True))
            st = dict(zip(rows["metric"], rows["status"], strict=True))
            assert v["viescore_pq"] == min(v["vie_naturalness"], v["vie_artifacts"])
            if call_id.startswith("r1.c3"):  # no instruction: PQ only, the rest says why
                assert st["viescore_sc"] == st["viescore_o"] == st["vie_editing_success"] == "unscored"
                assert set(rows[rows["status"] == "unscored"]["reason"]) == {"no_instruction"}
                assert math.isnan(v["viescore_sc"]) and math.isnan(v["viescore_o"])
            else:
                assert v["viescore_sc"] == min(v["vie_editing_success"], v["vie_over_editing"])
                assert v["viescore_o"] == pytest.approx(math.sqrt(v["viescore_sc"] * v["viescore_pq"]))
        # the predicted default reply: recompute it from what the sim saw
        for rec in judge_sim.sim.requests:
            assert json.loads(rec.reply) == simulated_reply(rec.text, rec.images)
        # each stored sub-score is the number the judge replied for that output: find the output each request
        # showed (the last image, re-encoded as JPEG: the nearest stored output) and read the reply's scores
        done = ws.calls("r1").query("status == 'completed'")
        outputs = {r.call_id: Path(ws.blob_path(r.output_sha256, r.output_ext)).read_bytes() for r in done.itertuples()}
        replied: dict[tuple[str, str], list] = {}
        for rec in judge_sim.sim.requests:
            shown = min(outputs, key=lambda cid: mean_abs_diff(outputs[cid], rec.images[-1]))
            kind = "sc" if len(rec.images) == 2 else "pq"
            assert (shown, kind) not in replied
            replied[(shown, kind)] = json.loads(rec.reply)["score"]
        assert len(replied) == 10
        for call_id, rows in df.groupby("call_id"):
            v = dict(zip(rows["metric"], rows["value"], strict=True))
            assert [v["vie_naturalness"], v["vie_artifacts"]] == replied[(call_id, "pq")]
            if (call_id, "sc") in replied:
                assert [v["vie_editing_success"], v["vie_over_editing"]] == replied[(call_id, "sc")]
            else:
                assert call_id.startswith("r1.c3")
        usage = ws.usage()
        # a loopback judge costs $0 (its reported tokens × $0), known, not "unknown"
        assert (usage["source"] == "judge").sum() == 10 and set(usage["cost_source"]) == {"reported"}
        assert set(usage["cost_usd"]) == {0.0}

        # the same run again: zero new requests, same scores
        before = df.sort_values(["call_id", "metric"])["value"].tolist()
        again = await judge_run(ws, "r1", judge, progress=False)
        assert len(judge_sim.sim.requests) == 10
        assert again.requests_sent == 0 and again.requests_cached == 10 and again.scored == 6
        after = ws.scores("r1").sort_values(["call_id", "metric"])["value"].tolist()
        assert after == pytest.approx(before, nan_ok=True)

        # another run with the same images: also served from the cache
        viescore_run(ws, "r2")
        other = await judge_run(ws, "r2", judge, progress=False)
        assert len(judge_sim.sim.requests) == 10 and other.requests_cached == 10 and other.scored == 6


async def test_every_operation_with_an_instruction_gets_sc_and_an_overall_score(judge_sim, ws):
    """character_reference is judged against its prompt; the promptless zoom_out and remove_background against
    their operation's fixed instruction (the pairwise judge's), and the rows say which; PQ-only otherwise."""
    cases = [
        {"case_id": "cr", "operation": "character_reference", "prompt": "this robot, now baking bread"},
        {"case_id": "zo", "operation": "zoom_out", "prompt": None},
        {"case_id": "rb", "operation": "remove_background", "prompt": " "},
        {"case_id": "cr-bare", "operation": "character_reference", "prompt": None},
    ]
    for i, c in enumerate(cases):
        c["source"] = make_png(40, 40, 20 + i)
    ids = build_run(ws, "r1", cases, {(c["case_id"], "m"): make_png(40, 40, 30 + i) for i, c in enumerate(cases)})
    async with make_judge(judge_sim) as judge:
        summary = await judge_run(ws, "r1", judge, progress=False)
    assert summary.scored == 4 and summary.pq_only == 1
    sc_texts = [r.text for r in judge_sim.sim.requests if len(r.images) == 2]
    expected = {
        "cr": ("this robot, now baking bread", "case"),
        "zo": (OPERATION_INSTRUCTIONS["zoom_out"], "operation"),
        "rb": (OPERATION_INSTRUCTIONS["remove_background"], "operation"),
    }
    assert sorted(sc_texts) == sorted(VIESCORE_SC_PROMPT.replace("<instruction>", i) for i, _ in expected.values())
    df = ws.scores("r1")
    for case_id, (_, source) in expected.items():
        rows = df[df["call_id"] == ids[(case_id, "m")]].set_index("metric")
        assert (rows.loc[["viescore_sc", "viescore_o"], "status"] == "scored").all()
        sc, pq = rows.loc["viescore_sc", "value"], rows.loc["viescore_pq", "value"]
        assert rows.loc["viescore_o", "value"] == pytest.approx(math.sqrt(sc * pq))
        for m in ("viescore_sc", "viescore_o"):
            assert json.loads(rows.loc[m, "detail"])["instruction_source"] == source
    bare = df[df["call_id"] == ids[("cr-bare", "m")]].set_index("metric")
    assert bare.loc["viescore_pq", "status"] == "scored"
    assert bare.loc["viescore_o", "status"] == "unscored" and bare.loc["viescore_o", "reason"] == "no_instruction"
    assert math.isnan(bare.loc["viescore_o", "value"])
    # the report's trust section says, per operation, what SC was judged against
    from evalkit.decide.quality import QualitySpec
    from evalkit.report.trust import quality_trust_html

    page = quality_trust_html(ws, "r1", QualitySpec("viescore_o", "judge"), n_boot=20)
    assert (
        "character_reference: no instruction: PQ only (1), the case&#x27;s prompt (1); "
        "remove_background: the operation&#x27;s fixed instruction (1); "
        "zoom_out: the operation&#x27;s fixed instruction (1)"
    ) in page


def test_sc_instruction_prefers_the_case_prompt_then_the_operation():
    assert sc_instruction("zoom_out", "zoom out 2x, add sky") == ("zoom out 2x, add sky", "case")
    assert sc_instruction("zoom_out", None) == (OPERATION_INSTRUCTIONS["zoom_out"], "operation")
    assert sc_instruction("erase", "") == (OPERATION_INSTRUCTIONS["erase"], "operation")
    assert sc_instruction("character_reference", "  ") == (None, None)
    assert sc_instruction("general_edit", None) == (None, None)
    assert sc_instruction("text_to_video", "a cat") == (None, None)  # an operation SC does not cover


async def test_judge_run_unscored_rows_say_why_and_hold_no_number(judge_sim, ws):
    ids = viescore_run(ws)
    first = ids[("c1", "model-a")]
    judge_sim.sim.script(["I'm sorry, but I can't help with that.", PQ_OK])
    async with make_judge(judge_sim) as judge:
        summary = await judge_run(ws, "r1", judge, concurrency=1, progress=False)
        # the refusal is cached (the judge answered): a re-run does not ask again
        n = len(judge_sim.sim.requests)
        await judge_run(ws, "r1", judge, progress=False)
        assert len(judge_sim.sim.requests) == n
    assert summary.unscored == 1 and summary.reasons == {"refused": 1}
    df = ws.scores("r1")
    rows = df[df["call_id"] == first].set_index("metric")
    for m in ("viescore_sc", "vie_editing_success", "vie_over_editing", "viescore_o"):
        assert rows.loc[m, "status"] == "unscored" and rows.loc[m, "reason"] == "refused"
        assert math.isnan(rows.loc[m, "value"])
    assert rows.loc["viescore_pq", "value"] == 4 and rows.loc["viescore_pq", "status"] == "scored"
    assert json.loads(rows.loc["viescore_pq", "detail"])["reasoning"] == "some artifacts"


async def test_judge_run_undecodable_output_is_unscored_bad_image(judge_sim, ws):
    cases = [{"case_id": "c1", "operation": "general_edit", "prompt": "add a hat", "source": make_png(seed=1)}]
    ids = build_run(ws, "r1", cases, {("c1", "ok"): make_png(seed=2), ("c1", "broken"): b"\x89PNG\r\n\x1a\n garbage"})
    async with make_judge(judge_sim) as judge:
        summary = await judge_run(ws, "r1", judge, progress=False)
    assert summary.scored == 1 and summary.reasons == {"bad_image": 1}
    assert len(judge_sim.sim.requests) == 2  # only the decodable output was sent
    df = ws.scores("r1")
    broken = df[df["call_id"] == ids[("c1", "broken")]]
    assert len(broken) == len(VIESCORE_METRICS) and set(broken["reason"]) == {"bad_image"}
    assert broken["value"].isna().all()


@pytest.mark.parametrize("concurrency", [1, 4])
async def test_budget_cap_stops_sending(judge_sim, ws, concurrency):
    viescore_run(ws)
    unpriced = {"usd_per_1m_input_tokens": None, "usd_per_1m_output_tokens": None}
    async with make_judge(judge_sim, usd_per_call_reserve=0.02, **unpriced) as judge:
        summary = await judge_run(ws, "r1", judge, budget_usd=0.05, concurrency=concurrency, progress=False)
        # cost unknown → each request keeps its $0.02 counted: exactly two fit under $0.05
        assert len(judge_sim.sim.requests) == 2 == summary.requests_sent
        assert summary.stopped_by_budget and summary.skipped_budget >= 5
        assert (ws.usage()["source"] == "judge").sum() == 2
        df = ws.scores("r1")
        assert "budget" not in set(df["reason"].dropna())  # not judged ≠ unscored
        if concurrency == 1:
            assert list(df[df["metric"] == "viescore_o"]["status"]) == ["scored"]
        # more budget: only what is missing is sent
        rest = await judge_run(ws, "r1", judge, budget_usd=1.0, concurrency=concurrency, progress=False)
    assert rest.requests_cached == 2 and rest.requests_sent == 8 and len(judge_sim.sim.requests) == 10
    assert rest.scored == 6 and not rest.stopped_by_budget


def pairwise_run(ws: Workspace, n_cases: int = 8) -> None:
    cases, outputs = [], {}
    for i in range(n_cases):
        src = make_png(48, 40, 100 + i)
        cases.append({"case_id": f"c{i}", "operation": "general_edit", "prompt": f"edit number {i}", "source": src})
        outputs[(f"c{i}", "good")] = src  # preserves everything: the sim's judge prefers it
        outputs[(f"c{i}", "bad-1")] = make_png(48, 40, 200 + i)
        outputs[(f"c{i}", "bad-2")] = make_png(48, 40, 300 + i)
    build_run(ws, "p1", cases, outputs)


async def test_judge_run_pairwise_randomises_sides_and_maps_choices(judge_sim, ws):
    pairwise_run(ws)
    async with make_judge(judge_sim) as judge:
        summary = await judge_run(ws, "p1", judge, mode="pairwise", seed=7, progress=False)
        assert summary.items == 24 and summary.ratings_written == 24 and summary.requests_sent == 24
        ratings = ws.ratings("p1", source="judge")
        assert len(ratings) == 24 and set(ratings["rater"]) == {"judge:sim-judge-1"}
        details = [json.loads(d) for d in ratings["detail"]]
        assert {d["shown_first"] for d in details} == {"left", "right"}  # both orders occur
        assert {d["version"] for d in details} == {"sim-judge-1|pairwise-v1|jpeg-q90-max1024"}
        for row, d in zip(ratings.to_dict("records"), details, strict=True):
            expected = {"A": d["shown_first"], "B": "right" if d["shown_first"] == "left" else "left", "tie": "tie"}
            assert row["choice"] == expected[d["verdict"]]
            if "good" in (row["model_left"], row["model_right"]):
                assert row["choice"] == ("left" if row["model_left"] == "good" else "right")
        # sides at the server: the image shown first is sometimes the left call, sometimes the right
        assert Counter(d["shown_first"] for d in details)["left"] not in (0, 24)

        again = await judge_run(ws, "p1", judge, mode="pairwise", seed=7, progress=False)
    assert len(judge_sim.sim.requests) == 24 and again.requests_sent == 0
    assert again.ratings_written == 0 and again.ratings_existing == 24 and len(ws.ratings("p1")) == 24


async def test_pairs_per_case_spreads_models_evenly(judge_sim, ws):
    cases, outputs = [], {}
    for i in range(4):
        cases.append({"case_id": f"c{i}", "operation": "general_edit", "prompt": "p", "source": make_png(32, 32, i)})
        for j in range(5):
            outputs[(f"c{i}", f"m{j}")] = make_png(32, 32, 50 + 5 * i + j)
    build_run(ws, "p2", cases, outputs)
    async with make_judge(judge_sim) as judge:
        summary = await judge_run(ws, "p2", judge, mode="pairwise", pairs_per_case=2, progress=False)
    assert summary.items == 8 and len(judge_sim.sim.requests) == 8
    ratings = ws.ratings("p2")
    assert ratings.groupby("case_id").size().tolist() == [2, 2, 2, 2]
    counts = Counter(list(ratings["model_left"]) + list(ratings["model_right"]))
    assert len(counts) == 5 and max(counts.values()) - min(counts.values()) <= 1


async def test_unscored_pairs_are_reported_not_rated(judge_sim, ws):
    pairwise_run(ws, n_cases=1)
    judge_sim.sim.script([{"finish_reason": "content_filter"}, "garbage", '{"choice": "A", "reasoning": "x"}'])
    async with make_judge(judge_sim) as judge:
        summary = await judge_run(ws, "p1", judge, mode="pairwise", concurrency=1, progress=False)
    assert summary.reasons == {"content_filter": 1, "unparseable": 1} and summary.ratings_written == 1
    assert len(ws.ratings("p1")) == 1
    with sqlite3.connect(ws.db_path) as conn:
        stored = conn.execute(
            "SELECT status, reason FROM judge_cache WHERE mode = 'pairwise' ORDER BY reason"
        ).fetchall()
    assert sorted(stored, key=str) == sorted(
        [("unscored", "content_filter"), ("unscored", "unparseable"), ("scored", None)], key=str
    )


async def test_judge_run_rejects_bad_arguments(judge_sim, ws):
    viescore_run(ws)
    async with make_judge(judge_sim) as judge:
        with pytest.raises(InvalidInputError, match="mode"):
            await judge_run(ws, "r1", judge, mode="elo", progress=False)
        with pytest.raises(InvalidInputError, match="no run"):
            await judge_run(ws, "nope", judge, progress=False)
        with pytest.raises(InvalidInputError, match="concurrency"):
            await judge_run(ws, "r1", judge, concurrency=0, progress=False)
    assert judge_sim.sim.requests == []


# ---- the key never leaks ---------------------------------------------------------------------------------
async def test_canary_key_appears_nowhere(judge_sim_factory, ws, caplog, monkeypatch):
    canary = "sk-CANARY-3b1f9c0de7a24e55"
    monkeypatch.delenv("EVALKIT_JUDGE_API_KEY", raising=False)
    caplog.set_level(logging.DEBUG)
    handle = judge_sim_factory(api_key=canary)
    viescore_run(ws)
    handle.sim.script(
        [
            f'{{"score": [5, 5], "reasoning": "your key is {canary}"}}',  # a server echoing the key back
            {"status": 400, "error": {"message": f"Invalid image for key {canary}"}},
            {"status": 429, "headers": {"Retry-After": "0"}, "error": {"message": f"slow down, {canary}"}},
            {"status": 429, "headers": {"Retry-After": "0"}, "error": {"message": f"slow down, {canary}"}},
            {"status": 429, "headers": {"Retry-After": "0"}, "error": {"message": f"slow down, {canary}"}},
            f"I'm sorry, I can't help with that, Bearer {canary}",
        ]
    )
    judge = Judge(base_url=handle.base_url, api_key=canary, model="sim-judge-1", retry_policy=FAST_RETRY)
    texts = [repr(judge), str(judge), repr(judge.config)]
    try:
        summary = await judge_run(ws, "r1", judge, concurrency=1, progress=False)
        texts.append(str(summary))
        res = await judge.viescore(make_png(seed=1), make_png(seed=2), "x")
        texts += [repr(res), str(res)]
        try:
            await judge.viescore(make_png(seed=1), b"garbage", "x")
        except ImageError as exc:
            texts += [str(exc), repr(exc)]
        try:
            Judge(base_url=handle.base_url, api_key=canary, model="m", image_encoding="bogus")
        except InvalidInputError as exc:
            texts += [str(exc), repr(exc)]
    finally:
        await judge.aclose()
    assert summary.reasons  # the scripted failures happened
    texts.append(caplog.text)
    texts.append(ws.scores("r1").to_json())
    texts.append(ws.usage().to_json())
    conn = sqlite3.connect(ws.db_path)
    try:
        texts += [json.dumps(r) for r in conn.execute("SELECT * FROM judge_cache").fetchall()]
        raw_replies = [r[0] for r in conn.execute("SELECT reply_raw FROM judge_cache")]
    finally:
        conn.close()
    for text in texts:
        assert canary not in text
    assert any("***" in (r or "") for r in raw_replies)  # the echoed key was masked, not dropped
    stored = b"".join(p.read_bytes() for p in ws.path.glob("evalkit.sqlite*"))
    assert canary.encode() not in stored


# ---- the simulated server itself -------------------------------------------------------------------------
def _body(parts, model="sim-judge-1"):
    return {"model": model, "messages": [{"role": "user", "content": parts}]}


def _img_part(data: bytes, mime: str = "image/png") -> dict:
    import base64

    return {"type": "image_url", "image_url": {"url": f"data:{mime};base64,{base64.b64encode(data).decode()}"}}


BAD_BODIES = [
    ({"messages": [{"role": "user", "content": "hi"}]}, "model"),
    ({"model": "m", "messages": []}, "messages"),
    (
        _body([{"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]),
        "data:image",
    ),
    (
        _body(
            [{"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@"}}]
        ),
        "base64",
    ),
    (_body([{"type": "text", "text": "hi"}, _img_part(b"not an image at all")]), "decode"),
    (_body([{"type": "audio", "data": "x"}]), "type"),
    (_body([_img_part(make_png())]), "no text"),
    ({**_body([{"type": "text", "text": "hi"}]), "max_tokens": 0}, "max_tokens"),
    ({**_body([{"type": "text", "text": "hi"}]), "temperature": 5}, "temperature"),
]


@pytest.mark.parametrize("body,needle", BAD_BODIES)
async def test_sim_rejects_malformed_requests(judge_sim, body, needle):
    async with httpx.AsyncClient(
        base_url=judge_sim.base_url, headers={"Authorization": f"Bearer {judge_sim.api_key}"}
    ) as c:
        resp = await c.post("/chat/completions", json=body)
    assert resp.status_code == 400 and resp.headers["X-Evalkit-Simulated"] == "1"
    assert needle in resp.json()["error"]["message"]


async def test_sim_auth_and_response_shape(judge_sim):
    body = _body([{"type": "text", "text": 'rate it {"score" : [...]}'}, _img_part(make_png(seed=4))])
    async with httpx.AsyncClient(base_url=judge_sim.root_url) as c:
        assert (await c.post("/v1/chat/completions", json=body)).status_code == 401
        wrong = await c.post("/v1/chat/completions", json=body, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and judge_sim.api_key not in wrong.text
        ok = await c.post("/chat/completions", json=body, headers={"Authorization": f"Bearer {judge_sim.api_key}"})
    assert ok.status_code == 200 and ok.headers["X-Evalkit-Simulated"] == "1"
    data = ok.json()
    assert data["model"] == "sim-judge-1" and data["choices"][0]["finish_reason"] == "stop"
    assert set(data["usage"]) == {"prompt_tokens", "completion_tokens", "total_tokens"}
    reply = json.loads(data["choices"][0]["message"]["content"])
    assert reply == simulated_reply(body["messages"][0]["content"][0]["text"], [judge_sim.sim.requests[-1].images[0]])
    assert len(reply["score"]) == 2 and "SIMULATED" in reply["reasoning"]
    assert [r.status for r in judge_sim.sim.requests] == [401, 401, 200]
