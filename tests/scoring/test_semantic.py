"""Semantic metrics (CLIP-I, CLIP-T, CLIP directional, DINO) through tiny ONNX graphs with known answers.

The real models cannot be downloaded here; ``tests/plugins/semantic.py`` builds stand-ins with the same
files, input and output names, whose embeddings are known in closed form, so every number below is
checked against an independent computation.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from html import escape as html_escape
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from evalkit.scoring.semantic import (
    MODEL_DIR_ENV,
    SemanticEncoders,
    SemanticItem,
    SemanticModelMissing,
    cosine,
    directional_similarity,
    model_files,
    model_sources,
    preprocess,
    semantic_metrics,
    semantic_version,
)
from tests.plugins.semantic import expected_image_embedding, expected_text_embedding

RED, BLUE, GREEN = (200, 30, 40), (30, 40, 200), (40, 190, 60)


def flat(rgb: tuple[int, int, int], size: tuple[int, int] = (320, 240)) -> Image.Image:
    return Image.new("RGB", size, rgb)


def cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.fixture
def encoders(semantic_model_dir) -> SemanticEncoders:
    return SemanticEncoders.load(semantic_model_dir)


# ---- the maths on known vectors ---------------------------------------------------------------------------


def test_cosine_on_known_vectors():
    a = np.array([[1.0, 0.0], [1.0, 1.0], [3.0, 4.0], [0.0, 0.0]])
    b = np.array([[0.0, 2.0], [2.0, 2.0], [-3.0, -4.0], [1.0, 0.0]])
    assert cosine(a, b) == pytest.approx([0.0, 1.0, -1.0, 0.0])


def test_directional_similarity_on_known_vectors():
    src_img, src_txt = np.array([[1.0, 0.0]]), np.array([[1.0, 0.0]])
    toward, away = np.array([[0.0, 1.0]]), np.array([[0.0, -1.0]])
    tgt_txt = np.array([[0.0, 1.0]])
    assert directional_similarity(src_img, toward, src_txt, tgt_txt)[0] == pytest.approx(1.0)
    # moving to −y is orthogonal-ish: Δimage (−1, −1)/… vs Δtext (−1, 1) → cos 0
    assert directional_similarity(src_img, away, src_txt, tgt_txt)[0] == pytest.approx(0.0)
    assert directional_similarity(src_img, np.array([[2.0, 0.0]]), src_txt, tgt_txt)[0] == 0.0  # did not move
    # the unit-normalised difference, as EmuEdit computes it: scale of the embeddings does not matter
    scaled = directional_similarity(5 * src_img, 3 * toward, 2 * src_txt, 7 * tgt_txt)
    assert scaled[0] == pytest.approx(1.0)


# ---- preprocessing and the encoders ------------------------------------------------------------------------


def test_encoders_match_the_closed_form_embeddings(encoders):
    got = encoders.clip_images([flat(RED), flat(BLUE)])
    assert got[0] == pytest.approx(expected_image_embedding(RED, "clip"), rel=1e-3, abs=1e-3)
    assert got[1] == pytest.approx(expected_image_embedding(BLUE, "clip"), rel=1e-3, abs=1e-3)
    assert encoders.dino_images([flat(GREEN)])[0] == pytest.approx(
        expected_image_embedding(GREEN, "dino"), rel=1e-3, abs=1e-3
    )
    texts = encoders.texts(["a red square", "a photo of a blue cat", "unknown words only"])
    assert texts[0] == pytest.approx(expected_text_embedding("a red square"), abs=1e-6)
    assert texts[1] == pytest.approx(expected_text_embedding("a photo of a blue cat"), abs=1e-6)
    assert texts[2] == pytest.approx(np.zeros(4))  # padding and unknown tokens contribute nothing


def test_preprocess_resizes_the_short_side_and_crops_the_centre():
    clip = model_sources()["clip"]
    img = Image.new("RGB", (600, 200), RED)  # thirds: red | green | blue
    img.paste(GREEN, (200, 0, 400, 200))
    img.paste(BLUE, (400, 0, 600, 200))
    pixels = preprocess([img], clip)
    assert pixels.shape == (1, 3, 224, 224) and pixels.dtype == np.float32
    want = (np.asarray(GREEN) / 255.0 - np.asarray(clip.mean)) / np.asarray(clip.std)
    centre = pixels[0, :, 8:-8, 8:-8].mean(axis=(1, 2))  # away from the bicubic seams at the crop edge
    assert centre == pytest.approx(want, abs=0.02)


def test_batches_give_the_same_embeddings_as_one_by_one(encoders):
    images = [flat((40 * i, 255 - 30 * i, 17 * i)) for i in range(7)]
    encoders.batch_size = 3
    batched = encoders.clip_images(images)
    singles = np.concatenate([encoders.clip_images([im]) for im in images])
    assert batched.shape == (7, 4)
    assert batched == pytest.approx(singles, abs=1e-6)


# ---- the metrics for a case -------------------------------------------------------------------------------


def test_semantic_metrics_equal_an_independent_computation(encoders):
    items = [
        SemanticItem("edited", flat(BLUE), "general_edit", "a red square", "a blue square"),
        SemanticItem("unchanged", flat(RED), "general_edit", "a red square", "a blue square"),
        SemanticItem("no-source-caption", flat(BLUE), "general_edit", None, "a blue square"),
        SemanticItem("no-captions", flat(GREEN), "remove_background"),
    ]
    got = {cid: {m.name: m for m in metrics} for cid, metrics in semantic_metrics(encoders, flat(RED), items)}
    e = {c: expected_image_embedding(c, "clip") for c in (RED, BLUE, GREEN)}
    d = {c: expected_image_embedding(c, "dino") for c in (RED, BLUE, GREEN)}
    t_src, t_tgt = expected_text_embedding("a red square"), expected_text_embedding("a blue square")
    u = lambda v: v / np.linalg.norm(v)  # noqa: E731

    edited = got["edited"]
    assert edited["clip_i"].value == pytest.approx(cos(e[RED], e[BLUE]), abs=1e-3)
    assert edited["dino"].value == pytest.approx(cos(d[RED], d[BLUE]), abs=1e-3)
    assert edited["clip_t"].value == pytest.approx(cos(e[BLUE], t_tgt), abs=1e-3)
    assert edited["clip_dir"].value == pytest.approx(cos(u(e[BLUE]) - u(e[RED]), u(t_tgt) - u(t_src)), abs=1e-3)
    assert edited["clip_dir"].value > 0.5  # red → blue image, "red" → "blue" caption: the right direction

    unchanged = got["unchanged"]
    assert unchanged["clip_i"].value == pytest.approx(1.0, abs=1e-6)
    assert unchanged["dino"].value == pytest.approx(1.0, abs=1e-6)
    assert unchanged["clip_dir"].value == 0.0  # the null edit moved in no direction

    assert set(got["no-source-caption"]) == {"clip_i", "dino", "clip_t"}
    assert set(got["no-captions"]) == {"clip_i", "dino"}
    assert got["no-captions"]["clip_i"].higher_is_better is None  # preservation is descriptive there
    assert edited["clip_i"].higher_is_better is True and edited["clip_t"].higher_is_better is True


# ---- missing models: a clear error, never a silent skip ----------------------------------------------------


def test_missing_local_copy_names_every_file_and_the_download_command(tmp_path):
    with pytest.raises(SemanticModelMissing) as err:
        model_files(tmp_path / "empty")
    text = str(err.value)
    assert "evalkit download-semantic --to" in text and "vision_model.onnx" in text and "dino" in text


def test_missing_models_in_the_hf_cache_name_the_download_command(tmp_path, monkeypatch):
    monkeypatch.delenv(MODEL_DIR_ENV, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    with pytest.raises(SemanticModelMissing) as err:
        model_files()
    assert "Hugging Face cache" in str(err.value) and "evalkit download-semantic" in str(err.value)


def test_a_corrupt_model_file_is_a_clear_error(semantic_model_dir, tmp_path):
    import shutil

    copy = tmp_path / "models"
    shutil.copytree(semantic_model_dir, copy)
    (copy / "dino" / model_sources()["dino"].files["vision"]).write_bytes(b"not an onnx file")
    with pytest.raises(SemanticModelMissing, match="cannot be loaded.*download-semantic"):
        SemanticEncoders.load(copy)


# ---- the whole path: a run scored, versioned rows, cached, report columns -----------------------------------


@pytest.fixture
def local_run(tmp_path):
    from evalkit.engine.runner import arun
    from evalkit.store import Workspace

    res = asyncio.run(arun("smoke", models="identity,opencv-inpaint", workspace=tmp_path / "ws", progress=False))
    return Workspace(tmp_path / "ws"), res.run_id


def test_score_run_writes_versioned_semantic_rows_once(local_run, semantic_model_dir):
    from evalkit.scoring import score_run

    ws, run_id = local_run
    calls = ws.calls(run_id)
    done = calls[calls.status == "completed"]
    summary = score_run(ws, run_id, auto=False, semantic=True, semantic_model_dir=semantic_model_dir, progress=False)
    assert summary.semantic_scored == len(done) > 0
    scores = ws.scores(run_id)
    sem = scores[scores.version == semantic_version()]
    assert set(sem.source) == {"auto"} and set(sem.call_id) == set(done.call_id)
    by_case = sem.groupby("case_id")["metric"].agg(set)
    # smoke: the general edit has both captions, the inpaint only a target caption, the zoom-out none
    assert by_case["chelsea-background-sofa"] == {"clip_i", "dino", "clip_t", "clip_dir"}
    assert by_case["coffee-cup-latte-art"] == {"clip_i", "dino", "clip_t"}
    assert by_case["rocket-zoom-out"] == {"clip_i", "dino"}
    ident = sem[(sem.model_id == "identity") & (sem.case_id == "chelsea-background-sofa")].set_index("metric")
    assert ident.at["clip_i", "value"] == pytest.approx(1.0, abs=1e-6)
    assert ident.at["clip_dir", "value"] == 0.0

    again = score_run(ws, run_id, auto=False, semantic=True, semantic_model_dir=semantic_model_dir, progress=False)
    assert again.semantic_scored == 0 and again.semantic_skipped == len(done)
    assert len(ws.scores(run_id)) == len(scores)


def test_semantic_metrics_are_a_quality_the_tables_and_report_can_use(local_run, semantic_model_dir):
    from evalkit.decide.tables import model_table
    from evalkit.report.sections import semantic_table
    from evalkit.scoring import score_run

    ws, run_id = local_run
    score_run(ws, run_id, semantic=True, semantic_model_dir=semantic_model_dir, progress=False)
    table = model_table(ws, run_id, quality="clip_i:auto")
    assert table.attrs["quality"]["version"] == semantic_version()
    assert table.set_index("model_id").at["identity", "quality"] == pytest.approx(1.0, abs=1e-6)
    cols = semantic_table(ws, run_id)
    assert {"clip_i", "clip_t", "clip_dir", "dino"} <= set(cols.columns)
    cols = cols.set_index(["model_id", "operation"])
    assert cols.at[("identity", "general_edit"), "clip_dir"] == 0.0
    assert pd.isna(cols.at[("identity", "zoom_out"), "clip_t"])  # the zoom-out case gives no caption
    from evalkit.report import prepare_report, semantic_html

    page = semantic_html(prepare_report(ws, run_id))
    assert "<table" in page and "clip_dir" in page and "opencv-inpaint" in page
    assert html_escape(semantic_version()) in page


def test_score_semantic_without_models_fails_before_scoring(local_run, tmp_path):
    ws, run_id = local_run
    proc = subprocess.run(
        [sys.executable, "-m", "evalkit", "score", run_id, "--semantic", "-w", str(ws.path)],
        capture_output=True,
        text=True,
        env={**os.environ, MODEL_DIR_ENV: str(tmp_path / "nowhere")},
        timeout=120,
    )
    assert proc.returncode != 0
    assert "evalkit download-semantic" in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert ws.scores(run_id).empty  # nothing was half done


def test_score_semantic_from_the_cli_with_a_local_model_copy(local_run, semantic_model_dir):
    ws, run_id = local_run
    proc = subprocess.run(
        [sys.executable, "-m", "evalkit", "score", run_id, "--semantic", "--no-auto", "-w", str(ws.path)],
        capture_output=True,
        text=True,
        env={**os.environ, MODEL_DIR_ENV: str(semantic_model_dir)},
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    done = (ws.calls(run_id).status == "completed").sum()
    assert f"semantic metrics: {done} calls" in proc.stdout
    assert set(ws.scores(run_id).version) == {semantic_version()}


def test_download_fetches_every_pinned_file_into_the_layout_the_loader_reads(tmp_path, monkeypatch):
    import huggingface_hub

    asked = []

    def fake_download(repo_id, filename, *, revision=None, local_dir=None, **_):
        asked.append((repo_id, filename, revision))
        path = Path(local_dir) / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"weights")
        return str(path)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    from evalkit.scoring.semantic import download_semantic_models

    folders = download_semantic_models(tmp_path / "copy")
    want = {(s.repo, f, s.revision) for s in model_sources().values() for f in s.files.values()}
    assert set(asked) == want and len(asked) == len(want)
    assert folders == {"clip": tmp_path / "copy" / "clip", "dino": tmp_path / "copy" / "dino"}
    found = model_files(tmp_path / "copy")  # no error: every file is where EVALKIT_SEMANTIC_MODEL_DIR expects it
    assert found["clip"]["tokenizer"].name == "tokenizer.json"
