"""Export a run's calls (and scores) for analysis elsewhere: CSV, Parquet or JSON Lines."""

from __future__ import annotations

import os
from pathlib import Path

from evalkit.errors import InvalidInputError
from evalkit.store import Workspace

FORMATS = {"csv": "csv", "parquet": "parquet", "jsonl": "jsonl"}


def export_calls(
    run_id: str,
    fmt: str = "csv",
    output: str | os.PathLike | None = None,
    *,
    workspace: Workspace | str | os.PathLike | None = None,
) -> Path:
    """Write one row per call of ``run_id``; returns the path written."""
    fmt = fmt.lower()
    if fmt not in FORMATS:
        raise InvalidInputError(f"unknown export format {fmt!r}", hint="use csv, parquet or jsonl")
    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace, create=False)
    df = ws.calls(run_id)
    path = Path(output) if output else Path(f"{run_id}-calls.{FORMATS[fmt]}")
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        df.to_csv(path, index=False)
    elif fmt == "parquet":
        df.to_parquet(path, index=False)
    else:
        df.to_json(path, orient="records", lines=True)
    return path
