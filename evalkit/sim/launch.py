"""The one entry point for local servers: ``evalkit sim`` and ``python -m evalkit.sim`` parse the same options
here and serve in the foreground until Ctrl-C / SIGTERM.

Which key a server accepts, per provider: ``--api-key`` (or ``$EVALKIT_SIM_API_KEY``), else the provider's
own variable when it is set (``WAVESPEED_API_KEY``, ``STABILITY_API_KEY``, ``HF_TOKEN``,
``EVALKIT_JUDGE_API_KEY`` — the key then never leaves this machine), else a public sim key. On start
it prints, on stdout, the ``export …_BASE_URL=… …_API_KEY=…`` line a client needs for each server. A
public sim key is not a secret and is printed; a key from the environment or the command line is never
printed (the line says to keep it).

``--provider all`` serves the demo's whole stack (WaveSpeed, Stability AI, Hugging Face, the judge).
``--balance USD`` gives the account a balance (WaveSpeed: USD; Stability: as credits at US$0.01), so
a run can be watched running dry; ``--fault KIND[:field=value,…]`` injects faults (see
:mod:`evalkit.sim.faults`). Outputs are SIMULATED and labelled so.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evalkit.errors import EvalkitError
from evalkit.sim.server import wait_for_stop_signal
from evalkit.sim.stack import LOCAL_POLL

PROVIDERS = ("wavespeed", "stability", "huggingface", "judge")
#: provider → (base URL variable, key variable) a client reads
CLIENT_ENV = {
    "wavespeed": ("WAVESPEED_BASE_URL", "WAVESPEED_API_KEY"),
    "stability": ("STABILITY_BASE_URL", "STABILITY_API_KEY"),
    "huggingface": ("HF_INFERENCE_ENDPOINT", "HF_TOKEN"),
    "judge": ("EVALKIT_JUDGE_BASE_URL", "EVALKIT_JUDGE_API_KEY"),
}
#: the public keys a sim accepts when no key is given (not secrets: they open nothing but a local sim)
PUBLIC_KEYS = {
    "wavespeed": "evalkit-sim-wavespeed",
    "stability": "sk-evalkit-sim",
    "huggingface": "hf_evalkit_sim",
    "judge": "evalkit-sim-judge",
}
SIM_KEY_ENV = "EVALKIT_SIM_API_KEY"
DEFAULT_PORTS = {"wavespeed": 8765, "stability": 8766, "huggingface": 8767, "judge": 8768}


@dataclass
class ServedKey:
    value: str
    source: str  # "option" | "env" | "public"

    @property
    def printable(self) -> bool:
        return self.source == "public"


@dataclass
class Served:
    """One running server: its provider, client-facing base URL, key, and how to stop it."""

    provider: str
    base_url: str
    port: int
    key: ServedKey
    handle: Any = field(repr=False)
    model: str | None = None  # the judge's model name

    def export_line(self) -> str:
        url_var, key_var = CLIENT_ENV[self.provider]
        parts = [f"{url_var}={self.base_url}"]
        if self.key.printable:
            parts.append(f"{key_var}={self.key.value}")
        if self.provider == "judge" and self.model:
            parts.append(f"EVALKIT_JUDGE_MODEL={self.model}")
        line = "export " + " ".join(parts)
        if self.key.source == "env":
            line += f"   # {key_var}: the key already in your environment (not shown)"
        elif self.key.source == "option":
            line += f"   # {key_var}: the key given with --api-key / ${SIM_KEY_ENV} (not shown)"
        return line


def resolve_key(provider: str, api_key: str | None = None, env: dict[str, str] | None = None) -> ServedKey:
    """The key ``provider``'s sim accepts: --api-key, else the provider's own variable, else a public key."""
    env = dict(os.environ) if env is None else env
    if api_key:
        return ServedKey(api_key, "option")
    if env.get(SIM_KEY_ENV, "").strip():
        return ServedKey(env[SIM_KEY_ENV].strip(), "option")
    own = env.get(CLIENT_ENV[provider][1], "").strip()
    if own:
        return ServedKey(own, "env")
    return ServedKey(PUBLIC_KEYS[provider], "public")


def parse_fault(spec: str) -> dict[str, Any]:
    """``KIND[:field=value,…]`` → the dict :meth:`FaultBook.add_dict` takes (numbers parsed)."""
    kind, _, rest = spec.partition(":")
    out: dict[str, Any] = {"kind": kind.strip()}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"bad fault field {item!r}: write field=value")
        v: Any = value.strip()
        for cast in (int, float):
            try:
                v = cast(v)
                break
            except ValueError:
                continue
        out[key.strip()] = v
    return out


def build_parser(prog: str = "python -m evalkit.sim") -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog=prog,
        description="Serve local provider-compatible servers (SIMULATED outputs) and print the export lines "
        "a client needs.",
    )
    ap.add_argument("--provider", default="wavespeed", choices=[*PROVIDERS, "all"], help="which server(s) to run")
    ap.add_argument("--host", default="127.0.0.1", help="loopback address to bind (default 127.0.0.1)")
    ap.add_argument(
        "--port",
        type=int,
        default=None,
        help="port (0 = a free one; default 8765 wavespeed, 8766 stability, 8767 huggingface, 8768 judge; "
        "with --provider all: this port and the next three)",
    )
    ap.add_argument("--port-file", help="write the bound port to this file once listening (all: NAME PORT lines)")
    ap.add_argument(
        "--api-key",
        default=None,
        help=f"the key clients must send (default: ${SIM_KEY_ENV}, else the provider's own key variable, "
        "else a public sim key)",
    )
    ap.add_argument("--time-scale", type=float, default=1.0, help="multiplies each model's simulated latency")
    ap.add_argument("--fixed-latency-ms", type=float, default=None, help="one latency for every model")
    ap.add_argument("--max-concurrent", type=int, default=100, help="WaveSpeed account-level concurrent tasks")
    ap.add_argument("--sync-timeout-s", type=float, default=90.0, help="WaveSpeed sync-mode wait before code 5004")
    ap.add_argument("--output-max-side", type=int, default=1024, help="WaveSpeed cap on the long side of outputs")
    ap.add_argument("--seed", type=int, default=0, help="seed of probabilistic faults (and of --judge-noise)")
    ap.add_argument(
        "--judge-noise",
        type=float,
        default=0.0,
        metavar="SD",
        help="judge: add round(N(0, SD)) to each default score, seeded per request (repeated passes differ)",
    )
    ap.add_argument(
        "--balance",
        type=float,
        default=None,
        metavar="USD",
        help="the account's balance (default unlimited); WaveSpeed refuses with 403 and Stability with 402 "
        "once it is spent",
    )
    ap.add_argument(
        "--catalog-drift",
        type=_read_drift,
        default=None,
        metavar="JSON_FILE",
        help='WaveSpeed: serve a model list and prices that differ from the catalogue — {"prices": {id: usd}, '
        '"added": [entry], "removed": [id], "failing_quotes": [id]} (also POST /_sim/catalog); to try '
        "`evalkit catalog sync` and `evalkit run --quote-prices` offline",
    )
    ap.add_argument(
        "--fault",
        action="append",
        type=parse_fault,
        default=[],
        metavar="KIND[:FIELD=VALUE,…]",
        help="inject a fault, e.g. rate_limit:rate=0.1 or task_failed:count=2,code=1403 (repeatable)",
    )
    return ap


def _read_drift(path: str) -> dict[str, Any]:
    import json

    from evalkit.sim.wavespeed.catalog import CatalogDrift

    try:
        drift = json.loads(Path(path).read_text())
        CatalogDrift.from_dict(drift)  # refuse a bad file before anything starts
    except (OSError, ValueError) as exc:
        raise argparse.ArgumentTypeError(f"cannot use {path} as a catalogue drift: {exc}") from None
    except EvalkitError as exc:
        raise argparse.ArgumentTypeError(f"{path}: {exc.message}") from None
    return drift


def start(provider: str, args: argparse.Namespace, port: int, env: dict[str, str] | None = None) -> Served:
    """Start one provider's server in a background thread."""
    key = resolve_key(provider, args.api_key, env)
    latency: dict[str, Any] = {"time_scale": args.time_scale, "fixed_latency_ms": args.fixed_latency_ms}
    sim: Any
    if provider == "wavespeed":
        from evalkit.sim.wavespeed import start_wavespeed_sim

        ws = start_wavespeed_sim(
            host=args.host,
            port=port,
            api_key=key.value,
            max_concurrent=args.max_concurrent,
            sync_timeout_s=args.sync_timeout_s,
            output_max_side=args.output_max_side,
            seed=args.seed,
            balance_usd=args.balance,
            catalog_drift=args.catalog_drift,
            **latency,
        )
        sim, served = ws.sim, Served(provider, ws.base_url, ws.server.port, key, ws)
    elif provider == "stability":
        from evalkit.sim.server import start_in_thread
        from evalkit.sim.stability import USD_PER_CREDIT, StabilitySim

        credits = None if args.balance is None else args.balance / USD_PER_CREDIT
        sim = StabilitySim(key.value, balance_credits=credits, **latency)
        server = start_in_thread(sim.app, args.host, port)
        served = Served(provider, server.base_url, server.port, key, server)
    elif provider == "huggingface":
        from evalkit.sim.huggingface import HuggingFaceSim
        from evalkit.sim.server import start_in_thread

        sim = HuggingFaceSim(key.value, **latency)
        server = start_in_thread(sim.app, args.host, port)
        served = Served(provider, server.base_url, server.port, key, server)
    else:
        from evalkit.sim.judge import start_judge_sim

        judge = start_judge_sim(
            host=args.host,
            port=port,
            api_key=key.value,
            latency_ms=args.fixed_latency_ms or 0.0,
            noise_sd=args.judge_noise,
            noise_seed=args.seed,
        )
        sim = None
        served = Served(provider, judge.base_url, judge.server.port, key, judge, model=judge.sim.model)
    for fault in args.fault:
        if sim is None or not hasattr(sim, "faults"):
            continue
        try:
            sim.faults.add_dict(fault)
        except ValueError:
            continue  # a kind another provider's sim knows (with --provider all)
    return served


