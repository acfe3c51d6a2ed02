"""Where bundled data lives: suites (``datasets/``) and notebooks (``notebooks/``).

In a source checkout (or an editable install) they are the repository's top-level folders; in a
wheel they are packaged under ``evalkit/_bundled/`` (see pyproject's force-include).
"""

from __future__ import annotations

from pathlib import Path

_PKG = Path(__file__).resolve().parent


def bundled_dir(name: str) -> Path:
    """``datasets`` or ``notebooks``: the installed copy, else the source checkout's folder."""
    for candidate in (_PKG / "_bundled" / name, _PKG.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        f"evalkit's bundled {name}/ folder was not found (looked in {_PKG / '_bundled'} and {_PKG.parent}); "
        "reinstall evalkit"
    )


def datasets_dir() -> Path:
    return bundled_dir("datasets")


def notebooks_dir() -> Path:
    return bundled_dir("notebooks")
