"""A pinned VLM judge over any OpenAI-compatible chat-completions endpoint: VIEScore and pairwise.

Why pinned: published judge scores are not comparable across papers or even across days (GPT-4.1
drift, provider-dependent scores, content filters; evaluation-anchors §0.2, §3). So every score
evalkit stores carries :meth:`JudgeConfig.version` — judge model, prompt version, image encoding and
any non-default sampling setting — and every compared model is re-scored by the same judge.

A judge task is *prompt + output contract + reducer* (the EvalScope GEdit shape, anchors §4.5). The
prompt texts, output contracts and reply parsing live in :mod:`evalkit.scoring.judge.prompts`, what pins
a judge (:class:`JudgeConfig`, :class:`ImageEncoding`) in :mod:`evalkit.scoring.judge.config`, judging a
whole run (:func:`judge_run`, :class:`JudgeSummary`) in :mod:`evalkit.scoring.judge.batch`; this module
is the client (one request: cache, budget, retries) and the reducers. :mod:`evalkit.scoring.judge` is the
face that gathers the public names of all four.

* ``viescore`` — GEdit-Bench's VIEScore, task ``tie``, 0-shot (anchors §5). Two requests: SC with
  [source, edited] and the instruction, PQ with [edited]; each must answer
  ``{"score": [a, b], "reasoning": "..."}`` with numbers in 0–10. SC = min(editing success,
  over-editing), PQ = min(naturalness, artifacts), O = sqrt(SC·PQ). As in GEdit, the edited image is
  resized to the source's pixel size first.
* ``pairwise`` — which of two edits better follows the instruction while preserving the rest (pairwise
  judging tracks human rankings far better than pointwise: anchors §0.3). The display order is
  randomised and recorded; the verdict is mapped back to left / right / tie.

Parsing never guesses (anchors §5.3: GEdit substitutes ``random.randint(0, 10)`` when it cannot parse).
A JSON object is accepted bare, inside ```json fences or surrounded by prose; anything but exactly one
answer object of the expected shape is *unscored* with a reason: ``refused``, ``content_filter``,
``unparseable``, ``ambiguous`` (two different answers), ``wrong_shape``, ``out_of_range``,
``truncated``, ``empty``, ``bad_response`` (not a chat completion); the HTTP failure's category
(``rate_limit``, ``server``, ``connect``, ``network``, ``timeout``, ``auth``, ``bad_request``);
``budget`` (the cap stopped it; nothing is written); ``bad_image`` / ``missing_image``; and for SC
without an instruction ``no_instruction`` / ``not_applicable``.

Money and retries
    Before a request is sent, its worst case is reserved in an :class:`~evalkit.engine.budget.Budget`
    (:meth:`JudgeConfig.worst_case_usd`: with known prices, a bound on its input tokens × the input price
    plus ``max_tokens`` × the output price; else ``usd_per_call_reserve``); nothing is sent once a
    reservation would cross the cap, and the reservation settles to the reported tokens × the prices.
    A request is retried (with
    :class:`~evalkit.providers.retry.RetryPolicy`, honouring ``Retry-After``) only when the response
    proves it was not processed: HTTP 408/429/5xx or a connection that never opened. *Assumption*: an
    OpenAI-compatible API does not bill a chat completion that fails with an HTTP error status (no
    ``usage`` is returned for it), so those settle at $0. A timeout or broken connection after the
    request was sent is an unknown outcome: never retried, unscored ``timeout``/``network``, and its
    reservation stays counted. Cost is ``usage`` tokens × the configured per-token prices; when the
    reply has no usage or no prices are configured it is ``None`` (unknown, never guessed) and the
    reservation stays counted against the cap. The cap holds as long as no request costs more than its
    reservation (with known prices the bound covers OpenAI's and Qwen2-VL's image token counts; a reply that
    reports more is logged as a warning).

Cache
    Every answered request is stored in the workspace's ``judge_cache`` under
    sha256(judge model, prompt version, mode, image encoding, sampling settings, image hashes,
    instruction[, pass k for the k-th pass, k ≥ 2]), so the same judgement is never paid for twice —
    across runs too; pass 1 has the key a single-pass judge always had. Results that prove
    nothing was processed (429/5xx after retries, auth, bad request, connection refused) are not
    cached; an unknown outcome (timeout) is, so it is not silently re-sent (``retry_unscored`` asks
    for that explicitly).

What is stored
    by :func:`judge_run` (:mod:`evalkit.scoring.judge.batch`, re-exported here): scores, pairwise
    ratings and usage rows, described there. Cache records: ``parsed`` is ``{"judge": <the validated
    answer or null>, "meta": {finish_reason, response_model, system_fingerprint, usage, order, …}}``
    and ``reply_raw`` the (redacted) reply text or error body.

The API key is a :class:`~evalkit.credentials.Secret`; every text that came from the server is passed
through :func:`~evalkit.credentials.redact` before it is stored, logged or raised.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import httpx

from evalkit.credentials import redact
from evalkit.engine.budget import Budget
from evalkit.errors import BudgetExceededError, ImageError, InvalidInputError
from evalkit.providers.retry import RetryPolicy, parse_retry_after
from evalkit.scoring.judge.config import JudgeConfig
from evalkit.scoring.judge.prompts import (
    CHOICE_CONTRACT,
    PAIRWISE_PROMPT,
    PROMPT_SETS,
    OutputContract,
    _short,
    parse_reply,
)
from evalkit.store import Workspace

log = logging.getLogger(__name__)

#: reasons that prove the request was not processed: not cached, so a later run tries again.
_TRANSIENT_REASONS = frozenset({"rate_limit", "server", "auth", "bad_request", "budget", "connect"})


# ---- results ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class JudgeReply:
    """One judge request (or its cached answer)."""

    mode: str  # viescore_sc | viescore_pq | pairwise
    key: str
    status: str  # scored | unscored
    reason: str | None = None
    detail: str | None = None
    raw: str | None = field(default=None, repr=False)  # reply text (or error body), redacted
    parsed: dict[str, Any] | None = None
    cost_usd: float | None = None  # what this request cost now (0 when cached or not billed)
    latency_ms: float | None = None
    cached: bool = False
    sent: bool = False  # a request went out during this call
    attempts: int = 0
    http_status: int | None = None
    finish_reason: str | None = None
    response_model: str | None = None  # the snapshot the API says answered
    system_fingerprint: str | None = None
    usage: dict[str, int] | None = None
    order: tuple[str, str] | None = None  # pairwise: sha256 of the images shown as A and B

    @property
    def cost_source(self) -> str:
        if self.cost_usd is None:
            return "unknown"
        return "reported" if self.usage else "not_billed"


@dataclass(frozen=True)
class VIEScoreResult:
    """VIEScore of one edit. Numbers are ``None`` unless scored; ``status`` is "scored" when every part
    that applies was scored (PQ only when there is no instruction: ``sc``/``o`` stay None)."""

    status: str
    reason: str | None
    sc: float | None = None
    pq: float | None = None
    o: float | None = None
    editing_success: float | None = None
    over_editing: float | None = None
    naturalness: float | None = None
    artifacts: float | None = None
    sc_reply: JudgeReply | None = None  # None when SC does not apply
    pq_reply: JudgeReply | None = None
    sc_applies: bool = True
    detail: str | None = None

    @property
    def replies(self) -> list[JudgeReply]:
        return [r for r in (self.sc_reply, self.pq_reply) if r is not None]

    @property
    def raw(self) -> dict[str, str | None]:
        return {r.mode: r.raw for r in self.replies}

    @property
    def parsed(self) -> dict[str, dict[str, Any] | None]:
        return {r.mode: r.parsed for r in self.replies}

    @property
    def cost_usd(self) -> float | None:
        costs = [r.cost_usd for r in self.replies]
        return None if any(c is None for c in costs) else float(sum(costs))  # type: ignore[arg-type]

    @property
    def latency_ms(self) -> float | None:
        lat = [r.latency_ms for r in self.replies if r.latency_ms is not None and not r.cached]
        return float(sum(lat)) if lat else None


@dataclass(frozen=True)
class PairwiseResult:
    """A pairwise verdict mapped back to the caller's sides."""

    status: str
    reason: str | None
    choice: str | None = None  # left | right | tie
    shown_first: str | None = None  # left | right: which side the judge saw as "A"
    verdict: str | None = None  # the judge's own answer: A | B | tie
    reasoning: str | None = None
    reply: JudgeReply | None = None
    detail: str | None = None

    @property
    def raw(self) -> str | None:
        return self.reply.raw if self.reply else None

    @property
    def parsed(self) -> dict[str, Any] | None:
        return self.reply.parsed if self.reply else None

    @property
    def cost_usd(self) -> float | None:
        return self.reply.cost_usd if self.reply else 0.0

    @property
    def latency_ms(self) -> float | None:
        return self.reply.latency_ms if self.reply else None


