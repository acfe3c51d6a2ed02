"""The sessions migration (issue 24) is additive: a workspace written before it keeps every row."""

from __future__ import annotations

import sqlite3

from evalkit.store import SCHEMA_VERSION, Workspace
from evalkit.store._schema import _MIGRATIONS


def test_an_older_workspace_gains_the_session_columns_and_keeps_its_rows(tmp_path) -> None:
    before = SCHEMA_VERSION - 1  # the schema just before sessions
    con = sqlite3.connect(tmp_path / "evalkit.sqlite")
    con.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
    for step in _MIGRATIONS[:before]:
        con.executescript(step)
    con.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(before),))
    con.execute(
        "INSERT INTO runs(run_id, created_at, updated_at, status, models, repeats, config) "
        "VALUES ('old', 'x', 'x', 'completed', '[]', 1, '{}')"
    )
    con.execute(
        "INSERT INTO calls(call_id, run_id, case_id, model_id, provider, operation, repeat, status, created_at) "
        "VALUES ('old/c/m/0', 'old', 'c', 'm', 'wavespeed', 'general_edit', 0, 'completed', 'x')"
    )
    con.commit()
    con.close()
    with Workspace(tmp_path) as ws:
        assert ws.schema_version == SCHEMA_VERSION
        row = ws.get_call("old/c/m/0")
        assert row["status"] == "completed" and (row["turn"], row["session_id"], row["parent_call_id"]) == (
            None,
            None,
            None,
        )
        assert ws.calls("old")["turn"].isna().all()
