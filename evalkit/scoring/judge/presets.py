"""Judge presets: a pinned (model, prompts, image encoding, sampling) with what the literature says about
its agreement with people, so a quality column can say which judge made it and how far to trust it.

Select one with ``evalkit score --judge-preset NAME`` or ``EVALKIT_JUDGE_PRESET=NAME`` (or
``JudgeConfig.from_env(preset=NAME)``). Explicit settings win over the preset, the preset over the
environment; the endpoint (``EVALKIT_JUDGE_BASE_URL``) and key always come from the environment, so the
open-weights presets run against any OpenAI-compatible server (e.g. vLLM, see the README).

Every fact below carries its source; facts not verified against the primary source say so (``UNVERIFIED``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from evalkit.errors import InvalidInputError
from evalkit.scoring.judge.prompts import PROMPT_SETS

#: the image encoding every preset pins (a preset is a pin: it must not follow a changed default)
PINNED_IMAGE_ENCODING = "jpeg-q90-max1024"


@dataclass(frozen=True)
class LiteratureAgreement:
    """What the literature reports for this judge (or its nearest published relative)."""

    instance_spearman: float | None  # comparable with Agreement.instance_spearman (pooled over outputs)
    summary: str
    source: str


@dataclass(frozen=True)
class JudgePrice:
    """A judge model's published token prices (USD per 1M tokens), with where and when they were read."""

    usd_per_1m_input: float
    usd_per_1m_output: float
    source: str
    as_of: str  # the date the price was read (YYYY-MM-DD)
    confidence: str  # high | medium | low

    def describe(self) -> str:
        return (
            f"${self.usd_per_1m_input:g} / ${self.usd_per_1m_output:g} per 1M input / output tokens "
            f"({self.source}, read {self.as_of}, confidence {self.confidence})"
        )


@dataclass(frozen=True)
class JudgePreset:
    name: str
    title: str
    model: str
    prompt_set: str
    image_encoding: str
    temperature: float | None
    max_tokens: int
    expected: LiteratureAgreement
    notes: str = ""
    #: the model's token prices on its hosted API; None for open weights served by the user (set
    #: --judge-price / EVALKIT_JUDGE_USD_PER_1M_INPUT and _OUTPUT, or serve it on loopback: $0)
    price: JudgePrice | None = None

    def settings(self) -> dict[str, Any]:
        """The :class:`~evalkit.scoring.judge.config.JudgeConfig` fields this preset pins."""
        return {
            "model": self.model,
            "prompt_set": self.prompt_set,
            "image_encoding": self.image_encoding,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }

    @property
    def prompt_version(self) -> str:
        return PROMPT_SETS[self.prompt_set].version

    def describe(self) -> str:
        exp = self.expected
        figure = f"instance Spearman ≈ {exp.instance_spearman:.3f}" if exp.instance_spearman is not None else "none"
        price = self.price.describe() if self.price else "none published (self-hosted: set --judge-price)"
        return (
            f"{self.name}: {self.title} — model {self.model}, prompts {self.prompt_version}, images "
            f"{self.image_encoding}. Expected agreement with people: {figure} ({exp.summary}; {exp.source}). "
            f"Price: {price}"
        )


_VIESCORE_GPT4O = LiteratureAgreement(
    instance_spearman=0.589,
    summary=(
        "GPT-4o 0-shot VIEScore O vs the mean of 3 ImagenHub raters, pooled over 1,432 text-guided edits "
        "(paper protocol: 0.3821; human raters 0.4184); no figure is published for GPT-4.1 itself"
    ),
    source=(
        "VIEScore stored answers (TIGER-AI-Lab/VIEScore 2cbea4e) × ImagenHub ratings, recomputed by "
        "tests/scoring/test_agreement.py; table: https://tiger-ai-lab.github.io/VIEScore/"
    ),
)

