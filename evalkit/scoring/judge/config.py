"""What pins a judge: :class:`JudgeConfig` (endpoint, model, sampling, timeouts, prices) and the
:class:`ImageEncoding` images are re-encoded with before sending.

Both change scores, so :meth:`JudgeConfig.version` — judge model, prompt version, image encoding and any
non-default sampling setting — is stored with every score and is part of every cache key
(:mod:`evalkit.scoring.judge.client`).
"""

from __future__ import annotations

import base64
import math
import os
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from PIL import Image

from evalkit.credentials import Secret, key_from_env
from evalkit.errors import ImageError, InvalidInputError
from evalkit.images import decode_output, encode, to_rgb
from evalkit.providers.http import is_loopback_url
from evalkit.scoring.judge.presets import (
    JUDGE_PRESETS,
    PINNED_IMAGE_ENCODING,
    JudgePreset,
    price_for_model,
    resolve_preset,
)
from evalkit.scoring.judge.prompts import PAIRWISE_PROMPT_VERSION, PROMPT_SETS

DEFAULT_IMAGE_ENCODING = PINNED_IMAGE_ENCODING
DEFAULT_BASE_URL = "https://api.openai.com/v1"

#: What the budget holds back per request when the judge's prices are unknown. Reasoning (an assumption,
#: not a quote: set your judge's prices instead): a GPT-4.1-class judge at ~$2 / 1M input and ~$8 / 1M
#: output tokens reading ≤ 3 images ≤ 1024 px (≈ 765 tokens each under OpenAI's 512-px tiling) plus ~600
#: prompt tokens (≈ 2.9k input ≈ $0.006) and writing at most max_tokens = 1400 tokens (≈ $0.011) costs at
#: most ≈ $0.017 per request; $0.02 leaves a margin. With known prices each request reserves its own
#: worst case instead (:meth:`JudgeConfig.worst_case_usd`).
DEFAULT_USD_PER_CALL_RESERVE = 0.02

#: environment variables that set the judge's prices (both or neither), USD per 1M tokens
PRICE_ENV = ("EVALKIT_JUDGE_USD_PER_1M_INPUT", "EVALKIT_JUDGE_USD_PER_1M_OUTPUT")
#: tokens a chat request spends besides its text and images (role markers, message framing), generously
_FRAMING_TOKENS = 64


def image_token_bound(width: int, height: int) -> int:
    """An upper bound on the input tokens one image of this size costs a VLM judge: the largest of OpenAI's
    high-detail tile count (fit in 2048², shorter side to 768, 85 + 170 per 512-px tile), OpenAI's 32-px
    patch count for the mini models (≤ 1536 patches × 1.62) and Qwen2-VL's 28-px patches (+2 markers)."""
    w, h = max(1, int(width)), max(1, int(height))
    scale = min(1.0, 2048 / max(w, h))
    tw, th = w * scale, h * scale
    scale = min(1.0, 768 / min(tw, th))
    tiles = math.ceil(tw * scale / 512) * math.ceil(th * scale / 512)
    patches = min(1536, math.ceil(w / 32) * math.ceil(h / 32))
    return max(85 + 170 * tiles, math.ceil(patches * 1.62), math.ceil(w / 28) * math.ceil(h / 28) + 2)


