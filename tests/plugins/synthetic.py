"""A synthetic workspace with KNOWN numbers, for the analysis / tiers / viz / widgets tests.

Built only through the Workspace API (create_run, put_cases, insert_calls, finish_call, put_scores,
put_blob) — never through the runner — so every number a table shows can be checked by hand against
the constants below.

Run ``synth``: operations ``general_edit`` (cases g1–g8; categories ``color`` g1–g4, ``style`` g5–g8)
and ``erase`` (cases e1–e3, category ``object``). Models:

=========  ===========  ======  ================================================================
model      provider     price   behaviour
=========  ===========  ======  ================================================================
alpha      wavespeed    0.04    all completed; g8 served from the cache (cost_usd 0); also erase
beta       wavespeed    0.02    all completed; judge scores tie with alpha (not significantly worse)
gamma      wavespeed    0.15    all completed, slow; judge 9 on g1–g7 (significantly best), g8 unscored
delta      wavespeed    0.01    2 completed (g1, g2); g3–g5 timeout, g6 server, g7 unknown, g8 moderation
base       local        0.0     free baseline; all completed; also erase
mystery    huggingface  None    price unknown; all completed
=========  ===========  ======  ================================================================

beta, gamma, delta and mystery are not_applicable on erase. Each output image is a flat colour
unique to its call (``output_colour``) so a test can tell which call an image shows.
"""

from __future__ import annotations

import functools
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from evalkit.store import Workspace

RUN_ID = "synth"
MODELS = ["alpha", "beta", "gamma", "delta", "base", "mystery"]
PROVIDERS = {
    "alpha": "wavespeed",
    "beta": "wavespeed",
    "gamma": "wavespeed",
    "delta": "wavespeed",
    "base": "local",
    "mystery": "huggingface",
}
VENDORS = {
    "alpha": "Acme",
    "beta": "Acme",
    "gamma": "Globex",
    "delta": "Initech",
    "base": "evalkit",
    "mystery": "Umbrella",
}
PRICES = {"alpha": 0.04, "beta": 0.02, "gamma": 0.15, "delta": 0.01, "base": 0.0, "mystery": None}
GENERAL_CASES = [f"g{i}" for i in range(1, 9)]
ERASE_CASES = ["e1", "e2", "e3"]
CATEGORY = {
    **{c: "color" for c in GENERAL_CASES[:4]},
    **{c: "style" for c in GENERAL_CASES[4:]},
    **{c: "object" for c in ERASE_CASES},
}
ERASE_MODELS = ("alpha", "base")
AUTO_VERSION = "auto-1"
JUDGE_VERSION = "judge-v1"

# general_edit, per model, per case g1..g8 (None = that call did not complete)
TOTAL_MS = {
    "alpha": [1000, 1200, 1400, 1600, 1800, 2000, 2200, 5000],
    "beta": [800, 900, 1000, 1100, 1200, 1300, 1400, 1500],
    "gamma": [8000, 9000, 10000, 11000, 12000, 13000, 14000, 40000],
    "delta": [500, 700, None, None, None, None, None, None],
    "base": [10, 10, 10, 10, 10, 10, 10, 10],
    "mystery": [3000, 3000, 3000, 3000, 3000, 3000, 3000, 3000],
}
INFERENCE_MS = {
    "alpha": [600, 700, 800, 900, 1000, 1100, 1200, 3000],
    "beta": [500, 500, 600, 600, 700, 700, 800, 800],
    "gamma": [7000, 8000, 9000, 10000, 11000, 12000, 13000, 30000],
    "delta": [300, 400, None, None, None, None, None, None],
    "base": [5, 5, 5, 5, 5, 5, 5, 5],
    "mystery": [2000, 2000, 2000, 2000, 2000, 2000, 2000, 2000],
}
SSIM = {
    "alpha": [0.80, 0.82, 0.78, 0.85, 0.81, 0.79, 0.83, 0.84],
    "beta": [0.70, 0.72, 0.71, 0.69, 0.73, 0.70, 0.72, 0.71],
    "gamma": [0.90, 0.91, 0.92, 0.90, 0.93, 0.91, 0.92, 0.90],
    "delta": [0.50, 0.60, None, None, None, None, None, None],
    "base": [1.0] * 8,
    "mystery": [0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6],
}
JUDGE = {  # viescore_o, 0–10; gamma g8 is an unscored row (reply did not parse)
    "alpha": [7, 8, 7, 8, 7, 8, 7, 8],
    "beta": [7, 8, 7, 7, 7, 8, 7, 8],
    "gamma": [9, 9, 9, 9, 9, 9, 9, None],
    "delta": [6, 6, None, None, None, None, None, None],
    "base": [3] * 8,
    "mystery": [6, 6, 7, 6, 7, 6, 7, 6],
}
DELTA_FAILURES = {  # case -> (status, error_category)
    "g3": ("failed", "timeout"),
    "g4": ("failed", "timeout"),
    "g5": ("failed", "timeout"),
    "g6": ("failed", "server"),
    "g7": ("unknown", "unknown_outcome"),
    "g8": ("failed", "moderation"),
}
ERASE_TOTAL_MS = {"alpha": [2000, 2100, 2200], "base": [20, 20, 20]}
ERASE_INFERENCE_MS = {"alpha": [1500, 1600, 1700], "base": [10, 10, 10]}
ERASE_SSIM = {"alpha": [0.95, 0.94, 0.96], "base": [1.0, 1.0, 1.0]}


