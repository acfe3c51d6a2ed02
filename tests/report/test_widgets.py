"""evalkit.report.widgets driven without a browser: comm ≥ 0.2 gives a DummyComm outside a kernel, so widgets
can be built, their values set and buttons clicked in plain pytest; we assert what is shown and stored."""

from __future__ import annotations

import io

import comm
import ipywidgets as widgets
import numpy as np
import pytest
from PIL import Image

from evalkit.errors import InvalidInputError
from evalkit.report.widgets import Explorer, Rater, before_after
from evalkit.scoring.arena import schedule_pairs
from tests.plugins import synthetic as S

JUDGE = ("viescore_o", "judge")


def colour_of(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"), dtype=float).reshape(-1, 3).mean(axis=0)


def shows(data: bytes, rgb: tuple[int, int, int], tol: float = 6.0) -> bool:
    return bool(np.abs(colour_of(data) - np.array(rgb)).max() <= tol)


def test_widgets_run_without_a_kernel():
    assert isinstance(widgets.Button().comm, comm.DummyComm)


# -- Explorer -----------------------------------------------------------------------------------------


def test_explorer_shows_every_model_with_cost_latency_and_scores(synthetic_workspace):
    ex = Explorer(synthetic_workspace.ws, S.RUN_ID, quality=JUDGE)
    assert isinstance(ex.widget, widgets.VBox)
    assert ex.case.value == "g1" and list(ex.images) == S.MODELS
    for m in S.MODELS:
        assert shows(ex.images[m].value, S.output_colour(m, "g1")), m
    assert shows(ex.source_image.value, S.source_colour("g1"))
    alpha = ex.captions["alpha"].value
    assert "$0.040 · 1.0 s · viescore_o 7" in alpha and "ssim 0.8" in alpha
    assert "free · 10 ms" in ex.captions["base"].value
    assert "make case g1 bluer" in ex.prompt.value


def test_explorer_failed_and_not_applicable_cells(synthetic_workspace):
    ex = Explorer(synthetic_workspace.ws, S.RUN_ID)
    ex.case.value = "g3"
    assert ex.images["delta"].value == b"" and ex.images["delta"].layout.visibility == "hidden"
    assert "failed: timeout" in ex.captions["delta"].value and "timeout on g3" in ex.captions["delta"].value
    assert ex.enlarge_buttons["delta"].disabled and not ex.enlarge_buttons["alpha"].disabled
    assert shows(ex.images["alpha"].value, S.output_colour("alpha", "g3"))
    ex.operation.value = "erase"
    assert [v for _, v in ex.case.options] == S.ERASE_CASES and ex.case.value == "e1"
    assert "n/a: beta does not support erase" in ex.captions["beta"].value
    assert ex.compare_model.options == ("alpha", "base")
    ex.operation.value = "(all)"
    ex.category.value = "style"
    assert [v for _, v in ex.case.options] == ["g5", "g6", "g7", "g8"]


def test_explorer_before_after_slider(synthetic_workspace):
    ex = Explorer(synthetic_workspace.ws, S.RUN_ID)
    ex.compare_model.value = "gamma"
    ex.split.value = 0
    assert shows(ex.compare_image.value, S.output_colour("gamma", "g1"))  # all "after"
    ex.split.value = 100
    assert shows(ex.compare_image.value, S.source_colour("g1"))  # all "before"
    ex.split.value = 50
    with Image.open(io.BytesIO(ex.compare_image.value)) as im:
        arr = np.asarray(im.convert("RGB"), dtype=float)
    w = arr.shape[1]
    assert np.abs(arr[:, : w // 2 - 3].reshape(-1, 3).mean(0) - S.source_colour("g1")).max() <= 6
    assert np.abs(arr[:, w // 2 + 3 :].reshape(-1, 3).mean(0) - S.output_colour("gamma", "g1")).max() <= 6


def test_explorer_enlarge_shows_the_full_size_image(synthetic_workspace):
    ws = synthetic_workspace.ws
    ex = Explorer(ws, S.RUN_ID)
    ex.case.value = "g2"
    ex.enlarge_buttons["beta"].click()
    assert ex.enlarged.value == ws.output_image(S.call_id("beta", "g2")) and ex.enlarged.format == "png"
    assert "beta on g2" in ex.enlarged_title.value
    ex.source_enlarge.click()
    assert ex.enlarged.value == ws.case_images(S.RUN_ID, "g2")[0][0]
    with Image.open(io.BytesIO(ex.enlarged.value)) as im:
        assert im.size == (80, 60)  # full size, not a thumbnail


def test_before_after_composite_is_pure():
    before = Image.new("RGB", (40, 20), (255, 0, 0))
    after = Image.new("RGB", (80, 40), (0, 0, 255))
    with Image.open(io.BytesIO(before_after(before, after, 25))) as im:
        assert im.size == (80, 40)
        arr = np.asarray(im.convert("RGB"), dtype=int)
    assert arr[20, 5, 0] > 200 and arr[20, 70, 2] > 200


# -- Rater --------------------------------------------------------------------------------------------


def visible_text(w: widgets.Widget) -> list[str]:
    out = []
    for attr in ("value", "description", "placeholder", "tooltip"):
        v = getattr(w, attr, None)
        if isinstance(v, str):
            out.append(v)
    for child in getattr(w, "children", ()):
        out += visible_text(child)
    return out


def shown_call(rater: Rater, image: widgets.Image, case_id: str) -> str:
    """Which call's output an image shows, judged by its colour alone (not by the rater's state)."""
    matches = [
        m for m in S.MODELS if (case_id, m) in rater.output_call and shows(image.value, S.output_colour(m, case_id))
    ]
    assert len(matches) == 1, matches
    return S.call_id(matches[0], case_id)


def test_rater_hides_model_names_and_shows_source_instruction_and_pair(synthetic_workspace):
    r = Rater(synthetic_workspace.ws, S.RUN_ID, rater="ana")
    pair = r.current
    assert pair is not None
    text = " ".join(visible_text(r.widget))
    for m in S.MODELS:
        assert m not in text
    assert "Instruction:" in r.instruction.value and f"make case {pair.case_id}" in r.instruction.value
    assert shows(r.source_image.value, S.source_colour(pair.case_id))
    assert shown_call(r, r.image_a, pair.case_id) == pair.call_left
    assert shown_call(r, r.image_b, pair.case_id) == pair.call_right
    assert r.progress_label.value == "0 / 45 rated by ana"  # 15 model pairs × 3


def test_rater_stores_votes_mapped_to_the_shown_sides(synthetic_workspace):
    ws = synthetic_workspace.ws
    r = Rater(ws, S.RUN_ID, rater="ana", target=10)
    actions = [
        ("button", r.button_a, "left"),
        ("button", r.button_b, "right"),
        ("button", r.button_tie, "tie"),
        ("button", r.button_both_bad, "both_bad"),
        ("key", "a", "left"),
        ("key", "B", "right"),
        ("key", "t", "tie"),
        ("key", "x", "both_bad"),
    ] * 2
    expected = []
    for kind, how, choice in actions:
        case_id = r.current.case_id
        left, right = shown_call(r, r.image_a, case_id), shown_call(r, r.image_b, case_id)
        expected.append((case_id, left, right, choice))
        if kind == "button":
            how.click()
        else:
            r.keys.value = how
            assert r.keys.value == ""  # cleared for the next key
    stored = ws.ratings(S.RUN_ID)
    assert len(stored) == len(actions)
    got = list(zip(stored["case_id"], stored["call_left"], stored["call_right"], stored["choice"], strict=True))
    assert got == expected
    assert set(stored["rater"]) == {"ana"} and set(stored["source"]) == {"human"} and set(stored["kind"]) == {"pair"}
    # model columns agree with the calls (the store derives them), and both side orders occurred
    for row in stored.itertuples():
        assert row.call_left == S.call_id(row.model_left, row.case_id)
        assert row.call_right == S.call_id(row.model_right, row.case_id)
    orders = {row.model_left < row.model_right for row in stored.itertuples()}
    assert orders == {True, False}
    assert r.progress.value == 10 and r.progress_label.value.startswith("16 / 10 rated by ana — target reached")
    # every pair shown had outputs from both models: never a failed or n/a call
    assert all(ws.get_call(c)["status"] == "completed" for c in [*stored["call_left"], *stored["call_right"]])


def test_rater_takes_its_pairs_from_the_arena_schedule(synthetic_workspace):
    r = Rater(synthetic_workspace.ws, S.RUN_ID, rater="ana")
    n = 15 * len(r.cases)
    first = next(
        (c, a, b)
        for c, a, b in schedule_pairs(r.models, r.cases, None, n=n, seed=0)
        if (c, a) in r.output_call and (c, b) in r.output_call
    )
    assert (r.current.case_id, {r.current.model_left, r.current.model_right}) == (first[0], {first[1], first[2]})
    for _ in range(15):
        r.button_tie.click()
    stored = synthetic_workspace.ws.ratings(S.RUN_ID)
    pairs = [frozenset((a, b)) for a, b in zip(stored["model_left"], stored["model_right"], strict=True)]
    # least-compared first (weighted by how informative a pair is): wide coverage, no pair hammered
    assert len(set(pairs)) >= 10 and max(pairs.count(p) for p in pairs) <= 3


def test_rater_ignores_other_keys_and_validates(synthetic_workspace):
    r = Rater(synthetic_workspace.ws, S.RUN_ID, rater="bo")
    r.keys.value = "q"
    assert synthetic_workspace.ws.ratings(S.RUN_ID).empty
    with pytest.raises(InvalidInputError):
        r.vote("maybe")
    with pytest.raises(InvalidInputError):
        Rater(synthetic_workspace.ws, S.RUN_ID, rater="  ")


def test_rater_with_nothing_to_compare(synthetic_workspace):
    ws = synthetic_workspace.ws
    ws.create_run(
        "solo",
        suite_name=None,
        suite_path=None,
        suite_fingerprint=None,
        catalog_fingerprint=None,
        models=["alpha"],
        repeats=1,
        budget_usd=None,
        config={},
    )
    ref = ws.put_blob(S.flat_png((1, 2, 3)), "png")
    ws.put_cases("solo", [{"case_id": "g1", "operation": "general_edit", "input_sha256": [ref.sha256], "prompt": "p"}])
    ws.insert_calls(
        [
            {
                "call_id": "solo-1",
                "run_id": "solo",
                "case_id": "g1",
                "model_id": "alpha",
                "provider": "wavespeed",
                "operation": "general_edit",
                "repeat": 0,
            }
        ]
    )
    ws.finish_call("solo-1", {"status": "completed", "output_sha256": ref.sha256, "output_ext": "png"})
    r = Rater(ws, "solo", rater="ana")
    assert r.current is None and "nothing to compare" in r.instruction.value
    assert r.button_a.disabled and r.keys.disabled
    assert r.vote("left") is None and ws.ratings("solo").empty


# -- every input of a multi-image case -------------------------------------------------------------------

INPUT_COLOURS = [(250, 20, 20), (20, 250, 20), (20, 20, 250)]
MULTI_OUT = {"alpha": (200, 200, 40), "beta": (40, 200, 200)}


def multi_image_run(ws) -> None:
    """Run "multi": one multi_image case with three inputs (red, green, blue), two models' outputs."""
    ws.create_run(
        "multi", suite_name=None, suite_path=None, suite_fingerprint=None, catalog_fingerprint=None,
        models=list(MULTI_OUT), repeats=1, budget_usd=None, config={},
    )  # fmt: skip
    shas = [ws.put_blob(S.flat_png(c), "png").sha256 for c in INPUT_COLOURS]
    ws.put_cases("multi", [{"case_id": "mi", "operation": "multi_image", "input_sha256": shas, "prompt": "combine"}])
    ws.insert_calls(
        [
            {"call_id": f"multi-{m}", "run_id": "multi", "case_id": "mi", "model_id": m, "provider": "wavespeed",
             "operation": "multi_image", "repeat": 0}
            for m in MULTI_OUT
        ]
    )  # fmt: skip
    for m, colour in MULTI_OUT.items():
        ref = ws.put_blob(S.flat_png(colour), "png")
        ws.finish_call(f"multi-{m}", {"status": "completed", "output_sha256": ref.sha256, "output_ext": "png"})


def test_explorer_and_rater_show_every_source_image(synthetic_workspace):
    ws = synthetic_workspace.ws
    multi_image_run(ws)
    ex = Explorer(ws, "multi")
    assert len(ex.source_images) == 3
    assert all(shows(img, c) for img, c in zip(ex.source_images, INPUT_COLOURS, strict=True))
    # a single-input case shows exactly one
    single = Explorer(ws, S.RUN_ID)
    assert len(single.source_images) == 1 and shows(single.source_images[0], S.source_colour("g1"))
    r = Rater(ws, "multi", rater="ana")
    assert r.current is not None and len(r.source_images) == 3
    assert all(shows(img, c) for img, c in zip(r.source_images, INPUT_COLOURS, strict=True))
    s = Rater(ws, "multi", rater="ana", mode="score")
    assert len(s.source_images) == 3
    assert all(shows(img, c) for img, c in zip(s.source_images, INPUT_COLOURS, strict=True))


# -- scoring mode ------------------------------------------------------------------------------------------


def shown_output(r, case_id: str) -> str:
    matches = [
        m for m in S.MODELS if (case_id, m) in {(o.case_id, o.model_id) for o in r.outputs}
        and shows(r.output_image.value, S.output_colour(m, case_id))
    ]  # fmt: skip
    assert len(matches) == 1, matches
    return S.call_id(matches[0], case_id)


def test_score_mode_imagenhub_scale_stores_sc_and_pr_per_rater(synthetic_workspace):
    from evalkit.report.widgets import ScoreRater

    ws = synthetic_workspace.ws
    r = Rater(ws, S.RUN_ID, rater="ana", mode="score", scale="imagenhub", seed=1)
    assert isinstance(r, ScoreRater) and list(r.dimensions) == ["instruction", "quality"]
    text = " ".join(visible_text(r.widget))
    assert not any(m in text for m in S.MODELS)  # blind
    assert "SC" in text and "PR" in text and "Instruction:" in r.instruction.value
    assert r.save_button.disabled  # nothing chosen yet
    expected = []
    for sc, pr in [(1, 0.5), (0, 0), (0.5, 1)]:
        call = shown_output(r, r.current.case_id)
        assert call == r.current.call_id
        r.dimensions["instruction"].value = sc
        assert r.save_button.disabled  # PR still missing
        r.dimensions["quality"].value = pr
        assert not r.save_button.disabled
        r.save_button.click()
        expected.append((call, sc, pr))
    stored = ws.ratings(S.RUN_ID)
    got = list(zip(stored["call_id"], stored["instruction"], stored["quality"], strict=True))
    assert got == expected
    assert set(stored["kind"]) == {"single"} and set(stored["scale"]) == {"imagenhub"}
    assert set(stored["rater"]) == {"ana"} and stored["preservation"].isna().all()
    assert len(set(stored["call_id"])) == 3  # never the same output twice for one rater
    assert r.progress_label.value.startswith("3 / ")
    # a second rater is shown the outputs nobody has scored yet first
    bo = Rater(ws, S.RUN_ID, rater="bo", mode="score")
    assert bo.current.call_id not in {c for c, _, _ in expected}


def test_score_mode_one_to_five_and_skip(synthetic_workspace):
    ws = synthetic_workspace.ws
    r = Rater(ws, S.RUN_ID, rater="cy", mode="score", scale="1-5")
    assert list(r.dimensions) == ["instruction", "preservation", "quality"]
    first = r.current.call_id
    r.skip_button.click()
    assert r.current.call_id != first and ws.ratings(S.RUN_ID).empty
    r.dimensions["instruction"].value = 5
    r.dimensions["preservation"].value = 2
    r.dimensions["quality"].value = 4
    r.save_button.click()
    row = ws.ratings(S.RUN_ID).iloc[0]
    assert (row["instruction"], row["preservation"], row["quality"], row["scale"]) == (5, 2, 4, "1-5")
    assert all(b.value is None for b in r.dimensions.values())  # reset for the next output
    with pytest.raises(InvalidInputError):
        r.save()  # nothing chosen
    with pytest.raises(InvalidInputError):
        Rater(ws, S.RUN_ID, rater="cy", mode="score", scale="0-100")
    with pytest.raises(InvalidInputError):
        Rater(ws, S.RUN_ID, rater="cy", mode="stars")
