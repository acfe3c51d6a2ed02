"""Benchmark: comparison grids over a 24-case × 20-model run (the size the report must handle).

    python bench/bench_grids.py                       # 24 × 20, 160 px thumbnails
    python bench/bench_grids.py --cases 12 --models 10 --thumb-px 256

Every output is a distinct textured image (gradient + noise, which compresses like a photo or worse),
stored through the Workspace API in a temporary workspace. Timed: the HTML grid (thumbnails made
from cold), the HTML grid again (thumbnails cached), building the matplotlib figure, drawing it and
saving it as PNG (what a notebook's inline backend does). Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402

from evalkit.report.figures import cached_thumbnail, comparison_grid, comparison_grid_html  # noqa: E402
from tests.plugins.synthetic import build_grid_workspace  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=24)
    ap.add_argument("--models", type=int, default=20)
    ap.add_argument("--thumb-px", type=int, default=160)
    ap.add_argument("--image-px", type=int, default=512, help="long side of the stored images")
    args = ap.parse_args()
    rows: list[tuple[str, float, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        size = (args.image_px, args.image_px * 3 // 4)
        ws = build_grid_workspace(Path(tmp) / "ws", args.cases, args.models, size)
        rows.append(("build workspace", time.perf_counter() - t0, f"{args.cases * (args.models + 1)} images"))
        cached_thumbnail.cache_clear()
        t0 = time.perf_counter()
        html = comparison_grid_html(ws, "grid", thumb_px=args.thumb_px)
        rows.append(("HTML grid (cold thumbnails)", time.perf_counter() - t0, f"{len(html.encode()) / 1e6:.2f} MB"))
        t0 = time.perf_counter()
        comparison_grid_html(ws, "grid", thumb_px=args.thumb_px)
        rows.append(("HTML grid (cached thumbnails)", time.perf_counter() - t0, ""))
        t0 = time.perf_counter()
        fig = comparison_grid(ws, "grid", thumb_px=args.thumb_px)
        w, h = fig.get_size_inches() * fig.dpi
        rows.append(("matplotlib figure: build", time.perf_counter() - t0, f"{w:.0f}×{h:.0f} px"))
        t0 = time.perf_counter()
        FigureCanvasAgg(fig).draw()
        rows.append(("matplotlib figure: draw", time.perf_counter() - t0, ""))
        buf = io.BytesIO()
        t0 = time.perf_counter()
        fig.savefig(buf, format="png")
        rows.append(("matplotlib figure: PNG", time.perf_counter() - t0, f"{len(buf.getvalue()) / 1e6:.2f} MB"))
        t0 = time.perf_counter()
        buf = io.BytesIO()
        fig.savefig(buf, format="jpg", pil_kwargs={"quality": 80})
        rows.append(("matplotlib figure: JPEG", time.perf_counter() - t0, f"{len(buf.getvalue()) / 1e6:.2f} MB"))
        ws.close()
    print(f"comparison grid, {args.cases} cases × {args.models} models, {args.thumb_px} px thumbnails")
    print(f"{'step':<32}{'seconds':>9}  size")
    for name, seconds, note in rows:
        print(f"{name:<32}{seconds:>9.2f}  {note}")


if __name__ == "__main__":
    main()
