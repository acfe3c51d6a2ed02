"""Benchmark: automatic metrics over synthetic 1024×1024 source/output pairs.

    python bench/bench_metrics.py --n 1000          # the reference run (target ≥ 20 images/s on 2 cores)
    python bench/bench_metrics.py --n 100           # a quick look

Pairs are generated once (in parallel) into a temporary cache directory and reused by later runs
with the same --n/--size. Images are photo-like in their decode cost: smooth colour fields with
sharp-edged shapes plus camera-like noise (σ ≈ 3 levels), so PNGs are a few MB as real outputs are.
The mix mirrors a run: general edits (tint + changed patch, PNG or JPEG outputs), inpaints with a
mask, zoom-outs (source shrunk into a wider canvas), blurred outputs, wrong-aspect outputs,
unchanged outputs (the null edit) and a few truncated files (decodes = 0).

Timed: reading the files and ``auto_metrics`` for every pair (decode included), per-pair exactly
as a caller with paths would do it. OpenCV is limited to one thread per process so "workers" is
the number of cores used. A second mode decodes each case's source once (``prepare_source``) and
scores that case's outputs against it, as a scorer that groups by case can.

``--semantic`` adds rows for the semantic metrics (:mod:`evalkit.scoring.semantic`: CLIP-I, CLIP-T,
CLIP directional, DINO) through the *tiny* ONNX stand-ins the tests use (``tests/plugins/semantic.py``):
decode + preprocessing + ONNX Runtime + cosines, one process, one case's outputs per batch. That times
evalkit's own path around the models, not the models: the real ONNX exports (CLIP ViT-B/32 image tower
4.4 GMACs, open_clip's model profile; DINOv2 ViT-S/14 at 224 px ≈ 5.5 GMACs) are expected to manage
about 3–5 outputs/s on 2 cores — an estimate scaled by MACs and threads from a published ONNX Runtime
CPU figure (a ViT-B/16 CLIP image tower, 17.6 GMACs, ≈ 111 ms per image on a 16-thread desktop CPU:
omni_search's docs/model-performance.md), not a measurement.

"ms/image" is wall time per image (what a user waits); "cpu ms/image" is the CPU time the workers
spent per image, which other processes on the machine do not inflate much (they take cores, not
CPU seconds), so on a busy machine ``workers × 1000 / cpu ms`` is what idle cores would give. The
last column is the 1-minute load average after each row: above the core count, wall numbers drop.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from multiprocessing import Pool
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evalkit.scoring.auto import AUTO_METRICS_VERSION, auto_metrics, prepare_source  # noqa: E402

CACHE_VERSION = "3"
OPERATION_MIX = (  # (operation, output kind), cycled over pairs: 20 slots
    ["general_edit:png"] * 5
    + ["general_edit:jpeg"] * 4
    + ["inpaint:png"] * 3
    + ["zoom_out:png"] * 2
    + ["zoom_out:jpeg"]
    + ["general_edit:blur"]
    + ["general_edit:wrong_aspect"]
    + ["general_edit:unchanged"]
    + ["erase:png"]
    + ["general_edit:truncated"]
)
CASES = 50  # distinct sources; each is the source of n/CASES pairs


# -- synthetic data ----------------------------------------------------------------------------------


def _photo_like(size: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    field = cv2.resize(rng.random((9, 9, 3)).astype(np.float32), (size, size), interpolation=cv2.INTER_CUBIC)
    img = (25 + np.clip(field, 0, 1) * 200).astype(np.uint8)
    for _ in range(40):
        centre = (int(rng.integers(0, size)), int(rng.integers(0, size)))
        colour = tuple(int(v) for v in rng.integers(20, 235, 3))
        if rng.random() < 0.5:
            cv2.circle(img, centre, int(rng.integers(size // 50, size // 7)), colour, -1, lineType=cv2.LINE_AA)
        else:
            half = rng.integers(size // 40, size // 6, 2)
            cv2.rectangle(
                img, (centre[0] - half[0], centre[1] - half[1]), (centre[0] + half[0], centre[1] + half[1]), colour, -1
            )
    noise = rng.normal(0.0, 3.0, img.shape)
    return np.clip(img + noise, 0, 255).astype(np.uint8)


def _encode(arr: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    if fmt == "jpeg":
        Image.fromarray(arr).save(buf, format="JPEG", quality=90)
    else:
        # fast to write; such PNGs decode a little slower than default-compressed ones (≈17 vs 14 ms
        # at 1024², measured), so the timings err on the slow side
        Image.fromarray(arr).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _make_output(src: np.ndarray, kind: str, seed: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(output, mask) for one pair."""
    rng = np.random.default_rng(seed)
    h, w = src.shape[:2]
    op, fmt = kind.split(":")
    if fmt == "unchanged":
        return src, None
    if fmt == "blur":
        return cv2.GaussianBlur(src, (0, 0), float(rng.uniform(1.5, 4.0))), None
    if fmt == "wrong_aspect":
        return cv2.resize(src, (w, int(h * 0.75)), interpolation=cv2.INTER_AREA), None
    if op == "zoom_out":
        scale = float(rng.uniform(0.45, 0.8))
        canvas = _photo_like(w, seed + 7919) // 2 + 50
        small = cv2.resize(src, (int(w * scale), int(h * scale)), interpolation=cv2.INTER_AREA)
        x, y = (int(rng.integers(0, w - small.shape[1])), int(rng.integers(0, h - small.shape[0])))
        canvas[y : y + small.shape[0], x : x + small.shape[1]] = small
        return canvas, None
    out = src.astype(np.float32)
    mask = None
    x0, y0 = (int(v) for v in rng.integers(0, w // 2, 2))
    x1, y1 = x0 + int(rng.integers(w // 8, w // 2)), y0 + int(rng.integers(h // 8, h // 2))
    if op in ("inpaint", "erase"):
        mask = np.zeros((h, w), np.uint8)
        mask[y0:y1, x0:x1] = 255
    else:
        out = out * 0.85 + np.array(rng.integers(0, 255, 3), np.float32) * 0.15  # global tint
    out[y0:y1, x0:x1] = _photo_like(w, seed + 104729)[y0:y1, x0:x1]  # the "edited" region
    return np.clip(out, 0, 255).astype(np.uint8), mask


def _generate_case(args: tuple[Path, int, int, list[int]]) -> list[dict]:
    root, case, size, pair_ids = args
    src = _photo_like(size, seed=case)
    src_path = root / f"case{case:03d}_src.png"
    src_path.write_bytes(_encode(src, "png"))
    rows = []
    for i in pair_ids:
        kind = OPERATION_MIX[i % len(OPERATION_MIX)]
        op, fmt = kind.split(":")
        out, mask = _make_output(src, kind, seed=10_000 + i)
        ext = "jpg" if fmt == "jpeg" else "png"
        out_path = root / f"pair{i:05d}_out.{ext}"
        data = _encode(out, "jpeg" if fmt == "jpeg" else "png")
        if fmt == "truncated":
            data = data[: len(data) // 3]
        out_path.write_bytes(data)
        mask_path = None
        if mask is not None:
            mask_path = root / f"pair{i:05d}_mask.png"
            mask_path.write_bytes(_encode(mask, "png"))
        rows.append(
            {"pair": i, "case": case, "operation": op, "kind": kind, "source": str(src_path),
             "output": str(out_path), "mask": str(mask_path) if mask_path else None}
        )  # fmt: skip
    return rows


def cache_dir(n: int, size: int) -> Path:
    return Path(tempfile.gettempdir()) / f"evalkit-bench-metrics-v{CACHE_VERSION}-{size}px-{n}"


def ensure_pairs(n: int, size: int, workers: int) -> list[dict]:
    root = cache_dir(n, size)
    index = root / "pairs.json"
    if index.is_file():
        return json.loads(index.read_text())
    root.mkdir(parents=True, exist_ok=True)
    by_case: dict[int, list[int]] = defaultdict(list)
    for i in range(n):
        by_case[i % min(CASES, n)].append(i)
    t0 = time.perf_counter()
    print(f"generating {n} pairs into {root} (once; later runs reuse them) …", file=sys.stderr)
    jobs = [(root, case, size, ids) for case, ids in sorted(by_case.items())]
    with Pool(workers, initializer=_worker_init) as pool:
        rows = [r for part in pool.map(_generate_case, jobs) for r in part]
    rows.sort(key=lambda r: r["pair"])
    index.write_text(json.dumps(rows))
    mb = sum(Path(p).stat().st_size for p in root.iterdir()) / 1e6
    print(f"generated {n} pairs ({mb:.0f} MB) in {time.perf_counter() - t0:.1f} s → {root}", file=sys.stderr)
    return rows


# -- timed work --------------------------------------------------------------------------------------


def _worker_init() -> None:
    cv2.setNumThreads(1)  # one core per worker: "workers" = cores used


def score_pair(row: dict) -> tuple[float, float]:
    """(decoded 1/0, CPU seconds this process spent) for one pair."""
    cpu0 = time.process_time()
    metrics = auto_metrics(Path(row["source"]), Path(row["output"]), operation=row["operation"],
                           mask=Path(row["mask"]) if row["mask"] else None, requested_size=(1024, 1024))  # fmt: skip
    return metrics[0].value or 0.0, time.process_time() - cpu0


def score_case(rows: list[dict]) -> list[tuple[float, float]]:
    cpu0 = time.process_time()
    src = prepare_source(Path(rows[0]["source"]))
    out = []
    for row in rows:
        metrics = auto_metrics(src, Path(row["output"]), operation=row["operation"],
                               mask=Path(row["mask"]) if row["mask"] else None,
                               requested_size=(1024, 1024))  # fmt: skip
        out.append((metrics[0].value or 0.0, time.process_time() - cpu0))
        cpu0 = time.process_time()
    return out


def run(rows: list[dict], workers: int, grouped: bool) -> tuple[float, int, float]:
    """(wall seconds, outputs that decoded, CPU seconds summed over workers)."""
    units: list = rows
    fn = score_pair
    if grouped:
        cases: dict[int, list[dict]] = defaultdict(list)
        for r in rows:
            cases[r["case"]].append(r)
        units, fn = list(cases.values()), score_case
    if workers == 1:
        _worker_init()
        fn(units[0])  # warm-up (imports, first-call costs) outside the timing
        t0 = time.perf_counter()
        results = [fn(u) for u in units]
        wall = time.perf_counter() - t0
    else:
        with Pool(workers, initializer=_worker_init) as pool:
            pool.map(fn, units[:workers], chunksize=1)  # start and warm every worker
            t0 = time.perf_counter()
            results = pool.map(fn, units, chunksize=1 if grouped else 4)
            wall = time.perf_counter() - t0
    flat = [r for part in results for r in part] if grouped else results
    return wall, int(sum(ok for ok, _ in flat)), float(sum(cpu for _, cpu in flat))


def semantic_rows(rows: list[dict]) -> None:
    """Time the semantic metrics (tiny ONNX graphs) over the same pairs, grouped by case."""
    from evalkit.images import decode_output, to_rgb
    from evalkit.scoring.semantic import SemanticEncoders, SemanticItem, semantic_metrics
    from tests.plugins.semantic import make_semantic_models

    with tempfile.TemporaryDirectory() as tmp:
        encoders = SemanticEncoders.load(make_semantic_models(Path(tmp)), threads=1)
        cases: dict[int, list[dict]] = defaultdict(list)
        for r in rows:
            cases[r["case"]].append(r)
        done = 0
        t0, cpu0 = time.perf_counter(), time.process_time()
        for group in cases.values():
            source = to_rgb(decode_output(Path(group[0]["source"]).read_bytes()))
            items = []
            for r in group:
                try:
                    out = to_rgb(decode_output(Path(r["output"]).read_bytes()))
                except Exception:  # the truncated files: no semantic rows, as in scoring
                    continue
                items.append(SemanticItem(str(r["pair"]), out, r["operation"], "a red square", "a blue square"))
            done += len(semantic_metrics(encoders, source, items))
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    load = os.getloadavg()[0]
    print(f"{len(rows):>7} {1:>7} {'semantic*':>14} {wall:>8.2f} {len(rows) / wall:>9.1f} "
          f"{1000 * wall / len(rows):>9.1f} {1000 * cpu / len(rows):>13.1f} {done:>8} {load:>9.1f}")  # fmt: skip
    print("* semantic: CLIP-I/CLIP-T/CLIP-dir/DINO through tiny ONNX stand-ins (evalkit's path, not the models);")
    print("  the real CLIP ViT-B/32 + DINOv2-small exports: expect ≈ 3-5 outputs/s on 2 cores (estimate, see top)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1000, help="number of source/output pairs (default 1000)")
    ap.add_argument("--size", type=int, default=1024, help="side of the square images in px (default 1024)")
    ap.add_argument("--workers", default="1,2", help="comma-separated worker counts (default 1,2)")
    ap.add_argument("--clear-cache", action="store_true", help="delete the generated pairs afterwards")
    ap.add_argument("--semantic", action="store_true", help="also time the semantic metrics with tiny ONNX graphs")
    args = ap.parse_args()
    worker_counts = [int(w) for w in args.workers.split(",")]
    rows = ensure_pairs(args.n, args.size, max(worker_counts))

    print(f"auto_metrics {AUTO_METRICS_VERSION}: {args.n} pairs of {args.size}×{args.size} px, "
          f"{os.cpu_count()} CPUs, mix: {', '.join(sorted(set(OPERATION_MIX)))}")  # fmt: skip
    header = (f"{'images':>7} {'workers':>7} {'source decode':>14} {'wall s':>8} {'images/s':>9} {'ms/image':>9} "
              f"{'cpu ms/image':>13} {'decoded':>8} {'load avg':>9}")  # fmt: skip
    print(header)
    print("-" * len(header))
    for grouped in (False, True):
        for w in worker_counts:
            wall, decoded, cpu = run(rows, w, grouped)
            mode = "once per case" if grouped else "per pair"
            load = os.getloadavg()[0]  # 1-minute load: other processes on the machine slow every row down
            print(f"{len(rows):>7} {w:>7} {mode:>14} {wall:>8.2f} {len(rows) / wall:>9.1f} "
                  f"{1000 * wall / len(rows):>9.1f} {1000 * cpu / len(rows):>13.1f} {decoded:>8} {load:>9.1f}",
                  flush=True)  # fmt: skip
    if args.semantic:
        semantic_rows(rows)
    if args.clear_cache:
        shutil.rmtree(Path(rows[0]["source"]).parent, ignore_errors=True)


if __name__ == "__main__":
    main()
