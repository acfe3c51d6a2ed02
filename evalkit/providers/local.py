"""Offline baselines computed on this machine: no key, no network, cost 0, real (not simulated) outputs.

* ``identity`` — the null edit: returns the first input byte for byte. Scoring it calibrates the
  preservation metrics (their best value) and the instruction-following ones (their floor).
* ``opencv-inpaint`` — classical inpainting with OpenCV (Telea, or Navier–Stokes with
  ``method = "ns"``): inpaint/erase fill the white region of the mask and leave every other pixel
  untouched; zoom_out places the source in the centre of the requested larger canvas and fills the
  border. A hosted model that cannot beat it at removing an object is not worth its price.

The work runs in a worker thread (``asyncio.to_thread``) so a batch's event loop keeps serving other
calls; latency is measured around it.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from typing import Any

import cv2
import numpy as np
from PIL import Image

from evalkit.catalog.spec import normalise_operation
from evalkit.errors import Category, InvalidInputError, ProviderError
from evalkit.images import InputImage, encode, to_rgb
from evalkit.providers.base import (
    NO_CAPABILITIES,
    EditOutcome,
    EditRequest,
    Latency,
    PreparedRequest,
    ProviderCapabilities,
    SubmitHook,
)
from evalkit.providers.http import image_from_bytes
from evalkit.providers.prepare import fingerprint, prepare_json_request

IDENTITY = "identity"
OPENCV_INPAINT = "opencv-inpaint"
_CV_METHODS = {"telea": cv2.INPAINT_TELEA, "ns": cv2.INPAINT_NS}


class LocalEditProvider:
    """Runs the baselines of ``evalkit/catalog/local.toml`` in-process."""

    name = "local"
    #: nothing to resume: a local call is free and deterministic, so ``resume`` simply computes it again
    capabilities: ProviderCapabilities = NO_CAPABILITIES

    def __repr__(self) -> str:
        return "LocalEditProvider()"

    def prepare(self, request: EditRequest) -> PreparedRequest:
        prepared = prepare_json_request(request)
        m = request.model
        if m.endpoint == IDENTITY:
            return prepared
        if m.endpoint != OPENCV_INPAINT:
            raise InvalidInputError(
                f"{m.id}: the local provider has no baseline {m.endpoint!r}",
                hint=f"local baselines: {IDENTITY}, {OPENCV_INPAINT}",
            )
        op = normalise_operation(request.operation)
        image = prepared.images[0]
        params = dict(prepared.params)
        notes = list(prepared.notes)
        mask = prepared.mask
        size_param = m.size.param
        if op == "zoom_out":
            o = request.options
            if not o.explicit_size():
                raise InvalidInputError(
                    f"{m.id}: zoom_out needs the target canvas size",
                    hint="set the case's width/height (larger than the input)",
                )
            w, h = (int(v) for v in str(params[size_param]).split("*"))
            if w < image.width or h < image.height or (w, h) == (image.width, image.height):
                raise InvalidInputError(
                    f"{m.id}: zoom_out target {w}×{h} must be larger than the input {image.width}×{image.height}",
                    hint="the target must be at least the input size on both sides, and larger on one",
                )
            if mask is not None:
                if m.mask is not None:
                    params.pop(m.mask.param, None)
                mask = None
                notes.append("zoom_out fills the border; the mask was not used")
        else:
            if mask is None:
                raise InvalidInputError(f"{m.id}: {op} needs a mask (white = region to fill)", hint="pass mask=…")
            if request.options.explicit_size() and (request.options.width, request.options.height) != (
                image.width,
                image.height,
            ):
                notes.append(f"{op} keeps the input size {image.width}×{image.height}; the requested size was ignored")
            params[size_param] = f"{image.width}*{image.height}"
        return replace(
            prepared,
            params=params,
            mask=mask,
            notes=tuple(notes),
            expected_size=_wh(str(params[size_param])),
            fingerprint=fingerprint(m, params, prepared.images, mask, request.sample_index),
        )

    async def edit(self, request: EditRequest, *, on_submitted: SubmitHook | None = None) -> EditOutcome:
        prepared = self.prepare(request)
        started = time.perf_counter()
        try:
            data, metadata, compute_ms = await asyncio.to_thread(run_baseline, prepared)
            img = await image_from_bytes(
                data, what=f"{prepared.model_id} output", max_bytes=len(data)
            )  # our own output: verified, not capped
        except (cv2.error, OSError, ValueError, ProviderError) as exc:
            outcome = EditOutcome.provider_failure(
                prepared.model_id,
                Category.TASK_FAILED,
                f"{prepared.model_id} failed on this input",
                service="local baseline",
                detail=f"{type(exc).__name__}: {exc}",
                hint="the baseline ran in-process and cost nothing; check the input image (and mask)",
            )
            outcome.latency = Latency(total_ms=(time.perf_counter() - started) * 1000)
            outcome.cost_source = "free"
            return outcome
        return img.outcome(
            prepared.model_id,
            cost_usd=0.0,
            cost_source="free",
            latency=Latency(inference_ms=compute_ms, total_ms=(time.perf_counter() - started) * 1000),
            input_resized=prepared.input_resized,
            simulated=False,
            metadata={**metadata, "notes": list(prepared.notes)},
        )

    async def resume(self, request: EditRequest, prediction_id: str) -> EditOutcome:
        return await self.edit(request)

    async def aclose(self) -> None:
        return None


def run_baseline(prepared: PreparedRequest) -> tuple[bytes, dict[str, Any], float]:
    """The computation itself (blocking; called in a worker thread): output bytes, metadata, compute ms."""
    t0 = time.perf_counter()
    if prepared.endpoint == IDENTITY:
        return prepared.images[0].data, {"baseline": IDENTITY}, (time.perf_counter() - t0) * 1000
    method = str(prepared.params.get("method", "telea"))
    radius_px = int(prepared.params.get("radius_px", 3))
    size = tuple(int(v) for v in str(prepared.params["size"]).split("*"))
    image = prepared.images[0]
    if prepared.mask is not None:
        out = inpaint(image, prepared.mask, method=method, radius_px=radius_px)
        mode = "inpaint"
    else:
        out = zoom_out(image, size, method=method, radius_px=radius_px)  # type: ignore[arg-type]
        mode = "zoom_out"
    meta = {"baseline": OPENCV_INPAINT, "mode": mode, "method": method, "radius_px": radius_px}
    if image.mode not in ("RGB", "L"):
        meta["alpha"] = "the input's transparency was composited on white"
    return encode(Image.fromarray(out), "PNG"), meta, (time.perf_counter() - t0) * 1000


def inpaint(image: InputImage, mask: InputImage, *, method: str = "telea", radius_px: int = 3) -> np.ndarray:
    """RGB array of ``image`` with the mask's white region filled by cv2.inpaint; other pixels unchanged."""
    rgb = np.ascontiguousarray(np.asarray(to_rgb(image.to_pil())))
    fill = np.asarray(mask.to_pil().convert("L")) >= 128
    if fill.shape != rgb.shape[:2]:
        raise ValueError(f"mask is {fill.shape[1]}×{fill.shape[0]}, image is {rgb.shape[1]}×{rgb.shape[0]}")
    return _cv_inpaint(rgb, fill, method, radius_px)


