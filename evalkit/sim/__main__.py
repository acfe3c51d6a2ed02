"""``python -m evalkit.sim``: run the local WaveSpeed-compatible simulator in the foreground.

For tests and benchmarks that start it as a subprocess: ``--port 0 --port-file PATH`` writes the
bound port to PATH once it listens (and removes the file at exit). SIGTERM/SIGINT stop it. The API key
comes from ``--api-key`` or ``$EVALKIT_SIM_API_KEY`` (default ``sim-key``) and is never printed.
"""

from __future__ import annotations

import argparse
import os

from evalkit.sim.wavespeed import SimConfig, serve


def main(argv: list[str] | None = None) -> None:
    defaults = SimConfig()
    ap = argparse.ArgumentParser(
        prog="python -m evalkit.sim", description="Local WaveSpeed-compatible simulator (SIMULATED outputs)."
    )
    ap.add_argument("--host", default="127.0.0.1", help="loopback address to bind (default 127.0.0.1)")
    ap.add_argument("--port", type=int, default=8765, help="port (0 = a free one; see --port-file)")
    ap.add_argument("--port-file", help="write the bound port to this file once listening")
    ap.add_argument(
        "--api-key",
        default=os.environ.get("EVALKIT_SIM_API_KEY") or defaults.api_key,
        help="the bearer key clients must send (default: $EVALKIT_SIM_API_KEY or the built-in sim key)",
    )
    ap.add_argument(
        "--time-scale", type=float, default=defaults.time_scale, help="multiplies each model's simulated latency"
    )
    ap.add_argument("--fixed-latency-ms", type=float, default=None, help="one latency for every model")
    ap.add_argument(
        "--max-concurrent", type=int, default=defaults.max_concurrent, help="account-level concurrent tasks"
    )
    ap.add_argument(
        "--sync-timeout-s", type=float, default=defaults.sync_timeout_s, help="sync-mode wait before code 5004"
    )
    ap.add_argument(
        "--output-max-side", type=int, default=defaults.output_max_side, help="cap on the long side of outputs"
    )
    ap.add_argument("--seed", type=int, default=defaults.seed, help="seed of probabilistic faults")
    ap.add_argument(
        "--catalog-drift",
        metavar="JSON_FILE",
        help='serve a catalogue that differs from evalkit\'s: {"prices": {...}, "added": [...], "removed": [...], '
        '"failing_quotes": [...]} (see evalkit.sim.wavespeed.catalog; also POST /_sim/catalog)',
    )
    args = ap.parse_args(argv)
    drift = None
    if args.catalog_drift:
        import json
        from pathlib import Path

        drift = json.loads(Path(args.catalog_drift).read_text())
    serve(
        args.host,
        args.port,
        port_file=args.port_file,
        api_key=args.api_key,
        time_scale=args.time_scale,
        fixed_latency_ms=args.fixed_latency_ms,
        max_concurrent=args.max_concurrent,
        sync_timeout_s=args.sync_timeout_s,
        output_max_side=args.output_max_side,
        seed=args.seed,
        catalog_drift=drift,
    )


if __name__ == "__main__":
    main()
