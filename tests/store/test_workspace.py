"""The workspace store: schema, call state machine, blobs, readers, failure modes."""

from __future__ import annotations

import multiprocessing as mp
import os
import sqlite3
from pathlib import Path

import pandas as pd
import pytest

from evalkit.engine.budget import Budget
from evalkit.errors import BudgetExceededError, InvalidInputError, WorkspaceError
from evalkit.store import SCHEMA_VERSION, CallStatus, Workspace
from tests.plugins.common import make_png


def _run(ws: Workspace, run_id: str = "r1") -> None:
    ws.create_run(
        run_id,
        suite_name="s",
        suite_path=None,
        suite_fingerprint="f",
        catalog_fingerprint="c",
        models=["m1", "m2"],
        repeats=1,
        budget_usd=1.0,
        config={"k": 1},
    )
    ws.insert_calls(
        [
            {
                "call_id": f"{run_id}/c1/m1/0",
                "run_id": run_id,
                "case_id": "c1",
                "model_id": "m1",
                "provider": "p",
                "operation": "general_edit",
                "repeat": 0,
                "price_usd": 0.02,
                "reserved_usd": 0.02,
                "fingerprint": "fp1",
            },
            {
                "call_id": f"{run_id}/c1/m2/0",
                "run_id": run_id,
                "case_id": "c1",
                "model_id": "m2",
                "provider": "p",
                "operation": "general_edit",
                "repeat": 0,
                "status": "not_applicable",
                "reason": "no",
            },
        ]
    )


def test_call_lifecycle_and_readers(tmp_path):
    ws = Workspace(tmp_path)
    assert ws.schema_version == SCHEMA_VERSION
    _run(ws)
    cid = "r1/c1/m1/0"
    ws.mark_submitting(cid, reserved_usd=0.02)
    assert ws.get_call(cid)["status"] == "submitting"
    ws.mark_submitted(cid, "abc123")
    row = ws.get_call(cid)
    assert row["status"] == "submitted" and row["prediction_id"] == "abc123"
    ref = ws.put_blob(make_png(10, 10), "png")
    ws.finish_call(
        cid,
        {
            "status": "completed",
            "cost_usd": 0.02,
            "cost_source": "list_price",
            "output_sha256": ref.sha256,
            "output_ext": "png",
            "width": 10,
            "height": 10,
            "total_ms": 123.0,
            "metadata": {"a": 1},
        },
    )
    df = ws.calls("r1")
    assert list(df["status"]) == ["completed", "not_applicable"]
    assert df.loc[0, "output_path"].endswith(".png") and os.path.exists(df.loc[0, "output_path"])
    assert ws.output_image(cid) == make_png(10, 10)
    assert ws.find_completed("fp1")["call_id"] == cid
    assert ws.find_completed("fp1", exclude_call=cid) is None
    runs = ws.runs()
    assert (
        runs.loc[0, "completed"] == 1 and runs.loc[0, "planned"] == 1 and runs.loc[0, "cost_usd"] == pytest.approx(0.02)
    )


def test_call_status_values_are_the_stored_strings(tmp_path):
    """CallStatus is a StrEnum: existing workspaces keep their values, and rows read back compare equal."""
    assert [s.value for s in CallStatus] == [
        "planned",
        "submitting",
        "submitted",
        "completed",
        "failed",
        "not_applicable",
        "unknown",
        "not_reached",
    ]
    ws = Workspace(tmp_path)
    _run(ws)
    ws.mark_submitting("r1/c1/m1/0", reserved_usd=0.02)
    rows = ws._conn.execute("SELECT status, typeof(status) FROM calls ORDER BY rowid").fetchall()
    assert [tuple(r) for r in rows] == [("submitting", "text"), ("not_applicable", "text")]
    assert ws.get_call("r1/c1/m1/0")["status"] == CallStatus.SUBMITTING
    assert CallStatus.COMPLETED.terminal and not CallStatus.SUBMITTED.terminal


def test_insert_is_idempotent_for_resume(tmp_path):
    ws = Workspace(tmp_path)
    _run(ws)
    ws.mark_submitting("r1/c1/m1/0", reserved_usd=0.02)
    n = ws.insert_calls(
        [
            {
                "call_id": "r1/c1/m1/0",
                "run_id": "r1",
                "case_id": "c1",
                "model_id": "m1",
                "provider": "p",
                "operation": "general_edit",
                "repeat": 0,
            }
        ]
    )
    assert n == 0 and ws.get_call("r1/c1/m1/0")["status"] == "submitting"


