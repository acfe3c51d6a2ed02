"""Reading an edit request with bounded work: the body is checked as it streams in (size, top-level fields,
nesting, each field's size) so that padding is refused after its first chunk, the base64 text of a JSON body's
images is decoded as it arrives (the text itself is never held: a request costs about its decoded images), every
text field is checked before any image is touched, image headers are read before their pixels, and decoding
runs in a worker thread so other requests keep flowing."""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import json
import re
from collections.abc import Mapping
from typing import Any

from starlette.datastructures import UploadFile
from starlette.requests import Request

from evalkit.errors import ImageError, ImageTooLargeError
from evalkit.images import InputImage, load_image, probe_size
from evalkit.serve.config import ServeConfig
from evalkit.serve.guards import ApiError

#: the request's top-level fields (the original app's names); anything else is refused
TEXT_FIELDS = ("prompt", "operation", "tier", "model", "user_id")
FIELDS = ("image_base64", "options", *TEXT_FIELDS)
MAX_PROMPT_CHARS = 4000
MAX_NAME_CHARS = 200
#: bytes of JSON text each field's value may take (before decoding); image_base64 is bounded by the images
_FIELD_JSON_BYTES = {"prompt": 8 * MAX_PROMPT_CHARS, "options": 16_384, **dict.fromkeys(TEXT_FIELDS[1:], 1024)}
MAX_DEPTH = 6  # the object itself, options, and a little nesting inside options

_STRUCTURAL = re.compile(rb'["{}\[\]:,]')
_IN_STRING = re.compile(rb'["\\]')
_HEADER_B64_CHARS = 96 * 1024  # enough base64 for any PNG/JPEG/WebP header (JPEG's can trail EXIF data)


def _bad(message: str) -> ApiError:
    return ApiError(400, "invalid_input", message)


_CONTROL = re.compile(rb"[\x00-\x1f]")
_SINK_WINDOW = 256 * 1024


class Base64Stream:
    """One JSON string of base64 image data, decoded piece by piece as the body streams in, so its text is never
    held. Allowed around the base64: a ``data:…;base64,`` prefix, spaces, JSON's ``\\/`` and ``\\n``/``\\r``/``\\t``
    escapes (as ``"".join(text.split())`` after ``json.loads`` allowed before). Refused at once: anything else
    that is not base64 (400) and a decoded size over ``max_bytes`` (413)."""

    def __init__(self, name: str, max_bytes: int):
        self.name, self.max_bytes = name, max_bytes
        self.out = io.BytesIO()
        self.head: bytearray | None = bytearray()  # the first bytes, until a data: prefix is seen or ruled out
        self.pending = b""  # < 4 base64 characters carried over to the next piece
        self.padded = False  # a decoded piece ended with "=": nothing may follow

    def _invalid(self) -> ApiError:
        return _bad(f"{self.name} is not valid base64 image data")

    def feed(self, data: bytes) -> None:
        if _CONTROL.search(data):
            raise _bad("the body is not valid JSON")  # a raw control character inside a string
        if self.head is not None:
            self.head += data
            if not self._head_done(final=False):
                return
            data, self.head = bytes(self.head), None
        self._decode(data.replace(b" ", b"") if b" " in data else data)

    def escape(self, c: int) -> None:
        """The character after a backslash."""
        if c == ord("/"):
            self.feed(b"/")
        elif c not in b"nrt":  # escaped white space is dropped (as split() did); a \u, \" or \\ is no base64
            raise self._invalid()

    def _head_done(self, final: bool) -> bool:
        """Strip a data: prefix from ``self.head`` once it can be told; False while more bytes are needed."""
        assert self.head is not None
        head = self.head.lstrip(b" ")
        if head.startswith(b"data:"):
            comma = head.find(b",")
            if comma < 0:
                if len(head) > 1024:
                    raise self._invalid()
                if not final:
                    return False
                comma = len(head) - 1  # a data: URI without data
            head = head[comma + 1 :]
        elif len(head) < 5 and not final:
            return False
        self.head[:] = head
        return True

    def _decode(self, data: bytes) -> None:
        if not data:
            return
        if self.padded:
            raise self._invalid()  # data after the final "="
        buf = self.pending + data
        cut = len(buf) // 4 * 4
        piece, self.pending = buf[:cut], buf[cut:]
        if not piece:
            return
        try:
            decoded = base64.b64decode(piece, validate=True)
        except (binascii.Error, ValueError):
            raise self._invalid() from None
        self.padded = piece.endswith(b"=")
        self.out.write(decoded)
        if self.out.tell() > self.max_bytes:
            raise ApiError(413, "too_large", f"{self.name} is over the image limit of {self.max_bytes:,} bytes")

    def finish(self) -> bytes:
        if self.head is not None:
            self._head_done(final=True)
            data, self.head = bytes(self.head), None
            self._decode(data.replace(b" ", b""))
        if self.pending:
            raise self._invalid()  # not a whole number of base64 quads (padding missing)
        raw = self.out.getvalue()
        self.out = io.BytesIO()
        if not raw:
            raise _bad(f"{self.name} must be non-empty base64 text")
        return raw


