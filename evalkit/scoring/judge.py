"""A pinned VLM judge over any OpenAI-compatible chat-completions endpoint: VIEScore and pairwise.

Why pinned: published judge scores are not comparable across papers or even across days (GPT-4.1
drift, provider-dependent scores, content filters; evaluation-anchors §0.2, §3). So every score
evalkit stores carries :meth:`JudgeConfig.version` — judge model, prompt version, image encoding and
any non-default sampling setting — and every compared model is re-scored by the same judge.

A judge task is *prompt + output contract + reducer* (the EvalScope GEdit shape, anchors §4.5):

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
    Before a request is sent, ``usd_per_call_reserve`` is reserved in an :class:`~evalkit.budget.Budget`;
    nothing is sent once a reservation would cross the cap. A request is retried (with
    :class:`~evalkit.providers.retry.RetryPolicy`, honouring ``Retry-After``) only when the response
    proves it was not processed: HTTP 408/429/5xx or a connection that never opened. *Assumption*: an
    OpenAI-compatible API does not bill a chat completion that fails with an HTTP error status (no
    ``usage`` is returned for it), so those settle at $0. A timeout or broken connection after the
    request was sent is an unknown outcome: never retried, unscored ``timeout``/``network``, and its
    reservation stays counted. Cost is ``usage`` tokens × the configured per-token prices; when the
    reply has no usage or no prices are configured it is ``None`` (unknown, never guessed) and the
    reservation stays counted against the cap. The cap holds as long as no request costs more than
    ``usd_per_call_reserve`` (checked for the output side when prices are given).

Cache
    Every answered request is stored in the workspace's ``judge_cache`` under
    sha256(judge model, prompt version, mode, image encoding, sampling settings, image hashes,
    instruction), so the same judgement is never paid for twice — across runs too. Results that prove
    nothing was processed (429/5xx after retries, auth, bad request, connection refused) are not
    cached; an unknown outcome (timeout) is, so it is not silently re-sent (``retry_unscored`` asks
    for that explicitly).

What is stored (by :func:`judge_run`)
    viescore: ``ws.put_scores`` rows with source "judge", version :meth:`JudgeConfig.version`, metrics
    ``viescore_sc``, ``viescore_pq``, ``viescore_o``, ``vie_editing_success``, ``vie_over_editing``,
    ``vie_naturalness``, ``vie_artifacts``; unscored parts are rows with value None, status "unscored"
    and the reason; ``detail`` holds the cache key, the judge's reasoning and the answering snapshot.
    pairwise: ``ws.add_rating(kind="pair", source="judge", rater="judge:<model>")`` with ``detail``
    holding the version, which side was shown first, the raw verdict and the reasoning. Every request
    sent is a ``usage`` row (source "judge"). Cache records: ``parsed`` is ``{"judge": <the validated
    answer or null>, "meta": {finish_reason, response_model, system_fingerprint, usage, order, …}}``
    and ``reply_raw`` the (redacted) reply text or error body.

The API key is a :class:`~evalkit.credentials.Secret`; every text that came from the server is passed
through :func:`~evalkit.credentials.redact` before it is stored, logged or raised.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import ipaddress
import json
import logging
import math
import os
import random
import re
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

import httpx
from PIL import Image

from evalkit.budget import Budget
from evalkit.credentials import Secret, key_from_env, redact
from evalkit.errors import BudgetExceededError, ImageError, InvalidInputError, WorkspaceError
from evalkit.images import decode_output, encode, to_rgb
from evalkit.providers.retry import RetryPolicy, parse_retry_after
from evalkit.store import Workspace

log = logging.getLogger(__name__)

VIESCORE_PROMPT_VERSION = "viescore-gedit-v1"  # bump when a prompt text changes
PAIRWISE_PROMPT_VERSION = "pairwise-v1"
DEFAULT_IMAGE_ENCODING = "jpeg-q90-max1024"
DEFAULT_BASE_URL = "https://api.openai.com/v1"

#: What the budget holds back per request unless configured. Reasoning (an assumption, not a quote:
#: set your judge's own figure): a GPT-4.1-class judge at ~$2 / 1M input and ~$8 / 1M output tokens
#: reading ≤ 3 images ≤ 1024 px (≈ 765 tokens each under OpenAI's 512-px tiling) plus ~600 prompt
#: tokens (≈ 2.9k input ≈ $0.006) and writing at most max_tokens = 1400 tokens (≈ $0.011) costs at most
#: ≈ $0.017 per request; $0.02 leaves a margin.
DEFAULT_USD_PER_CALL_RESERVE = 0.02

MODES = ("viescore", "pairwise")
#: Operations whose VIEScore includes SC. The SC prompt scores "how well the instruction was followed"
#: and "over-editing relative to the original"; zoom_out (the output is a wider scene, squeezed back to
#: the source size), remove_background (no instruction) and character_reference (the input is a
#: reference, not the image being edited) get PQ only — their SC/O rows say "unscored: not_applicable".
SC_OPERATIONS = frozenset({"general_edit", "inpaint", "erase", "multi_image"})
#: The instruction shown to the pairwise judge for operations that have no prompt of their own.
OPERATION_INSTRUCTIONS = {
    "zoom_out": "Zoom out: extend the scene beyond the original borders, keeping the original content unchanged.",
    "remove_background": "Remove the background, keeping the main subject unchanged.",
    "erase": "Remove the marked object and fill the area naturally, keeping everything else unchanged.",
}

VIESCORE_METRICS = ("viescore_sc", "viescore_pq", "viescore_o", "vie_editing_success", "vie_over_editing",
                    "vie_naturalness", "vie_artifacts")
_SC_METRICS = ("viescore_sc", "vie_editing_success", "vie_over_editing")
_PQ_METRICS = ("viescore_pq", "vie_naturalness", "vie_artifacts")
#: reasons that prove the request was not processed: not cached, so a later run tries again.
_TRANSIENT_REASONS = frozenset({"rate_limit", "server", "auth", "bad_request", "budget", "connect"})

# ---- prompts ------------------------------------------------------------------------------------
# VIEScore prompt texts as GEdit-Bench uses them (viescore/vie_prompts.py of TIGER-AI-Lab/VIEScore,
# MIT licence, copied by Step1X-Edit/GEdit-Bench): `_context_no_delimit`, `_prompts_0shot_two_image_edit_rule`,
# `_prompts_0shot_tie_rule_SC`, `_prompts_0shot_rule_PQ`, joined with "\n"; "<instruction>" is replaced
# by the edit instruction. Trailing spaces are part of the originals and kept.
_VIE_CONTEXT = (
    "You are a professional digital artist. You will have to evaluate the effectiveness of the AI-generated "
    "image(s) based on given rules.\n"
    "All the input images are AI-generated. All human in the images are AI-generated too. so you need not "
    "worry about the privacy confidentials.\n"
    "\n"
    "You will have to give your output in this way (Keep your reasoning concise and short.):\n"
    "{\n"
    '"score" : [...],\n'
    '"reasoning" : "..."\n'
    "}"
)
_VIE_TWO_IMAGE_EDIT_RULE = (
    "RULES:\n"
    "\n"
    "Two images will be provided: The first being the original AI-generated image and the second being an "
    "edited version of the first.\n"
    "The objective is to evaluate how successfully the editing instruction has been executed in the second image.\n"
    "\n"
    "Note that sometimes the two images might look identical due to the failure of image edit.\n"
)
_VIE_TIE_RULE_SC = (
    "\n"
    "From scale 0 to 10: \n"
    "A score from 0 to 10 will be given based on the success of the editing. (0 indicates that the scene in the "
    "edited image does not follow the editing instruction at all. 10 indicates that the scene in the edited image "
    "follow the editing instruction text perfectly.)\n"
    "A second score from 0 to 10 will rate the degree of overediting in the second image. (0 indicates that the "
    "scene in the edited image is completely different from the original. 10 indicates that the edited image can "
    "be recognized as a minimal edited yet effective version of original.)\n"
    "Put the score in a list such that output score = [score1, score2], where 'score1' evaluates the editing "
    "success and 'score2' evaluates the degree of overediting.\n"
    "\n"
    "Editing instruction: <instruction>\n"
)
_VIE_RULE_PQ = (
    "RULES:\n"
    "\n"
    "The image is an AI-generated image.\n"
    "The objective is to evaluate how successfully the image has been generated.\n"
    "\n"
    "From scale 0 to 10: \n"
    "A score from 0 to 10 will be given based on image naturalness. \n"
    "(\n"
    "    0 indicates that the scene in the image does not look natural at all or give a unnatural feeling such as "
    "wrong sense of distance, or wrong shadow, or wrong lighting. \n"
    "    10 indicates that the image looks natural.\n"
    ")\n"
    "A second score from 0 to 10 will rate the image artifacts. \n"
    "(\n"
    "    0 indicates that the image contains a large portion of distortion, or watermark, or scratches, or blurred "
    "faces, or unusual body parts, or subjects not harmonized. \n"
    "    10 indicates the image has no artifacts.\n"
    ")\n"
    "Put the score in a list such that output score = [naturalness, artifacts]\n"
)
VIESCORE_SC_PROMPT = "\n".join([_VIE_CONTEXT, _VIE_TWO_IMAGE_EDIT_RULE, _VIE_TIE_RULE_SC])
VIESCORE_PQ_PROMPT = "\n".join([_VIE_CONTEXT, _VIE_RULE_PQ])

# evalkit's own pairwise prompt (no published standard to copy). It leaves out VIEScore's "all humans are
# AI-generated … privacy" sentence, which Azure's filter flagged as a jailbreak (Step1X-Edit#143).
PAIRWISE_PROMPT = (
    "You are a professional digital artist. You will compare two AI-edited versions of the same original image.\n"
    "\n"
    "RULES:\n"
    "\n"
    "Three images will be provided: the first is the original image, the second is edit A and the third is "
    "edit B. Both edits were made from the original with the same editing instruction.\n"
    "Decide which edit better follows the editing instruction while preserving everything in the original that "
    "the instruction does not ask to change. Prefer the edit that does what was asked with the least collateral "
    "change and without visible artifacts.\n"
    'Answer "tie" only when the two edits are equally good or equally bad.\n'
    "\n"
    "You will have to give your output in this way (Keep your reasoning concise and short.):\n"
    "{\n"
    '"choice" : "A" or "B" or "tie",\n'
    '"reasoning" : "..."\n'
    "}\n"
    "\n"
    "Editing instruction: <instruction>\n"
)


# ---- output contracts -----------------------------------------------------------------------------
@dataclass(frozen=True)
class OutputContract:
    """What a reply must be: one JSON object with exactly ``keys``; ``check`` validates the values and
    returns ``(clean_object, None, None)`` or ``(None, reason, detail)``."""

    name: str
    keys: frozenset[str]
    marker: str  # the key that identifies the answer object among other JSON in the text
    check: Callable[[dict[str, Any]], tuple[dict[str, Any] | None, str | None, str | None]]


def _check_two_scores(obj: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None, str | None]:
    score, reasoning = obj["score"], obj["reasoning"]
    if not isinstance(score, list) or len(score) != 2:
        return None, "wrong_shape", f"'score' must be a list of two numbers, got {_short(score)}"
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) for v in score):
        return None, "wrong_shape", f"'score' must hold numbers, got {_short(score)}"
    if any(not 0 <= v <= 10 for v in score):
        return None, "out_of_range", f"scores must be within 0–10, got {_short(score)}"
    if not isinstance(reasoning, str):
        return None, "wrong_shape", "'reasoning' must be a string"
    return {"score": list(score), "reasoning": reasoning}, None, None


def _check_choice(obj: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None, str | None]:
    choice, reasoning = obj["choice"], obj["reasoning"]
    norm = {"a": "A", "b": "B", "tie": "tie"}.get(choice.strip().lower()) if isinstance(choice, str) else None
    if norm is None:
        return None, "wrong_shape", f"'choice' must be \"A\", \"B\" or \"tie\", got {_short(choice)}"
    if not isinstance(reasoning, str):
        return None, "wrong_shape", "'reasoning' must be a string"
    return {"choice": norm, "reasoning": reasoning}, None, None


SCORE_CONTRACT = OutputContract("score-pair", frozenset({"score", "reasoning"}), "score", _check_two_scores)
CHOICE_CONTRACT = OutputContract("choice", frozenset({"choice", "reasoning"}), "choice", _check_choice)


@dataclass(frozen=True)
class ParsedReply:
    status: str  # scored | unscored
    reason: str | None = None
    detail: str | None = None
    parsed: dict[str, Any] | None = None


_REFUSAL = re.compile(
    r"(?i)\b(?:i(?:'|’)?m\s+sorry|i\s+am\s+sorry|i\s+apologi[sz]e|"
    r"i\s*(?:can(?:not|'t|’t)|won(?:'|’)t|am\s+unable|(?:'|’)m\s+unable|am\s+not\s+able|(?:'|’)m\s+not\s+able)\s+"
    r"(?:to\s+)?(?:help|assist|evaluate|comply|provide|do|rate|score|analy[sz]e|process|view|see|identify|fulfil)|"
    r"unable\s+to\s+(?:help|assist|comply|evaluate))"
)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _json_objects(text: str) -> list[dict[str, Any]]:
    """Every top-level JSON object in ``text`` (bare, inside ``` fences or surrounded by prose)."""
    decoder = json.JSONDecoder(parse_constant=_reject_constant)
    found: list[dict[str, Any]] = []
    i = text.find("{")
    while i != -1:
        try:
            obj, end = decoder.raw_decode(text, i)
        except ValueError:
            i = text.find("{", i + 1)
            continue
        if isinstance(obj, dict):
            found.append(obj)
        i = text.find("{", end)
    return found


def parse_reply(text: str | None, contract: OutputContract, *, finish_reason: str | None = None,
                refusal: str | None = None) -> ParsedReply:
    """The judge's answer if ``text`` holds exactly one answer object of the contract's shape; otherwise
    unscored with the reason. Never a default or random score."""
    if finish_reason == "content_filter":
        return ParsedReply("unscored", "content_filter", "the reply was stopped by the provider's content filter")
    if refusal and refusal.strip():
        return ParsedReply("unscored", "refused", _short(refusal, 200))
    if text is None or not text.strip():
        if finish_reason == "length":
            return ParsedReply("unscored", "truncated", "the reply hit max_tokens before any text")
        return ParsedReply("unscored", "empty", "the reply had no text")
    objects = _json_objects(text)
    answers = [o for o in objects if contract.marker in o]
    if not answers:
        if objects:
            return ParsedReply("unscored", "wrong_shape", f"JSON without {contract.marker!r}: {_short(objects[0])}")
        if _REFUSAL.search(text):
            return ParsedReply("unscored", "refused", _short(text, 200))
        if finish_reason == "length":
            return ParsedReply("unscored", "truncated", "the reply hit max_tokens before the JSON was complete")
        return ParsedReply("unscored", "unparseable", f"no JSON object in the reply: {_short(text, 120)}")
    distinct = {json.dumps(o, sort_keys=True) for o in answers}
    if len(distinct) > 1:
        return ParsedReply("unscored", "ambiguous", f"{len(distinct)} different answer objects in one reply")
    obj = answers[0]
    if set(obj) != contract.keys:
        return ParsedReply("unscored", "wrong_shape",
                           f"expected exactly the keys {sorted(contract.keys)}, got {sorted(obj)}")
    clean, reason, detail = contract.check(obj)
    if clean is None:
        return ParsedReply("unscored", reason, detail)
    return ParsedReply("scored", None, None, clean)


def _short(value: Any, n: int = 80) -> str:
    s = value if isinstance(value, str) else json.dumps(value, default=str)
    s = " ".join(s.split())
    return s if len(s) <= n else s[: n - 1] + "…"


# ---- image encoding -----------------------------------------------------------------------------
_ENCODING = re.compile(r"^(?:jpeg-q(?P<q>\d{1,3})|png)-max(?P<max>\d{2,5})$")


@dataclass(frozen=True)
class ImageEncoding:
    """How images are re-encoded before sending (pinned: it changes scores). See :class:`JudgeConfig`."""

    fmt: str  # JPEG | PNG
    quality: int | None
    max_side_px: int

    @classmethod
    def parse(cls, spec: str) -> ImageEncoding:
        m = _ENCODING.match(spec or "")
        if not m or (m["q"] is not None and not 1 <= int(m["q"]) <= 100):
            raise InvalidInputError(
                f"unknown judge image encoding {spec!r}",
                hint="use 'jpeg-q<1-100>-max<pixels>' (e.g. jpeg-q90-max1024) or 'png-max<pixels>'",
            )
        return cls("JPEG" if m["q"] else "PNG", int(m["q"]) if m["q"] else None, int(m["max"]))

    def load(self, data: bytes, what: str) -> Image.Image:
        """Decode untrusted bytes safely into RGB (EXIF orientation applied, alpha on white).
        Raises :class:`ImageError` naming the image."""
        try:
            return to_rgb(decode_output(data))
        except ImageError as exc:
            raise ImageError(f"the {what} image cannot be judged: {exc.message}", hint=exc.hint) from None
        except (OSError, ValueError, SyntaxError) as exc:
            raise ImageError(f"the {what} image cannot be judged ({type(exc).__name__}: {exc})",
                             hint="re-export or re-download the image") from None

    def data_uri(self, img: Image.Image, size: tuple[int, int] | None = None) -> str:
        """``img`` resized to exactly ``size`` (when given), long side capped, encoded, as a data URI."""
        if size is not None and img.size != size:
            img = img.resize(size, Image.Resampling.LANCZOS)
        if max(img.size) > self.max_side_px:
            img = img.copy()
            img.thumbnail((self.max_side_px, self.max_side_px), Image.Resampling.LANCZOS)
        if self.fmt == "JPEG":
            out, mime = encode(img, "JPEG", quality=self.quality), "image/jpeg"
        else:
            out, mime = encode(img, "PNG"), "image/png"
        return f"data:{mime};base64,{base64.b64encode(out).decode('ascii')}"


# ---- configuration ------------------------------------------------------------------------------
_UNSET: Any = object()


def _is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class JudgeConfig:
    """Everything that pins a judge. ``version()`` is stored with every score it produces.

    ``image_encoding`` — how each image is re-encoded before sending, ``jpeg-q<Q>-max<M>`` or
    ``png-max<M>``; the default ``jpeg-q90-max1024`` means, in this order:

    1. decode with :func:`evalkit.images.decode_output` (header-checked, fully decoded), apply the JPEG
       EXIF orientation and composite any transparency on white (:func:`evalkit.images.to_rgb`);
    2. VIEScore only: resize the edited image to the source image's exact pixel size (Pillow LANCZOS,
       aspect ratio not preserved), as GEdit-Bench does before judging;
    3. downscale (LANCZOS, aspect ratio kept, never upscaled) so the longer side is ≤ 1024 px;
    4. encode as baseline JPEG, quality 90, Pillow's default 4:2:0 chroma subsampling, no EXIF/ICC;
       send as ``data:image/jpeg;base64,…`` in an ``image_url`` part after the prompt text.

    ``temperature`` — 0.0 by default; ``None`` sends none (the API default; GEdit-Bench sends none).
    ``max_tokens`` — 1400 as in GEdit-Bench's GPT payload. ``timeout_s`` — read/write/pool timeout
    per request (``connect_timeout_s`` for opening the connection). ``max_attempts`` — attempts per
    request including the first (only proven-unprocessed failures are retried).
    ``usd_per_call_reserve`` — held back in the budget per request (see
    :data:`DEFAULT_USD_PER_CALL_RESERVE`). ``usd_per_1m_input_tokens`` / ``usd_per_1m_output_tokens``
    — the judge's prices; cost = reported usage × these, else unknown (``None``).
    """

    base_url: str
    model: str
    api_key: Secret | None = None
    image_encoding: str = DEFAULT_IMAGE_ENCODING
    temperature: float | None = 0.0
    max_tokens: int = 1400
    timeout_s: float = 120.0
    connect_timeout_s: float = 10.0
    max_attempts: int = 4
    usd_per_call_reserve: float = DEFAULT_USD_PER_CALL_RESERVE
    usd_per_1m_input_tokens: float | None = None
    usd_per_1m_output_tokens: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.api_key, str):
            object.__setattr__(self, "api_key", Secret(self.api_key, "EVALKIT_JUDGE_API_KEY") if self.api_key else None)
        elif self.api_key is not None and not isinstance(self.api_key, Secret):
            raise InvalidInputError("the judge api_key must be a string or evalkit.credentials.Secret")
        parts = urlsplit(self.base_url or "")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidInputError(
                f"judge base_url {self.base_url!r} is not an http(s) URL",
                hint="set EVALKIT_JUDGE_BASE_URL to the API root, e.g. https://api.openai.com/v1",
            )
        object.__setattr__(self, "base_url", self.base_url.rstrip("/"))
        if not isinstance(self.model, str) or not self.model.strip():
            raise InvalidInputError("no judge model given",
                                    hint="set EVALKIT_JUDGE_MODEL to a pinned snapshot, e.g. gpt-4.1-2025-04-14")
        ImageEncoding.parse(self.image_encoding)
        if self.temperature is not None and not 0.0 <= float(self.temperature) <= 2.0:
            raise InvalidInputError(f"judge temperature must be within 0–2 or None, got {self.temperature!r}")
        if not isinstance(self.max_tokens, int) or self.max_tokens < 1:
            raise InvalidInputError(f"judge max_tokens must be a positive integer, got {self.max_tokens!r}")
        if not self.timeout_s > 0 or not self.connect_timeout_s > 0:
            raise InvalidInputError("judge timeouts must be > 0 seconds")
        if not isinstance(self.max_attempts, int) or self.max_attempts < 1:
            raise InvalidInputError(f"judge max_attempts must be ≥ 1, got {self.max_attempts!r}")
        for name in ("usd_per_call_reserve", "usd_per_1m_input_tokens", "usd_per_1m_output_tokens"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, (int, float)) or v < 0 or not math.isfinite(v)):
                raise InvalidInputError(f"judge {name} must be a number ≥ 0, got {v!r}")
        if self.usd_per_1m_output_tokens is not None:
            worst_output_usd = self.max_tokens * self.usd_per_1m_output_tokens / 1e6
            if worst_output_usd > self.usd_per_call_reserve + 1e-12:
                raise InvalidInputError(
                    f"usd_per_call_reserve ${self.usd_per_call_reserve:.4f} is below the worst-case output cost "
                    f"${worst_output_usd:.4f} (max_tokens {self.max_tokens} × ${self.usd_per_1m_output_tokens}/1M)",
                    hint="raise usd_per_call_reserve (it must cover the most a request can cost) or lower max_tokens",
                )

    @classmethod
    def from_env(cls, **overrides: Any) -> JudgeConfig:
        """From ``EVALKIT_JUDGE_BASE_URL`` (default OpenAI's), ``EVALKIT_JUDGE_MODEL`` (required) and
        ``EVALKIT_JUDGE_API_KEY`` (required unless the base URL is loopback); keyword arguments win."""
        base_url = overrides.pop("base_url", None) or os.environ.get("EVALKIT_JUDGE_BASE_URL", "").strip() or DEFAULT_BASE_URL
        model = overrides.pop("model", None) or os.environ.get("EVALKIT_JUDGE_MODEL", "").strip()
        api_key = overrides.pop("api_key", _UNSET)
        if api_key is _UNSET:
            api_key = key_from_env("EVALKIT_JUDGE_API_KEY", required=not _is_loopback(base_url), provider="the judge")
        unknown = set(overrides) - set(cls.__dataclass_fields__)
        if unknown:
            raise InvalidInputError(f"unknown judge settings {sorted(unknown)}",
                                    hint=f"known: {', '.join(sorted(cls.__dataclass_fields__))}")
        return cls(base_url=base_url, model=model, api_key=api_key, **overrides)

    @property
    def encoding(self) -> ImageEncoding:
        return ImageEncoding.parse(self.image_encoding)

    def settings_tag(self) -> str:
        """Non-default sampling settings (they change scores), '' when all are the defaults."""
        tags = []
        if self.temperature is None:
            tags.append("temperature=none")
        elif self.temperature != 0.0:
            tags.append(f"temperature={self.temperature:g}")
        if self.max_tokens != 1400:
            tags.append(f"max_tokens={self.max_tokens}")
        return ",".join(tags)

    def prompt_version(self, mode: str = "viescore") -> str:
        if mode not in MODES:
            raise InvalidInputError(f"judge mode must be one of {', '.join(MODES)}, got {mode!r}")
        return VIESCORE_PROMPT_VERSION if mode == "viescore" else PAIRWISE_PROMPT_VERSION

    def version(self, mode: str = "viescore") -> str:
        """``<model>|<prompt version>|<image encoding>[|<non-default settings>]`` — stored with every score."""
        parts = [self.model, self.prompt_version(mode), self.image_encoding]
        tag = self.settings_tag()
        return "|".join([*parts, tag] if tag else parts)


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

    def __init__(self, config: JudgeConfig | None = None, *, transport: httpx.AsyncBaseTransport | None = None,
                 retry_policy: RetryPolicy | None = None, **overrides: Any):
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
        return f"Judge(model={self.config.model!r}, base_url={self.config.base_url!r}, version={self.config.version()!r})"

    async def __aenter__(self) -> Judge:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    # -- public single-item API --------------------------------------------------------------
    async def viescore(self, source: bytes, edited: bytes, instruction: str | None, *,
                       cache: Workspace | None = None, budget: Budget | None = None,
                       retry_unscored: bool | Collection[str] = False) -> VIEScoreResult:
        """VIEScore of one edit (SC needs an ``instruction``; without one only PQ is judged). ``cache``
        (a Workspace) reuses and stores answers; ``budget`` caps spending. Raises :class:`ImageError`
        when an image cannot be decoded."""
        return await self._viescore(source, edited, instruction, cache=cache, gate=_Gate(budget),
                                    retry_unscored=retry_unscored)

    async def pairwise(self, source: bytes, left: bytes, right: bytes, instruction: str, *, rng: random.Random,
                       cache: Workspace | None = None, budget: Budget | None = None,
                       retry_unscored: bool | Collection[str] = False) -> PairwiseResult:
        """Which of two edits better follows ``instruction`` while preserving the rest. The side shown
        first is drawn from ``rng`` and recorded; the verdict comes back as left / right / tie."""
        left_first = rng.random() < 0.5
        return await self._pairwise(source, left, right, instruction, left_first=left_first, cache=cache,
                                    gate=_Gate(budget), retry_unscored=retry_unscored)

    # -- cache keys ---------------------------------------------------------------------------
    def cache_key(self, mode: str, image_sha256: Iterable[str], instruction: str | None) -> str:
        """sha256 of (judge model, prompt version, mode, image encoding, sampling settings, image
        hashes, instruction)."""
        c = self.config
        prompt_version = VIESCORE_PROMPT_VERSION if mode.startswith("viescore") else PAIRWISE_PROMPT_VERSION
        payload = json.dumps([c.model, prompt_version, mode, c.image_encoding, c.settings_tag(), list(image_sha256),
                              instruction or ""], ensure_ascii=False)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()

    # -- internals ------------------------------------------------------------------------------
    async def _viescore(self, source: bytes, edited: bytes, instruction: str | None, *, cache: Workspace | None,
                        gate: _Gate, retry_unscored: bool | Collection[str]) -> VIEScoreResult:
        instruction = (instruction or "").strip() or None
        src_sha, edit_sha = hashlib.sha256(source).hexdigest(), hashlib.sha256(edited).hexdigest()
        # PQ sees the edited image resized to the source size, so the source is part of its key too.
        sc_key = self.cache_key("viescore_sc", [src_sha, edit_sha], instruction) if instruction else None
        pq_key = self.cache_key("viescore_pq", [src_sha, edit_sha], None)

        images: dict[str, list[str]] = {}

        async def encoded() -> dict[str, list[str]]:
            if not images:
                def work() -> dict[str, list[str]]:
                    enc = self._encoding
                    src = enc.load(source, "source")
                    edited_uri = enc.data_uri(enc.load(edited, "edited"), size=src.size)  # as GEdit: source size
                    return {"sc": [enc.data_uri(src), edited_uri], "pq": [edited_uri]}
                images.update(await asyncio.to_thread(work))
            return images

        sc_reply = None
        if sc_key is not None:
            sc_reply = await self._judged(
                "viescore_sc", sc_key, cache, gate, retry_unscored,
                lambda: self._ask_images("viescore_sc", VIESCORE_SC_PROMPT.replace("<instruction>", instruction or ""),
                                         encoded, "sc", SCORE_CONTRACT))
        pq_reply = None
        if not (sc_reply is not None and sc_reply.reason == "budget"):
            pq_reply = await self._judged("viescore_pq", pq_key, cache, gate, retry_unscored,
                                          lambda: self._ask_images("viescore_pq", VIESCORE_PQ_PROMPT, encoded, "pq",
                                                                   SCORE_CONTRACT))
        return _reduce_viescore(sc_reply, pq_reply, sc_applies=instruction is not None)

    async def _pairwise(self, source: bytes, left: bytes, right: bytes, instruction: str, *, left_first: bool,
                        cache: Workspace | None, gate: _Gate,
                        retry_unscored: bool | Collection[str]) -> PairwiseResult:
        instruction = (instruction or "").strip()
        if not instruction:
            raise InvalidInputError("pairwise judging needs an instruction",
                                    hint="pass the edit prompt (or a description of the operation)")
        src_sha = hashlib.sha256(source).hexdigest()
        l_sha, r_sha = hashlib.sha256(left).hexdigest(), hashlib.sha256(right).hexdigest()
        # The pair is unordered in the key: a re-run in the other display order reuses the answer.
        key = self.cache_key("pairwise", [src_sha, *sorted((l_sha, r_sha))], instruction)
        first, second = (left, right) if left_first else (right, left)
        order = (hashlib.sha256(first).hexdigest(), hashlib.sha256(second).hexdigest())
        holder: dict[str, list[str]] = {}

        async def encoded() -> dict[str, list[str]]:
            if not holder:
                def work() -> dict[str, list[str]]:
                    enc = self._encoding
                    return {"pair": [enc.data_uri(enc.load(source, "source")),
                                     enc.data_uri(enc.load(first, "first candidate")),
                                     enc.data_uri(enc.load(second, "second candidate"))]}
                holder.update(await asyncio.to_thread(work))
            return holder

        reply = await self._judged(
            "pairwise", key, cache, gate, retry_unscored,
            lambda: self._ask_images("pairwise", PAIRWISE_PROMPT.replace("<instruction>", instruction), encoded, "pair",
                                     CHOICE_CONTRACT, order=order))
        # A cached answer may have been given in the other order: map through the order it was asked in.
        asked = reply.order or order
        shown_first = "left" if asked[0] == l_sha else "right"
        if reply.status != "scored" or not reply.parsed:
            return PairwiseResult("unscored", reply.reason, shown_first=shown_first, reply=reply, detail=reply.detail)
        verdict = reply.parsed["choice"]
        other = "right" if shown_first == "left" else "left"
        choice = "tie" if verdict == "tie" else (shown_first if verdict == "A" else other)
        return PairwiseResult("scored", None, choice=choice, shown_first=shown_first, verdict=verdict,
                              reasoning=reply.parsed.get("reasoning"), reply=reply)

    async def _judged(self, mode: str, key: str, cache: Workspace | None, gate: _Gate,
                      retry_unscored: bool | Collection[str], ask: Callable[[], Any]) -> JudgeReply:
        """A cached answer when there is one (and it is not to be retried), else a new request under
        the budget; answers worth keeping are stored."""
        if cache is not None:
            record = cache.judge_cache_get(key)
            if record is not None and not _wants_retry(record, retry_unscored):
                return _reply_from_cache(mode, key, record)
        if gate.stopped:
            return JudgeReply(mode, key, "unscored", "budget", "the judge budget was reached; not sent")
        reservation = None
        if gate.budget is not None:
            try:
                reservation = gate.budget.reserve(self.config.usd_per_call_reserve, key)
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
                gate.budget.settle(reservation, self.config.usd_per_call_reserve)  # type: ignore[union-attr]
            raise
        if reservation is not None:
            # unknown cost (no usage, or an unknown outcome) keeps the whole reservation counted
            gate.budget.settle(reservation, self.config.usd_per_call_reserve if reply.cost_usd is None  # type: ignore[union-attr]
                               else reply.cost_usd)
        if cache is not None and reply.reason not in _TRANSIENT_REASONS:
            cache.judge_cache_put(_cache_record(self.config, reply))
        return reply

    async def _ask_images(self, mode: str, prompt: str, encoded: Callable[[], Any], which: str,
                          contract: OutputContract, order: tuple[str, str] | None = None) -> JudgeReply:
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
        return await self._complete(mode, body, contract, order)

    async def _complete(self, mode: str, body: dict[str, Any], contract: OutputContract,
                        order: tuple[str, str] | None) -> JudgeReply:
        """POST /chat/completions with retries on proven-unprocessed failures; never raises for HTTP."""
        payload = json.dumps(body).encode("utf-8")
        base = {"mode": mode, "key": "", "order": order}
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
                    log.info("judge: cannot connect (%s); retrying in %.2f s (attempt %d/%d)",
                             type(exc).__name__, wait_s, attempt, self.retry_policy.max_attempts)
                    await asyncio.sleep(wait_s)
                    continue
                return JudgeReply(**base, status="unscored", reason="connect", cost_usd=0.0, attempts=attempt, sent=False,
                                  detail=self._redact(f"cannot connect to the judge at {self.config.base_url}: "
                                                      f"{type(exc).__name__}"))
            except httpx.TimeoutException as exc:
                return JudgeReply(**base, status="unscored", reason="timeout", cost_usd=None, attempts=attempt, sent=True,
                                  latency_ms=_ms(started),
                                  detail=f"no reply within {self.config.timeout_s:g} s ({type(exc).__name__}); "
                                         "the request may have been processed, so it is not re-sent")
            except httpx.TransportError as exc:
                return JudgeReply(**base, status="unscored", reason="network", cost_usd=None, attempts=attempt, sent=True,
                                  latency_ms=_ms(started),
                                  detail=self._redact(f"the connection broke after sending ({type(exc).__name__}); "
                                                      "outcome unknown, not re-sent"))
            latency_ms = _ms(started)
            status = resp.status_code
            text = self._redact(resp.text)
            if status in (408, 429) or status >= 500:
                if attempt < self.retry_policy.max_attempts:
                    retry_after = parse_retry_after(resp.headers.get("Retry-After"))
                    wait_s = self.retry_policy.backoff_s(attempt, retry_after)
                    log.info("judge: HTTP %d; retrying in %.2f s (attempt %d/%d)", status, wait_s, attempt,
                             self.retry_policy.max_attempts)
                    await asyncio.sleep(wait_s)
                    continue
                reason = "rate_limit" if status == 429 else "server"  # (408: the server gave up reading it)
                return JudgeReply(**base, status="unscored", reason=reason, raw=text, cost_usd=0.0, attempts=attempt,
                                  sent=True, http_status=status, latency_ms=latency_ms,
                                  detail=f"HTTP {status} after {attempt} attempt(s): {_error_message(text)}")
            if status >= 400:
                reason = "content_filter" if _is_content_filter(text) else ("auth" if status in (401, 403) else "bad_request")
                if reason != "content_filter":
                    log.warning("judge: HTTP %d from %s: %s", status, self.config.base_url, _error_message(text))
                return JudgeReply(**base, status="unscored", reason=reason, raw=text, cost_usd=0.0, attempts=attempt,
                                  sent=True, http_status=status, latency_ms=latency_ms,
                                  detail=f"HTTP {status}: {_error_message(text)}")
            return self._read_completion(base, text, contract, attempt, status, latency_ms)

    def _read_completion(self, base: dict[str, Any], text: str, contract: OutputContract, attempt: int,
                         status: int, latency_ms: float) -> JudgeReply:
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
            return JudgeReply(**common, status="unscored", reason="bad_response", raw=_short(text, 2000), cost_usd=None,
                              detail="the reply is not an OpenAI chat completion")
        usage = _usage(data.get("usage"))
        cost = self._cost(usage)
        finish_reason = choice.get("finish_reason")
        refusal = message.get("refusal") if isinstance(message.get("refusal"), str) else None
        content = self._redact(content) if content is not None else None
        parsed = parse_reply(content, contract, finish_reason=finish_reason, refusal=self._redact(refusal))
        if parsed.status != "scored":
            log.debug("judge: unscored (%s): %s", parsed.reason, parsed.detail)
        return JudgeReply(**common, status=parsed.status, reason=parsed.reason, detail=parsed.detail, raw=content,
                          parsed=parsed.parsed, cost_usd=cost, finish_reason=finish_reason,
                          response_model=data.get("model") if isinstance(data.get("model"), str) else None,
                          system_fingerprint=data.get("system_fingerprint")
                          if isinstance(data.get("system_fingerprint"), str) else None,
                          usage=usage)

    def _cost(self, usage: dict[str, int] | None) -> float | None:
        c = self.config
        if usage is None or c.usd_per_1m_input_tokens is None or c.usd_per_1m_output_tokens is None:
            return None
        return (usage["prompt_tokens"] * c.usd_per_1m_input_tokens + usage["completion_tokens"] * c.usd_per_1m_output_tokens) / 1e6

    def _redact(self, text: str | None) -> str:
        return redact(text, self.config.api_key)


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0


def _usage(raw: Any) -> dict[str, int] | None:
    if not isinstance(raw, Mapping):
        return None
    p, c = raw.get("prompt_tokens"), raw.get("completion_tokens")
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (p, c)):
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
    return retry_unscored is True or record.get("reason") in retry_unscored  # type: ignore[operator]


def _cache_record(config: JudgeConfig, reply: JudgeReply) -> dict[str, Any]:
    meta = {k: getattr(reply, k) for k in ("detail", "finish_reason", "response_model", "system_fingerprint", "usage",
                                           "http_status", "attempts")}
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
    return JudgeReply(mode=mode, key=key, status=record["status"], reason=record.get("reason"),
                      detail=meta.get("detail"), raw=record.get("reply_raw"), parsed=envelope.get("judge"),
                      cost_usd=0.0, latency_ms=record.get("latency_ms"), cached=True, sent=False,
                      attempts=0, http_status=meta.get("http_status"), finish_reason=meta.get("finish_reason"),
                      response_model=meta.get("response_model"), system_fingerprint=meta.get("system_fingerprint"),
                      usage=meta.get("usage"), order=tuple(order) if order else None)


def _reduce_viescore(sc_reply: JudgeReply | None, pq_reply: JudgeReply | None, *, sc_applies: bool) -> VIEScoreResult:
    """SC = min(SC scores), PQ = min(PQ scores), O = sqrt(SC × PQ) (GEdit-Bench / VIEScore). A part that
    was never asked (``None``: the budget stopped it) makes the item unscored with reason "budget"."""
    es = oe = nat = art = sc = pq = o = None
    if sc_reply is not None and sc_reply.status == "scored" and sc_reply.parsed:
        es, oe = (float(v) for v in sc_reply.parsed["score"])
        sc = min(es, oe)
    if pq_reply is not None and pq_reply.status == "scored" and pq_reply.parsed:
        nat, art = (float(v) for v in pq_reply.parsed["score"])
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
    return VIEScoreResult("scored" if reason is None else "unscored", reason, sc=sc, pq=pq, o=o, editing_success=es,
                          over_editing=oe, naturalness=nat, artifacts=art, sc_reply=sc_reply, pq_reply=pq_reply,
                          sc_applies=sc_applies, detail=detail)


# ---- batch scoring over a run -------------------------------------------------------------------
@dataclass
class JudgeSummary:
    """What a :func:`judge_run` did."""

    run_id: str
    mode: str
    version: str
    items: int = 0  # calls (viescore) or pairs (pairwise) considered
    scored: int = 0
    unscored: int = 0
    skipped_budget: int = 0  # items not (fully) judged because the cap was reached
    pq_only: int = 0  # viescore items without SC (no instruction / operation without one)
    requests_sent: int = 0
    requests_cached: int = 0
    cost_usd: float = 0.0  # known cost of the requests sent
    cost_unknown_requests: int = 0
    budget_usd: float | None = None
    stopped_by_budget: bool = False
    ratings_written: int = 0
    ratings_existing: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        parts = [f"judge {self.mode} on run {self.run_id} ({self.version}): {self.items} item(s), {self.scored} scored, "
                 f"{self.unscored} unscored"]
        if self.reasons:
            parts.append("(" + ", ".join(f"{k}: {v}" for k, v in sorted(self.reasons.items())) + ")")
        parts.append(f"; {self.requests_sent} request(s) sent, {self.requests_cached} from cache; cost ${self.cost_usd:.4f}")
        if self.cost_unknown_requests:
            parts.append(f" + {self.cost_unknown_requests} request(s) of unknown cost")
        if self.stopped_by_budget:
            parts.append(f"; stopped at the ${self.budget_usd:.4f} budget ({self.skipped_budget} item(s) not judged)")
        if self.mode == "pairwise":
            parts.append(f"; {self.ratings_written} rating(s) written")
        return "".join(parts)


async def judge_run(ws: Workspace, run_id: str, judge: Judge, *, mode: str = "viescore", concurrency: int = 4,
                    budget_usd: float | None = None, pairs_per_case: int | None = None, seed: int = 0,
                    progress: bool = True, retry_unscored: bool | Collection[str] = False) -> JudgeSummary:
    """Judge every completed call of a run (``viescore``: scores via ``ws.put_scores``) or pairs of
    completed calls of different models per case (``pairwise``: ratings via ``ws.add_rating``).

    Cached answers (any run, same judge version and images) are reused without a request; ``budget_usd``
    caps what new requests may cost (nothing is sent once the cap would be crossed); ``concurrency``
    bounds items in flight. ``pairs_per_case`` picks that many pairs per case, spread so every model
    appears about equally often over the run (default: all pairs); ``seed`` drives that choice and the
    display order. ``retry_unscored`` re-requests cached unscored answers (True, or a set of reasons such
    as ``{"timeout"}``) — a deliberate decision to pay again.
    """
    if mode not in MODES:
        raise InvalidInputError(f"judge mode must be one of {', '.join(MODES)}, got {mode!r}")
    if not isinstance(concurrency, int) or concurrency < 1:
        raise InvalidInputError(f"concurrency must be an integer ≥ 1, got {concurrency!r}")
    if budget_usd is not None and (not isinstance(budget_usd, (int, float)) or budget_usd < 0):
        raise InvalidInputError(f"budget_usd must be ≥ 0, got {budget_usd!r}")
    if pairs_per_case is not None and (not isinstance(pairs_per_case, int) or pairs_per_case < 1):
        raise InvalidInputError(f"pairs_per_case must be an integer ≥ 1, got {pairs_per_case!r}")
    ws.get_run(run_id)  # a clear error for an unknown run
    summary = JudgeSummary(run_id, mode, judge.config.version(mode), budget_usd=budget_usd)
    gate = _Gate(Budget(budget_usd))
    batch = _Batch(ws, run_id, judge, gate, summary, retry_unscored)
    if mode == "viescore":
        jobs = batch.viescore_jobs()
    else:
        jobs = batch.pairwise_jobs(pairs_per_case, seed)
    summary.items = len(jobs) + summary.ratings_existing
    bar = _progress_bar(len(jobs), f"judge {mode} {run_id}") if progress else None
    sem = asyncio.Semaphore(concurrency)

    async def run_one(job: Callable[[], Any]) -> None:
        async with sem:
            await job()
        if bar is not None:
            bar.update(1)

    try:
        await asyncio.gather(*(run_one(j) for j in jobs))
    finally:
        if bar is not None:
            bar.close()
    summary.stopped_by_budget = gate.stopped
    return summary


def _progress_bar(total: int, desc: str) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="item", dynamic_ncols=True)


class _Batch:
    """The per-run work of :func:`judge_run`: building jobs, writing scores/ratings and the usage ledger."""

    def __init__(self, ws: Workspace, run_id: str, judge: Judge, gate: _Gate, summary: JudgeSummary,
                 retry_unscored: bool | Collection[str]):
        self.ws, self.run_id, self.judge, self.gate, self.summary = ws, run_id, judge, gate, summary
        self.retry_unscored = retry_unscored
        self.cases = _case_table(ws, run_id)
        self._sources: dict[str, bytes] = {}

    def source(self, case_id: str) -> bytes:
        if case_id not in self._sources:
            inputs, _ = self.ws.case_images(self.run_id, case_id)
            if not inputs:
                raise WorkspaceError(f"case {case_id!r} of run {self.run_id!r} has no input image")
            self._sources[case_id] = inputs[0]
        return self._sources[case_id]

    def completed_calls(self) -> list[dict[str, Any]]:
        return [c for c in self.ws.call_rows(self.run_id, ["completed"]) if c.get("output_sha256")]

    # -- viescore ------------------------------------------------------------------------------
    def viescore_jobs(self) -> list[Callable[[], Any]]:
        return [lambda call=call: self._viescore_one(call) for call in self.completed_calls()]

    async def _viescore_one(self, call: dict[str, Any]) -> None:
        case = self.cases.get(call["case_id"], {})
        operation = call.get("operation") or case.get("operation") or "general_edit"
        prompt = (case.get("prompt") or "").strip()
        instruction = prompt if operation in SC_OPERATIONS and prompt else None
        try:
            result = await self.judge._viescore(self.source(call["case_id"]), self.ws.output_image(call["call_id"]),
                                                instruction, cache=self.ws, gate=self.gate,
                                                retry_unscored=self.retry_unscored)
        except (ImageError, WorkspaceError, InvalidInputError) as exc:
            reason = "bad_image" if isinstance(exc, ImageError) else "missing_image"
            result = VIEScoreResult("unscored", reason, sc_applies=instruction is not None, detail=str(exc))
        self._account(result.replies, call_id=call["call_id"])
        if not result.sc_applies:
            self.summary.pq_only += 1
        if result.reason == "budget":
            self.summary.skipped_budget += 1
        else:
            self._count(result.status, result.reason)
        rows = _viescore_rows(self.run_id, call["call_id"], self.summary.version, result, operation,
                              no_instruction=not prompt)
        if rows:
            self.ws.put_scores(rows)

    # -- pairwise ------------------------------------------------------------------------------
    def pairwise_jobs(self, pairs_per_case: int | None, seed: int) -> list[Callable[[], Any]]:
        by_case: dict[str, dict[str, dict[str, Any]]] = {}
        for call in self.completed_calls():
            models = by_case.setdefault(call["case_id"], {})
            held = models.get(call["model_id"])
            if held is None or call["repeat"] < held["repeat"]:  # one output per model: its lowest repeat
                models[call["model_id"]] = call
        rater = f"judge:{self.judge.config.model}"
        existing = _existing_pairs(self.ws, self.run_id, rater, self.summary.version)
        rng = random.Random(seed)
        appearances: Counter[str] = Counter()
        jobs: list[Callable[[], Any]] = []
        for case_id in sorted(by_case):
            calls = by_case[case_id]
            pairs = _choose_pairs(sorted(calls), pairs_per_case, rng, appearances)
            for model_a, model_b in pairs:
                left, right = calls[model_a], calls[model_b]
                left_first = rng.random() < 0.5  # drawn in a fixed order, whatever the concurrency
                if (case_id, left["call_id"], right["call_id"]) in existing:
                    self.summary.ratings_existing += 1
                    self.summary.scored += 1
                    continue
                jobs.append(lambda c=case_id, lc=left, rc=right, lf=left_first: self._pairwise_one(c, lc, rc, lf, rater))
        return jobs

    async def _pairwise_one(self, case_id: str, left: dict[str, Any], right: dict[str, Any], left_first: bool,
                            rater: str) -> None:
        case = self.cases.get(case_id, {})
        operation = case.get("operation") or left.get("operation") or "general_edit"
        instruction = (case.get("prompt") or "").strip() or OPERATION_INSTRUCTIONS.get(operation, "")
        if not instruction:
            self._count("unscored", "no_instruction")
            return
        try:
            result = await self.judge._pairwise(
                self.source(case_id), self.ws.output_image(left["call_id"]), self.ws.output_image(right["call_id"]),
                instruction, left_first=left_first, cache=self.ws, gate=self.gate, retry_unscored=self.retry_unscored)
        except (ImageError, WorkspaceError, InvalidInputError) as exc:
            reason = "bad_image" if isinstance(exc, ImageError) else "missing_image"
            result = PairwiseResult("unscored", reason, detail=str(exc))
        if result.reply is not None:
            self._account([result.reply])
        if result.reason == "budget":
            self.summary.skipped_budget += 1
            return
        self._count(result.status, result.reason)
        if result.status != "scored":
            return
        detail = {"version": self.summary.version, "shown_first": result.shown_first, "verdict": result.verdict,
                  "reasoning": result.reasoning, "key": result.reply.key if result.reply else None,
                  "cached": bool(result.reply and result.reply.cached), "instruction": instruction}
        self.ws.add_rating(run_id=self.run_id, case_id=case_id, rater=rater, source="judge", kind="pair",
                           call_left=left["call_id"], call_right=right["call_id"], choice=result.choice,
                           detail=json.dumps(detail, ensure_ascii=False))
        self.summary.ratings_written += 1

    # -- accounting ----------------------------------------------------------------------------
    def _count(self, status: str, reason: str | None) -> None:
        if status == "scored":
            self.summary.scored += 1
        else:
            self.summary.unscored += 1
            self.summary.reasons[reason or "unknown"] = self.summary.reasons.get(reason or "unknown", 0) + 1

    def _account(self, replies: Iterable[JudgeReply], call_id: str | None = None) -> None:
        model = self.judge.config.model
        for r in replies:
            if r.cached:
                self.summary.requests_cached += 1
            if not r.sent:
                continue
            self.summary.requests_sent += 1
            if r.cost_usd is None:
                self.summary.cost_unknown_requests += 1
            else:
                self.summary.cost_usd += r.cost_usd
            self.ws.record_usage(model_id=model, operation=f"judge:{r.mode}", cost_usd=r.cost_usd,
                                 cost_source=r.cost_source, source="judge", run_id=self.run_id, call_id=call_id)


def _case_table(ws: Workspace, run_id: str) -> dict[str, dict[str, Any]]:
    df = ws.cases(run_id)
    if df.empty:
        return {}
    df = df.astype(object).where(df.notna(), None)  # a missing prompt is None, not NaN
    return {row["case_id"]: row for row in df.to_dict("records")}


def _existing_pairs(ws: Workspace, run_id: str, rater: str, version: str) -> set[tuple[str, str, str]]:
    df = ws.ratings(run_id, source="judge")
    out: set[tuple[str, str, str]] = set()
    for row in df.to_dict("records"):
        if row["rater"] != rater or row["kind"] != "pair":
            continue
        try:
            v = json.loads(row["detail"] or "{}").get("version")
        except ValueError:
            continue
        if v == version:
            out.add((row["case_id"], row["call_left"], row["call_right"]))
    return out


def _choose_pairs(models: list[str], k: int | None, rng: random.Random, appearances: Counter[str]) -> list[tuple[str, str]]:
    """All pairs of ``models``, or ``k`` of them chosen so each model's appearance count over the run stays
    as even as possible (ties broken by a seeded shuffle)."""
    pairs = [(a, b) for i, a in enumerate(models) for b in models[i + 1:]]
    if k is None or k >= len(pairs):
        appearances.update(m for p in pairs for m in p)
        return pairs
    rng.shuffle(pairs)
    chosen: list[tuple[str, str]] = []
    for _ in range(k):
        best = min(pairs, key=lambda p: (appearances[p[0]] + appearances[p[1]], max(appearances[p[0]], appearances[p[1]])))
        pairs.remove(best)
        chosen.append(best)
        appearances.update(best)
    return chosen


def _viescore_rows(run_id: str, call_id: str, version: str, result: VIEScoreResult, operation: str,
                   *, no_instruction: bool) -> list[dict[str, Any]]:
    """Score rows for one call: a value for what was scored; value None + status "unscored" + reason for
    what was judged and failed; nothing for what the budget kept from being judged."""
    rows: list[dict[str, Any]] = []

    def add(metric: str, value: float | None, reply: JudgeReply | None, reason: str | None, detail: Any) -> None:
        if reason == "budget":
            return
        rows.append({"run_id": run_id, "call_id": call_id, "metric": metric, "source": "judge", "version": version,
                     "value": value, "status": "scored" if value is not None else "unscored",
                     "reason": None if value is not None else reason,
                     "detail": json.dumps(detail, ensure_ascii=False, default=str)})

    def info(reply: JudgeReply | None) -> dict[str, Any]:
        if reply is None:
            return {}
        return {"key": reply.key, "cached": reply.cached, "reasoning": (reply.parsed or {}).get("reasoning"),
                "detail": reply.detail, "response_model": reply.response_model}

    if result.reason in ("bad_image", "missing_image"):
        for m in VIESCORE_METRICS:
            add(m, None, None, result.reason, {"detail": result.detail})
        return rows
    sc, pq = result.sc_reply, result.pq_reply
    if all(r is None or r.reason == "budget" for r in (sc, pq)):
        return rows  # nothing was judged: no rows at all (a later run with more budget fills them in)
    if result.sc_applies:
        sc_reason = sc.reason if sc is not None else "budget"
        sc_info = info(sc)
    else:
        sc_reason = "no_instruction" if no_instruction else "not_applicable"
        sc_info = {"detail": f"VIEScore SC needs an edit instruction; operation {operation!r} gets PQ only"}
    for metric, value in zip(_SC_METRICS, (result.sc, result.editing_success, result.over_editing), strict=True):
        add(metric, value, sc, sc_reason, sc_info)
    pq_reason = pq.reason if pq is not None else "budget"
    for metric, value in zip(_PQ_METRICS, (result.pq, result.naturalness, result.artifacts), strict=True):
        add(metric, value, pq, pq_reason, info(pq))
    o_reason = sc_reason if result.sc is None else pq_reason
    add("viescore_o", result.o, None, o_reason,
        {"sc_key": sc.key if sc else None, "pq_key": pq.key if pq else None, "formula": "sqrt(SC*PQ)"})
    return rows


__all__ = [
    "CHOICE_CONTRACT",
    "DEFAULT_IMAGE_ENCODING",
    "DEFAULT_USD_PER_CALL_RESERVE",
    "ImageEncoding",
    "Judge",
    "JudgeConfig",
    "JudgeReply",
    "JudgeSummary",
    "OPERATION_INSTRUCTIONS",
    "OutputContract",
    "PAIRWISE_PROMPT",
    "PAIRWISE_PROMPT_VERSION",
    "PairwiseResult",
    "ParsedReply",
    "SCORE_CONTRACT",
    "SC_OPERATIONS",
    "VIESCORE_METRICS",
    "VIESCORE_PQ_PROMPT",
    "VIESCORE_PROMPT_VERSION",
    "VIESCORE_SC_PROMPT",
    "VIEScoreResult",
    "judge_run",
    "parse_reply",
]
