"""Every local simulator at once — WaveSpeed, Stability AI, Hugging Face and an OpenAI-compatible judge —
on loopback, for ``evalkit demo``, notebook tests and benchmarks.

The stack invents a fresh random key per server (never a real one) and hands it out two ways:
``provider_options()`` for runs in this process, and ``env()`` for a separate process (a notebook
kernel, the CLI) which reads keys from its environment exactly as it would for the real APIs.
Everything these servers return is SIMULATED and labelled so.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

from evalkit.catalog import Catalog
from evalkit.credentials import Secret
from evalkit.sim.huggingface import HuggingFaceSim
from evalkit.sim.judge import JudgeSimHandle, start_judge_sim
from evalkit.sim.server import RunningServer, start_in_thread
from evalkit.sim.stability import StabilitySim
from evalkit.sim.wavespeed import SimHandle, start_wavespeed_sim

#: seconds between polls against local servers (they answer in milliseconds)
LOCAL_POLL = {
    "EVALKIT_POLL_INITIAL_S": "0.05",
    "EVALKIT_POLL_MIN_INTERVAL_S": "0.1",
    "EVALKIT_POLL_MAX_INTERVAL_S": "0.25",
    "EVALKIT_STABILITY_POLL_S": "0.1",
}


@dataclass
class LocalStack:
    wavespeed: SimHandle
    stability: StabilitySim
    stability_server: RunningServer = field(repr=False)
    huggingface: HuggingFaceSim = field(repr=False)
    huggingface_server: RunningServer = field(repr=False)
    judge: JudgeSimHandle = field(repr=False)

    def provider_options(self) -> dict[str, dict[str, Any]]:
        """Constructor arguments for each provider, pointing at the local servers."""
        from evalkit.providers.wavespeed import PollSchedule

        return {
            "wavespeed": {
                "base_url": self.wavespeed.base_url,
                "api_key": Secret(self.wavespeed.api_key, "WAVESPEED_API_KEY"),
                "poll": PollSchedule(
                    initial_delay_s=0.05, factor=1.5, quick_polls=3, min_interval_s=0.1, max_interval_s=0.25
                ),
            },
            "stability": {
                "base_url": self.stability_server.base_url,
                "api_key": Secret(self.stability.api_key, "STABILITY_API_KEY"),
                "poll_interval_s": 0.1,
            },
            "huggingface": {
                "endpoint_url": self.huggingface_server.base_url,
                "token": Secret(self.huggingface.token, "HF_TOKEN"),
            },
        }

    def judge_overrides(self) -> dict[str, Any]:
        return {
            "base_url": self.judge.base_url,
            "api_key": Secret(self.judge.api_key, "EVALKIT_JUDGE_API_KEY"),
            "model": self.judge.sim.model,
        }

    def env(self) -> dict[str, str]:
        """Environment variables that point a separate process at these servers (keys included: pass
        this only to processes you start, never into a file)."""
        return {
            "WAVESPEED_BASE_URL": self.wavespeed.base_url,
            "WAVESPEED_API_KEY": self.wavespeed.api_key,
            "STABILITY_BASE_URL": self.stability_server.base_url,
            "STABILITY_API_KEY": self.stability.api_key,
            "HF_INFERENCE_ENDPOINT": self.huggingface_server.base_url,
            "HF_TOKEN": self.huggingface.token,
            "EVALKIT_JUDGE_BASE_URL": self.judge.base_url,
            "EVALKIT_JUDGE_API_KEY": self.judge.api_key,
            "EVALKIT_JUDGE_MODEL": self.judge.sim.model,
            **LOCAL_POLL,
        }

    def stop(self) -> None:
        for stop in (self.wavespeed.stop, self.stability_server.stop, self.huggingface_server.stop, self.judge.stop):
            try:
                stop()
            except Exception:  # keep stopping the others
                pass

    def __enter__(self) -> LocalStack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_local_stack(
    *, catalog: Catalog | None = None, time_scale: float = 0.01, fixed_latency_ms: float | None = None
) -> LocalStack:
    """Start all four servers on free loopback ports. ``time_scale`` shrinks the catalogue's simulated
    latencies (0.01: the slowest model, ~120 s, answers in ~1.2 s)."""
    kw: dict[str, Any] = {"time_scale": time_scale}
    if fixed_latency_ms is not None:
        kw["fixed_latency_ms"] = fixed_latency_ms
    started: list[Any] = []
    try:
        ws = start_wavespeed_sim(catalog, api_key="sim-" + secrets.token_hex(12), max_concurrent=2000, **kw)
        started.append(ws)
        st = StabilitySim(api_key="sk-sim-" + secrets.token_hex(12), **kw)
        st_server = start_in_thread(st.app)
        started.append(st_server)
        hf = HuggingFaceSim(token="hf_sim" + secrets.token_hex(12), **kw)
        hf_server = start_in_thread(hf.app)
        started.append(hf_server)
        judge = start_judge_sim(api_key="sk-sim-judge-" + secrets.token_hex(8))
    except BaseException:
        for s in started:
            s.stop()
        raise
    return LocalStack(ws, st, st_server, hf, hf_server, judge)
