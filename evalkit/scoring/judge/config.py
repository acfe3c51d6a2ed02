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
from evalkit.scoring.judge.presets import JUDGE_PRESETS, PINNED_IMAGE_ENCODING, JudgePreset, resolve_preset
from evalkit.scoring.judge.prompts import PAIRWISE_PROMPT_VERSION, PROMPT_SETS

DEFAULT_IMAGE_ENCODING = PINNED_IMAGE_ENCODING
DEFAULT_BASE_URL = "https://api.openai.com/v1"

#: What the budget holds back per request unless configured. Reasoning (an assumption, not a quote:
#: set your judge's own figure): a GPT-4.1-class judge at ~$2 / 1M input and ~$8 / 1M output tokens
#: reading ≤ 3 images ≤ 1024 px (≈ 765 tokens each under OpenAI's 512-px tiling) plus ~600 prompt
#: tokens (≈ 2.9k input ≈ $0.006) and writing at most max_tokens = 1400 tokens (≈ $0.011) costs at most
#: ≈ $0.017 per request; $0.02 leaves a margin.
DEFAULT_USD_PER_CALL_RESERVE = 0.02

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
    prompt_set: str = "viescore"  # the pointwise prompts: viescore (GEdit-Bench) | editscore (see presets)

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
        return ",".join(tags)

    def prompt_version(self, mode: str = "viescore") -> str:
        if mode not in MODES:
            raise InvalidInputError(f"judge mode must be one of {', '.join(MODES)}, got {mode!r}")
        return PROMPT_SETS[self.prompt_set].version if mode == "viescore" else PAIRWISE_PROMPT_VERSION

    def version(self, mode: str = "viescore") -> str:
        """``<model>|<prompt version>|<image encoding>[|<non-default settings>]`` — stored with every score."""
        parts = [self.model, self.prompt_version(mode), self.image_encoding]
        tag = self.settings_tag()
        return "|".join([*parts, tag] if tag else parts)


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
    "preset_for_version",
    "DEFAULT_BASE_URL",
    "DEFAULT_IMAGE_ENCODING",
    "DEFAULT_USD_PER_CALL_RESERVE",
    "ImageEncoding",
    "JudgeConfig",
    "MODES",
]
