"""Bad input at every entry point: a clear evalkit error, nothing spent, and the workspace left intact.

Entry points: :func:`evalkit.agenerate_image_edit`, the runner (:func:`evalkit.engine.runner.arun`) and the CLI
(``python -m evalkit run …`` must exit 2 with ``error: <one line>`` plus a hint line, and no Python
traceback). Every test that touches a workspace starts from a copy of one holding a finished run, and
checks afterwards that the run's rows and every stored file are unchanged.

"Clear" means: an :class:`~evalkit.errors.EvalkitError` subclass whose message names the problem (the
file, the id, the variable…), raised without a chained library exception that a traceback would show.

Property-based tests (hypothesis) cover the request builder (random sizes, aspect ratios and option
values either give a body the catalogue schema accepts or an InvalidInputError — never anything else)
and the suite loader (random prompts, sizes, params and languages give a suite or a SuiteError).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import math
import os
import shutil
import sqlite3
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from evalkit.catalog import Catalog
from evalkit.credentials import Secret
from evalkit.edit import agenerate_image_edit
from evalkit.engine.runner import arun
from evalkit.errors import (
    EvalkitError,
    ImageError,
    InvalidInputError,
    MissingKeyError,
    ProviderError,
    SuiteError,
    UnknownModelError,
    WorkspaceError,
)
from evalkit.images import InputImage, load_image
from evalkit.providers.base import EditRequest, ImageEditOptions
from evalkit.providers.retry import RetryPolicy
from evalkit.providers.wavespeed import PollSchedule, WaveSpeedEditProvider
from evalkit.sim.server import start_in_thread
from evalkit.sim.wavespeed import start_wavespeed_sim
from evalkit.sim.wavespeed.schema import body_problem
from evalkit.store import Workspace
from evalkit.suites import MAX_PROMPT_CHARS, load_suite
from tests.plugins.common import toml_value

FAST_POLL = PollSchedule(initial_delay_s=0.01, factor=1.5, quick_polls=3, min_interval_s=0.02, max_interval_s=0.1)
FAST_RETRY = RetryPolicy(max_attempts=3, base_s=0.01, max_backoff_s=0.02, max_retry_after_s=0.02)
BEFORE = "before"  # the run every workspace copy already holds


# ---- images made here ----------------------------------------------------------------------------


def encode(img: Image.Image, fmt: str, **kw: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def photo(size: tuple[int, int] = (96, 64), colour=(200, 60, 40)) -> Image.Image:
    img = Image.new("RGB", size, colour)
    img.paste((30, 90, 200), (size[0] // 4, size[1] // 4, size[0] // 2, size[1] // 2))
    return img


PNG = encode(photo(), "PNG")
JPEG = encode(photo(), "JPEG", quality=90)


def png_declaring(width: int, height: int) -> bytes:
    """A real PNG whose header claims ``width``×``height`` (a decompression bomb's calling card)."""
    data = bytearray(PNG)
    ihdr = b"IHDR" + struct.pack(">II", width, height) + bytes(data[24:29])
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(ihdr) & 0xFFFFFFFF)
    return bytes(data)


