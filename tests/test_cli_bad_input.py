"""Bad input at the CLI: ``python -m evalkit run …`` exits 2 with ``error: <one line>`` plus a hint line, and no Python
traceback; a garbage server is recorded per call and exits 1."""

from __future__ import annotations

import json
import shutil
import sqlite3

import pytest

from evalkit.store import SCHEMA_VERSION, Workspace
from tests.plugins.bad_input import (
    HTML,
    PNG,
    assert_intact,
    assert_one_line_error,
    cli,
    cli_env,
    edit_case,
    garbage_server,
    request_count,
    state,
    write_suite,
)

#: each test starts the CLI in a fresh process (several seconds apiece): not in the fast lane
pytestmark = pytest.mark.e2e


def test_cli_refuses_bad_input_with_one_line_and_exit_2(sim, ws, tmp_path):
    env = cli_env(sim)
    before = state(ws)
    broken = write_suite(tmp_path / "broken", [edit_case("c1", "images/a.png")], {"images/a.png": PNG[:80]})
    newer = tmp_path / "newer"
    shutil.copytree(ws, newer)
    con = sqlite3.connect(newer / "evalkit.sqlite")
    con.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    con.commit()
    con.close()
    not_a_db = tmp_path / "not-a-db"
    not_a_db.mkdir()
    (not_a_db / "evalkit.sqlite").write_bytes(b"this is not a database, just bytes " * 40)
    w = ["--workspace", str(ws)]
    cases = [
        (
            ["run", "--suite", "smoke", "--models", "qwen-edt", *w],
            ["unknown model id 'qwen-edt'", "did you mean qwen-edit"],
            2,
        ),
        (["run", "--suite", "smoke", "--models", "qwen-edit", "--run-id", "../../escape", *w], ["not a safe id"], 2),
        (["run", "--resume", "no-such-run", *w], ["cannot resume", "no-such-run"], 2),
        (["run", "--suite", str(broken), "--models", "qwen-edit", *w], ["case 'c1'", "corrupt or truncated"], 4),
        (["run", "--suite", "smoke", "--models", "qwen-edit", "--workspace", str(newer)], ["newer evalkit"], 2),
        (["runs", "--workspace", str(newer)], ["newer evalkit"], 2),
        (
            ["run", "--suite", "smoke", "--models", "qwen-edit", "--workspace", str(not_a_db)],
            ["not a readable evalkit database"],
            2,
        ),
    ]
    for args, words, max_lines in cases:
        assert_one_line_error(cli(args, env, tmp_path), *words, max_lines=max_lines)
    assert request_count(sim) == 0
    assert_intact(before, ws)


def test_cli_run_against_a_garbage_server_records_every_call_and_does_not_crash(ws_sim, tmp_path):
    server = garbage_server(200, HTML, "text/html")
    try:
        env = {**cli_env(ws_sim), "WAVESPEED_BASE_URL": server.base_url}
        proc = cli(
            [
                "run",
                "--suite",
                "smoke",
                "--models",
                "qwen-edit,seededit-v3",
                "--workspace",
                str(tmp_path / "ws"),
                "--json",
            ],
            env,
            tmp_path,
        )
    finally:
        server.stop()
    # nothing completed: exit 1 so cron and CI notice, with a recorded outcome for every call and no traceback
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    summary = json.loads(proc.stdout)
    assert summary["unknown"] == summary["planned"] == 2 and summary["completed"] == 0 and summary["cost_usd"] == 0
    with Workspace(tmp_path / "ws", create=False) as store:
        rows = [r for r in store.call_rows(summary["run_id"]) if r["status"] != "not_applicable"]
    assert all("not JSON" in r["error_message"] for r in rows)


@pytest.mark.parametrize(
    "args,words",
    [
        (
            ["run", "--suite", "smoke", "--provider-limit", "wavespeed:9"],
            ["bad provider limit", "[/IMAGES_PER_MINUTE]"],
        ),
        (["run", "--suite", "./drafts/[wip]/suite", "--models", "qwen-edit"], ["[wip]"]),
    ],
)
def test_cli_error_text_with_brackets_is_printed_verbatim(args, words, ws_sim, tmp_path):
    proc = cli([*args, "--workspace", str(tmp_path / "ws")], cli_env(ws_sim), tmp_path)
    assert_one_line_error(proc, *words, max_lines=3)


def test_cli_missing_key_exits_2_naming_the_variable(ws_sim, tmp_path):
    env = cli_env(ws_sim)
    env.pop("WAVESPEED_API_KEY")
    proc = cli(["run", "--suite", "smoke", "--models", "qwen-edit", "--workspace", str(tmp_path / "ws")], env, tmp_path)
    assert_one_line_error(proc, "WAVESPEED_API_KEY")
