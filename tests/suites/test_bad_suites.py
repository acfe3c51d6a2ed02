"""Bad suites given to the runner are a SuiteError naming the case, and leave the workspace intact.

Property-based tests (hypothesis) cover the suite loader: random prompts, sizes, params and languages give a
suite or a SuiteError naming the case; random bytes never make a suite.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from evalkit.engine.runner import arun
from evalkit.errors import SuiteError
from evalkit.suites import MAX_PROMPT_CHARS, load_suite
from tests.plugins.bad_input import (
    PNG,
    assert_clear,
    assert_intact,
    edit_case,
    encode,
    png_declaring,
    state,
    write_suite,
    ws_options,
)


async def test_mask_of_the_wrong_size_in_a_suite_is_a_suite_error(sim, tmp_path, ws):
    suite = write_suite(
        tmp_path / "masks",
        [{**edit_case("m1"), "operation": "inpaint", "category": "inpaint", "mask": "masks/m.png"}],
        {"images/a.png": PNG, "masks/m.png": encode(Image.new("L", (40, 40), 255), "PNG")},
    )
    before = state(ws)
    with pytest.raises(SuiteError) as info:
        await arun(
            str(suite), models="z-image-turbo-inpaint", workspace=ws, progress=False, provider_options=ws_options(sim)
        )
    assert_clear(info.value, SuiteError, "case 'm1'", "40×40", "96×64")
    assert_intact(before, ws)


async def test_huge_prompt_in_a_suite_is_a_suite_error(tmp_path):
    suite = write_suite(tmp_path / "long", [edit_case("long", prompt="x" * 100_000)], {"images/a.png": PNG})
    with pytest.raises(SuiteError) as info:
        load_suite(suite)
    assert_clear(info.value, SuiteError, "case 'long'", "100000 characters", str(MAX_PROMPT_CHARS))


@pytest.mark.parametrize(
    "case_id", ["../../etc/passwd", "a/b", "Case", "ｃａｓｅ", "e\u0301", "", "-x", "a" * 65, "x\ty"]
)
async def test_unsafe_or_odd_unicode_case_ids_are_refused(case_id, sim, ws, tmp_path):
    suite = write_suite(tmp_path / "ids", [edit_case(case_id)], {"images/a.png": PNG})
    before = state(ws)
    with pytest.raises(SuiteError) as info:
        await arun(str(suite), models="qwen-edit", workspace=ws, progress=False, provider_options=ws_options(sim))
    assert_clear(info.value, SuiteError, "is not a safe slug")
    assert_intact(before, ws)


async def test_corrupt_images_in_a_suite_are_all_reported_at_once(sim, ws, tmp_path):
    images = {
        "images/ok.png": PNG,
        "images/trunc.png": PNG[:100],
        "images/empty.png": b"",
        "images/bomb.png": png_declaring(100_000, 100_000),
        "images/text.jpg": b"hello",
    }
    cases = [edit_case(Path(rel).stem, rel) for rel in images]
    suite = write_suite(tmp_path / "broken", cases, images)
    before = state(ws)
    with pytest.raises(SuiteError) as info:
        await arun(str(suite), models="qwen-edit", workspace=ws, progress=False, provider_options=ws_options(sim))
    problems = info.value.problems
    assert len(problems) == 4 and not any("'ok'" in p for p in problems)
    for case, words in (
        ("trunc", "corrupt or truncated"),
        ("empty", "0 bytes"),
        ("bomb", "decompression-bomb"),
        ("text", "not an image"),
    ):
        assert any(p.startswith(f"case '{case}'") and words in p for p in problems), (case, problems)
    assert_intact(before, ws)


@pytest.mark.parametrize(
    "toml_text,words",
    [
        ("[[case]\nid = 1", "not valid TOML"),
        ("name = 3\n[[case]]\nid = 'x'", "not a safe slug"),
        ("case = 'not a table'", "must be an array of tables"),
        (
            "[[case]]\nid = 'x'\noperation = 'general_edit'\ncategory = 'color_alter'\nprompt = 'p'\nimages = 'a.png'",
            "images must be a list",
        ),
        ("\xff\xfe bad bytes", "not UTF-8"),
    ],
)
async def test_malformed_suite_file(toml_text, words, sim, ws, tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "suite.toml").write_bytes(toml_text.encode("latin-1") if "\xff" in toml_text else toml_text.encode())
    before = state(ws)
    with pytest.raises(SuiteError) as info:
        await arun(str(folder), models="qwen-edit", workspace=ws, progress=False, provider_options=ws_options(sim))
    assert_clear(info.value, SuiteError, words)
    assert_intact(before, ws)


# ---- properties of the suite loader --------------------------------------------------------------


def mostly(valid: st.SearchStrategy, anything: st.SearchStrategy) -> st.SearchStrategy:
    """``valid`` three times in four (so that loading succeeds often), else ``anything``."""
    return st.sampled_from((True, True, True, False)).flatmap(lambda ok: valid if ok else anything)


_PROMPTS = mostly(
    st.one_of(st.just("Make the sky pink"), st.text(min_size=1, max_size=60).filter(str.strip)),
    st.one_of(
        st.text(alphabet="ab 好🏖\u0301\u200b", min_size=3990, max_size=4010),
        st.integers(),
        st.none(),
        st.just(""),
        st.just("   "),
    ),
)


_TARGETS = mostly(
    st.one_of(st.none(), st.tuples(st.integers(64, 8192), st.integers(64, 8192)).map(list)),
    st.one_of(
        st.lists(st.integers(-10, 10_000), min_size=0, max_size=3),
        st.booleans(),
        st.tuples(st.floats(10, 5000), st.floats(10, 5000)).map(list),
        st.text(max_size=5),
    ),
)


_LANGS = mostly(
    st.sampled_from(["en", "zh", "pt-BR", "zh-Hans-CN"]),
    st.one_of(st.sampled_from(["cn", "EN", "english", ""]), st.text(max_size=6)),
)


_PARAMS = mostly(
    st.one_of(st.just({}), st.fixed_dictionaries({"search_prompt": st.text(min_size=1, max_size=8)})),
    st.dictionaries(
        st.sampled_from(["search_prompt", "background_prompt", "strength", "x"]),
        st.one_of(st.text(max_size=8), st.integers(), st.booleans(), st.floats(allow_nan=False)),
        max_size=3,
    ),
)


_OPERATIONS = mostly(st.just("general_edit"), st.sampled_from(["zoom_out", "outpaint", "erase", "nonsense"]))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(prompt=_PROMPTS, target=_TARGETS, language=_LANGS, params=_PARAMS, operation=_OPERATIONS)
@example(prompt="x" * 4001, target=None, language="en", params={}, operation="general_edit")
@example(prompt="", target=[96, 64], language="en", params={}, operation="zoom_out")
def test_any_case_fields_load_or_give_a_suite_error_naming_the_case(
    tmp_path_factory, prompt, target, language, params, operation
):
    folder = tmp_path_factory.mktemp("cases") / "prop"
    case = {
        "id": "c",
        "operation": operation,
        "category": "color_alter",
        "images": ["images/a.png"],
        "language": language,
        "params": params,
    }
    if prompt is not None:
        case["prompt"] = prompt
    if target is not None:
        case["target_size"] = target
    write_suite(folder, [case], {"images/a.png": PNG})
    try:
        suite = load_suite(folder)
    except SuiteError as exc:
        assert exc.problems and all(p.startswith("case 'c'") for p in exc.problems), exc.problems
        for prob in exc.problems:
            event(prob.split(":")[1][:40])
        return
    event("loaded")
    (c,) = suite.cases
    if prompt is None:
        assert c.operation in ("zoom_out", "erase", "remove_background")
    else:
        assert c.prompt == prompt and prompt.strip() and len(prompt) <= MAX_PROMPT_CHARS
    if target is not None:
        assert c.target_size == tuple(target) and all(64 <= v <= 8192 for v in target)
    assert dict(c.params) == params


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.one_of(st.binary(max_size=300), st.text(max_size=300).map(lambda s: s.encode("utf-8"))))
def test_any_suite_file_bytes_load_or_give_a_suite_error(tmp_path_factory, raw):
    folder = tmp_path_factory.mktemp("raw") / "prop"
    folder.mkdir()
    (folder / "suite.toml").write_bytes(raw)
    with pytest.raises(SuiteError):  # no random bytes make a valid suite (it needs a case with a real image)
        load_suite(folder)
