"""Live tests against the real WaveSpeed API and a real OpenAI-compatible judge.

Marked ``live``; each skips unless its key is set (``WAVESPEED_API_KEY``; ``EVALKIT_JUDGE_API_KEY`` and
``EVALKIT_JUDGE_MODEL``), so CI and a machine without keys never reach the network. They are billed:
one ``qwen-edit`` edit (list price $0.02) and one VIEScore (two chat completions of the judge model).
Run them alone with ``python -m pytest -m live``. Stability AI's and Hugging Face's live tests are in
their provider test files.

What they check is what the provider reports, not the catalogue: the edit's recorded cost is the price
WaveSpeed's pricing API quotes for that very request, and the account's balance drops by it (when the
account shows a USD balance and nothing else spends from it meanwhile); the judge's scores are the numbers
its replies gave, and each reply carries the token usage the API billed.
"""

from __future__ import annotations

import asyncio
import io
import os
import time

import pytest
from PIL import Image

from evalkit.catalog import Catalog
from evalkit.images import load_image
from evalkit.providers.base import EditRequest, ImageEditOptions
from evalkit.providers.wavespeed import WaveSpeedEditProvider

pytestmark = pytest.mark.live


def photo_like_png(w: int = 512, h: int = 384) -> bytes:
    """A smooth two-colour gradient with a disc: enough structure for a model to edit and a judge to see."""
    import numpy as np

    y, x = np.mgrid[0:h, 0:w]
    rgb = np.stack([x * 255 // w, y * 255 // h, np.full_like(x, 120)], axis=-1).astype("uint8")
    rgb[(x - w // 2) ** 2 + (y - h // 2) ** 2 < (h // 4) ** 2] = (230, 40, 40)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def _wavespeed_balance_usd() -> float | None:
    """The account's balance as WaveSpeed reports it (``evalkit doctor``'s free check), None when not in USD."""
    from evalkit.doctor import run_doctor

    (check,) = run_doctor(providers=("wavespeed",))
    assert check.ok, check.problem
    return check.balance_usd


async def test_live_wavespeed_qwen_edit():
    key = os.environ.get("WAVESPEED_API_KEY")
    if not key:
        pytest.skip("WAVESPEED_API_KEY is not set")
    model = Catalog.load().get("qwen-edit")
    request = EditRequest(
        model=model,
        images=(load_image(photo_like_png(), name="live.png"),),
        prompt="make the red disc blue",
        options=ImageEditOptions(seed=7),
    )
    async with WaveSpeedEditProvider() as provider:
        # what WaveSpeed says this very request costs (its pricing API), asked before sending it
        quotes = await asyncio.to_thread(provider.quote_prices, [provider.prepare(request)])
        (quote,) = quotes.values()
        assert quote.usd is not None and quote.usd > 0, quote
        before = await asyncio.to_thread(_wavespeed_balance_usd)
        outcome = await provider.edit(request)
        texts = [repr(provider), repr(outcome), repr(outcome.error), str(outcome.metadata)]
    assert outcome.ok, outcome.error
    assert not outcome.simulated
    assert outcome.prediction_id and outcome.width and outcome.height
    # the recorded cost is the provider's price for the request, not the catalogue's
    assert outcome.cost_usd == pytest.approx(quote.usd) and outcome.cost_source == "quoted"
    assert outcome.latency.total_ms and outcome.latency.total_ms > 0
    Image.open(io.BytesIO(outcome.image)).verify()  # a real image came back
    assert all(key not in t for t in texts)
    if before is not None:  # the bill: the balance drops by the recorded cost (it may take a while to show)
        deadline, spent = time.monotonic() + 60, 0.0
        while time.monotonic() < deadline:
            after = await asyncio.to_thread(_wavespeed_balance_usd)
            assert after is not None
            spent = before - after
            if spent >= outcome.cost_usd - 0.005:
                break
            await asyncio.sleep(5)
        assert spent == pytest.approx(outcome.cost_usd, abs=0.01), (
            f"the balance dropped by ${spent:.4f}, evalkit recorded ${outcome.cost_usd:.4f} "
            "(another client spending from this account at the same time also moves the balance)"
        )


async def test_live_judge_viescore():
    if not (os.environ.get("EVALKIT_JUDGE_API_KEY") and os.environ.get("EVALKIT_JUDGE_MODEL")):
        pytest.skip("EVALKIT_JUDGE_API_KEY and EVALKIT_JUDGE_MODEL are not both set")
    from evalkit.scoring.judge import Judge, JudgeConfig

    source = photo_like_png()
    edited = Image.open(io.BytesIO(source)).convert("RGB")
    edited.paste((40, 40, 230), (0, 0, 64, 64))  # not the requested edit: the score only has to be a real one
    buf = io.BytesIO()
    edited.save(buf, format="PNG")
    key = os.environ["EVALKIT_JUDGE_API_KEY"]
    async with Judge(JudgeConfig.from_env()) as judge:
        result = await judge.viescore(source, buf.getvalue(), "make the red disc blue")
        text = repr(judge) + repr(result)
    # a refusal is an honest outcome (unscored, with its reason); anything else unscored is a bug
    assert result.status == "scored" or result.reason == "refused", result
    assert len(result.replies) == 2 and all(r.sent and r.http_status == 200 for r in result.replies)
    for reply in result.replies:  # the API's own account of each billed request
        assert reply.usage and reply.usage.get("prompt_tokens", 0) > 0 and reply.usage.get("completion_tokens", 0) > 0
    if result.status == "scored":
        # the scores are the numbers the judge's replies gave
        for reply, parts in (
            (result.sc_reply, ("editing_success", "over_editing")),
            (result.pq_reply, ("naturalness", "artifacts")),
        ):
            assert reply is not None and reply.raw and reply.parsed
            numbers = [float(x) for x in reply.parsed["score"]]
            assert [getattr(result, p) for p in parts] == numbers
        assert result.sc == min(result.editing_success, result.over_editing)
        assert result.pq == min(result.naturalness, result.artifacts)
        assert 0 <= result.o <= 10 and result.o == pytest.approx((result.sc * result.pq) ** 0.5)
    else:
        assert result.reason
    assert key not in text
