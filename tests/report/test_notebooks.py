"""Every bundled notebook, executed by papermill in a real python3 kernel against the local servers.

The kernel is a separate process: it reaches the simulators through the environment it inherits
(``LocalStack.env()``: base URLs and keys, exactly as it would read real keys), never through
parameters. One run (made by ``run_benchmark.ipynb`` itself) is shared by the other notebooks."""

from __future__ import annotations

import nbformat
import pytest

from evalkit.report.build import execute_notebook
from evalkit.resources import notebooks_dir
from evalkit.scoring import score_run
from evalkit.store import Workspace
from tests.plugins.common import local_stack_in_env

pytestmark = pytest.mark.notebook

NOTEBOOKS = ["run_benchmark.ipynb", "compare.ipynb", "cost_quality.ipynb", "rate.ipynb", "model_choice_report.ipynb"]
MODELS = ["qwen-edit", "gpt-image-1-edit", "stability-inpaint", "hf-qwen-image-edit", "identity"]
RUN_ID = "nb-run"


def _outputs(nb) -> list[dict]:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]


def _text(nb) -> str:
    """Everything a reader sees: streams, plain text and HTML of every output."""
    parts = []
    for o in _outputs(nb):
        if o.get("output_type") == "stream":
            parts.append(o.get("text", ""))
        data = o.get("data", {})
        parts += [data.get("text/plain", ""), data.get("text/html", "")]
    return "\n".join(p if isinstance(p, str) else "".join(p) for p in parts)


def _count(nb, mime: str) -> int:
    return sum(mime in o.get("data", {}) for o in _outputs(nb))


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """The local servers, their env for the kernels, and the run made by run_benchmark.ipynb (scored)."""
    root = tmp_path_factory.mktemp("notebooks")
    with local_stack_in_env(TQDM_DISABLE="1") as stack:

        def execute(name: str, **params) -> nbformat.NotebookNode:
            out = root / f"out-{name}"
            execute_notebook(name, out, params, cwd=root, cell_timeout_s=120)
            return nbformat.read(str(out), as_version=4)

        bench = execute(
            "run_benchmark.ipynb",
            suite="smoke",
            models=",".join(MODELS),
            repeats=1,
            budget_usd=1.0,
            workspace=str(root / "ws"),
            run_id=RUN_ID,
            concurrency=4,
        )
        ws = Workspace(root / "ws")
        score_run(ws, RUN_ID, auto=True, judge=True, judge_overrides=stack.judge_overrides(), progress=False)
        yield {"root": root, "ws": ws, "execute": execute, "bench": bench, "stack": stack}
        ws.close()


def test_notebooks_are_committed_stripped_with_one_parameters_cell():
    for name in NOTEBOOKS:
        nb = nbformat.read(str(notebooks_dir() / name), as_version=4)
        nbformat.validate(nb)
        assert nb.metadata["kernelspec"]["name"] == "python3", name
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(not c.outputs and c.execution_count is None for c in code), f"{name} has outputs"
        tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1 and tagged[0] is code[0], (
            f"{name}: the first code cell must be the only parameters cell"
        )
        assert "key" not in tagged[0].source.lower() and "token" not in tagged[0].source.lower()


def test_run_benchmark_runs_the_suite_against_the_servers(lab):
    ws, nb = lab["ws"], lab["bench"]
    calls = ws.calls(RUN_ID)
    done = calls[calls.status == "completed"]
    assert set(done.model_id) == set(MODELS)  # every provider reached through the kernel's environment
    assert len(done) == 8 and not (calls.status == "failed").any()
    assert done.output_sha256.notna().all()
    hosted = done[done.provider != "local"]  # the offline identity baseline is a real output, not a simulation
    assert len(hosted) == 5 and hosted.simulated.all()
    run = ws.get_run(RUN_ID)
    assert run["status"] == "completed" and run["suite_name"] == "smoke"
    text = _text(nb)
    assert f"run id: {RUN_ID}" in text and "SIMULATED" in text
    assert "8 calls planned" in text and "list_price_usd" in text  # the estimate shown before spending
    assert "qwen-edit" in text  # the per-model status table


def test_compare_notebook_draws_grids_per_category_and_case_strips(lab):
    nb = lab["execute"](
        "compare.ipynb", workspace=str(lab["root"] / "ws"), run_id="", category="", cases="", quality="", thumb_px=96
    )
    text = _text(nb)
    assert f"run {RUN_ID}: captions show viescore_o (judge)" in text  # "" = the latest run, judged
    for category in ("background_change", "inpaint", "zoom_out"):
        assert f"<h3>{category}</h3>" in text
    assert text.count('class="evalkit-grid"') == 3 and "viescore_o" in text
    assert _count(nb, "image/jpeg") == 3  # one strip per category


def test_compare_notebook_filters_one_category(lab):
    nb = lab["execute"](
        "compare.ipynb",
        workspace=str(lab["root"] / "ws"),
        run_id=RUN_ID,
        category="inpaint",
        cases="",
        quality="ssim:auto",
        thumb_px=64,
    )
    text = _text(nb)
    assert text.count('class="evalkit-grid"') == 1 and "<h3>inpaint</h3>" in text and "ssim" in text
    assert _count(nb, "image/jpeg") == 1


def test_cost_quality_notebook_tables_fronts_and_tier_defaults(lab, tmp_path):
    tiers = tmp_path / "tiers.toml"
    tiers.write_text('[tiers.everyone]\ndescription = "Any model."\nmin_calls = 1\n')
    nb = lab["execute"](
        "cost_quality.ipynb", workspace=str(lab["root"] / "ws"), run_id=RUN_ID, quality="", tiers=str(tiers)
    )
    text = _text(nb)
    assert "VIEScore" in text  # the quality and why
    for model in MODELS:
        assert model in text
    assert "general_edit" in text and "background_change" in text  # per operation, per category
    assert _count(nb, "image/png") >= 2  # all operations + general_edit (the only one with 2+ scored models)
    assert "Tier everyone" in text and 'class="ek-ok"' in text


def test_rate_notebook_builds_the_widgets_headless_and_ranks_votes(lab):
    ws = lab["ws"]
    calls = ws.calls(RUN_ID)
    case = "chelsea-background-sofa"
    left = calls[(calls.case_id == case) & (calls.model_id == "qwen-edit")].call_id.item()
    right = calls[(calls.case_id == case) & (calls.model_id == "identity")].call_id.item()
    ws.add_rating(run_id=RUN_ID, case_id=case, rater="ana", call_left=left, call_right=right, choice="left")
    nb = lab["execute"]("rate.ipynb", workspace=str(lab["root"] / "ws"), run_id=RUN_ID, rater="tester", quality="")
    text = _text(nb)
    assert f"run {RUN_ID}, rater 'tester'" in text
    assert _count(nb, "application/vnd.jupyter.widget-view+json") == 2  # the rater and the explorer
    assert "1 human vote(s)" in text and "qwen-edit" in text and "identity" in text  # the Bradley–Terry table
    state = str(nb.metadata.get("widgets", {}))
    assert "A is better [a]" in state and "before/after" in state  # the widgets were really built


def test_model_choice_report_notebook_runs_headless(lab):
    nb = lab["execute"](
        "model_choice_report.ipynb", workspace=str(lab["root"] / "ws"), run_id=RUN_ID, quality="", tiers=""
    )
    text = _text(nb)
    assert "SIMULATED" in text and "Tier standard" in text and "Judges drift" in text
    assert _count(nb, "image/png") >= 2 and "evalkit-grid" in text
    assert _count(nb, "application/vnd.jupyter.widget-view+json") == 0  # no widgets in the report
