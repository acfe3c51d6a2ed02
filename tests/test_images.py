"""Untrusted images: every bad input gets a clear ImageError; odd-but-valid inputs are normalised."""

from __future__ import annotations

import io
import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from evalkit.edit import agenerate_image_edit
from evalkit.engine.runner import arun
from evalkit.errors import ImageError
from evalkit.images import decode_output, fit_within, load_image, thumbnail_jpeg
from tests.plugins.bad_input import (
    JPEG,
    PNG,
    animated_gif,
    assert_clear,
    assert_intact,
    edit_case,
    encode,
    photo,
    png_declaring,
    request_count,
    state,
    write_suite,
    ws_options,
)
from tests.plugins.common import make_png


def _png_header_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims width×height but carries almost no data (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")
    )


def test_valid_png_passes_through_unchanged():
    data = make_png(40, 30)
    img = load_image(data)
    assert img.data == data and (img.width, img.height) == (40, 30) and img.mime == "image/png" and not img.converted


@pytest.mark.parametrize(
    "data, needle",
    [
        (b"", "empty"),
        (b"not an image at all", "not an image"),
        (make_png()[:60], "corrupt or truncated"),
        (_png_header_claiming(100_000, 100_000), "decompression-bomb"),
    ],
)
def test_bad_bytes_give_clear_errors(data, needle):
    with pytest.raises(ImageError) as ei:
        load_image(data, name="case.png")
    assert needle in str(ei.value) and "case.png" in str(ei.value)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(ImageError, match="not found"):
        load_image(tmp_path / "nope.png")
    (tmp_path / "zero.png").write_bytes(b"")
    with pytest.raises(ImageError, match="empty"):
        load_image(tmp_path / "zero.png")


def test_wrong_extension_is_judged_by_content(tmp_path):
    p = tmp_path / "photo.jpg"
    p.write_bytes(make_png(20, 10))  # a PNG named .jpg
    img = load_image(p)
    assert img.mime == "image/png" and img.source_format == "PNG"


def test_cmyk_16bit_palette_animated_are_normalised():
    buf = io.BytesIO()
    Image.new("CMYK", (20, 10), (10, 20, 30, 0)).save(buf, format="JPEG")
    cmyk = load_image(buf.getvalue())
    assert cmyk.mime == "image/png" and "CMYK→RGB" in cmyk.converted and cmyk.to_pil().mode == "RGB"

    arr = (np.arange(200, dtype=np.uint16).reshape(10, 20) * 300).astype(np.uint16)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")  # uint16 → mode I;16
    deep = load_image(buf.getvalue())
    assert deep.to_pil().mode == "L" and any("16" in c for c in deep.converted)

    frames = [Image.new("RGB", (16, 16), c) for c in ((255, 0, 0), (0, 255, 0))]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    anim = load_image(buf.getvalue())
    assert anim.mime == "image/png" and any("animated" in c for c in anim.converted)


def test_unsupported_format(tmp_path):
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="ICO")
    with pytest.raises(ImageError, match="accepted"):
        load_image(buf.getvalue())


def test_decode_output_and_thumbnail():
    data = make_png(800, 400)
    assert decode_output(data).size == (800, 400)
    thumb = Image.open(io.BytesIO(thumbnail_jpeg(data, max_side=100)))
    assert thumb.format == "JPEG" and thumb.size == (100, 50)
    with pytest.raises(ImageError):
        decode_output(b"<html>oops</html>")


def test_fit_within_never_upscales():
    assert fit_within(100, 50, 4096, None) == (100, 50)
    assert fit_within(8000, 4000, 4096, None) == (4096, 2048)
    w, h = fit_within(3000, 3000, None, 4_000_000)
    assert w * h <= 4_000_000 and w == h


# ---- bad and odd images at the entry points (generate_image_edit, a suite run) -------------------


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
