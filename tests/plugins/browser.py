"""Headless Chromium for the browser tests: Debian's ``chromium`` (``/usr/bin/chromium`` or
``$EVALKIT_CHROMIUM``) driven by the Python ``playwright`` package, which never downloads a browser here.
:func:`require_browser` skips the calling module with the reason when either is missing."""

from __future__ import annotations

import os
import shutil
from typing import Any

import pytest

CHROMIUM = os.environ.get("EVALKIT_CHROMIUM", "/usr/bin/chromium")
#: a fresh profile that reaches nothing but loopback
CHROMIUM_ARGS = [
    "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",  # nothing but loopback resolves
]


def have_chromium() -> bool:
    return bool(shutil.which(CHROMIUM) or os.access(CHROMIUM, os.X_OK))


def require_browser(*, module: bool = True) -> Any:
    """playwright's ``sync_api``, or a skip (of the whole module by default) saying what is missing."""
    if not have_chromium():
        pytest.skip(
            f"no Chromium at {CHROMIUM} (apt-get install -y chromium, or set EVALKIT_CHROMIUM)",
            allow_module_level=module,
        )
    try:
        from playwright import sync_api
    except ImportError as exc:
        pytest.skip(f"the Python playwright package cannot be imported ({exc})", allow_module_level=module)
    return sync_api