def call_id(model: str, case: str, repeat: int = 0) -> str:
    return f"{RUN_ID}-{case}-{model}-r{repeat}"


def output_colour(model: str, case: str) -> tuple[int, int, int]:
    """The flat colour of a call's output image (distinct per call, far apart per model)."""
    m = MODELS.index(model)
    c = (GENERAL_CASES + ERASE_CASES).index(case)
    return (30 + 40 * m, 20 + 20 * c, 200 - 30 * m)


def source_colour(case: str) -> tuple[int, int, int]:
    c = (GENERAL_CASES + ERASE_CASES).index(case)
    return (240 - 10 * c, 240, 10 + 10 * c)


def flat_png(colour: tuple[int, int, int], size: tuple[int, int] = (64, 48)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return buf.getvalue()


@functools.lru_cache(maxsize=256)
def textured_png(seed: int, size: tuple[int, int] = (256, 192)) -> bytes:
    """A gradient with noise: compresses like a photo, not like a flat colour (for size bounds)."""
    rng = np.random.default_rng(seed)
    w, h = size
    x = np.linspace(0, 1, w)[None, :, None]
    y = np.linspace(0, 1, h)[:, None, None]
    base = np.concatenate(
        [x * 255 * np.ones((h, 1, 1)), y * 255 * np.ones((1, w, 1)), (x + y) * 127 * np.ones((h, w, 1))], axis=2
    )
    arr = np.clip(base + rng.normal(0, 18, size=(h, w, 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr, "RGB").save(buf, format="PNG")
    return buf.getvalue()


@dataclass
class SyntheticRun:
    ws: Workspace
    run_id: str = RUN_ID
    models: list[str] = field(default_factory=lambda: list(MODELS))

    @property
    def path(self) -> Path:
        return self.ws.path


def _call_row(model: str, case: str, operation: str, status: str = "planned", reason: str | None = None) -> dict:
    return {
        "call_id": call_id(model, case),
        "run_id": RUN_ID,
        "case_id": case,
        "model_id": model,
        "provider": PROVIDERS[model],
        "operation": operation,
        "category": CATEGORY[case],
        "repeat": 0,
        "seed": 1,
        "status": status,
        "reason": reason,
        "price_usd": PRICES[model],
        "reserved_usd": PRICES[model] or 0.05,
    }


def build_synthetic_workspace(path: Path) -> SyntheticRun:
    ws = Workspace(path)
    ws.create_run(
        RUN_ID,
        suite_name="synthetic",
        suite_path=None,
        suite_fingerprint=None,
        catalog_fingerprint=None,
        models=list(MODELS),
        repeats=1,
        budget_usd=None,
        config={},
    )
    cases = []
    for case in GENERAL_CASES + ERASE_CASES:
        ref = ws.put_blob(flat_png(source_colour(case), (80, 60)), "png")
        op = "erase" if case in ERASE_CASES else "general_edit"
        cases.append(
            {
                "case_id": case,
                "operation": op,
                "category": CATEGORY[case],
                "input_sha256": [ref.sha256],
                "prompt": f"make case {case} {'disappear' if op == 'erase' else 'bluer'}",
                "language": "en",
            }
        )
    ws.put_cases(RUN_ID, cases)

    rows = [_call_row(m, c, "general_edit") for c in GENERAL_CASES for m in MODELS]
    for c in ERASE_CASES:
        for m in MODELS:
            if m in ERASE_MODELS:
                rows.append(_call_row(m, c, "erase"))
            else:
                rows.append(_call_row(m, c, "erase", "not_applicable", f"{m} does not support erase"))
    ws.insert_calls(rows)

    scores = []
    for m in MODELS:
        for i, case in enumerate(GENERAL_CASES):
            cid = call_id(m, case)
            if m == "delta" and case in DELTA_FAILURES:
                status, cat = DELTA_FAILURES[case]
                ws.finish_call(
                    cid,
                    {
                        "status": status,
                        "error_category": cat,
                        "error_message": f"{cat} on {case}",
                        "cost_usd": None if status == "unknown" else 0.0,
                        "cost_source": "unknown" if status == "unknown" else "list_price",
                    },
                )
                continue
            _complete(ws, m, case, TOTAL_MS[m][i], INFERENCE_MS[m][i], cached=(m == "alpha" and case == "g8"))
            scores.append(_score(cid, "ssim", "auto", AUTO_VERSION, SSIM[m][i]))
            j = JUDGE[m][i]
            scores.append(
                _score(
                    cid,
                    "viescore_o",
                    "judge",
                    JUDGE_VERSION,
                    j,
                    reason=None if j is not None else "judge reply did not parse",
                )
            )
        if m in ERASE_MODELS:
            for i, case in enumerate(ERASE_CASES):
                _complete(ws, m, case, ERASE_TOTAL_MS[m][i], ERASE_INFERENCE_MS[m][i])
                scores.append(_score(call_id(m, case), "ssim", "auto", AUTO_VERSION, ERASE_SSIM[m][i]))
    ws.put_scores(scores)
    return SyntheticRun(ws)


def _complete(ws: Workspace, model: str, case: str, total_ms: float, inference_ms: float, cached: bool = False) -> None:
    ref = ws.put_blob(flat_png(output_colour(model, case)), "png")
    price = PRICES[model]
    ws.finish_call(
        call_id(model, case),
        {
            "status": "completed",
            "total_ms": total_ms,
            "inference_ms": inference_ms,
            "submit_ms": 50.0,
            "queue_ms": 10.0,
            "download_ms": 5.0,
            "cost_usd": 0.0 if cached else price,
            "cost_source": "cache" if cached else ("unknown" if price is None else "list_price"),
            "output_sha256": ref.sha256,
            "output_ext": ref.ext,
            "width": 64,
            "height": 48,
            "format": "png",
        },
    )


def _score(cid: str, metric: str, source: str, version: str, value: float | None, reason: str | None = None) -> dict:
    return {
        "run_id": RUN_ID,
        "call_id": cid,
        "metric": metric,
        "source": source,
        "version": version,
        "value": value,
        "status": "scored" if value is not None else "unscored",
        "reason": reason,
    }


def build_grid_workspace(
    path: Path, n_cases: int, n_models: int, image_px: tuple[int, int] = (256, 192), distinct_outputs: int | None = None
) -> Workspace:
    """A larger run (every call completed, textured images) for grid size bounds and bench/ timings.

    ``distinct_outputs`` limits how many different output images are stored (cells then reuse them),
    which keeps a test's setup fast; None makes every output distinct."""
    ws = Workspace(path)
    models = [f"model-{j:02d}" for j in range(n_models)]
    ws.create_run(
        "grid",
        suite_name="synthetic-grid",
        suite_path=None,
        suite_fingerprint=None,
        catalog_fingerprint=None,
        models=models,
        repeats=1,
        budget_usd=None,
        config={},
    )
    cases, calls = [], []
    for i in range(n_cases):
        ref = ws.put_blob(textured_png(10_000 + i, image_px), "png")
        cases.append(
            {
                "case_id": f"c{i:02d}",
                "operation": "general_edit",
                "category": "color",
                "input_sha256": [ref.sha256],
                "prompt": f"edit number {i}",
            }
        )
        for j, m in enumerate(models):
            calls.append(
                {
                    "call_id": f"grid-{i}-{j}",
                    "run_id": "grid",
                    "case_id": f"c{i:02d}",
                    "model_id": m,
                    "provider": "wavespeed",
                    "operation": "general_edit",
                    "category": "color",
                    "repeat": 0,
                    "price_usd": 0.01 * (j + 1),
                }
            )
    ws.put_cases("grid", cases)
    ws.insert_calls(calls)
    for i in range(n_cases):
        for j in range(n_models):
            k = i * n_models + j
            ref = ws.put_blob(textured_png(k % distinct_outputs if distinct_outputs else k, image_px), "png")
            ws.finish_call(
                f"grid-{i}-{j}",
                {
                    "status": "completed",
                    "total_ms": 1000.0 + j,
                    "cost_usd": 0.01 * (j + 1),
                    "output_sha256": ref.sha256,
                    "output_ext": "png",
                },
            )
    return ws


@pytest.fixture
def synthetic_workspace(tmp_path: Path) -> SyntheticRun:
    run = build_synthetic_workspace(tmp_path / "ws")
    yield run
    run.ws.close()