class _Gate:
    """The spending guard of one batch: a budget, and a stop flag set by the first refused reservation."""

    def __init__(self, budget: Budget | None):
        self.budget = budget
        self.stopped = False


# ---- the judge ----------------------------------------------------------------------------------
class Judge:
    """A VLM judge. ``Judge()`` reads the environment; keyword arguments override (``Judge(base_url=…,
    model=…, api_key=…)``), or pass a :class:`JudgeConfig`. Use ``async with Judge(...) as judge`` or
    ``await judge.aclose()``.

    ``transport`` (an httpx transport) and ``retry_policy`` are seams for tests and benchmarks.
    """

    def __init__(
        self,
        config: JudgeConfig | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        retry_policy: RetryPolicy | None = None,
        **overrides: Any,
    ):
        if config is None:
            config = JudgeConfig.from_env(**overrides)
        elif overrides:
            config = replace(config, **overrides)
        self.config = config
        self._encoding = config.encoding
        self.retry_policy = retry_policy or RetryPolicy(max_attempts=config.max_attempts)
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if config.api_key is not None:
            headers["Authorization"] = f"Bearer {config.api_key.reveal()}"
        self._client = httpx.AsyncClient(
            base_url=config.base_url,
            headers=headers,
            timeout=httpx.Timeout(config.timeout_s, connect=config.connect_timeout_s),
            transport=transport,
            follow_redirects=False,
        )

    def __repr__(self) -> str:
        return (
            f"Judge(model={self.config.model!r}, base_url={self.config.base_url!r}, version={self.config.version()!r})"
        )

    async def __aenter__(self) -> Judge:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    # -- public single-item API --------------------------------------------------------------
    async def viescore(
        self,
        source: bytes,
        edited: bytes,
        instruction: str | None,
        *,
        cache: Workspace | None = None,
        budget: Budget | None = None,
        retry_unscored: bool | Collection[str] = False,
    ) -> VIEScoreResult:
        """VIEScore of one edit (SC needs an ``instruction``; without one only PQ is judged). ``cache``
        (a Workspace) reuses and stores answers; ``budget`` caps spending. Raises :class:`ImageError`
        when an image cannot be decoded."""
        return await self._viescore(
            source, edited, instruction, cache=cache, gate=_Gate(budget), retry_unscored=retry_unscored
        )

    async def pairwise(
        self,
        source: bytes,
        left: bytes,
        right: bytes,
        instruction: str,
        *,
        rng: random.Random,
        cache: Workspace | None = None,
        budget: Budget | None = None,
        retry_unscored: bool | Collection[str] = False,
    ) -> PairwiseResult:
        """Which of two edits better follows ``instruction`` while preserving the rest. The side shown
        first is drawn from ``rng`` and recorded; the verdict comes back as left / right / tie."""
        left_first = rng.random() < 0.5
        return await self._pairwise(
            source,
            left,
            right,
            instruction,
            left_first=left_first,
            cache=cache,
            gate=_Gate(budget),
            retry_unscored=retry_unscored,
        )

    # -- cache keys ---------------------------------------------------------------------------
    def cache_key(self, mode: str, image_sha256: Iterable[str], instruction: str | None, pass_index: int = 1) -> str:
        """sha256 of (judge model, prompt version, mode, image encoding, sampling settings, image
        hashes, instruction[, pass index when ≥ 2]): each judge pass is its own request and cache entry."""
        c = self.config
        prompt_version = c.prompt_version("viescore" if mode.startswith("viescore") else "pairwise")
        parts: list[Any] = [
            c.model,
            prompt_version,
            mode,
            c.image_encoding,
            c.settings_tag(),
            list(image_sha256),
            instruction or "",
        ]
        if pass_index != 1:
            parts.append(f"pass {pass_index}")
        payload = json.dumps(parts, ensure_ascii=False)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()

    # -- internals ------------------------------------------------------------------------------
    async def _viescore(
        self,
        source: bytes,
        edited: bytes,
        instruction: str | None,
        *,
        cache: Workspace | None,
        gate: _Gate,
        retry_unscored: bool | Collection[str],
        pass_index: int = 1,
        encoded_images: dict[str, Any] | None = None,
    ) -> VIEScoreResult:
        """``encoded_images``: a dict shared by the passes over one output, so its images are re-encoded
        once, not once per pass (filled on first use; the same source and edited bytes every time)."""
        instruction = (instruction or "").strip() or None
        prompts = PROMPT_SETS[self.config.prompt_set]
        src_sha, edit_sha = hashlib.sha256(source).hexdigest(), hashlib.sha256(edited).hexdigest()
        # PQ sees the edited image resized to the source size, so the source is part of its key too.
        sc_key = self.cache_key("viescore_sc", [src_sha, edit_sha], instruction, pass_index) if instruction else None
        pq_key = self.cache_key("viescore_pq", [src_sha, edit_sha], None, pass_index)
        sc_prompt = prompts.sc_prompt.replace("<instruction>", instruction or "")

        images: dict[str, Any] = encoded_images if encoded_images is not None else {}

        async def encoded() -> dict[str, Any]:
            if not images:

                def work() -> dict[str, Any]:
                    enc = self._encoding
                    src = enc.load(source, "source")
                    edited_uri = enc.data_uri(enc.load(edited, "edited"), size=src.size)  # as GEdit: source size
                    sent = enc.sent_size(src.size)
                    return {
                        "sc": [enc.data_uri(src), edited_uri],
                        "pq": [edited_uri],
                        "sc_px": [sent] * 2,
                        "pq_px": [sent],
                    }

                images.update(await asyncio.to_thread(work))
            return images

        def worst(prompt: str, which: str) -> Callable[[], Awaitable[float]]:
            async def amount() -> float:
                return self.config.worst_case_usd(prompt, (await encoded())[which + "_px"])

            return amount

        sc_reply = None
        if sc_key is not None:
            sc_reply = await self._judged(
                "viescore_sc",
                sc_key,
                cache,
                gate,
                retry_unscored,
                lambda: self._ask_images(
                    "viescore_sc", sc_prompt, encoded, "sc", prompts.contract, seed_offset=pass_index - 1
                ),
                worst(sc_prompt, "sc"),
            )
        pq_reply = None
        if not (sc_reply is not None and sc_reply.reason == "budget"):
            pq_reply = await self._judged(
                "viescore_pq",
                pq_key,
                cache,
                gate,
                retry_unscored,
                lambda: self._ask_images(
                    "viescore_pq", prompts.pq_prompt, encoded, "pq", prompts.contract, seed_offset=pass_index - 1
                ),
                worst(prompts.pq_prompt, "pq"),
            )
        return _reduce_viescore(sc_reply, pq_reply, sc_applies=instruction is not None, divisor=prompts.divisor)

    async def _pairwise(
        self,
        source: bytes,
        left: bytes,
        right: bytes,
        instruction: str,
        *,
        left_first: bool,
        cache: Workspace | None,
        gate: _Gate,
        retry_unscored: bool | Collection[str],
        ordered: bool = False,
    ) -> PairwiseResult:
        instruction = (instruction or "").strip()
        if not instruction:
            raise InvalidInputError(
                "pairwise judging needs an instruction", hint="pass the edit prompt (or a description of the operation)"
            )
        src_sha = hashlib.sha256(source).hexdigest()
        l_sha, r_sha = hashlib.sha256(left).hexdigest(), hashlib.sha256(right).hexdigest()
        first, second = (left, right) if left_first else (right, left)
        order = (hashlib.sha256(first).hexdigest(), hashlib.sha256(second).hexdigest())
        # The pair is unordered in the key: a re-run in the other display order reuses the answer; a swap
        # check (``ordered``) asks each display order on its own, so the order is part of its key.
        key = (
            self.cache_key("pairwise", [src_sha, "ordered", *order], instruction)
            if ordered
            else self.cache_key("pairwise", [src_sha, *sorted((l_sha, r_sha))], instruction)
        )
        holder: dict[str, Any] = {}
        prompt = PAIRWISE_PROMPT.replace("<instruction>", instruction)

        async def encoded() -> dict[str, Any]:
            if not holder:

                def work() -> dict[str, Any]:
                    enc = self._encoding
                    imgs = [
                        enc.load(source, "source"),
                        enc.load(first, "first candidate"),
                        enc.load(second, "second candidate"),
                    ]
                    return {"pair": [enc.data_uri(i) for i in imgs], "pair_px": [enc.sent_size(i.size) for i in imgs]}

                holder.update(await asyncio.to_thread(work))
            return holder

        async def worst() -> float:
            return self.config.worst_case_usd(prompt, (await encoded())["pair_px"])

        reply = await self._judged(
            "pairwise",
            key,
            cache,
            gate,
            retry_unscored,
            lambda: self._ask_images("pairwise", prompt, encoded, "pair", CHOICE_CONTRACT, order=order),
            worst,
        )
        # A cached answer may have been given in the other order: map through the order it was asked in.
        asked = reply.order or order
        shown_first = "left" if asked[0] == l_sha else "right"
        if reply.status != "scored" or not reply.parsed:
            return PairwiseResult("unscored", reply.reason, shown_first=shown_first, reply=reply, detail=reply.detail)
        verdict = reply.parsed["choice"]
        other = "right" if shown_first == "left" else "left"
        choice = "tie" if verdict == "tie" else (shown_first if verdict == "A" else other)
        return PairwiseResult(
            "scored",
            None,
            choice=choice,
            shown_first=shown_first,
            verdict=verdict,
            reasoning=reply.parsed.get("reasoning"),
            reply=reply,
        )

    async def _judged(
        self,
        mode: str,
        key: str,
        cache: Workspace | None,
        gate: _Gate,
        retry_unscored: bool | Collection[str],
        ask: Callable[[], Any],
        worst: Callable[[], Awaitable[float]] | None = None,
    ) -> JudgeReply:
        """A cached answer when there is one (and it is not to be retried), else a new request under
        the budget (reserving ``worst()``, the most it can cost); answers worth keeping are stored."""
        if cache is not None:
            record = cache.judge_cache_get(key)
            if record is not None and not _wants_retry(record, retry_unscored):
                return _reply_from_cache(mode, key, record)
        if gate.stopped:
            return JudgeReply(mode, key, "unscored", "budget", "the judge budget was reached; not sent")
        reservation = None
        reserve_usd = self.config.usd_per_call_reserve
        if gate.budget is not None:
            if worst is not None:
                reserve_usd = await worst()  # may raise ImageError: nothing reserved, nothing sent
            if gate.stopped:
                return JudgeReply(mode, key, "unscored", "budget", "the judge budget was reached; not sent")
            try:
                reservation = gate.budget.reserve(reserve_usd, key)
            except BudgetExceededError as exc:
                gate.stopped = True
                return JudgeReply(mode, key, "unscored", "budget", exc.message)
        try:
            reply: JudgeReply = replace(await ask(), key=key)
        except ImageError:  # raised while encoding, before anything was sent
            if reservation is not None:
                gate.budget.settle(reservation, 0.0)  # type: ignore[union-attr]
            raise
        except BaseException:  # cancelled mid-request: it may have been processed, keep it counted
            if reservation is not None:
                gate.budget.settle(reservation, reserve_usd)  # type: ignore[union-attr]
            raise
        if reservation is not None and gate.budget is not None:
            # unknown cost (no usage, or an unknown outcome) keeps the whole reservation counted
            gate.budget.settle(reservation, reserve_usd if reply.cost_usd is None else reply.cost_usd)
            if reply.cost_usd is not None and reply.cost_usd > reserve_usd + 1e-12:
                log.warning(
                    "judge: a request cost $%.6f, more than its reserved worst case $%.6f (usage %s)",
                    reply.cost_usd,
                    reserve_usd,
                    reply.usage,
                )
        if cache is not None and reply.reason not in _TRANSIENT_REASONS:
            cache.judge_cache_put(_cache_record(self.config, reply))
        return reply

    async def _ask_images(
        self,
        mode: str,
        prompt: str,
        encoded: Callable[[], Any],
        which: str,
        contract: OutputContract,
        order: tuple[str, str] | None = None,
        seed_offset: int = 0,
    ) -> JudgeReply:
        uris = (await encoded())[which]
        content: list[dict[str, Any]] = [{"type": "text", "text": prompt}]
        content += [{"type": "image_url", "image_url": {"url": u}} for u in uris]
        body: dict[str, Any] = {
            "model": self.config.model,
            "messages": [{"role": "user", "content": content}],
            "max_tokens": self.config.max_tokens,
        }
        if self.config.temperature is not None:
            body["temperature"] = self.config.temperature
        if self.config.seed is not None:
            body["seed"] = self.config.seed + seed_offset
        return await self._complete(mode, body, contract, order)

    async def _complete(
        self, mode: str, body: dict[str, Any], contract: OutputContract, order: tuple[str, str] | None
    ) -> JudgeReply:
        """POST /chat/completions with retries on proven-unprocessed failures; never raises for HTTP."""
        payload = json.dumps(body).encode("utf-8")
        base: dict[str, Any] = {"mode": mode, "key": "", "order": order}
        attempt = 0
        while True:
            attempt += 1
            started = time.perf_counter()
            try:
                resp = await self._client.post("/chat/completions", content=payload)
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                # the request never left: safe to try again
                if attempt < self.retry_policy.max_attempts:
                    wait_s = self.retry_policy.backoff_s(attempt)
                    log.info(
                        "judge: cannot connect (%s); retrying in %.2f s (attempt %d/%d)",
                        type(exc).__name__,
                        wait_s,
                        attempt,
                        self.retry_policy.max_attempts,
                    )
                    await asyncio.sleep(wait_s)
                    continue
                return JudgeReply(
                    **base,
                    status="unscored",
                    reason="connect",
                    cost_usd=0.0,
                    attempts=attempt,
                    sent=False,
                    detail=self._redact(f"cannot connect to the judge at {self.config.base_url}: {type(exc).__name__}"),
                )
            except httpx.TimeoutException as exc:
                return JudgeReply(
                    **base,
                    status="unscored",
                    reason="timeout",
                    cost_usd=None,
                    attempts=attempt,
                    sent=True,
                    latency_ms=_ms(started),
                    detail=f"no reply within {self.config.timeout_s:g} s ({type(exc).__name__}); "
                    "the request may have been processed, so it is not re-sent",
                )
            except httpx.TransportError as exc:
                return JudgeReply(
                    **base,
                    status="unscored",
                    reason="network",
                    cost_usd=None,
                    attempts=attempt,
                    sent=True,
                    latency_ms=_ms(started),
                    detail=self._redact(
                        f"the connection broke after sending ({type(exc).__name__}); outcome unknown, not re-sent"
                    ),
                )
            latency_ms = _ms(started)
            status = resp.status_code
            text = self._redact(resp.text)
            if status in (408, 429) or status >= 500:
                if attempt < self.retry_policy.max_attempts:
                    retry_after = parse_retry_after(resp.headers.get("Retry-After"))
                    wait_s = self.retry_policy.backoff_s(attempt, retry_after)
                    log.info(
                        "judge: HTTP %d; retrying in %.2f s (attempt %d/%d)",
                        status,
                        wait_s,
                        attempt,
                        self.retry_policy.max_attempts,
                    )
                    await asyncio.sleep(wait_s)
                    continue
                reason = "rate_limit" if status == 429 else "server"  # (408: the server gave up reading it)
                detail = f"HTTP {status} after {attempt} attempt(s): {_error_message(text)}"
            elif status >= 400:
                reason = (
                    "content_filter"
                    if _is_content_filter(text)
                    else ("auth" if status in (401, 403) else "bad_request")
                )
                if reason != "content_filter":
                    log.warning("judge: HTTP %d from %s: %s", status, self.config.base_url, _error_message(text))
                detail = f"HTTP {status}: {_error_message(text)}"
            else:
                return self._read_completion(base, text, contract, attempt, status, latency_ms)
            return JudgeReply(
                **base,
                status="unscored",
                reason=reason,
                raw=text,
                cost_usd=0.0,
                attempts=attempt,
                sent=True,
                http_status=status,
                latency_ms=latency_ms,
                detail=detail,
            )

    def _read_completion(
        self, base: dict[str, Any], text: str, contract: OutputContract, attempt: int, status: int, latency_ms: float
    ) -> JudgeReply:
        common = dict(**base, attempts=attempt, sent=True, http_status=status, latency_ms=latency_ms)
        try:
            data = json.loads(text)
            choice = data["choices"][0]
            message = choice.get("message") or {}
            content = message.get("content")
            if isinstance(content, list):  # some servers return content parts
                content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
            if content is not None and not isinstance(content, str):
                raise TypeError("content is not text")
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            return JudgeReply(
                **common,
                status="unscored",
                reason="bad_response",
                raw=_short(text, 2000),
                cost_usd=None,
                detail="the reply is not an OpenAI chat completion",
            )
        usage = _usage(data.get("usage"))
        cost = self._cost(usage)
        finish_reason = choice.get("finish_reason")
        refusal = message.get("refusal") if isinstance(message.get("refusal"), str) else None
        content = self._redact(content) if content is not None else None
        parsed = parse_reply(content, contract, finish_reason=finish_reason, refusal=self._redact(refusal))
        if parsed.status != "scored":
            log.debug("judge: unscored (%s): %s", parsed.reason, parsed.detail)
        return JudgeReply(
            **common,
            status=parsed.status,
            reason=parsed.reason,
            detail=parsed.detail,
            raw=content,
            parsed=parsed.parsed,
            cost_usd=cost,
            finish_reason=finish_reason,
            response_model=data.get("model") if isinstance(data.get("model"), str) else None,
            system_fingerprint=data.get("system_fingerprint")
            if isinstance(data.get("system_fingerprint"), str)
            else None,
            usage=usage,
        )

    def _cost(self, usage: dict[str, int] | None) -> float | None:
        if usage is None:
            return None
        return self.config.cost_usd(usage["prompt_tokens"], usage["completion_tokens"])

    def _redact(self, text: str | None) -> str:
        return redact(text, self.config.api_key)


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0


