"""A JSON body's image text is decoded from base64 as it streams in (evalkit.serve.body.Base64Stream through
JsonShape's ``image_field``), so a request costs about its decoded images, not three copies of its text: what
bench/bench_serve.py measured as +193–336 MB of server RSS for 4 concurrent 20 MB ``image_base64`` bodies."""

from __future__ import annotations

import asyncio
import base64
import json
import tracemalloc

import httpx
import pytest

from evalkit.serve import create_app
from evalkit.serve.body import JsonShape
from evalkit.serve.guards import ApiError
from tests.plugins.common import make_png
from tests.serve.test_app import _config

EDIT = "/api/image-studio/edit/process"
PNG = make_png(16, 12, seed=4)
B64 = base64.b64encode(PNG).decode()
LIMITS = {"image_base64": 1 << 20, "prompt": 1000, "options": 1000}


def _shape(max_bytes: int = 1 << 20) -> JsonShape:
    return JsonShape(LIMITS, image_field="image_base64", image_max_bytes=max_bytes)


def _json_text(text: str) -> str:
    """``text`` as a JSON string literal, with nothing escaped that need not be."""
    return '"' + text + '"'


# the same image as clients write it: plain, as a data: URI, with PHP's escaped slashes, with spaces, with MIME's
# line breaks as JSON escapes
VARIANTS = {
    "plain": _json_text(B64),
    "data uri": _json_text("data:image/png;base64," + B64),
    "escaped slashes": _json_text("data:image\\/png;base64," + B64.replace("/", "\\/")),
    "spaces": _json_text("  " + " ".join(B64[i : i + 7] for i in range(0, len(B64), 7)) + " "),
    "line breaks": _json_text("\\n".join(B64[i : i + 76] for i in range(0, len(B64), 76)) + "\\r\\n"),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_image_text_is_decoded_while_streaming_wherever_the_chunks_split(variant):
    raw = ('{"image_base64": ' + VARIANTS[variant] + ', "prompt": "p \\" q"}').encode()
    for cut in range(1, len(raw)):
        shape = _shape()
        kept = shape.feed(raw[:cut]) + shape.feed(raw[cut:])
        assert shape.done and shape.images == [PNG], cut
        assert json.loads(kept) == {"image_base64": "", "prompt": 'p " q'}  # the text was not kept
    as_list = ('{"prompt": "p", "image_base64": [' + VARIANTS[variant] + ", " + VARIANTS["plain"] + "]}").encode()
    for cut in range(1, len(as_list), 7):
        shape = _shape()
        kept = shape.feed(as_list[:cut]) + shape.feed(as_list[cut:])
        assert shape.images == [PNG, PNG] and json.loads(kept) == {"prompt": "p", "image_base64": ["", ""]}


def test_strings_that_are_not_images_are_kept_as_they_are():
    raw = json.dumps({"prompt": "image_base64", "options": {"image_base64": "abc", "l": ["x"]}}).encode()
    shape = _shape()
    assert shape.feed(raw) == raw and shape.images == []


@pytest.mark.parametrize(
    ("text", "status", "words"),
    [
        ("%%%not-base64", 400, "image_base64 is not valid base64 image data"),
        ("QUJD" * 10 + "QUI", 400, "not valid base64"),  # not whole quads: padding missing
        ("QUI=QUJD", 400, "not valid base64"),  # data after the final "="
        ("\\u0041QUJD", 400, "not valid base64"),  # \u escapes are no base64 (JSON allows them, nobody sends them)
        ("", 400, "image_base64 must be non-empty base64 text"),
        ("data:image/png;base64,", 400, "must be non-empty"),
        ("QUJD" * 300, 413, "image_base64 is over the image limit of 600 bytes"),
    ],
)
def test_bad_image_text_is_refused_as_it_arrives(text, status, words):
    raw = ('{"image_base64": "' + text + '", "prompt": "x"}').encode()
    for cut in (len(raw) // 2, len(raw) - 3):
        shape = _shape(max_bytes=600)
        with pytest.raises(ApiError) as err:
            shape.feed(raw[:cut])
            shape.feed(raw[cut:])
        assert err.value.status == status and words in err.value.message


def test_the_image_field_given_twice_is_refused():
    with pytest.raises(ApiError, match="image_base64 is given twice"):
        _shape().feed(('{"image_base64": "' + B64 + '", "image_base64": "' + B64 + '"}').encode())


def test_a_base64_body_costs_about_its_decoded_size(sim, tmp_path):
    """8 MB of base64 text decoding to 6 MB of non-image, sent in 64 KB chunks as a real client would: the server
    used to hold the body, json.loads' copy of it and the value's string (≈ 3× the body); now ≈ the decoded size."""
    text = b"x" * (8 << 20)
    body = b'{"prompt": "x", "image_base64": "' + text + b'"}'

    async def chunks():
        for i in range(0, len(body), 64 * 1024):
            yield body[i : i + 64 * 1024]

    async def go() -> tuple[httpx.Response, int]:
        app = create_app(_config(sim, tmp_path))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            tracemalloc.start()
            try:
                r = await c.post(EDIT, content=chunks(), headers={"content-type": "application/json"})
                return r, tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()

    r, peak = asyncio.run(go())
    assert r.status_code == 400 and "image_base64" in r.json()["error"]["message"], r.text
    decoded = len(text) * 3 // 4
    assert peak < 1.5 * decoded, f"peak {peak / 2**20:.1f} MB for {decoded / 2**20:.1f} MB decoded"
    assert sim.sim.submits == []
