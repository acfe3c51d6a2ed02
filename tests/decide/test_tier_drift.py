"""evalkit.decide.tier_drift and `evalkit tiers RUN --against SERVED.json`: every tier × operation whose default
would change is listed with why (the constraint the served default now fails, or the quality comparison),
and the command exits 1 when one would, 0 when none would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from evalkit.decide.tier_config import Tier
from evalkit.decide.tier_drift import diff_against, load_served
from evalkit.decide.tiers import choose_defaults, write_tier_defaults
from evalkit.errors import InvalidInputError
from evalkit.store import Workspace
from tests.plugins.histories import Behaviour, write_history

ROOT = Path(__file__).resolve().parents[2]
B = Behaviour(success=1.0)
TIERS = {
    "free": Tier("free", max_cost_usd=0.025, max_latency_p95_ms=5000, min_calls=5),
    "premium": Tier("premium", max_cost_usd=0.2, min_calls=5),
}
QUALITY = "viescore_o:judge"
TIERS_TOML = """schema = "evalkit.tiers/1"
[tiers.free]
max_cost_usd = 0.025
max_latency_p95_ms = 5000
min_calls = 5
[tiers.premium]
max_cost_usd = 0.2
min_calls = 5
"""


@pytest.fixture
def served_and_tonight(tmp_path):
    """Last week: cheap-fast is free's default. Tonight it is slow (fails free's p95 limit), and best-pricey's
    quality dropped far below strong-pricey's, so premium changes too."""
    ws = Workspace(tmp_path / "ws")
    week = {
        "cheap-fast": B.but(price_usd=0.02, latency_ms=1000, sigma=0.1),
        "best-pricey": B.but(price_usd=0.10, quality=9.0),
        "strong-pricey": B.but(price_usd=0.15, quality=8.0),
    }
    tonight = {
        **week,
        "cheap-fast": B.but(price_usd=0.02, latency_ms=9000, sigma=0.1),
        "best-pricey": B.but(price_usd=0.10, quality=5.0),
    }
    (old,) = write_history(ws, "nightly", [week], cases=20, seed=1, prefix="week")
    (new,) = write_history(ws, "nightly", [tonight], cases=20, seed=2, prefix="tonight")
    served = write_tier_defaults(choose_defaults(ws, old, TIERS, quality=QUALITY), tmp_path / "served.json")
    return ws, old, new, served


def test_changed_defaults_are_listed_with_why(served_and_tonight):
    ws, old, new, served = served_and_tonight
    assert json.loads(served.read_text())["tiers"]["free"]["operations"]["general_edit"]["default"] == "cheap-fast"
    changes = {(c.tier, c.operation): c for c in diff_against(choose_defaults(ws, new, TIERS, quality=QUALITY), served)}
    assert set(changes) == {("free", "general_edit"), ("premium", "general_edit")}
    free = changes[("free", "general_edit")]
    assert free.served == "cheap-fast" and free.new is None and free.new_status == "no_eligible_model"
    assert "p95 latency" in free.why
    premium = changes[("premium", "general_edit")]
    assert (premium.served, premium.new) == ("best-pricey", "strong-pricey")
    assert "significantly" in premium.why or "highest" in premium.why
    assert diff_against(choose_defaults(ws, old, TIERS, quality=QUALITY), served) == []


def test_a_file_that_is_not_tier_defaults_is_refused(tmp_path):
    with pytest.raises(InvalidInputError, match="no served tier defaults"):
        load_served(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"schema": "something/1", "tiers": {}}))
    with pytest.raises(InvalidInputError, match="not a tier defaults file"):
        load_served(bad)


@pytest.mark.e2e
def test_cli_exits_1_when_a_default_would_change_and_0_when_none_would(served_and_tonight, tmp_path):
    ws, old, new, served = served_and_tonight
    tiers = tmp_path / "tiers.toml"
    tiers.write_text(TIERS_TOML)
    env = {**os.environ, "COLUMNS": "100", "PYTHONPATH": str(ROOT)}

    def cli(run_id: str) -> subprocess.CompletedProcess:
        args = ["tiers", run_id, "-w", str(ws.path), "--tiers", str(tiers), "--quality", QUALITY]
        args += ["--out", str(tmp_path / run_id), "--against", str(served)]
        return subprocess.run([sys.executable, "-m", "evalkit", *args], capture_output=True, text=True, env=env)

    res = cli(new)
    assert res.returncode == 1, res.stderr
    assert "2 default(s) would change" in res.stdout and "free / general_edit" in res.stdout
    assert max(len(line) for line in res.stdout.splitlines() if "│" in line) <= 100
    same = cli(old)
    assert same.returncode == 0, same.stderr + same.stdout
    assert "no default would change" in same.stdout
