"""Safe image handling: decode untrusted bytes without surprises, encode, thumbnail.

Every image that enters evalkit (suite inputs, masks, model outputs) goes through
:func:`load_image`, which

* refuses empty, oversized (bytes) and unsupported files with a message naming the file;
* reads only the header first and refuses a decompression bomb (pixel count over the cap)
  *before* decoding the pixels;
* decodes fully to catch truncated/corrupt data;
* normalises what providers cannot take (CMYK, 16-bit, palette, animated, exotic formats) into
  an 8-bit PNG and records that it did so (``InputImage.converted``).
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from evalkit.errors import ImageError, ImageTooLargeError

#: refuse anything larger than this many pixels before decoding it (about 8K × 8K).
MAX_PIXELS = int(os.environ.get("EVALKIT_MAX_PIXELS", 8192 * 8192))
#: refuse files larger than this many bytes.
MAX_BYTES = int(os.environ.get("EVALKIT_MAX_IMAGE_BYTES", 64 * 1024 * 1024))

#: formats sent to providers as they are; anything else is re-encoded to PNG.
PASS_THROUGH_FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
#: formats accepted as input at all (re-encoded when not in PASS_THROUGH_FORMATS).
ACCEPTED_FORMATS = set(PASS_THROUGH_FORMATS) | {"GIF", "BMP", "TIFF", "MPO"}
_PASS_MODES = {"RGB", "RGBA", "L", "LA"}

# PIL must not silently accept truncated files.
ImageFile.LOAD_TRUNCATED_IMAGES = False


@dataclass(frozen=True)
class InputImage:
    """An image that decoded cleanly, with the exact bytes evalkit will send."""

    data: bytes = field(repr=False)
    sha256: str
    mime: str
    width: int
    height: int
    mode: str
    source_format: str
    #: why the bytes differ from the original file, if they do (e.g. "CMYK→RGB", "animated: first frame").
    converted: tuple[str, ...] = ()
    name: str = "image"

    @property
    def format(self) -> str:
        return self.mime.split("/")[1]

    def data_uri(self) -> str:
        return f"data:{self.mime};base64,{base64.b64encode(self.data).decode('ascii')}"

    def to_pil(self) -> Image.Image:
        img = Image.open(io.BytesIO(self.data))
        img.load()
        return img


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_image_file(path: str | os.PathLike, *, max_bytes: int | None = None) -> bytes:
    """Read an image file, refusing a missing, empty or oversized one with a clear message."""
    p = Path(path)
    max_bytes = MAX_BYTES if max_bytes is None else max_bytes
    if not p.is_file():
        raise ImageError(f"image file not found: {p}", hint="check the path")
    size = p.stat().st_size
    if size == 0:
        raise ImageError(f"image file {p} is empty (0 bytes)", hint="replace it with a real image")
    if size > max_bytes:
        raise ImageError(
            f"image file {p} is {size / 1e6:.1f} MB, over the {max_bytes / 1e6:.0f} MB limit",
            hint="downscale it or raise EVALKIT_MAX_IMAGE_BYTES",
        )
    return p.read_bytes()


def load_image(
    data: bytes | str | os.PathLike,
    *,
    name: str | None = None,
    max_pixels: int | None = None,
    max_bytes: int | None = None,
) -> InputImage:
    """Validate and normalise an image given as bytes or a path. Raises :class:`ImageError`."""
    if isinstance(data, (str, os.PathLike)):
        name = name or str(data)
        data = read_image_file(data, max_bytes=max_bytes)
    name = name or "image"
    max_pixels = MAX_PIXELS if max_pixels is None else max_pixels
    max_bytes = MAX_BYTES if max_bytes is None else max_bytes
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ImageError(f"{name}: expected image bytes or a path, got {type(data).__name__}")
    data = bytes(data)
    if not data:
        raise ImageError(f"{name} is empty (0 bytes)", hint="pass the bytes of a PNG, JPEG or WebP image")
    if len(data) > max_bytes:
        raise ImageTooLargeError(
            f"{name} is {len(data) / 1e6:.1f} MB, over the {max_bytes / 1e6:.0f} MB limit",
            hint="downscale it or raise EVALKIT_MAX_IMAGE_BYTES",
        )
    img = _open_checked(data, name, max_pixels)
    fmt = (img.format or "").upper()
    if fmt not in ACCEPTED_FORMATS:
        raise ImageError(
            f"{name} is a {fmt or 'unrecognised'} image; accepted: {', '.join(sorted(ACCEPTED_FORMATS))}",
            hint="convert it to PNG or JPEG",
        )
    converted: list[str] = []
    n_frames = getattr(img, "n_frames", 1)
    if n_frames > 1:
        converted.append(f"animated ({n_frames} frames): first frame used")
    try:
        img.seek(0)
        img.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageError(
            f"{name} is corrupt or truncated and cannot be decoded ({type(exc).__name__}: {exc})",
            hint="re-export the image or replace the file",
        ) from None

    out_bytes, mime = data, PASS_THROUGH_FORMATS.get(fmt)
    mode = img.mode
    if mime is None or n_frames > 1 or img.mode not in _PASS_MODES:
        norm = _normalise_mode(img, converted)
        if mime is None:
            converted.append(f"{fmt}→PNG")
        buf = io.BytesIO()
        norm.save(buf, format="PNG", optimize=False)
        out_bytes, mime, mode = buf.getvalue(), "image/png", norm.mode
    return InputImage(
        data=out_bytes,
        sha256=sha256_bytes(out_bytes),
        mime=mime,
        width=img.width,
        height=img.height,
        mode=mode,
        source_format=fmt,
        converted=tuple(converted),
        name=name,
    )


def _open_checked(data: bytes, name: str, max_pixels: int) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))  # reads the header only
    except UnidentifiedImageError:
        raise ImageError(
            f"{name} is not an image evalkit can read (unrecognised or corrupt header)",
            hint="pass a PNG, JPEG or WebP file",
        ) from None
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(
            f"{name} declares an enormous size ({exc}); refused before decoding, as a decompression-bomb guard",
            hint="downscale the image or raise EVALKIT_MAX_PIXELS",
        ) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{name} cannot be opened ({exc})", hint="re-export the image") from None
    w, h = img.size
    if w <= 0 or h <= 0:
        raise ImageError(f"{name} has an empty size {w}×{h}")
    if w * h > max_pixels:
        raise ImageTooLargeError(
            f"{name} is {w}×{h} = {w * h / 1e6:.0f} MP, over the {max_pixels / 1e6:.0f} MP cap "
            "(refused before decoding, as a decompression-bomb guard)",
            hint="downscale the image or raise EVALKIT_MAX_PIXELS",
        )
    return img


def _normalise_mode(img: Image.Image, converted: list[str]) -> Image.Image:
    mode = img.mode
    if mode in _PASS_MODES:
        return img.copy()
    if mode == "CMYK":
        converted.append("CMYK→RGB")
        return img.convert("RGB")
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        converted.append(f"{mode} (16/32-bit)→8-bit L")
        return _scale_to_l(img)
    if mode == "F":
        converted.append("float→8-bit L")
        import numpy as np

        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        scale = (hi - lo) or 1.0
        return Image.fromarray(((arr - lo) / scale * 255).round().astype("uint8"), mode="L")
    if mode in ("P", "PA"):
        target = "RGBA" if ("transparency" in img.info or mode == "PA") else "RGB"
        converted.append(f"palette→{target}")
        return img.convert(target)
    if mode == "1":
        converted.append("1-bit→L")
        return img.convert("L")
    converted.append(f"{mode}→RGB")
    return img.convert("RGB")


def _scale_to_l(img: Image.Image, rows: int = 256) -> Image.Image:
    """16/32-bit grey → 8-bit L scaled by the image's maximum, rounded, in integer arithmetic a band of rows at
    a time (a 4096×4096 16-bit image needs a few MB of scratch, not float64 copies of the whole)."""
    import numpy as np

    arr = np.asarray(img)  # uint16 (I;16*) or int32 (I): no copy beyond PIL's own
    hi = int(arr.max()) if arr.size else 0
    out = np.zeros(arr.shape, dtype=np.uint8)
    if hi > 0:
        for top in range(0, arr.shape[0], rows):
            band = np.clip(arr[top : top + rows].astype(np.int64), 0, None)
            out[top : top + rows] = (band * 255 * 2 + hi) // (2 * hi)
    return Image.fromarray(out, mode="L")


def probe_size(head: bytes) -> tuple[int, int] | None:
    """An image's width and height from its first bytes (a header), or None when they do not tell."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return Image.open(io.BytesIO(head)).size
    except Exception:  # noqa: BLE001  (truncated or unknown: the full decode decides)
        return None


