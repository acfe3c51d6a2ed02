"""Deterministic, visibly labelled "edited" images for the local simulators.

These are NOT model outputs. Every image carries a "SIMULATED" banner, and the transform depends
only on (model id, prompt, seed, inputs), so the same request always gives the same bytes. The
transform strength differs per model id (a hash), so automatic metrics differ between simulated
models — which exercises the analysis, and says nothing about any real model.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

LABEL = "SIMULATED"


def _unit(*parts: object) -> float:
    h = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # very old Pillow
        return ImageFont.load_default()


def draw_label(img: Image.Image, text: str) -> Image.Image:
    """A dark banner across the bottom with white text (kept readable in thumbnails)."""
    img = img.convert("RGB")
    w, h = img.size
    band = max(12, h // 9)
    d = ImageDraw.Draw(img)
    d.rectangle([0, h - band, w, h], fill=(20, 20, 20))
    font = _font(max(9, int(band * 0.6)))
    d.text((max(2, w // 60), h - band + (band - int(band * 0.6)) // 2 - 1), text, fill=(255, 255, 255), font=font)
    return img


def render_simulated(
    images: Sequence[Image.Image],
    *,
    model_id: str,
    prompt: str | None,
    seed: int | None,
    size: tuple[int, int] | None = None,
    mask: Image.Image | None = None,
    mode: str = "edit",
    label: bool = True,
) -> Image.Image:
    """A deterministic stand-in for an edited image.

    mode: ``edit`` (global tint + a changed patch), ``inpaint`` (change only inside ``mask``),
    ``zoom_out`` (the source shrunk into the centre of a wider canvas), ``remove_background``.
    """
    if not images:
        raise ValueError("render_simulated needs at least one input image")
    src = images[0].convert("RGB")
    target = size or src.size
    key = (model_id, prompt or "", seed if seed is not None else "", [im.size for im in images])
    strength = 0.15 + 0.7 * _unit("strength", model_id)  # per-model: how far the edit moves pixels
    hue = _unit("hue", *key)

    if mode == "zoom_out":
        scale = 0.55 + 0.3 * _unit("zoom", model_id)
        canvas = Image.new("RGB", target, _fill_colour(src))
        inner = ImageOps.contain(src, (max(1, int(target[0] * scale)), max(1, int(target[1] * scale))))
        canvas.paste(inner, ((target[0] - inner.width) // 2, (target[1] - inner.height) // 2))
        out = canvas
    else:
        base = ImageOps.fit(src, target, Image.Resampling.LANCZOS) if src.size != target else src.copy()
        arr = np.asarray(base, dtype=np.float32)
        tint = np.array(_hue_rgb(hue), dtype=np.float32)
        edited = arr * (1 - strength * 0.5) + tint * (strength * 0.5)
        # a patch whose position depends on the prompt: "the edit"
        h, w = arr.shape[:2]
        pw, ph = max(4, int(w * (0.2 + 0.2 * _unit("pw", *key)))), max(4, int(h * (0.2 + 0.2 * _unit("ph", *key))))
        px, py = int((w - pw) * _unit("px", *key)), int((h - ph) * _unit("py", *key))
        edited[py : py + ph, px : px + pw] = edited[py : py + ph, px : px + pw] * 0.4 + tint * 0.6
        if len(images) > 1:  # blend in a corner of the second reference
            ref = np.asarray(ImageOps.fit(images[1].convert("RGB"), (w // 3 or 1, h // 3 or 1)), dtype=np.float32)
            edited[: ref.shape[0], w - ref.shape[1] :] = ref
        if mode == "inpaint" and mask is not None:
            m = (
                np.asarray(ImageOps.fit(mask.convert("L"), (w, h), Image.Resampling.NEAREST), dtype=np.float32)[
                    ..., None
                ]
                / 255.0
            )
            edited = arr * (1 - m) + edited * m
        elif mode == "remove_background":
            yy, xx = np.mgrid[0:h, 0:w]
            centre = ((xx - w / 2) / (w / 2)) ** 2 + ((yy - h / 2) / (h / 2)) ** 2 < 0.5
            edited = np.where(centre[..., None], arr, 255.0)
        out = Image.fromarray(np.clip(edited, 0, 255).astype(np.uint8))
    if label:
        out = draw_label(out, f"{LABEL} · {model_id}")
    return out


def _fill_colour(img: Image.Image) -> tuple[int, int, int]:
    small = img.resize((1, 1), Image.Resampling.BOX)
    px = small.convert("RGB").getpixel((0, 0))
    assert isinstance(px, tuple)
    return (int(px[0]), int(px[1]), int(px[2]))


def _hue_rgb(h: float) -> tuple[float, float, float]:
    import colorsys

    r, g, b = colorsys.hsv_to_rgb(h, 0.7, 0.95)
    return r * 255, g * 255, b * 255


def encode_image(img: Image.Image, fmt: str = "png") -> bytes:
    fmt = fmt.lower()
    buf = io.BytesIO()
    if fmt in ("jpeg", "jpg"):
        img.convert("RGB").save(buf, format="JPEG", quality=88)
    elif fmt == "webp":
        img.save(buf, format="WEBP", quality=88)
    else:
        img.save(buf, format="PNG")
    return buf.getvalue()
