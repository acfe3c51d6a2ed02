"""Edit-case suites: a folder with ``suite.toml`` plus its images and masks, loaded and validated.

A suite is data, not code (like lm-evaluation-harness tasks): anyone can write one, so loading
checks *everything* up front and reports every problem at once in one :class:`SuiteError`, each
naming its case — a typo, a missing file, a corrupt image or an unsafe path should cost one edit
round, not one per problem, and should never surface as a traceback from deep inside a paid run.

Format (one ``[[case]]`` table per case; paths are relative to the suite folder)::

    name = "core"                          # optional; must equal the folder name
    description = "…"
    version = 1
    [[case]]
    id = "astronaut-background-beach"      # ^[a-z0-9][a-z0-9_-]{0,63}$
    operation = "general_edit"             # evalkit.catalog.spec.OPERATIONS (aliases: outpaint → zoom_out)
    category = "background_change"         # optional, default: the operation (CATEGORIES: GEdit 11 + operations)
    prompt = "Replace the background with a sunny beach"   # omit only for PROMPTLESS_OPERATIONS
    language = "en"                        # default "en"
    images = ["images/astronaut.jpg"]      # 1..n
    mask = "masks/astronaut-helmet.png"    # optional; white = region to edit; same size as images[0]
    target_size = [1024, 1024]             # optional [width, height]
    tags = ["portrait"]
    params = { background_prompt = "a sunny beach" }   # model-specific extras (Stability needs some)
    source_caption = "an astronaut in a studio"          # optional: what the input shows
    target_caption = "an astronaut on a sunny beach"     # optional: what the edited image should show

Captions are never sent to a model: they feed the semantic metrics (:mod:`evalkit.scoring.semantic`):
CLIP-T compares the output with ``target_caption``; CLIP directional similarity needs both.

A *session* (iterative editing) gives ``turns`` instead of ``prompt``: 2–10 turns, each a prompt string or
a table ``{prompt, operation?, mask?, params?}``; turn k edits the same model's output of turn k−1::

    [[case]]
    id = "living-room-evening"
    operation = "general_edit"             # the turns' default operation (optional for a session)
    images = ["images/room.jpg"]           # the session's original image
    turns = ["Paint the walls sage green", "Add a bookshelf on the left", "Make it evening"]

    [[case]]                               # or one [[case.turns]] table per turn
    id = "astronaut-fix"
    images = ["images/astronaut.jpg"]
    [[case.turns]]
    prompt = "Remove the flag patch"
    operation = "inpaint"
    mask = "masks/astronaut-patch.png"     # a turn's own mask: same size as the original image
    [[case.turns]]
    prompt = "Make the lighting warmer"

A turn's params are the case's ``params`` with its own added over them. Only turn 1 may take several
images (later turns edit the previous output: one image); a case-level ``mask`` is not allowed in a
session (give it to the turn it belongs to).

Images are decoded once, at load time, through :func:`evalkit.images.load_image`; the decoded bytes
are kept on the case, so what a run sends is exactly what :attr:`Suite.fingerprint` hashed.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import re
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import evalkit.images as _images
from evalkit.catalog.spec import OPERATION_ALIASES, OPERATIONS
from evalkit.errors import ImageError, InvalidInputError, SuiteError
from evalkit.images import InputImage, load_image
from evalkit.resources import datasets_dir

#: GEdit-Bench's 11 task groups (``GROUPS`` in its scoring scripts), spelled as GEdit spells them.
GEDIT_CATEGORIES = (
    "background_change",
    "color_alter",
    "material_alter",
    "motion_change",
    "ps_human",
    "style_change",
    "subject-add",
    "subject-remove",
    "subject-replace",
    "text_change",
    "tone_transfer",
)
#: categories named after an operation: a case without a category gets its operation's (one per operation).
OPERATION_CATEGORIES = OPERATIONS
CATEGORIES = GEDIT_CATEGORIES + OPERATION_CATEGORIES

#: operations whose models take no prompt, so a case may omit it.
PROMPTLESS_OPERATIONS = frozenset({"zoom_out", "remove_background", "erase"})
#: operations whose models take exactly one input image.
SINGLE_IMAGE_OPERATIONS = frozenset({"general_edit", "inpaint", "erase", "zoom_out", "remove_background"})
#: case params that Stability endpoints read; when present they must be non-empty strings.
TEXT_PARAMS = ("search_prompt", "select_prompt", "background_prompt", "negative_prompt")

SUITE_FILE = "suite.toml"
LICENCE_FILES = ("LICENSES.md", "LICENSES", "LICENSES.txt", "LICENSE.md", "LICENSE")
#: extra folders holding suites, ``os.pathsep``-separated, searched before the bundled ones.
SUITES_PATH_ENV = "EVALKIT_SUITES_PATH"
#: folder (relative to the working directory) searched after $EVALKIT_SUITES_PATH; `suites import` writes here.
LOCAL_SUITES_DIR = "suites"

MAX_SUITE_FILE_BYTES = 1_000_000
MAX_PROMPT_CHARS = 4000
MAX_IMAGES_PER_CASE = 16
TARGET_SIDE_RANGE_PX = (64, 8192)
#: a session has this many turns (a single edit uses ``prompt``)
SESSION_TURNS_RANGE = (2, 10)

_SLUG = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")  # always used with fullmatch (no trailing-newline loophole)
_LANGUAGE = re.compile(r"[a-z]{2,3}(?:-[A-Za-z0-9]{2,8})*")
_TOP_KEYS = ("name", "description", "version", "case")
_CASE_KEYS = (
    "id",
    "operation",
    "category",
    "prompt",
    "turns",
    "language",
    "images",
    "mask",
    "target_size",
    "tags",
    "params",
    "source_caption",
    "target_caption",
)
#: case keys holding a caption (a description of an image for the semantic metrics; never sent to a model)
CAPTION_KEYS = ("source_caption", "target_caption")
MAX_CAPTION_CHARS = 1000
_REQUIRED_CASE_KEYS = ("id", "operation", "images")
_TURN_KEYS = ("prompt", "operation", "mask", "params")


@dataclass(frozen=True)
class Turn:
    """One turn of a session: an instruction applied to the previous turn's output (turn 1: the case's images)."""

    #: the instruction of this turn (None for an operation that takes none)
    prompt: str | None
    #: what kind of edit this turn asks for
    operation: str
    #: this turn's mask file (white = edit; the size of the session's original image), or None
    mask: Path | None = None
    #: the parameters of this turn: the case's params with the turn's own added over them
    params: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "prompt": self.prompt,
            "operation": self.operation,
            "mask": str(self.mask) if self.mask is not None else None,
            "params": dict(self.params),
        }


@dataclass(frozen=True)
class EditCase:
    """One edit request to run against every model: inputs, instruction and what it tests."""

    #: the case's id, unique in its suite (a safe slug: it appears in call ids and file names)
    id: str
    #: what kind of edit it asks for (general_edit, inpaint, erase, …; see ``evalkit.catalog.OPERATIONS``)
    operation: str
    #: the group it is reported under (e.g. "text", "object removal")
    category: str
    #: the instruction sent to the model (None for operations that take none, e.g. erase)
    prompt: str | None
    #: the prompt's language (en, zh, …); models that do not list it are not applicable
    language: str
    #: the input image files, in order (several for multi-image / character-reference cases)
    images: tuple[Path, ...]
    #: the mask file for inpaint / erase (white = edit), or None
    mask: Path | None = None
    #: the output size asked for, as (width, height), or None for the model's default
    target_size: tuple[int, int] | None = None
    #: free labels for slicing results
    tags: tuple[str, ...] = ()
    #: extra case parameters some models need (e.g. a search prompt for search-and-replace)
    params: Mapping[str, Any] = field(default_factory=dict, hash=False)
    #: what the input image shows, in words (for CLIP directional similarity), or None
    source_caption: str | None = None
    #: what the edited image should show, in words (for CLIP-T and CLIP directional similarity), or None
    target_caption: str | None = None
    #: a session's turns, in order (empty for a single edit); ``prompt``/``operation``/``mask`` are turn 1's
    turns: tuple[Turn, ...] = ()
    #: the inputs as decoded when the suite was loaded (None for a case built by hand).
    _decoded: tuple[tuple[InputImage, ...], InputImage | None] | None = field(
        default=None, repr=False, compare=False, hash=False
    )
    #: each turn's mask as decoded when the suite was loaded (None for a case built by hand)
    _turn_masks: tuple[InputImage | None, ...] | None = field(default=None, repr=False, compare=False, hash=False)

    @property
    def is_session(self) -> bool:
        """True for a session of turns (iterative editing), False for a single edit."""
        return bool(self.turns)

    def turn_id(self, turn: int) -> str:
        """The id turn ``turn`` (1-based) of this session is recorded under: ``<case id>.t<turn>``."""
        return turn_case_id(self.id, turn)

    def turn_mask(self, turn: int) -> InputImage | None:
        """Turn ``turn``'s (1-based) mask, decoded, or None."""
        t = self.turns[turn - 1]
        if t.mask is None:
            return None
        if self._turn_masks is not None:
            return self._turn_masks[turn - 1]
        return load_image(t.mask)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly description (paths as strings, no image bytes) for logs and the store."""
        return {
            "id": self.id,
            "operation": self.operation,
            "category": self.category,
            "prompt": self.prompt,
            "language": self.language,
            "images": [str(p) for p in self.images],
            "mask": str(self.mask) if self.mask is not None else None,
            "target_size": list(self.target_size) if self.target_size is not None else None,
            "tags": list(self.tags),
            "params": dict(self.params),
            "source_caption": self.source_caption,
            "target_caption": self.target_caption,
            "turns": [t.to_dict() for t in self.turns],
        }

    def load_inputs(self) -> tuple[tuple[InputImage, ...], InputImage | None]:
        """The input images and the mask (or None), decoded via :func:`load_image`."""
        if self._decoded is not None:
            return self._decoded
        decoded = tuple(load_image(p) for p in self.images)
        return decoded, (load_image(self.mask) if self.mask is not None else None)


def turn_case_id(case_id: str, turn: int) -> str:
    """``<case id>.t<turn>``: a session turn's id in the workspace (``.`` never occurs in a case id)."""
    return f"{case_id}.t{turn}"


