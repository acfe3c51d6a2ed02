"""Live JupyterLab widgets (ipywidgets 8): an output explorer and a blind pairwise rater.

For live exploration only: exported HTML reports cannot show widgets offline (their JavaScript comes
from a CDN), so reports use :mod:`evalkit.report.figures`. Everything visual is computed in Python — thumbnails,
the before/after composite — so the widgets work in any front end, and tests can drive them without
a browser (``dropdown.value = …``, ``button.click()``) and read what is shown (``Image.value``).

Images are sent as display-sized JPEG thumbnails; full-size images are sent only when asked for
("enlarge"), since the kernel keeps every widget's bytes while it lives.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ipywidgets as widgets
import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from evalkit.decide.quality import DEFAULT_QUALITY, QualityLike
from evalkit.decide.tables import SIMULATED_NOTE, comparison_cells
from evalkit.errors import InvalidInputError
from evalkit.images import decode_output, encode, to_rgb
from evalkit.report.figures import cached_thumbnail
from evalkit.scoring.arena import schedule_pairs
from evalkit.store import CallStatus, Workspace

ALL = "(all)"
COMPARE_PX = 512
_FORMATS = {"png": "png", "jpg": "jpeg", "jpeg": "jpeg", "webp": "webp", "gif": "gif"}


def _banner(simulated: bool) -> widgets.HTML:
    text = (
        f'<div style="background:#b00000;color:#fff;padding:4px 8px;font-weight:600">{SIMULATED_NOTE}</div>'
        if simulated
        else ""
    )
    return widgets.HTML(text)


def _source_path(ws: Workspace, cases: pd.DataFrame, case_id: str) -> str | None:
    shas = cases.loc[cases["case_id"] == case_id, "input_sha256"].iloc[0]
    p = ws.find_blob(shas[0]) if shas else None
    return str(p) if p else None


def _source_thumbs(ws: Workspace, cases: pd.DataFrame, case_id: str, px: int) -> list[bytes]:
    """A thumbnail of EVERY input image of a case, in order (multi-image cases have several)."""
    rows = cases.loc[cases["case_id"] == case_id, "input_sha256"]
    shas = rows.iloc[0] if len(rows) else []
    out = []
    for sha in shas or []:
        path = ws.find_blob(sha)
        out.append(cached_thumbnail(str(path), px) if path else b"")
    return out


def _show_sources(first: widgets.Image, more: widgets.Box, thumbs: list[bytes], px: int) -> None:
    """The first input in ``first``, every further input as its own image in ``more``."""
    first.value = thumbs[0] if thumbs else b""
    more.children = tuple(
        widgets.Image(value=t, format="jpeg", layout=widgets.Layout(width=f"{px}px")) for t in thumbs[1:]
    )


def before_after(source: Image.Image, output: Image.Image, split_pct: int, max_side: int = COMPARE_PX) -> bytes:
    """JPEG of the output with the source pasted over its left ``split_pct`` % (the source is scaled to
    the output's size), and a divider line: drag the split to wipe between before and after."""
    out = to_rgb(output)
    out.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    src = to_rgb(source).resize(out.size, Image.Resampling.LANCZOS)
    x = round(out.width * max(0, min(100, split_pct)) / 100)
    canvas = out.copy()
    canvas.paste(src.crop((0, 0, x, out.height)), (0, 0))
    if 0 < x < out.width:
        ImageDraw.Draw(canvas).line([(x, 0), (x, out.height)], fill=(255, 255, 255), width=2)
    return encode(canvas, "JPEG", quality=85)


class Explorer:
    """Pick an operation / category / case and see every model's output side by side.

    Under each output: price, latency and every score of that call; failed and not-applicable cells
    say why. A before/after wipe (slider) compares the source with one model's output, and each
    "enlarge" button shows the full-size image below. ``.widget`` is the root to display.
    """

    def __init__(
        self,
        ws: Workspace,
        run_id: str,
        *,
        quality: QualityLike = DEFAULT_QUALITY,
        models: Sequence[str] | None = None,
        thumb_px: int = 192,
    ):
        self.ws, self.run_id, self.thumb_px = ws, run_id, thumb_px
        self.cells = comparison_cells(ws, run_id, models=models, quality=quality)
        self.models: list[str] = self.cells.attrs["models"]
        self.case_frame = ws.cases(run_id)
        if self.case_frame.empty:
            raise InvalidInputError(f"run {run_id!r} has no cases to explore")
        scores = ws.scores(run_id)
        scored = scores[scores["status"] == "scored"]
        self.score_text = {
            cid: " · ".join(f"{m} {v:.3g}" for m, v in zip(g["metric"], g["value"], strict=True))
            for cid, g in scored.groupby("call_id")
        }
        cf = self.case_frame.assign(category=self.case_frame["category"].fillna(""))
        self.operation = widgets.Dropdown(
            description="operation", options=[ALL, *sorted(cf["operation"].unique())], value=ALL
        )
        self.category = widgets.Dropdown(
            description="category", options=[ALL, *sorted(c for c in cf["category"].unique() if c)], value=ALL
        )
        self.case = widgets.Dropdown(description="case", layout=widgets.Layout(width="420px"))
        self.prompt = widgets.HTML()
        self.source_image = widgets.Image(format="jpeg", layout=widgets.Layout(width=f"{thumb_px}px"))
        self.more_sources = widgets.VBox()  # the 2nd, 3rd… input of a multi-image case
        self.source_enlarge = widgets.Button(description="enlarge", tooltip="show the source full size")
        self.source_enlarge.on_click(lambda _b: self.enlarge(None))
        self.images: dict[str, widgets.Image] = {}
        self.captions: dict[str, widgets.HTML] = {}
        self.enlarge_buttons: dict[str, widgets.Button] = {}
        tiles = [
            widgets.VBox(
                [widgets.HTML("<b>source</b>"), self.source_image, self.more_sources, self.prompt, self.source_enlarge],
                layout=widgets.Layout(width=f"{thumb_px + 16}px"),
            )
        ]
        for m in self.models:
            self.images[m] = widgets.Image(format="jpeg", layout=widgets.Layout(width=f"{thumb_px}px"))
            self.captions[m] = widgets.HTML()
            button = widgets.Button(description="enlarge", tooltip=f"show {m}'s output full size")
            button.on_click(lambda _b, m=m: self.enlarge(m))
            self.enlarge_buttons[m] = button
            tiles.append(
                widgets.VBox(
                    [widgets.HTML(f"<b>{m}</b>"), self.images[m], self.captions[m], button],
                    layout=widgets.Layout(width=f"{thumb_px + 16}px"),
                )
            )
        self.grid = widgets.GridBox(
            tiles, layout=widgets.Layout(grid_template_columns=f"repeat(auto-fill, {thumb_px + 20}px)", grid_gap="6px")
        )
        self.compare_model = widgets.Dropdown(description="before/after")
        self.split = widgets.IntSlider(value=50, min=0, max=100, step=1, description="split %", continuous_update=False)
        self.compare_image = widgets.Image(format="jpeg")
        self.enlarged_title = widgets.HTML()
        self.enlarged = widgets.Image(format="png")
        self._compare_cache: dict[str, tuple[Image.Image, Image.Image]] = {}
        self.operation.observe(self._filters_changed, "value")
        self.category.observe(self._filters_changed, "value")
        self.case.observe(lambda _c: self._show_case(), "value")
        self.compare_model.observe(lambda _c: self._show_compare(), "value")
        self.split.observe(lambda _c: self._show_compare(), "value")
        # sessions (iterative editing): each model's turns in order, original → turn 1 → … → turn k
        from evalkit.report.sessions import session_ids

        sessions = session_ids(ws, run_id)
        self.session = widgets.Dropdown(
            description="session", options=sessions, value=sessions[0] if sessions else None
        )
        self.session_view = widgets.HTML()
        self.session.observe(lambda _c: self._show_session(), "value")
        session_box = (
            [widgets.HTML("<b>sessions</b>: each model's turns in order, each editing its previous output")]
            + [self.session, self.session_view]
            if sessions
            else []
        )
        self.widget = widgets.VBox(
            [
                _banner(self.cells.attrs["simulated"]),
                widgets.HBox([self.operation, self.category, self.case]),
                self.grid,
                widgets.HTML("<b>before | after</b> (left of the line: source; right: output)"),
                widgets.HBox([self.compare_model, self.split]),
                self.compare_image,
                self.enlarged_title,
                self.enlarged,
                *session_box,
            ]
        )
        self._filters_changed()
        self._show_session()

    def _show_session(self) -> None:
        from evalkit.report.sessions import session_grid_html

        sid = self.session.value
        self.session_view.value = (
            session_grid_html(self.ws, self.run_id, sid, thumb_px=min(self.thumb_px, 160)) if sid else ""
        )

    # ---- state -> view ------------------------------------------------------------------------
    def _filters_changed(self, _change: Any = None) -> None:
        cf = self.case_frame
        if self.operation.value != ALL:
            cf = cf[cf["operation"] == self.operation.value]
        if self.category.value != ALL:
            cf = cf[cf["category"].fillna("") == self.category.value]
        options = [(f"{c} — {str(p or '')[:60]}", c) for c, p in zip(cf["case_id"], cf["prompt"], strict=True)]
        current = self.case.value
        self.case.options = options
        ids = [v for _, v in options]
        if current in ids:
            self.case.value = current
        elif ids:
            self.case.value = ids[0]
        self._show_case()

    @property
    def source_images(self) -> list[bytes]:
        """The thumbnails shown for the case's inputs (every one of a multi-image case)."""
        return [self.source_image.value, *(w.value for w in self.more_sources.children)]

    def cell(self, model_id: str) -> pd.Series:
        rows = self.cells[(self.cells["case_id"] == self.case.value) & (self.cells["model_id"] == model_id)]
        return rows.iloc[0]

    def _show_case(self) -> None:
        case_id = self.case.value
        if case_id is None:  # the filters match no case
            _show_sources(self.source_image, self.more_sources, [], self.thumb_px)
            self.prompt.value = "<small>no case matches these filters</small>"
            for m in self.models:
                self.images[m].value = b""
                self.captions[m].value = ""
                self.enlarge_buttons[m].disabled = True
            self.compare_model.options = []
            self._show_compare()
            return
        _show_sources(
            self.source_image, self.more_sources, _source_thumbs(self.ws, self.case_frame, case_id, self.thumb_px),
            self.thumb_px,
        )  # fmt: skip
        row = self.case_frame[self.case_frame["case_id"] == case_id].iloc[0]
        self.prompt.value = (
            f"<small>{_esc(case_id)} · {_esc(row['operation'])}"
            f"{' · ' + _esc(row['category']) if row['category'] else ''}<br>{_esc(row['prompt'] or '')}</small>"
        )
        ready = []
        for m in self.models:
            c = self.cell(m)
            lines = [_esc(c["caption"])]
            if c["state"] == "ok" and isinstance(c["output_path"], str) and Path(c["output_path"]).is_file():
                self.images[m].value = cached_thumbnail(c["output_path"], self.thumb_px)
                self.images[m].layout.visibility = "visible"
                if c["call_id"] in self.score_text:
                    lines.append(_esc(self.score_text[c["call_id"]]))
                ready.append(m)
            else:
                self.images[m].value = b""
                self.images[m].layout.visibility = "hidden"
                colour = "#a00000" if c["state"] == "failed" else "#555"
                detail = c["error_message"] if c["state"] == "failed" else ""
                lines = [f'<span style="color:{colour};font-weight:600">{_esc(c["caption"])}</span>']
                if isinstance(detail, str) and detail:
                    lines.append(f'<span style="color:{colour}">{_esc(detail[:160])}</span>')
            self.enlarge_buttons[m].disabled = m not in ready
            self.captions[m].value = "<small>" + "<br>".join(lines) + "</small>"
        previous = self.compare_model.value
        self.compare_model.options = ready
        self.compare_model.value = previous if previous in ready else (ready[0] if ready else None)
        self._compare_cache.clear()
        self._show_compare()

    def _show_compare(self) -> None:
        m = self.compare_model.value
        if m is None or self.case.value is None:
            self.compare_image.value = b""
            return
        if m not in self._compare_cache:
            inputs, _mask = self.ws.case_images(self.run_id, self.case.value)
            out = decode_output(self.ws.output_image(self.cell(m)["call_id"]))
            self._compare_cache[m] = (decode_output(inputs[0]), out)
        src, out = self._compare_cache[m]
        self.compare_image.value = before_after(src, out, self.split.value)

    def enlarge(self, model_id: str | None) -> None:
        """Show the full-size source (``None``) or a model's full-size output below the grid."""
        case_id = self.case.value
        if model_id is None:
            inputs, _ = self.ws.case_images(self.run_id, case_id)
            data, fmt, title = inputs[0], _format_of(inputs[0]), f"source of {case_id}"
        else:
            c = self.cell(model_id)
            if c["state"] != "ok":
                return
            data = self.ws.output_image(c["call_id"])
            fmt, title = _format_of(data), f"{model_id} on {case_id}: {c['caption']}"
        self.enlarged.format = fmt
        self.enlarged.value = data
        self.enlarged_title.value = f"<b>{_esc(title)}</b> (full size)"


def _format_of(data: bytes) -> str:
    try:
        with Image.open(io.BytesIO(data)) as im:
            return _FORMATS.get((im.format or "png").lower(), "png")
    except OSError:
        return "png"


def _esc(text: Any) -> str:
    import html

    return html.escape(str(text))


# -- blind pairwise rating ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ShownPair:
    """What the rater sees: side A (left) and side B (right), with the calls behind them."""

    case_id: str
    call_left: str
    call_right: str
    model_left: str
    model_right: str


CHOICES = {"a": "left", "b": "right", "t": "tie", "x": "both_bad"}


class Rater:
    """Blind A/B rating of two models' outputs for the same case; every vote goes to ``ws.add_rating``.

    The next pair comes from :func:`evalkit.scoring.arena.schedule_pairs` (least-compared pairs and
    cases first, given every pair vote of this run so far), restricted to pairs where both models
    have an output for the case. Sides are shuffled and model names never shown. Buttons: A, B, Tie,
    Both bad. ipywidgets has no global key events (a widget only sees keys while it has focus), so
    the text box is the keyboard path: click into it once, then type ``a`` / ``b`` / ``t`` / ``x``
    — each key records a vote and clears the box. ``target`` (default: 3 votes per model pair, at
    most 300) only drives the progress bar; rating can go on past it.

    ``mode="score"`` gives a :class:`ScoreRater` instead (one output at a time, scored on ImagenHub's
    SC/PR scale or 1–5 scales): ``Rater(ws, run_id, "ana", mode="score", scale="imagenhub")``.
    """

    def __new__(cls, ws: Workspace, run_id: str, rater: str = "anonymous", *, mode: str = "pair", **kw: Any) -> Any:
        if mode == "score":
            return ScoreRater(ws, run_id, rater, **kw)
        if mode != "pair":
            raise InvalidInputError(f"Rater mode must be 'pair' or 'score', got {mode!r}")
        return super().__new__(cls)

    def __init__(
        self,
        ws: Workspace,
        run_id: str,
        rater: str = "anonymous",
        *,
        mode: str = "pair",
        target: int | None = None,
        seed: int = 0,
        thumb_px: int = 384,
        source: str = "human",
    ):
        if not isinstance(rater, str) or not rater.strip():
            raise InvalidInputError("rater must be a non-empty name", hint='e.g. Rater(ws, run_id, rater="ana")')
        self.ws, self.run_id, self.rater, self.seed, self.thumb_px, self.source = (
            ws,
            run_id,
            rater.strip(),
            seed,
            thumb_px,
            source,
        )
        calls = ws.calls(run_id)
        done = calls[(calls["status"] == CallStatus.COMPLETED) & calls["output_sha256"].notna()].sort_values("repeat")
        done = done.drop_duplicates(["case_id", "model_id"])
        self.output_call = {(r.case_id, r.model_id): r.call_id for r in done.itertuples()}
        self.models = list(dict.fromkeys(done["model_id"]))
        per_case = done.groupby("case_id")["model_id"].nunique()
        self.case_frame = ws.cases(run_id)
        # a session is compared on its final results only (each model's last turn; shown with every instruction)
        cf = self.case_frame
        turns = cf[cf["session_id"].notna()] if "session_id" in cf else cf.iloc[0:0]
        last = set(turns.sort_values("turn").groupby("session_id")["case_id"].last())
        skip = set(turns["case_id"]) - last
        self.cases = [c for c in dict.fromkeys(done["case_id"]) if per_case.get(c, 0) >= 2 and c not in skip]
        n_pairs = len(self.models) * (len(self.models) - 1) // 2
        self.target = int(target) if target is not None else min(300, 3 * n_pairs)
        self.current: ShownPair | None = None

        self.progress = widgets.IntProgress(min=0, max=max(1, self.target), description="rated")
        self.progress_label = widgets.Label()
        self.instruction = widgets.HTML()
        self.source_image = widgets.Image(format="jpeg", layout=widgets.Layout(width=f"{thumb_px}px"))
        self.more_sources = widgets.VBox()  # the 2nd, 3rd… input of a multi-image case
        self.image_a = widgets.Image(format="jpeg", layout=widgets.Layout(width=f"{thumb_px}px"))
        self.image_b = widgets.Image(format="jpeg", layout=widgets.Layout(width=f"{thumb_px}px"))
        self.button_a = widgets.Button(description="A is better [a]", tooltip="key: a")
        self.button_b = widgets.Button(description="B is better [b]", tooltip="key: b")
        self.button_tie = widgets.Button(description="Tie [t]", tooltip="key: t")
        self.button_both_bad = widgets.Button(description="Both bad [x]", tooltip="key: x")
        for button, choice in (
            (self.button_a, "left"),
            (self.button_b, "right"),
            (self.button_tie, "tie"),
            (self.button_both_bad, "both_bad"),
        ):
            button.on_click(lambda _b, choice=choice: self.vote(choice))
        self.keys = widgets.Text(
            placeholder="click here, then type a / b / t / x", description="keys", continuous_update=True
        )
        self.keys.observe(self._key_typed, "value")
        self.status = widgets.HTML()
        col = widgets.Layout(width=f"{thumb_px + 12}px")
        self.widget = widgets.VBox(
            [
                _banner(bool(calls["simulated"].any()) or bool(ws.get_run(run_id).get("simulated"))),
                widgets.HBox([self.progress, self.progress_label]),
                self.instruction,
                widgets.HBox(
                    [
                        widgets.VBox([widgets.HTML("<b>source</b>"), self.source_image, self.more_sources], layout=col),
                        widgets.VBox([widgets.HTML("<b>A</b>"), self.image_a], layout=col),
                        widgets.VBox([widgets.HTML("<b>B</b>"), self.image_b], layout=col),
                    ]
                ),
                widgets.HBox([self.button_a, self.button_b, self.button_tie, self.button_both_bad]),
                self.keys,
                self.status,
            ]
        )
        self._update_progress()
        self.next_pair()

    # ---- votes --------------------------------------------------------------------------------
    def votes(self) -> pd.DataFrame:
        """Every pair vote of this run from this source, as arena votes (model_a/model_b/winner/case_id)."""
        r = self.ws.ratings(self.run_id, source=self.source)
        r = r[r["kind"] == "pair"]
        return pd.DataFrame(
            {
                "case_id": r["case_id"],
                "model_a": r["model_left"],
                "model_b": r["model_right"],
                "winner": r["choice"].map({"left": "a", "right": "b", "tie": "tie", "both_bad": "both_bad"}),
                "rater": r["rater"],
            }
        )

    def n_rated(self) -> int:
        r = self.ws.ratings(self.run_id, source=self.source)
        return int(((r["kind"] == "pair") & (r["rater"] == self.rater)).sum())

    def next_pair(self) -> ShownPair | None:
        """Schedule and show the next pair (None, with a message, when nothing can be compared)."""
        self.current = None
        if len(self.models) < 2 or not self.cases:
            self._show_nothing("nothing to compare: need at least two models with outputs for the same case")
            return None
        votes = self.votes()
        n_items = len(self.models) * (len(self.models) - 1) // 2 * len(self.cases)
        schedule = schedule_pairs(self.models, self.cases, votes, n=min(n_items, 400), seed=self.seed + len(votes))
        pick = next(
            ((c, a, b) for c, a, b in schedule if (c, a) in self.output_call and (c, b) in self.output_call), None
        )
        if pick is None:
            self._show_nothing("no scheduled pair has outputs from both models")
            return None
        case_id, a, b = pick
        rng = np.random.default_rng([self.seed, len(votes), 7])
        if rng.random() < 0.5:
            a, b = b, a
        self.current = ShownPair(case_id, self.output_call[(case_id, a)], self.output_call[(case_id, b)], a, b)
        prompt = self.case_frame.loc[self.case_frame["case_id"] == case_id, "prompt"]
        text = str(prompt.iloc[0]) if len(prompt) and prompt.iloc[0] else "(no instruction)"
        self.instruction.value = f"<b>Instruction:</b> {_esc(text)}<br><small>Which edit follows it better?</small>"
        session = self._session_prompts(case_id)
        if session:
            steps = "".join(f"<li>{_esc(p)}</li>" for p in session)
            self.instruction.value = (
                f"<b>Instructions, one after the other:</b><ol>{steps}</ol>"
                "<small>Each result is a model's final image after all of them. Which follows them better "
                "and keeps the rest of the source?</small>"
            )
        thumbs = _source_thumbs(self.ws, self.case_frame, case_id, self.thumb_px)
        _show_sources(self.source_image, self.more_sources, thumbs, self.thumb_px)
        self.image_a.value = cached_thumbnail(self._path(self.current.call_left), self.thumb_px)
        self.image_b.value = cached_thumbnail(self._path(self.current.call_right), self.thumb_px)
        self._set_enabled(True)
        return self.current

    def _session_prompts(self, case_id: str) -> list[str]:
        """The instructions of the session whose turn ``case_id`` is, in order (empty for a single edit)."""
        cf = self.case_frame
        if "session_id" not in cf:
            return []
        row = cf[cf["case_id"] == case_id]
        if row.empty or pd.isna(row["session_id"].iloc[0]):
            return []
        turns = cf[cf["session_id"] == row["session_id"].iloc[0]].sort_values("turn")
        return [str(p or op) for p, op in zip(turns["prompt"], turns["operation"], strict=True)]

    def _path(self, call_id: str) -> str:
        row = self.ws.get_call(call_id)
        return str(self.ws.blob_path(row["output_sha256"], row["output_ext"]))

    def vote(self, choice: str) -> int | None:
        """Record ``left`` (A) / ``right`` (B) / ``tie`` / ``both_bad`` for the shown pair, then advance."""
        if choice not in CHOICES.values():
            raise InvalidInputError(f"choice must be one of {', '.join(CHOICES.values())}, got {choice!r}")
        pair = self.current
        if pair is None:
            return None
        rating_id = self.ws.add_rating(
            run_id=self.run_id,
            case_id=pair.case_id,
            rater=self.rater,
            source=self.source,
            kind="pair",
            call_left=pair.call_left,
            call_right=pair.call_right,
            choice=choice,
            detail=json.dumps({"ui": "evalkit.report.widgets.Rater", "sides": "A=left, B=right"}),
        )
        label = {"left": "A", "right": "B", "tie": "tie", "both_bad": "both bad"}[choice]
        self.status.value = f"<small>saved vote {self.n_rated()} ({label})</small>"
        self._update_progress()
        self.next_pair()
        return rating_id

    def _key_typed(self, change: dict) -> None:
        text = change["new"]
        if not text:
            return
        key = text[-1].lower()
        self.keys.value = ""  # fires this observer again with "", which returns above
        if key in CHOICES:
            self.vote(CHOICES[key])

    def _update_progress(self) -> None:
        n = self.n_rated()
        self.progress.value = min(n, self.progress.max)
        done = " — target reached, thank you (you can keep going)" if n >= self.target else ""
        self.progress_label.value = f"{n} / {self.target} rated by {self.rater}{done}"

    def _set_enabled(self, on: bool) -> None:
        for b in (self.button_a, self.button_b, self.button_tie, self.button_both_bad):
            b.disabled = not on
        self.keys.disabled = not on

    def _show_nothing(self, message: str) -> None:
        self.instruction.value = f"<b>{_esc(message)}</b>"
        for img in (self.source_image, self.image_a, self.image_b):
            img.value = b""
        self.more_sources.children = ()
        self._set_enabled(False)

    @property
    def source_images(self) -> list[bytes]:
        """The thumbnails shown for the case's inputs (every one of a multi-image case)."""
        return [self.source_image.value, *(w.value for w in self.more_sources.children)]


# -- scoring one output at a time ------------------------------------------------------------------------

#: the scoring mode's scales: (stored column, label, allowed values). ``imagenhub`` is ImagenHub's human
#: protocol (docs/Guidelines/humaneval.md: SC and PR each 0, 0.5 or 1; overall = sqrt(SC·PR)).
SCORE_SCALES: dict[str, list[tuple[str, str, tuple[float, ...]]]] = {
    "imagenhub": [
        ("instruction", "SC — the edit does what the instruction asks (0 no · 0.5 partly · 1 yes)", (0, 0.5, 1)),
        ("quality", "PR — the result looks natural, without artifacts (0 no · 0.5 partly · 1 yes)", (0, 0.5, 1)),
    ],
    "1-5": [
        ("instruction", "instruction followed (1 not at all … 5 perfectly)", (1, 2, 3, 4, 5)),
        ("preservation", "the rest of the image preserved (1 changed … 5 untouched)", (1, 2, 3, 4, 5)),
        ("quality", "visual quality (1 broken … 5 flawless)", (1, 2, 3, 4, 5)),
    ],
}


@dataclass(frozen=True)
class ShownOutput:
    """What a scoring rater sees: one output (model hidden) and the call behind it."""

    case_id: str
    call_id: str
    model_id: str


class ScoreRater:
    """Blind scoring of single outputs, stored per rater with ``ws.add_rating(kind="single", scale=…)``.

    The next output is one this rater has not scored yet, among those with the fewest scores from
    anyone (seeded order among equals), so a few raters cover the outputs evenly and overlap where they
    meet. The case's instruction and EVERY input image are shown, then the output; the model is never
    named. Pick a value per dimension (toggle buttons), then "Save" (enabled once all are set) or
    "Skip". ``evalkit agreement`` / :func:`evalkit.scoring.agreement.run_agreement` compares these scores
    with the judge's.
    """

    def __init__(
        self,
        ws: Workspace,
        run_id: str,
        rater: str = "anonymous",
        *,
        scale: str = "imagenhub",
        target: int | None = None,
        seed: int = 0,
        thumb_px: int = 384,
        source: str = "human",
    ):
        if not isinstance(rater, str) or not rater.strip():
            raise InvalidInputError(
                "rater must be a non-empty name", hint='e.g. Rater(ws, run_id, "ana", mode="score")'
            )
        if scale not in SCORE_SCALES:
            raise InvalidInputError(f"scale must be one of {', '.join(SCORE_SCALES)}, got {scale!r}")
        self.ws, self.run_id, self.rater, self.scale = ws, run_id, rater.strip(), scale
        self.seed, self.thumb_px, self.source = seed, thumb_px, source
        calls = ws.calls(run_id)
        done = calls[(calls["status"] == "completed") & calls["output_sha256"].notna()].sort_values("repeat")
        done = done.drop_duplicates(["case_id", "model_id"])
        self.outputs = [ShownOutput(r.case_id, r.call_id, r.model_id) for r in done.itertuples()]
        rng = np.random.default_rng(seed)
        self._order = {o.call_id: float(x) for o, x in zip(self.outputs, rng.random(len(self.outputs)), strict=True)}
        self.case_frame = ws.cases(run_id)
        self.target = int(target) if target is not None else len(self.outputs)
        self.current: ShownOutput | None = None

        self.progress = widgets.IntProgress(min=0, max=max(1, self.target), description="scored")
        self.progress_label = widgets.Label()
        self.instruction = widgets.HTML()
        self.source_image = widgets.Image(format="jpeg", layout=widgets.Layout(width=f"{thumb_px}px"))
        self.more_sources = widgets.VBox()
        self.output_image = widgets.Image(format="jpeg", layout=widgets.Layout(width=f"{thumb_px}px"))
        self.dimensions: dict[str, widgets.ToggleButtons] = {}
        rows = []
        for column, label, values in SCORE_SCALES[scale]:
            buttons = widgets.ToggleButtons(options=[(f"{v:g}", v) for v in values], value=None)
            buttons.observe(lambda _c: self._update_save(), "value")
            self.dimensions[column] = buttons
            rows.append(widgets.VBox([widgets.HTML(f"<b>{_esc(label)}</b>"), buttons]))
        self.save_button = widgets.Button(description="Save", button_style="primary", disabled=True)
        self.save_button.on_click(lambda _b: self.save())
        self.skip_button = widgets.Button(description="Skip")
        self.skip_button.on_click(lambda _b: self.skip())
        self.status = widgets.HTML()
        col = widgets.Layout(width=f"{thumb_px + 12}px")
        self.widget = widgets.VBox(
            [
                _banner(bool(calls["simulated"].any()) or bool(ws.get_run(run_id).get("simulated"))),
                widgets.HBox([self.progress, self.progress_label]),
                self.instruction,
                widgets.HBox(
                    [
                        widgets.VBox([widgets.HTML("<b>source</b>"), self.source_image, self.more_sources], layout=col),
                        widgets.VBox([widgets.HTML("<b>edited</b>"), self.output_image], layout=col),
                    ]
                ),
                *rows,
                widgets.HBox([self.save_button, self.skip_button]),
                self.status,
            ]
        )
        self._skipped: set[str] = set()
        self._update_progress()
        self.next_output()

    @property
    def source_images(self) -> list[bytes]:
        return [self.source_image.value, *(w.value for w in self.more_sources.children)]

    def scores(self) -> pd.DataFrame:
        """This run's single ratings from this source (all raters)."""
        r = self.ws.ratings(self.run_id, source=self.source)
        return r[r["kind"] == "single"]

    def n_rated(self) -> int:
        return int((self.scores()["rater"] == self.rater).sum())

    def next_output(self) -> ShownOutput | None:
        """Show the next output to score (None, with a message, when this rater has scored them all)."""
        r = self.scores()
        mine = set(r.loc[r["rater"] == self.rater, "call_id"])
        counts = r["call_id"].value_counts()
        todo = [o for o in self.outputs if o.call_id not in mine and o.call_id not in self._skipped]
        for column in self.dimensions.values():
            column.value = None
        if not todo:
            self.current = None
            self.instruction.value = "<b>nothing left to score: every output has your score</b>"
            for img in (self.source_image, self.output_image):
                img.value = b""
            self.more_sources.children = ()
            self.save_button.disabled = self.skip_button.disabled = True
            return None
        self.current = min(todo, key=lambda o: (int(counts.get(o.call_id, 0)), self._order[o.call_id]))
        case_id = self.current.case_id
        prompt = self.case_frame.loc[self.case_frame["case_id"] == case_id, "prompt"]
        text = str(prompt.iloc[0]) if len(prompt) and prompt.iloc[0] else "(no instruction)"
        self.instruction.value = f"<b>Instruction:</b> {_esc(text)}<br><small>Score the edited image.</small>"
        _show_sources(
            self.source_image, self.more_sources, _source_thumbs(self.ws, self.case_frame, case_id, self.thumb_px),
            self.thumb_px,
        )  # fmt: skip
        row = self.ws.get_call(self.current.call_id)
        path = str(self.ws.blob_path(row["output_sha256"], row["output_ext"]))
        self.output_image.value = cached_thumbnail(path, self.thumb_px)
        self.skip_button.disabled = False
        self._update_save()
        return self.current

    def _update_save(self) -> None:
        self.save_button.disabled = self.current is None or any(b.value is None for b in self.dimensions.values())

    def save(self) -> int | None:
        """Store the chosen values for the shown output, then show the next one."""
        out = self.current
        if out is None:
            return None
        values = {column: b.value for column, b in self.dimensions.items()}
        if any(v is None for v in values.values()):
            missing = [c for c, v in values.items() if v is None]
            raise InvalidInputError(f"choose a value for {', '.join(missing)} before saving")
        rating_id = self.ws.add_rating(
            run_id=self.run_id,
            case_id=out.case_id,
            rater=self.rater,
            source=self.source,
            kind="single",
            call_id=out.call_id,
            scale=self.scale,
            detail=json.dumps({"ui": "evalkit.report.widgets.ScoreRater"}),
            **values,
        )
        self.status.value = f"<small>saved score {self.n_rated()}</small>"
        self._update_progress()
        self.next_output()
        return rating_id

    def skip(self) -> None:
        if self.current is not None:
            self._skipped.add(self.current.call_id)
        self.next_output()

    def _update_progress(self) -> None:
        n = self.n_rated()
        self.progress.value = min(n, self.progress.max)
        self.progress_label.value = f"{n} / {self.target} scored by {self.rater} ({self.scale} scale)"


__all__ = ["Explorer", "Rater", "SCORE_SCALES", "ScoreRater", "ShownOutput", "ShownPair", "before_after"]