MODES = ("viescore", "pairwise")

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
            raise ImageError(
                f"the {what} image cannot be judged ({type(exc).__name__}: {exc})",
                hint="re-export or re-download the image",
            ) from None

    def sent_size(self, size: tuple[int, int]) -> tuple[int, int]:
        """The pixel size (rounded up) an image of ``size`` is sent at: the long side capped at ``max_side_px``."""
        w, h = size
        scale = min(1.0, self.max_side_px / max(w, h, 1))
        return math.ceil(w * scale), math.ceil(h * scale)

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
    ``usd_per_call_reserve`` — held back in the budget per request while the prices are unknown (see
    :data:`DEFAULT_USD_PER_CALL_RESERVE`). ``usd_per_1m_input_tokens`` / ``usd_per_1m_output_tokens``
    — the judge's prices; cost = reported usage × these, else unknown (``None``); ``price_source`` says
    where they came from (:meth:`from_env` fills both). ``seed`` — when set, pass k of an output sends
    ``seed + k - 1`` (reproducible passes that still differ from each other); part of the version.
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
    prompt_set: str = "viescore"  # the pointwise prompts: viescore (GEdit-Bench) | editscore (see presets)
    seed: int | None = None
    price_source: str | None = None

    def __post_init__(self) -> None:
        if self.prompt_set not in PROMPT_SETS:
            raise InvalidInputError(
                f"unknown judge prompt set {self.prompt_set!r}", hint=f"use one of {', '.join(PROMPT_SETS)}"
            )
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
            raise InvalidInputError(
                "no judge model given", hint="set EVALKIT_JUDGE_MODEL to a pinned snapshot, e.g. gpt-4.1-2025-04-14"
            )
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
        if (self.usd_per_1m_input_tokens is None) != (self.usd_per_1m_output_tokens is None):
            raise InvalidInputError(
                "the judge's input and output prices must be given together",
                hint="e.g. --judge-price 2/8 or EVALKIT_JUDGE_USD_PER_1M_INPUT=2 and EVALKIT_JUDGE_USD_PER_1M_OUTPUT=8",
            )
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise InvalidInputError(f"judge seed must be an integer or None, got {self.seed!r}")

    @classmethod
    def from_env(cls, **overrides: Any) -> JudgeConfig:
        """From ``EVALKIT_JUDGE_BASE_URL`` (default OpenAI's), ``EVALKIT_JUDGE_MODEL`` (required) and
        ``EVALKIT_JUDGE_API_KEY`` (required unless the base URL is loopback); keyword arguments win.
        ``preset=<name>`` (or ``EVALKIT_JUDGE_PRESET``) pins model, prompts, image encoding and sampling
        from :data:`evalkit.scoring.judge.presets.JUDGE_PRESETS`: keyword arguments > preset > environment."""
        preset = resolve_preset(overrides.pop("preset", None))
        if preset is not None:
            overrides = {**preset.settings(), **overrides}
        base_url = (
            overrides.pop("base_url", None) or os.environ.get("EVALKIT_JUDGE_BASE_URL", "").strip() or DEFAULT_BASE_URL
        )
        model = overrides.pop("model", None) or os.environ.get("EVALKIT_JUDGE_MODEL", "").strip()
        overrides.update(_resolve_prices(overrides, base_url, model))
        api_key = overrides.pop("api_key", _UNSET)
        if api_key is _UNSET:
            api_key = key_from_env(
                "EVALKIT_JUDGE_API_KEY", required=not is_loopback_url(base_url), provider="the judge"
            )
        unknown = set(overrides) - set(cls.__dataclass_fields__)
        if unknown:
            raise InvalidInputError(
                f"unknown judge settings {sorted(unknown)}",
                hint=f"known: {', '.join(sorted(cls.__dataclass_fields__))}",
            )
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
        if self.seed is not None:
            tags.append(f"seed={self.seed}")
        return ",".join(tags)

    @property
    def prices_known(self) -> bool:
        return self.usd_per_1m_input_tokens is not None and self.usd_per_1m_output_tokens is not None

    def cost_usd(self, prompt_tokens: int, completion_tokens: int) -> float | None:
        """What a request with this reported usage costs; None when the prices are unknown."""
        if not self.prices_known:
            return None
        return (
            prompt_tokens * self.usd_per_1m_input_tokens + completion_tokens * self.usd_per_1m_output_tokens  # type: ignore[operator]
        ) / 1e6

    def worst_case_usd(self, prompt_text: str, image_sizes: list[tuple[int, int]]) -> float:
        """The most one request can cost: with known prices, (an upper bound on its input tokens — UTF-8
        bytes of the text, :func:`image_token_bound` per image, framing) × input price + ``max_tokens`` ×
        output price; with unknown prices, ``usd_per_call_reserve``."""
        if not self.prices_known:
            return self.usd_per_call_reserve
        input_tokens = (
            len(prompt_text.encode("utf-8")) + _FRAMING_TOKENS + sum(image_token_bound(w, h) for w, h in image_sizes)
        )
        return self.cost_usd(input_tokens, self.max_tokens) or 0.0

    def prompt_version(self, mode: str = "viescore") -> str:
        if mode not in MODES:
            raise InvalidInputError(f"judge mode must be one of {', '.join(MODES)}, got {mode!r}")
        return PROMPT_SETS[self.prompt_set].version if mode == "viescore" else PAIRWISE_PROMPT_VERSION

    def version(self, mode: str = "viescore") -> str:
        """``<model>|<prompt version>|<image encoding>[|<non-default settings>]`` — stored with every score."""
        parts = [self.model, self.prompt_version(mode), self.image_encoding]
        tag = self.settings_tag()
        return "|".join([*parts, tag] if tag else parts)