def _usage(raw: Any) -> dict[str, int] | None:
    if not isinstance(raw, Mapping):
        return None
    p, c = raw.get("prompt_tokens"), raw.get("completion_tokens")
    if not (isinstance(p, int) and isinstance(c, int)) or isinstance(p, bool) or isinstance(c, bool) or min(p, c) < 0:
        return None
    return {"prompt_tokens": p, "completion_tokens": c}


def _error_message(text: str) -> str:
    try:
        err = json.loads(text).get("error")
        if isinstance(err, Mapping) and err.get("message"):
            return _short(str(err["message"]), 200)
        if isinstance(err, str):
            return _short(err, 200)
    except (ValueError, AttributeError):
        pass
    return _short(text or "(empty body)", 200)


def _is_content_filter(text: str) -> bool:
    """An API-level content-filter rejection (OpenAI / Azure OpenAI error shapes)."""
    try:
        err = json.loads(text).get("error")
    except (ValueError, AttributeError):
        return False
    if not isinstance(err, Mapping):
        return False
    codes = {str(err.get("code") or "").lower(), str(err.get("type") or "").lower()}
    inner = err.get("innererror")
    if isinstance(inner, Mapping):
        codes.add(str(inner.get("code") or "").lower())
    return bool(codes & {"content_filter", "content_policy_violation", "responsibleaipolicyviolation"})


