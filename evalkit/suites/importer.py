"""``evalkit suites import``: a team's own cases (CSV / JSON Lines) or GEdit-Bench's records → a suite folder.

The result is an ordinary suite (``suite.toml`` + copied ``images/`` and ``masks/``), validated by the
same loader as every other suite, so what imports cleanly also runs. Every problem in the source is
listed at once with its row number, and nothing is written when there is one.

CSV / JSON Lines columns (a JSON line may give lists where CSV uses ``;``):

=============== ======================================================================================
``image``       path(s) relative to the source file, ``;``-separated — required
``prompt``      the instruction — required unless the operation takes none (``erase``, ``zoom_out``, …)
``id``          default: a slug of the first image's name plus the row number (``cat-3``)
``operation``   default: several images → ``multi_image``, a mask → ``inpaint``, else ``general_edit``
``mask``        path relative to the source file (white = region to edit; same size as the image)
``category``    default: the operation
``language``    default: ``zh`` when the prompt has CJK characters, else ``en``
``target_size`` ``WxH``, e.g. ``1024x768``
``tags``        ``;``-separated
``turns``       JSON Lines only, in place of ``prompt``: a session's turns, each a prompt or an object
                ``{"prompt", "operation"?, "mask"?, "params"?}`` (turn k edits the output of turn k−1)
``turn``        CSV only: the turn number of a session's row; the rows of one session share an ``id`` and
                give ``image`` on (at least) turn 1; each row's ``prompt``, ``operation`` and ``mask`` are
                that turn's
=============== ======================================================================================

``source_caption`` (what the input shows; EmuEdit's ``input_caption``, MagicBrush's ``source_global_caption``)
and ``target_caption`` (what the edit should show; ``output_caption``, ``target_global_caption``) are optional
too: they feed the semantic metrics (CLIP-T, CLIP directional similarity) and are never sent to a model.

Rows are numbered from 1: the first data row of a CSV (the header is not counted), the first line of a
JSON Lines file, the first record of GEdit-Bench.

``gedit-bench`` reads the records GEdit-Bench publishes (``stepfun-ai/GEdit-Bench`` on the Hugging Face
hub: ``key``, ``task_type``, ``instruction``, ``instruction_language``, ``input_image``, ``input_image_raw``,
``Intersection_exist``) from a Parquet file, a folder of them (a downloaded dataset snapshot) or a
JSON Lines file. ``input_image`` is the image GEdit-Bench's own scripts edit (``{"bytes": …}`` as the
``datasets`` library stores images, base64 text in JSON, or a path relative to the file).
``task_type`` becomes the case category (GEdit's 11 groups), ``cn`` becomes ``zh``.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import math
import os
import re
import shutil
import tempfile
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from evalkit.catalog.spec import OPERATION_ALIASES, OPERATIONS
from evalkit.errors import ImageError, InvalidInputError, SuiteError
from evalkit.images import load_image
from evalkit.suites import (
    GEDIT_CATEGORIES,
    LOCAL_SUITES_DIR,
    PROMPTLESS_OPERATIONS,
    SUITE_FILE,
    Suite,
    _SuiteLoader,
)

__all__ = ["FORMATS", "COLUMNS", "ImportResult", "SuiteImportError", "import_suite", "detect_language"]

FORMATS = ("csv", "jsonl", "gedit-bench")
COLUMNS = (
    "image",
    "prompt",
    "id",
    "operation",
    "mask",
    "category",
    "language",
    "target_size",
    "tags",
    "source_caption",
    "target_caption",
    "turns",
    "turn",
)
_COLUMN_ALIASES = {
    "images": "image",
    "instruction": "prompt",
    # the caption columns of EmuEdit's test set and of MagicBrush / ImagenHub
    "input_caption": "source_caption",
    "output_caption": "target_caption",
    "source_global_caption": "source_caption",
    "target_global_caption": "target_caption",
}
_SLUG = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
#: Han ideographs (unified + extension A + compatibility) and CJK punctuation / full-width forms.
_CJK = re.compile(r"[\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef]")
_SIZE = re.compile(r"\s*(\d+)\s*[x×X*]\s*(\d+)\s*")
GEDIT_LANGUAGES = {"en": "en", "cn": "zh", "zh": "zh"}
GEDIT_LICENCE = (
    "# Image rights\n\nThe images and instructions come from GEdit-Bench (StepFun, `stepfun-ai/GEdit-Bench` on the "
    "Hugging Face hub; MIT licence per its dataset card). Keep this notice with the suite.\n"
)


class SuiteImportError(SuiteError):
    """A source file with problems: every one, each with its row number. Nothing was written."""

    def __init__(self, source: str, problems: list[str]):
        super().__init__(source, problems)
        listing = "\n".join(f"  - {p}" for p in problems)
        self.message = f"{source} has {len(problems)} problem(s); nothing was written:\n{listing}"
        self.args = (self.message,)
        self.hint = "fix these rows in the source file, then run `evalkit suites import` again"


@dataclass(frozen=True)
class ImportResult:
    """What ``import_suite`` wrote: the loaded suite, its folder and where it came from."""

    suite: Suite
    path: Path
    source: Path
    format: str
    files_copied: int

    def summary(self) -> str:
        s = self.suite
        ops: dict[str, int] = {}
        for c in s.cases:
            ops[c.operation] = ops.get(c.operation, 0) + 1
        by_op = ", ".join(f"{n} {op}" for op, n in sorted(ops.items()))
        return (
            f"suite {s.name!r}: {len(s)} case(s) ({by_op}), languages {', '.join(s.languages) or '—'}, "
            f"{self.files_copied} file(s) copied from {self.source.name} ({self.format}) — "
            f"run it with `evalkit run --suite {s.name} --dry-run`"
        )


@dataclass
class _Input:
    """One image or mask to copy into the suite: a file, or bytes carried by the record (GEdit-Bench)."""

    dest: str  # path inside the suite folder (posix)
    path: Path | None = None
    data: bytes | None = None

    def read(self) -> bytes:
        return self.data if self.data is not None else self.path.read_bytes()  # type: ignore[union-attr]


@dataclass
class _Draft:
    row: int
    case: dict[str, Any] = field(default_factory=dict)
    images: list[_Input] = field(default_factory=list)
    mask: _Input | None = None
    #: a session's turns: (turn fields without the mask, the turn's mask or None)
    turns: list[tuple[dict[str, Any], _Input | None]] = field(default_factory=list)


def detect_language(prompt: str | None) -> str:
    """``zh`` when the text contains CJK characters, else ``en``."""
    return "zh" if prompt and _CJK.search(prompt) else "en"


def slugify(text: str, max_len: int = 64) -> str:
    """A suite-safe slug (lowercase a-z, 0-9, ``-``, ``_``); empty when nothing usable is left."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9_-]+", "-", ascii_text.lower())
    slug = re.sub(r"-{2,}", "-", slug).strip("-_")
    return slug[:max_len].rstrip("-_")


