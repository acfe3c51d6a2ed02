"""The provider's own list and prices, end to end against the local WaveSpeed server with catalogue drift.

The server lists its models with request schemas generated from its catalogue, quotes the price it bills
(``POST /api/v3/model/pricing``) and is told to drift from evalkit's catalogue: changed prices, a new edit
model, a removed one, a failing quote. Then:

* ``evalkit catalog sync`` (a subprocess, real HTTP) reports the new model and the changed prices and leaves
  the non-edit models out; ``--write`` writes the override, and a run's recorded cost then equals what the
  server billed, to the cent — where the same run without the override does not;
* ``run(quote_prices=True)`` prices, reserves and records by the quotes (``price_source`` per call); a
  failed quote falls back to the catalogue and says so.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from evalkit.catalog import Catalog
from evalkit.credentials import Secret
from evalkit.engine.runner import arun
from evalkit.providers.wavespeed import PollSchedule
from evalkit.sim.wavespeed import start_wavespeed_sim
from evalkit.sim.wavespeed.catalog import NON_EDIT_MODELS, price_offset
from evalkit.store import Workspace

FAST_POLL = PollSchedule(initial_delay_s=0.01, factor=1.5, quick_polls=3, min_interval_s=0.02, max_interval_s=0.1)
REPO = Path(__file__).resolve().parents[2]

NEW_MODEL = {
    "id": "pixel-edit-3",
    "display_name": "Acme Pixel Edit 3",
    "vendor": "Acme",
    "endpoint": "acme/pixel-edit-3/edit",
    "operations": ["general_edit", "multi_image"],
    "inputs": {"param": "images", "max_images": 4},
    "size": {"kind": "aspect_ratio", "aspect_ratios": ["1:1", "3:2", "2:3"], "resolutions": ["1k", "2k"]},
    "seed": {"param": "seed", "min": -1, "max": 2147483647, "default": -1},
    "output_formats": ["png", "jpeg"],
    "output_format_param": "output_format",
    "default_output_format": "png",
    "price": {"kind": "per_resolution", "param": "resolution", "table": {"1k": 0.045, "2k": 0.06}},
    "sim": {"latency_ms": 5000},
}
DRIFT = {
    "prices": {"wavespeed-ai/qwen-image/edit": 0.025, "nano-banana-edit": 0.041},
    "added": [NEW_MODEL],
    "removed": ["wavespeed-ai/hidream-e1-full"],
}


@pytest.fixture(scope="module")
def server():
    with start_wavespeed_sim(Catalog.load(), time_scale=0.0004) as handle:
        yield handle


@pytest.fixture
def sim(server):
    server.sim.reset()
    server.sim.set_catalog_drift(DRIFT)
    yield server
    server.sim.set_catalog_drift(None)


def _env(sim) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WAVESPEED_", "EVALKIT_"))}
    env.update(PYTHONPATH=str(REPO), WAVESPEED_BASE_URL=sim.base_url, WAVESPEED_API_KEY=sim.api_key, TQDM_DISABLE="1")
    return env


def _cli(sim, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "evalkit", *args], capture_output=True, text=True, env=_env(sim), timeout=300
    )
    if ok:
        assert proc.returncode == 0, proc.stderr[-3000:]
    assert sim.api_key not in proc.stdout + proc.stderr
    return proc


async def _run(sim, ws, models: str, **kw):
    opts = {"wavespeed": {"base_url": sim.base_url, "api_key": Secret(sim.api_key), "poll": FAST_POLL}}
    kw.setdefault("repeats", 3)
    return await arun("smoke", models, workspace=ws, provider_options=opts, progress=False, **kw)


def _cents(usd: float) -> int:
    return round(usd * 100)


# ---- the server's catalogue endpoints ------------------------------------------------------------


def test_server_lists_prices_and_drifts(server):
    server.sim.set_catalog_drift(None)
    key = {"Authorization": f"Bearer {server.api_key}"}
    with httpx.Client(base_url=server.base_url, headers=key) as c:
        listed = c.get("/api/v3/models").json()["data"]
        ids = [m["model_id"] for m in listed]
        ours = {m.endpoint for m in Catalog.load() if m.provider == "wavespeed"}
        assert ours <= set(ids) and {m["model_id"] for m in NON_EDIT_MODELS} <= set(ids)
        locations = {"api_schemas" if "api_schemas" in m["api_schema"] else "components" for m in listed[: len(ours)]}
        assert locations == {"api_schemas", "components"}  # both documented places are served
        quote = c.post(
            "/api/v3/model/pricing",
            json={"model_id": "google/nano-banana-pro/edit", "inputs": {"resolution": "4k", "prompt": "x"}},
        )
        assert quote.json()["data"] == {
            "model_id": "google/nano-banana-pro/edit",
            "unit_price": 0.24,
            "currency": "USD",
        }
        assert quote.headers["x-evalkit-simulated"] == "1"
        # drift through the loopback control route, then back
        r = httpx.post(f"{server.base_url}/_sim/catalog", json=DRIFT)
        assert r.status_code == 200 and r.json()["drift"]["removed"] == DRIFT["removed"]
        ids = [m["model_id"] for m in c.get("/api/v3/models").json()["data"]]
        assert "acme/pixel-edit-3/edit" in ids and "wavespeed-ai/hidream-e1-full" not in ids
        assert c.post("/api/v3/wavespeed-ai/hidream-e1-full", json={"prompt": "x", "image": "y"}).status_code == 404
        q = c.post("/api/v3/model/pricing", json={"model_id": "wavespeed-ai/qwen-image/edit", "inputs": {}})
        assert q.json()["data"]["unit_price"] == 0.025
        assert httpx.post(f"{server.base_url}/_sim/catalog", json={"prices": {"x": -1}}).status_code == 400
        assert httpx.delete(f"{server.base_url}/_sim/catalog").json()["drift"]["prices"] == {}
        assert "acme/pixel-edit-3/edit" not in [m["model_id"] for m in c.get("/api/v3/models").json()["data"]]
    # the pricing API needs the key like every /api/v3 route
    assert httpx.post(f"{server.base_url}/api/v3/model/pricing", json={"model_id": "x"}).status_code == 401


async def test_a_price_seed_bills_each_model_at_an_offset_of_its_own_and_quotes_the_same(server, tmp_path):
    """The money tests' price table (drift ``price_seed``): every model billed off its catalogue price by its
    own seeded offset, the pricing API quoting exactly that — so only a run that quotes records the bill."""
    server.sim.reset()
    server.sim.set_catalog_drift({"price_seed": 11})
    try:
        catalog = Catalog.load()
        ids = [m.id for m in catalog if m.provider == "wavespeed"]
        factors = {mid: price_offset(11, mid) for mid in ids}
        assert all(0.70 <= f <= 0.95 or 1.05 <= f <= 1.30 for f in factors.values())
        assert len({round(f, 6) for f in factors.values()}) == len(ids)  # an offset per model
        assert any(f < 1 for f in factors.values()) and any(f > 1 for f in factors.values())
        assert factors == {mid: price_offset(11, mid) for mid in ids} and price_offset(12, ids[0]) != factors[ids[0]]
        key = {"Authorization": f"Bearer {server.api_key}"}
        qwen = catalog.get("qwen-edit")
        with httpx.Client(base_url=server.base_url, headers=key) as c:
            quoted = c.post("/api/v3/model/pricing", json={"model_id": qwen.endpoint, "inputs": {}}).json()["data"]
        assert quoted["unit_price"] == pytest.approx(0.02 * factors["qwen-edit"])
        listed = await _run(server, tmp_path / "listed", "qwen-edit", repeats=1)
        quoted_run = await _run(server, tmp_path / "quoted", "qwen-edit", repeats=1, quote_prices=True)
        billed = [e.usd for e in server.sim.ledger]
        assert billed == pytest.approx([quoted["unit_price"]] * 2)
        # the catalogue price: off by the offset
        assert listed.cost_usd == pytest.approx(0.02) and abs(listed.cost_usd - billed[0]) > 1e-4
        assert quoted_run.cost_usd == pytest.approx(billed[1])  # the quote: the bill
    finally:
        server.sim.set_catalog_drift(None)


# ---- catalog sync against the drifted server ------------------------------------------------------


@pytest.mark.e2e
def test_catalog_sync_reports_drift_and_write_makes_runs_bill_to_the_cent(sim, tmp_path):
    ws = tmp_path / "ws"
    report = json.loads(_cli(sim, "catalog", "sync", "--workspace", str(ws), "--json").stdout)
    assert report["simulated"] is True
    assert [n["endpoint"] for n in report["new_models"]] == ["acme/pixel-edit-3/edit"]
    assert report["new_models"][0]["quoted_usd"] == 0.045
    changes = {c["id"]: (c["catalogue_usd"], c["quoted_usd"]) for c in report["price_changes"]}
    assert changes == {"qwen-edit": (0.02, 0.025), "nano-banana-edit": (0.038, 0.041)}
    assert [r["id"] for r in report["removed"]] == ["hidream-e1-full"]
    assert sorted(report["non_edit_left_out"]) == sorted(m["model_id"] for m in NON_EDIT_MODELS)
    assert report["schema_diffs"] == []  # the server's schemas are generated from the same catalogue
    assert not (ws / "catalog").exists()  # without --write nothing is written
    text = _cli(sim, "catalog", "sync", "--workspace", str(ws)).stdout
    assert "SIMULATED" in text and "qwen-edit: $0.0200 → $0.0250" in text and "acme/pixel-edit-3/edit" in text

    _cli(sim, "catalog", "sync", "--workspace", str(ws), "--write")
    override = ws / "catalog" / "wavespeed-sync.toml"
    assert override.exists() and "SIMULATED" in override.read_text()
    rows = {m.id: m.summary() for m in Catalog.load(ws)}  # what `evalkit models --json --workspace` prints
    assert rows["qwen-edit"]["price_1024_usd"] == 0.025 and rows["qwen-edit"]["origin"] == str(override)
    assert rows["pixel-edit-3-edit"]["draft"] is True
    assert "pixel-edit-3-edit" not in {m.id for m in Catalog.load(ws).select("all")}

    # a run with the override: recorded cost = billed, to the cent (the draft runs when named by id)
    res = await_run(sim, ws, "qwen-edit,nano-banana-edit,pixel-edit-3-edit")
    df = Workspace(ws).calls(res.run_id)
    done = df[df.status == "completed"]
    assert len(done) == 9 and set(done.model_id) == {"qwen-edit", "nano-banana-edit", "pixel-edit-3-edit"}
    assert _cents(res.cost_usd) == _cents(sim.sim.billed_usd) and res.cost_usd == pytest.approx(sim.sim.billed_usd)
    assert sorted(e.usd for e in sim.sim.ledger) == sorted(done.cost_usd)

    # the same run on the bundled catalogue (no override) records the old prices: off by the drift
    sim.sim.reset()
    res2 = await_run(sim, tmp_path / "plain", "qwen-edit,nano-banana-edit")
    assert res2.cost_usd == pytest.approx(3 * 0.02 + 3 * 0.038)
    assert sim.sim.billed_usd == pytest.approx(3 * 0.025 + 3 * 0.041) != pytest.approx(res2.cost_usd)


def await_run(sim, ws, models: str, **kw):
    import asyncio

    return asyncio.run(_run(sim, ws, models, **kw))


# ---- run --quote-prices ---------------------------------------------------------------------------


async def test_quote_prices_prices_reserves_and_records_by_the_quotes(sim, tmp_path):
    res = await _run(sim, tmp_path, "qwen-edit,nano-banana-edit,seedream-v4-edit", quote_prices=True)
    # one quote per distinct (model, parameters): seeds and prompts do not change a price
    assert res.price_quotes == {"quoted": 3, "failed": 0, "errors": {}}
    df = Workspace(tmp_path).calls(res.run_id)
    done = df[df.status == "completed"]
    assert len(done) == 9
    assert set(done.price_source) == {"quoted"} and set(done.cost_source) == {"quoted"}
    by_model = done.groupby("model_id")
    assert by_model.cost_usd.first().to_dict() == pytest.approx(
        {"qwen-edit": 0.025, "nano-banana-edit": 0.041, "seedream-v4-edit": 0.027}
    )
    assert (done.reserved_usd == done.price_usd).all()  # the budget held back the quote, not the catalogue
    assert res.cost_usd == pytest.approx(sim.sim.billed_usd) and _cents(res.cost_usd) == _cents(sim.sim.billed_usd)
    assert Workspace(tmp_path).get_run(res.run_id)["config"]["quote_prices"] is True


async def test_estimate_uses_quotes_and_a_failed_quote_falls_back_and_says_so(sim, tmp_path):
    sim.sim.set_catalog_drift({**DRIFT, "failing_quotes": ["google/nano-banana/edit"]})
    dry = await _run(sim, tmp_path / "dry", "qwen-edit,nano-banana-edit", quote_prices=True, dry_run=True)
    est = dry.estimate.set_index("model_id")
    assert est.loc["qwen-edit", "list_price_usd"] == pytest.approx(3 * 0.025)  # quoted
    assert est.loc["nano-banana-edit", "list_price_usd"] == pytest.approx(3 * 0.038)  # catalogue (quote failed)
    assert sim.sim.ledger == []  # a dry run spends nothing

    res = await _run(sim, tmp_path / "run", "qwen-edit,nano-banana-edit", quote_prices=True)
    assert res.price_quotes["quoted"] == 1 and res.price_quotes["failed"] == 1
    assert "simulated failure" in res.price_quotes["errors"]["nano-banana-edit"]
    df = Workspace(tmp_path / "run").calls(res.run_id)
    df = df[df.status == "completed"]
    nano = df[df.model_id == "nano-banana-edit"]
    assert len(nano) == 3
    assert set(nano.price_source) == {"catalogue_quote_failed"} and set(nano.cost_source) == {"list_price"}
    assert (nano.cost_usd == 0.038).all()
    assert all(any("price quote failed" in n for n in json.loads(notes)) for notes in nano.notes)
    qwen = df[df.model_id == "qwen-edit"]
    assert set(qwen.price_source) == {"quoted"} and (qwen.cost_usd == 0.025).all()
    # the fallback is the catalogue price, so for the failed model the record is off by the drift: said, not hidden
    assert sim.sim.billed_usd == pytest.approx(3 * 0.025 + 3 * 0.041)

    proc = _cli(
        sim,
        "run",
        "--suite",
        "smoke",
        "--models",
        "qwen-edit,nano-banana-edit",
        "--quote-prices",
        "--dry-run",
        "--workspace",
        str(tmp_path / "cli"),
    )
    assert "price quote failed for nano-banana-edit" in proc.stderr and "catalogue price is used" in proc.stderr
    assert "prices quoted by the provider" in proc.stdout