@dataclass(frozen=True)
class Suite:
    """A validated set of edit cases; ``fingerprint`` changes when the toml or any referenced file does."""

    name: str
    path: Path
    description: str
    version: int
    cases: tuple[EditCase, ...]
    fingerprint: str

    def case(self, case_id: str) -> EditCase:
        for c in self.cases:
            if c.id == case_id:
                return c
        ids = [c.id for c in self.cases]
        close = difflib.get_close_matches(str(case_id), ids, n=3)
        hint = f"did you mean {', '.join(close)}?" if close else f"cases: {', '.join(ids)}"
        raise InvalidInputError(f"suite {self.name!r} has no case {case_id!r}", hint=hint)

    def __iter__(self) -> Iterator[EditCase]:
        return iter(self.cases)

    def __len__(self) -> int:
        return len(self.cases)

    @property
    def operations(self) -> tuple[str, ...]:
        return tuple(sorted({c.operation for c in self.cases}))

    @property
    def categories(self) -> tuple[str, ...]:
        return tuple(sorted({c.category for c in self.cases}))

    @property
    def languages(self) -> tuple[str, ...]:
        return tuple(sorted({c.language for c in self.cases if c.prompt is not None}))

    def licences(self) -> str:
        """The text of the suite's LICENSES file (image rights); empty when the suite ships none."""
        for name in LICENCE_FILES:
            candidate = self.path / name
            if candidate.is_file():
                return candidate.read_text(encoding="utf-8")
        return ""


