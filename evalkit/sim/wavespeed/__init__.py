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
      (These rules, and the output size below, live in :mod:`evalkit.sim.wavespeed.schema`.)
      ``enable_sync_mode: false`` is accepted everywhere (it asks for the default behaviour).
      Images may be data URIs, naked base64 or URLs served by this sim (uploads and outputs);
      undecodable image data → 400; any other URL cannot be fetched (no network), so the task fails
      with code 1402 "Failed to download image from the provided URL.".
    * Accepted → the §1.3 envelope (32-hex id, status "created", ``urls.get``…). Tasks wait in a FIFO
      queue while ``max_concurrent`` are processing (status "created"), then process for the model's
      simulated latency (catalogue ``sim.latency_ms`` × ``time_scale``, or ``fixed_latency_ms``, or the
      model's ``model_latency_ms``; times a seeded log-normal factor with ``latency_jitter``), then
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
    Images are rendered while the task runs when it lasts ≥ 0.5 s (hidden in its latency, as a real
    server's output exists once it reports completed), else lazily (on the first download, or when a
    base64 output is returned), on a small thread pool shared by all requests
    (``SimConfig.render_threads``), once per distinct request, and kept **in memory** in an LRU bounded
    by ``SimConfig.output_cache_mb`` (a re-render after eviction gives identical bytes). Decoded inputs
    are cached by content the same way, and each prediction keeps a reference to its decoded inputs
    until :meth:`WaveSpeedSim.reset`.
    Cost: protocol work is ~1–4 ms of CPU per task; a *distinct* 1024-px output costs ~30–50 ms to
    render. Throughput benchmarks whose requests are all distinct should lower ``output_max_side``
    (e.g. 256) so the simulator is not the bottleneck.

Catalogue and prices
    ``GET /api/v3/models`` lists the served models (request schemas generated from the catalogue, in both
    documented schema locations, plus a few non-edit listings) and ``POST /api/v3/model/pricing`` quotes
    the price a task with those inputs is billed. ``SimConfig.catalog_drift`` / ``POST /_sim/catalog``
    (``--catalog-drift FILE`` on the command line) make them differ from evalkit's catalogue: changed
    prices, added and removed models, failing quotes — see :mod:`evalkit.sim.wavespeed.catalog`.

Billing
    When a task *completes*, its price (the catalogue's list price, or the drifted one: what the pricing
    route quotes) is appended to
    :attr:`WaveSpeedSim.ledger`. Failed tasks are not billed: the real API's rule for failed tasks is
    unknown, and the sim bills completed tasks only.

Balance
    ``GET /api/v3/balance`` (``data.balance``) and ``GET /api/v3/account/balance`` (``data: {balance,
    currency}``) — the two documented shapes. ``SimConfig.balance_usd`` (``--balance``) gives the account a
    balance (default unlimited): an accepted task holds its list price until it finishes (released if it
    fails), and a submit that costs more than what is left gets HTTP 403 ``Insufficient balance …`` and
    creates no task. ``sim.top_up(usd)`` / ``sim.set_balance(usd)`` or ``POST /_sim/balance``.

Faults
    ``sim.add_fault(kind, rate=…|count=…, model=…, status=…, code=…, retry_after_s=…, delay_s=…)`` or
    ``POST /_sim/faults`` — see :mod:`evalkit.sim.faults` for the kinds and what each does.

Control endpoints (no auth, loopback clients only)
    ``GET /_sim/ledger`` · ``GET /_sim/stats`` · ``GET|POST|DELETE /_sim/faults`` · ``POST /_sim/reset`` ·
    ``GET|POST /_sim/balance`` · ``GET|POST|DELETE /_sim/catalog``.

Test fixtures (tests/plugins/sim_wavespeed.py)
    ``wavespeed_sim`` — a started sim (every model finishes in ≤ ~50 ms), yields a :class:`SimHandle`
    (``.base_url``, ``.api_key``, ``.sim``, ``.stop()``); ``wavespeed_sim_factory(**config_kw)`` — start
    more with other :class:`SimConfig` values (fast latencies unless ``time_scale`` /
    ``fixed_latency_ms`` is given); all stopped at teardown.

The API key is never printed or logged; :class:`SimConfig` and :class:`SimHandle` mask it in their repr.

Modules
    ``app`` (:class:`WaveSpeedSim`: routes, auth, submits, polls, downloads, ``/_sim`` control) ·
    ``tasks`` (the task queue: slots, running/finishing, sync waits, billing) · ``uploads`` (ticket, PUT and
    binary upload routes) · ``catalog`` (the model list, the pricing route, catalogue drift) · ``images``
    (input decoding, output rendering, their caches) · ``schema`` (what a body may contain, the output size;
    pure) · ``state`` (config, records, per-run state) · ``run``
    (:func:`start_wavespeed_sim`,
    :class:`SimHandle`; ``evalkit sim`` serves it in the foreground). Import from this package, not its modules.
"""

from __future__ import annotations

from evalkit.sim.wavespeed.app import WaveSpeedSim
from evalkit.sim.wavespeed.run import SimHandle, start_wavespeed_sim
from evalkit.sim.wavespeed.state import BillingEntry, SimConfig, SubmitRecord

__all__ = [
    "BillingEntry",
    "SimConfig",
    "SimHandle",
    "SubmitRecord",
    "WaveSpeedSim",
    "start_wavespeed_sim",
]
