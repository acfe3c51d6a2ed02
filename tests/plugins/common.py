"""Fixtures and helpers every area uses: sample images, a catalogue, a refused port, waiting for a server,
TOML literals for hand-written suites, the local servers with their keys in the environment."""

from __future__ import annotations

import asyncio
import io
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from PIL import Image

from evalkit.catalog import Catalog

if TYPE_CHECKING:
    from evalkit.sim.stack import LocalStack


def make_png(width: int = 64, height: int = 48, seed: int = 0, mode: str = "RGB") -> bytes:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 255, size=(height, width, 3), dtype=np.uint8)
    img = Image.fromarray(arr, "RGB")
    if mode != "RGB":
        img = img.convert(mode)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def refused_port() -> int:
    """A loopback port with nothing listening on it (bound, read, released): a connection is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def wait_until(condition: Callable[[], Any], *, tries: int = 100, interval_s: float = 0.02) -> None:
    """Poll ``condition`` until it is true or ``tries`` run out; the caller asserts afterwards."""
    for _ in range(tries):
        if condition():
            return
        await asyncio.sleep(interval_s)


def toml_value(v: Any) -> str:
    """A TOML literal for any JSON-like value (strings escaped so that any text round-trips)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return (
            '"'
            + "".join(
                "\\" + c if c in '"\\' else f"\\u{ord(c):04x}" if ord(c) < 0x20 or ord(c) == 0x7F else c for c in v
            )
            + '"'
        )
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(v)


@contextmanager
def local_stack_in_env(*, time_scale: float = 0.0005, **extra_env: str) -> Iterator[LocalStack]:
    """Every local server started, with their base URLs and keys (and ``extra_env``) in this process's
    environment, so a notebook kernel or the CLI started from here reaches them as it would the real
    APIs; the environment is restored, then the servers stopped, on exit."""
    from evalkit.sim.stack import start_local_stack

    with start_local_stack(time_scale=time_scale) as stack, pytest.MonkeyPatch.context() as mp:
        for k, v in {**stack.env(), **extra_env}.items():
            mp.setenv(k, v)
        yield stack


@pytest.fixture(scope="session")
def catalog() -> Catalog:
    return Catalog.load()


@pytest.fixture
def sample_png() -> bytes:
    return make_png(96, 64)