@dataclass(frozen=True)
class SuiteInfo:
    """One line of ``list_suites``; ``error`` holds the SuiteError text of a suite that does not load."""

    name: str
    path: Path
    n_cases: int
    operations: tuple[str, ...]
    categories: tuple[str, ...]
    languages: tuple[str, ...]
    description: str
    error: str | None = None


# ---- finding suites ---------------------------------------------------------------------------


def suite_dirs(search_paths: Sequence[str | os.PathLike] = ()) -> list[Path]:
    """Folders searched for suites by name, in order: ``search_paths``, $EVALKIT_SUITES_PATH, ``./suites``
    (where ``evalkit suites import`` writes by default), bundled."""
    dirs = [Path(p) for p in search_paths]
    dirs += [Path(p) for p in os.environ.get(SUITES_PATH_ENV, "").split(os.pathsep) if p]
    dirs.append(Path.cwd() / LOCAL_SUITES_DIR)
    try:
        dirs.append(datasets_dir())
    except FileNotFoundError:
        pass  # a broken install still serves suites from the other folders
    return dirs


def load_suite(name_or_path: str | os.PathLike, *, search_paths: Sequence[str | os.PathLike] = ()) -> Suite:
    """Load and validate a suite given by name (a slug, looked up in :func:`suite_dirs`) or by path.

    A ``Path``, or a string that is not a slug, is a path: the suite folder or its ``suite.toml``.
    Raises :class:`SuiteError` listing every problem found.
    """
    return _SuiteLoader(_locate(name_or_path, search_paths)).load()


