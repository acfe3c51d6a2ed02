"""Retention: delete the output images of older runs, keep everything else (`evalkit gc`).

:func:`collect_outputs` keeps the newest ``keep_last`` runs of every suite (or of one suite), the runs named
in ``keep_outputs_of`` and any run not finished, and deletes the content-addressed output blobs of the
other runs that no kept run's call and no case (inputs and masks of every run) still references. Rows,
metrics, scores, ratings and votes stay, so `evalkit trends`, tables and tier decisions still work; the run
records when its outputs were collected (``runs.outputs_collected_at``) and reports say so instead of
failing on missing files. ``dry_run`` only counts what would be freed.

It refuses to run while a run holds its lock: a run in progress may reuse an older output (the request
cache copies its blob reference) after the references were read.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field

from evalkit.errors import InvalidInputError, WorkspaceError
from evalkit.store._db import utcnow
from evalkit.store._workspace import Workspace

#: run statuses that may still write outputs
_UNFINISHED = ("created", "running")


@dataclass
class GcResult:
    kept: list[str]
    collected: list[str]  # runs whose outputs were (or, dry run, would be) deleted
    blobs: int
    bytes: int
    dry_run: bool
    shared: int = 0  # output blobs of collected runs kept because a kept run or a case uses them too
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        verb = "would free" if self.dry_run else "freed"
        lines = [
            f"{verb} {self.bytes / 1e6:,.1f} MB: {self.blobs} output image(s) of {len(self.collected)} run(s); "
            f"kept the outputs of {len(self.kept)} run(s)"
            + (f" and {self.shared} image(s) kept runs share" if self.shared else "")
        ]
        if self.collected:
            lines.append("collected: " + ", ".join(self.collected))
        lines += [f"note: {n}" for n in self.notes]
        if self.dry_run:
            lines.append("dry run: nothing was deleted")
        return "\n".join(lines)


def collect_outputs(
    ws: Workspace,
    *,
    keep_last: int,
    suite: str | None = None,
    keep_outputs_of: Iterable[str] = (),
    dry_run: bool = False,
) -> GcResult:
    """Delete the output images of the runs not kept (see the module docstring); rows are never deleted."""
    if keep_last < 0:
        raise InvalidInputError(f"--keep-last must be ≥ 0, got {keep_last}")
    held = ws.lock_holders()
    if held:
        who = "; ".join(f"{run}: {h.describe()}" for run, h in held.items())
        raise WorkspaceError(
            f"a run is being executed ({who}); gc waits until no run holds its lock",
            hint="run `evalkit gc` after the run finishes (last step of the nightly recipe)",
        )
    pinned = set(keep_outputs_of)
    for run_id in pinned:
        ws.get_run(run_id)  # an unknown id is an error, not silently ignored
    runs = ws.runs().sort_values("created_at", ascending=False, kind="stable")
    if suite is not None and not (runs["suite_name"] == suite).any():
        raise InvalidInputError(f"no run of suite {suite!r} in {ws.path}", hint="`evalkit runs` lists them")
    kept: list[str] = []
    collected: list[str] = []
    seen: dict[object, int] = {}
    for r in runs.itertuples():
        group = r.suite_name if isinstance(r.suite_name, str) else None
        rank = seen.get(group, 0)
        seen[group] = rank + 1
        if (suite is not None and group != suite) or rank < keep_last or r.run_id in pinned or r.status in _UNFINISHED:
            kept.append(str(r.run_id))
        else:
            collected.append(str(r.run_id))
    if not collected:
        return GcResult(kept, [], 0, 0, dry_run)
    referenced = _referenced(ws, kept)
    candidates = _outputs_of(ws, collected)
    shared = {sha for sha in candidates if sha in referenced}
    blobs = n_bytes = 0
    for sha, ext in sorted(candidates.items()):
        if sha in shared:
            continue
        path = ws.blob_path(sha, ext)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            continue  # collected before
        blobs += 1
        n_bytes += size
        if not dry_run:
            path.unlink(missing_ok=True)
    if not dry_run:
        now = utcnow()
        for run_id in collected:
            ws.update_run(run_id, outputs_collected_at=now)
    return GcResult(list(reversed(kept)), list(reversed(collected)), blobs, n_bytes, dry_run, len(shared))


def _referenced(ws: Workspace, kept: list[str]) -> set[str]:
    """Every blob a kept run's call or any run's case names (inputs and masks are never collected)."""
    refs: set[str] = set()
    for chunk in _chunks(kept):
        marks = ",".join("?" * len(chunk))
        refs.update(
            r[0]
            for r in ws._query(
                f"SELECT DISTINCT output_sha256 FROM calls WHERE run_id IN ({marks}) AND output_sha256 IS NOT NULL",
                chunk,
            )
        )
    for row in ws._query("SELECT input_sha256, mask_sha256 FROM cases"):
        refs.update(json.loads(row[0]) if row[0] else [])
        if row[1]:
            refs.add(row[1])
    return refs


def _outputs_of(ws: Workspace, runs: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for chunk in _chunks(runs):
        marks = ",".join("?" * len(chunk))
        for sha, ext in ws._query(
            f"SELECT DISTINCT output_sha256, output_ext FROM calls WHERE run_id IN ({marks}) "
            "AND output_sha256 IS NOT NULL AND output_ext IS NOT NULL",
            chunk,
        ):
            out[sha] = ext
    return out


def _chunks(items: list[str], size: int = 500) -> Iterable[list[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


__all__ = ["GcResult", "collect_outputs"]
