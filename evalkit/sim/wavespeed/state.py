"""What the WaveSpeed simulator keeps: its configuration, the records tests read (billing ledger, submits)
and the per-run state a reset forgets (predictions, uploads, counters, the slot queue)."""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from evalkit.catalog.spec import ModelSpec
from evalkit.sim.wavespeed.images import RenderJob

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


@dataclass
class SimConfig:
    api_key: str = field(default="sim-key", repr=False)
    #: multiplies each model's catalogue ``sim.latency_ms``
    time_scale: float = 1.0
    #: overrides every model's latency (benchmarks use 500)
    fixed_latency_ms: float | None = None
    #: per-model latency in ms (catalogue id or endpoint → ms, not scaled by ``time_scale``), over
    #: ``fixed_latency_ms`` and the catalogue's: histories where one model slows down (opt-in; None = none)
    model_latency_ms: dict[str, float] | None = None
    #: each task's latency is multiplied by a log-normal factor exp(N(0, latency_jitter)) drawn from an RNG
    #: seeded with ``seed`` — calls of one model then vary as real ones do (0 = every call the same)
    latency_jitter: float = 0.0
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
    #: how the served model list and prices differ from the catalogue (see evalkit.sim.wavespeed.catalog):
    #: {"prices": {id_or_endpoint: usd}, "added": [entry, …], "removed": [...], "failing_quotes": [...]}
    catalog_drift: dict | None = None
    #: the account's balance in USD; None = unlimited (the balance endpoints then report
    #: UNLIMITED_BALANCE_USD minus what was billed). A submit that costs more than what is left is
    #: refused with HTTP 403 "Insufficient balance …" and creates no task.
    balance_usd: float | None = None
    #: the prediction history returns each item's ``input`` when asked (``include_inputs``)
    history_inputs: bool = True

    def __post_init__(self) -> None:
        if not self.api_key:
            raise ValueError("the simulator needs a non-empty api_key")
        if self.time_scale < 0 or (self.fixed_latency_ms is not None and self.fixed_latency_ms < 0):
            raise ValueError("latencies must be ≥ 0")
        if any(v < 0 for v in (self.model_latency_ms or {}).values()) or self.latency_jitter < 0:
            raise ValueError("latencies and latency_jitter must be ≥ 0")
        if self.max_concurrent < 1 or self.output_max_side < 1 or self.render_threads < 1:
            raise ValueError("max_concurrent, output_max_side and render_threads must be ≥ 1")
        if self.balance_usd is not None and self.balance_usd < 0:
            raise ValueError("balance_usd must be ≥ 0 (or None for an unlimited account)")


#: what an unlimited simulated account reports as its balance (minus what it billed)
UNLIMITED_BALANCE_USD = 1_000_000.0


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
    #: sha256 of each input image as decoded (uploads, data URIs and this sim's own output URLs alike), mask last
    input_sha256: tuple[str, ...] = ()


def iso_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass(eq=False)
class Prediction:
    id: str
    spec: ModelSpec
    base_url: str
    created_at: str
    latency_s: float
    fmt: str
    base64_output: bool
    render: RenderJob | None
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
class Upload:
    filename: str
    content_type: str
    data: bytes | None = None


@dataclass(eq=False)
class SimState:
    """Everything a reset forgets. Tasks hold the state they started in, so a reset cannot be corrupted by them."""

    predictions: dict[str, Prediction] = field(default_factory=dict)
    uploads: dict[str, Upload] = field(default_factory=dict)
    upload_slots: dict[str, str] = field(default_factory=dict)
    ledger: list[BillingEntry] = field(default_factory=list)
    billed_usd: float = 0.0
    #: list prices of accepted tasks not finished yet (held against the balance; released when one fails)
    held_usd: float = 0.0
    submits: list[SubmitRecord] = field(default_factory=list)
    #: prediction id → sha256 of the output bytes served for it (download or base64), the last time it was served
    served: dict[str, str] = field(default_factory=dict)
    #: every key present from the start, so another thread can copy it while requests count
    counts: Counter = field(default_factory=lambda: Counter(dict.fromkeys(COUNTED, 0)))
    tasks: set = field(default_factory=set)
    waiters: deque = field(default_factory=deque)
    processing: int = 0
    in_flight: int = 0
    peak_in_flight: int = 0
    peak_processing: int = 0
    #: tests: tasks that have run their latency wait (still processing) while this is set (see hold_tasks)
    held: bool = False