class JsonShape:
    """Checks a JSON body chunk by chunk without building it: one top-level object, only known fields, no
    deeper nesting than ``max_depth``, no field longer than its limit. Raises :class:`ApiError` (400) as soon as
    a chunk breaks a rule, so the rest of a hostile body is never read.

    With ``image_field``, the text of that field's string (or of each string in its list) is decoded as base64 by
    a :class:`Base64Stream` instead of being kept: :meth:`feed` returns the chunk without it (the string stays,
    empty), and ``images`` holds the decoded bytes in order."""

    def __init__(
        self,
        limits: Mapping[str, int],
        max_depth: int = MAX_DEPTH,
        image_field: str | None = None,
        image_max_bytes: int = 0,
    ):
        self.limits, self.max_depth = dict(limits), max_depth
        self.depth, self.offset = 0, 0
        self.started = self.done = False
        self.in_string = self.escaped = self.key_string = self.expect_key = False
        self.key = bytearray()
        self.field: str | None = None
        self.value_start: int | None = None
        self.image_field, self.image_max_bytes = image_field, image_max_bytes
        self.images: list[bytes] = []
        self.sink: Base64Stream | None = None  # the image string being read
        self.image_list = False  # inside the image field's list
        self.list_index = 0
        self.image_field_seen = False

    def feed(self, chunk: bytes) -> bytes:
        """Check ``chunk``; return it without the text of image strings (with no ``image_field``: as it is)."""
        i, n = 0, len(chunk)
        kept: list[bytes] = []
        keep_from = 0
        cut_at = 0 if self.sink is not None else None  # where this chunk's image text starts
        while i < n:
            if self.in_string:
                if self.escaped:
                    self.escaped = False
                    if self.key_string:
                        self.key.append(chunk[i])
                    elif self.sink is not None:
                        self.sink.escape(chunk[i])
                    i += 1
                    continue
                m = _IN_STRING.search(chunk, i)
                j = m.start() if m else n
                if self.key_string:
                    self.key += chunk[i:j]
                    if len(self.key) > 256:
                        raise _bad("unexpected field (a key of over 256 characters)")
                elif self.sink is not None:
                    for k in range(i, j, _SINK_WINDOW):  # a window at a time: a body sent as one chunk is not copied
                        self.sink.feed(chunk[k : min(j, k + _SINK_WINDOW)])
                if m is None:
                    break
                if chunk[j] == 0x5C:  # backslash: the next byte is escaped
                    if self.key_string:
                        self.key.append(0x5C)
                    self.escaped = True
                else:
                    self.in_string = False
                    if self.key_string:
                        self._key_done()
                    elif self.sink is not None:
                        self.images.append(self.sink.finish())
                        self.sink = None
                        kept.append(chunk[keep_from:cut_at])
                        keep_from, cut_at = j, None
                i = j + 1
                continue
            m = _STRUCTURAL.search(chunk, i)
            j = m.start() if m else n
            if chunk[i:j].strip() and (not self.started or self.done):
                raise _bad("the body must be one JSON object")
            if m is None:
                break
            self._structural(chunk[j], self.offset + j)
            if self.sink is not None:  # an image string opened
                cut_at = j + 1
            i = j + 1
        self.offset += n
        self._check_open_value(self.offset)
        if cut_at is not None:  # the chunk ends inside an image string
            kept.append(chunk[keep_from:cut_at])
            keep_from = n
        if keep_from == 0:
            return chunk
        kept.append(chunk[keep_from:])
        return b"".join(kept)

    def _structural(self, c: int, at: int) -> None:
        if not self.started and c != ord("{"):
            raise _bad("the body must be a JSON object")
        if self.done:
            raise _bad("the body must be one JSON object")
        if c == ord('"'):
            self.in_string = True
            self.key_string = self.depth == 1 and self.expect_key
            self.key.clear()
            if self.image_field is not None and not self.key_string:
                if self.depth == 1 and self.field == self.image_field:
                    self.sink = Base64Stream(self.image_field, self.image_max_bytes)
                elif self.depth == 2 and self.image_list:
                    self.sink = Base64Stream(f"{self.image_field}[{self.list_index}]", self.image_max_bytes)
        elif c in b"{[":
            self.started = True
            self.depth += 1
            if self.depth > self.max_depth:
                raise _bad(f"the JSON is nested more than {self.max_depth} levels deep")
            if self.depth == 1:
                self.expect_key = True
            elif self.depth == 2 and c == ord("[") and self.field is not None and self.field == self.image_field:
                self.image_list, self.list_index = True, 0
        elif c in b"}]":
            if self.depth == 1:
                self._value_end(at)
                self.done = True
            elif self.depth == 2:
                self.image_list = False
            self.depth -= 1
        elif c == ord(",") and self.depth == 1:
            self._value_end(at)
            self.expect_key = True
        elif c == ord(",") and self.depth == 2 and self.image_list:
            self.list_index += 1
        elif c == ord(":") and self.depth == 1:
            self.value_start = at + 1

    def _key_done(self) -> None:
        try:
            key = json.loads(b'"' + bytes(self.key) + b'"')
        except (json.JSONDecodeError, UnicodeDecodeError):
            key = None
        if key not in self.limits:
            shown = key[:40] if isinstance(key, str) else "?"
            raise _bad(f"unexpected field {shown!r}; the fields are: {', '.join(self.limits)}")
        if key is not None and key == self.image_field:
            if self.image_field_seen:
                raise _bad(f"{key} is given twice")
            self.image_field_seen = True
        self.field, self.expect_key, self.value_start = key, False, None

    def _check_open_value(self, at: int) -> None:
        if self.field is not None and self.value_start is not None and at - self.value_start > self.limits[self.field]:
            raise ApiError(413, "too_large", f"{self.field} is over its limit of {self.limits[self.field]:,} bytes")

    def _value_end(self, at: int) -> None:
        self._check_open_value(at)
        self.field, self.value_start = None, None


