"""Sessions of turns in suites (issue 24): suite.toml forms, validation listing every problem, import."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from evalkit.errors import SuiteError
from evalkit.suites import load_suite
from evalkit.suites.importer import SuiteImportError, import_suite


def png(path: Path, size: tuple[int, int] = (64, 48), colour: str = "red", mode: str = "RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, colour).save(path, format="PNG")
    return path


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    f = tmp_path / "sess"
    png(f / "images" / "room.png")
    png(f / "images" / "other.png", colour="blue")
    png(f / "masks" / "left.png", mode="L", colour="white")
    png(f / "masks" / "small.png", size=(10, 10), mode="L", colour="white")
    return f


def write(folder: Path, body: str) -> Path:
    (folder / "suite.toml").write_text('name = "sess"\n' + body, encoding="utf-8")
    return folder


def test_both_toml_forms_load_as_sessions(folder: Path) -> None:
    write(
        folder,
        """
[[case]]
id = "room"
images = ["images/room.png"]
params = { strength = 0.5 }
turns = ["Paint the walls sage green", "Add a bookshelf on the left", "Make it evening"]

[[case]]
id = "room-masked"
operation = "general_edit"
category = "subject-add"
images = ["images/room.png"]
[[case.turns]]
prompt = "Put a lamp here"
operation = "inpaint"
mask = "masks/left.png"
[[case.turns]]
prompt = "Make it warmer"
params = { strength = 0.8 }

[[case]]
id = "single"
operation = "general_edit"
prompt = "Make it blue"
images = ["images/other.png"]
""",
    )
    suite = load_suite(folder)
    room, masked, single = suite.cases
    assert room.is_session and len(room.turns) == 3
    assert [t.prompt for t in room.turns][2] == "Make it evening"
    assert room.operation == "general_edit" and room.prompt == "Paint the walls sage green"
    assert all(t.params == {"strength": 0.5} for t in room.turns)
    assert masked.operation == "inpaint" and masked.turns[0].mask == folder.resolve() / "masks" / "left.png"
    assert masked.turn_mask(1) is not None and masked.turn_mask(2) is None
    assert masked.turns[1].operation == "general_edit"  # the case's operation is each turn's default
    assert masked.turns[1].params == {"strength": 0.8}
    assert masked.turn_id(2) == "room-masked.t2"
    assert not single.is_session and single.turns == ()
    assert room.to_dict()["turns"][1]["prompt"] == "Add a bookshelf on the left"


def test_every_session_problem_is_listed_at_once(folder: Path) -> None:
    write(
        folder,
        """
[[case]]
id = "one-turn"
images = ["images/room.png"]
turns = ["Only one"]

[[case]]
id = "no-prompt"
images = ["images/room.png"]
turns = ["First", { operation = "general_edit" }]

[[case]]
id = "multi-later"
images = ["images/room.png"]
turns = ["First", { prompt = "Combine", operation = "multi_image" }]

[[case]]
id = "bad-mask"
images = ["images/room.png"]
turns = ["First", { prompt = "Fix here", operation = "inpaint", mask = "masks/small.png" }]

[[case]]
id = "both"
images = ["images/room.png"]
prompt = "Also a prompt"
turns = ["First", "Second"]

[[case]]
id = "typo"
images = ["images/room.png"]
turns = ["First", { promt = "Second" }]
""",
    )
    with pytest.raises(SuiteError) as info:
        load_suite(folder)
    text = "\n".join(info.value.problems)
    assert "case 'one-turn': a session needs at least 2 turns, got 1" in text
    assert "case 'no-prompt': turn 2: no prompt" in text
    assert "case 'multi-later': turn 2: operation 'multi_image' cannot follow another turn" in text
    assert "case 'bad-mask': turn 2: mask 'masks/small.png' is 10×10" in text
    assert "case 'both': 'prompt' and 'turns' both given" in text
    assert "case 'typo': turn 2: unknown key 'promt'" in text
    assert len({p.split(":")[0] for p in info.value.problems}) == 6  # every case named, none missed


def test_jsonl_turns_import_as_a_session(tmp_path: Path) -> None:
    src = tmp_path / "src"
    png(src / "room.png")
    png(src / "lamp-mask.png", mode="L", colour="white")
    rows = [
        {"id": "room", "image": "room.png", "turns": ["Paint the walls green", "Make it evening"]},
        {
            "id": "room-lamp",
            "image": "room.png",
            "turns": [
                {"prompt": "Add a lamp", "operation": "inpaint", "mask": "lamp-mask.png"},
                {"prompt": "Make it warmer", "operation": "general_edit"},
            ],
        },
    ]
    (src / "cases.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    res = import_suite(src / "cases.jsonl", "imported", out=tmp_path / "out")
    room, lamp = res.suite.cases
    assert [t.prompt for t in room.turns] == ["Paint the walls green", "Make it evening"]
    assert lamp.turns[0].operation == "inpaint" and lamp.turn_mask(1) is not None
    assert lamp.turns[1].operation == "general_edit" and lamp.turns[1].mask is None


def test_csv_turn_column_groups_rows_by_id_in_turn_order(tmp_path: Path) -> None:
    src = tmp_path / "src"
    png(src / "room.png")
    (src / "cases.csv").write_text(
        "id,image,turn,prompt\n"
        "room,room.png,2,Add a bookshelf\n"
        "room,room.png,1,Paint the walls green\n"
        "single,room.png,,Make it blue\n"
        "room,,3,Make it evening\n",
        encoding="utf-8",
    )
    res = import_suite(src / "cases.csv", "csvsess", out=tmp_path / "out")
    cases = {c.id: c for c in res.suite.cases}
    assert [t.prompt for t in cases["room"].turns] == ["Paint the walls green", "Add a bookshelf", "Make it evening"]
    assert not cases["single"].is_session


def test_bad_session_import_lists_every_problem_and_writes_nothing(tmp_path: Path) -> None:
    src = tmp_path / "src"
    png(src / "room.png")
    png(src / "small.png", size=(8, 8), mode="L", colour="white")
    (src / "cases.csv").write_text(
        "id,image,turn,prompt,mask\n"
        "gap,room.png,1,First,\n"
        "gap,room.png,3,Third,\n"
        "lonely,room.png,1,Only turn,\n"
        "nomask,room.png,1,First,\n"
        "nomask,room.png,2,,small.png\n",
        encoding="utf-8",
    )
    out = tmp_path / "out"
    with pytest.raises(SuiteImportError) as info:
        import_suite(src / "cases.csv", "bad", out=out)
    text = "\n".join(info.value.problems)
    assert "session 'gap' has turns [1, 3]" in text
    assert "a session needs at least 2 turns, got 1" in text
    assert "turn 2: no prompt" in text
    assert "turn 2 mask is 8×8 but the image is 64×48" in text
    assert not (out / "bad").exists()


def test_the_cli_refuses_a_bad_session_suite_listing_every_problem(folder: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from evalkit.cli import app

    write(
        folder,
        """
[[case]]
id = "short"
images = ["images/room.png"]
turns = ["Only one"]

[[case]]
id = "masked"
images = ["images/room.png"]
turns = ["First", { prompt = "Fix", operation = "inpaint", mask = "masks/small.png" }]
""",
    )
    ws = tmp_path / "ws"
    res = CliRunner().invoke(app, ["run", "--suite", str(folder), "--dry-run", "--workspace", str(ws)])
    assert res.exit_code != 0
    text = " ".join(res.output.split())
    assert "a session needs at least 2 turns" in text and "turn 2: mask 'masks/small.png' is 10×10" in text
    assert not ws.exists()  # nothing written
