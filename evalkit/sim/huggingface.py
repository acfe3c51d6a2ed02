"""A local server that speaks the hf-inference image-to-image wire format, with SIMULATED outputs.

``huggingface_hub``'s ``InferenceClient`` sends this format to any URL given as the model
(shared/reference/ecosystem.md §5): ``POST <url>`` with ``authorization: Bearer <token>`` and
``Accept: image/png``; the body is the raw image bytes when there are no parameters, otherwise JSON
``{"inputs": "<base64 image>", "parameters": {...}}``; the answer is the image bytes. Errors are JSON
``{"error": "..."}`` (503 adds ``estimated_time`` while a model loads).

The server listens on ``/models/<hub model id>`` — the path shape of the hf-inference router — so one
server stands in for every catalogue entry. Unknown parameters are a 400 (stricter than documented, so
evalkit's own bugs show). Images come from :func:`evalkit.sim.render.render_simulated` (labelled
SIMULATED) and every response carries ``X-Evalkit-Simulated: 1``. There are no prices: Hugging Face does
not report a cost per request, so the ledger only counts generations.

Latency: instant by default (tests); ``time_scale`` multiplies a nominal ``NOMINAL_LATENCY_MS`` (a
simulator parameter, NOT a measurement) and ``fixed_latency_ms`` sets it. ``evalkit sim --provider
huggingface`` (:mod:`evalkit.sim.launch`) runs it in the foreground.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import io
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from PIL import Image, UnidentifiedImageError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from evalkit.providers.http import SIMULATED_HEADER
from evalkit.sim.faults import HUGGINGFACE_FAULTS
from evalkit.sim.render import encode_image, render_simulated
from evalkit.sim.scripted import ScriptedSim

#: the parameters AsyncInferenceClient.image_to_image can send (huggingface_hub 2.4.0), plus seed
#: simulated seconds per generation at time_scale 1 (a simulator parameter, not a measurement)
NOMINAL_LATENCY_MS = 8000.0
KNOWN_PARAMETERS = ("prompt", "negative_prompt", "num_inference_steps", "guidance_scale", "target_size", "seed")


@dataclass
class ReceivedInference:
    """What the server parsed from one POST (tests assert on it)."""

    model: str
    content_type: str
    parameters: dict[str, Any] = field(default_factory=dict)
    image: bytes = field(default=b"", repr=False)
    status: int = 0


@dataclass(frozen=True)
class Generation:
    model: str
    width: int
    height: int
    #: the sha256 of the image answered: the API gives a generation no id, so this is what a client's
    #: record can be matched with (tests/plugins/money.py)
    output_sha256: str = ""


class _Refused(Exception):
    def __init__(self, status: int, body: dict[str, Any], retry_after: str | None = None):
        super().__init__(body.get("error", ""))
        self.status, self.body, self.retry_after = status, body, retry_after


class HuggingFaceSim(ScriptedSim):
    """The simulator: ``.app`` is the Starlette app; ``.requests``/``.generations`` are its records."""

    def __init__(
        self, token: str = "hf_evalkit_sim", *, time_scale: float = 0.0, fixed_latency_ms: float | None = None
    ):
        super().__init__(
            HUGGINGFACE_FAULTS,
            [
                Route("/models/{model_id:path}", self._infer, methods=["POST"]),
                Route("/api/whoami-v2", self._whoami, methods=["GET"]),
            ],
            time_scale=time_scale,
            fixed_latency_ms=fixed_latency_ms,
        )
        self.token = token
        self.latency_s = self._simulated_s(NOMINAL_LATENCY_MS)
        self.requests: list[ReceivedInference] = []
        self.generations: list[Generation] = []

    def reset(self) -> None:
        """Forget faults and records (a fresh server without restarting it)."""
        self.faults.clear()
        with self._lock:
            self.requests.clear()
            self.generations.clear()

    async def _whoami(self, request: Request) -> Response:
        """``GET /api/whoami-v2``: who the token belongs to (the hub's token check; no balance is published)."""
        auth = request.headers.get("authorization", "")
        if not auth.lower().startswith("bearer ") or auth[7:] != self.token:
            return JSONResponse(
                {"error": "Invalid credentials in Authorization header"}, 401, headers={SIMULATED_HEADER: "1"}
            )
        return JSONResponse(
            {"type": "user", "name": "evalkit-sim", "canPay": False, "simulated": True}, headers={SIMULATED_HEADER: "1"}
        )

    async def _infer(self, request: Request) -> Response:
        model = request.path_params["model_id"]
        received = ReceivedInference(model=model, content_type=request.headers.get("content-type", ""))
        try:
            auth = request.headers.get("authorization", "")
            if not auth.lower().startswith("bearer ") or auth[7:] != self.token:
                raise _Refused(401, {"error": "Invalid credentials in Authorization header"})
            body = await request.body()
            self._parse(received, body)
            with self._lock:
                self.requests.append(received)
            self._faults_for(model)
            img = _decode(received.image)
            slow = self.faults.draw("response", model)
            delay_s = (slow.delay_s if slow is not None else 0.0) + self.latency_s
            if delay_s:
                await asyncio.sleep(delay_s)
            data, size = self._render(model, img, received.parameters)
            received.status = 200
            with self._lock:
                self.generations.append(Generation(model, *size, hashlib.sha256(data).hexdigest()))
            return Response(data, media_type="image/png", headers={SIMULATED_HEADER: "1"})
        except _Refused as exc:
            received.status = exc.status
            headers = {SIMULATED_HEADER: "1", **({"Retry-After": exc.retry_after} if exc.retry_after else {})}
            return JSONResponse(exc.body, status_code=exc.status, headers=headers)

    async def _ledger_view(self, request: Request) -> Response:
        return JSONResponse(
            {"generations": [asdict(g) for g in self.generations], "cost_usd": None}, headers={SIMULATED_HEADER: "1"}
        )

    def _control_json(self, body: Any, status: int = 200) -> Response:
        return JSONResponse(body, status_code=status, headers={SIMULATED_HEADER: "1"})

    @staticmethod
    def _parse(received: ReceivedInference, body: bytes) -> None:
        if received.content_type.startswith("application/json"):
            try:
                payload = json.loads(body)
                received.image = base64.b64decode(payload["inputs"], validate=True)
            except (ValueError, KeyError, TypeError, binascii.Error):
                raise _Refused(
                    400, {"error": "body must be JSON {'inputs': <base64 image>, 'parameters': {...}}"}
                ) from None
            params = payload.get("parameters") or {}
            if not isinstance(params, dict):
                raise _Refused(400, {"error": "parameters must be an object"})
            unknown = sorted(set(params) - set(KNOWN_PARAMETERS))
            if unknown:
                raise _Refused(400, {"error": f"unknown parameter(s) {unknown}; known: {list(KNOWN_PARAMETERS)}"})
            received.parameters = params
        else:
            received.image = body

    def _faults_for(self, model: str) -> None:
        fault = self.faults.draw("request", model)
        if fault is None:
            return
        if fault.kind == "loading":
            raise _Refused(503, {"error": f"Model {model} is currently loading", "estimated_time": fault.retry_after_s})
        if fault.kind == "rate_limit":
            raise _Refused(
                429,
                {"error": "Rate limit reached. You reached the rate limit for Inference Providers."},
                retry_after=f"{fault.retry_after_s:g}",
            )
        if fault.kind == "payment_required":
            raise _Refused(
                402,
                {
                    "error": "You have exceeded your monthly included credits for Inference Providers. "
                    "Purchase pre-paid credits to continue."
                },
            )
        if fault.kind == "bad_request":
            raise _Refused(400, {"error": "Input validation error (simulated)"})
        raise _Refused(500, {"error": "Internal server error (simulated)"})

    @staticmethod
    def _render(model: str, img: Image.Image, params: dict[str, Any]) -> tuple[bytes, tuple[int, int]]:
        size = None
        target = params.get("target_size")
        if isinstance(target, dict) and {"width", "height"} <= set(target):
            size = (int(target["width"]), int(target["height"]))
        seed = params.get("seed")
        out = render_simulated(
            [img],
            model_id=f"hf/{model}",
            prompt=params.get("prompt"),
            seed=int(seed) if isinstance(seed, (int, float)) else None,
            size=size,
            mode="edit",
        )
        return encode_image(out, "png"), out.size


def _decode(data: bytes) -> Image.Image:
    if not data:
        raise _Refused(400, {"error": "empty image"})
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except (UnidentifiedImageError, OSError, ValueError):
        raise _Refused(400, {"error": "could not decode the input image"}) from None
    return img