def _wants_retry(record: Mapping[str, Any], retry_unscored: bool | Collection[str]) -> bool:
    if record.get("status") == "scored" or not retry_unscored:
        return False
    return retry_unscored is True or (not isinstance(retry_unscored, bool) and record.get("reason") in retry_unscored)


def _cache_record(config: JudgeConfig, reply: JudgeReply) -> dict[str, Any]:
    meta = {
        k: getattr(reply, k)
        for k in ("detail", "finish_reason", "response_model", "system_fingerprint", "usage", "http_status", "attempts")
    }
    meta["order"] = list(reply.order) if reply.order else None
    meta["settings"] = config.settings_tag()
    return {
        "key": reply.key,
        "judge_model": config.model,
        "prompt_version": config.prompt_version("viescore" if reply.mode.startswith("viescore") else "pairwise"),
        "mode": reply.mode,
        "encoding": config.image_encoding,
        "status": reply.status,
        "reason": reply.reason,
        "parsed": {"judge": reply.parsed, "meta": meta},
        "reply_raw": reply.raw,
        "cost_usd": reply.cost_usd,
        "latency_ms": reply.latency_ms,
    }


def _reply_from_cache(mode: str, key: str, record: Mapping[str, Any]) -> JudgeReply:
    envelope = record.get("parsed") or {}
    meta = envelope.get("meta") or {}
    order = meta.get("order")
    return JudgeReply(
        mode=mode,
        key=key,
        status=record["status"],
        reason=record.get("reason"),
        detail=meta.get("detail"),
        raw=record.get("reply_raw"),
        parsed=envelope.get("judge"),
        cost_usd=0.0,
        latency_ms=record.get("latency_ms"),
        cached=True,
        sent=False,
        attempts=0,
        http_status=meta.get("http_status"),
        finish_reason=meta.get("finish_reason"),
        response_model=meta.get("response_model"),
        system_fingerprint=meta.get("system_fingerprint"),
        usage=meta.get("usage"),
        order=tuple(order) if order else None,
    )


