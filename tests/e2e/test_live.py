"""Live tests against the real WaveSpeed API and a real OpenAI-compatible judge.

Marked ``live``; each skips unless its key is set (``WAVESPEED_API_KEY``; ``EVALKIT_JUDGE_API_KEY`` and
``EVALKIT_JUDGE_MODEL``), so CI and a machine without keys never reach the network. They are billed:
one ``qwen-edit`` edit (list price $0.02) and one VIEScore (two chat completions of the judge model).
Run them alone with ``python -m pytest -m live``. Stability AI's and Hugging Face's live tests are in
their provider test files.
"""

from __future__ import annotations

import io
import os

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
        list_price = provider.prepare(request).price_usd
        outcome = await provider.edit(request)
        texts = [repr(provider), repr(outcome), repr(outcome.error), str(outcome.metadata)]
    assert outcome.ok, outcome.error
    assert not outcome.simulated
    assert outcome.prediction_id and outcome.width and outcome.height
    assert outcome.cost_usd == pytest.approx(list_price) and outcome.cost_source == "list_price"
    assert outcome.latency.total_ms and outcome.latency.total_ms > 0
    Image.open(io.BytesIO(outcome.image)).verify()  # a real image came back
    assert all(key not in t for t in texts)


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
    # a refusal is an honest outcome (unscored, with its reason); a score must be in range
    assert result.status in ("scored", "unscored"), result
    if result.status == "scored":
        assert 0 <= result.o <= 10 and 0 <= result.sc <= 10 and 0 <= result.pq <= 10
    else:
        assert result.reason
    assert key not in text
