"""notebooks/trends.ipynb: committed stripped with one parameters cell (suite, last), and executed by papermill
in a real kernel over a synthetic history it prints the trends and draws the history."""

from __future__ import annotations

import nbformat
import pytest

from evalkit.report.build import execute_notebook
from evalkit.resources import notebooks_dir
from evalkit.store import Workspace
from tests.plugins.histories import Behaviour, write_history

pytestmark = pytest.mark.notebook
B = Behaviour()


def test_the_notebook_is_committed_stripped_with_suite_and_last_parameters():
    nb = nbformat.read(str(notebooks_dir() / "trends.ipynb"), as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and tagged[0] is code[0]
    assert "suite =" in tagged[0].source and "last =" in tagged[0].source


def test_papermill_runs_it_over_a_history(tmp_path):
    ws = Workspace(tmp_path / "ws")
    steady = {"qwen-edit": B, "flux-kontext-pro": B.but(latency_ms=4000)}
    write_history(ws, "nightly", [steady] * 4 + [{**steady, "qwen-edit": B.but(latency_ms=4000)}], seed=3)
    ws.close()
    out = tmp_path / "out.ipynb"
    execute_notebook(
        "trends.ipynb",
        out,
        {"workspace": str(tmp_path / "ws"), "suite": "nightly", "last": 5, "models": "", "quality": ""},
        cwd=tmp_path,
        cell_timeout_s=120,
    )
    nb = nbformat.read(str(out), as_version=4)
    text = "\n".join(
        o.get("text", "") if o.get("output_type") == "stream" else str(o.get("data", {}).get("text/plain", ""))
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
    )
    assert "REGRESSION" in text and "qwen-edit" in text
    assert sum("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", [])) == 1
