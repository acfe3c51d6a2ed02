"""The pinned VLM judge: prompt + output contract + reducer (the shape of EvalScope's GEdit adapter).

* :mod:`~evalkit.scoring.judge.prompts` — prompt texts, output contracts, reply parsing;
* :mod:`~evalkit.scoring.judge.config` — ``JudgeConfig`` (model, endpoint, key from the environment, image encoding);
* :mod:`~evalkit.scoring.judge.client` — ``Judge``: one request with cache, budget and retries; VIEScore and pairwise;
* :mod:`~evalkit.scoring.judge.batch` — ``judge_run``: judge a whole run into the workspace (N passes per output);
* :mod:`~evalkit.scoring.judge.noise` — ``judge_noise``: the judge's spread between its passes;
* :mod:`~evalkit.scoring.judge.rows` — what a judgement becomes: score rows (pass means) and pass rows.
"""

from __future__ import annotations

from evalkit.scoring.judge.batch import MAX_PASSES, VIESCORE_METRICS, JudgeSummary, judge_run
from evalkit.scoring.judge.client import Judge, JudgeReply, PairwiseResult, VIEScoreResult
from evalkit.scoring.judge.config import (
    DEFAULT_BASE_URL,
    DEFAULT_IMAGE_ENCODING,
    DEFAULT_USD_PER_CALL_RESERVE,
    MODES,
    ImageEncoding,
    JudgeConfig,
)
from evalkit.scoring.judge.noise import JudgeNoise, NoiseFigure, judge_noise
from evalkit.scoring.judge.prompts import (
    CHOICE_CONTRACT,
    OPERATION_INSTRUCTIONS,
    PAIRWISE_PROMPT,
    PAIRWISE_PROMPT_VERSION,
    SC_OPERATIONS,
    SCORE_CONTRACT,
    VIESCORE_PQ_PROMPT,
    VIESCORE_PROMPT_VERSION,
    VIESCORE_SC_PROMPT,
    OutputContract,
    ParsedReply,
    parse_reply,
)

__all__ = [
    "CHOICE_CONTRACT",
    "DEFAULT_BASE_URL",
    "DEFAULT_IMAGE_ENCODING",
    "DEFAULT_USD_PER_CALL_RESERVE",
    "ImageEncoding",
    "Judge",
    "JudgeConfig",
    "JudgeNoise",
    "JudgeReply",
    "JudgeSummary",
    "MAX_PASSES",
    "MODES",
    "NoiseFigure",
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
    "judge_noise",
    "judge_run",
    "parse_reply",
]
