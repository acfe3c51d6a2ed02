"""A workspace written by a newer evalkit is refused by the runner and by generate_image_edit, and left untouched."""

from __future__ import annotations

import sqlite3

import pytest

from evalkit.edit import agenerate_image_edit
from evalkit.engine.runner import arun
from evalkit.errors import WorkspaceError
from tests.plugins.bad_input import PNG, assert_clear, assert_intact, request_count, state, ws_options


async def test_workspace_from_a_newer_schema_is_refused_and_untouched(sim, ws):
    con = sqlite3.connect(ws / "evalkit.sqlite")
    con.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    con.commit()
    con.close()
    before = state(ws)
    db_bytes = (ws / "evalkit.sqlite").read_bytes()
    with pytest.raises(WorkspaceError) as info:
        await arun("smoke", models="qwen-edit", workspace=ws, progress=False, provider_options=ws_options(sim))
    assert_clear(info.value, WorkspaceError, "newer evalkit", "schema 99")
    with pytest.raises(WorkspaceError):
        await agenerate_image_edit(
            PNG, "make it blue", model="qwen-edit", workspace=ws, provider_options=ws_options(sim)
        )
    assert request_count(sim) == 0
    assert_intact(before, ws)
    assert (ws / "evalkit.sqlite").read_bytes() == db_bytes
