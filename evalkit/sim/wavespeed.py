"""A local WaveSpeed-compatible server: the v3 REST protocol, simulated outputs, injectable faults.

A real HTTP server (Starlette on uvicorn, loopback only) that speaks the protocol described in
shared/reference/wavespeed-api.md §1–2 closely enough that evalkit's WaveSpeed provider and the
official SDK (``wavespeed.Client(api_key=..., base_url=handle.base_url)``) run against it unchanged.
Every image it returns is SIMULATED (a banner on the image, and the header ``X-Evalkit-Simulated: 1``
on every response): it is for demos, tests and benchmarks, never a measurement of a real model.

Protocol (what a client sees)
    * ``Authorization: Bearer <key>`` on every ``/api/v3/`` route, else 401 ``{"code":401,"message":…}``.
    * ``POST /api/v3/<endpoint>`` (a catalogue ``endpoint``; unknown → 404). The JSON body is checked
      against the model's :class:`~evalkit.catalog.spec.ModelSpec` like the real API would: unknown
      keys, missing prompt/image(s)/required mask, ``size`` outside ``min_px..max_px`` (or not an enum
      value), aspect ratio / resolution not in the lists, ``params.*`` type/range/choices, seed range,
      too many images, ``enable_sync_mode: true`` on a model without sync mode, ``enable_base64_output:
      true`` without base64 output, an output format the model does not make → 400 naming the problem.
      (These rules, and the output size below, live in :mod:`evalkit.sim.wavespeed_schema`.)
      ``enable_sync_mode: false`` is accepted everywhere (it asks for the default behaviour).
      Images may be data URIs, naked base64 or URLs served by this sim (uploads and outputs);
      undecodable image data → 400; any other URL cannot be fetched (no network), so the task fails
      with code 1402 "Failed to download image from the provided URL.".
    * Accepted → the §1.3 envelope (32-hex id, status "created", ``urls.get``…). Tasks wait in a FIFO
      queue while ``max_concurrent`` are processing (status "created"), then process for the model's
      simulated latency (catalogue ``sim.latency_ms`` × ``time_scale``, or ``fixed_latency_ms``), then
      complete or fail. ``GET /api/v3/predictions/<id>/result`` and ``…/predictions/<id>`` return the
      current envelope; ``GET /api/v3/predictions`` lists recent ones.
    * History: ``POST /api/v3/predictions`` with ``page``, ``page_size`` (1–100), ``model``, ``status``,
      ``created_after`` / ``created_before`` (ISO 8601) and ``include_inputs`` → ``data: {page, total,
      items}``, newest first (reference wavespeed-models-2026.md §4). With ``include_inputs`` each item has
      ``input``: the body as received, its long strings (inline images) given as ``sha256:<hex>`` of the
      string (a simplification: the sim keeps that compact form, not megabytes per prediction).
      ``SimConfig.history_inputs=False`` makes it never return inputs (the field is undocumented).
    * Sync mode blocks the POST until the task ends; past ``sync_timeout_s`` it returns 200 with status
      "processing", code 5004 and the text the SDK recognises.
    * Uploads: the SDK's ticket flow (``POST /api/v3/media/uploads`` then ``PUT`` to the returned URL,
      which needs no auth, like a presigned URL) and the legacy ``POST /api/v3/media/upload/binary``.

Outputs
    Rendered by :func:`evalkit.sim.render.render_simulated` (mode ``zoom_out`` for zoom-out models,
    ``inpaint`` when a mask was sent, else ``edit``), deterministic for the same request. The size is
    the requested one (``size`` "W*H", the model's default size, aspect ratio + resolution tier, or
    else the first input's size) **capped at** ``output_max_side`` **on the long side, keeping the
    aspect ratio** — so a 4k/8k request gives a 1024-px simulated image by default. The real envelope
    has no field for the requested size, so it is not reported; compare aspect ratios, not pixels.
    Images are rendered lazily (on the first download, or when a base64 output is returned) on a
    small thread pool shared by all requests (``SimConfig.render_threads``), once per distinct request,
    and kept **in memory** in an LRU bounded by ``SimConfig.output_cache_mb`` (a re-render after
    eviction gives identical bytes). Decoded inputs are cached by content the same way, and each
    prediction keeps a reference to its decoded inputs until :meth:`WaveSpeedSim.reset`.
    Cost: protocol work is ~1–4 ms of CPU per task; a *distinct* 1024-px output costs ~30–50 ms to
    render. Throughput benchmarks whose requests are all distinct should lower ``output_max_side``
    (e.g. 256) so the simulator is not the bottleneck.

Billing
    When a task *completes*, ``ModelSpec.price_usd(body)`` (the list price) is appended to
    :attr:`WaveSpeedSim.ledger`. Failed tasks are not billed: the real API's rule for failed tasks is
    unknown, and the sim bills completed tasks only.

Faults
    ``sim.add_fault(kind, rate=…|count=…, model=…, status=…, code=…, retry_after_s=…, delay_s=…)`` or
    ``POST /_sim/faults`` — see :mod:`evalkit.sim.faults` for the kinds and what each does.

Control endpoints (no auth, loopback clients only)
    ``GET /_sim/ledger`` · ``GET /_sim/stats`` · ``GET|POST|DELETE /_sim/faults`` · ``POST /_sim/reset``.

Test fixtures (tests/plugins/sim_wavespeed.py)
    ``wavespeed_sim`` — a started sim (every model finishes in ≤ ~50 ms), yields a :class:`SimHandle`
    (``.base_url``, ``.api_key``, ``.sim``, ``.stop()``); ``wavespeed_sim_factory(**config_kw)`` — start
    more with other :class:`SimConfig` values (fast latencies unless ``time_scale`` /
    ``fixed_latency_ms`` is given); all stopped at teardown.

The API key is never printed or logged; :class:`SimConfig` and :class:`SimHandle` mask it in their repr.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import email.policy
import hashlib
import hmac
import io
import itertools
import json
import os
import re
import secrets
import sys
import time
import uuid
from collections import Counter, OrderedDict, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from email.parser import BytesParser
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from evalkit.catalog import Catalog
from evalkit.catalog.spec import ModelSpec
from evalkit.errors import ImageError, InvalidInputError
from evalkit.images import InputImage, load_image
from evalkit.providers.history import compact_body, parse_time
from evalkit.sim.faults import SLOW_REQUEST_KINDS, Fault, FaultBook
from evalkit.sim.render import render_simulated
from evalkit.sim.server import SimServerHandle, start_in_thread, wait_for_stop_signal
from evalkit.sim.wavespeed_schema import _is_int, accepted_keys, body_problem, output_size

__all__ = [
    "BillingEntry",
    "Fault",
    "SimConfig",
    "SimHandle",
    "SubmitRecord",
    "WaveSpeedSim",
    "body_problem",
    "serve",
    "start_wavespeed_sim",
]

#: task error codes (reference §1.6) and the messages the sim gives them.
TASK_ERRORS: dict[int, str] = {
    1200: "Content moderation: the request or its output was flagged as sensitive content.",
    1400: "Missing required parameter.",
    1401: "Invalid parameter.",
    1402: "Failed to download image from the provided URL.",
    1403: "Task execution failed.",
    1405: "Task failed.",
    5000: "Internal server error.",
    5003: "Service temporarily unavailable, please retry later.",
    5004: "Task timed out.",
}
CONTENT_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
DEFAULT_LATENCY_MS = 5000.0
#: what stats() counts: requests by kind, then task outcomes
COUNTED = (
    "submit",
    "poll",
    "download",
    "upload",
    "list",
    "history",
    "upload_get",
    "unauthorized",
    "rejected",
    "accepted",
    "completed",
    "failed",
)
MAX_BODY_BYTES = 100 * 1024 * 1024
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}
_DATA_URI = re.compile(r"^data:[^,;]*(?:;[^,;]*)*;base64,", re.IGNORECASE)
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")
_NOT_AN_IMAGE = b"<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head><body>upstream error</body></html>\n"


@dataclass
class SimConfig:
    api_key: str = field(default="sim-key", repr=False)
    #: multiplies each model's catalogue ``sim.latency_ms``
    time_scale: float = 1.0
    #: overrides every model's latency (benchmarks use 500)
    fixed_latency_ms: float | None = None
    #: account-level concurrent tasks; extra tasks wait in a FIFO queue with status "created"
    max_concurrent: int = 100
    #: simulated outputs keep the requested aspect ratio but their long side is capped at this
    output_max_side: int = 1024
    sync_timeout_s: float = 90.0
    #: seeds the RNG of probabilistic faults
    seed: int = 0
    #: memory for rendered outputs (LRU); decoded inputs get half as much
    output_cache_mb: float = 512.0
    #: threads rendering outputs (shared by all requests)
    render_threads: int = 2
    #: the prediction history returns each item's ``input`` when asked (``include_inputs``)
    history_inputs: bool = True

    def __post_init__(self) -> None:
        if not self.api_key:
            raise ValueError("the simulator needs a non-empty api_key")
        if self.time_scale < 0 or (self.fixed_latency_ms is not None and self.fixed_latency_ms < 0):
            raise ValueError("latencies must be ≥ 0")
        if self.max_concurrent < 1 or self.output_max_side < 1 or self.render_threads < 1:
            raise ValueError("max_concurrent, output_max_side and render_threads must be ≥ 1")


@dataclass(frozen=True)
class BillingEntry:
    prediction_id: str
    model_id: str
    usd: float
    at: float  # unix seconds


@dataclass(frozen=True)
class SubmitRecord:
    prediction_id: str
    model_id: str
    body_sha256: str  # of the raw JSON body as received
    at: float


class _BadRequest(Exception):
    """A request the real API would refuse with 400 (message names the problem)."""


def _iso_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _safe_filename(name: Any) -> str:
    base = os.path.basename(str(name or "")).strip() or "upload"
    return _SAFE_NAME.sub("_", base)[:120] or "upload"


# ---- rendering ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _RenderJob:
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


def render_output(job: _RenderJob) -> bytes:
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


class _Memo:
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
    """An input image from bytes, a data URI or naked base64 (runs on the pool); _BadRequest if unusable."""
    if isinstance(ref, str):
        m = _DATA_URI.match(ref)
        if ref.startswith("data:") and not m:
            raise _BadRequest(f"{name}: a data URI must be base64-encoded ('data:image/png;base64,...')")
        payload = ref[m.end() :] if m else ref
        try:
            ref = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            try:
                ref = base64.b64decode("".join(payload.split()), validate=True)
            except (binascii.Error, ValueError):
                raise _BadRequest(f"{name} is neither an image URL, a data URI nor base64 image data") from None
    try:
        return load_image(ref, name=name)
    except ImageError as exc:
        raise _BadRequest(f"{name}: the image cannot be decoded ({exc.message})") from None


# ---- per-run state -----------------------------------------------------------------------------


@dataclass(eq=False)
class _Prediction:
    id: str
    spec: ModelSpec
    base_url: str
    created_at: str
    latency_s: float
    fmt: str
    base64_output: bool
    render: _RenderJob | None
    price_usd: float
    fail_at_start: tuple[int, str] | None = None
    fail: tuple[int, str] | None = None
    never_finish: bool = False
    #: the request body in compact form (evalkit.providers.history.compact_body), for the history
    input: Any = None
    status: str = "created"
    code: int | None = None
    error: str = ""
    inference_ms: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def output_url(self) -> str:
        return f"{self.base_url}/_sim/outputs/{self.id}.{self.fmt}"


@dataclass(eq=False)
class _Upload:
    filename: str
    content_type: str
    data: bytes | None = None


@dataclass(eq=False)
class _State:
    """Everything a reset forgets. Tasks hold the state they started in, so a reset cannot be corrupted by them."""

    predictions: dict[str, _Prediction] = field(default_factory=dict)
    uploads: dict[str, _Upload] = field(default_factory=dict)
    upload_slots: dict[str, str] = field(default_factory=dict)
    ledger: list[BillingEntry] = field(default_factory=list)
    billed_usd: float = 0.0
    submits: list[SubmitRecord] = field(default_factory=list)
    #: every key present from the start, so another thread can copy it while requests count
    counts: Counter = field(default_factory=lambda: Counter(dict.fromkeys(COUNTED, 0)))
    tasks: set = field(default_factory=set)
    waiters: deque = field(default_factory=deque)
    processing: int = 0
    in_flight: int = 0
    peak_in_flight: int = 0
    peak_processing: int = 0


# ---- the simulator -----------------------------------------------------------------------------


class WaveSpeedSim:
    """The simulator: an ASGI ``app`` plus the state tests inspect (ledger, submits, stats)."""

    def __init__(self, catalog: Catalog | None = None, config: SimConfig | None = None):
        self.config = config or SimConfig()
        catalog = catalog if catalog is not None else Catalog.load()
        self.models: dict[str, ModelSpec] = {m.endpoint: m for m in catalog if m.provider == "wavespeed"}
        self._keys = {ep: accepted_keys(m) for ep, m in self.models.items()}
        self.faults = FaultBook(self.config.seed)
        self._state = _State()
        self._pool = ThreadPoolExecutor(
            max_workers=self.config.render_threads, thread_name_prefix="wavespeed-sim-render"
        )
        cap = int(self.config.output_cache_mb * 1024 * 1024)
        self._outputs = _Memo(cap, self._pool, len)
        self._inputs = _Memo(cap // 2, self._pool, lambda img: len(img.data))
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing: asyncio.Future | None = None
        self._key = self.config.api_key.encode()
        routes = [
            Route("/api/v3/{path:path}", self._api, methods=["GET", "POST", "PUT", "DELETE", "PATCH"]),
            Route("/_sim/outputs/{name}", self._get_output, methods=["GET"]),
            Route("/_sim/uploads/{upload_id}/{filename}", self._get_upload, methods=["GET"]),
            Route("/_sim/upload-slots/{token}", self._put_upload, methods=["PUT"]),
            Route("/_sim/ledger", self._ctl_ledger, methods=["GET"]),
            Route("/_sim/stats", self._ctl_stats, methods=["GET"]),
            Route("/_sim/faults", self._ctl_faults, methods=["GET", "POST", "DELETE"]),
            Route("/_sim/reset", self._ctl_reset, methods=["POST"]),
            Route("/", self._index, methods=["GET"]),
        ]
        self.app = _SimulatedHeader(Starlette(routes=routes), self)

    def __repr__(self) -> str:
        return f"WaveSpeedSim(models={len(self.models)}, config={self.config!r})"

    # ---- public, callable from any thread --------------------------------------------------
    def add_fault(self, kind: str, **kw: Any) -> Fault:
        return self.faults.add(Fault(kind, **kw))

    def clear_faults(self) -> None:
        self.faults.clear()

    def reset(self) -> None:
        """Forget tasks (cancelling running ones), uploads, ledger, submits, counters and faults."""
        old, self._state = self._state, _State()
        self.faults.reset()
        self._cancel_tasks(old)

    @property
    def ledger(self) -> list[BillingEntry]:
        return self._state.ledger

    @property
    def billed_usd(self) -> float:
        return round(self._state.billed_usd, 10)

    @property
    def submits(self) -> list[SubmitRecord]:
        return self._state.submits

    def stats(self) -> dict[str, Any]:
        st = self._state
        out: dict[str, Any] = {k: st.counts[k] for k in COUNTED}
        out.update(
            in_flight=st.in_flight,
            processing=st.processing,
            queued=max(0, st.in_flight - st.processing),
            peak_in_flight=st.peak_in_flight,
            peak_processing=st.peak_processing,
            billed_usd=self.billed_usd,
            renders=self._outputs.computed,
            fault_hits=self.faults.hits(),
        )
        return out

    def shutdown(self) -> None:
        """Cancel every task and wake every delayed response (before the server stops)."""
        self._cancel_tasks(self._state)
        loop, closing = self._loop, self._closing
        if loop is not None and closing is not None and not loop.is_closed():

            def _close() -> None:
                if not closing.done():
                    closing.set_result(None)

            self._call_in_loop(_close)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    # ---- loop plumbing ------------------------------------------------------------------------
    def _bind_loop(self) -> None:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            self._closing = self._loop.create_future()

    def _call_in_loop(self, fn) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            fn()
        else:
            try:
                loop.call_soon_threadsafe(fn)
            except RuntimeError:  # loop closed meanwhile
                pass

    def _cancel_tasks(self, st: _State) -> None:
        self._call_in_loop(lambda: [t.cancel() for t in list(st.tasks)])  # the set is read in its own loop

    async def _sleep(self, delay_s: float) -> None:
        """Sleep, but wake at shutdown (so a slow fault never holds the server open)."""
        if delay_s <= 0:
            return
        if self._closing is None:
            await asyncio.sleep(delay_s)
        else:
            await asyncio.wait([self._closing], timeout=delay_s)

    # ---- responses ----------------------------------------------------------------------------
    @staticmethod
    def _json(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> JSONResponse:
        return JSONResponse(payload, status_code=status, headers=headers)

    def _error(self, status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
        return self._json({"code": status, "message": message}, status, headers)

    def _fault_response(self, fault: Fault, what: str) -> Response:
        if fault.kind in ("rate_limit", "rate_limit_poll"):
            return self._error(
                429,
                "Too many requests: rate limit exceeded, please retry later (simulated)",
                {"Retry-After": f"{fault.retry_after_s:g}"},
            )
        return self._error(fault.http_status, f"{what} failed: simulated server error (HTTP {fault.http_status})")

    async def _slow(self, kind: str, model_keys: tuple[str, ...]) -> None:
        if kind in SLOW_REQUEST_KINDS:
            fault = self.faults.draw("response", model_keys)
            if fault is not None:
                await self._sleep(fault.delay_s)

    async def _outputs_of(self, p: _Prediction) -> list[str]:
        if p.status != "completed":
            return []
        if p.base64_output:
            return [base64.b64encode(await self._output_bytes(p)).decode("ascii")]
        return [p.output_url]

    async def _envelope(self, p: _Prediction) -> dict[str, Any]:
        outputs = await self._outputs_of(p)
        data: dict[str, Any] = {
            "id": p.id,
            "model": p.spec.endpoint,
            "outputs": outputs,
            "urls": {"get": f"{p.base_url}/api/v3/predictions/{p.id}/result"},
            "has_nsfw_contents": [False] * len(outputs),
            "status": p.status,
            "created_at": p.created_at,
            "error": p.error,
            "executionTime": p.inference_ms,
            "timings": {"inference": p.inference_ms},
        }
        if p.code is not None:
            data["code"] = p.code
        return {"code": 200, "message": "success", "data": data}

    # ---- /api/v3 ------------------------------------------------------------------------------
    def _authorised(self, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), self._key)

    async def _api(self, request: Request) -> Response:
        st = self._state
        if not self._authorised(request):
            st.counts["unauthorized"] += 1
            return self._error(401, "Unauthorized: missing or invalid API key (send 'Authorization: Bearer <key>')")
        path, method = request.path_params["path"].strip("/"), request.method
        if method == "POST" and path == "media/uploads":
            return await self._upload_ticket(request)
        if method == "POST" and path == "media/upload/binary":
            return await self._upload_binary(request)
        if method == "GET" and path == "predictions":
            return self._list(request)
        if method == "POST" and path == "predictions":
            return await self._history(request)
        if method == "GET" and path.startswith("predictions/"):
            pid, _, tail = path[len("predictions/") :].partition("/")
            if tail in ("", "result"):
                return await self._poll(request, pid)
        if method == "POST" and path in self.models:
            return await self._submit(request, self.models[path])
        return self._error(404, f"no such endpoint: {method} /api/v3/{path}")

    async def _submit(self, request: Request, spec: ModelSpec) -> Response:
        st = self._state
        st.counts["submit"] += 1
        model_keys = (spec.id, spec.endpoint)
        raw = await request.body()
        await self._slow("submit", model_keys)
        try:
            if len(raw) > MAX_BODY_BYTES:
                raise _BadRequest(f"request body is over {MAX_BODY_BYTES // 2**20} MB")
            try:
                body = json.loads(raw)
            except (ValueError, UnicodeDecodeError):
                raise _BadRequest("request body must be a JSON object (it is not valid JSON)") from None
            if not isinstance(body, dict):
                raise _BadRequest(f"request body must be a JSON object, got {type(body).__name__}")
            problem = body_problem(spec, body, self._keys[spec.endpoint])
            if problem:
                raise _BadRequest(problem)
            base_url = f"{request.url.scheme}://{request.url.netloc}"
            images, mask, unreachable = await self._resolve_images(spec, body, request)
        except _BadRequest as exc:
            st.counts["rejected"] += 1
            return self._error(400, str(exc))

        fault = self.faults.draw("submit", model_keys)
        if fault is not None and fault.kind in ("rate_limit", "submit_5xx"):
            return self._fault_response(fault, "submit")
        if fault is not None:  # wrong_shape_submit: 200, but no id (and no task)
            return self._json({"code": 200, "message": "success", "data": {"status": "created", "outputs": []}})

        st = self._state  # the current one, should a reset have happened while this request waited
        p = self._create(st, spec, body, base_url, images, mask, unreachable)
        st.submits.append(SubmitRecord(p.id, spec.id, hashlib.sha256(raw).hexdigest(), time.time()))
        p.input = compact_body(body)
        after = self.faults.draw("accepted", model_keys)
        if after is not None and after.kind == "submit_accepted_5xx":
            return self._fault_response(after, "submit")
        if after is not None and after.kind == "submit_accepted_drop":
            return _DroppedResponse()
        if body.get("enable_sync_mode") is True:
            response = await self._wait_sync(p)
        else:
            response = self._json(await self._envelope(p))
        if after is not None:  # submit_timeout: the task exists; the answer comes too late
            await self._sleep(after.delay_s)
        return response

    async def _wait_sync(self, p: _Prediction) -> Response:
        try:
            await asyncio.wait_for(p.done.wait(), timeout=self.config.sync_timeout_s)
        except TimeoutError:
            pass
        if p.status in ("completed", "failed"):
            return self._json(await self._envelope(p))
        env = await self._envelope(p)
        env["data"].update(
            status="processing",
            code=5004,
            error=f"Sync mode timed out after {self.config.sync_timeout_s:g} seconds. "
            "The prediction is still processing asynchronously.",
        )
        return self._json(env)

    def _create(
        self,
        st: _State,
        spec: ModelSpec,
        body: dict[str, Any],
        base_url: str,
        images: tuple[InputImage, ...],
        mask: InputImage | None,
        unreachable: str | None,
    ) -> _Prediction:
        cfg = self.config
        latency_ms = (
            cfg.fixed_latency_ms
            if cfg.fixed_latency_ms is not None
            else float(spec.sim.get("latency_ms", DEFAULT_LATENCY_MS)) * cfg.time_scale
        )
        fmt = body.get(spec.output_format_param) if spec.output_format_param else None
        fmt = str(
            fmt or spec.default_output_format or (spec.output_formats[0] if spec.output_formats else "png")
        ).lower()
        fmt = "jpeg" if fmt == "jpg" else fmt if fmt in CONTENT_TYPES else "png"
        render = None
        price_params = dict(body)
        if images:
            size, chosen = output_size(spec, body, (images[0].width, images[0].height), cfg.output_max_side)
            if chosen:
                price_params[spec.size.param] = chosen
            mode = "zoom_out" if "zoom_out" in spec.operations else "inpaint" if mask is not None else "edit"
            seed = body.get(spec.seed.param, spec.seed.default) if spec.seed else None
            render = _RenderJob(
                spec.id,
                images,
                mask,
                spec.mask.convention if spec.mask else "white_edit",
                body.get("prompt"),
                seed,
                size,
                mode,
                fmt,
            )
        price = spec.price_usd(price_params)
        if price is None:
            try:
                price = spec.reserve_usd(price_params)
            except InvalidInputError:
                price = 0.0
        p = _Prediction(
            id=uuid.uuid4().hex,
            spec=spec,
            base_url=base_url,
            created_at=_iso_now(),
            latency_s=max(0.0, latency_ms) / 1000.0,
            fmt=fmt,
            base64_output=body.get("enable_base64_output") is True,
            render=render,
            price_usd=float(price),
        )
        if unreachable is not None:
            p.fail_at_start = (1402, TASK_ERRORS[1402])
        task_fault = self.faults.draw("task", (spec.id, spec.endpoint))
        if task_fault is not None:
            if task_fault.kind == "never_finish":
                p.never_finish = True
            else:
                code = 1200 if task_fault.kind == "moderation" else int(task_fault.code or 1403)
                p.fail = (code, TASK_ERRORS.get(code, f"Task failed with code {code}."))
        st.predictions[p.id] = p
        st.counts["accepted"] += 1
        st.in_flight += 1
        st.peak_in_flight = max(st.peak_in_flight, st.in_flight)
        task = asyncio.get_running_loop().create_task(self._run(st, p))
        st.tasks.add(task)
        task.add_done_callback(st.tasks.discard)
        return p

    # ---- task lifecycle -----------------------------------------------------------------------
    async def _run(self, st: _State, p: _Prediction) -> None:
        try:
            await self._acquire_slot(st)
            try:
                p.status = "processing"
                st.peak_processing = max(st.peak_processing, st.processing)
                if p.fail_at_start is not None:
                    self._finish(st, p, *p.fail_at_start)
                    return
                if p.never_finish:
                    await asyncio.get_running_loop().create_future()  # until cancelled by reset/stop
                await asyncio.sleep(p.latency_s)
                p.inference_ms = round(p.latency_s * 1000)
                if p.fail is not None:
                    self._finish(st, p, *p.fail)
                else:
                    self._finish(st, p)
            finally:
                self._release_slot(st)
        finally:
            st.in_flight -= 1
            p.done.set()

    def _finish(self, st: _State, p: _Prediction, code: int | None = None, error: str = "") -> None:
        if code is None:
            p.status = "completed"
            st.counts["completed"] += 1
            st.ledger.append(BillingEntry(p.id, p.spec.id, p.price_usd, time.time()))
            st.billed_usd += p.price_usd
        else:
            p.status, p.code, p.error = "failed", code, error
            st.counts["failed"] += 1

    async def _acquire_slot(self, st: _State) -> None:
        if st.processing < self.config.max_concurrent and not st.waiters:
            st.processing += 1
            return
        waiter = asyncio.get_running_loop().create_future()
        st.waiters.append(waiter)
        try:
            await waiter  # the releasing task hands its slot over (st.processing unchanged)
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._release_slot(st)
            raise

    @staticmethod
    def _release_slot(st: _State) -> None:
        while st.waiters:
            waiter = st.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        st.processing -= 1

    # ---- images -------------------------------------------------------------------------------
    async def _resolve_images(
        self, spec: ModelSpec, body: dict[str, Any], request: Request
    ) -> tuple[tuple[InputImage, ...], InputImage | None, str | None]:
        """Decode the body's images; (images, mask, first URL that cannot be fetched)."""
        raw = body[spec.inputs.param]
        refs = (
            [(f"{spec.inputs.param}[{i}]", s) for i, s in enumerate(raw)]
            if isinstance(raw, list)
            else [(spec.inputs.param, raw)]
        )
        mask_ref = body.get(spec.mask.param) if spec.mask is not None else None
        if mask_ref is not None:
            refs.append((spec.mask.param, mask_ref))
        decoded: list[InputImage | None] = []
        unreachable = None
        for name, ref in refs:
            img = await self._image(name, ref, request)
            if img is None and unreachable is None:
                unreachable = ref
            decoded.append(img)
        if unreachable is not None:
            return (), None, unreachable
        mask = decoded.pop() if mask_ref is not None else None
        return tuple(d for d in decoded if d is not None), mask, None

    async def _image(self, name: str, ref: str, request: Request) -> InputImage | None:
        """One image from a data URI, naked base64 or a URL of this sim; None when it cannot be fetched."""
        if ref.startswith(("http://", "https://")):
            data = await self._local_bytes(ref, request)
            if data is None:
                return None
            return await self._inputs.get("bytes:" + hashlib.sha256(data).hexdigest(), decode_image_ref, data, name)
        return await self._inputs.get("text:" + hashlib.sha256(ref.encode()).hexdigest(), decode_image_ref, ref, name)

    async def _local_bytes(self, url: str, request: Request) -> bytes | None:
        """The bytes behind a URL this sim serves (an upload or an output), or None (no network here)."""
        parts = urlsplit(url)
        if parts.hostname not in _LOOPBACK or parts.port != request.url.port:
            return None
        segments = parts.path.strip("/").split("/")
        st = self._state
        if len(segments) == 4 and segments[:2] == ["_sim", "uploads"]:
            upload = st.uploads.get(segments[2])
            return upload.data if upload is not None else None
        if len(segments) == 3 and segments[:2] == ["_sim", "outputs"]:
            p = st.predictions.get(segments[2].rpartition(".")[0])
            if p is not None and p.status == "completed" and p.render is not None:
                return await self._output_bytes(p)
        return None

    async def _output_bytes(self, p: _Prediction) -> bytes:
        assert p.render is not None
        return await self._outputs.get(p.render.key, render_output, p.render)

    # ---- polls, list, downloads ---------------------------------------------------------------
    async def _poll(self, request: Request, pid: str) -> Response:
        st = self._state
        st.counts["poll"] += 1
        p = st.predictions.get(pid)
        model_keys = (p.spec.id, p.spec.endpoint) if p is not None else ()
        await self._slow("poll", model_keys)
        if p is None:
            return self._error(404, f"prediction {pid!r} not found")
        fault = self.faults.draw("poll", model_keys)
        if fault is not None and fault.kind == "garbage_poll":
            return Response(
                b'{"code":200,"message":"success","data":{"id":"' + pid.encode()[:32] + b'","sta',
                media_type="application/json",
            )
        if fault is not None:
            return self._fault_response(fault, "get result")
        return self._json(await self._envelope(p))

    def _list(self, request: Request) -> Response:
        st = self._state
        st.counts["list"] += 1
        try:
            limit = max(1, min(1000, int(request.query_params.get("limit", 50))))
        except ValueError:
            return self._error(400, "limit must be an integer")
        predictions = st.predictions
        items = [
            {"id": p.id, "model": p.spec.endpoint, "status": p.status, "created_at": p.created_at}
            for p in (predictions[pid] for pid in itertools.islice(reversed(predictions), limit))
        ]
        return self._json({"code": 200, "message": "success", "data": {"items": items, "total": len(st.predictions)}})

    async def _history(self, request: Request) -> Response:
        """``POST /api/v3/predictions``: the account's predictions, filtered and paged, newest first."""
        st = self._state
        st.counts["history"] += 1
        fault = self.faults.draw("history", ())
        if fault is not None:
            return self._fault_response(fault, "history")
        try:
            body = json.loads(await request.body() or b"{}")
        except (ValueError, UnicodeDecodeError):
            return self._error(400, "request body must be JSON")
        if not isinstance(body, dict):
            return self._error(400, "request body must be a JSON object")
        page, size = body.get("page", 1), body.get("page_size", 100)
        if not isinstance(page, int) or isinstance(page, bool) or page < 1:
            return self._error(400, "page must be an integer ≥ 1")
        if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= 100:
            return self._error(400, "page_size must be an integer within 1–100")
        bounds = []
        for key in ("created_after", "created_before"):
            raw = body.get(key)
            t = parse_time(raw) if raw is not None else None
            if raw is not None and t is None:
                return self._error(400, f"{key} must be an ISO 8601 time")
            bounds.append(t)
        after, before = bounds
        model, status = body.get("model"), body.get("status")
        with_inputs = body.get("include_inputs") is True and self.config.history_inputs
        chosen = []
        for p in reversed(list(st.predictions.values())):  # newest first
            if model and p.spec.endpoint != model and p.spec.id != model:
                continue
            if status and p.status != status:
                continue
            created = parse_time(p.created_at)
            if (after is not None and created < after) or (before is not None and created > before):
                continue
            chosen.append(p)
        items = []
        for p in chosen[(page - 1) * size : page * size]:
            item = (await self._envelope(p))["data"]
            if p.status == "completed" and p.base64_output:
                item["outputs"] = [p.output_url]  # the history lists URLs, not megabytes of base64
            if with_inputs:
                item["input"] = p.input
            items.append(item)
        return self._json(
            {"code": 200, "message": "success", "data": {"page": page, "total": len(chosen), "items": items}}
        )

    async def _get_output(self, request: Request) -> Response:
        st = self._state
        st.counts["download"] += 1
        pid, _, ext = request.path_params["name"].rpartition(".")
        p = st.predictions.get(pid)
        model_keys = (p.spec.id, p.spec.endpoint) if p is not None else ()
        await self._slow("download", model_keys)
        if p is None or p.status != "completed" or p.render is None or ext != p.fmt:
            return self._error(404, "no such output")
        fault = self.faults.draw("download", model_keys)
        if fault is not None and fault.kind == "download_5xx":
            return self._fault_response(fault, "download")
        if fault is not None and fault.kind == "non_image_download":
            return Response(_NOT_AN_IMAGE, media_type=CONTENT_TYPES[p.fmt])
        data = await self._output_bytes(p)
        if fault is not None:  # truncated_download
            data = data[: len(data) // 2]
        return Response(data, media_type=CONTENT_TYPES[p.fmt])

    # ---- uploads --------------------------------------------------------------------------------
    def _upload_data(self, base_url: str, upload_id: str, u: _Upload, size: int) -> dict[str, Any]:
        kind = u.content_type.split("/")[0]
        return {
            "type": kind if kind in ("image", "video", "audio") else "file",
            "download_url": f"{base_url}/_sim/uploads/{upload_id}/{u.filename}",
            "filename": u.filename,
            "size": size,
        }

    async def _upload_ticket(self, request: Request) -> Response:
        st = self._state
        st.counts["upload"] += 1
        await self._slow("upload", ())
        try:
            body = json.loads(await request.body())
        except (ValueError, UnicodeDecodeError):
            body = None
        if not isinstance(body, dict) or not body.get("filename"):
            return self._error(400, "body must be a JSON object with 'filename' (and 'size', 'content_type')")
        filename = _safe_filename(body.get("filename"))
        ctype = str(body.get("content_type") or "application/octet-stream")
        upload_id, token = uuid.uuid4().hex, secrets.token_hex(16)
        u = _Upload(filename, ctype)
        st.uploads[upload_id] = u
        st.upload_slots[token] = upload_id
        base_url = f"{request.url.scheme}://{request.url.netloc}"
        size = body.get("size") if _is_int(body.get("size")) else 0
        data = self._upload_data(base_url, upload_id, u, size)
        data["upload"] = {
            "method": "PUT",
            "url": f"{base_url}/_sim/upload-slots/{token}",
            "headers": {"Content-Type": ctype},
        }
        return self._json({"code": 200, "message": "success", "data": data})

    async def _put_upload(self, request: Request) -> Response:
        st = self._state
        st.counts["upload"] += 1
        await self._slow("upload", ())
        upload_id = st.upload_slots.pop(request.path_params["token"], None)
        if upload_id is None or upload_id not in st.uploads:
            return Response(b"no such upload slot (or already used)", status_code=404, media_type="text/plain")
        data = await request.body()
        if len(data) > MAX_BODY_BYTES:
            return Response(b"upload too large", status_code=413, media_type="text/plain")
        st.uploads[upload_id].data = data
        return Response(b"", status_code=200)

    async def _upload_binary(self, request: Request) -> Response:
        st = self._state
        st.counts["upload"] += 1
        await self._slow("upload", ())
        ctype = request.headers.get("content-type", "")
        raw = await request.body()
        if not ctype.lower().startswith("multipart/form-data") or len(raw) > MAX_BODY_BYTES:
            return self._error(400, "send the file as multipart/form-data in the field 'file'")
        msg = BytesParser(policy=email.policy.HTTP).parsebytes(
            b"Content-Type: " + ctype.encode("latin-1") + b"\r\nMIME-Version: 1.0\r\n\r\n" + raw
        )
        part = (
            next((p for p in msg.iter_parts() if p.get_param("name", header="content-disposition") == "file"), None)
            if msg.is_multipart()
            else None
        )
        data = part.get_payload(decode=True) if part is not None else None
        if not data:
            return self._error(400, "multipart field 'file' is missing or empty")
        u = _Upload(_safe_filename(part.get_filename()), part.get_content_type(), data)
        upload_id = uuid.uuid4().hex
        st.uploads[upload_id] = u
        base_url = f"{request.url.scheme}://{request.url.netloc}"
        return self._json(
            {"code": 200, "message": "success", "data": self._upload_data(base_url, upload_id, u, len(data))}
        )

    async def _get_upload(self, request: Request) -> Response:
        st = self._state
        st.counts["upload_get"] += 1
        u = st.uploads.get(request.path_params["upload_id"])
        if u is None or u.data is None or u.filename != request.path_params["filename"]:
            return self._error(404, "no such file")
        return Response(u.data, media_type=u.content_type)

    # ---- control --------------------------------------------------------------------------------
    @staticmethod
    def _loopback(request: Request) -> bool:
        return request.client is None or request.client.host in _LOOPBACK

    async def _ctl_ledger(self, request: Request) -> Response:
        if not self._loopback(request):
            return self._error(403, "control endpoints answer loopback clients only")
        st = self._state
        return self._json(
            {"entries": [asdict(e) for e in st.ledger], "count": len(st.ledger), "total_usd": self.billed_usd}
        )

    async def _ctl_stats(self, request: Request) -> Response:
        if not self._loopback(request):
            return self._error(403, "control endpoints answer loopback clients only")
        return self._json(self.stats())

    async def _ctl_faults(self, request: Request) -> Response:
        if not self._loopback(request):
            return self._error(403, "control endpoints answer loopback clients only")
        if request.method == "DELETE":
            self.clear_faults()
        elif request.method == "POST":
            try:
                fault = self.faults.add(Fault.from_dict(json.loads(await request.body())))
            except (ValueError, UnicodeDecodeError) as exc:
                return self._error(400, f"bad fault: {exc}")
            return self._json({"fault": fault.as_dict()})
        return self._json({"faults": [f.as_dict() for f in self.faults.faults]})

    async def _ctl_reset(self, request: Request) -> Response:
        if not self._loopback(request):
            return self._error(403, "control endpoints answer loopback clients only")
        self.reset()
        return self._json({"reset": True})

    async def _index(self, request: Request) -> Response:
        return self._json(
            {
                "service": "evalkit WaveSpeed simulator — outputs are SIMULATED, not model results",
                "models": sorted(self.models),
                "api": "/api/v3/<endpoint>",
            }
        )


class _DroppedResponse(Response):
    """A reply that starts, promises more than it sends, and breaks the connection (a dropped connection
    after the request arrived whole: the client cannot tell whether the task was created)."""

    def __init__(self) -> None:
        super().__init__(b"")

    async def __call__(self, scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"4096")],
            }
        )
        await send({"type": "http.response.body", "body": b'{"code": 200, "data": {"id"', "more_body": True})
        raise _ConnectionDropped("simulated: connection dropped after the submit was accepted")