def import_suite(
    src: str | os.PathLike,
    name: str,
    *,
    out: str | os.PathLike | None = None,
    fmt: str | None = None,
) -> ImportResult:
    """Turn ``src`` into the suite folder ``<out>/<name>`` (default ``./suites/<name>``) and load it.

    ``fmt`` is ``csv``, ``jsonl`` or ``gedit-bench``; by default it follows the file's extension
    (``.csv``; ``.jsonl``/``.json``/``.ndjson``; ``.parquet`` or a folder → ``gedit-bench``).
    Raises :class:`SuiteImportError` listing every problem (nothing written), or
    :class:`~evalkit.errors.InvalidInputError` for a bad name, format or an existing target folder.
    """
    source = Path(src)
    if not isinstance(name, str) or not _SLUG.fullmatch(name):
        suggestion = slugify(str(name))
        raise InvalidInputError(
            f"suite name {name!r} is not a safe slug (1-64 characters: lowercase a-z, 0-9, '-', '_')",
            hint=f"try --name {suggestion}" if suggestion else "pick a name like my-cases",
        )
    fmt = _format_for(source, fmt)
    out_dir = Path(out) if out is not None else Path.cwd() / LOCAL_SUITES_DIR
    target = out_dir / name
    if target.exists():
        raise InvalidInputError(
            f"{target} already exists; evalkit does not overwrite a suite (runs compare against its fingerprint)",
            hint="choose another --name, or remove that folder first",
        )
    if not source.exists():
        raise InvalidInputError(f"{source} not found", hint="give the path of a CSV, JSON Lines or GEdit-Bench file")

    problems: list[str] = []
    if fmt == "gedit-bench":
        drafts = _gedit_drafts(source, problems)
    else:
        drafts = _table_drafts(source, fmt, problems)
    _check_inputs(drafts, problems)
    _check_ids(drafts, problems)

    with tempfile.TemporaryDirectory(prefix="evalkit-import-") as tmp:
        staged = Path(tmp) / name
        good = [d for d in drafts if not any(p.startswith(f"row {d.row}:") for p in problems)]
        copied = _write(staged, name, good, source, fmt)
        if good:
            problems += _loader_problems(staged, good)
        if not drafts and not problems:
            problems.append(f"{source.name}: no rows (a suite needs at least one case)")
        if problems:
            raise SuiteImportError(str(source), sorted(problems, key=_row_order))
        out_dir.mkdir(parents=True, exist_ok=True)
        if target.exists():  # created meanwhile by someone else: still never overwrite
            raise InvalidInputError(f"{target} already exists", hint="choose another --name")
        shutil.move(str(staged), str(target))
    suite = _SuiteLoader(target).load()
    return ImportResult(suite=suite, path=target.resolve(), source=source, format=fmt, files_copied=copied)


