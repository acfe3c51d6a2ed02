"""The WaveSpeed simulator's images: decoding inputs (data URIs, base64, bytes) and rendering SIMULATED
outputs (:func:`evalkit.sim.render.render_simulated`) on a thread pool, each computed once per distinct
request and kept in a byte-bounded LRU (:class:`Memo`)."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import io
import json
import re
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from evalkit.errors import ImageError
from evalkit.images import InputImage, load_image
from evalkit.sim.render import render_simulated

_DATA_URI = re.compile(r"^data:[^,;]*(?:;[^,;]*)*;base64,", re.IGNORECASE)


class BadRequest(Exception):
    """A request the real API would refuse with 400 (message names the problem)."""


@dataclass(frozen=True)
class RenderJob:
    model_id: str
    images: tuple[InputImage, ...] = field(repr=False)
    mask: InputImage | None = field(repr=False)
    mask_convention: str
    prompt: str | None
    seed: int | None
    size: tuple[int, int]
    mode: str
    fmt: str

    @property
    def key(self) -> str:
        blob = json.dumps(
            [
                self.model_id,
                [i.sha256 for i in self.images],
                self.mask.sha256 if self.mask else None,
                self.mask_convention,
                self.prompt,
                self.seed,
                self.size,
                self.mode,
                self.fmt,
            ]
        )
        return hashlib.sha256(blob.encode()).hexdigest()


def _mask_white_edit(mask: Image.Image, convention: str) -> Image.Image:
    """The mask as L where white = repaint, whatever convention the model's mask uses."""
    has_alpha = mask.mode in ("RGBA", "LA") or "transparency" in mask.info
    if has_alpha and convention in ("transparent_edit", "alpha_or_white_edit"):
        alpha = mask.convert("RGBA").getchannel("A")
        if convention == "transparent_edit" or alpha.getextrema() != (255, 255):
            return alpha.point(lambda v: 255 if v < 128 else 0)
    return mask.convert("L")


def render_output(job: RenderJob) -> bytes:
    """The simulated output's bytes (runs on the render pool: PIL and numpy release the GIL)."""
    images = [i.to_pil() for i in job.images[:2]]  # render_simulated uses at most two
    mask = _mask_white_edit(job.mask.to_pil(), job.mask_convention) if job.mask is not None else None
    img = render_simulated(
        images, model_id=job.model_id, prompt=job.prompt, seed=job.seed, size=job.size, mask=mask, mode=job.mode
    )
    buf = io.BytesIO()
    if job.fmt == "jpeg":
        img.convert("RGB").save(buf, format="JPEG", quality=88)
    elif job.fmt == "webp":
        img.save(buf, format="WEBP", quality=85, method=0)
    else:  # fast PNG: the sim's outputs are throwaway
        img.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


class Memo:
    """Values computed once per key on the render pool (concurrent callers share one computation),
    kept in an LRU bounded by bytes. Failures are not kept."""

    def __init__(self, cap_bytes: int, pool: ThreadPoolExecutor, size_of):
        self.cap_bytes = cap_bytes
        self.computed = 0
        self._pool = pool
        self._size_of = size_of
        self._items: OrderedDict[str, tuple[Any, int]] = OrderedDict()
        self._bytes = 0
        self._pending: dict[str, asyncio.Future] = {}

    async def get(self, key: str, fn, *args: Any) -> Any:
        item = self._items.get(key)
        if item is not None:
            self._items.move_to_end(key)
            return item[0]
        fut = self._pending.get(key)
        if fut is None:
            fut = self._pending[key] = asyncio.ensure_future(self._compute(key, fn, *args))
        return await asyncio.shield(fut)

    async def _compute(self, key: str, fn, *args: Any) -> Any:
        try:
            value = await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)
        finally:
            self._pending.pop(key, None)
        self.computed += 1
        nbytes = self._size_of(value)
        self._items[key] = (value, nbytes)
        self._bytes += nbytes
        while self._bytes > self.cap_bytes and len(self._items) > 1:
            self._bytes -= self._items.popitem(last=False)[1][1]
        return value


def decode_image_ref(ref: str | bytes, name: str) -> InputImage:
    """An input image from bytes, a data URI or naked base64 (runs on the pool); BadRequest if unusable."""
    if isinstance(ref, str):
        m = _DATA_URI.match(ref)
        if ref.startswith("data:") and not m:
            raise BadRequest(f"{name}: a data URI must be base64-encoded ('data:image/png;base64,...')")
        payload = ref[m.end() :] if m else ref
        try:
            ref = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            try:
                ref = base64.b64decode("".join(payload.split()), validate=True)
            except (binascii.Error, ValueError):
                raise BadRequest(f"{name} is neither an image URL, a data URI nor base64 image data") from None
    try:
        return load_image(ref, name=name)
    except ImageError as exc:
        raise BadRequest(f"{name}: the image cannot be decoded ({exc.message})") from None