def animated_gif() -> bytes:
    frames = [Image.new("P", (96, 64), i * 40) for i in range(3)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    return buf.getvalue()


BROKEN_IMAGES = {  # name -> (bytes, words the message must contain)
    "random bytes": (os.urandom(512), ["not an image evalkit can read"]),
    "text named .png": (b"just some notes, not pixels\n", ["not an image evalkit can read"]),
    "truncated png": (PNG[: len(PNG) // 2], ["corrupt or truncated"]),
    "truncated jpeg": (JPEG[: len(JPEG) * 2 // 3], ["truncated"]),
    "empty": (b"", ["empty (0 bytes)"]),
    "bomb over evalkit's cap": (png_declaring(10_000, 10_000), ["decompression-bomb guard"]),
    "bomb over PIL's cap": (png_declaring(100_000, 100_000), ["decompression-bomb guard"]),
}
ODD_BUT_FINE = {  # accepted and normalised to something every provider takes
    "cmyk jpeg": encode(photo().convert("CMYK"), "JPEG"),
    "16-bit png": encode(Image.new("I;16", (96, 64), 40000), "PNG"),
    "animated gif": animated_gif(),
    "palette png with transparency": encode(photo().convert("P"), "PNG", transparency=0),
    "png named .jpg": PNG,
}


# ---- shared plumbing -----------------------------------------------------------------------------


def assert_clear(exc: BaseException, cls: type[EvalkitError], *words: str) -> None:
    """An evalkit error of ``cls`` naming the problem (``words``, any case), with no library exception chained to it."""
    assert isinstance(exc, cls), f"{type(exc).__name__}: {exc}"
    text = str(exc)
    for w in words:
        assert w.lower() in text.lower(), f"{w!r} not in {text!r}"
    assert exc.__cause__ is None and (exc.__context__ is None or exc.__suppress_context__), (
        f"a traceback would show the library error behind it: {exc.__context__!r}"
    )


@pytest.fixture(scope="module")
def ws_sim(catalog):
    handle = start_wavespeed_sim(catalog, time_scale=0.0004, output_max_side=256)
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture
def sim(ws_sim):
    ws_sim.sim.reset()
    return ws_sim


def ws_options(handle, **kw) -> dict:
    return {
        "wavespeed": {
            "base_url": handle.base_url,
            "api_key": Secret(handle.api_key),
            "poll": FAST_POLL,
            "retry": FAST_RETRY,
            **kw,
        }
    }


def request_count(handle) -> int:
    s = handle.sim.stats()
    return s["submit"] + s["poll"] + s["download"] + s["upload"] + s["unauthorized"]


@pytest.fixture(scope="module")
def template_ws(ws_sim, tmp_path_factory) -> Path:
    """A workspace holding one finished run (outputs, inputs, usage) — copied for each test."""
    path = tmp_path_factory.mktemp("template") / "ws"
    res = asyncio.run(
        arun(
            "smoke",
            models="qwen-edit,image-zoom-out",
            workspace=path,
            run_id=BEFORE,
            progress=False,
            provider_options=ws_options(ws_sim),
        )
    )
    assert res.completed == 2
    return path


@pytest.fixture
def ws(template_ws, tmp_path) -> Path:
    dest = tmp_path / "ws"
    shutil.copytree(template_ws, dest)
    return dest


def state(path: Path) -> dict:
    """Everything a bad input must not change: the earlier run's rows, the usage ledger and every file."""
    con = sqlite3.connect(f"file:{path / 'evalkit.sqlite'}?mode=ro", uri=True)
    con.row_factory = sqlite3.Row
    try:
        tables = {
            t: [dict(r) for r in con.execute(f"SELECT * FROM {t} WHERE run_id = ? ORDER BY rowid", (BEFORE,))]
            for t in ("runs", "cases", "calls")
        }
        tables["usage"] = [dict(r) for r in con.execute("SELECT * FROM usage ORDER BY usage_id")]
        runs = [r[0] for r in con.execute("SELECT run_id FROM runs")]
    finally:
        con.close()
    blobs = {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted((path / "blobs").rglob("*"))
        if p.is_file()
    }
    return {"tables": tables, "blobs": blobs, "runs": runs}


def assert_intact(before: dict, path: Path, *, new_runs: bool = False) -> None:
    after = state(path)
    assert after["tables"] == before["tables"], "the earlier run's rows changed"
    assert after["blobs"] == before["blobs"], "stored files changed (or files were added for a refused input)"
    if not new_runs:
        assert after["runs"] == before["runs"], f"a refused input left a run behind: {after['runs']}"


def write_suite(folder: Path, cases: list[dict], images: dict[str, bytes]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for rel, data in images.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    lines = []
    for case in cases:
        lines.append("[[case]]")
        lines += [f"{k} = {toml_value(v)}" for k, v in case.items()]
    (folder / "suite.toml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def edit_case(case_id: str = "c1", image: str = "images/a.png", **kw) -> dict:
    return {
        "id": case_id,
        "operation": "general_edit",
        "category": "color_alter",
        "prompt": "Make it blue",
        "images": [image],
        **kw,
    }


# ---- generate_image_edit: images ----------------------------------------------------------------


@pytest.mark.parametrize("name", list(BROKEN_IMAGES))
async def test_broken_image_is_refused_before_anything_is_sent(name, sim, ws):
    data, words = BROKEN_IMAGES[name]
    before = state(ws)
    with pytest.raises(ImageError) as info:
        await agenerate_image_edit(
            data, "make it blue", model="qwen-edit", workspace=ws, provider_options=ws_options(sim)
        )
    assert_clear(info.value, ImageError, "image", *words)
    assert request_count(sim) == 0
    assert_intact(before, ws)


async def test_broken_image_files_are_named_in_the_error(sim, tmp_path):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ImageError) as info:
        await agenerate_image_edit(empty, "x", model="qwen-edit", workspace=False, provider_options=ws_options(sim))
    assert_clear(info.value, ImageError, "empty.png", "0 bytes")
    with pytest.raises(ImageError) as info:
        await agenerate_image_edit(
            tmp_path / "nope.png", "x", model="qwen-edit", workspace=False, provider_options=ws_options(sim)
        )
    assert_clear(info.value, ImageError, "nope.png", "not found")
    with pytest.raises(ImageError) as info:  # a string that is neither a file nor base64
        await agenerate_image_edit(
            "./no/such/photo.jpg", "x", model="qwen-edit", workspace=False, provider_options=ws_options(sim)
        )
    assert_clear(info.value, ImageError, "neither an existing file path nor valid base64")
    assert request_count(sim) == 0


@pytest.mark.parametrize("name", list(ODD_BUT_FINE))
async def test_odd_but_valid_images_are_normalised_and_run(name, sim, tmp_path):
    path = tmp_path / ("photo.jpg" if name.endswith(".jpg") else "input.bin")
    path.write_bytes(ODD_BUT_FINE[name])
    result = await agenerate_image_edit(
        path, "make it blue", model="qwen-edit", workspace=False, provider_options=ws_options(sim)
    )
    assert result.image_bytes and result.simulated and result.width and result.height
    sent = load_image(ODD_BUT_FINE[name])
    assert sent.mime in ("image/png", "image/jpeg") and sent.mode in ("RGB", "RGBA", "L", "LA")
    assert len(sim.sim.submits) == 1


async def test_odd_but_valid_images_run_through_a_suite(sim, tmp_path):
    images = {
        f"images/{i}.{'gif' if 'gif' in n else 'jpg' if 'jpeg' in n else 'png'}": d
        for i, (n, d) in enumerate(ODD_BUT_FINE.items())
    }
    cases = [edit_case(f"odd-{i}", rel) for i, rel in enumerate(images)]
    suite = write_suite(tmp_path / "odd", cases, images)
    res = await arun(
        str(suite), models="qwen-edit", workspace=tmp_path / "ws", progress=False, provider_options=ws_options(sim)
    )
    assert res.completed == res.planned == len(ODD_BUT_FINE) and res.failed == 0


async def test_mask_of_the_wrong_size(sim, catalog):
    mask = encode(Image.new("L", (50, 50), 255), "PNG")
    with pytest.raises(InvalidInputError) as info:
        await agenerate_image_edit(
            PNG,
            "a red ball",
            operation="inpaint",
            model="z-image-turbo-inpaint",
            options={"mask": mask},
            workspace=False,
            provider_options=ws_options(sim),
        )
    assert_clear(info.value, InvalidInputError, "mask is 50×50", "96×64")
    with pytest.raises(ImageError) as info:
        await agenerate_image_edit(
            PNG,
            "a red ball",
            operation="inpaint",
            model="z-image-turbo-inpaint",
            options={"mask": b"not a mask"},
            workspace=False,
            provider_options=ws_options(sim),
        )
    assert_clear(info.value, ImageError, "mask")
    assert request_count(sim) == 0


async def test_mask_of_the_wrong_size_in_a_suite_is_a_suite_error(sim, tmp_path, ws):
    suite = write_suite(
        tmp_path / "masks",
        [{**edit_case("m1"), "operation": "inpaint", "category": "inpaint", "mask": "masks/m.png"}],
        {"images/a.png": PNG, "masks/m.png": encode(Image.new("L", (40, 40), 255), "PNG")},
    )
    before = state(ws)
    with pytest.raises(SuiteError) as info:
        await arun(
            str(suite), models="z-image-turbo-inpaint", workspace=ws, progress=False, provider_options=ws_options(sim)
        )
    assert_clear(info.value, SuiteError, "case 'm1'", "40×40", "96×64")
    assert_intact(before, ws)


# ---- generate_image_edit: prompts, models, keys ---------------------------------------------------


async def test_unknown_model_suggests_the_closest(sim):
    with pytest.raises(UnknownModelError) as info:
        await agenerate_image_edit(
            PNG, "make it blue", model="flux-kontext-pr", workspace=False, provider_options=ws_options(sim)
        )
    assert_clear(info.value, UnknownModelError, "flux-kontext-pr", "did you mean", "flux-kontext-pro")
    assert request_count(sim) == 0


async def test_operation_the_model_lacks_and_empty_prompt(sim):
    with pytest.raises(InvalidInputError) as info:
        await agenerate_image_edit(
            PNG, "x", operation="zoom_out", model="qwen-edit", workspace=False, provider_options=ws_options(sim)
        )
    assert_clear(info.value, InvalidInputError, "qwen-edit", "zoom_out")
    with pytest.raises(InvalidInputError) as info:
        await agenerate_image_edit(PNG, "   ", model="qwen-edit", workspace=False, provider_options=ws_options(sim))
    assert_clear(info.value, InvalidInputError, "needs a prompt")
    with pytest.raises(InvalidInputError) as info:
        await agenerate_image_edit(
            PNG, "x", operation="paint-it-black", workspace=False, provider_options=ws_options(sim)
        )
    assert_clear(info.value, InvalidInputError, "unknown operation", "paint-it-black")
    assert request_count(sim) == 0


@pytest.mark.parametrize(
    "model,env_var",
    [
        ("qwen-edit", "WAVESPEED_API_KEY"),
        ("stability-search-replace", "STABILITY_API_KEY"),
        ("hf-flux-kontext-dev", "HF_TOKEN"),
    ],
)
async def test_missing_key_names_the_variable_and_sends_nothing(
    model, env_var, sim, stability_sim, huggingface_sim, monkeypatch, ws
):
    for var in ("WAVESPEED_API_KEY", "STABILITY_API_KEY", "HF_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    options = {
        "wavespeed": {"base_url": sim.base_url, "poll": FAST_POLL},
        "stability": {"base_url": stability_sim.base_url, "poll_interval_s": 0.01},
        "huggingface": {"endpoint_url": huggingface_sim.base_url},
    }
    before = state(ws)
    with pytest.raises(MissingKeyError) as info:
        await agenerate_image_edit(
            PNG,
            "make it blue",
            model=model,
            options={"extra": {"search_prompt": "square"}},
            workspace=ws,
            provider_options=options,
        )
    assert_clear(info.value, MissingKeyError, env_var, "is not set")
    assert info.value.env_var == env_var
    assert request_count(sim) == 0 and not stability_sim.sim.requests and not huggingface_sim.sim.requests
    assert_intact(before, ws)


async def test_huge_prompt_is_refused_before_paying(sim):
    with pytest.raises(InvalidInputError) as info:
        await agenerate_image_edit(
            PNG, "make it blue " * 8000, model="qwen-edit", workspace=False, provider_options=ws_options(sim)
        )
    assert_clear(info.value, InvalidInputError, "prompt", f"{MAX_PROMPT_CHARS:,}")
    assert request_count(sim) == 0


async def test_huge_prompt_in_a_suite_is_a_suite_error(tmp_path):
    suite = write_suite(tmp_path / "long", [edit_case("long", prompt="x" * 100_000)], {"images/a.png": PNG})
    with pytest.raises(SuiteError) as info:
        load_suite(suite)
    assert_clear(info.value, SuiteError, "case 'long'", "100000 characters", str(MAX_PROMPT_CHARS))


async def test_odd_unicode_prompts_are_sent_verbatim(sim):
    prompt = "把背景换成海滩 🏖️ — e\u0301, ﬁ, \u200b zero-width"
    await agenerate_image_edit(PNG, prompt, model="qwen-edit", workspace=False, provider_options=ws_options(sim))
    assert len(sim.sim.submits) == 1  # accepted by the schema check of the server, unchanged


@pytest.mark.parametrize("model", ["nano-banana-edit", "gpt-image-1-edit", "flux-kontext-pro"])
@pytest.mark.parametrize("width,height", [(0, 512), (-5, 100)])
def test_non_positive_size_is_invalid_input(model, width, height, catalog):
    with pytest.raises(InvalidInputError, match="width"):  # refused when the options are built
        ImageEditOptions(width=width, height=height)
    with pytest.raises(InvalidInputError, match="positive"):  # and by the catalogue's size rule itself
        catalog.get(model).size_params(width, height)


@pytest.mark.parametrize("value", [math.nan, -math.nan])
def test_nan_option_is_invalid_input(value, catalog):
    model = next(
        m for m in catalog if m.provider == "wavespeed" and any(p.option == "guidance_scale" for p in m.params.values())
    )
    with pytest.raises(InvalidInputError, match="guidance_scale"):  # refused when the options are built
        ImageEditOptions(guidance_scale=value)
    with pytest.raises(InvalidInputError, match="finite"):  # and by the parameter check of the catalogue
        next(p for p in model.params.values() if p.option == "guidance_scale").check(value, model.id)


@pytest.mark.parametrize(
    "options",
    [{"width": "1024", "height": "1024"}, {"output_format": 5}, {"extra": [1, 2]}],
    ids=["width-as-text", "format-as-number", "extra-as-list"],
)
async def test_wrongly_typed_options_are_invalid_input(options, sim):
    with pytest.raises(InvalidInputError):
        await agenerate_image_edit(
            PNG, "make it blue", model="qwen-edit", options=options, workspace=False, provider_options=ws_options(sim)
        )
    assert request_count(sim) == 0


# ---- garbage from a server ------------------------------------------------------------------------


def garbage_server(status: int, body: bytes, content_type: str):
    """A loopback server that answers every request with the same reply (a misconfigured proxy, a web page…)."""

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        more = True
        while more:
            more = (await receive()).get("more_body", False)
        await send(
            {"type": "http.response.start", "status": status, "headers": [(b"content-type", content_type.encode())]}
        )
        await send({"type": "http.response.body", "body": body})

    return start_in_thread(app)


HTML = b"<!DOCTYPE html><html><body><h1>Welcome</h1></body></html>"
GARBAGE_CASES = [  # provider, model, reply, expected category, words in the message
    ("wavespeed", "qwen-edit", (200, HTML, "text/html"), "unknown_outcome", ["not JSON", "not sent again"]),
    (
        "wavespeed",
        "qwen-edit",
        (200, b'{"hello": "world"}', "application/json"),
        "unknown_outcome",
        ["without a prediction id"],
    ),
    ("wavespeed", "qwen-edit", (502, HTML, "text/html"), "unknown_outcome", ["HTTP 502", "not sent again"]),
    ("wavespeed", "qwen-edit", (404, HTML, "text/html"), "bad_request", ["HTTP 404"]),
    (
        "stability",
        "stability-search-replace",
        (200, b"OK", "text/plain"),
        "bad_output",
        ["neither an image nor a job id"],
    ),
    ("stability", "stability-search-replace", (200, b"\x89PNG garbage", "image/png"), "bad_output", ["image"]),
    ("huggingface", "hf-flux-kontext-dev", (200, HTML, "text/html"), "bad_output", []),
    ("huggingface", "hf-flux-kontext-dev", (500, b"oops", "text/plain"), "server", ["500"]),
]


def garbage_options(provider: str, base_url: str) -> dict:
    return {
        "wavespeed": {
            "wavespeed": {
                "base_url": base_url,
                "api_key": Secret("k-test-1234"),
                "poll": FAST_POLL,
                "retry": FAST_RETRY,
            }
        },
        "stability": {
            "stability": {
                "base_url": base_url,
                "api_key": Secret("sk-test-1234"),
                "retry": FAST_RETRY,
                "poll_interval_s": 0.01,
            }
        },
        "huggingface": {"huggingface": {"endpoint_url": base_url, "token": Secret("hf_test1234"), "retry": FAST_RETRY}},
    }[provider]


@pytest.mark.parametrize(
    "provider,model,reply,category,words", GARBAGE_CASES, ids=[f"{c[0]}-{c[2][0]}-{c[2][2]}" for c in GARBAGE_CASES]
)
async def test_garbage_replies_give_a_clear_category(provider, model, reply, category, words):
    server = garbage_server(*reply)
    try:
        with pytest.raises(ProviderError) as info:
            await agenerate_image_edit(
                PNG,
                "make it blue",
                model=model,
                options={"extra": {"search_prompt": "square"}},
                workspace=False,
                provider_options=garbage_options(provider, server.base_url),
            )
    finally:
        server.stop()
    assert_clear(info.value, ProviderError, model, *words)
    assert info.value.category == category


async def test_garbage_from_the_simulator_mid_job(sim):
    """The WaveSpeed server accepts the job, then answers polls with broken JSON / downloads with HTML."""
    sim.sim.add_fault("garbage_poll")
    with pytest.raises(ProviderError) as info:
        await agenerate_image_edit(
            PNG, "make it blue", model="qwen-edit", workspace=False, provider_options=ws_options(sim)
        )
    assert_clear(info.value, ProviderError, "not JSON")
    assert info.value.category == "server" and info.value.prediction_id
    sim.sim.reset()
    sim.sim.add_fault("non_image_download")
    with pytest.raises(ProviderError) as info:
        await agenerate_image_edit(
            PNG, "make it blue", model="qwen-edit", workspace=False, provider_options=ws_options(sim)
        )
    assert_clear(info.value, ProviderError, "not a usable image")
    assert info.value.category == "bad_output"


async def test_garbage_server_in_a_run_is_recorded_per_call(tmp_path):
    server = garbage_server(200, HTML, "text/html")
    try:
        res = await arun(
            "smoke",
            models="qwen-edit,flux-kontext-pro",
            repeats=2,
            workspace=tmp_path,
            progress=False,
            provider_options=garbage_options("wavespeed", server.base_url),
        )
    finally:
        server.stop()
    rows = [r for r in Workspace(tmp_path).call_rows(res.run_id) if r["status"] != "not_applicable"]
    assert res.unknown == len(rows) == 4 and res.completed == 0  # never re-sent, never called a success
    assert {r["error_category"] for r in rows} == {"unknown_outcome"} and all(r["cost_usd"] is None for r in rows)


# ---- the runner --------------------------------------------------------------------------------------


async def test_unknown_model_in_a_run_suggests_and_leaves_the_workspace_alone(sim, ws):
    before = state(ws)
    with pytest.raises(UnknownModelError) as info:
        await arun(
            "smoke", models="qwen-edit,seededit-v33", workspace=ws, progress=False, provider_options=ws_options(sim)
        )
    assert_clear(info.value, UnknownModelError, "seededit-v33", "did you mean", "seededit-v3")
    with pytest.raises(InvalidInputError) as info:
        await arun("smoke", models="provider:nobody", workspace=ws, progress=False, provider_options=ws_options(sim))
    assert_clear(info.value, InvalidInputError, "provider:nobody")
    assert request_count(sim) == 0
    assert_intact(before, ws)


@pytest.mark.parametrize(
    "run_id",
    [
        "../escape",
        "a/b",
        "..",
        "ｒｕｎ",
        "run\x00x",
        "run\nx",
        " lead",
        "-flag",
        "x" * 200,
        "e\u0301t\u00e9",
        "CON/../..",
    ],
)
async def test_unsafe_or_odd_unicode_run_ids_are_refused(run_id, sim, ws):
    before = state(ws)
    outside = sorted(p.name for p in ws.parent.iterdir())
    with pytest.raises(InvalidInputError) as info:
        await arun(
            "smoke", models="qwen-edit", workspace=ws, run_id=run_id, progress=False, provider_options=ws_options(sim)
        )
    assert_clear(info.value, InvalidInputError, "is not a safe id")
    assert sorted(p.name for p in ws.parent.iterdir()) == outside  # nothing written next to the workspace
    assert request_count(sim) == 0
    assert_intact(before, ws)


async def test_run_id_with_a_trailing_newline_is_refused(sim, ws):
    before = state(ws)
    with pytest.raises(InvalidInputError):
        await arun(
            "smoke",
            models="qwen-edit",
            workspace=ws,
            run_id="nightly\n",
            progress=False,
            provider_options=ws_options(sim),
        )
    assert request_count(sim) == 0
    assert_intact(before, ws)


@pytest.mark.parametrize(
    "case_id", ["../../etc/passwd", "a/b", "Case", "ｃａｓｅ", "e\u0301", "", "-x", "a" * 65, "x\ty"]
)
async def test_unsafe_or_odd_unicode_case_ids_are_refused(case_id, sim, ws, tmp_path):
    suite = write_suite(tmp_path / "ids", [edit_case(case_id)], {"images/a.png": PNG})
    before = state(ws)
    with pytest.raises(SuiteError) as info:
        await arun(str(suite), models="qwen-edit", workspace=ws, progress=False, provider_options=ws_options(sim))
    assert_clear(info.value, SuiteError, "is not a safe slug")
    assert_intact(before, ws)


async def test_corrupt_images_in_a_suite_are_all_reported_at_once(sim, ws, tmp_path):
    images = {
        "images/ok.png": PNG,
        "images/trunc.png": PNG[:100],
        "images/empty.png": b"",
        "images/bomb.png": png_declaring(100_000, 100_000),
        "images/text.jpg": b"hello",
    }
    cases = [edit_case(Path(rel).stem, rel) for rel in images]
    suite = write_suite(tmp_path / "broken", cases, images)
    before = state(ws)
    with pytest.raises(SuiteError) as info:
        await arun(str(suite), models="qwen-edit", workspace=ws, progress=False, provider_options=ws_options(sim))
    problems = info.value.problems
    assert len(problems) == 4 and not any("'ok'" in p for p in problems)
    for case, words in (
        ("trunc", "corrupt or truncated"),
        ("empty", "0 bytes"),
        ("bomb", "decompression-bomb"),
        ("text", "not an image"),
    ):
        assert any(p.startswith(f"case '{case}'") and words in p for p in problems), (case, problems)
    assert_intact(before, ws)


@pytest.mark.parametrize(
    "toml_text,words",
    [
        ("[[case]\nid = 1", "not valid TOML"),
        ("name = 3\n[[case]]\nid = 'x'", "not a safe slug"),
        ("case = 'not a table'", "must be an array of tables"),
        (
            "[[case]]\nid = 'x'\noperation = 'general_edit'\ncategory = 'color_alter'\nprompt = 'p'\nimages = 'a.png'",
            "images must be a list",
        ),
        ("\xff\xfe bad bytes", "not UTF-8"),
    ],
)
async def test_malformed_suite_file(toml_text, words, sim, ws, tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "suite.toml").write_bytes(toml_text.encode("latin-1") if "\xff" in toml_text else toml_text.encode())
    before = state(ws)
    with pytest.raises(SuiteError) as info:
        await arun(str(folder), models="qwen-edit", workspace=ws, progress=False, provider_options=ws_options(sim))
    assert_clear(info.value, SuiteError, words)
    assert_intact(before, ws)


async def test_workspace_from_a_newer_schema_is_refused_and_untouched(sim, ws):
    con = sqlite3.connect(ws / "evalkit.sqlite")
    con.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    con.commit()
    con.close()
    before = state(ws)
    db_bytes = (ws / "evalkit.sqlite").read_bytes()
    with pytest.raises(WorkspaceError) as info:
        await arun("smoke", models="qwen-edit", workspace=ws, progress=False, provider_options=ws_options(sim))
    assert_clear(info.value, WorkspaceError, "newer evalkit", "schema 99")
    with pytest.raises(WorkspaceError):
        await agenerate_image_edit(
            PNG, "make it blue", model="qwen-edit", workspace=ws, provider_options=ws_options(sim)
        )
    assert request_count(sim) == 0
    assert_intact(before, ws)
    assert (ws / "evalkit.sqlite").read_bytes() == db_bytes


async def test_bad_run_options_leave_no_run_behind(sim, ws):
    before = state(ws)
    with pytest.raises(InvalidInputError):
        await arun(
            "smoke", models="qwen-edit", workspace=ws, concurrency=0, progress=False, provider_options=ws_options(sim)
        )
    assert_intact(before, ws)


async def test_missing_key_stops_a_run_before_it_starts(sim, ws, monkeypatch):
    monkeypatch.delenv("WAVESPEED_API_KEY", raising=False)
    before = state(ws)
    with pytest.raises(MissingKeyError) as info:
        await arun(
            "smoke",
            models="qwen-edit,flux-kontext-pro",
            workspace=ws,
            progress=False,
            provider_options={"wavespeed": {"base_url": sim.base_url, "poll": FAST_POLL}},
        )
    assert_clear(info.value, MissingKeyError, "WAVESPEED_API_KEY")
    assert request_count(sim) == 0
    assert_intact(before, ws)


# ---- the CLI -----------------------------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[1]


def cli(args: list[str], env: dict, cwd: Path) -> subprocess.CompletedProcess:
    """The CLI in a fresh process, run from an empty folder (so nothing lands in the checkout by accident)."""
    return subprocess.run(
        [sys.executable, "-m", "evalkit", *args], capture_output=True, text=True, env=env, timeout=120, cwd=cwd
    )


def cli_env(handle, **extra) -> dict:
    env = dict(os.environ)
    env.update(
        WAVESPEED_BASE_URL=handle.base_url,
        WAVESPEED_API_KEY=handle.api_key,
        TQDM_DISABLE="1",
        EVALKIT_POLL_INITIAL_S="0.01",
        EVALKIT_POLL_MIN_INTERVAL_S="0.02",
        EVALKIT_POLL_MAX_INTERVAL_S="0.05",
        COLUMNS="300",
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        **extra,
    )
    return env


def assert_one_line_error(proc: subprocess.CompletedProcess, *words: str, max_lines: int = 2) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-500:], proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines and lines[0].startswith("error: "), proc.stderr
    assert len(lines) <= max_lines, proc.stderr  # the error, then its hint
    for w in words:
        assert w in proc.stderr, (w, proc.stderr)


def test_cli_refuses_bad_input_with_one_line_and_exit_2(sim, ws, tmp_path):
    env = cli_env(sim)
    before = state(ws)
    broken = write_suite(tmp_path / "broken", [edit_case("c1", "images/a.png")], {"images/a.png": PNG[:80]})
    newer = tmp_path / "newer"
    shutil.copytree(ws, newer)
    con = sqlite3.connect(newer / "evalkit.sqlite")
    con.execute("UPDATE meta SET value = '7' WHERE key = 'schema_version'")
    con.commit()
    con.close()
    not_a_db = tmp_path / "not-a-db"
    not_a_db.mkdir()
    (not_a_db / "evalkit.sqlite").write_bytes(b"this is not a database, just bytes " * 40)
    w = ["--workspace", str(ws)]
    cases = [
        (
            ["run", "--suite", "smoke", "--models", "qwen-edt", *w],
            ["unknown model id 'qwen-edt'", "did you mean qwen-edit"],
            2,
        ),
        (["run", "--suite", "smoke", "--models", "qwen-edit", "--run-id", "../../escape", *w], ["not a safe id"], 2),
        (["run", "--resume", "no-such-run", *w], ["cannot resume", "no-such-run"], 2),
        (["run", "--suite", str(broken), "--models", "qwen-edit", *w], ["case 'c1'", "corrupt or truncated"], 4),
        (["run", "--suite", "smoke", "--models", "qwen-edit", "--workspace", str(newer)], ["newer evalkit"], 2),
        (["runs", "--workspace", str(newer)], ["newer evalkit"], 2),
        (
            ["run", "--suite", "smoke", "--models", "qwen-edit", "--workspace", str(not_a_db)],
            ["not a readable evalkit database"],
            2,
        ),
    ]
    for args, words, max_lines in cases:
        assert_one_line_error(cli(args, env, tmp_path), *words, max_lines=max_lines)
    assert request_count(sim) == 0
    assert_intact(before, ws)


def test_cli_run_against_a_garbage_server_records_every_call_and_does_not_crash(ws_sim, tmp_path):
    server = garbage_server(200, HTML, "text/html")
    try:
        env = {**cli_env(ws_sim), "WAVESPEED_BASE_URL": server.base_url}
        proc = cli(
            [
                "run",
                "--suite",
                "smoke",
                "--models",
                "qwen-edit,seededit-v3",
                "--workspace",
                str(tmp_path / "ws"),
                "--json",
            ],
            env,
            tmp_path,
        )
    finally:
        server.stop()
    # nothing completed: exit 1 so cron and CI notice, with a recorded outcome for every call and no traceback
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    summary = json.loads(proc.stdout)
    assert summary["unknown"] == summary["planned"] == 2 and summary["completed"] == 0 and summary["cost_usd"] == 0
    with Workspace(tmp_path / "ws", create=False) as store:
        rows = [r for r in store.call_rows(summary["run_id"]) if r["status"] != "not_applicable"]
    assert all("not JSON" in r["error_message"] for r in rows)


@pytest.mark.parametrize(
    "args,words",
    [
        (
            ["run", "--suite", "smoke", "--provider-limit", "wavespeed:9"],
            ["bad provider limit", "[/IMAGES_PER_MINUTE]"],
        ),
        (["run", "--suite", "./drafts/[wip]/suite", "--models", "qwen-edit"], ["[wip]"]),
    ],
)
def test_cli_error_text_with_brackets_is_printed_verbatim(args, words, ws_sim, tmp_path):
    proc = cli([*args, "--workspace", str(tmp_path / "ws")], cli_env(ws_sim), tmp_path)
    assert_one_line_error(proc, *words, max_lines=3)


def test_cli_missing_key_exits_2_naming_the_variable(ws_sim, tmp_path):
    env = cli_env(ws_sim)
    env.pop("WAVESPEED_API_KEY")
    proc = cli(["run", "--suite", "smoke", "--models", "qwen-edit", "--workspace", str(tmp_path / "ws")], env, tmp_path)
    assert_one_line_error(proc, "WAVESPEED_API_KEY")


# ---- properties -------------------------------------------------------------------------------------

WAVESPEED_MODELS = [m for m in Catalog.load() if m.provider == "wavespeed"]
_IMAGES: dict[tuple[int, int], InputImage] = {}


def image_of(w: int, h: int) -> InputImage:
    if (w, h) not in _IMAGES:
        _IMAGES[(w, h)] = load_image(encode(Image.new("RGB", (w, h), (w % 256, h % 256, 90)), "PNG"))
    return _IMAGES[(w, h)]


_SIDE = st.integers(min_value=1, max_value=9000)
_OPTION_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
    st.sampled_from(
        [
            "1:1",
            "16:9",
            "9:21",
            "4:3",
            "1k",
            "2k",
            "4k",
            "auto",
            "1024*1024",
            "0*0",
            "high",
            "low",
            "png",
            "jpeg",
            "webp",
        ]
    ),
)


@st.composite
def edit_requests(draw) -> dict:
    """The pieces of a request; the test builds it, since options can already be refused when built."""
    model = draw(st.sampled_from(WAVESPEED_MODELS))
    op = draw(st.sampled_from(model.operations))
    w, h = draw(st.sampled_from([(64, 48), (48, 64), (512, 512), (1000, 40), (16, 900), (300, 200)]))
    lo, hi = max(1, model.inputs.min_images), max(1, model.inputs.max_images)
    n = draw(st.sampled_from([lo, lo, lo, hi, hi + 1]))  # mostly valid counts, sometimes one too many
    images = tuple(image_of(w, h) for _ in range(n))
    explicit = draw(st.booleans())
    names = list(model.params) + ["aspect_ratio", "resolution", "quality", "size", "bogus", "search_prompt"]
    extra = draw(st.one_of(st.just({}), st.dictionaries(st.sampled_from(names), _OPTION_VALUE, max_size=3)))
    options = dict(
        width=draw(_SIDE) if explicit else None,
        height=draw(_SIDE) if explicit else None,
        seed=draw(st.one_of(st.none(), st.integers(-(2**40), 2**40))),
        guidance_scale=draw(st.one_of(st.none(), st.floats(-50, 50, allow_nan=False))),
        steps=draw(st.one_of(st.none(), st.integers(-5, 500))),
        negative_prompt=draw(st.one_of(st.none(), st.text(max_size=20))),
        output_format=draw(st.one_of(st.none(), st.sampled_from(["png", "jpeg", "jpg", "webp", "gif", "PNG"]))),
        extra=extra,
    )
    mask = image_of(w, h) if draw(st.booleans()) else None
    prompt = draw(st.one_of(st.just("make it blue"), st.just("把背景换成海滩"), st.none(), st.text(max_size=30)))
    return dict(
        model=model,
        images=images,
        prompt=prompt,
        operation=op,
        options=options,
        mask=mask,
        sample_index=draw(st.integers(0, 3)),
    )


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(parts=edit_requests(), sync=st.booleans(), b64=st.booleans())
def test_any_request_builds_a_body_the_api_accepts_or_is_invalid_input(parts, sync, b64):
    try:
        request = EditRequest(**{**parts, "options": ImageEditOptions(**parts["options"])})
        provider = WaveSpeedEditProvider(base_url="http://127.0.0.1:9", sync_mode=sync, base64_output=b64)
        body = provider.build_body(request, lambda img: f"data:{img.mime};base64,AAAA")
    except InvalidInputError as exc:
        assert exc.message  # refused, with a reason
        event("refused")
        return
    event("built")
    problem = body_problem(request.model, body)
    assert problem is None, f"{request.model.id}: the API would refuse the body: {problem}\n{body}"
    json.dumps(body, allow_nan=False)  # strict JSON: what the server receives
    # what the body asks for is what the budget holds back for it
    assert request.model.reserve_usd(body) >= (request.model.price_usd(body) or 0)


def mostly(valid: st.SearchStrategy, anything: st.SearchStrategy) -> st.SearchStrategy:
    """``valid`` three times in four (so that loading succeeds often), else ``anything``."""
    return st.sampled_from((True, True, True, False)).flatmap(lambda ok: valid if ok else anything)


_PROMPTS = mostly(
    st.one_of(st.just("Make the sky pink"), st.text(min_size=1, max_size=60).filter(str.strip)),
    st.one_of(
        st.text(alphabet="ab 好🏖\u0301\u200b", min_size=3990, max_size=4010),
        st.integers(),
        st.none(),
        st.just(""),
        st.just("   "),
    ),
)
_TARGETS = mostly(
    st.one_of(st.none(), st.tuples(st.integers(64, 8192), st.integers(64, 8192)).map(list)),
    st.one_of(
        st.lists(st.integers(-10, 10_000), min_size=0, max_size=3),
        st.booleans(),
        st.tuples(st.floats(10, 5000), st.floats(10, 5000)).map(list),
        st.text(max_size=5),
    ),
)
_LANGS = mostly(
    st.sampled_from(["en", "zh", "pt-BR", "zh-Hans-CN"]),
    st.one_of(st.sampled_from(["cn", "EN", "english", ""]), st.text(max_size=6)),
)
_PARAMS = mostly(
    st.one_of(st.just({}), st.fixed_dictionaries({"search_prompt": st.text(min_size=1, max_size=8)})),
    st.dictionaries(
        st.sampled_from(["search_prompt", "background_prompt", "strength", "x"]),
        st.one_of(st.text(max_size=8), st.integers(), st.booleans(), st.floats(allow_nan=False)),
        max_size=3,
    ),
)
_OPERATIONS = mostly(st.just("general_edit"), st.sampled_from(["zoom_out", "outpaint", "erase", "nonsense"]))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(prompt=_PROMPTS, target=_TARGETS, language=_LANGS, params=_PARAMS, operation=_OPERATIONS)
@example(prompt="x" * 4001, target=None, language="en", params={}, operation="general_edit")
@example(prompt="", target=[96, 64], language="en", params={}, operation="zoom_out")
def test_any_case_fields_load_or_give_a_suite_error_naming_the_case(
    tmp_path_factory, prompt, target, language, params, operation
):
    folder = tmp_path_factory.mktemp("cases") / "prop"
    case = {
        "id": "c",
        "operation": operation,
        "category": "color_alter",
        "images": ["images/a.png"],
        "language": language,
        "params": params,
    }
    if prompt is not None:
        case["prompt"] = prompt
    if target is not None:
        case["target_size"] = target
    write_suite(folder, [case], {"images/a.png": PNG})
    try:
        suite = load_suite(folder)
    except SuiteError as exc:
        assert exc.problems and all(p.startswith("case 'c'") for p in exc.problems), exc.problems
        for prob in exc.problems:
            event(prob.split(":")[1][:40])
        return
    event("loaded")
    (c,) = suite.cases
    if prompt is None:
        assert c.operation in ("zoom_out", "erase", "remove_background")
    else:
        assert c.prompt == prompt and prompt.strip() and len(prompt) <= MAX_PROMPT_CHARS
    if target is not None:
        assert c.target_size == tuple(target) and all(64 <= v <= 8192 for v in target)
    assert dict(c.params) == params


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.one_of(st.binary(max_size=300), st.text(max_size=300).map(lambda s: s.encode("utf-8"))))
def test_any_suite_file_bytes_load_or_give_a_suite_error(tmp_path_factory, raw):
    folder = tmp_path_factory.mktemp("raw") / "prop"
    folder.mkdir()
    (folder / "suite.toml").write_bytes(raw)
    with pytest.raises(SuiteError):  # no random bytes make a valid suite (it needs a case with a real image)
        load_suite(folder)
