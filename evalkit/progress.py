"""Console progress bars for long loops (runs, auto metrics, judge batches): one place decides how a bar
looks and when there is none. Lives at the top because its users sit in several stages (the run engine,
scoring); it imports nothing of evalkit, so it can never close an import cycle."""

from __future__ import annotations

import os
import sys
from typing import Any


def progress_bar(total: int, desc: str, *, unit: str = "call", initial: int = 0, enabled: bool = True) -> Any | None:
    """A ``tqdm.auto`` bar (a widget in notebooks), or None when ``enabled`` is false or ``$TQDM_DISABLE`` is
    set. When stderr is not a terminal (a log file) it refreshes every few seconds rather than per item."""
    if not enabled or os.environ.get("TQDM_DISABLE"):
        return None
    from tqdm.auto import tqdm

    quiet = not getattr(sys.stderr, "isatty", lambda: False)()
    return tqdm(
        total=total,
        initial=initial,
        desc=desc,
        unit=unit,
        dynamic_ncols=True,
        mininterval=5.0 if quiet else 0.2,
    )
