"""evalkit.report.build: the pieces the report notebook calls (no kernel), and build_report end to end —
papermill in a real kernel on a real run against the local servers, a 24 × 20 size bound, a failing
cell, and no key in anything written or printed."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from scipy import stats

from evalkit.decide.quality import QualitySpec
from evalkit.decide.tables import model_table, style_table
from evalkit.engine.runner import run
from evalkit.errors import EvalkitError, InvalidInputError
from evalkit.report import (
    JUDGE_CAVEATS,
    build_report,
    category_grids,
    caveats,
    caveats_html,
    choose_quality,
    export_html,
    external_references,
    glance_html,
    grid_thumb_px,
    groups,
    header_html,
    parse_quality,
    prepare_report,
    quality_string,
    recommendations_html,
    select_cases,
    split_ids,
    strip_cases,
    styled,
)
from evalkit.report.build import _kernel_transport_config
from evalkit.scoring import score_run
from evalkit.store import Workspace
from tests.plugins.common import local_stack_in_env
from tests.plugins.synthetic import ERASE_MODELS as S_ERASE_MODELS
from tests.plugins.synthetic import build_grid_workspace

MODELS = "qwen-edit,gpt-image-1-edit,image-zoom-out,stability-inpaint,hf-qwen-image-edit,identity"
TIERS = """
schema = "evalkit.tiers/1"
[tiers.budget]
description = "Cheap edits."
max_cost_usd = 0.03
min_calls = 1
[tiers.best]
description = "Best quality."
min_calls = 1
"""


def _code_elements(page: str) -> list[str]:
    """Code inputs and In/Out prompts in an exported page (markdown cells keep their jp-InputArea: that
    is their rendered text, so only code cells' input areas count). Asserts there are code cells at all."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(page, "html.parser")
    assert soup.select(".jp-CodeCell"), "no code cell in the page: the check would be vacuous"
    found = soup.select(
        ".jp-CodeCell .jp-InputArea, .jp-InputPrompt, .jp-OutputPrompt, .jp-CodeMirrorEditor, .jp-CodeCell .highlight"
    )
    return [str(e)[:80] for e in found]


# -- pieces (no kernel) ------------------------------------------------------------------------------


def test_quality_specs_round_trip_with_versions():
    assert parse_quality("") is None and parse_quality(None) is None
    assert parse_quality("ssim") == QualitySpec("ssim", "auto")
    spec = parse_quality("viescore_o:judge@gpt-4.1:2025|viescore-gedit-v1|jpeg")
    assert spec == QualitySpec("viescore_o", "judge", "gpt-4.1:2025|viescore-gedit-v1|jpeg")
    assert parse_quality(quality_string(spec)) == spec
    assert quality_string(("l1", "auto")) == "l1:auto" and quality_string(None) == ""
    assert parse_quality("l1").higher_is_better is False
    for bad in (":judge", "ssim@", "ssim:robot"):
        with pytest.raises(InvalidInputError):
            parse_quality(bad)


def test_quality_is_the_judge_when_scored_else_ssim_and_explicit_ones_must_exist(synthetic_workspace, tmp_path):
    ws, rid = synthetic_workspace.ws, synthetic_workspace.run_id
    spec, why = choose_quality(ws, rid)
    assert (spec.metric, spec.source, spec.version) == ("viescore_o", "judge", "judge-v1") and "VIEScore" in why
    assert choose_quality(ws, rid, "ssim:auto")[0] == QualitySpec("ssim", "auto", "auto-1")
    with pytest.raises(InvalidInputError) as err:
        choose_quality(ws, rid, "bogus:auto")
    assert (
        "no scored values for quality bogus (auto)" in str(err.value)
        and "ssim:auto, viescore_o:judge" in err.value.hint
    )
    # without judge scores: ssim, with the warning that it rewards doing nothing
    ws.create_run(
        "bare",
        suite_name="s",
        suite_path=None,
        suite_fingerprint=None,
        catalog_fingerprint=None,
        models=["a"],
        repeats=1,
        budget_usd=None,
        config={},
    )
    spec, why = choose_quality(ws, "bare")
    assert spec == QualitySpec("ssim", "auto") and "no scores yet" in why


def test_report_sections_on_known_numbers(synthetic_workspace):
    data = prepare_report(synthetic_workspace.ws, synthetic_workspace.run_id)
    assert data.quality.source == "judge" and not data.simulated
    assert "SIMULATED" not in header_html(data)
    rec = recommendations_html(data)
    for tier in ("free", "standard", "premium"):
        assert f"Tier {tier}" in rec
    assert rec.index("Tier free") < rec.index("Tier standard") < rec.index("Tier premium")
    notes = caveats(data)
    assert all(c in notes for c in JUDGE_CAVEATS)
    # gamma's g8 reply did not parse; alpha's and base's erase outputs were never judged
    assert any("7 completed call(s) have no viescore_o (judge) score" in n for n in notes)
    assert any("Not in the catalogue" in n and "alpha" in n for n in notes)
    assert any("Too little evidence" in n and "erase (0 scored case(s))" in n for n in notes)
    # at a glance: one row per operation, one column per tier, before the per-tier tables
    glance = glance_html(data)
    assert re.findall(r"<tr><th>([^<]*)</th>", glance) == ["operation", "erase", "general_edit"]
    assert re.findall(r"<th>tier ([^<]*)</th>", glance) == ["free", "standard", "premium"]
    assert rec.index("At a glance") < rec.index("Tier free")


def test_model_table_view_keeps_the_columns_a_reader_needs_and_missing_values_neutral(synthetic_workspace):
    data = prepare_report(synthetic_workspace.ws, synthetic_workspace.run_id)
    html = styled(data.models).to_html()
    headers = re.findall(r'<th [^>]*class="col_heading[^"]*"[^>]*>([^<]*)</th>', html)
    assert headers == [
        "model",
        "provider",
        "success",
        "price / edit",
        "p50 latency",
        "p95 latency",
        "quality",
        "95% CI",
        "cases scored",
        "quality per $",
    ]
    for gone in ("total_cost_usd", "unscored", "value_note", "p95_inference_ms"):
        assert gone not in html
    assert "— (price unknown)" in html and "— (free)" in html  # why quality per $ is undefined
    assert "background-color: #000000" not in html  # a missing price is not painted in the gradient's "bad" black
    # the same in the raw style_table (used by other notebooks): mystery's price cell is neutral
    raw = style_table(model_table(synthetic_workspace.ws, synthetic_workspace.run_id)).to_html()
    assert "background-color: #000000" not in raw and "background-color: transparent" in raw
    grouped = styled(data.by_operation, group="operation").to_html()
    assert grouped.count(">general_edit<") == 1 and grouped.count(">erase<") == 1  # each group named once
    assert "border-top: 2px solid #888" in grouped


def test_pareto_groups_hold_only_models_that_attempted(synthetic_workspace):
    data = prepare_report(synthetic_workspace.ws, synthetic_workspace.run_id)
    parts = groups(data.by_operation, "operation")
    assert [name for name, _ in parts] == ["general_edit"]  # erase has no judge scores: nothing to trade off
    assert all((t["calls"] > 0).all() for _, t in parts)
    ssim = prepare_report(synthetic_workspace.ws, synthetic_workspace.run_id, quality="ssim:auto")
    erase = dict(groups(ssim.by_operation, "operation"))["erase"]
    assert sorted(erase["model_id"]) == sorted(S_ERASE_MODELS)  # not the 4 that cannot erase, as "not plotted"
    assert erase.attrs["quality"]["metric"] == "ssim"


def test_caveats_put_doubtful_prices_in_a_table_and_the_rest_in_details(synthetic_workspace):
    ws, rid = synthetic_workspace.ws, synthetic_workspace.run_id
    ws.create_run(
        "cat",
        suite_name="s",
        suite_path=None,
        suite_fingerprint=None,
        catalog_fingerprint=None,
        models=["hf-qwen-image-edit", "qwen-edit", "alpha"],
        repeats=1,
        budget_usd=None,
        config={},
    )
    data = prepare_report(ws, rid)
    data.run = ws.get_run("cat")
    page = caveats_html(data)
    assert re.search(r"<tr><td[^>]*>hf-qwen-image-edit</td><td>price</td><td>low</td>", page)
    assert page.index("Prices below high confidence") < page.index("<details>") < page.index("</details>")
    prices = page[: page.index("<details>")]
    assert ">qwen-edit</td><td>price</td><td>medium</td>" in prices
    assert prices.index(">hf-qwen-image-edit<") < prices.index(">qwen-edit<")  # low before medium
    assert "<td>price</td>" not in page[page.index("<details>") :]
    notes = caveats(data)
    assert any("catalogue fact(s) about the models in this run are below high confidence" in n for n in notes)
    assert any("Not in the catalogue" in n and "alpha" in n for n in notes)
    assert not any(len(n) > 600 for n in notes)  # no giant paragraph


def test_report_asks_for_encrypted_kernel_transport_when_available():
    import zmq
    from jupyter_client.manager import KernelManager

    config = _kernel_transport_config()
    if "transport_encryption" in KernelManager.class_traits() and zmq.has("curve"):
        assert config.KernelManager.transport_encryption == "auto"
    else:
        assert "KernelManager" not in config


def test_case_filters_and_grid_sizes(synthetic_workspace):
    ws, rid = synthetic_workspace.ws, synthetic_workspace.run_id
    assert split_ids(" a, ,b ") == ["a", "b"] and split_ids("") is None and split_ids(["x"]) == ["x"]
    assert list(select_cases(ws, rid, categories="style")["case_id"]) == ["g5", "g6", "g7", "g8"]
    assert strip_cases(ws, rid) == ["g1", "e1", "g5"]  # first case of color, object, style
    grids = category_grids(ws, rid, categories="color,object", thumb_px=64)
    assert [name for name, _ in grids] == ["color", "object"]
    assert grids[0][1].count("data:image/jpeg;base64,") == 4 * (1 + 6) - 2  # delta failed on g3, g4
    assert grids[0][1].count('class="cell failed"') == 2
    # erase: only the two models that can erase get columns; the others are named once
    header = re.findall(r"<th>([^<]*)</th>", grids[1][1])
    assert header[0] == "source" and sorted(header[1:]) == ["alpha", "base"]
    assert "not applicable (4): beta, gamma, delta, mystery" in grids[1][1] and 'class="cell na"' not in grids[1][1]
    assert grids[1][1].count("data:image/jpeg;base64,") == 3 * (1 + 2)
    with pytest.raises(InvalidInputError, match=r"unknown category\(s\) \['colour'\]"):
        category_grids(ws, rid, categories="colour")
    assert grid_thumb_px(100) == 112 and grid_thumb_px(2400) == 56 and grid_thumb_px(10**6) == 48


def test_external_references_finds_what_a_browser_would_fetch():
    page = (
        '<script src="https://cdn.example/require.js"></script><img src="data:image/png;base64,AA">'
        '<link rel="stylesheet" href="//fonts.example/x.css"><style>a{background:url("http://x/y.png")}'
        '@import "https://z/a.css";</style><a href="https://docs.example">docs</a>'
    )
    assert external_references(page) == [
        "https://cdn.example/require.js",
        "//fonts.example/x.css",
        "http://x/y.png",
        "https://z/a.css",
    ]


def test_export_drops_code_parameters_and_stderr(tmp_path):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("run_id = 'x'")
    params.metadata["tags"] = ["parameters"]
    injected = nbformat.v4.new_code_cell("# Parameters\nrun_id = 'secret-looking-run'")
    injected.metadata["tags"] = ["injected-parameters"]
    shown = nbformat.v4.new_code_cell("print('hello')")
    shown.outputs = [
        nbformat.v4.new_output("stream", name="stdout", text="visible text\n"),
        nbformat.v4.new_output("stream", name="stderr", text="a noisy warning\n"),
    ]
    nb.cells = [params, injected, nbformat.v4.new_markdown_cell("## Heading"), shown]
    nb.metadata["papermill"] = {"parameters": {"run_id": "secret-looking-run"}}
    src = tmp_path / "nb.ipynb"
    nbformat.write(nb, src)
    page = export_html(src, tmp_path / "nb.html", title="T").read_text()
    assert "visible text" in page and "Heading" in page and "<title>T</title>" in page
    for gone in ("secret-looking-run", "a noisy warning", "print("):
        assert gone not in page
    assert not _code_elements(page)
    assert external_references(page) == []
    assert "mathjax" not in page.lower() and "require.js" not in page


# -- end to end on a real run ----------------------------------------------------------------------------


def _run_and_score(ws_path: Path, stack, run_id: str = "r1") -> str:
    result = run(
        "smoke",
        MODELS,
        workspace=ws_path,
        run_id=run_id,
        provider_options=stack.provider_options(),
        progress=False,
        budget_usd=2.0,
    )
    assert result.completed == 9 and result.failed == 0
    score_run(
        Workspace(ws_path), run_id, auto=True, judge=True, judge_overrides=stack.judge_overrides(), progress=False
    )
    return result.run_id


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """A real smoke run on the local servers (keys only in the environment), scored, with a report."""
    root = tmp_path_factory.mktemp("report")
    with local_stack_in_env() as stack:
        run_id = _run_and_score(root / "ws", stack)
        tiers = root / "tiers.toml"
        tiers.write_text(TIERS)
        ws = Workspace(root / "ws")
        report = build_report(ws, run_id, out_dir=root / "out", tiers=tiers)
        keys = [v for k, v in stack.env().items() if k.endswith(("_KEY", "_TOKEN"))]
        yield {"ws": ws, "run_id": run_id, "report": report, "root": root, "keys": keys}
        ws.close()


@pytest.mark.notebook
def test_report_html_recommends_first_then_shows_embedded_evidence(smoke_run):
    r = smoke_run["report"]
    page = r.html.read_text(encoding="utf-8")
    assert r.html == (smoke_run["root"] / "out" / "model_choice_report.html").resolve()
    assert not _code_elements(page)
    assert "prepare_report(" not in page and "# Parameters" not in page  # no code, no injected parameters
    assert "SIMULATED" in page and 'class="ek-banner"' in page
    defaults = json.loads(r.tier_defaults.read_text())
    assert defaults["schema"] == "evalkit.tier_defaults/1" and defaults["simulated"] is True
    assert defaults["quality"]["metric"] == "viescore_o"
    best = defaults["tiers"]["best"]["operations"]["general_edit"]
    assert best["status"] == "ok" and best["default"] in MODELS.split(",")
    rec, evidence = page.index("Recommendations per tier"), page.index("Evidence")
    first_image = page.index("<img ")
    assert rec < page.index(f'<span class="ek-ok">{best["default"]}</span>') < evidence < first_image
    assert page.index("Caveats") > first_image
    assert external_references(page) == []
    assert not re.search(r"<img[^>]+src=[\"'](?!data:)", page)  # every image inlined
    assert page.count("data:image/png;base64,") >= 3  # Pareto fronts (overall + operations) and latency
    assert page.count("data:image/jpeg;base64,") >= 9 + 3  # every output and source thumbnail
    # a low-confidence catalogue price, from the catalogue's facts, in the caveats' price table
    assert re.search(r"<tr><td[^>]*>hf-qwen-image-edit</td><td>price</td><td>low</td>", page)
    assert page.index("Caveats") < page.index("Prices below high confidence") < page.index("<details>")
    assert "Judges drift" in page
    # readable captions and rationales: no "nan" prompt, no "price ?", no empty interval
    assert "(no prompt: zoom_out)" in page and "<br>nan</div>" not in page
    assert "price ?" not in page and "price unknown" in page  # hf-qwen-image-edit has no list price
    assert "—–—" not in page and "95% CI —" not in page  # one case per operation: no interval, no CI phrase
    # per-category grids: only the models that ran (zoom_out: the zoom model and the identity baseline)
    zoom = page[page.index("<h4>zoom_out</h4>") :]
    zoom = zoom[: zoom.index("</table>")]
    assert sorted(re.findall(r"<th>([^<]*)</th>", zoom)[1:]) == ["identity", "image-zoom-out"]
    assert "not applicable (4)" in zoom
    # the main model table: the reader's columns, no horizontal sprawl
    assert "price / edit" in page and "quality per $" in page and "total_cost_usd" not in page


@pytest.mark.notebook
def test_report_writes_tables_and_the_executed_notebook(smoke_run):
    r, run_id = smoke_run["report"], smoke_run["run_id"]
    assert sorted(p.name for p in r.tables) == [
        "by_category.csv",
        "by_operation.csv",
        "failures.csv",
        "models.csv",
        "recommendations.csv",
    ]
    models = pd.read_csv(r.out_dir / "models.csv")
    assert sorted(models["model_id"]) == sorted(MODELS.split(","))
    assert models.loc[models.model_id == "identity", "calls"].item() == 3
    by_op = pd.read_csv(r.out_dir / "by_operation.csv")
    assert set(by_op["operation"]) == {"general_edit", "inpaint", "zoom_out"}
    recs = pd.read_csv(r.out_dir / "recommendations.csv")
    assert set(recs["tier"]) == {"budget", "best"}
    nb = nbformat.read(str(r.notebook), as_version=4)
    assert set(nb.metadata["papermill"]["parameters"]) == {"workspace", "run_id", "quality", "tiers"}
    assert nb.metadata["papermill"]["parameters"]["run_id"] == run_id
    assert not any("papermill-error-cell-tag" in c.metadata.get("tags", []) for c in nb.cells)


@pytest.mark.notebook
def test_a_failing_cell_is_named_with_the_partial_notebook(smoke_run, tmp_path):
    with pytest.raises(EvalkitError) as err:
        build_report(smoke_run["ws"], smoke_run["run_id"], out_dir=tmp_path / "bad", quality="bogus_metric:auto")
    e = err.value
    assert "model_choice_report.ipynb: cell 3 of" in e.message  # 1-based, counting the bundled notebook's cells
    assert "`data = report.prepare_report(workspace, run_id," in e.message  # the failing cell's first line
    assert "raised InvalidInputError" in e.message and "bogus_metric" in e.message
    partial = (tmp_path / "bad" / "model_choice_report.ipynb").resolve()
    assert str(partial) in e.hint and partial.is_file()
    nb = nbformat.read(str(partial), as_version=4)
    assert any("papermill-error-cell-tag" in c.metadata.get("tags", []) for c in nb.cells)
    assert not (tmp_path / "bad" / "model_choice_report.html").exists()
    data = partial.read_bytes()  # the keys were in the kernel's environment while this cell failed
    assert len(smoke_run["keys"]) == 4 and not any(k.encode() in data for k in smoke_run["keys"])


def test_unknown_run_and_missing_tiers_fail_before_any_kernel(synthetic_workspace, tmp_path):
    with pytest.raises(InvalidInputError, match="no run 'nope'"):
        build_report(synthetic_workspace.ws, "nope", out_dir=tmp_path / "x")
    with pytest.raises(InvalidInputError, match="tiers file"):
        build_report(synthetic_workspace.ws, "synth", out_dir=tmp_path / "x", tiers=tmp_path / "missing.toml")
    assert not (tmp_path / "x").exists()


@pytest.mark.notebook
def test_a_24_case_20_model_report_stays_small(tmp_path):
    ws = build_grid_workspace(tmp_path / "ws", 24, 20, distinct_outputs=48)  # each cell still embeds its own copy
    r = build_report(ws, "grid", out_dir=tmp_path / "out")
    size_mb = r.html.stat().st_size / 1e6
    page = r.html.read_text(encoding="utf-8")
    assert page.count("data:image/jpeg;base64,") >= 24 * 21  # every output and source is in it…
    assert size_mb < 15, f"report is {size_mb:.1f} MB"  # …as a small thumbnail
    assert external_references(page) == []
    ws.close()


# -- secrets ---------------------------------------------------------------------------------------------


@pytest.mark.notebook
def test_no_key_reaches_any_file_or_output(tmp_path, capfd):
    """Keys live in the environment during the run and the report; none may land in the workspace
    (SQLite database and WAL included), the executed notebooks, the HTML, the CSV/JSON, or the output."""
    with local_stack_in_env() as stack:
        env = stack.env()
        keys = [env[k] for k in ("WAVESPEED_API_KEY", "STABILITY_API_KEY", "HF_TOKEN", "EVALKIT_JUDGE_API_KEY")]
        assert all(len(k) >= 16 for k in keys)
        run_id = _run_and_score(tmp_path / "ws", stack, "canary")
        ws = Workspace(tmp_path / "ws")
        build_report(ws, run_id, out_dir=tmp_path / "out")
        files = [p for p in tmp_path.rglob("*") if p.is_file()]
        assert any(p.name.endswith("-wal") for p in files) and any(p.suffix == ".html" for p in files)
        assert any(p.suffix == ".csv" for p in files) and any(p.name == "tier_defaults.json" for p in files)
        for path in files:  # read while the workspace is open, so the WAL is still there
            data = path.read_bytes()
            for key in keys:
                assert key.encode() not in data, f"a key leaked into {path.relative_to(tmp_path)}"
        ws.close()
    printed = capfd.readouterr()
    for key in keys:
        assert key not in printed.out and key not in printed.err
    if "KernelManager" in _kernel_transport_config():  # the kernel's sockets were encrypted: no TCP warning
        assert "without encryption" not in printed.err


# ---- "How far to trust the quality column" -----------------------------------------------------------------


def test_trust_section_names_the_judge_unscored_reasons_and_warns_without_ratings(synthetic_workspace):
    from evalkit.report import trust_html

    data = prepare_report(synthetic_workspace.ws, synthetic_workspace.run_id)
    page = trust_html(data)
    assert "judge-v1" in page  # the stored judge version (no preset matches a custom judge)
    assert "none (custom judge settings)" in page
    assert re.search(r"unscored outputs</th><td>\d+ — \w+", page)  # the count with its reasons
    assert "no human scores for this run" in page and "Warning:" in page
    assert "Agreement with the run" not in page  # no table without ratings


def test_trust_section_shows_agreement_with_intervals_and_too_few_ratings(synthetic_workspace):
    from evalkit.report import trust_html

    ws = synthetic_workspace.ws
    scores = ws.scores(synthetic_workspace.run_id)
    judged = scores[(scores["metric"] == "viescore_o") & (scores["status"] == "scored")]
    for i, row in enumerate(judged.itertuples()):
        for rater, shift in (("ana", 0.0), ("bo", 0.5)):
            v = min(1.0, max(0.0, round(2 * (row.value / 10 + (shift if i % 3 == 0 else 0))) / 2))
            ws.add_rating(
                run_id=synthetic_workspace.run_id, case_id=row.case_id, rater=rater, kind="single",
                call_id=row.call_id, instruction=v, quality=1, scale="imagenhub",
            )  # fmt: skip
    data = prepare_report(ws, synthetic_workspace.run_id)
    page = trust_html(data)
    assert "Agreement with the run" in page and "all operations" in page and "general_edit" in page
    n = len(judged)
    assert n == 41 and f"<td>all operations</td><td>{n}</td>" in page
    # the figures, worked out here with scipy from the inserted ratings: a human score is sqrt(instruction ·
    # quality) on the imagenhub scale (quality 1 here), averaged over the raters of an output
    human = pd.DataFrame(
        [
            {"call_id": r.call_id, "rater": r.rater, "score": r.instruction**0.5}
            for r in ws.ratings(synthetic_workspace.run_id, source="human").itertuples()
        ]
    ).pivot_table(index="call_id", columns="rater", values="score")
    joined = judged.set_index("call_id")[["value"]].join(human.mean(axis=1).rename("human"))
    instance_rho = stats.spearmanr(joined["value"], joined["human"]).statistic
    instance_tau = stats.kendalltau(joined["value"], joined["human"]).statistic
    raters_rho = stats.spearmanr(human["ana"], human["bo"]).statistic
    assert 0.5 < instance_rho < 0.999 and 0.5 < raters_rho < 0.999  # bo dissents on every third output
    row = re.search(r"<tr><td>all operations</td><td>41</td>(.*?)</tr>", page)
    assert row is not None
    # columns: instance Spearman, instance Kendall, model Spearman, model Kendall, human–human Spearman, α
    cells = re.findall(r"<td>(.*?)</td>", row.group(1))
    assert len(cells) == 6, cells
    figure = re.compile(r"(-?\d\.\d{3}) \[(-?\d\.\d{3}), (-?\d\.\d{3})\]")  # value [interval]
    (rho, lo, hi), (tau, _, _), (raters, _, _) = (
        tuple(float(x) for x in figure.fullmatch(cells[i]).groups())  # type: ignore[union-attr]
        for i in (0, 1, 4)
    )
    assert rho == pytest.approx(instance_rho, abs=5e-4) and lo <= rho <= hi
    assert tau == pytest.approx(instance_tau, abs=5e-4)
    assert raters == pytest.approx(raters_rho, abs=5e-4)
    assert "too few human ratings" not in page and "no human scores" not in page  # 41 ≥ 30 rated outputs