def list_suites(search_paths: Sequence[str | os.PathLike] = ()) -> list[SuiteInfo]:
    """Every suite reachable by name (earlier folders shadow later ones, like $PATH), loaded and checked."""
    infos: list[SuiteInfo] = []
    seen: set[str] = set()
    for folder in suite_dirs(search_paths):
        if not folder.is_dir():
            continue
        for sub in sorted(folder.iterdir()):
            if sub.name in seen or not _SLUG.fullmatch(sub.name) or not (sub / SUITE_FILE).is_file():
                continue
            seen.add(sub.name)
            try:
                s = _SuiteLoader(sub).load()
            except SuiteError as exc:
                infos.append(SuiteInfo(sub.name, sub, 0, (), (), (), "", error=str(exc)))
                continue
            infos.append(
                SuiteInfo(s.name, s.path, len(s.cases), s.operations, s.categories, s.languages, s.description)
            )
    return infos


def _locate(name_or_path: str | os.PathLike, search_paths: Sequence[str | os.PathLike]) -> Path:
    if isinstance(name_or_path, str) and _SLUG.fullmatch(name_or_path):
        dirs = suite_dirs(search_paths)
        for folder in dirs:
            if (folder / name_or_path / SUITE_FILE).is_file():
                return folder / name_or_path
        available = sorted({p.name for d in dirs if d.is_dir() for p in d.iterdir() if (p / SUITE_FILE).is_file()})
        raise SuiteError(
            name_or_path,
            [
                f"no suite named {name_or_path!r} in {', '.join(str(d) for d in dirs) or '(no folders)'}; "
                f"available: {', '.join(available) or 'none'} (add a folder with ${SUITES_PATH_ENV} or pass a path)"
            ],
        )
    path = Path(name_or_path)
    if path.name == SUITE_FILE and path.is_file():
        return path.parent
    if (path / SUITE_FILE).is_file():
        return path
    raise SuiteError(
        str(name_or_path),
        [f"no suite at {path}: expected a folder containing {SUITE_FILE} (suite names are lowercase slugs)"],
    )


# ---- loading and validation --------------------------------------------------------------------


def _suggest(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=2, cutoff=0.6)
    return f" — did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


