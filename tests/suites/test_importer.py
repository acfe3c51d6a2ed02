"""Tests for evalkit/suites/importer.py (`evalkit suites import`) and the suite-finding changes it needs."""

from __future__ import annotations

import base64
import io
import json
import os
import re
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from evalkit.cli import app
from evalkit.errors import InvalidInputError, SuiteError
from evalkit.suites import GEDIT_CATEGORIES, list_suites, load_suite
from evalkit.suites.importer import SuiteImportError, detect_language, import_suite


def png(path: Path, size: tuple[int, int] = (64, 48), colour: str = "red", mode: str = "RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, colour).save(path, format="PNG")
    return path


def png_bytes(size: tuple[int, int] = (40, 40), colour: str = "green") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture()
def src(tmp_path: Path) -> Path:
    """A folder with a few images next to which the source files are written."""
    folder = tmp_path / "src"
    png(folder / "photos" / "My Cat.png")
    png(folder / "dog.png", colour="blue")
    png(folder / "mask.png", mode="L", colour="white")
    png(folder / "small-mask.png", size=(10, 10), mode="L", colour="white")
    (folder / "broken.png").write_bytes(b"\x89PNG but not really")
    return folder


def test_csv_defaults_inference_and_copied_files(src: Path, tmp_path: Path) -> None:
    (src / "cases.csv").write_text(
        "image,prompt,tags,target_size\n"
        "photos/My Cat.png,Put a red bow tie on the cat,pets; easy,1024x768\n"
        "dog.png,把狗变成蓝色,,\n"
        "photos/My Cat.png;dog.png,Put the cat next to the dog,,\n"
        "dog.png,Repaint the masked part as grass,,\n",
        encoding="utf-8",
    )
    # the last row gets a mask through a second file format below; here: plain CSV rows
    result = import_suite(src / "cases.csv", "mine", out=tmp_path / "out")
    assert result.path == (tmp_path / "out" / "mine").resolve()
    suite = load_suite(result.path)  # an ordinary suite: the standard loader accepts it
    ids = [c.id for c in suite.cases]
    assert ids == ["my-cat-1", "dog-2", "my-cat-3", "dog-4"]
    first, zh, multi, _ = suite.cases
    assert (first.operation, first.category, first.language) == ("general_edit", "general_edit", "en")
    assert first.tags == ("pets", "easy") and first.target_size == (1024, 768)
    assert (zh.language, zh.prompt) == ("zh", "把狗变成蓝色")
    assert (multi.operation, multi.category, len(multi.images)) == ("multi_image", "multi_image", 2)
    # images are copied into the suite folder (the source can move away afterwards)
    assert all(p.is_relative_to(result.path) for c in suite.cases for p in c.images)
    assert result.files_copied == 2
    summary = result.summary()
    assert "4 case(s)" in summary and "multi_image" in summary and "zh" in summary


def test_jsonl_mask_infers_inpaint_and_explicit_columns(src: Path, tmp_path: Path) -> None:
    rows = [
        {"image": "dog.png", "mask": "mask.png", "prompt": "Grass here"},
        {
            "image": ["photos/My Cat.png"],
            "prompt": "Make it a watercolour",
            "id": "cat-style",
            "category": "style_change",
            "language": "en",
            "tags": ["art"],
        },
        {"image": "dog.png", "operation": "remove_background"},  # promptless operation: no prompt needed
    ]
    (src / "cases.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    suite = import_suite(src / "cases.jsonl", "jl", out=tmp_path / "out").suite
    inpaint, styled, rembg = suite.cases
    assert (inpaint.operation, inpaint.category) == ("inpaint", "inpaint") and inpaint.mask is not None
    assert (styled.id, styled.category, styled.tags) == ("cat-style", "style_change", ("art",))
    assert (rembg.operation, rembg.prompt) == ("remove_background", None)


def test_every_problem_listed_with_its_row_and_nothing_written(src: Path, tmp_path: Path) -> None:
    (src / "bad.csv").write_text(
        "image,prompt,mask,operation,target_size,id\n"
        "missing.png,Edit it,,,,\n"  # 1 missing image
        "../outside.png,Edit,,,,\n"  # 2 unsafe path
        "/etc/hostname,Edit,,,,\n"  # 3 unsafe (absolute) path
        "broken.png,Edit,,,,\n"  # 4 unreadable image
        "dog.png,Edit,,frobnicate,,\n"  # 5 unknown operation
        "dog.png,Edit,small-mask.png,,,\n"  # 6 mask of the wrong size
        "dog.png,,,,,\n"  # 7 prompt missing where required
        "dog.png,Edit,,,big,\n"  # 8 bad target size
        "dog.png,Edit,,,,same\n"
        "dog.png,Edit,,,,same\n"  # 10 duplicated id
        "dog.png,Edit,,general_edit,,Bad Id\n",  # 11 unsafe id
        encoding="utf-8",
    )
    out = tmp_path / "out"
    with pytest.raises(SuiteImportError) as info:
        import_suite(src / "bad.csv", "bad", out=out)
    problems = info.value.problems
    expected = {
        1: "not found",
        2: "unsafe",
        3: "unsafe",
        4: "not a usable image",
        5: "unknown operation 'frobnicate'",
        6: "mask is 10×10 but the image is 64×48",
        7: "prompt is missing",
        8: "target_size 'big'",
        10: "already used by row 9",
        11: "not a safe slug",
    }
    for row, text in expected.items():
        assert any(p.startswith(f"row {row}:") and text in p for p in problems), (row, problems)
    assert not any(p.startswith("row 9:") for p in problems)
    assert "nothing was written" in str(info.value)
    assert not out.exists()  # not even the --out folder


def test_a_later_check_by_the_suite_loader_is_mapped_to_its_row(src: Path, tmp_path: Path) -> None:
    (src / "c.csv").write_text(
        "image,prompt,language,category\ndog.png,Edit,english,\ndog.png,Edit,,background-change\n", encoding="utf-8"
    )
    with pytest.raises(SuiteImportError) as info:
        import_suite(src / "c.csv", "c", out=tmp_path / "out")
    text = "\n".join(info.value.problems)
    assert re.search(r"row 1: language 'english'", text)
    assert re.search(r"row 2: unknown category 'background-change' — did you mean 'background_change'", text)
    assert not (tmp_path / "out").exists()


def test_unknown_column_and_existing_target_and_bad_name(src: Path, tmp_path: Path) -> None:
    (src / "c.csv").write_text("image,promt\ndog.png,Edit\n", encoding="utf-8")
    with pytest.raises(SuiteImportError, match="unknown column 'promt' — did you mean 'prompt'"):
        import_suite(src / "c.csv", "c", out=tmp_path / "out")
    (src / "ok.csv").write_text("image,prompt\ndog.png,Edit\n", encoding="utf-8")
    import_suite(src / "ok.csv", "ok", out=tmp_path / "out")
    with pytest.raises(InvalidInputError, match="already exists"):
        import_suite(src / "ok.csv", "ok", out=tmp_path / "out")
    with pytest.raises(InvalidInputError, match="not a safe slug"):
        import_suite(src / "ok.csv", "My Suite", out=tmp_path / "out")


def test_language_detection() -> None:
    assert detect_language("给猫戴上红色领结") == "zh"
    assert detect_language("Add a hat") == "en"
    assert detect_language(None) == "en"


def _gedit_records(folder: Path) -> list[dict]:
    """Records in the shape GEdit-Bench publishes (stepfun-ai/GEdit-Bench: datasets Image → {bytes, path})."""
    return [
        {
            "key": "0a1b2c3d4e",
            "task_type": "background_change",
            "instruction": "Change the background to a beach",
            "instruction_language": "en",
            "input_image": {"bytes": png_bytes(), "path": "0a1b2c3d4e.png"},
            "input_image_raw": {"bytes": png_bytes((80, 80)), "path": None},
            "Intersection_exist": True,
        },
        {
            "key": "0a1b2c3d4e",
            "task_type": "background_change",
            "instruction": "把背景换成海滩",
            "instruction_language": "cn",
            "input_image": {"bytes": png_bytes(), "path": "0a1b2c3d4e.png"},
            "input_image_raw": {"bytes": png_bytes((80, 80)), "path": None},
            "Intersection_exist": False,
        },
        {
            "key": "ffee0011",
            "task_type": "subject-remove",
            "instruction": "Remove the car",
            "instruction_language": "en",
            "input_image": {"bytes": png_bytes(colour="gray"), "path": None},
            "input_image_raw": None,
            "Intersection_exist": False,
        },
    ]


def test_gedit_bench_parquet_snapshot(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    snap = tmp_path / "GEdit-Bench" / "data"
    snap.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(_gedit_records(snap)), snap / "train-00000-of-00001.parquet")
    result = import_suite(tmp_path / "GEdit-Bench", "gedit", out=tmp_path / "out", fmt="gedit-bench")
    cases = result.suite.cases
    assert [c.id for c in cases] == ["0a1b2c3d4e", "0a1b2c3d4e-zh", "ffee0011"]
    assert [c.category for c in cases] == ["background_change", "background_change", "subject-remove"]
    assert [c.language for c in cases] == ["en", "zh", "en"]
    assert {c.operation for c in cases} == {"general_edit"}
    assert "intersection" in cases[0].tags and "intersection" not in cases[1].tags
    # input_image (what GEdit's own scripts edit), not input_image_raw
    assert cases[0].load_inputs()[0][0].width == 40
    assert "GEdit-Bench" in result.suite.licences()


def test_gedit_bench_jsonl_base64_and_bad_records(tmp_path: Path) -> None:
    records = _gedit_records(tmp_path)
    for r in records:
        r["input_image"] = {"bytes": base64.b64encode(r["input_image"]["bytes"]).decode(), "path": None}
        r.pop("input_image_raw")
    bad = dict(records[2], key="zz", task_type="subject_teleport", instruction_language="fr")
    (tmp_path / "g.jsonl").write_text("\n".join(json.dumps(r) for r in [*records, bad]) + "\n", encoding="utf-8")
    with pytest.raises(SuiteImportError) as info:
        import_suite(tmp_path / "g.jsonl", "g", out=tmp_path / "out", fmt="gedit-bench")
    text = "\n".join(info.value.problems)
    assert "row 4: task_type 'subject_teleport' is not one of GEdit-Bench's 11" in text
    assert "row 4: instruction_language 'fr'" in text
    assert not re.search(r"row [123]:", text)
    (tmp_path / "g.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n", encoding="utf-8")
    suite = import_suite(tmp_path / "g.jsonl", "g", out=tmp_path / "out", fmt="gedit-bench").suite
    assert len(suite) == 3 and set(suite.categories) <= set(GEDIT_CATEGORIES)


def test_category_optional_in_suite_toml_and_duplicate_id_reported(tmp_path: Path) -> None:
    folder = tmp_path / "hand"
    png(folder / "images" / "a.png")
    case = '[[case]]\nid = "x"\noperation = "general_edit"\nprompt = "Edit"\nimages = ["images/a.png"]\n'
    (folder / "suite.toml").write_text(case, encoding="utf-8")
    assert load_suite(folder).cases[0].category == "general_edit"
    (folder / "suite.toml").write_text(case + "\n" + case, encoding="utf-8")
    with pytest.raises(SuiteError, match="duplicate id"):
        load_suite(folder)


def test_cli_import_writes_to_dot_suites_and_suites_finds_it(src: Path, tmp_path: Path, monkeypatch) -> None:
    (src / "cases.csv").write_text("image,prompt\ndog.png,Make it blue\n", encoding="utf-8")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.delenv("EVALKIT_SUITES_PATH", raising=False)
    runner = CliRunner()
    res = runner.invoke(app, ["suites", "import", str(src / "cases.csv"), "--name", "team"])
    assert res.exit_code == 0, res.output
    lines = res.output.strip().splitlines()
    assert Path(lines[0]) == (work / "suites" / "team").resolve() and "1 case(s)" in lines[1]
    assert any(i.name == "team" for i in list_suites())
    assert load_suite("team").path == (work / "suites" / "team").resolve()  # --suite NAME finds it
    listed = runner.invoke(app, ["suites", "--json"])
    assert "team" in {s["name"] for s in json.loads(listed.output)}
    bad = runner.invoke(app, ["suites", "import", str(src / "nope.csv"), "--name", "x"])
    assert bad.exit_code == 2 and "not found" in bad.output
    assert not (work / "suites" / "x").exists()
    assert os.listdir(work / "suites") == ["team"]


def test_caption_columns_and_their_benchmark_aliases_reach_the_suite(src: Path, tmp_path: Path) -> None:
    (src / "caps.csv").write_text(
        "image,prompt,source_caption,target_caption\n"
        "dog.png,Make the dog blue,a photo of a dog,a photo of a blue dog\n"
        "photos/My Cat.png,Add a hat,,a cat wearing a hat\n",
        encoding="utf-8",
    )
    dog, cat = import_suite(src / "caps.csv", "caps", out=tmp_path / "out").suite.cases
    assert (dog.source_caption, dog.target_caption) == ("a photo of a dog", "a photo of a blue dog")
    assert (cat.source_caption, cat.target_caption) == (None, "a cat wearing a hat")  # an empty cell is no caption
    # EmuEdit's input_caption / output_caption and MagicBrush's *_global_caption are read as the same columns
    rows = [
        {"image": "dog.png", "prompt": "Blue", "input_caption": "a dog", "output_caption": "a blue dog"},
        {"image": "dog.png", "prompt": "Red", "source_global_caption": "a dog", "target_global_caption": "a red dog"},
    ]
    (src / "emu.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    emu, magic = import_suite(src / "emu.jsonl", "emu", out=tmp_path / "out").suite.cases
    assert (emu.source_caption, emu.target_caption) == ("a dog", "a blue dog")
    assert (magic.source_caption, magic.target_caption) == ("a dog", "a red dog")