def main(argv: Sequence[str] | None = None, prog: str = "python -m evalkit.sim") -> None:
    args = build_parser(prog).parse_args(argv)
    providers = list(PROVIDERS) if args.provider == "all" else [args.provider]
    if args.provider != "all":
        _check_faults(args, args.provider)
    started: list[Served] = []
    written: Path | None = None
    try:
        for i, name in enumerate(providers):
            port = DEFAULT_PORTS[name] if args.port is None else (args.port + i if args.port else 0)
            started.append(start(name, args, port))
        if args.port_file:
            written = Path(args.port_file)
            tmp = written.with_name(written.name + ".tmp")
            text = f"{started[0].port}\n" if len(started) == 1 else "".join(f"{s.provider} {s.port}\n" for s in started)
            tmp.write_text(text)
            os.replace(tmp, written)
        names = ", ".join(f"{s.provider} on {s.base_url}" for s in started)
        # the banner on stderr, the export lines alone on stdout (a script can read them)
        print(f"# evalkit sim — SIMULATED outputs, not model results: {names}. Ctrl-C stops.", file=sys.stderr)
        print("# point a client at it (evalkit, the official SDKs, curl) with:", file=sys.stderr, flush=True)
        for s in started:
            print(s.export_line(), flush=True)
        print(
            "export " + " ".join(f"{k}={v}" for k, v in LOCAL_POLL.items()) + "   # optional: poll faster", flush=True
        )
        if args.balance is not None:
            print(f'# the account holds ${args.balance:,.2f} (POST /_sim/balance {{"top_up_usd": 5}})', file=sys.stderr)
        wait_for_stop_signal()
    finally:
        for s in started:
            try:
                s.handle.stop()
            except Exception:  # noqa: BLE001 - keep stopping the others
                pass
        if written is not None:
            written.unlink(missing_ok=True)


def _check_faults(args: argparse.Namespace, provider: str) -> None:
    """An unknown fault kind for a single provider is a usage error (with ``all`` each sim takes its own)."""
    from evalkit.sim.faults import HUGGINGFACE_FAULTS, STABILITY_FAULTS, WAVESPEED_FAULTS

    kinds = {"wavespeed": WAVESPEED_FAULTS, "stability": STABILITY_FAULTS, "huggingface": HUGGINGFACE_FAULTS}.get(
        provider, {}
    )
    for fault in args.fault:
        if fault["kind"] not in kinds:
            sys.exit(f"error: the {provider} sim has no fault {fault['kind']!r}; known: {', '.join(kinds) or 'none'}")