def _reduce_viescore(
    sc_reply: JudgeReply | None, pq_reply: JudgeReply | None, *, sc_applies: bool, divisor: float = 1.0
) -> VIEScoreResult:
    """SC = min(SC scores), PQ = min(PQ scores), O = sqrt(SC × PQ) (GEdit-Bench / VIEScore). A part that
    was never asked (``None``: the budget stopped it) makes the item unscored with reason "budget"."""
    es = oe = nat = art = sc = pq = o = None
    if sc_reply is not None and sc_reply.status == "scored" and sc_reply.parsed:
        es, oe = (float(v) / divisor for v in sc_reply.parsed["score"])
        sc = min(es, oe)
    if pq_reply is not None and pq_reply.status == "scored" and pq_reply.parsed:
        nat, art = (float(v) / divisor for v in pq_reply.parsed["score"])
        pq = min(nat, art)
    if sc is not None and pq is not None:
        o = math.sqrt(sc * pq)
    reason = detail = None
    for part in ([sc_reply] if sc_applies else []) + [pq_reply]:
        if part is None:
            reason, detail = "budget", "the judge budget was reached; not sent"
            break
        if part.status != "scored":
            reason, detail = part.reason, part.detail
            break
    return VIEScoreResult(
        "scored" if reason is None else "unscored",
        reason,
        sc=sc,
        pq=pq,
        o=o,
        editing_success=es,
        over_editing=oe,
        naturalness=nat,
        artifacts=art,
        sc_reply=sc_reply,
        pq_reply=pq_reply,
        sc_applies=sc_applies,
        detail=detail,
    )


__all__ = ["Judge", "JudgeReply", "PairwiseResult", "VIEScoreResult"]
