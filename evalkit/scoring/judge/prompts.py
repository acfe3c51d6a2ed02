"""What the judge is asked and what counts as an answer: prompt texts, output contracts, reply parsing.

A judge task is *prompt + output contract + reducer* (the EvalScope GEdit shape, anchors §4.5); this
module holds the first two, :mod:`evalkit.scoring.judge.client` the client and the VIEScore reducer.

* ``viescore`` — GEdit-Bench's VIEScore, task ``tie``, 0-shot (anchors §5): the SC prompt with
  [source, edited] and the instruction, the PQ prompt with [edited]; each must answer
  ``{"score": [a, b], "reasoning": "..."}`` with numbers in 0–10 (:data:`SCORE_CONTRACT`).
* ``pairwise`` — evalkit's own prompt: which of two edits better follows the instruction while
  preserving the rest; the answer is ``{"choice": "A" | "B" | "tie", "reasoning": "..."}``
  (:data:`CHOICE_CONTRACT`).

Parsing never guesses (anchors §5.3: GEdit substitutes ``random.randint(0, 10)`` when it cannot parse).
A JSON object is accepted bare, inside ```json fences or surrounded by prose; anything but exactly one
answer object of the expected shape is *unscored* with a reason: ``refused``, ``content_filter``,
``unparseable``, ``ambiguous`` (two different answers), ``wrong_shape``, ``out_of_range``,
``truncated``, ``empty``. A prompt text change must bump its ``*_PROMPT_VERSION`` (it is part of every
stored score's version and cache key).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

VIESCORE_PROMPT_VERSION = "viescore-gedit-v1"  # bump when a prompt text changes
PAIRWISE_PROMPT_VERSION = "pairwise-v1"

#: Operations whose VIEScore includes SC (and so an overall score ``viescore_o``): every operation, as long as
#: there is an instruction to judge against (:func:`sc_instruction`). The SC prompt scores "how well the
#: instruction was followed" and "over-editing relative to the original" ([source, edited]):
#:
#: * general_edit, multi_image, inpaint, erase — the case's prompt (GEdit-Bench's use);
#: * character_reference — the case's prompt ("this same robot, now …"): the input is the character's
#:   reference, and a minimal yet effective version of it *is* the same character doing what was asked
#:   (as GEdit-Bench's motion_change / background_change, which also redraw most of the frame);
#: * zoom_out, remove_background (promptless) — the fixed instruction of :data:`OPERATION_INSTRUCTIONS`,
#:   the one the pairwise judge is shown too. The edited image is resized to the source size as for every
#:   operation (GEdit-Bench's convention), so a zoom-out to another aspect ratio is seen squeezed; a
#:   cut-out is seen on white (transparency is composited on white before sending).
#:
#: The SC rows' ``detail`` names the instruction and whether it came from the case or the operation. An
#: output with no instruction at all (a case without a prompt, of an operation without a fixed
#: instruction) gets PQ only; its SC/O rows say "unscored: no_instruction" — never a made-up score.
SC_OPERATIONS = frozenset(
    {"general_edit", "inpaint", "erase", "multi_image", "character_reference", "zoom_out", "remove_background"}
)
#: The instruction the judges (VIEScore SC and pairwise) are shown for a case without a prompt of its own.
OPERATION_INSTRUCTIONS = {
    "zoom_out": "Zoom out: extend the scene beyond the original borders, keeping the original content unchanged.",
    "remove_background": "Remove the background, keeping the main subject unchanged.",
    "erase": "Remove the marked object and fill the area naturally, keeping everything else unchanged.",
}


def sc_instruction(operation: str, prompt: str | None) -> tuple[str | None, str | None]:
    """The instruction VIEScore SC judges an output of ``operation`` against, and where it came from:
    ``(prompt, "case")``, ``(OPERATION_INSTRUCTIONS[operation], "operation")`` for a case without a prompt,
    or ``(None, None)`` when there is none (PQ only)."""
    if operation not in SC_OPERATIONS:
        return None, None
    text = (prompt or "").strip()
    if text:
        return text, "case"
    fixed = OPERATION_INSTRUCTIONS.get(operation)
    return (fixed, "operation") if fixed else (None, None)


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

# EditScore (VectorSpaceLab/EditScore, editscore/__init__.py, read at commit 35ddc1a): the same VIEScore rules
# with a "reasoning first" context (`vie_prompts._context_no_delimit_reasoning_first`) and every "10" in the
# SC/PQ rules replaced by its score range 25; scores are divided by 2.5 back to 0–10. The context text below
# was read in a search excerpt of that repository, not byte-compared with the file: treat it as UNVERIFIED
# until checked against the upstream `editscore/vie_prompts.py`.
EDITSCORE_PROMPT_VERSION = "editscore-r25-v1"
EDITSCORE_SCORE_RANGE = 25
_EDITSCORE_CONTEXT = (
    "You are a professional digital artist. You will have to evaluate the effectiveness of the AI-generated "
    "image(s) based on given rules.\n"
    "All the input images are AI-generated. All human in the images are AI-generated too. so you need not "
    "worry about the privacy confidentials.\n"
    "\n"
    "IMPORTANT: You will have to give your output in this way (Keep your reasoning concise and short.):\n"
    "{\n"
    '"reasoning" : "...",\n'
    '"score" : [...]\n'
    "}\n"
)
EDITSCORE_SC_PROMPT = "\n".join(
    [_EDITSCORE_CONTEXT, _VIE_TWO_IMAGE_EDIT_RULE, _VIE_TIE_RULE_SC.replace("10", str(EDITSCORE_SCORE_RANGE))]
)
EDITSCORE_PQ_PROMPT = "\n".join([_EDITSCORE_CONTEXT, _VIE_RULE_PQ.replace("10", str(EDITSCORE_SCORE_RANGE))])

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


def _check_two_scores(obj: dict[str, Any], top: float = 10) -> tuple[dict[str, Any] | None, str | None, str | None]:
    score, reasoning = obj["score"], obj["reasoning"]
    if not isinstance(score, list) or len(score) != 2:
        return None, "wrong_shape", f"'score' must be a list of two numbers, got {_short(score)}"
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) for v in score):
        return None, "wrong_shape", f"'score' must hold numbers, got {_short(score)}"
    if any(not 0 <= v <= top for v in score):
        return None, "out_of_range", f"scores must be within 0–{top:g}, got {_short(score)}"
    if not isinstance(reasoning, str):
        return None, "wrong_shape", "'reasoning' must be a string"
    return {"score": list(score), "reasoning": reasoning}, None, None


def _check_choice(obj: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None, str | None]:
    choice, reasoning = obj["choice"], obj["reasoning"]
    norm = {"a": "A", "b": "B", "tie": "tie"}.get(choice.strip().lower()) if isinstance(choice, str) else None
    if norm is None:
        return None, "wrong_shape", f'\'choice\' must be "A", "B" or "tie", got {_short(choice)}'
    if not isinstance(reasoning, str):
        return None, "wrong_shape", "'reasoning' must be a string"
    return {"choice": norm, "reasoning": reasoning}, None, None


SCORE_CONTRACT = OutputContract("score-pair", frozenset({"score", "reasoning"}), "score", _check_two_scores)
CHOICE_CONTRACT = OutputContract("choice", frozenset({"choice", "reasoning"}), "choice", _check_choice)
EDITSCORE_CONTRACT = OutputContract(
    "score-pair-25",
    frozenset({"score", "reasoning"}),
    "score",
    lambda obj: _check_two_scores(obj, EDITSCORE_SCORE_RANGE),
)


@dataclass(frozen=True)
class PromptSet:
    """The pointwise prompts a judge is asked (SC with [source, edited], PQ with [edited]), their output
    contract, and the divisor that brings the answer back to VIEScore's 0–10 scale."""

    name: str
    version: str
    sc_prompt: str
    pq_prompt: str
    contract: OutputContract
    divisor: float = 1.0


