"""The report's session grids (issue 24): each session as rows of turns per model, SIMULATED-labelled."""

from __future__ import annotations

import html
import re

import pytest

from evalkit.errors import InvalidInputError
from evalkit.report import category_grids, session_grids
from evalkit.report.sessions import session_grid_html, session_ids
from evalkit.store import Workspace
from tests.engine.test_sessions import SESSIONS, module_sim, run, sim, write_session_suite  # noqa: F401


def test_session_grid_shows_each_models_turns_in_order_with_failures_and_not_reached(sim, tmp_path) -> None:  # noqa: F811
    sim.sim.add_fault("task_failed", model="seededit-v3", prompt=SESSIONS["cat"][1])
    suite = write_session_suite(tmp_path / "sess")
    run(sim, suite, tmp_path / "ws", "g", models=["qwen-edit", "seededit-v3"])
    with Workspace(tmp_path / "ws", create=False) as ws:
        assert session_ids(ws, "g") == ["cat", "cup"]
        grid = session_grid_html(ws, "g", "cat", thumb_px=64)
        assert "SIMULATED" in grid  # the simulator's outputs are never shown as model outputs
        rows = re.findall(r"<tr><th[^>]*>([^<]+)</th>(.*?)</tr>", grid.split("<tbody>")[1])
        assert [m for m, _ in rows] == ["qwen-edit", "seededit-v3"]
        cells = {m: re.findall(r'<td class="cell (\w+)"', body) for m, body in rows}
        assert cells["qwen-edit"] == ["source", "ok", "ok", "ok"]  # original → turn 1 → 2 → 3
        assert cells["seededit-v3"] == ["source", "ok", "failed", "na"]
        assert "not reached" in grid and 'data-call="g/cat.t3/seededit-v3/0"' in grid
        for k, prompt in enumerate(SESSIONS["cat"], start=1):
            assert f"turn {k}<br><span class='cap'>{prompt}" in grid.replace("&#x27;", "'")
        with pytest.raises(InvalidInputError, match="no session"):
            session_grid_html(ws, "g", "nope")
        grids = dict(session_grids(ws, "g"))
        assert set(grids) == {"cat", "cup"}
        # a session's turns are not also drawn as single cases in the category grids
        assert all(".t1" not in html and ".t2" not in html for _, html in category_grids(ws, "g"))


def test_sessions_summary_table_in_the_report(sim, tmp_path) -> None:  # noqa: F811
    from evalkit.report import sessions_summary_html
    from evalkit.scoring import auto_score_run

    sim.sim.add_fault("task_failed", model="seededit-v3", prompt=SESSIONS["cat"][1])
    run(sim, write_session_suite(tmp_path / "sess"), tmp_path / "ws", "t", models=["qwen-edit", "seededit-v3"])
    with Workspace(tmp_path / "ws", create=False) as ws:
        auto_score_run(ws, "t", progress=False, workers=1)
        page = sessions_summary_html(ws, "t", "ssim:auto")
        assert "SIMULATED" in page
        rows = dict(re.findall(r"<tr><td>([^<]+)</td><td>([^<]+)</td>", page))
        assert rows == {"qwen-edit": "2/2", "seededit-v3": "1/2"}  # sessions whose every turn completed
        assert "turn 3" in page and "drift ssim" in page


def test_the_explorer_shows_a_chosen_session_turn_after_turn(sim, tmp_path) -> None:  # noqa: F811
    from evalkit.report.widgets import Explorer

    run(sim, write_session_suite(tmp_path / "sess"), tmp_path / "ws", "e", models=["qwen-edit", "seededit-v3"])
    with Workspace(tmp_path / "ws", create=False) as ws:
        explorer = Explorer(ws, "e")
        assert list(explorer.session.options) == ["cat", "cup"]
        assert 'data-session="cat"' in explorer.session_view.value and "SIMULATED" in explorer.session_view.value
        explorer.session.value = "cup"
        assert 'data-session="cup"' in explorer.session_view.value
        assert SESSIONS["cup"][2] in explorer.session_view.value


def test_the_blind_rater_compares_two_models_final_results_of_a_session(sim, tmp_path) -> None:  # noqa: F811
    from evalkit.report.widgets import Rater

    run(sim, write_session_suite(tmp_path / "sess"), tmp_path / "ws", "r", models=["qwen-edit", "seededit-v3"])
    with Workspace(tmp_path / "ws", create=False) as ws:
        rater = Rater(ws, "r", "ana")
        assert sorted(rater.cases) == ["cat.t3", "cup.t3", "single"]  # a session's final turn, never its middle
        for _ in range(6):
            pair = rater.current
            assert pair is not None
            if pair.case_id.endswith(".t3"):
                sid = pair.case_id.split(".")[0]
                assert all(html.escape(p) in rater.instruction.value for p in SESSIONS[sid])
                assert {pair.call_left, pair.call_right} == {
                    f"r/{pair.case_id}/qwen-edit/0",
                    f"r/{pair.case_id}/seededit-v3/0",
                }
            rater.vote("tie")


def test_the_report_writes_a_sessions_csv(sim, tmp_path) -> None:  # noqa: F811
    import pandas as pd

    from evalkit.report import prepare_report, write_tables

    run(sim, write_session_suite(tmp_path / "sess"), tmp_path / "ws", "c", models=["qwen-edit"])
    with Workspace(tmp_path / "ws", create=False) as ws:
        paths = write_tables(prepare_report(ws, "c"), tmp_path / "out")
    assert tmp_path / "out" / "sessions.csv" in paths
    table = pd.read_csv(tmp_path / "out" / "sessions.csv")
    assert sorted(table["session_id"]) == ["cat", "cup"] and table["complete"].all()
