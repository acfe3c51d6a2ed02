"""Fixtures every area uses: sample images and a catalogue."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from evalkit.catalog import Catalog


def make_png(width: int = 64, height: int = 48, seed: int = 0, mode: str = "RGB") -> bytes:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 255, size=(height, width, 3), dtype=np.uint8)
    img = Image.fromarray(arr, "RGB")
    if mode != "RGB":
        img = img.convert(mode)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="session")
def catalog() -> Catalog:
    return Catalog.load()


@pytest.fixture
def sample_png() -> bytes:
    return make_png(96, 64)
