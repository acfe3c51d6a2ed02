"""The workspace: one SQLite database + content-addressed blobs, the single source of truth of every run.

``Workspace(path)`` records runs, cases, calls (with their latency breakdown and cost), the usage ledger,
scores, ratings and the judge cache; its readers return tidy DataFrames.
"""

from __future__ import annotations

from evalkit.store.workspace import SCHEMA_VERSION, BlobRef, Workspace, check_id, default_workspace_path, utcnow

__all__ = ["SCHEMA_VERSION", "BlobRef", "Workspace", "check_id", "default_workspace_path", "utcnow"]