JUDGE_PRESETS: dict[str, JudgePreset] = {
    p.name: p
    for p in (
        JudgePreset(
            name="gedit-gpt-4.1",
            title="GEdit-Bench's VIEScore with GPT-4.1 (evalkit's default)",
            model="gpt-4.1-2025-04-14",
            prompt_set="viescore",
            image_encoding=PINNED_IMAGE_ENCODING,
            temperature=0.0,
            max_tokens=1400,
            expected=_VIESCORE_GPT4O,
            price=JudgePrice(
                usd_per_1m_input=2.00,
                usd_per_1m_output=8.00,
                source=(
                    "OpenAI API pricing, standard tier (https://platform.openai.com/docs/pricing), as quoted "
                    "by several 2026 price trackers (losclouds.com, deploybase.ai, whichllm.io; the Batch API "
                    "halves both); OpenAI's page itself was not read here"
                ),
                as_of="2026-12-06",
                confidence="medium",
            ),
            notes=(
                "GEdit-Bench instantiates model_name='gpt-4.1' with max_tokens 1400 and no temperature "
                "(Step1X-Edit 570eba6); evalkit pins the dated snapshot and temperature 0. Maintainers report "
                "drift between April and June 2025 and ±0.1 same-day noise (Step1X-Edit#74)."
            ),
        ),
        JudgePreset(
            name="qwen2.5-vl-72b",
            title="Qwen2.5-VL-72B-Instruct with GEdit-Bench's VIEScore prompts, on an OpenAI-compatible server",
            model="Qwen/Qwen2.5-VL-72B-Instruct",
            prompt_set="viescore",
            image_encoding=PINNED_IMAGE_ENCODING,
            temperature=0.1,
            max_tokens=512,
            expected=LiteratureAgreement(
                instance_spearman=None,
                summary=(
                    "no published judge–human correlation on editing for this model; GEdit-Bench offers it as "
                    "the reproducible judge (its AWQ build, temperature 0.1, 512 new tokens) and a user "
                    "reported lower SC than GPT-4.1 with it (Step1X-Edit#74)"
                ),
                source="evaluation-anchors.md §1.1 and §3 (Step1X-Edit 570eba6, GEdit-Bench/viescore/mllm_tools)",
            ),
            notes="Set EVALKIT_JUDGE_BASE_URL to the server's /v1 root; a loopback server needs no key.",
        ),
        JudgePreset(
            name="editscore-7b",
            title="EditScore-7B (VectorSpaceLab): VIEScore rules, reasoning first, 0–25 scale",
            model="EditScore/EditScore-7B",
            prompt_set="editscore",
            image_encoding=PINNED_IMAGE_ENCODING,
            temperature=0.7,
            max_tokens=512,
            expected=LiteratureAgreement(
                instance_spearman=None,
                summary=(
                    "the EditScore paper reports pairwise accuracy on its EditReward-Bench, not a Spearman "
                    "against ImagenHub ratings; that figure was not read here (UNVERIFIED)"
                ),
                source="VectorSpaceLab/EditScore (editscore/__init__.py at 35ddc1a), arXiv 2509.23909",
            ),
            notes=(
                "Prompts and 0–25 range from editscore/__init__.py (score_range=25, temperature 0.7, "
                "scores ÷ 2.5). UNVERIFIED: that EditScore-7B is a LoRA on Qwen2.5-VL-7B-Instruct served under "
                "this name (the repo's vLLM backbone takes enable_lora/lora_path); upstream averages num_pass "
                "samples; `--judge-passes N` does the same in evalkit."
            ),
        ),
    )
}
DEFAULT_PRESET = "gedit-gpt-4.1"


def resolve_preset(name: str | None = None) -> JudgePreset | None:
    """The preset called ``name``, else ``EVALKIT_JUDGE_PRESET``, else None (no preset: plain settings)."""
    name = (name or os.environ.get("EVALKIT_JUDGE_PRESET", "")).strip()
    if not name:
        return None
    if name not in JUDGE_PRESETS:
        raise InvalidInputError(
            f"unknown judge preset {name!r}", hint=f"use one of {', '.join(JUDGE_PRESETS)} (evalkit score --help)"
        )
    return JUDGE_PRESETS[name]


def presets_help() -> str:
    """One paragraph per preset (for ``evalkit score --help`` and the report)."""
    return "\n\n".join(p.describe() for p in JUDGE_PRESETS.values())


def price_for_model(model: str) -> tuple[JudgePrice, str] | None:
    """The published price of a preset's model (and the preset's name) when ``model`` is that model."""
    for p in JUDGE_PRESETS.values():
        if p.price is not None and p.model == model:
            return p.price, p.name
    return None


__all__ = [
    "DEFAULT_PRESET",
    "JUDGE_PRESETS",
    "JudgePrice",
    "price_for_model",
    "JudgePreset",
    "LiteratureAgreement",
    "presets_help",
    "resolve_preset",
]
