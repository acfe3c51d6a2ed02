"""A local server that speaks Stability AI's v2beta edit protocol, with SIMULATED outputs.

What it imitates (shared/reference/ecosystem.md §4): ``POST /v2beta/stable-image/edit/<op>`` with a
bearer key and a multipart body; ``accept: image/*`` answers image bytes with ``finish-reason`` and
``seed`` headers (``application/json`` answers ``{"image", "finish_reason", "seed"}``); errors are
``{"id", "name", "errors": [...]}``; replace-background-and-relight is asynchronous (``{"id"}``, then
``GET /v2beta/results/{id}``: 202 while running, 200 with the image; another key gets 404).

Where the real API is not documented the simulator is deliberately *strict* so evalkit's own bugs show:
unknown form fields are a 400, and every image field must decode and respect the size limits.

Every image is drawn by :func:`evalkit.sim.render.render_simulated` (labelled SIMULATED) and every
response carries ``X-Evalkit-Simulated: 1``. A billing ledger records successful generations in
credits and USD. Faults are injected with :meth:`StabilitySim.inject` (or ``POST /_sim/faults``); the kinds are
:data:`evalkit.sim.faults.STABILITY_FAULTS` (documented in :mod:`evalkit.sim.faults`). ``endpoint`` on a fault
narrows it to one op, or to "results" (polls).

Latency: instant by default (tests); ``time_scale`` multiplies each endpoint's nominal ``latency_ms``
(a simulator parameter, NOT a measurement of Stability) and ``fixed_latency_ms`` sets one for all.
``evalkit sim --provider stability`` (:mod:`evalkit.sim.launch`) runs it in the foreground.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

from PIL import Image, ImageFilter, UnidentifiedImageError
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from evalkit.providers.http import SIMULATED_HEADER
from evalkit.sim.faults import STABILITY_FAULTS, Fault
from evalkit.sim.render import encode_image, render_simulated
from evalkit.sim.scripted import ScriptedSim

USD_PER_CREDIT = 0.01
MAX_REQUEST_BYTES = 10 * 1024 * 1024
MIN_SIDE_PX = 64
MIN_PIXELS = 4096
MAX_PIXELS = 9_437_184
RELIGHT = "replace-background-and-relight"
OUTPAINT_SIDES = ("left", "right", "up", "down")
_FORMATS = ("jpeg", "png", "webp")


@dataclass(frozen=True)
class EditEndpoint:
    """One v2beta edit endpoint as the server sees it: fields, price, how the stand-in is drawn."""

    name: str
    credits: int
    required: tuple[str, ...]
    optional: tuple[str, ...]
    image_fields: tuple[str, ...] = ("image", "mask")
    output_formats: tuple[str, ...] = _FORMATS
    render_mode: str = "edit"
    is_async: bool = False
    #: nominal simulated latency (× time_scale); a simulator parameter, not a measurement
    latency_ms: float = 5000.0


_COMMON = ("seed", "output_format")
#: credits billed per success. No official table after Stability's Aug-2025 change: erase, inpaint and
#: search-and-replace (5) and relight (8) are implied by a reseller's prices; the rest keep the pre-Aug-2025
#: snapshot (shared/reference/wavespeed-models-2026.md §3). A simulator parameter, like the catalogue's.
ENDPOINTS: dict[str, EditEndpoint] = {
    e.name: e
    for e in (
        EditEndpoint("erase", 5, ("image",), ("mask", "grow_mask", *_COMMON), render_mode="inpaint"),
        EditEndpoint(
            "inpaint",
            5,
            ("image", "prompt"),
            ("mask", "negative_prompt", "grow_mask", "style_preset", *_COMMON),
            render_mode="inpaint",
        ),
        EditEndpoint(
            "outpaint",
            4,
            ("image",),
            (*OUTPAINT_SIDES, "prompt", "creativity", "style_preset", *_COMMON),
            render_mode="zoom_out",
        ),
        EditEndpoint(
            "search-and-replace",
            5,
            ("image", "prompt", "search_prompt"),
            ("negative_prompt", "grow_mask", "style_preset", *_COMMON),
        ),
        EditEndpoint(
            "search-and-recolor",
            5,
            ("image", "prompt", "select_prompt"),
            ("negative_prompt", "grow_mask", "style_preset", *_COMMON),
        ),
        EditEndpoint(
            "remove-background",
            2,
            ("image",),
            ("output_format",),
            output_formats=("png", "webp"),
            render_mode="remove_background",
        ),
        EditEndpoint(
            RELIGHT,
            8,
            ("subject_image",),
            (
                "background_prompt",
                "background_reference",
                "foreground_prompt",
                "negative_prompt",
                "preserve_original_subject",
                "original_background_depth",
                "keep_original_background",
                "light_source_direction",
                "light_reference",
                "light_source_strength",
                *_COMMON,
            ),
            image_fields=("subject_image", "background_reference", "light_reference"),
            is_async=True,
            latency_ms=30000.0,
        ),
    )
}


@dataclass(frozen=True)
class LedgerEntry:
    generation_id: str
    endpoint: str
    credits: int
    usd: float
    finish_reason: str
    #: the sha256 of the image answered: a synchronous edit has no id on the wire, so this is what a
    #: client's record can be matched with (tests/plugins/money.py)
    output_sha256: str = ""


@dataclass
class ReceivedRequest:
    """What the server parsed from one POST (tests assert on it)."""

    endpoint: str
    status: int = 0
    fields: dict[str, str] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict, repr=False)
    accept: str = ""


@dataclass
class _Job:
    owner_key: str
    endpoint: str
    image: bytes
    fmt: str
    seed: int
    finish_reason: str
    polls_left: int
    ready_at: float
    never_finish: bool = False
    charged: bool = False


class _Rejected(Exception):
    def __init__(self, status: int, name: str, *errors: str, retry_after: str | None = None):
        super().__init__(name)
        self.status, self.name, self.errors, self.retry_after = status, name, list(errors), retry_after


class StabilitySim(ScriptedSim):
    """The simulator: ``.app`` is the Starlette app; ``.ledger``/``.requests``/``.polls`` are its records."""

    def __init__(
        self,
        api_key: str = "sk-evalkit-sim",
        *,
        relight_polls_before_done: int = 1,
        time_scale: float = 0.0,
        fixed_latency_ms: float | None = None,
        balance_credits: float | None = None,
    ):
        super().__init__(
            STABILITY_FAULTS,
            [
                Route("/v2beta/stable-image/edit/{op}", self._edit, methods=["POST"]),
                Route("/v2beta/results/{generation_id}", self._result, methods=["GET"]),
                Route("/v1/user/balance", self._balance, methods=["GET"]),
            ],
            time_scale=time_scale,
            fixed_latency_ms=fixed_latency_ms,
        )
        self.api_key = api_key
        #: the account's credits before anything was charged (None: unlimited; 1 credit = US$0.01)
        self.balance_credits = balance_credits
        self.relight_polls_before_done = relight_polls_before_done
        self.ledger: list[LedgerEntry] = []
        self.requests: list[ReceivedRequest] = []
        self.polls: list[tuple[str, int]] = []  # (generation id, status answered)
        self._jobs: dict[str, _Job] = {}

    # ---- control -----------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget faults, records, jobs and the ledger (a fresh server without restarting it)."""
        self.faults.clear()
        with self._lock:
            self._jobs.clear()
        self.ledger.clear()
        self.requests.clear()
        self.polls.clear()

    @property
    def total_credits(self) -> int:
        return sum(e.credits for e in self.ledger)

    @property
    def available_credits(self) -> float:
        """Credits left: the balance minus what was charged (an unlimited account reports 100,000 minus it)."""
        total = 100_000.0 if self.balance_credits is None else self.balance_credits
        return total - self.total_credits

    def top_up(self, credits: float) -> None:
        if self.balance_credits is not None:
            self.balance_credits += credits

    async def _balance(self, request: Request) -> Response:
        """``GET /v1/user/balance`` → ``{"credits": n}`` (Stability's v1 user API)."""
        try:
            self._check_key(request)
        except _Rejected as exc:
            return _error(exc)
        return _json({"credits": self.available_credits})

    @property
    def total_usd(self) -> float:
        return round(sum(e.usd for e in self.ledger), 6)

    @property
    def job_ids(self) -> set[str]:
        """The ids of the asynchronous jobs created (relight), finished or not."""
        with self._lock:
            return set(self._jobs)

    def posts_to(self, endpoint: str) -> list[ReceivedRequest]:
        return [r for r in self.requests if r.endpoint == endpoint]

    def latency_s(self, endpoint: EditEndpoint) -> float:
        return self._simulated_s(endpoint.latency_ms)

    # ---- handlers ----------------------------------------------------------------------------
    async def _edit(self, request: Request) -> Response:
        op = request.path_params["op"]
        received = ReceivedRequest(endpoint=op, accept=request.headers.get("accept", ""))
        try:
            self._check_key(request)
            endpoint = ENDPOINTS.get(op)
            if endpoint is None:
                raise _Rejected(404, "not_found", f"no edit endpoint named {op!r}")
            # read the whole body before answering, so a client still uploading sees the 413 (not a reset)
            if len(await request.body()) > MAX_REQUEST_BYTES:
                raise _Rejected(413, "payload_too_large", f"request body exceeds {MAX_REQUEST_BYTES} bytes")
            await self._parse_form(request, received)
            self.requests.append(received)
            await self._request_faults(op)
            images = self._validate(endpoint, received)
            if self.balance_credits is not None and endpoint.credits > self.available_credits:
                raise _Rejected(
                    402,
                    "payment_required",
                    f"insufficient credits: this request costs {endpoint.credits} credits, "
                    f"the account holds {max(0.0, self.available_credits):g} (simulated)",
                )
            slow = self.faults.draw("response", op)
            delay_s = (slow.delay_s if slow is not None else 0.0) + (
                0.0 if endpoint.is_async else self.latency_s(endpoint)
            )
            if delay_s:
                await asyncio.sleep(delay_s)
            return self._generate(endpoint, received, images)
        except _Rejected as exc:
            received.status = exc.status
            return _error(exc)

    async def _result(self, request: Request) -> Response:
        gid = request.path_params["generation_id"]
        try:
            key = self._check_key(request)
            fault = self.faults.draw({"rate_limit", "server_error"}, "results", wildcard=False)
            if fault is not None:
                raise _fault_rejection(fault)
            with self._lock:
                job = self._jobs.get(gid)
                if job is None or job.owner_key != key:
                    raise _Rejected(404, "not_found", f"id: no generation {gid!r} for this API key")
                if job.never_finish or job.polls_left > 0 or time.monotonic() < job.ready_at:
                    job.polls_left -= 1
                    self.polls.append((gid, 202))
                    return _json({"id": gid, "status": "in-progress"}, 202)
                if not job.charged:
                    job.charged = True
                    self._charge(gid, job.endpoint, job.finish_reason, job.image)
            self.polls.append((gid, 200))
            return _image_response(job.image, job.fmt, job.seed, job.finish_reason, request.headers.get("accept", ""))
        except _Rejected as exc:
            self.polls.append((gid, exc.status))
            return _error(exc)

    async def _ledger_view(self, request: Request) -> Response:
        return _json(
            {
                "entries": [asdict(e) for e in self.ledger],
                "total_credits": self.total_credits,
                "total_usd": self.total_usd,
            }
        )

    def _control_json(self, body: Any, status: int = 200) -> Response:
        return _json(body, status)

    # ---- steps -------------------------------------------------------------------------------
    def _check_key(self, request: Request) -> str:
        auth = request.headers.get("authorization", "")
        key = auth[7:] if auth.lower().startswith("bearer ") else ""
        if key != self.api_key:
            raise _Rejected(401, "unauthorized", "authorization: missing or invalid API key")
        return key

    async def _parse_form(self, request: Request, received: ReceivedRequest) -> None:
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise _Rejected(400, "bad_request", "content-type: must be multipart/form-data")
        try:
            form = await request.form(max_part_size=MAX_REQUEST_BYTES)
        except Exception as exc:  # a malformed body: python-multipart's errors vary by version
            raise _Rejected(400, "bad_request", f"body: malformed multipart ({type(exc).__name__})") from None
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                received.files[name] = await value.read()
            else:
                received.fields[name] = str(value)

    async def _request_faults(self, op: str) -> None:
        fault = self.faults.draw("request", op)
        if fault is not None:
            raise _fault_rejection(fault)

    def _validate(self, ep: EditEndpoint, r: ReceivedRequest) -> dict[str, Image.Image]:
        errors: list[str] = []
        allowed = set(ep.required) | set(ep.optional)
        for name in (*r.fields, *r.files):
            if name not in allowed:
                errors.append(f"{name}: unknown field for {ep.name}")
        for name in ep.required:
            if name not in r.fields and name not in r.files:
                errors.append(f"{name}: is required")
            elif name in r.fields and name not in ep.image_fields and not r.fields[name].strip():
                errors.append(f"{name}: cannot be empty")
        for name in r.fields:
            if name in ep.image_fields:
                errors.append(f"{name}: must be a file")
        images: dict[str, Image.Image] = {}
        for name, data in r.files.items():
            if name not in ep.image_fields:
                errors.append(f"{name}: must be a text field")
                continue
            try:
                img = Image.open(io.BytesIO(data))
                img.load()
            except (UnidentifiedImageError, OSError, ValueError):
                errors.append(f"{name}: could not be decoded as an image")
                continue
            if name != "mask":
                w, h = img.size
                if min(w, h) < MIN_SIDE_PX:
                    errors.append(f"{name}: every side must be at least {MIN_SIDE_PX} pixels (got {w}x{h})")
                if not MIN_PIXELS <= w * h <= MAX_PIXELS:
                    errors.append(f"{name}: total pixels must be between {MIN_PIXELS} and {MAX_PIXELS} (got {w * h})")
            images[name] = img
        fmt = r.fields.get("output_format", "png")
        if fmt not in ep.output_formats:
            errors.append(f"output_format: must be one of {', '.join(ep.output_formats)}")
        for name in (
            "seed",
            "grow_mask",
            *OUTPAINT_SIDES,
            "creativity",
            "preserve_original_subject",
            "original_background_depth",
            "light_source_strength",
        ):
            if name in r.fields:
                try:
                    if float(r.fields[name]) < 0:
                        errors.append(f"{name}: must be ≥ 0")
                except ValueError:
                    errors.append(f"{name}: must be a number")
        if ep.name == "outpaint" and not errors and not any(float(r.fields.get(s, 0)) > 0 for s in OUTPAINT_SIDES):
            errors.append("left, right, up, down: at least one must be greater than 0")
        if ep.is_async:
            if not r.fields.get("background_prompt") and "background_reference" not in r.files:
                errors.append("background_prompt: background_prompt or background_reference is required")
            if "light_source_strength" in r.fields and not (
                "light_source_direction" in r.fields or "light_reference" in r.files
            ):
                errors.append("light_source_strength: requires light_source_direction or light_reference")
        if errors:
            raise _Rejected(400, "bad_request", *errors)
        return images

    def _generate(self, ep: EditEndpoint, r: ReceivedRequest, images: dict[str, Image.Image]) -> Response:
        src = images[ep.required[0]]
        fields = r.fields
        seed = int(float(fields.get("seed", 0))) or _derived_seed(r)
        size = None
        if ep.render_mode == "zoom_out":
            left, rt, u, d = (int(float(fields.get(s, 0))) for s in OUTPAINT_SIDES)
            size = (src.width + left + rt, src.height + u + d)
        mask = images.get("mask")
        if mask is None and ep.render_mode == "inpaint" and src.mode in ("RGBA", "LA"):
            mask = src.getchannel("A").point(lambda v: 255 if v < 128 else 0)  # transparent = edit
        prompt = " | ".join(
            fields[k] for k in ("prompt", "search_prompt", "select_prompt", "background_prompt") if fields.get(k)
        )
        out = render_simulated(
            [src],
            model_id=f"stability/{ep.name}",
            prompt=prompt or None,
            seed=seed,
            size=size,
            mask=mask,
            mode=ep.render_mode,
        )
        finish = "SUCCESS"
        if self.faults.draw("output", ep.name) is not None:
            finish = "CONTENT_FILTERED"
            out = out.filter(ImageFilter.GaussianBlur(radius=max(4, out.width // 24)))
        fmt = fields.get("output_format", "png")
        data = encode_image(out, fmt)
        r.status = 200
        gid = uuid.uuid4().hex + uuid.uuid4().hex
        if ep.is_async:
            never = self.faults.draw("job", ep.name) is not None
            with self._lock:
                self._jobs[gid] = _Job(
                    self.api_key,
                    ep.name,
                    data,
                    fmt,
                    seed,
                    finish,
                    self.relight_polls_before_done,
                    time.monotonic() + self.latency_s(ep),
                    never,
                )
            return _json({"id": gid})
        self._charge(gid, ep.name, finish, data)
        return _image_response(data, fmt, seed, finish, r.accept)

    def _charge(self, gid: str, endpoint: str, finish: str, data: bytes) -> None:
        credits = ENDPOINTS[endpoint].credits
        sha = hashlib.sha256(data).hexdigest()
        self.ledger.append(LedgerEntry(gid, endpoint, credits, round(credits * USD_PER_CREDIT, 6), finish, sha))


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers={SIMULATED_HEADER: "1", **(headers or {})})


def _error(exc: _Rejected) -> JSONResponse:
    headers = {"Retry-After": exc.retry_after} if exc.retry_after else None
    return _json({"id": uuid.uuid4().hex, "name": exc.name, "errors": exc.errors}, exc.status, headers)


def _fault_rejection(fault: Fault) -> _Rejected:
    kind = fault.kind
    if kind == "rate_limit":
        return _Rejected(
            429,
            "rate_limit_exceeded",
            "You have exceeded the rate limit of 150 requests within a 10 second period",
            retry_after=f"{fault.retry_after_s:g}",
        )
    if kind == "moderation":
        return _Rejected(
            403,
            "content_moderation",
            "Your request was flagged by our content moderation system, "
            "as a result your request was denied and you were not charged.",
        )
    if kind == "payload_too_large":
        return _Rejected(413, "payload_too_large", "body: request exceeds 10 MiB")
    if kind == "unprocessable":
        return _Rejected(422, "invalid_language", "prompt: well-formed but rejected (simulated)")
    return _Rejected(500, "internal_error", "An unexpected server error occurred (simulated)")


def _image_response(data: bytes, fmt: str, seed: int, finish: str, accept: str) -> Response:
    if "application/json" in accept:
        return _json({"image": base64.b64encode(data).decode("ascii"), "finish_reason": finish, "seed": seed})
    headers = {SIMULATED_HEADER: "1", "finish-reason": finish, "seed": str(seed)}
    return Response(data, media_type=f"image/{fmt}", headers=headers)


def _derived_seed(r: ReceivedRequest) -> int:
    h = hashlib.sha256(repr(sorted(r.fields.items())).encode())
    for name in sorted(r.files):
        h.update(r.files[name])
    return int.from_bytes(h.digest()[:4], "big") % 4294967294 + 1
