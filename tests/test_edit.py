"""generate_image_edit(): the original Image Studio entry point, against the local WaveSpeed server."""

from __future__ import annotations

import asyncio
import base64
import io

import pytest
from PIL import Image

from evalkit import ImageEditOptions, Workspace, agenerate_image_edit, generate_image_edit
from evalkit.credentials import Secret
from evalkit.errors import Category, EvalkitError, ProviderError
from tests.engine.test_runner import FAST_POLL
from tests.plugins.common import make_png


def _opts(sim) -> dict:
    return {"wavespeed": {"base_url": sim.base_url, "api_key": Secret(sim.api_key), "poll": FAST_POLL}}


def test_original_app_call_shape_works_and_records_usage(wavespeed_sim, tmp_path):
    png = make_png(300, 200)
    image_base64 = base64.b64encode(png).decode()  # what the original app passed
    result = generate_image_edit(
        image_base64,
        "Change the background to a beach scene",
        operation="general_edit",
        model="qwen-edit-plus",
        options={"width": 1024, "height": 1024, "seed": 42},
        user_id="user-7",
        workspace=tmp_path,
        provider_options=_opts(wavespeed_sim),
    )
    img = Image.open(io.BytesIO(result.image_bytes))
    assert (img.width, img.height) == (result.width, result.height) == (1024, 1024)
    assert result.model_id == "qwen-edit-plus" and result.cost_usd == 0.02 and result.simulated
    assert result.prediction_id == wavespeed_sim.sim.submits[0].prediction_id
    assert result.latency.total_ms > 0
    usage = Workspace(tmp_path).usage()
    assert list(usage[["user_id", "model_id", "operation", "cost_usd", "source"]].iloc[0]) == [
        "user-7",
        "qwen-edit-plus",
        "general_edit",
        0.02,
        "generate_image_edit",
    ]


@pytest.mark.parametrize("kind", ["bytes", "data_uri", "path", "pil"])
async def test_accepts_the_usual_image_forms(kind, wavespeed_sim, tmp_path):
    png = make_png(64, 64)
    value = {
        "bytes": png,
        "data_uri": "data:image/png;base64," + base64.b64encode(png).decode(),
        "path": tmp_path / "in.png",
        "pil": Image.open(io.BytesIO(png)),
    }[kind]
    (tmp_path / "in.png").write_bytes(png)
    result = await agenerate_image_edit(
        value, "make it blue", model="qwen-edit", workspace=False, provider_options=_opts(wavespeed_sim)
    )
    assert result.image_bytes and result.model_id == "qwen-edit"


async def test_default_model_multi_image_and_inpaint(wavespeed_sim):
    a, b = make_png(80, 60, seed=1), make_png(80, 60, seed=2)
    r = await agenerate_image_edit(
        [a, b],
        "put the cat from the second image on the sofa",
        operation="multi_image",
        workspace=False,
        provider_options=_opts(wavespeed_sim),
    )
    assert r.model_id == "qwen-edit-plus"  # the original app's default model
    mask = Image.new("L", (80, 60), 0)
    mask.paste(255, (20, 20, 60, 40))
    buf = io.BytesIO()
    mask.save(buf, format="PNG")
    r = await agenerate_image_edit(
        a,
        "a red ball",
        operation="inpaint",
        model="z-image-turbo-inpaint",
        options=ImageEditOptions(mask=buf.getvalue()),
        workspace=False,
        provider_options=_opts(wavespeed_sim),
    )
    assert r.model_id == "z-image-turbo-inpaint" and r.cost_usd == 0.02


async def test_an_input_over_the_model_limit_is_downscaled_and_says_so(wavespeed_sim, tmp_path):
    (tmp_path / "catalog").mkdir()
    (tmp_path / "catalog" / "small.toml").write_text("""
[[model]]
id = "qwen-edit-small-inputs"
display_name = "Qwen Image Edit (inputs ≤ 256 px)"
vendor = "Alibaba (Qwen)"
provider = "wavespeed"
endpoint = "wavespeed-ai/qwen-image/edit"
operations = ["general_edit"]
inputs = { param = "image" }
size = { kind = "wh", param = "size", min_px = 256, max_px = 1536 }
output_formats = ["jpeg", "png", "webp"]
output_format_param = "output_format"
default_output_format = "jpeg"
sync_mode = true
base64_output = true
seed = { param = "seed", min = -1, max = 2147483647, default = -1 }
price = { kind = "flat", usd = 0.02 }
limits = { max_input_side = 256 }
""")
    r = await agenerate_image_edit(
        make_png(1000, 500),
        "make it blue",
        model="qwen-edit-small-inputs",
        workspace=tmp_path,
        provider_options=_opts(wavespeed_sim),
    )
    assert r.input_resized and any("resized 1000×500→256×128" in n for n in r.notes)


async def test_a_failed_edit_raises_a_categorised_error(wavespeed_sim):
    wavespeed_sim.sim.add_fault("moderation", count=1)
    with pytest.raises(ProviderError) as info:
        await agenerate_image_edit(
            make_png(), "x", model="qwen-edit", workspace=False, provider_options=_opts(wavespeed_sim)
        )
    assert info.value.category == Category.MODERATION and info.value.prediction_id


async def test_the_sync_call_inside_an_event_loop_says_what_to_do():
    with pytest.raises(EvalkitError, match="agenerate_image_edit"):
        generate_image_edit(make_png(), "x", model="qwen-edit", workspace=False)
    await asyncio.sleep(0)


async def test_the_ledger_row_exists_before_the_result_is_awaited(wavespeed_sim_factory, tmp_path):
    """Money rule: a paid request is in the usage ledger before its result is awaited — pending, then settled."""
    import pandas as pd

    from tests.plugins.common import wait_until

    sim = wavespeed_sim_factory(fixed_latency_ms=1500)
    task = asyncio.create_task(
        agenerate_image_edit(
            make_png(), "make it blue", model="qwen-edit", workspace=tmp_path, provider_options=_opts(sim)
        )
    )

    def accepted_and_noted() -> bool:
        usage = Workspace(tmp_path).usage()
        return bool(len(usage)) and usage.prediction_id.notna().any()

    await wait_until(accepted_and_noted, tries=250)
    pending = Workspace(tmp_path).usage()
    assert not task.done(), "the job finished before the check: the test proves nothing"
    assert len(pending) == 1 and pending.cost_source.iloc[0] == "pending" and pd.isna(pending.cost_usd.iloc[0])
    assert pending.prediction_id.iloc[0] == sim.sim.submits[0].prediction_id  # noted when accepted
    result = await task
    settled = Workspace(tmp_path).usage()
    assert len(settled) == 1 and settled.cost_usd.iloc[0] == result.cost_usd == 0.02
    assert settled.cost_source.iloc[0] not in ("pending", "unknown")


async def test_a_request_that_dies_while_awaited_stays_in_the_ledger_as_unknown(wavespeed_sim_factory, tmp_path):
    from tests.plugins.common import wait_until

    sim = wavespeed_sim_factory(fixed_latency_ms=5000)
    task = asyncio.create_task(
        agenerate_image_edit(
            make_png(), "make it blue", model="qwen-edit", workspace=tmp_path, provider_options=_opts(sim)
        )
    )
    await wait_until(lambda: bool(sim.sim.submits), tries=250)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    usage = Workspace(tmp_path).usage()
    assert len(usage) == 1 and usage.cost_source.iloc[0] == "unknown"  # possibly paid: kept, not dropped