class _SuiteLoader:
    """Reads one suite folder, collecting every problem instead of stopping at the first."""

    def __init__(self, folder: Path):
        self.folder = folder.resolve()
        self.problems: list[str] = []
        #: relative path → (sha256 of the file bytes, decoded image or the error text)
        self.files: dict[str, tuple[str, InputImage | str]] = {}

    def load(self) -> Suite:
        toml_bytes, data = self._read_toml()
        name = self._header(data)
        cases: list[EditCase] = []
        first_index: dict[str, int] = {}
        raw_cases = data.get("case")
        if raw_cases is None:
            self.problems.append(f"{SUITE_FILE}: no [[case]] tables (a suite needs at least one case)")
            raw_cases = []
        elif not isinstance(raw_cases, list):
            self.problems.append(
                f"{SUITE_FILE}: 'case' must be an array of tables ([[case]]), got {type(raw_cases).__name__}"
            )
            raw_cases = []
        for index, raw in enumerate(raw_cases, start=1):
            case = self._case(index, raw)
            if case is None:
                continue
            if case.id in first_index:
                self.problems.append(
                    f"case {case.id!r} (#{index}): duplicate id, already used by case #{first_index[case.id]}"
                )
                continue
            first_index[case.id] = index
            cases.append(case)
        if self.problems:
            raise SuiteError(name, self.problems)
        return Suite(
            name=name,
            path=self.folder,
            description=str(data.get("description", "")),
            version=int(data.get("version", 1)),
            cases=tuple(cases),
            fingerprint=self._fingerprint(toml_bytes),
        )

    # -- suite.toml and its header --

    def _read_toml(self) -> tuple[bytes, dict[str, Any]]:
        path = self.folder / SUITE_FILE
        fail = lambda msg: SuiteError(self.folder.name, [f"{SUITE_FILE}: {msg}"])  # noqa: E731
        try:
            if path.stat().st_size > MAX_SUITE_FILE_BYTES:
                raise fail(f"is over {MAX_SUITE_FILE_BYTES // 1000} kB; a suite file holds cases, not data")
            raw = path.read_bytes()
        except OSError as exc:
            raise fail(f"cannot be read ({exc.strerror})") from None
        try:
            return raw, tomllib.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise fail("is not UTF-8 text") from None
        except tomllib.TOMLDecodeError as exc:
            raise fail(f"is not valid TOML: {exc}") from None

    def _header(self, data: dict[str, Any]) -> str:
        for key in data:
            if key not in _TOP_KEYS:
                self.problems.append(f"{SUITE_FILE}: unknown top-level key {key!r}{_suggest(key, _TOP_KEYS)}")
        name = data.get("name", self.folder.name)
        if not isinstance(name, str) or not _SLUG.fullmatch(name):
            self.problems.append(f"{SUITE_FILE}: name {name!r} is not a safe slug (lowercase a-z, 0-9, '-', '_')")
            name = self.folder.name
        elif name != self.folder.name:
            self.problems.append(
                f"{SUITE_FILE}: name {name!r} differs from the folder name {self.folder.name!r}; "
                "rename one so the suite is found by its name"
            )
        if not isinstance(data.get("description", ""), str):
            self.problems.append(f"{SUITE_FILE}: description must be a string")
        version = data.get("version", 1)
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            self.problems.append(f"{SUITE_FILE}: version must be a positive integer, got {version!r}")
        return name

    # -- one case --

    def _case(self, index: int, raw: Any) -> EditCase | None:
        if not isinstance(raw, dict):
            self.problems.append(f"case #{index}: must be a table ([[case]]), got {type(raw).__name__}")
            return None
        problems_before = len(self.problems)
        case_id = raw.get("id")
        if isinstance(case_id, str) and _SLUG.fullmatch(case_id):
            where = f"case {case_id!r}"
        else:
            where = f"case #{index}"
            if "id" in raw:
                self.problems.append(
                    f"{where}: id {case_id!r} is not a safe slug (1-64 characters: lowercase a-z, 0-9, '-', '_', "
                    "starting with a letter or digit)"
                )
        add = lambda msg: self.problems.append(f"{where}: {msg}")  # noqa: E731

        session = "turns" in raw
        for key in raw:
            if key not in _CASE_KEYS:
                add(f"unknown key {key!r}{_suggest(key, _CASE_KEYS)}")
        for key in _REQUIRED_CASE_KEYS:
            if key not in raw and not (session and key == "operation"):  # a session's turns default to general_edit
                add(f"missing required key {key!r}")
        if session:
            for key in ("prompt", "mask"):
                if key in raw:
                    add(
                        f"{key!r} and 'turns' both given: a session puts each turn's {key} in its turn "
                        f"(turns = [{{ prompt = …, mask = … }}, …]); a single edit uses {key!r} without 'turns'"
                    )

        operation = raw.get("operation", "general_edit" if session else None)
        if operation is not None:
            operation = OPERATION_ALIASES.get(operation, operation) if isinstance(operation, str) else operation
            if operation not in OPERATIONS:
                add(
                    f"unknown operation {operation!r}{_suggest(str(operation), OPERATIONS)} "
                    f"(known: {', '.join(OPERATIONS)})"
                )
                operation = None
        category = raw.get("category")
        if category is not None and category not in CATEGORIES:
            add(f"unknown category {category!r}{_suggest(str(category), CATEGORIES)} (known: {', '.join(CATEGORIES)})")

        prompt = raw.get("prompt")
        if session:
            pass  # each turn's prompt is checked with its turn
        elif prompt is None:
            if operation is not None and operation not in PROMPTLESS_OPERATIONS:
                add(f"prompt is required for operation {operation!r}")
        else:
            self._prompt(prompt, "prompt", add)

        language = raw.get("language", "en")
        if language == "cn":
            add("language 'cn' is not an ISO 639 code: use 'zh' for Chinese (GEdit-Bench writes 'cn')")
        elif not isinstance(language, str) or not _LANGUAGE.fullmatch(language):
            add(f"language {language!r} is not a language code like 'en', 'zh' or 'pt-BR'")

        images = self._images(raw.get("images"), add)
        mask = self._mask(raw.get("mask"), images, add) if not session else None
        target_size = self._target_size(raw.get("target_size"), add)
        tags = self._tags(raw.get("tags", []), add)
        params = self._params(raw.get("params", {}), add)
        captions = {key: self._caption(key, raw.get(key), add) for key in CAPTION_KEYS}
        turns = self._turns(raw.get("turns"), operation, images, params, add) if session else None
        if turns:  # turn 1 is what the case's own operation / prompt / mask describe
            operation, prompt = turns[0][1], turns[0][0]
            mask = turns[0][2]

        if operation is not None and images is not None:
            n = len(images)
            if operation == "multi_image" and n < 2:
                add(f"operation 'multi_image' needs at least 2 images, got {n}")
            elif operation in SINGLE_IMAGE_OPERATIONS and n > 1:
                add(f"operation {operation!r} takes exactly 1 image, got {n} (use 'multi_image' for several)")
        if operation == "inpaint" and raw.get("mask") is None and not session:
            add("operation 'inpaint' needs a mask (white = region to repaint)")
        if operation == "zoom_out" and target_size is not None and images:
            src = self._decoded(images[0][1])
            if src is not None and not (
                target_size[0] >= src.width and target_size[1] >= src.height and target_size != (src.width, src.height)
            ):
                add(f"zoom_out target_size {list(target_size)} must be larger than the source {src.width}×{src.height}")

        if len(self.problems) > problems_before or case_id is None or operation is None or images is None:
            return None
        if session and not turns:
            return None
        decoded_images = tuple(self._decoded(rel) for _, rel in images)
        decoded_mask = self._decoded(mask[1]) if mask is not None else None
        session_turns = tuple(
            Turn(prompt=p, operation=op, mask=m[0] if m is not None else None, params=tp)
            for p, op, m, tp in (turns or [])
        )
        turn_masks = tuple(self._decoded(m[1]) if m is not None else None for _, _, m, _ in (turns or [])) or None
        return EditCase(
            id=case_id,
            operation=operation,
            category=category if category is not None else operation,
            prompt=prompt,
            language=language,
            images=tuple(path for path, _ in images),
            mask=mask[0] if mask is not None else None,
            target_size=target_size,
            tags=tags,
            params=params if not session_turns else session_turns[0].params,
            turns=session_turns,
            source_caption=captions["source_caption"],
            target_caption=captions["target_caption"],
            _decoded=(decoded_images, decoded_mask),  # type: ignore[arg-type]
            _turn_masks=turn_masks,
        )

    @staticmethod
    def _prompt(prompt: Any, label: str, add) -> None:
        if not isinstance(prompt, str) or not prompt.strip():
            add(f"{label} must be a non-empty string")
        elif len(prompt) > MAX_PROMPT_CHARS:
            add(f"{label} is {len(prompt)} characters, over the {MAX_PROMPT_CHARS} limit")

    def _turns(
        self,
        value: Any,
        default_operation: Any,
        images: list[tuple[Path, str]] | None,
        params: dict[str, Any],
        add,
    ) -> list[tuple[str | None, str, tuple[Path, str] | None, dict[str, Any]]] | None:
        """A session's turns as (prompt, operation, mask, params); every problem of every turn is added."""
        lo, hi = SESSION_TURNS_RANGE
        if not isinstance(value, list):
            add(
                'turns must be a list: turns = ["first edit", "second edit"] or one [[case.turns]] table '
                f"per turn, got {type(value).__name__}"
            )
            return None
        if len(value) < lo:
            add(
                f"a session needs at least {lo} turns, got {len(value)} "
                "(a single edit gives 'prompt' instead of 'turns')"
            )
        elif len(value) > hi:
            add(f"a session has at most {hi} turns, got {len(value)}: split it into several sessions")
        before = len(self.problems)
        out = []
        for k, raw in enumerate(value, start=1):
            label = f"turn {k}"
            turn_add = lambda msg, _label=label: add(f"{_label}: {msg}")  # noqa: E731
            if isinstance(raw, str):
                raw = {"prompt": raw}
            if not isinstance(raw, dict):
                turn_add(f"must be a prompt (string) or a table {{prompt, operation?, mask?, params?}}, got {raw!r}")
                continue
            for key in raw:
                if key not in _TURN_KEYS:
                    turn_add(f"unknown key {key!r}{_suggest(key, _TURN_KEYS)} (a turn has {', '.join(_TURN_KEYS)})")
            op = raw.get("operation", default_operation)
            op = OPERATION_ALIASES.get(op, op) if isinstance(op, str) else op
            if op not in OPERATIONS:
                if "operation" in raw:
                    known = ", ".join(OPERATIONS)
                    turn_add(f"unknown operation {op!r}{_suggest(str(op), OPERATIONS)} (known: {known})")
                op = None
            elif k > 1 and op not in SINGLE_IMAGE_OPERATIONS:
                turn_add(
                    f"operation {op!r} cannot follow another turn: a later turn edits the previous turn's single "
                    f"output image (use one of {', '.join(sorted(SINGLE_IMAGE_OPERATIONS))})"
                )
            prompt = raw.get("prompt")
            if prompt is None:
                if op is not None and op not in PROMPTLESS_OPERATIONS:
                    turn_add(f"no prompt (operation {op!r} needs one)")
            else:
                self._prompt(prompt, "prompt", turn_add)
            mask = self._mask(raw["mask"], images, turn_add) if raw.get("mask") is not None else None
            if "mask" in raw and raw["mask"] is None:
                turn_add("mask must be a relative path (string)")
            if op == "inpaint" and raw.get("mask") is None:
                turn_add("operation 'inpaint' needs a mask (white = region to repaint)")
            own = self._params(raw.get("params", {}), turn_add)
            if op is not None:
                out.append((prompt, op, mask, {**params, **own}))
        if len(self.problems) > before or len(out) != len(value) or not lo <= len(value) <= hi:
            return None
        return out

    def _images(self, value: Any, add) -> list[tuple[Path, str]] | None:
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            add("images must be a list of relative paths (strings)")
            return None
        if not value:
            add("images is empty: a case needs at least one input image")
            return None
        if len(value) > MAX_IMAGES_PER_CASE:
            add(f"images lists {len(value)} files, over the {MAX_IMAGES_PER_CASE} limit")
        out = []
        for i, rel in enumerate(value):
            checked = self._file(rel, f"images[{i}]", add)
            if checked is not None:
                out.append(checked)
        return out if len(out) == len(value) else None

    def _mask(self, value: Any, images: list[tuple[Path, str]] | None, add) -> tuple[Path, str] | None:
        if value is None:
            return None
        if not isinstance(value, str):
            add("mask must be a relative path (string)")
            return None
        checked = self._file(value, "mask", add)
        if checked is None:
            return None
        mask_img = self._decoded(checked[1])
        first = self._decoded(images[0][1]) if images else None
        if (
            mask_img is not None
            and first is not None
            and (mask_img.width, mask_img.height) != (first.width, first.height)
        ):
            add(
                f"mask {value!r} is {mask_img.width}×{mask_img.height} but the first image is "
                f"{first.width}×{first.height}; they must match"
            )
        if mask_img is not None and _has_no_white(mask_img):
            add(f"mask {value!r} has no white pixels, so it marks nothing to edit (white = region to edit)")
        return checked

    def _file(self, rel: str, label: str, add) -> tuple[Path, str] | None:
        """Check that ``rel`` names a regular file inside the suite folder; decode it once."""
        shown = f"{label} {rel!r}"
        if not rel or "\x00" in rel:
            add(f"{shown} is not a usable path")
            return None
        if "\\" in rel:
            add(f"{shown} contains a backslash: use forward slashes")
            return None
        posix = PurePosixPath(rel)
        if posix.is_absolute() or Path(rel).is_absolute() or re.match(r"[A-Za-z]:", rel):
            add(f"{shown} is absolute: paths must be relative to the suite folder")
            return None
        if ".." in posix.parts:
            add(f"{shown} contains '..': paths must stay inside the suite folder")
            return None
        key = posix.as_posix()
        path = self.folder / key
        try:
            if not path.exists():
                add(f"{shown} points to a missing symlink target" if path.is_symlink() else f"{shown} not found")
                return None
            real = path.resolve(strict=True)
        except (OSError, RuntimeError) as exc:  # RuntimeError: symlink loop on older Pythons
            add(f"{shown} cannot be resolved ({exc})")
            return None
        if not real.is_relative_to(self.folder):
            add(f"{shown} is a symlink that leads outside the suite folder")
            return None
        if not real.is_file():
            add(f"{shown} is not a regular file")
            return None
        entry = self._decode(key, real)
        if isinstance(entry[1], str):
            add(f"{label}: {entry[1]}")
            return None
        return path, key

    def _decode(self, key: str, real: Path) -> tuple[str, InputImage | str]:
        if key in self.files:
            return self.files[key]
        try:
            size = real.stat().st_size
            if size == 0:
                raise ImageError(f"{key} is empty (0 bytes)", hint="replace it with a real image")
            if size > _images.MAX_BYTES:
                raise ImageError(f"{key} is {size / 1e6:.1f} MB, over the {_images.MAX_BYTES / 1e6:.0f} MB limit")
            data = real.read_bytes()
            digest = hashlib.sha256(data).hexdigest()
            entry: tuple[str, InputImage | str] = (digest, load_image(data, name=key))
        except ImageError as exc:
            entry = ("", str(exc))
        except OSError as exc:
            entry = ("", f"{key} cannot be read ({exc.strerror})")
        self.files[key] = entry
        return entry

    def _decoded(self, key: str) -> InputImage | None:
        entry = self.files.get(key)
        return entry[1] if entry is not None and isinstance(entry[1], InputImage) else None

    @staticmethod
    def _target_size(value: Any, add) -> tuple[int, int] | None:
        if value is None:
            return None
        lo, hi = TARGET_SIDE_RANGE_PX
        if (
            not isinstance(value, list)
            or len(value) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi for v in value)
        ):
            add(f"target_size {value!r} must be [width, height] with whole numbers of pixels in {lo}–{hi}")
            return None
        return value[0], value[1]

    @staticmethod
    def _tags(value: Any, add) -> tuple[str, ...]:
        if not isinstance(value, list) or not all(isinstance(t, str) and t.strip() for t in value):
            add("tags must be a list of non-empty strings")
            return ()
        return tuple(value)

    @staticmethod
    def _params(value: Any, add) -> dict[str, Any]:
        if not isinstance(value, dict):
            add('params must be a table, e.g. params = { search_prompt = "cat" }')
            return {}
        for key in TEXT_PARAMS:
            if key in value and (not isinstance(value[key], str) or not value[key].strip()):
                add(f"params.{key} must be a non-empty string")
        return dict(value)

    @staticmethod
    def _caption(key: str, value: Any, add) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            add(f"{key} must be a non-empty string (a short description of the image)")
            return None
        if len(value) > MAX_CAPTION_CHARS:
            add(f"{key} is {len(value)} characters, over the {MAX_CAPTION_CHARS} limit")
            return None
        return value.strip()

    def _fingerprint(self, toml_bytes: bytes) -> str:
        """sha256 over suite.toml and (path, content hash) of every referenced file, in path order."""
        h = hashlib.sha256()
        h.update(SUITE_FILE.encode() + b"\0" + toml_bytes + b"\0")
        for key in sorted(self.files):
            h.update(key.encode("utf-8") + b"\0" + self.files[key][0].encode() + b"\n")
        return h.hexdigest()


def _has_no_white(mask: InputImage) -> bool:
    gray = mask.to_pil().convert("L")
    low_high = gray.getextrema()
    assert isinstance(low_high[1], (int, float))  # one band ("L")
    return low_high[1] <= 127