def zoom_out(image: InputImage, size: tuple[int, int], *, method: str = "telea", radius_px: int = 3) -> np.ndarray:
    """RGB array of a ``size`` canvas with ``image`` pasted at its centre and the border inpainted."""
    rgb = np.asarray(to_rgb(image.to_pil()))
    w, h = size
    x0, y0 = (w - image.width) // 2, (h - image.height) // 2
    canvas = np.zeros((h, w, 3), dtype=np.uint8)
    canvas[y0 : y0 + image.height, x0 : x0 + image.width] = rgb
    fill = np.ones((h, w), dtype=bool)
    fill[y0 : y0 + image.height, x0 : x0 + image.width] = False
    return _cv_inpaint(canvas, fill, method, radius_px)


def _cv_inpaint(rgb: np.ndarray, fill: np.ndarray, method: str, radius_px: int) -> np.ndarray:
    if method not in _CV_METHODS:
        raise ValueError(f"unknown inpainting method {method!r} (telea or ns)")
    out = cv2.inpaint(rgb, fill.astype(np.uint8) * 255, float(radius_px), _CV_METHODS[method])
    out[~fill] = rgb[~fill]  # guarantee: pixels outside the mask are the input's, bit for bit
    return out


def _wh(size: str) -> tuple[int, int]:
    """``"W*H"`` → (W, H)."""
    w, _, h = size.partition("*")
    return int(w), int(h)
