"""A local OpenAI-compatible chat-completions server standing in for a VLM judge (SIMULATED replies).

A real HTTP server (Starlette on uvicorn, loopback only) so :class:`evalkit.scoring.judge.Judge` runs
against it unchanged, over real HTTP. Every response carries ``X-Evalkit-Simulated: 1`` and every
default reply says "SIMULATED" in its reasoning: its scores measure nothing.

Protocol
    * ``POST /v1/chat/completions`` (also ``/chat/completions``) with ``Authorization: Bearer <key>``,
      else 401 in OpenAI's error shape (the key is never echoed).
    * The body is checked like a strict server would: a JSON object with a non-empty ``model``,
      non-empty ``messages`` (role system/user/assistant; content a string or a list of parts), parts of
      type ``text`` (a string) or ``image_url`` whose ``url`` is a ``data:image/…;base64,`` URI that
      decodes as an image (the sim has no network, so other URLs are refused), at least one text,
      ``max_tokens``/``max_completion_tokens`` a positive integer and ``temperature`` within 0–2 when
      present → 400 ``invalid_request_error`` naming the problem otherwise.
    * Reply: ``{"id", "object": "chat.completion", "created", "model", "system_fingerprint",
      "choices": [{"index": 0, "message": {"role": "assistant", "content", "refusal"}, "finish_reason"}],
      "usage": {"prompt_tokens", "completion_tokens", "total_tokens"}}``. Token counts are simulated:
      ceil(characters / 4) of text plus 255 per image in, ceil(characters / 4) of the reply out.
    * ``GET /v1/models`` lists the configured model.

Default replies (deterministic, so tests can predict them with :func:`simulated_reply`)
    Recognised from the prompt: a VIEScore prompt (asks for ``"score"``) with two images gets
    ``[editing success, over-editing]``, with one image ``[naturalness, artifacts]``; a pairwise prompt
    (asks for ``"choice"``) with three images gets ``"A"``/``"B"``/``"tie"``. Scores are image
    statistics: over-editing = round(10 × (1 − mean |first − second| / 255)) on 64×64 grey thumbnails;
    editing success, naturalness and artifacts = bytes of sha256(prompt text + image bytes) mod 11;
    the pairwise choice is the candidate closer to the original (same distance; "tie" within 0.5
    grey levels).

Scripting
    ``sim.script([...])`` queues exact replies, consumed in order by valid, authorised requests (after
    the queue is empty, default replies resume). Each entry is a string (the reply content, finish
    reason "stop") or a dict with any of: ``content`` (str or None), ``finish_reason``, ``refusal``,
    ``usage`` (a dict, or None to omit it), ``model``, ``delay_s`` (sleep before answering),
    ``status`` + ``headers`` + ``error`` (an error response: ``{"status": 429, "headers":
    {"Retry-After": "0"}}``, ``{"status": 400, "error": {"code": "content_filter"}}``), ``body`` (a raw
    response body, e.g. non-JSON garbage). ``{"finish_reason": "content_filter"}`` alone replies with no
    content and that finish reason.

Noise (opt-in, seeded)
    ``JudgeSim(noise_sd=σ, noise_seed=s)`` (or ``sim.set_noise(σ, seed=s)``) makes the default replies
    noisy like a real judge's repeated passes: each score gets round(N(0, σ)) added, clipped to 0–10. The
    draw depends only on (seed, the request's prompt text and images, how many times that exact request
    was answered before), so a re-run of the same sequence gives the same replies whatever else is in
    flight, and repeated passes over one output differ. ``noisy_reply`` is the function; the recorded
    ``reply`` of each request is what a test reads back.

Recording
    Every request to the chat route is kept in ``sim.requests`` (:class:`RecordedRequest`: texts,
    decoded image bytes, the body with images replaced by placeholders, the status answered and the
    reply content), so tests can assert on what was sent and how often.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import hashlib
import hmac
import io
import itertools
import json
import math
import random
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from evalkit.sim.server import SimServerHandle, start_in_thread

#: the key ``evalkit sim --provider judge`` accepts when EVALKIT_JUDGE_API_KEY is not set (not a secret).
PUBLIC_SIM_KEY = "evalkit-sim-judge"
DEFAULT_MODEL = "sim-judge-1"
SIM_HEADERS = {"X-Evalkit-Simulated": "1"}
_DATA_URI = re.compile(r"^data:(image/[a-z0-9.+-]+);base64,(.*)$", re.S | re.I)
_IMAGE_TOKENS = 255


@dataclass
class RecordedRequest:
    """One request as the sim saw it."""

    path: str
    authorized: bool
    status: int = 0  # what the sim answered
    model: str | None = None
    texts: list[str] = field(default_factory=list)
    images: list[bytes] = field(default_factory=list, repr=False)  # decoded image bytes, in order
    image_mimes: list[str] = field(default_factory=list)
    body: dict[str, Any] | None = field(default=None, repr=False)  # images replaced by "<image n: sha256>"
    reply: str | None = None  # the content answered (200 only)
    scripted: bool = False
    at: float = 0.0

    @property
    def text(self) -> str:
        return "\n".join(self.texts)

    @property
    def image_sha256(self) -> list[str]:
        return [hashlib.sha256(b).hexdigest() for b in self.images]

    def pil_images(self) -> list[Image.Image]:
        return [Image.open(io.BytesIO(b)) for b in self.images]


class _BadRequest(Exception):
    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param


class JudgeSim:
    """The simulated judge: ``app`` (ASGI), ``script()``, ``requests``, ``reset()``."""

    def __init__(
        self,
        api_key: str | None = None,
        *,
        model: str = DEFAULT_MODEL,
        latency_ms: float = 0.0,
        noise_sd: float = 0.0,
        noise_seed: int = 0,
    ):
        self.api_key = api_key or f"sim-judge-{secrets.token_hex(12)}"
        self.model = model
        self.latency_ms = float(latency_ms)
        self.noise_sd = float(noise_sd)
        self.noise_seed = int(noise_seed)
        self._seen: collections.Counter[str] = collections.Counter()  # answers per exact request (noise draws)
        self._lock = threading.Lock()
        self._script: collections.deque[str | dict[str, Any]] = collections.deque()
        self._requests: list[RecordedRequest] = []
        self._ids = itertools.count(1)
        self.app = Starlette(
            routes=[
                Route("/v1/chat/completions", self._chat, methods=["POST"]),
                Route("/chat/completions", self._chat, methods=["POST"]),
                Route("/v1/models", self._models, methods=["GET"]),
                Route("/models", self._models, methods=["GET"]),
            ]
        )

    def __repr__(self) -> str:
        return (
            f"JudgeSim(model={self.model!r}, api_key=***, requests={len(self._requests)}, scripted={len(self._script)})"
        )

    # ---- test controls ------------------------------------------------------------------------
    def script(self, replies: list[str | dict[str, Any]]) -> None:
        """Queue exact replies (see the module docstring); consumed in order by valid requests."""
        for r in replies:
            if not isinstance(r, (str, dict)):
                raise TypeError(f"a scripted reply is a str or dict, got {type(r).__name__}")
        with self._lock:
            self._script.extend(replies)

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def set_noise(self, sd: float, *, seed: int = 0) -> None:
        """Make default replies noisy (``sd`` > 0) or exact again (0); see the module docstring."""
        if not sd >= 0:
            raise ValueError(f"noise sd must be ≥ 0, got {sd!r}")
        with self._lock:
            self.noise_sd, self.noise_seed = float(sd), int(seed)
            self._seen.clear()

    def reset(self) -> None:
        """Forget requests, scripted replies and noise (back to exact default replies)."""
        with self._lock:
            self._script.clear()
            self._requests.clear()
            self._seen.clear()
            self.noise_sd = 0.0

    # ---- routes -------------------------------------------------------------------------------
    async def _models(self, request: Request) -> Response:
        if not self._authorized(request):
            return _error(401, "Incorrect API key provided.", "invalid_request_error", code="invalid_api_key")
        return JSONResponse(
            {"object": "list", "data": [{"id": self.model, "object": "model", "owned_by": "evalkit-sim"}]},
            headers=SIM_HEADERS,
        )

    async def _chat(self, request: Request) -> Response:
        rec = RecordedRequest(path=request.url.path, authorized=self._authorized(request), at=time.time())
        with self._lock:
            self._requests.append(rec)
        if not rec.authorized:
            rec.status = 401
            return _error(401, "Incorrect API key provided.", "invalid_request_error", code="invalid_api_key")
        try:
            raw = await request.body()
            body = json.loads(raw)
            _validate(body, rec)
        except (ValueError, UnicodeDecodeError) as exc:
            rec.status = 400
            return _error(
                400,
                f"We could not parse the JSON body of your request ({type(exc).__name__}).",
                "invalid_request_error",
            )
        except _BadRequest as exc:
            rec.status = 400
            return _error(400, exc.message, "invalid_request_error", param=exc.param)
        with self._lock:
            scripted = self._script.popleft() if self._script else None
        rec.scripted = scripted is not None
        if scripted is None:
            if self.latency_ms:
                await asyncio.sleep(self.latency_ms / 1000.0)
            reply = simulated_reply(rec.text, rec.images)
            if self.noise_sd > 0:
                digest = hashlib.sha256(rec.text.encode("utf-8") + b"".join(rec.images)).hexdigest()
                with self._lock:
                    nth = self._seen[digest]
                    self._seen[digest] += 1
                reply = noisy_reply(reply, self.noise_sd, f"{self.noise_seed}|{digest}|{nth}")
            return self._completion(rec, body, json.dumps(reply), "stop", None, _UNSET)
        if isinstance(scripted, str):
            return self._completion(rec, body, scripted, "stop", None, _UNSET)
        if scripted.get("delay_s"):
            await asyncio.sleep(float(scripted["delay_s"]))
        status = int(scripted.get("status", 200))
        headers = {str(k): str(v) for k, v in (scripted.get("headers") or {}).items()}
        if "body" in scripted:
            rec.status = status
            return Response(
                str(scripted["body"]),
                status_code=status,
                headers={**headers, **SIM_HEADERS},
                media_type="application/json",
            )
        if status != 200:
            rec.status = status
            err = {
                "message": _DEFAULT_ERRORS.get(status, "simulated error"),
                "type": "server_error" if status >= 500 else "invalid_request_error",
                "param": None,
                "code": None,
            }
            err.update(scripted.get("error") or {})
            return JSONResponse({"error": err}, status_code=status, headers={**headers, **SIM_HEADERS})
        finish = scripted.get("finish_reason", "stop")
        content: str | None = scripted.get("content")
        if "content" not in scripted and finish != "content_filter":
            content = json.dumps(simulated_reply(rec.text, rec.images))
        return self._completion(
            rec,
            body,
            content,
            finish,
            scripted.get("refusal"),
            scripted.get("usage", _UNSET),
            model=scripted.get("model"),
            headers=headers,
        )

    def _completion(
        self,
        rec: RecordedRequest,
        body: dict[str, Any],
        content: str | None,
        finish_reason: str,
        refusal: str | None,
        usage: Any,
        *,
        model: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        rec.status = 200
        rec.reply = content
        if usage is _UNSET:
            prompt_tokens = math.ceil(len(rec.text) / 4) + _IMAGE_TOKENS * len(rec.images)
            completion_tokens = math.ceil(len(content or refusal or "") / 4)
            usage = {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            }
        out: dict[str, Any] = {
            "id": f"chatcmpl-sim-{next(self._ids)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model or body.get("model"),
            "system_fingerprint": "evalkit-sim",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content, "refusal": refusal},
                    "finish_reason": finish_reason,
                    "logprobs": None,
                }
            ],
        }
        if usage is not None:
            out["usage"] = usage
        return JSONResponse(out, headers={**(headers or {}), **SIM_HEADERS})

    def _authorized(self, request: Request) -> bool:
        auth = request.headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), self.api_key.encode())


_UNSET: Any = object()
_DEFAULT_ERRORS = {
    400: "Invalid request (simulated).",
    401: "Incorrect API key provided.",
    404: "The model does not exist (simulated).",
    429: "Rate limit reached (simulated).",
    500: "The server had an error while processing your request (simulated).",
    503: "The engine is currently overloaded (simulated).",
}


def _error(status: int, message: str, err_type: str, *, param: str | None = None, code: str | None = None) -> Response:
    return JSONResponse(
        {"error": {"message": message, "type": err_type, "param": param, "code": code}},
        status_code=status,
        headers=SIM_HEADERS,
    )


def _validate(body: Any, rec: RecordedRequest) -> None:
    """Check the request like a strict OpenAI-compatible server; fill ``rec``. Raises _BadRequest."""
    if not isinstance(body, dict):
        raise _BadRequest("the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise _BadRequest("you must provide a model parameter", "model")
    rec.model = model
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _BadRequest("'messages' must be a non-empty array", "messages")
    for key in ("max_tokens", "max_completion_tokens"):
        v = body.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise _BadRequest(f"'{key}' must be a positive integer", key)
    t = body.get("temperature")
    if t is not None and (isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 <= t <= 2):
        raise _BadRequest("'temperature' must be a number within 0–2", "temperature")
    shown = json.loads(json.dumps(body))
    for i, msg in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(msg, dict) or msg.get("role") not in ("system", "user", "assistant", "developer"):
            raise _BadRequest(f"{where} must be an object with role system, user or assistant", where)
        content = msg.get("content")
        if isinstance(content, str):
            rec.texts.append(content)
            continue
        if not isinstance(content, list) or not content:
            raise _BadRequest(f"{where}.content must be a string or a non-empty array of parts", f"{where}.content")
        for j, part in enumerate(content):
            pw = f"{where}.content[{j}]"
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text":
                if not isinstance(part.get("text"), str):
                    raise _BadRequest(f"{pw}.text must be a string", pw)
                rec.texts.append(part["text"])
            elif kind == "image_url":
                url = part.get("image_url", {}).get("url") if isinstance(part.get("image_url"), dict) else None
                data, mime = _decode_data_uri(url, pw)
                rec.images.append(data)
                rec.image_mimes.append(mime)
                shown["messages"][i]["content"][j]["image_url"]["url"] = (
                    f"<image {len(rec.images)}: {mime}, sha256 {hashlib.sha256(data).hexdigest()[:16]}>"
                )
            else:
                raise _BadRequest(f"{pw}.type must be 'text' or 'image_url', got {kind!r}", pw)
    if not rec.texts:
        raise _BadRequest("the messages contain no text", "messages")
    rec.body = shown


def _decode_data_uri(url: Any, where: str) -> tuple[bytes, str]:
    if not isinstance(url, str):
        raise _BadRequest(f"{where}.image_url.url must be a string", where)
    m = _DATA_URI.match(url)
    if not m:
        raise _BadRequest(
            f"{where}: only data:image/...;base64 URIs are accepted (the simulator cannot fetch URLs)", where
        )
    try:
        data = base64.b64decode(m.group(2), validate=True)
    except (binascii.Error, ValueError):
        raise _BadRequest(f"{where}: the image data is not valid base64", where) from None
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        raise _BadRequest(f"{where}: the image data does not decode as an image", where) from None
    return data, m.group(1).lower()


# ---- deterministic default replies ----------------------------------------------------------------
def _grey64(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("L").resize((64, 64), Image.Resampling.BILINEAR), dtype=np.float64)


def mean_abs_diff(a: bytes, b: bytes) -> float:
    """Mean absolute grey-level difference (0–255) of two images on 64×64 thumbnails."""
    return float(np.abs(_grey64(a) - _grey64(b)).mean())


def simulated_reply(text: str, images: list[bytes]) -> dict[str, Any]:
    """The sim's default answer to a prompt with these images (what a test can predict)."""
    digest = hashlib.sha256(text.encode("utf-8") + b"".join(images)).digest()
    if '"choice"' in text and len(images) == 3:
        da, db = mean_abs_diff(images[0], images[1]), mean_abs_diff(images[0], images[2])
        choice = "tie" if abs(da - db) < 0.5 else ("A" if da < db else "B")
        return {"choice": choice, "reasoning": f"SIMULATED judge: distance to the original A={da:.1f}, B={db:.1f}"}
    if '"score"' in text and len(images) == 2:
        over_editing = round(10 * (1 - mean_abs_diff(images[0], images[1]) / 255))
        return {"score": [digest[0] % 11, over_editing], "reasoning": "SIMULATED judge: scores are image statistics"}
    if '"score"' in text and len(images) == 1:
        return {"score": [digest[0] % 11, digest[1] % 11], "reasoning": "SIMULATED judge: scores are image statistics"}
    return {"reasoning": "SIMULATED judge: no rubric recognised in the prompt"}