def decode_output(data: bytes, *, max_pixels: int | None = None) -> Image.Image:
    """Decode a model's output image (fully), raising :class:`ImageError` on garbage."""
    img = _open_checked(data, "output", MAX_PIXELS if max_pixels is None else max_pixels)
    try:
        img.load()
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"output image is truncated or corrupt ({exc})") from None
    return img


def to_rgb(img: Image.Image) -> Image.Image:
    """RGB view of any image; transparency composited on white."""
    img = ImageOps.exif_transpose(img) if img.format == "JPEG" else img
    if img.mode == "RGB":
        return img
    if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        bg = Image.new("RGB", rgba.size, (255, 255, 255))
        bg.paste(rgba, mask=rgba.split()[-1])
        return bg
    return img.convert("RGB")


def encode(img: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buf = io.BytesIO()
    if fmt.upper() in ("JPEG", "JPG"):
        img = to_rgb(img)
        kwargs.setdefault("quality", 90)
        fmt = "JPEG"
    img.save(buf, format=fmt.upper(), **kwargs)
    return buf.getvalue()


def thumbnail_jpeg(image: bytes | Image.Image | str | os.PathLike, max_side: int = 256, quality: int = 80) -> bytes:
    """A small JPEG (longest side ≤ ``max_side``) for grids, widgets and reports."""
    if isinstance(image, Image.Image):
        img = image.copy()
    else:
        if isinstance(image, (str, os.PathLike)):
            image = Path(image).read_bytes()
        img = decode_output(image)
    img = to_rgb(img)
    img.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return encode(img, "JPEG", quality=quality, optimize=True)


def fit_within(width: int, height: int, max_side: int | None, max_pixels: int | None) -> tuple[int, int]:
    """The largest size with the same aspect ratio that fits both limits (never upscales)."""
    scale = 1.0
    if max_side and max(width, height) > max_side:
        scale = min(scale, max_side / max(width, height))
    if max_pixels and width * height > max_pixels:
        scale = min(scale, (max_pixels / (width * height)) ** 0.5)
    if scale >= 1.0:
        return width, height
    return max(1, int(width * scale)), max(1, int(height * scale))


def resized(image: InputImage, width: int, height: int) -> InputImage:
    """``image`` downscaled to ``width``×``height`` (re-encoded as PNG), recording that it was."""
    img = image.to_pil()
    img = img.resize((width, height), Image.Resampling.LANCZOS)
    data = encode(img, "PNG")
    return InputImage(
        data=data,
        sha256=sha256_bytes(data),
        mime="image/png",
        width=width,
        height=height,
        mode=img.mode,
        source_format=image.source_format,
        converted=(*image.converted, f"resized {image.width}×{image.height}→{width}×{height}"),
        name=image.name,
    )