def _resolve_prices(overrides: dict[str, Any], base_url: str, model: str) -> dict[str, Any]:
    """The judge's prices and where they came from: keyword arguments > ``EVALKIT_JUDGE_USD_PER_1M_INPUT`` /
    ``_OUTPUT`` > a loopback server ($0: it is the user's own machine) > the published price of a preset's
    model (when the configured model is that model) > unknown."""
    keys = ("usd_per_1m_input_tokens", "usd_per_1m_output_tokens")
    if any(k in overrides for k in keys):
        source = overrides.get("price_source") or "given"
        return {
            "usd_per_1m_input_tokens": overrides.get(keys[0]),
            "usd_per_1m_output_tokens": overrides.get(keys[1]),
            "price_source": source,
        }
    env = [os.environ.get(name, "").strip() for name in PRICE_ENV]
    if any(env):
        if not all(env):
            missing = [n for n, v in zip(PRICE_ENV, env, strict=True) if not v]
            raise InvalidInputError(
                f"{' and '.join(missing)} is not set, but the other judge price is",
                hint=f"set both {PRICE_ENV[0]} and {PRICE_ENV[1]} (USD per 1M tokens), or neither",
            )
        try:
            prices = [float(v) for v in env]
        except ValueError:
            raise InvalidInputError(
                f"{PRICE_ENV[0]}/{PRICE_ENV[1]} must be numbers (USD per 1M tokens), got {env[0]!r} / {env[1]!r}",
                hint="e.g. EVALKIT_JUDGE_USD_PER_1M_INPUT=2 EVALKIT_JUDGE_USD_PER_1M_OUTPUT=8",
            ) from None
        return {keys[0]: prices[0], keys[1]: prices[1], "price_source": "environment (EVALKIT_JUDGE_USD_PER_1M_*)"}
    if is_loopback_url(base_url):
        return {keys[0]: 0.0, keys[1]: 0.0, "price_source": "loopback server: $0"}
    published = price_for_model(model)
    if published is not None:
        price, preset = published
        return {
            keys[0]: price.usd_per_1m_input,
            keys[1]: price.usd_per_1m_output,
            "price_source": f"preset {preset}: {price.source}, read {price.as_of}, confidence {price.confidence}",
        }
    return {}


def parse_price_pair(text: str) -> tuple[float, float]:
    """``"IN/OUT"`` (USD per 1M input / output tokens, e.g. ``"2/8"``) → (2.0, 8.0)."""
    head, slash, tail = (text or "").partition("/")
    try:
        if not slash:
            raise ValueError
        pin, pout = float(head), float(tail)
    except ValueError:
        raise InvalidInputError(
            f"bad judge price {text!r}", hint="write IN/OUT in USD per 1M input/output tokens, e.g. --judge-price 2/8"
        ) from None
    if not (math.isfinite(pin) and math.isfinite(pout)) or pin < 0 or pout < 0:
        raise InvalidInputError(f"judge prices must be numbers ≥ 0, got {text!r}")
    return pin, pout


def preset_for_version(version: str | None) -> JudgePreset | None:
    """The preset whose pinned settings produce this stored judge version (model|prompts|encoding…)."""
    if not version:
        return None
    for p in JUDGE_PRESETS.values():
        cfg = JudgeConfig(base_url="http://127.0.0.1", **p.settings())
        if version in (cfg.version("viescore"), cfg.version("pairwise")):
            return p
    return None


__all__ = [
    "PRICE_ENV",
    "image_token_bound",
    "parse_price_pair",
    "preset_for_version",
    "DEFAULT_BASE_URL",
    "DEFAULT_IMAGE_ENCODING",
    "DEFAULT_USD_PER_CALL_RESERVE",
    "ImageEncoding",
    "JudgeConfig",
    "MODES",
]
