"""LocalEditProvider: the identity and OpenCV inpainting baselines."""

from __future__ import annotations

import io
import threading

import cv2
import numpy as np
import pytest
from PIL import Image

import evalkit.providers.local as local
from evalkit.catalog.spec import OPERATIONS
from evalkit.errors import InvalidInputError
from evalkit.images import load_image
from evalkit.providers import create_provider
from evalkit.providers.base import EditRequest, ImageEditOptions
from evalkit.providers.local import LocalEditProvider
from tests.plugins.common import make_png


def encoded(arr: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, fmt)
    return buf.getvalue()


def scene_with_red_square() -> tuple[np.ndarray, np.ndarray]:
    """A smooth gradient with a solid red square in it, and a mask covering the square (white = fill)."""
    h, w = 64, 96
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([xx * 2, yy * 3, np.full((h, w), 120)], axis=-1).astype(np.uint8)
    img[24:40, 40:56] = (255, 0, 0)
    mask = np.zeros((h, w), dtype=np.uint8)
    mask[22:42, 38:58] = 255
    return img, mask


def request(model_id: str, catalog, image: bytes, **kw) -> EditRequest:
    return EditRequest(model=catalog.get(model_id), images=(load_image(image),), **kw)


@pytest.fixture
async def provider():
    p = LocalEditProvider()
    yield p
    await p.aclose()


def test_catalogue_entries(catalog):
    identity, cv = catalog.get("identity"), catalog.get("opencv-inpaint")
    assert set(identity.operations) == set(OPERATIONS) - {"multi_image"} and identity.prompt == "optional"
    assert cv.operations == ("inpaint", "erase", "zoom_out")
    for m in (identity, cv):
        assert m.provider == "local" and m.price_usd() == 0 and not m.needs_key
    assert isinstance(create_provider("local"), LocalEditProvider)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
async def test_identity_returns_the_input_byte_for_byte(fmt, catalog, provider):
    data = encoded(np.asarray(Image.open(io.BytesIO(make_png(96, 64)))), fmt)
    out = await provider.edit(request("identity", catalog, data, prompt="make it blue"))
    assert out.ok and out.image == data
    assert out.format == fmt.lower() and (out.width, out.height) == (96, 64)
    assert out.cost_usd == 0.0 and out.cost_source == "free" and not out.simulated
    assert out.latency.total_ms is not None and out.latency.inference_ms is not None


async def test_identity_ignores_a_mask_and_says_so(catalog, provider):
    img, mask = scene_with_red_square()
    out = await provider.edit(
        request("identity", catalog, encoded(img), operation="inpaint", mask=load_image(encoded(mask)))
    )
    assert out.ok and out.image == encoded(img)
    assert any("mask" in n for n in out.metadata["notes"])


@pytest.mark.parametrize("method", ["telea", "ns"])
async def test_inpainting_fills_the_hole_and_leaves_the_rest_untouched(method, catalog, provider):
    img, mask = scene_with_red_square()
    opts = ImageEditOptions(extra={"method": method})
    out = await provider.edit(
        request(
            "opencv-inpaint", catalog, encoded(img), operation="erase", mask=load_image(encoded(mask)), options=opts
        )
    )
    assert out.ok, out.error
    result = np.asarray(Image.open(io.BytesIO(out.image)).convert("RGB"))
    inside = mask == 255
    assert np.array_equal(result[~inside], img[~inside])  # outside the mask: bit-identical
    assert not np.array_equal(result[inside], img[inside])
    # the red square is gone: the filled pixels look like the gradient around them, not red
    red_left = np.mean((result[24:40, 40:56, 0] > 200) & (result[24:40, 40:56, 1] < 60))
    assert red_left < 0.05
    assert out.metadata["method"] == method and out.metadata["mode"] == "inpaint" and not out.simulated


def test_method_is_part_of_the_fingerprint(catalog, provider):
    img, mask = scene_with_red_square()
    fps = {
        provider.prepare(
            request(
                "opencv-inpaint",
                catalog,
                encoded(img),
                operation="inpaint",
                mask=load_image(encoded(mask)),
                options=ImageEditOptions(extra={"method": m}),
            )
        ).fingerprint
        for m in ("telea", "ns")
    }
    assert len(fps) == 2


async def test_zoom_out_centres_the_source_on_the_requested_canvas(catalog, provider):
    src = np.asarray(Image.open(io.BytesIO(make_png(96, 64, seed=7))).convert("RGB"))
    out = await provider.edit(
        request(
            "opencv-inpaint",
            catalog,
            encoded(src),
            operation="zoom_out",
            options=ImageEditOptions(width=160, height=120),
        )
    )
    assert out.ok and (out.width, out.height) == (160, 120)
    result = np.asarray(Image.open(io.BytesIO(out.image)).convert("RGB"))
    match = cv2.matchTemplate(result, src, cv2.TM_SQDIFF)
    _, _, best, _ = cv2.minMaxLoc(match)
    assert best == ((160 - 96) // 2, (120 - 64) // 2)
    x0, y0 = best
    assert np.array_equal(result[y0 : y0 + 64, x0 : x0 + 96], src)
    border = np.ones((120, 160), dtype=bool)
    border[y0 : y0 + 64, x0 : x0 + 96] = False
    assert result[border].mean() > 20  # filled, not left black


@pytest.mark.parametrize(
    "kw, complaint",
    [
        (dict(operation="inpaint"), "needs a mask"),
        (dict(operation="zoom_out"), "target canvas size"),
        (dict(operation="zoom_out", options=ImageEditOptions(width=80, height=64)), "must be larger"),
        (dict(operation="general_edit"), "does not support"),
    ],
)
def test_bad_requests_are_refused_clearly(kw, complaint, catalog, provider):
    with pytest.raises(InvalidInputError, match=complaint):
        provider.prepare(request("opencv-inpaint", catalog, make_png(96, 64), **kw))


async def test_work_runs_in_a_worker_thread(catalog, provider, monkeypatch):
    threads: list[str] = []
    real = local.run_baseline

    def spy(prepared):
        threads.append(threading.current_thread().name)
        return real(prepared)

    monkeypatch.setattr(local, "run_baseline", spy)
    out = await provider.edit(request("identity", catalog, make_png(96, 64)))
    assert out.ok and threads and threads[0] != threading.main_thread().name


async def test_resume_computes_again(catalog, provider):
    req = request("identity", catalog, make_png(96, 64))
    assert (await provider.resume(req, "anything")).image == req.images[0].data