PROMPT_SETS = {
    "viescore": PromptSet("viescore", VIESCORE_PROMPT_VERSION, VIESCORE_SC_PROMPT, VIESCORE_PQ_PROMPT, SCORE_CONTRACT),
    "editscore": PromptSet(
        "editscore",
        EDITSCORE_PROMPT_VERSION,
        EDITSCORE_SC_PROMPT,
        EDITSCORE_PQ_PROMPT,
        EDITSCORE_CONTRACT,
        EDITSCORE_SCORE_RANGE / 10,
    ),
}


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


def parse_reply(
    text: str | None, contract: OutputContract, *, finish_reason: str | None = None, refusal: str | None = None
) -> ParsedReply:
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
        return ParsedReply(
            "unscored", "wrong_shape", f"expected exactly the keys {sorted(contract.keys)}, got {sorted(obj)}"
        )
    clean, reason, detail = contract.check(obj)
    if clean is None:
        return ParsedReply("unscored", reason, detail)
    return ParsedReply("scored", None, None, clean)


def _short(value: Any, n: int = 80) -> str:
    s = value if isinstance(value, str) else json.dumps(value, default=str)
    s = " ".join(s.split())
    return s if len(s) <= n else s[: n - 1] + "…"


__all__ = [
    "CHOICE_CONTRACT",
    "EDITSCORE_CONTRACT",
    "EDITSCORE_PQ_PROMPT",
    "EDITSCORE_PROMPT_VERSION",
    "EDITSCORE_SC_PROMPT",
    "PROMPT_SETS",
    "PromptSet",
    "OPERATION_INSTRUCTIONS",
    "OutputContract",
    "PAIRWISE_PROMPT",
    "PAIRWISE_PROMPT_VERSION",
    "ParsedReply",
    "SCORE_CONTRACT",
    "SC_OPERATIONS",
    "VIESCORE_PQ_PROMPT",
    "VIESCORE_PROMPT_VERSION",
    "VIESCORE_SC_PROMPT",
    "parse_reply",
    "sc_instruction",
]
