"""The judge on a session (issue 24): each turn is judged on its own input (the same model's previous output),
its own output and that turn's instruction — what VIEScore's prompt sees for an iterative edit."""

from __future__ import annotations

from evalkit.credentials import Secret
from evalkit.scoring import score_run
from evalkit.sim.judge import mean_abs_diff
from evalkit.store import Workspace
from tests.engine.test_sessions import SESSIONS, module_sim, run, sim, write_session_suite  # noqa: F401


def test_the_judge_sees_each_turns_input_output_and_instruction(sim, judge_sim, tmp_path) -> None:  # noqa: F811
    run(sim, write_session_suite(tmp_path / "sess", single=False), tmp_path / "ws", "j", models=["qwen-edit"])
    overrides = {"base_url": judge_sim.base_url, "api_key": Secret(judge_sim.api_key), "model": judge_sim.sim.model}
    with Workspace(tmp_path / "ws", create=False) as ws:
        score_run(ws, "j", auto=False, judge=True, judge_overrides=overrides, progress=False)
        parent = ws.output_image("j/cat.t2/qwen-edit/0")
        output = ws.output_image("j/cat.t3/qwen-edit/0")
        original = ws.case_images("j", "cat.t1")[0][0]
    asked = [r for r in judge_sim.sim.requests if SESSIONS["cat"][2] in r.text]
    assert len(asked) == 1 and len(asked[0].images) == 2
    source, edited = asked[0].images
    # the source shown is turn 2's output (this turn's input), not the session's original
    assert mean_abs_diff(source, parent) < 1.0 < mean_abs_diff(source, original)
    assert mean_abs_diff(edited, output) < 1.0
    assert not any(SESSIONS["cat"][1] in r.text and SESSIONS["cat"][2] in r.text for r in judge_sim.sim.requests)