# ---- formats -----------------------------------------------------------------------------------


def _format_for(source: Path, fmt: str | None) -> str:
    if fmt is not None:
        if fmt not in FORMATS:
            raise InvalidInputError(f"unknown import format {fmt!r}", hint=f"use one of: {', '.join(FORMATS)}")
        return fmt
    suffix = source.suffix.lower()
    if suffix in (".csv", ".tsv"):
        return "csv"
    if suffix in (".jsonl", ".json", ".ndjson"):
        return "jsonl"
    if suffix == ".parquet" or source.is_dir():
        return "gedit-bench"
    raise InvalidInputError(
        f"cannot tell the format of {source.name} from its extension",
        hint=f"pass --format {'|'.join(FORMATS)}",
    )


def _row_order(problem: str) -> tuple[int, str]:
    m = re.match(r"row (\d+)", problem)
    return (int(m.group(1)) if m else 0, problem)


def _read_rows(source: Path, fmt: str, problems: list[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    """(row number, record) for each row; reading problems are added, with their row or line."""
    try:
        text = source.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        problems.append(f"{source.name}: is not UTF-8 text (save it as UTF-8)")
        return
    except OSError as exc:
        problems.append(f"{source.name}: cannot be read ({exc.strerror})")
        return
    if fmt == "csv":
        dialect: Any = "excel-tab" if source.suffix.lower() == ".tsv" else "excel"
        reader = csv.DictReader(io.StringIO(text, newline=""), dialect=dialect)
        header = [h.strip() for h in (reader.fieldnames or [])]
        if not header:
            problems.append(f"{source.name}: empty file (expected a header row: {', '.join(COLUMNS)})")
            return
        _check_header(header, source.name, problems)
        try:
            for number, raw in enumerate(reader, start=1):
                extra = raw.pop(None, None)
                if extra:
                    problems.append(f"row {number}: {len(extra)} more value(s) than header columns")
                record = {(k or "").strip(): v for k, v in raw.items()}
                if not any((v or "").strip() for v in record.values()):
                    continue  # a blank line
                yield number, record
        except csv.Error as exc:
            problems.append(f"{source.name}: not valid CSV ({exc})")
        return
    seen_keys: set[str] = set()
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(f"row {number}: not valid JSON ({exc.msg} at column {exc.colno})")
            continue
        if not isinstance(record, dict):
            problems.append(f"row {number}: must be a JSON object, got {type(record).__name__}")
            continue
        new = [k for k in record if k not in seen_keys]
        seen_keys.update(record)
        _check_header(new, source.name, problems, row=number)
        yield number, record


def _check_header(columns: Iterable[str], where: str, problems: list[str], row: int | None = None) -> None:
    import difflib

    for col in columns:
        if col in COLUMNS or col in _COLUMN_ALIASES:
            continue
        close = difflib.get_close_matches(col, COLUMNS, n=1, cutoff=0.6)
        hint = f" — did you mean {close[0]!r}?" if close else f" (columns: {', '.join(COLUMNS)})"
        problems.append(f"{f'row {row}' if row else where}: unknown column {col!r}{hint}")
    if row is None and "image" not in columns and "images" not in columns:
        problems.append(f"{where}: no 'image' column (columns: {', '.join(COLUMNS)})")


def _table_drafts(source: Path, fmt: str, problems: list[str]) -> list[_Draft]:
    base = source.resolve().parent
    drafts = []
    rows = list(_read_rows(source, fmt, problems))
    if fmt == "csv":
        rows = _csv_sessions(rows, problems)
    for number, raw in rows:
        record = {_COLUMN_ALIASES.get(k, k): v for k, v in raw.items()}
        add = lambda msg, n=number: problems.append(f"row {n}: {msg}")  # noqa: E731
        d = _Draft(row=number)
        if record.get("turns") is not None:
            _draft_turns(d, record, base, add)
        image_refs = _listish(record.get("image"), "image", add)
        if not image_refs:
            add("no image (the 'image' column names at least one file, relative to the source file)")
        for i, ref in enumerate(image_refs):
            inp = _local_file(
                ref, base, "images", f"image {ref!r}" if len(image_refs) == 1 else f"image {i + 1} {ref!r}", add
            )
            if inp is not None:
                d.images.append(inp)
        mask_ref = _text(record.get("mask"))
        if mask_ref:
            d.mask = _local_file(mask_ref, base, "masks", f"mask {mask_ref!r}", add)

        operation = _text(record.get("operation"))
        if operation:
            operation = OPERATION_ALIASES.get(operation, operation)
            if operation not in OPERATIONS:
                add(f"unknown operation {operation!r} (known: {', '.join(OPERATIONS)})")
                operation = None
        else:
            operation = "multi_image" if len(image_refs) > 1 else "inpaint" if mask_ref else "general_edit"
        prompt = _text(record.get("prompt"))
        if d.turns:
            if prompt:
                add("'prompt' and 'turns' both given: a session gives each turn's prompt in 'turns'")
            if mask_ref:
                add("'mask' and 'turns' both given: a session gives each turn's mask in 'turns'")
            prompt = _text(d.turns[0][0].get("prompt"))
        elif not prompt and operation is not None and operation not in PROMPTLESS_OPERATIONS:
            add(f"prompt is missing (operation {operation!r} needs one)")

        first = PurePosixPath(image_refs[0]).stem if image_refs else ""
        case_id = _text(record.get("id"))
        if case_id:
            if not _SLUG.fullmatch(case_id):
                better = slugify(case_id)
                add(f"id {case_id!r} is not a safe slug" + (f" (try {better!r})" if better else ""))
        else:
            stem = slugify(first, 64 - len(str(number)) - 1) or "case"
            case_id = f"{stem}-{number}"

        case: dict[str, Any] = {"id": case_id, "operation": operation or "general_edit"}
        case["category"] = _text(record.get("category")) or case["operation"]
        if prompt and not d.turns:
            case["prompt"] = prompt
        case["language"] = _text(record.get("language")) or detect_language(prompt)
        size = record.get("target_size")
        if isinstance(size, list):
            case["target_size"] = size
        elif _text(size):
            m = _SIZE.fullmatch(str(size))
            if m:
                case["target_size"] = [int(m.group(1)), int(m.group(2))]
            else:
                add(f"target_size {size!r} must be WIDTHxHEIGHT, e.g. 1024x768")
        tags = _listish(record.get("tags"), "tags", add)
        if tags:
            case["tags"] = tags
        for key in ("source_caption", "target_caption"):
            caption = _text(record.get(key))
            if caption:
                case[key] = caption
        d.case = case
        drafts.append(d)
    return drafts


def _csv_sessions(rows: list[tuple[int, dict[str, Any]]], problems: list[str]) -> list[tuple[int, dict[str, Any]]]:
    """CSV rows with a ``turn`` number merged into one record per session (rows sharing an ``id``), its
    ``turns`` in turn order; rows without a turn pass through. The merged record keeps its first row's number."""
    out: list[tuple[int, dict[str, Any]]] = []
    sessions: dict[str, list[tuple[int, int, dict[str, Any]]]] = {}
    for number, record in rows:
        turn_text = _text(record.get("turn"))
        if turn_text is None:
            out.append((number, record))
            continue
        add = lambda msg, n=number: problems.append(f"row {n}: {msg}")  # noqa: E731
        case_id = _text(record.get("id"))
        if not turn_text.isdigit() or int(turn_text) < 1:
            add(f"turn {turn_text!r} must be a whole number ≥ 1 (the turn's place in its session)")
            continue
        if not case_id:
            add("a row with a 'turn' needs an 'id' (the rows of one session share it)")
            continue
        if case_id not in sessions:
            sessions[case_id] = []
            out.append((number, {"$session": case_id}))
        sessions[case_id].append((int(turn_text), number, record))
    merged: list[tuple[int, dict[str, Any]]] = []
    for number, record in out:
        if "$session" not in record:
            merged.append((number, record))
            continue
        parts = sorted(sessions[record["$session"]], key=lambda t: t[0])
        numbers = [t[0] for t in parts]
        if numbers != list(range(1, len(parts) + 1)):
            problems.append(
                f"row {number}: session {record['$session']!r} has turns {numbers}; "
                f"number them 1, 2, … {len(parts)} without gaps or repeats"
            )
            continue
        first = parts[0][2]
        whole = {k: v for k, v in first.items() if k not in ("prompt", "mask", "turn")}
        for _, n, r in parts[1:]:
            for key in ("image", "category", "language", "target_size", "tags"):
                if _text(r.get(key)) and _text(r.get(key)) != _text(first.get(key)):
                    problems.append(
                        f"row {n}: {key} {_text(r.get(key))!r} differs from turn 1 of session "
                        f"{record['$session']!r} (row {number}); a session's {key} is given on turn 1"
                    )
        whole["turns"] = [
            {
                k: v
                for k, v in (("prompt", _text(r.get("prompt"))), ("operation", _text(r.get("operation"))))
                if v is not None
            }
            | ({"mask": _text(r.get("mask"))} if _text(r.get("mask")) else {})
            for _, _, r in parts
        ]
        merged.append((number, whole))
    return merged


def _draft_turns(d: _Draft, record: dict[str, Any], base: Path, add) -> None:
    """A JSON Lines ``turns`` list (or merged CSV session rows) → the draft's turns, masks checked as files."""
    turns = record.get("turns")
    if not isinstance(turns, list) or not turns:
        add(f"turns must be a non-empty list of prompts or objects, got {turns!r}")
        return
    for k, raw in enumerate(turns, start=1):
        if isinstance(raw, str):
            raw = {"prompt": raw}
        if not isinstance(raw, dict):
            add(f"turn {k} must be a prompt or an object {{prompt, operation?, mask?, params?}}, got {raw!r}")
            continue
        fields = {key: v for key, v in raw.items() if key != "mask"}
        op = fields.get("operation")
        if isinstance(op, str):
            fields["operation"] = op = OPERATION_ALIASES.get(op, op)
        if not _text(fields.get("prompt")) and (op or record.get("operation") or "general_edit") not in (
            PROMPTLESS_OPERATIONS
        ):
            add(f"turn {k}: no prompt (its operation needs one)")
        mask = None
        mask_ref = raw.get("mask")
        if mask_ref is not None:
            if isinstance(mask_ref, str) and mask_ref.strip():
                mask = _local_file(mask_ref.strip(), base, "masks", f"turn {k} mask {mask_ref!r}", add)
            else:
                add(f"turn {k}: mask must be a path relative to the source file, got {mask_ref!r}")
        d.turns.append((fields, mask))


def _gedit_records(source: Path, problems: list[str]) -> Iterator[tuple[int, dict[str, Any], Path]]:
    """GEdit-Bench records from Parquet (a file or a snapshot folder) or JSON Lines, numbered from 1."""
    if source.is_dir():
        files = sorted(source.rglob("*.parquet")) or sorted(source.rglob("*.jsonl"))
        if not files:
            problems.append(f"{source}: no .parquet or .jsonl files (expected a GEdit-Bench snapshot)")
            return
    else:
        files = [source]
    number = 0
    for f in files:
        if f.suffix.lower() == ".parquet":
            try:
                import pyarrow.parquet as pq

                records = pq.read_table(f).to_pylist()
            except Exception as exc:  # pyarrow raises several types for a bad file
                problems.append(f"{f.name}: cannot be read as Parquet ({type(exc).__name__}: {exc})")
                continue
            for rec in records:
                number += 1
                yield number, rec, f.parent
        else:
            for _line_no, rec in _json_lines(f, problems):
                number += 1
                yield number, rec, f.parent


def _json_lines(path: Path, problems: list[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(f"{path.name}: cannot be read ({exc})")
        return
    for line_no, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(f"{path.name} line {line_no}: not valid JSON ({exc.msg})")
            continue
        if isinstance(rec, dict):
            yield line_no, rec
        else:
            problems.append(f"{path.name} line {line_no}: must be a JSON object")


def _gedit_category(task_type: Any) -> str | None:
    if not isinstance(task_type, str):
        return None
    wanted = re.sub(r"[\s_-]+", "_", task_type.strip().lower())
    for cat in GEDIT_CATEGORIES:
        if cat.replace("-", "_") == wanted:
            return cat
    return None


def _gedit_drafts(source: Path, problems: list[str]) -> list[_Draft]:
    drafts = []
    for number, rec, base in _gedit_records(source, problems):
        add = lambda msg, n=number: problems.append(f"row {n}: {msg}")  # noqa: E731
        key = rec.get("key")
        key_slug = slugify(str(key)) if key not in (None, "") else ""
        if not key_slug:
            add(f"key {key!r} is missing or has no usable characters")
        category = _gedit_category(rec.get("task_type"))
        if category is None:
            add(f"task_type {rec.get('task_type')!r} is not one of GEdit-Bench's 11: {', '.join(GEDIT_CATEGORIES)}")
        lang_raw = rec.get("instruction_language")
        language = GEDIT_LANGUAGES.get(str(lang_raw).strip().lower()) if lang_raw is not None else None
        prompt = _text(rec.get("instruction"))
        if language is None:
            if lang_raw is None:
                language = detect_language(prompt)
            else:
                add(f"instruction_language {lang_raw!r} is not 'en' or 'cn'")
        if not prompt:
            add("instruction is missing")
        suffix = "" if language in (None, "en") else f"-{language}"
        case_id = (key_slug[: 64 - len(suffix)] + suffix) if key_slug else f"row-{number}"
        image = rec.get("input_image")
        if image is None:
            image = rec.get("input_image_raw")
        inp = _gedit_image(image, base, case_id, add)
        d = _Draft(row=number, images=[inp] if inp is not None else [])
        tags = ["gedit-bench"]
        if rec.get("Intersection_exist") in (True, 1, "true", "True"):
            tags.append("intersection")
        d.case = {
            "id": case_id,
            "operation": "general_edit",
            "category": category or "general_edit",
            "language": language or "en",
            "tags": tags,
        }
        if prompt:
            d.case["prompt"] = prompt
        drafts.append(d)
    return drafts


def _gedit_image(value: Any, base: Path, case_id: str, add) -> _Input | None:
    """``input_image`` as the ``datasets`` library stores it ({bytes, path}), base64 text, or a path."""
    if isinstance(value, dict):
        data = value.get("bytes")
        if isinstance(data, str):
            try:
                data = base64.b64decode(data, validate=True)
            except ValueError:
                add("input_image.bytes is text but not base64")
                return None
        if isinstance(data, (bytes, bytearray)) and data:
            return _Input(dest=f"images/{case_id}", data=bytes(data))
        value = value.get("path")
    if isinstance(value, str) and value:
        if value.startswith("data:") and ";base64," in value:
            try:
                return _Input(dest=f"images/{case_id}", data=base64.b64decode(value.split(",", 1)[1], validate=True))
            except ValueError:
                add("input_image data URI is not valid base64")
                return None
        return _local_file(value, base, "images", f"input_image {value!r}", add)
    add("input_image is missing (expected image bytes or a path)")
    return None


# ---- checks --------------------------------------------------------------------------------------


def _text(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value).strip()
    return text or None


def _listish(value: Any, label: str, add) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list):
        if not all(isinstance(v, str) for v in value):
            add(f"{label} must be text or a list of text")
            return []
        return [v.strip() for v in value if v.strip()]
    return [part.strip() for part in str(value).split(";") if part.strip()]


def _local_file(ref: str, base: Path, folder: str, label: str, add) -> _Input | None:
    """A file named relative to the source file's folder, checked to stay inside it."""
    if re.match(r"[a-z][a-z0-9+.-]*://", ref, re.IGNORECASE):
        add(f"{label} is a URL; download it and give a path relative to the source file")
        return None
    posix = PurePosixPath(ref.replace("\\", "/"))
    if posix.is_absolute() or Path(ref).is_absolute() or re.match(r"[A-Za-z]:", ref):
        add(f"{label} is an absolute path (unsafe): give a path relative to the source file")
        return None
    if ".." in posix.parts:
        add(f"{label} leaves the source file's folder ('..', unsafe): move the file next to the source")
        return None
    path = base / posix
    try:
        real = path.resolve(strict=True)
    except FileNotFoundError:
        add(f"{label} not found (looked for {path})")
        return None
    except (OSError, RuntimeError) as exc:
        add(f"{label} cannot be resolved ({exc})")
        return None
    if not real.is_relative_to(base):
        add(f"{label} is a symlink that leads outside the source file's folder (unsafe)")
        return None
    if not real.is_file():
        add(f"{label} is not a regular file")
        return None
    return _Input(dest=f"{folder}/{posix.as_posix()}", path=real)


def _check_inputs(drafts: list[_Draft], problems: list[str]) -> None:
    """Decode every image and mask once; an unreadable file or a mask of the wrong size is a row's problem."""
    decoded: dict[tuple[str, Path | None, int], Any] = {}

    def decode(inp: _Input, label: str, add) -> Any:
        k = (inp.dest, inp.path, id(inp.data) if inp.data is not None else 0)
        if k not in decoded:
            try:
                decoded[k] = load_image(inp.read(), name=inp.path.name if inp.path else inp.dest)
            except ImageError as exc:
                decoded[k] = f"{exc.message}"
            except OSError as exc:
                decoded[k] = f"cannot be read ({exc.strerror})"
        got = decoded[k]
        if isinstance(got, str):
            add(f"{label} is not a usable image: {got}")
            return None
        return got

    for d in drafts:
        add = lambda msg, n=d.row: problems.append(f"row {n}: {msg}")  # noqa: E731
        first = None
        for i, inp in enumerate(d.images):
            img = decode(inp, f"image {inp.path.name if inp.path else i + 1}", add)
            if i == 0:
                first = img
            if img is not None and inp.data is not None and "." not in PurePosixPath(inp.dest).name:
                inp.dest += "." + {"JPEG": "jpg"}.get(img.format, img.format.lower())
        masks = [("mask", d.mask)] + [(f"turn {k} mask", m) for k, (_, m) in enumerate(d.turns, start=1)]
        for label, mask_input in masks:
            if mask_input is None:
                continue
            mask = decode(mask_input, label, add)
            if mask is not None and first is not None and (mask.width, mask.height) != (first.width, first.height):
                add(
                    f"{label} is {mask.width}×{mask.height} but the image is {first.width}×{first.height}; "
                    "they must match"
                )


def _check_ids(drafts: list[_Draft], problems: list[str]) -> None:
    first: dict[str, int] = {}
    for d in drafts:
        cid = str(d.case.get("id"))
        if cid in first:
            problems.append(f"row {d.row}: id {cid!r} is already used by row {first[cid]}")
        else:
            first[cid] = d.row


def _loader_problems(staged: Path, drafts: list[_Draft]) -> list[str]:
    """The suite loader's verdict on the staged folder, each problem mapped back to its row."""
    try:
        _SuiteLoader(staged).load()
    except SuiteError as exc:
        rows = {d.case["id"]: d.row for d in drafts}
        mapped = []
        for p in exc.problems:
            m = re.match(r"case '([^']+)': (.*)", p, re.DOTALL)
            if m and m.group(1) in rows:
                mapped.append(f"row {rows[m.group(1)]}: {m.group(2)}")
            else:
                mapped.append(p)
        return mapped
    return []


# ---- writing -------------------------------------------------------------------------------------


def _write(staged: Path, name: str, drafts: list[_Draft], source: Path, fmt: str) -> int:
    staged.mkdir(parents=True)
    copied: dict[str, int] = {}
    for d in drafts:
        turn_masks = [m for _, m in d.turns if m is not None]
        for inp in [*d.images, *([d.mask] if d.mask is not None else []), *turn_masks]:
            if inp.dest in copied:
                continue
            dest = staged / inp.dest
            dest.parent.mkdir(parents=True, exist_ok=True)
            if inp.path is not None:
                shutil.copyfile(inp.path, dest)
            else:
                dest.write_bytes(inp.read())
            copied[inp.dest] = 1
        d.case["images"] = [i.dest for i in d.images]
        if d.mask is not None:
            d.case["mask"] = d.mask.dest
        if d.turns:
            d.case["turns"] = [
                {**fields, **({"mask": mask.dest} if mask is not None else {})} for fields, mask in d.turns
            ]
    stamp = datetime.now(UTC).strftime("%Y-%m-%d")
    lines = [
        f"name = {_toml_str(name)}",
        f"description = {_toml_str(f'imported from {source.name} ({fmt}) on {stamp}')}",
        "version = 1",
    ]
    order = (
        "id",
        "operation",
        "category",
        "prompt",
        "language",
        "images",
        "mask",
        "target_size",
        "tags",
        "source_caption",
        "target_caption",
        "turns",
    )
    for d in drafts:
        lines += ["", "[[case]]"]
        lines += [f"{k} = {_toml_value(d.case[k])}" for k in order if k in d.case]
    (staged / SUITE_FILE).write_text("\n".join(lines) + "\n", encoding="utf-8")
    if fmt == "gedit-bench":
        (staged / "LICENSES.md").write_text(GEDIT_LICENCE, encoding="utf-8")
    return len(copied)


def _toml_str(text: str) -> str:
    out = ['"']
    for ch in text:
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch in "\n\t\r":
            out.append({"\n": "\\n", "\t": "\\t", "\r": "\\r"}[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return _toml_str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_toml_str(str(k))} = {_toml_value(v)}" for k, v in value.items()) + " }"
    return _toml_str(str(value))
