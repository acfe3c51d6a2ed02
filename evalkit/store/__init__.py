"""The workspace: one SQLite database + content-addressed blobs, the single source of truth of every run.

``Workspace(path)`` records runs, cases, calls (with their latency breakdown and cost), the usage ledger,
scores, ratings and the judge cache; its readers return tidy DataFrames. A call's state is a
:class:`CallStatus`.

Inside the package, one private module per idea: ``_schema`` (tables, migrations), ``_db`` (the connection),
``_blobs`` (content-addressed files), ``_runs`` (runs, cases), ``_calls``, ``_usage``, ``_scores``,
``_ratings``, ``_judge_cache``, ``_locks``, composed in ``_workspace``; :mod:`evalkit.store.export` writes a
run's calls to CSV / Parquet / JSON Lines.
"""

from __future__ import annotations

from evalkit.store._blobs import BlobRef
from evalkit.store._db import check_id, default_workspace_path, utcnow
from evalkit.store._schema import SCHEMA_VERSION
from evalkit.store._usage import usage_charge
from evalkit.store._workspace import Workspace
from evalkit.store.status import ATTEMPTED_STATUSES, TERMINAL_STATUSES, CallStatus

__all__ = [
    "ATTEMPTED_STATUSES",
    "SCHEMA_VERSION",
    "TERMINAL_STATUSES",
    "BlobRef",
    "CallStatus",
    "Workspace",
    "check_id",
    "default_workspace_path",
    "usage_charge",
    "utcnow",
]