def field_limits(cfg: ServeConfig) -> dict[str, int]:
    per_image = (cfg.max_image_bytes + 2) // 3 * 4 + 4096  # base64 of the largest image, a data: prefix, spaces
    return {"image_base64": cfg.max_images * per_image, **_FIELD_JSON_BYTES}


async def read_body(request: Request, limit: int, shape: JsonShape | None = None) -> bytearray:
    """The body, refused (413) as soon as it passes ``limit`` and (400) as soon as ``shape`` finds it wrong."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise _bad("Content-Length is not a number") from None
        if size > limit:
            raise ApiError(413, "too_large", f"request body of {size:,} bytes > limit {limit:,}")
    body = bytearray()  # grown in place: no second copy of the whole body to join chunks
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "too_large", f"request body over the limit of {limit:,} bytes")
        body += shape.feed(chunk) if shape is not None else chunk  # (without image text: it is decoded as it comes)
    return body


def _b64_bytes(value: Any, name: str, cfg: ServeConfig) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _bad(f"{name} must be non-empty base64 text")
    s = value.strip()
    if s.startswith("data:"):
        s = s.split(",", 1)[1] if "," in s else ""
    s = "".join(s.split())
    if len(s) * 3 // 4 > cfg.max_image_bytes + 3:
        raise ApiError(413, "too_large", f"{name} is over the image limit of {cfg.max_image_bytes:,} bytes")
    return s


def _b64decode(s: str, name: str) -> bytes:
    try:
        return base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError):
        raise _bad(f"{name} is not valid base64 image data") from None


def _check_header(head: bytes, name: str, cfg: ServeConfig) -> None:
    size = probe_size(head)
    if size is not None and size[0] * size[1] > cfg.max_image_pixels:
        w, h = size
        raise ApiError(
            413,
            "too_large",
            f"{name} is {w}×{h} = {w * h / 1e6:.0f} MP, over the {cfg.max_image_pixels / 1e6:.0f} MP cap "
            "(refused from its header, before decoding)",
        )


def _load(raw: bytes, name: str, cfg: ServeConfig) -> InputImage:
    if len(raw) > cfg.max_image_bytes:
        raise ApiError(413, "too_large", f"{name} is {len(raw):,} bytes > limit {cfg.max_image_bytes:,}")
    _check_header(raw[:_HEADER_B64_CHARS], name, cfg)
    try:
        return load_image(raw, name=name, max_bytes=cfg.max_image_bytes, max_pixels=cfg.max_image_pixels)
    except ImageTooLargeError as exc:
        raise ApiError(413, "too_large", f"{name}: {exc}") from None
    except ImageError as exc:
        raise _bad(f"{name}: {exc}") from None


def _decode_all(encoded: list[tuple[str, str]], files: list[tuple[str, bytes]], cfg: ServeConfig) -> list[InputImage]:
    """Runs in a worker thread: headers first (every image refused over the pixel cap before any is decoded),
    then base64 and pixels."""
    for name, s in encoded:
        head = s[: _HEADER_B64_CHARS // 3 * 4]
        _check_header(_b64decode(head[: len(head) // 4 * 4], name) if len(head) >= 4 else b"", name, cfg)
    for name, raw in files:
        _check_header(raw[:_HEADER_B64_CHARS], name, cfg)
    images = [_load(raw, name, cfg) for name, raw in files]
    images += [_load(_b64decode(s, name), name, cfg) for name, s in encoded]
    return images


def check_fields(data: Mapping[str, Any]) -> None:
    unknown = [k for k in data if k not in FIELDS]
    if unknown:
        raise _bad(f"unexpected field {str(unknown[0])[:40]!r}; the fields are: {', '.join(FIELDS)}")
    for key in TEXT_FIELDS:
        v = data.get(key)
        if v is not None and not isinstance(v, str):
            raise _bad(f"{key} must be a string")
        limit = MAX_PROMPT_CHARS if key == "prompt" else MAX_NAME_CHARS
        if isinstance(v, str) and len(v) > limit:
            raise _bad(f"{key} is too long (over {limit:,} characters)")
    if data.get("options") is not None and not isinstance(data["options"], dict):
        raise _bad('options must be an object like {"width": 1024, "seed": 42}')


def _json_object(raw: bytes | bytearray | str, what: str) -> Any:
    try:
        return json.loads(raw or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raise _bad(f"{what} is not valid JSON") from None


async def parse_edit(request: Request, cfg: ServeConfig) -> tuple[dict[str, Any], Any]:
    """The request's fields, checked, and a coroutine function that decodes its images in a worker thread
    (call it once the fields have passed every other check: nothing is decoded for a refused request)."""
    ctype = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    encoded: list[tuple[str, str]] = []
    files: list[tuple[str, bytes]] = []
    streamed: list[bytes] | None = None  # a JSON body's images, decoded from base64 while it was read
    if ctype == "application/json":
        shape = JsonShape(field_limits(cfg), image_field="image_base64", image_max_bytes=cfg.max_image_bytes)
        body = await read_body(request, cfg.max_body_bytes, shape)
        data = _json_object(body, "the body")
        del body
        streamed = shape.images
        if not isinstance(data, dict):
            raise _bad("the body must be a JSON object")
    elif ctype == "multipart/form-data":
        if getattr(request.state, "foreign_origin", None):
            raise ApiError(
                403, "forbidden", "multipart forms are only taken from this server's own pages; send JSON instead"
            )
        body = await read_body(request, cfg.max_body_bytes)
        request._body = bytes(body)  # noqa: SLF001  (the capped body is what starlette's form parser reads)
        del body
        try:
            form = await request.form(max_files=cfg.max_images, max_fields=20, max_part_size=cfg.max_body_bytes)
        except Exception as exc:  # noqa: BLE001  (multipart errors differ by starlette version)
            raise _bad(f"could not read the multipart form: {exc}") from None
        data = {}
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                if key != "image":
                    raise _bad(f"unexpected file field {key[:40]!r} (use 'image')")
                files.append((value.filename or "image", await value.read()))
            else:
                data[key] = value
        if "options" in data:
            data["options"] = _json_object(data["options"], "options") if data["options"] else None
            if data["options"] is not None:
                _check_depth(data["options"], MAX_DEPTH - 1)
    else:
        raise ApiError(
            415,
            "invalid_input",
            f"unsupported content type {ctype or 'none'!r}: send application/json (or a multipart form from "
            "this server's page)",
        )
    check_fields(data)
    b64 = data.pop("image_base64", None)
    if b64 is not None:
        values = b64 if isinstance(b64, list) else [b64]
        if len(values) + len(files) > cfg.max_images:
            raise _bad(f"at most {cfg.max_images} images per edit")
        decoded = iter(streamed or ())
        for i, v in enumerate(values):
            name = f"image_base64[{i}]" if len(values) > 1 else "image_base64"
            if streamed is None:
                encoded.append((name, _b64_bytes(v, name, cfg)))
            elif not isinstance(v, str):
                raise _bad(f"{name} must be non-empty base64 text")
            else:  # each string's text was decoded as it streamed in (its bytes are checked as any file's)
                files.append((name, next(decoded)))
    if not encoded and not files:
        raise _bad("no image: send image_base64 (JSON) or an 'image' file (multipart)")

    async def decode() -> list[InputImage]:
        return await asyncio.to_thread(_decode_all, encoded, files, cfg)

    return data, decode


def _check_depth(value: Any, limit: int) -> None:
    stack = [(value, 1)]
    while stack:
        v, d = stack.pop()
        if d > limit:
            raise _bad(f"options are nested more than {limit} levels deep")
        if isinstance(v, dict):
            stack.extend((x, d + 1) for x in v.values())
        elif isinstance(v, list):
            stack.extend((x, d + 1) for x in v)