def noisy_reply(reply: dict[str, Any], sd: float, key: str) -> dict[str, Any]:
    """``reply`` with round(N(0, sd)) added to each score (clipped to 0–10), drawn from a generator seeded
    by ``key``; replies without scores are returned unchanged."""
    if "score" not in reply or sd <= 0:
        return reply
    rng = random.Random(hashlib.sha256(key.encode("utf-8")).digest())
    scores = [min(10, max(0, int(v) + round(rng.gauss(0.0, sd)))) for v in reply["score"]]
    return {**reply, "score": scores, "reasoning": reply["reasoning"] + " (SIMULATED noise)"}


# ---- running it ---------------------------------------------------------------------------------
@dataclass
class JudgeSimHandle(SimServerHandle):
    """A started sim: ``base_url`` (ends in /v1, give it to the judge), ``api_key``, ``sim``, ``stop()``."""

    sim: JudgeSim

    @property
    def base_url(self) -> str:
        return self.server.base_url + "/v1"

    @property
    def root_url(self) -> str:
        return self.server.base_url

    @property
    def api_key(self) -> str:
        return self.sim.api_key


def start_judge_sim(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    api_key: str | None = None,
    model: str = DEFAULT_MODEL,
    latency_ms: float = 0.0,
    noise_sd: float = 0.0,
    noise_seed: int = 0,
) -> JudgeSimHandle:
    """Start the simulated judge in a background thread on ``host:port`` (0 = a free port)."""
    sim = JudgeSim(api_key, model=model, latency_ms=latency_ms, noise_sd=noise_sd, noise_seed=noise_seed)
    return JudgeSimHandle(sim=sim, server=start_in_thread(sim.app, host=host, port=port))


__all__ = [
    "JudgeSim",
    "JudgeSimHandle",
    "RecordedRequest",
    "PUBLIC_SIM_KEY",
    "mean_abs_diff",
    "noisy_reply",
    "simulated_reply",
    "start_judge_sim",
]
