"""Tiny ONNX stand-ins for the semantic metrics' models (CLIP vision / text, DINOv2), built with onnx's helper API.

Same file layout, input and output names as the real exports in ``evalkit/scoring/semantic_models.toml``
(``pixel_values`` → ``image_embeds`` / ``pooler_output``; ``input_ids`` + ``attention_mask`` →
``text_embeds``), but a few linear ops, so every embedding is known in closed form:

* image models: the per-channel mean of the *preprocessed* pixels (3 numbers), times a fixed matrix
  (``CLIP_IMAGE_W`` 3×4, ``DINO_W`` 3×3) — an image of one flat colour has an embedding a test can compute;
* text model: the sum over real tokens of a per-word row of ``TEXT_EMBED`` (4-d), via a word-level
  ``tokenizer.json`` (whitespace split; unknown words map to ``[UNK]``, whose row is zero).

``make_semantic_models(dir)`` writes ``dir/clip/...`` and ``dir/dino/...`` exactly as
``EVALKIT_SEMANTIC_MODEL_DIR`` expects.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

CLIP_IMAGE_W = np.array([[1.0, 0.0, 0.5, 0.0], [0.0, 1.0, 0.5, 0.0], [0.0, 0.0, 0.0, 1.0]], dtype=np.float32)
DINO_W = np.array([[1.0, 0.2, 0.0], [0.0, 1.0, 0.2], [0.2, 0.0, 1.0]], dtype=np.float32)
WORDS = ["<|endoftext|>", "[UNK]", "a", "red", "green", "blue", "photo", "of", "square", "cat"]
TEXT_EMBED = np.zeros((len(WORDS), 4), dtype=np.float32)
TEXT_EMBED[WORDS.index("red")] = [1, 0, 0, 0]
TEXT_EMBED[WORDS.index("green")] = [0, 1, 0, 0]
TEXT_EMBED[WORDS.index("blue")] = [0, 0, 0, 1]
TEXT_EMBED[WORDS.index("square")] = [0, 0, 1, 0]
TEXT_EMBED[WORDS.index("photo")] = [0.1, 0.1, 0.1, 0.1]


def _image_model(path: Path, weight: np.ndarray, output: str) -> None:
    from onnx import TensorProto, helper, numpy_helper, save

    nodes = [
        helper.make_node("GlobalAveragePool", ["pixel_values"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "W"], [output]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_image_encoder",
        [helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, ["batch", 3, 224, 224])],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, ["batch", weight.shape[1]])],
        initializer=[numpy_helper.from_array(weight, "W")],
    )
    _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path, save)


def _text_model(path: Path) -> None:
    from onnx import TensorProto, helper, numpy_helper, save

    nodes = [
        helper.make_node("Gather", ["E", "input_ids"], ["tokens"]),  # batch × seq × 4
        helper.make_node("Cast", ["attention_mask"], ["maskf"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["maskf", "axis2"], ["mask3"]),
        helper.make_node("Mul", ["tokens", "mask3"], ["kept"]),
        helper.make_node("ReduceSum", ["kept", "axis1"], ["text_embeds"], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_text_encoder",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"]),
        ],
        [helper.make_tensor_value_info("text_embeds", TensorProto.FLOAT, ["batch", 4])],
        initializer=[
            numpy_helper.from_array(TEXT_EMBED, "E"),
            numpy_helper.from_array(np.array([2], dtype=np.int64), "axis2"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"),
        ],
    )
    _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path, save)


def _save(model, path: Path, save) -> None:
    model.ir_version = 8  # readable by every onnxruntime ≥ 1.14
    path.parent.mkdir(parents=True, exist_ok=True)
    save(model, str(path))


def _tokenizer(path: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    path.parent.mkdir(parents=True, exist_ok=True)
    tok.save(str(path))


def make_semantic_models(root: Path) -> Path:
    """Write the tiny models in the ``EVALKIT_SEMANTIC_MODEL_DIR`` layout; returns ``root``."""
    from evalkit.scoring.semantic import model_sources

    src = model_sources()
    _image_model(root / "clip" / src["clip"].files["vision"], CLIP_IMAGE_W, "image_embeds")
    _text_model(root / "clip" / src["clip"].files["text"])
    _tokenizer(root / "clip" / src["clip"].files["tokenizer"])
    _image_model(root / "dino" / src["dino"].files["vision"], DINO_W, "pooler_output")
    return root


def expected_image_embedding(rgb: tuple[int, int, int], key: str) -> np.ndarray:
    """The tiny model's embedding of an image of one flat colour, computed without ONNX."""
    from evalkit.scoring.semantic import model_sources

    src = model_sources()[key]
    channel = (np.asarray(rgb, dtype=np.float64) / 255.0 - np.asarray(src.mean)) / np.asarray(src.std)
    return channel @ (CLIP_IMAGE_W if key == "clip" else DINO_W).astype(np.float64)


def expected_text_embedding(text: str) -> np.ndarray:
    ids = [WORDS.index(w) if w in WORDS else WORDS.index("[UNK]") for w in text.split()]
    return TEXT_EMBED[ids].astype(np.float64).sum(axis=0)


@pytest.fixture(scope="session")
def semantic_model_dir(tmp_path_factory) -> Path:
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    pytest.importorskip("tokenizers")
    return make_semantic_models(tmp_path_factory.mktemp("semantic-models"))