def test_duplicate_run_and_unknown_run(tmp_path):
    ws = Workspace(tmp_path)
    _run(ws)
    with pytest.raises(InvalidInputError, match="already exists"):
        _run(ws)
    with pytest.raises(InvalidInputError, match="no run 'nope'.*") as ei:
        ws.get_run("nope")
    assert "r1" in str(ei.value)


@pytest.mark.parametrize("bad", ["../x", "a/b", "", "x" * 200, "run id", "..", "é"])
def test_unsafe_run_ids_refused(tmp_path, bad):
    ws = Workspace(tmp_path)
    with pytest.raises(InvalidInputError, match="safe id"):
        ws.create_run(
            bad,
            suite_name=None,
            suite_path=None,
            suite_fingerprint=None,
            catalog_fingerprint=None,
            models=[],
            repeats=1,
            budget_usd=None,
            config={},
        )


def test_newer_schema_is_refused_and_left_alone(tmp_path):
    Workspace(tmp_path).close()
    con = sqlite3.connect(tmp_path / "evalkit.sqlite")
    con.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    con.commit()
    con.close()
    before = (tmp_path / "evalkit.sqlite").read_bytes()
    with pytest.raises(WorkspaceError, match="newer evalkit"):
        Workspace(tmp_path)
    assert (tmp_path / "evalkit.sqlite").read_bytes() == before


def _snapshot(path) -> tuple[list[dict], list[str]]:
    """The calls and the files of a workspace, read with a fresh connection."""
    with Workspace(path, create=False) as ws:
        rows = [r for rid in ws.runs().run_id for r in ws.call_rows(rid)]
    return rows, sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file() and "-wal" not in p.name)


def test_read_only_workspace_reported(tmp_path, monkeypatch):
    """A workspace on a read-only file system — one root cannot write either (file permissions do not stop
    root): SQLite opens the database read-only (``mode=ro``, so SQLite itself refuses every write) and every
    file the blob store opens for writing fails with EROFS. Each write is a clear error; nothing changes."""
    import builtins
    import errno

    from evalkit.store import _blobs

    ws = Workspace(tmp_path)
    _run(ws)
    ws.mark_submitting("r1/c1/m1/0", reserved_usd=0.02)
    ws.close()
    before = _snapshot(tmp_path)

    real_connect = sqlite3.connect

    def read_only_connect(database, *args, **kwargs):
        return real_connect(f"file:{Path(database).as_posix()}?mode=ro", *args, uri=True, **kwargs)

    def read_only_open(file, mode="r", *args, **kwargs):
        if any(c in mode for c in "wax+"):
            raise OSError(errno.EROFS, "Read-only file system", str(file))
        return builtins.open(file, mode, *args, **kwargs)

    monkeypatch.setattr(sqlite3, "connect", read_only_connect)
    monkeypatch.setattr(_blobs, "open", read_only_open, raising=False)
    ws = Workspace(tmp_path, create=False)
    writes = [
        lambda: ws.reset_call("r1/c1/m1/0"),
        lambda: ws.mark_submitted("r1/c1/m1/0", "abc123"),
        lambda: ws.finish_call("r1/c1/m1/0", {"status": "completed", "cost_usd": 0.02}),
        lambda: _run(ws, "r2"),
        lambda: ws.put_blob(make_png(8, 8, seed=7), "png"),
    ]
    for write in writes:
        with pytest.raises(WorkspaceError, match="is read-only; nothing already written was lost") as info:
            write()
        assert info.value.__cause__ is None and "--workspace" in str(info.value)
    assert ws.get_call("r1/c1/m1/0")["status"] == "submitting"  # reading still works
    ws.close()
    monkeypatch.undo()
    assert _snapshot(tmp_path) == before  # every row and every file as it was


class _CommitFails:
    """The workspace's real connection, except that COMMIT fails with ``message`` (the disk filled up, or the
    file system turned read-only, while the transaction was being written)."""

    def __init__(self, real: sqlite3.Connection, message: str):
        self._real, self._message = real, message

    def execute(self, sql, *args):
        if sql.strip().upper() == "COMMIT":
            raise sqlite3.OperationalError(self._message)
        return self._real.execute(sql, *args)

    def __getattr__(self, name):
        return getattr(self._real, name)


