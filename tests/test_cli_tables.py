"""The CLI's tables at a normal terminal width (COLUMNS=100): ids and endpoints are never split mid-word,
long fields move to --wide / --json, and `models --json` carries every fact with its source."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from evalkit.catalog import Catalog

pytestmark = pytest.mark.e2e  # the CLI in subprocesses at COLUMNS=100

ROOT = Path(__file__).resolve().parents[1]


def cli(
    *args: str, cwd: Path | None = None, columns: int = 100, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": str(columns), "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1", **(extra_env or {})}
    env.pop("EVALKIT_SUITES_PATH", None)
    return subprocess.run(
        [sys.executable, "-m", "evalkit", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=120
    )


def cells(output: str, column: int = 0) -> list[str]:
    """The text of one column in each body row of a rich table (rows are lines starting with │)."""
    return [line.split("│")[column + 1].strip() for line in output.splitlines() if line.startswith("│")]


def test_models_table_fits_100_columns_and_never_splits_an_id() -> None:
    res = cli("models")
    assert res.returncode == 0, res.stderr
    assert max(len(line) for line in res.stdout.splitlines()) <= 100
    ids = {m.id for m in Catalog.load()}
    shown = [c.removesuffix(" *") for c in cells(res.stdout) if c]
    assert set(shown) == ids  # every id whole on one line: no fragment, no continuation line
    assert all(c == "" or c.removesuffix(" *") in ids for c in cells(res.stdout))
    # a model whose *price* is uncertain is marked in the price column, apart from other caveats (*)
    low_price = [m for m in Catalog.load() if m.facts.get("price") and m.facts["price"].confidence == "low"]
    assert low_price
    rows = {r.split("│")[1].strip().removesuffix(" *"): r for r in res.stdout.splitlines() if r.startswith("│")}
    for m in low_price:
        if m.price_for_1024() is not None:
            assert rows[m.id].split("│")[3].strip().endswith("?")
    assert "low confidence" in res.stdout


def test_models_wide_shows_endpoints_whole_and_json_has_every_fact() -> None:
    wide = cli("models", "--wide")
    endpoints = {m.endpoint for m in Catalog.load()}
    assert set(cells(wide.stdout, 4)) == endpoints
    data = json.loads(cli("models", "--json").stdout)
    by_id = {d["id"]: d for d in data}
    for m in Catalog.load():
        d = by_id[m.id]
        assert set(d["facts"]) == set(m.facts)
        assert all({"source", "confidence"} <= set(f) for f in d["facts"].values())
        assert {"notes", "sync_mode", "base64_output", "default_output_format"} <= set(d)
    assert any(f["confidence"] == "high" for d in data for f in d["facts"].values())


def test_a_filter_that_matches_nothing_says_so_and_lists_valid_values() -> None:
    res = cli("models", "--provider", "local", "--operation", "multi_image")
    assert res.returncode == 0 and "no local model supports 'multi_image'" in res.stdout
    assert "inpaint" in res.stdout
    res = cli("models", "--provider", "wavespeeed")
    assert res.returncode == 2 and "providers: huggingface, local, stability, wavespeed" in res.stderr


@pytest.fixture(scope="module")
def workspace_with_runs(tmp_path_factory) -> Path:
    import evalkit

    ws = tmp_path_factory.mktemp("tables") / "ws"
    evalkit.run(
        "smoke", "provider:local", workspace=ws, run_id="a-rather-long-run-name-for-the-table-test", progress=False
    )
    return ws


def test_runs_suites_and_plan_tables_fit(workspace_with_runs: Path, tmp_path: Path) -> None:
    res = cli("runs", "-w", str(workspace_with_runs))
    assert res.returncode == 0, res.stderr
    assert cells(res.stdout) == ["a-rather-long-run-name-for-the-table-test"]
    assert max(len(line) for line in res.stdout.splitlines()) <= 100
    wide = cli("runs", "-w", str(workspace_with_runs), "--wide")
    assert "wall_s" in wide.stdout
    # every catalogue model is callable once each provider has a key (a dry run sends nothing)
    keys = {"WAVESPEED_API_KEY": "k", "STABILITY_API_KEY": "k", "HF_TOKEN": "k"}
    plan = cli("run", "--suite", "smoke", "--dry-run", "-w", str(workspace_with_runs), extra_env=keys)
    assert plan.returncode == 0, plan.stderr
    ids = {m.id for m in Catalog.load()} | {"TOTAL"}
    assert set(cells(plan.stdout)) <= ids and len(cells(plan.stdout)) == len(ids)
    assert max(len(line) for line in plan.stdout.splitlines()) <= 100
    suites = cli("suites", cwd=tmp_path)
    assert {"core", "smoke"} <= set(cells(suites.stdout)) - {""}
    assert max(len(line) for line in suites.stdout.splitlines()) <= 100