class _ConnectionDropped(Exception):
    """Raised inside the ASGI app to make the server close the connection mid-reply (a simulated fault)."""


class _SimulatedHeader:
    """ASGI wrapper: adds ``X-Evalkit-Simulated: 1`` to every response and binds the sim to its loop."""

    def __init__(self, app, sim: WaveSpeedSim):
        self.app = app
        self.sim = sim

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.sim._bind_loop()

        async def send_marked(message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"x-evalkit-simulated", b"1")]}
            await send(message)

        try:
            await self.app(scope, receive, send_marked)
        except _ConnectionDropped:
            return  # the reply is left incomplete: the server closes the connection (the simulated drop)


# ---- running it ----------------------------------------------------------------------------------


@dataclass
class SimHandle(SimServerHandle):
    """A started simulator: ``base_url``, ``api_key``, ``sim``; ``stop()`` (also as a context manager)."""

    sim: WaveSpeedSim

    @property
    def api_key(self) -> str:
        return self.sim.config.api_key

    def _shut_down(self) -> None:
        self.sim.shutdown()
        self.server.stop()
        self.sim.close()


def start_wavespeed_sim(
    catalog: Catalog | None = None, *, host: str = "127.0.0.1", port: int = 0, **config_kw: Any
) -> SimHandle:
    """Start a simulator in a background thread on ``host:port`` (0 = a free port)."""
    sim = WaveSpeedSim(catalog, SimConfig(**config_kw))
    try:
        server = start_in_thread(sim.app, host=host, port=port)
    except BaseException:
        sim.close()
        raise
    return SimHandle(sim=sim, server=server)


def serve(
    host: str = "127.0.0.1",
    port: int = 8765,
    *,
    port_file: str | os.PathLike | None = None,
    catalog: Catalog | None = None,
    **config_kw: Any,
) -> None:
    """Run the simulator in the foreground until SIGINT/SIGTERM (``evalkit sim``, ``python -m evalkit.sim``).

    Writes the bound port to ``port_file`` (atomically) when given — use ``port=0`` with it.
    """
    handle = start_wavespeed_sim(catalog, host=host, port=port, **config_kw)
    written: Path | None = None
    try:
        if port_file is not None:
            written = Path(port_file)
            tmp = written.with_name(written.name + ".tmp")
            tmp.write_text(f"{handle.server.port}\n")
            os.replace(tmp, written)
        print(
            f"evalkit WaveSpeed simulator on {handle.base_url} ({len(handle.sim.models)} models) — "
            "outputs are SIMULATED. Point a client at this base URL with the configured sim key. Ctrl-C stops.",
            file=sys.stderr,
            flush=True,
        )
        wait_for_stop_signal()
    finally:
        handle.stop()
        if written is not None:
            written.unlink(missing_ok=True)