@pytest.mark.parametrize(
    "sqlite_message, expected",
    [
        ("database or disk is full", "disk is full.*nothing already written was lost"),
        ("attempt to write a readonly database", "read-only.*nothing already written was lost"),
    ],
)
def test_disk_full_and_read_only_are_translated(tmp_path, sqlite_message, expected):
    """A transaction whose COMMIT fails is translated, and rolled back: the rows it had inserted are gone (even for
    the connection that wrote them) and the workspace goes on working."""
    ws = Workspace(tmp_path)
    _run(ws)
    real = ws._conn
    ws._conn = _CommitFails(real, sqlite_message)  # type: ignore[assignment]
    before = ws.call_rows("r1")
    with pytest.raises(WorkspaceError, match=expected):
        _run(ws, "r2")  # insert_calls writes its rows in one transaction
    ws._conn = real
    assert ws.call_rows("r2") == [] and ws.call_rows("r1") == before
    assert real.in_transaction is False
    ws.mark_submitted("r1/c1/m1/0", "x")  # still writable afterwards
    assert ws.get_call("r1/c1/m1/0")["status"] == "submitted"


def _writer(path: str, n: int, worker: int) -> None:
    ws = Workspace(path)
    for i in range(n):
        ws.record_usage(
            model_id=f"m{worker}",
            operation="general_edit",
            cost_usd=0.01,
            cost_source="list_price",
            source="generate_image_edit",
            user_id=f"u{i}",
        )
        ws.put_blob(make_png(8, 8, seed=i), "png")


def test_two_processes_share_a_workspace(tmp_path):
    Workspace(tmp_path).close()
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), 60, w)) for w in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    ws = Workspace(tmp_path)
    usage = ws.usage()
    assert len(usage) == 120 and sorted(usage["model_id"].unique()) == ["m0", "m1"]
    assert ws._conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_run_lock_excludes_a_second_runner(tmp_path):
    ws = Workspace(tmp_path)
    with ws.run_lock("r1"):
        with pytest.raises(WorkspaceError, match="another process"):
            with Workspace(tmp_path).run_lock("r1"):
                pass
    with ws.run_lock("r1"):  # released
        pass


def test_ratings_validation(tmp_path):
    ws = Workspace(tmp_path)
    _run(ws)
    with pytest.raises(InvalidInputError, match="left, right, tie or both_bad"):
        ws.add_rating(
            run_id="r1", case_id="c1", rater="a", call_left="r1/c1/m1/0", call_right="r1/c1/m2/0", choice="maybe"
        )
    with pytest.raises(InvalidInputError, match="1–5"):
        ws.add_rating(run_id="r1", case_id="c1", rater="a", kind="single", call_id="r1/c1/m1/0", quality=7)
    ws.add_rating(run_id="r1", case_id="c1", rater="a", call_left="r1/c1/m1/0", call_right="r1/c1/m2/0", choice="tie")
    r = ws.ratings("r1")
    assert r.loc[0, "model_left"] == "m1" and r.loc[0, "model_right"] == "m2"


def test_budget_never_crosses_cap():
    b = Budget(0.10)
    held = [b.reserve(0.03) for _ in range(3)]
    with pytest.raises(BudgetExceededError):
        b.reserve(0.03)
    b.settle(held[0], 0.0)  # failed call: nothing billed
    held.append(b.reserve(0.03))
    for r in held[1:]:
        b.settle(r, 0.03)
    assert b.spent_usd == pytest.approx(0.09) and b.reserved_usd == pytest.approx(0.0)
    assert not b.can_reserve(0.02)


def test_a_workspace_from_before_captions_is_migrated_and_keeps_its_cases(tmp_path):
    import sqlite3

    from evalkit.store._schema import _MIGRATIONS

    before = next(i for i, step in enumerate(_MIGRATIONS) if "source_caption" in step)  # the schema before captions
    con = sqlite3.connect(tmp_path / "evalkit.sqlite")  # as the evalkit before captions wrote it
    con.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
    for step in _MIGRATIONS[:before]:
        con.executescript(step)
    con.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(before),))
    con.execute(
        "INSERT INTO runs(run_id, created_at, updated_at, status, models, repeats, config) "
        "VALUES ('r1', 'x', 'x', 'completed', '[]', 1, '{}')"
    )
    con.execute(
        "INSERT INTO cases(run_id, case_id, operation, input_sha256, tags, params) "
        "VALUES ('r1', 'old-case', 'general_edit', '[]', '[]', '{}')"
    )
    con.commit()
    con.close()
    ws = Workspace(tmp_path)
    assert ws.schema_version == SCHEMA_VERSION
    ws.put_cases("r1", [{"case_id": "new-case", "operation": "general_edit", "input_sha256": [],
                         "source_caption": "a red square", "target_caption": "a blue square"}])  # fmt: skip
    cases = ws.cases("r1").set_index("case_id")
    assert pd.isna(cases.at["old-case", "target_caption"]) and cases.at["old-case", "operation"] == "general_edit"
    assert (cases.at["new-case", "source_caption"], cases.at["new-case", "target_caption"]) == (
        "a red square",
        "a blue square",
    )
