"""The WaveSpeed simulator's face to HTTP: the Starlette routes, bearer-key auth, the ``/api/v3`` dispatch,
submits (checked by :mod:`~evalkit.sim.wavespeed.schema`, queued by :mod:`~evalkit.sim.wavespeed.tasks`),
polls, lists, output downloads, the loopback-only ``/_sim`` control routes, and the public
:class:`WaveSpeedSim` object tests inspect."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import itertools
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from typing import Any
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from evalkit.catalog import Catalog
from evalkit.catalog.spec import ModelSpec
from evalkit.errors import InvalidInputError
from evalkit.images import InputImage
from evalkit.providers.history import compact_body, parse_time
from evalkit.providers.http import is_loopback_host
from evalkit.sim.faults import SLOW_REQUEST_KINDS, Fault, FaultBook
from evalkit.sim.wavespeed.catalog import CatalogDrift, SimCatalog
from evalkit.sim.wavespeed.images import BadRequest, Memo, decode_image_ref, render_output
from evalkit.sim.wavespeed.schema import accepted_keys, body_problem
from evalkit.sim.wavespeed.state import (
    CONTENT_TYPES,
    COUNTED,
    MAX_BODY_BYTES,
    Prediction,
    SimConfig,
    SimState,
    SubmitRecord,
)
from evalkit.sim.wavespeed.tasks import InsufficientBalance, TaskQueue
from evalkit.sim.wavespeed.uploads import UploadRoutes

_NOT_AN_IMAGE = b"<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head><body>upstream error</body></html>\n"


class WaveSpeedSim(TaskQueue, UploadRoutes):
    """The simulator: an ASGI ``app`` plus the state tests inspect (ledger, submits, stats)."""

    def __init__(self, catalog: Catalog | None = None, config: SimConfig | None = None):
        self.config = config or SimConfig()
        catalog = catalog if catalog is not None else Catalog.load()
        base = {m.endpoint: m for m in catalog if m.provider == "wavespeed"}
        #: what is served, listed and priced: the catalogue with ``config.catalog_drift`` applied
        self.catalog = SimCatalog(base, CatalogDrift.from_dict(self.config.catalog_drift))
        self._keys = {ep: accepted_keys(m) for ep, m in self.models.items()}
        self.faults = FaultBook(self.config.seed)
        self._state = SimState()
        self.balance_usd = self.config.balance_usd
        self._pool = ThreadPoolExecutor(
            max_workers=self.config.render_threads, thread_name_prefix="wavespeed-sim-render"
        )
        cap = int(self.config.output_cache_mb * 1024 * 1024)
        self._outputs = Memo(cap, self._pool, len)
        self._inputs = Memo(cap // 2, self._pool, lambda img: len(img.data))
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
            Route("/_sim/catalog", self._ctl_catalog, methods=["GET", "POST", "DELETE"]),
            Route("/_sim/balance", self._ctl_balance, methods=["GET", "POST"]),
            Route("/", self._index, methods=["GET"]),
        ]
        self.app = _SimulatedHeader(Starlette(routes=routes), self)

    def __repr__(self) -> str:
        return f"WaveSpeedSim(models={len(self.models)}, config={self.config!r})"

    @property
    def models(self) -> dict[str, ModelSpec]:
        """endpoint → the entry served there (drift applied)."""
        return self.catalog.models

    def set_catalog_drift(self, drift: CatalogDrift | dict[str, Any] | None) -> None:
        """Make the served list, prices and models differ from evalkit's catalogue (None = no drift)."""
        d = drift if isinstance(drift, CatalogDrift) else CatalogDrift.from_dict(drift)
        self.catalog.set_drift(d)
        self._keys = {ep: accepted_keys(m) for ep, m in self.models.items()}

    # ---- public, callable from any thread --------------------------------------------------
    def add_fault(self, kind: str, **kw: Any) -> Fault:
        return self.faults.add(Fault(kind, **kw))

    def clear_faults(self) -> None:
        self.faults.clear()

    def reset(self) -> None:
        """Forget tasks (cancelling running ones), uploads, ledger, submits, counters and faults."""
        old, self._state = self._state, SimState()
        self.balance_usd = self.config.balance_usd
        self.faults.reset()
        self._cancel_tasks(old)

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
            balance_usd=self.available_usd(),
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

    def _cancel_tasks(self, st: SimState) -> None:
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

    async def _outputs_of(self, p: Prediction) -> list[str]:
        if p.status != "completed":
            return []
        if p.base64_output:
            data = await self._output_bytes(p)
            self._state.served[p.id] = hashlib.sha256(data).hexdigest()
            return [base64.b64encode(data).decode("ascii")]
        return [p.output_url]

    async def _envelope(self, p: Prediction) -> dict[str, Any]:
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
        if method == "GET" and path in ("balance", "account/balance"):
            # the two documented shapes (wavespeed-models-2026.md §4): data.balance, data {balance, currency}
            balance = round(self.available_usd(), 6)
            data = {"balance": balance} if path == "balance" else {"balance": balance, "currency": "USD"}
            return self._json({"code": 200, "message": "success", "data": data})
        if method == "GET" and path == "predictions":
            return self._list(request)
        if method == "POST" and path == "predictions":
            return await self._history(request)
        if method == "GET" and path.startswith("predictions/"):
            pid, _, tail = path[len("predictions/") :].partition("/")
            if tail in ("", "result"):
                return await self._poll(request, pid)
        if method == "GET" and path == "models":
            return self._json(self.catalog.models_payload(f"{request.url.scheme}://{request.url.netloc}"))
        if method == "POST" and path == "model/pricing":
            try:
                body = json.loads(await request.body())
            except (ValueError, UnicodeDecodeError):
                return self._error(400, "request body must be JSON")
            status, reply = self.catalog.pricing(body)
            return self._json(reply, status)
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
                raise BadRequest(f"request body is over {MAX_BODY_BYTES // 2**20} MB")
            try:
                body = json.loads(raw)
            except (ValueError, UnicodeDecodeError):
                raise BadRequest("request body must be a JSON object (it is not valid JSON)") from None
            if not isinstance(body, dict):
                raise BadRequest(f"request body must be a JSON object, got {type(body).__name__}")
            problem = body_problem(spec, body, self._keys[spec.endpoint])
            if problem:
                raise BadRequest(problem)
            base_url = f"{request.url.scheme}://{request.url.netloc}"
            images, mask, unreachable = await self._resolve_images(spec, body, request)
        except BadRequest as exc:
            st.counts["rejected"] += 1
            return self._error(400, str(exc))

        fault = self.faults.draw("submit", model_keys)
        if fault is not None and fault.kind in ("rate_limit", "submit_5xx"):
            return self._fault_response(fault, "submit")
        if fault is not None:  # wrong_shape_submit: 200, but no id (and no task)
            return self._json({"code": 200, "message": "success", "data": {"status": "created", "outputs": []}})

        st = self._state  # the current one, should a reset have happened while this request waited
        try:
            p = self._create(st, spec, body, base_url, images, mask, unreachable)
        except InsufficientBalance as exc:
            st.counts["rejected"] += 1
            return self._error(
                403,
                f"Insufficient balance: this request costs ${exc.price_usd:.4f} and the account holds "
                f"${max(0.0, exc.available_usd):.4f}; please top up (simulated)",
            )
        inputs = tuple(i.sha256 for i in images) + ((mask.sha256,) if mask is not None else ())
        st.submits.append(SubmitRecord(p.id, spec.id, hashlib.sha256(raw).hexdigest(), time.time(), inputs))
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
        has_mask = spec.mask is not None and body.get(spec.mask.param) is not None
        if has_mask and spec.mask is not None:
            refs.append((spec.mask.param, body[spec.mask.param]))
        decoded: list[InputImage | None] = []
        unreachable = None
        for name, ref in refs:
            img = await self._image(name, ref, request)
            if img is None and unreachable is None:
                unreachable = ref
            decoded.append(img)
        if unreachable is not None:
            return (), None, unreachable
        mask = decoded.pop() if has_mask else None
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
        if not is_loopback_host(parts.hostname) or parts.port != request.url.port:
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

    async def _output_bytes(self, p: Prediction) -> bytes:
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
            if created is None:
                continue  # never: the sim writes its own times
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
        else:
            st.served[p.id] = hashlib.sha256(data).hexdigest()
        return Response(data, media_type=CONTENT_TYPES[p.fmt])

    # ---- control --------------------------------------------------------------------------------
    @staticmethod
    def _loopback(request: Request) -> bool:
        return request.client is None or is_loopback_host(request.client.host)

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
                fault = self.faults.add_dict(json.loads(await request.body()))
            except (ValueError, UnicodeDecodeError) as exc:
                return self._error(400, f"bad fault: {exc}")
            return self._json({"fault": fault.as_dict()})
        return self._json({"faults": [f.as_dict() for f in self.faults.faults]})

    async def _ctl_balance(self, request: Request) -> Response:
        """GET: the balance; POST ``{"balance_usd": x}`` (set; null = unlimited) or ``{"top_up_usd": x}``."""
        if not self._loopback(request):
            return self._error(403, "control endpoints answer loopback clients only")
        if request.method == "POST":
            try:
                body = json.loads(await request.body())
                if "top_up_usd" in body:
                    self.top_up(float(body["top_up_usd"]))
                elif "balance_usd" in body:
                    self.set_balance(None if body["balance_usd"] is None else float(body["balance_usd"]))
                else:
                    raise ValueError("send balance_usd or top_up_usd")
            except (ValueError, TypeError, AttributeError, UnicodeDecodeError) as exc:
                return self._error(400, f"bad balance request: {exc}")
        return self._json({"balance_usd": self.available_usd(), "unlimited": self.balance_usd is None})

    async def _ctl_reset(self, request: Request) -> Response:
        if not self._loopback(request):
            return self._error(403, "control endpoints answer loopback clients only")
        self.reset()
        return self._json({"reset": True})

    async def _ctl_catalog(self, request: Request) -> Response:
        """``GET`` the drift, ``POST`` a new one (``{"prices":…, "added":…, "removed":…, "failing_quotes":…}``),
        ``DELETE`` it (the served catalogue is evalkit's again)."""
        if not self._loopback(request):
            return self._error(403, "control endpoints answer loopback clients only")
        try:
            if request.method == "DELETE":
                self.set_catalog_drift(None)
            elif request.method == "POST":
                self.set_catalog_drift(json.loads(await request.body()))
        except (ValueError, UnicodeDecodeError, InvalidInputError) as exc:
            return self._error(400, f"bad drift: {exc}")
        return self._json({"drift": self.catalog.drift.as_dict(), "models": len(self.models)})

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

    async def __call__(self, scope, receive, send) -> None:
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
