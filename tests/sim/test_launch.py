"""``evalkit sim`` / ``python -m evalkit.sim`` (evalkit.sim.launch): the one foreground entry point of every
simulator takes what the CLI passes, shows where it listens and never prints a key from the environment."""

from __future__ import annotations

import pytest

import evalkit.sim.launch as launch


@pytest.mark.parametrize(
    ("provider", "key_var", "secret"),
    [("stability", "STABILITY_API_KEY", "sk-from-the-environment"), ("huggingface", "HF_TOKEN", "hf_from_the_env")],
)
def test_serve_takes_what_the_cli_passes(provider, key_var, secret, monkeypatch, capsys):
    monkeypatch.setattr(launch, "wait_for_stop_signal", lambda: None)  # instead of blocking until a signal
    monkeypatch.setenv(key_var, secret)
    launch.main(["--provider", provider, "--port", "0", "--time-scale", "0.5", "--fixed-latency-ms", "10"])
    out, err = capsys.readouterr()
    (line,) = [line for line in out.splitlines() if line.startswith("export ") and "poll faster" not in line]
    url = line.split()[1].split("=", 1)[1]
    assert url.startswith("http://127.0.0.1:") and int(url.rsplit(":", 1)[1]) > 0
    assert url in err and "SIMULATED" in err and key_var in line
    assert secret not in out and secret not in err
