"""The ``ratings`` table: pairwise votes and single-output ratings, by humans or the judge."""

from __future__ import annotations

import pandas as pd

from evalkit.errors import InvalidInputError
from evalkit.store._calls import CallsMixin
from evalkit.store._db import utcnow
from evalkit.store._schema import RATING_SCALES


class RatingsMixin(CallsMixin):
    """Add a rating (checked against the run's calls) and read them back."""

    def add_rating(
        self,
        *,
        run_id: str,
        case_id: str,
        rater: str,
        source: str = "human",
        kind: str = "pair",
        call_left: str | None = None,
        call_right: str | None = None,
        choice: str | None = None,
        call_id: str | None = None,
        instruction: float | None = None,
        quality: float | None = None,
        preservation: float | None = None,
        detail: str | None = None,
        scale: str | None = None,
    ) -> int:
        if kind == "pair":
            if choice not in ("left", "right", "tie", "both_bad"):
                raise InvalidInputError(f"pair choice must be left, right, tie or both_bad, got {choice!r}")
            if not call_left or not call_right or call_left == call_right:
                raise InvalidInputError("a pair rating needs two different calls")
        elif kind == "single":
            if not call_id:
                raise InvalidInputError("a single rating needs call_id")
            scale = scale or "1-5"
            if scale not in RATING_SCALES:
                raise InvalidInputError(f"rating scale must be one of {', '.join(RATING_SCALES)}, got {scale!r}")
            if scale == "imagenhub" and preservation is not None:
                raise InvalidInputError("the imagenhub scale has SC (instruction) and PR (quality) only")
            allowed = RATING_SCALES[scale]
            for name, v in (("instruction", instruction), ("quality", quality), ("preservation", preservation)):
                ok = isinstance(v, (int, float)) and not isinstance(v, bool) and v in allowed
                if v is not None and not (ok and (scale != "1-5" or isinstance(v, int))):
                    want = "an integer 1–5" if scale == "1-5" else "0, 0.5 or 1 (ImagenHub's SC/PR)"
                    raise InvalidInputError(f"{name} must be {want} on the {scale} scale, got {v!r}")
        else:
            raise InvalidInputError(f"rating kind must be pair or single, got {kind!r}")
        models = {}
        for key, cid in (("model_left", call_left), ("model_right", call_right)):
            if cid:
                row = self.get_call(cid)
                if row["run_id"] != run_id or row["case_id"] != case_id:
                    raise InvalidInputError(f"call {cid!r} is not in run {run_id!r} case {case_id!r}")
                models[key] = row["model_id"]
        cur = self._execute(
            "INSERT INTO ratings(run_id, case_id, rater, source, kind, call_left, call_right, model_left, model_right, "
            "choice, call_id, instruction, quality, preservation, detail, created_at, scale) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                run_id,
                case_id,
                rater,
                source,
                kind,
                call_left,
                call_right,
                models.get("model_left"),
                models.get("model_right"),
                choice,
                call_id,
                instruction,
                quality,
                preservation,
                detail,
                utcnow(),
                scale if kind == "single" else None,
            ),
        )
        assert cur.lastrowid is not None  # an INSERT into a rowid table
        return cur.lastrowid

    def ratings(self, run_id: str, source: str | None = None) -> pd.DataFrame:
        sql, params = "SELECT * FROM ratings WHERE run_id = ?", [run_id]
        if source:
            sql += " AND source = ?"
            params.append(source)
        rows = self._query(sql + " ORDER BY rating_id", params)
        return pd.DataFrame(
            [dict(r) for r in rows],
            columns=[
                "rating_id",
                "run_id",
                "case_id",
                "rater",
                "source",
                "kind",
                "call_left",
                "call_right",
                "model_left",
                "model_right",
                "choice",
                "call_id",
                "instruction",
                "quality",
                "preservation",
                "detail",
                "created_at",
                "scale",
            ],
        )
