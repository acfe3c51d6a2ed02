"""generate_image_edit(tier=…): routing by tier_defaults.json with fallbacks, against the local WaveSpeed
simulator (one per module; faults and records reset before each test), plus the original app's call shape."""

from __future__ import annotations

import base64
import io
import json
import warnings
from collections.abc import Iterator

import pytest
from PIL import Image

from evalkit import Workspace, agenerate_image_edit, generate_image_edit
from evalkit.catalog import Catalog
from evalkit.credentials import Secret
from evalkit.decide import tiers as tiers_module
from evalkit.decide.routing import (
    TIER_DEFAULTS_SCHEMA,
    NoModelServedError,
    TierDefaultsError,
    TierDefaultsWarning,
    UnknownOutcomeError,
    failure_action,
    load_tier_defaults,
    plan_route,
)
from evalkit.errors import Category, InvalidInputError, ProviderError
from evalkit.providers.retry import RetryPolicy
from evalkit.sim.wavespeed import SimHandle, start_wavespeed_sim
from tests.engine.test_runner import FAST_POLL
from tests.plugins.common import make_png
from tests.plugins.sim_wavespeed import FAST_TIME_SCALE
from tests.plugins.tier_files import tier_defaults, write_tier_defaults_file

pytestmark = pytest.mark.filterwarnings("ignore::evalkit.decide.routing.TierDefaultsWarning")
NO_WAIT_RETRY = RetryPolicy(max_attempts=2, base_s=0.0, jitter=False)


@pytest.fixture(scope="module")
def sim() -> Iterator[SimHandle]:
    with start_wavespeed_sim(Catalog.load(), time_scale=FAST_TIME_SCALE) as handle:
        yield handle


@pytest.fixture
def ws_sim(sim: SimHandle) -> SimHandle:
    sim.sim.reset()
    return sim


@pytest.fixture
def tier_file(tmp_path):
    return write_tier_defaults_file(tmp_path / "tier_defaults.json")


def _opts(sim: SimHandle) -> dict:
    return {
        "wavespeed": {
            "base_url": sim.base_url,
            "api_key": Secret(sim.api_key),
            "poll": FAST_POLL,
            "retry": NO_WAIT_RETRY,
        }
    }


async def _edit(sim, tier_file, tmp_path, **kw):
    kw.setdefault("allow_simulated", True)
    return await agenerate_image_edit(
        make_png(64, 48),
        kw.pop("prompt", "make the sky purple"),
        operation=kw.pop("operation", "general_edit"),
        tiers=tier_file,
        workspace=tmp_path / "ws",
        provider_options=_opts(sim),
        **kw,
    )


def _submitted(sim) -> list[str]:
    return [s.model_id for s in sim.sim.submits]


def test_the_status_note_example_works_verbatim(ws_sim, tmp_path, monkeypatch):
    """The original app's documented call, copied as written (names bound the way the app had them)."""
    monkeypatch.setenv("WAVESPEED_BASE_URL", ws_sim.base_url)
    monkeypatch.setenv("WAVESPEED_API_KEY", ws_sim.api_key)
    monkeypatch.setenv("EVALKIT_WORKSPACE", str(tmp_path / "ws"))
    monkeypatch.setenv("EVALKIT_POLL_INITIAL_S", "0.01")
    monkeypatch.setenv("EVALKIT_POLL_MIN_INTERVAL_S", "0.02")
    monkeypatch.setenv("EVALKIT_POLL_MAX_INTERVAL_S", "0.1")
    image_base64_string = base64.b64encode(make_png(320, 240)).decode()
    user_id = "user-42"

    # -- from image-studio-editing-progress.md, "Usage Example" --
    result = generate_image_edit(
        image_base64=image_base64_string,
        prompt="Change the background to a beach scene",
        operation="general_edit",
        model="qwen-edit-plus",  # Optional - defaults to first available
        options={
            "width": 1024,
            "height": 1024,
            "seed": 42,
        },
        user_id=user_id,
    )

    # Result contains edited image
    edited_image_bytes = result.image_bytes
    # -- end of the example --

    img = Image.open(io.BytesIO(edited_image_bytes))
    assert img.size == (1024, 1024) and result.model_id == "qwen-edit-plus" and result.simulated
    assert [s.model_id for s in ws_sim.sim.submits] == ["qwen-edit-plus"]
    usage = Workspace(tmp_path / "ws").usage()
    assert list(usage["user_id"]) == ["user-42"] and list(usage["source"]) == ["generate_image_edit"]


async def test_image_base64_takes_a_list_and_data_uris_and_refuses_garbage(ws_sim, tmp_path):
    a, b = (base64.b64encode(make_png(80, 60, seed=s)).decode() for s in (1, 2))
    r = await agenerate_image_edit(
        image_base64=[a, "data:image/png;base64," + b],
        prompt="put the cat from the second image on the sofa",
        operation="multi_image",
        model="qwen-edit-plus",
        workspace=False,
        provider_options=_opts(ws_sim),
    )
    assert r.model_id == "qwen-edit-plus"
    with pytest.raises(InvalidInputError, match="not valid base64"):  # InvalidInputError (ImageError)
        await agenerate_image_edit(image_base64="not base64!", prompt="x", model="qwen-edit", workspace=False)
    with pytest.raises(InvalidInputError, match="not both"):
        await agenerate_image_edit(make_png(), "x", image_base64=a, model="qwen-edit", workspace=False)
    assert len(ws_sim.sim.submits) == 1  # the refused calls sent nothing


def test_the_routing_module_reads_the_schema_the_tiers_module_writes():
    assert TIER_DEFAULTS_SCHEMA == tiers_module.SCHEMA


@pytest.mark.parametrize(
    ("tier", "model"), [("free", "qwen-edit"), ("standard", "qwen-edit-plus"), ("premium", "flux-kontext-max")]
)
async def test_each_tier_is_served_by_its_default_and_the_ledger_says_so(tier, model, ws_sim, tier_file, tmp_path):
    r = await _edit(ws_sim, tier_file, tmp_path, tier=tier, user_id="u1")
    assert (r.model_id, r.tier, r.fallbacks) == (model, tier, ())
    assert _submitted(ws_sim) == [model]
    assert r.metadata["routing"]["role"] == "default" and r.metadata["routing"]["run_id"] == "run-test-1"
    assert any("SIMULATED" in n for n in r.notes)
    usage = Workspace(tmp_path / "ws").usage()
    assert list(usage["model_id"]) == [model]
    assert list(usage["source"]) == ["generate_image_edit"]
    assert (list(usage["tier"]), list(usage["role"]), list(usage["fallbacks"])) == ([tier], ["default"], [[]])


def test_route_keeps_only_alternatives_within_the_tier():
    route = plan_route(load_tier_defaults(tier_defaults(), allow_simulated=True), "standard", "general_edit")
    assert route.models == ["qwen-edit-plus", "seedream-v4-edit", "step1x-edit"]
    skipped = dict(route.skipped)
    assert skipped["flux-kontext-max"].startswith("excluded") and "allow_provisional" in skipped["hidream-e1-full"]
    # an alternative that the file calls eligible but that breaks the tier's limits is still not used
    data = tier_defaults()
    data["tiers"]["free"]["operations"]["general_edit"]["alternatives"][0]["cost_usd"] = 0.03
    route = plan_route(load_tier_defaults(data, allow_simulated=True), "free", "general_edit")
    assert route.models == ["qwen-edit"] and "> tier max $0.025" in dict(route.skipped)["hidream-e1-full"]


async def test_a_rate_limited_default_falls_back_to_the_next_alternative_and_records_why(ws_sim, tier_file, tmp_path):
    ws_sim.sim.add_fault("rate_limit", model="qwen-edit-plus", retry_after_s=0.0)
    r = await _edit(ws_sim, tier_file, tmp_path, tier="standard", user_id="u2")
    assert r.model_id == "seedream-v4-edit" and r.tier == "standard"
    [fb] = r.fallbacks
    assert (fb.model, fb.category, fb.charge) == ("qwen-edit-plus", "rate_limit", "none")
    assert "nothing was created" in fb.reason
    assert _submitted(ws_sim) == ["seedream-v4-edit"]  # the 429s created no task
    assert [e.model_id for e in ws_sim.sim.ledger] == ["seedream-v4-edit"]
    usage = Workspace(tmp_path / "ws").usage()
    assert list(usage["model_id"]) == ["qwen-edit-plus", "seedream-v4-edit"]
    assert list(usage["cost_usd"]) == [0.0, r.cost_usd]
    assert list(usage["tier"]) == ["standard", "standard"] and list(usage["role"]) == ["default", "alternative"]
    assert list(usage["fallbacks"]) == [[], [{"model": "qwen-edit-plus", "category": "rate_limit"}]]


async def test_a_failed_task_falls_back_twice_in_order(ws_sim, tier_file, tmp_path):
    ws_sim.sim.add_fault("task_failed", model="qwen-edit-plus")
    ws_sim.sim.add_fault("task_failed", model="seedream-v4-edit")
    r = await _edit(ws_sim, tier_file, tmp_path, tier="standard")
    assert r.model_id == "step1x-edit"
    assert [(f.model, f.charge) for f in r.fallbacks] == [("qwen-edit-plus", "none"), ("seedream-v4-edit", "none")]
    assert _submitted(ws_sim) == ["qwen-edit-plus", "seedream-v4-edit", "step1x-edit"]


async def test_moderation_is_never_retried_on_a_model_outside_the_tier(ws_sim, tier_file, tmp_path):
    ws_sim.sim.add_fault("moderation")  # every model refuses
    with pytest.raises(NoModelServedError) as info:
        await _edit(ws_sim, tier_file, tmp_path, tier="standard")
    assert info.value.category == Category.MODERATION
    assert [f.category for f in info.value.fallbacks] == ["moderation"] * 3
    # flux-kontext-max is an alternative in the file (premium's default) but outside standard: never called
    assert _submitted(ws_sim) == ["qwen-edit-plus", "seedream-v4-edit", "step1x-edit"]
    assert "flux-kontext-max" not in _submitted(ws_sim)


async def test_a_moderation_refusal_of_the_default_falls_back_within_the_tier(ws_sim, tier_file, tmp_path):
    ws_sim.sim.add_fault("moderation", model="flux-kontext-max")
    r = await _edit(ws_sim, tier_file, tmp_path, tier="premium")
    assert r.model_id == "seedream-v4.5-edit" and r.fallbacks[0].category == "moderation"


async def test_an_unknown_outcome_submit_stops_the_route_unless_asked(ws_sim, tier_file, tmp_path):
    ws_sim.sim.add_fault("submit_accepted_5xx", model="qwen-edit-plus", count=1)
    with pytest.raises(UnknownOutcomeError) as info:
        await _edit(ws_sim, tier_file, tmp_path, tier="standard")
    assert info.value.category == Category.UNKNOWN_OUTCOME and "continue_after_unknown" in str(info.value)
    assert _submitted(ws_sim) == ["qwen-edit-plus"]  # accepted (and maybe billed): nothing else was paid for
    usage = Workspace(tmp_path / "ws").usage()
    assert usage["cost_source"].tolist() == ["unknown"]

    ws_sim.sim.add_fault("submit_accepted_5xx", model="qwen-edit-plus", count=1)
    r = await _edit(ws_sim, tier_file, tmp_path, tier="standard", continue_after_unknown=True)
    assert r.model_id == "seedream-v4-edit" and r.fallbacks[0].charge == "unknown"
    assert any("may have been billed" in n for n in r.notes)


async def test_insufficient_evidence_needs_allow_provisional(ws_sim, tier_file, tmp_path):
    imgs = [make_png(40, 40, seed=1), make_png(40, 40, seed=2)]
    with pytest.raises(TierDefaultsError) as info:
        await agenerate_image_edit(
            imgs, "combine", operation="multi_image", tier="standard", tiers=tier_file, allow_simulated=True,
            workspace=False, provider_options=_opts(ws_sim),
        )  # fmt: skip
    text = str(info.value)
    assert "'standard'" in text and "'multi_image'" in text and "evalkit run" in text and "allow_provisional" in text
    assert _submitted(ws_sim) == []
    r = await agenerate_image_edit(
        imgs, "combine", operation="multi_image", tier="standard", tiers=tier_file, allow_simulated=True,
        allow_provisional=True, workspace=False, provider_options=_opts(ws_sim),
    )  # fmt: skip
    assert r.model_id == "qwen-edit-plus" and any("PROVISIONAL" in n for n in r.notes)


async def test_no_eligible_model_unknown_tier_and_unknown_operation_are_clear_errors(ws_sim, tier_file, tmp_path):
    with pytest.raises(TierDefaultsError, match="all models exceed the p95 latency"):
        await _edit(ws_sim, tier_file, tmp_path, tier="standard", operation="zoom_out")
    with pytest.raises(TierDefaultsError, match="no tier 'gold'.*free, standard, premium"):
        await _edit(ws_sim, tier_file, tmp_path, tier="gold")
    with pytest.raises(TierDefaultsError, match="no decision for operation 'inpaint'"):
        await _edit(ws_sim, tier_file, tmp_path, tier="free", operation="inpaint")
    assert _submitted(ws_sim) == []


async def test_an_explicit_model_wins_over_the_tier(ws_sim, tier_file, tmp_path):
    r = await _edit(ws_sim, tier_file, tmp_path, tier="premium", model="step1x-edit")
    assert r.model_id == "step1x-edit" and r.tier is None and any("explicitly" in n for n in r.notes)


def test_tier_files_of_another_schema_or_a_simulated_run_are_refused(tmp_path):
    with pytest.raises(TierDefaultsError, match="schema 'evalkit.tier_defaults/9'"):
        load_tier_defaults({**tier_defaults(), "schema": "evalkit.tier_defaults/9"}, allow_simulated=True)
    with pytest.raises(TierDefaultsError, match="SIMULATED run"):
        load_tier_defaults(write_tier_defaults_file(tmp_path / "t.json"))
    real = load_tier_defaults(tier_defaults(simulated=False))
    assert not real.simulated and real.warnings == ()
    with pytest.raises(TierDefaultsError, match="no tier defaults file"):
        load_tier_defaults(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(TierDefaultsError, match="not readable JSON"):
        load_tier_defaults(tmp_path / "bad.json")


def test_old_tier_files_warn_and_the_limit_is_configurable(tmp_path, monkeypatch):
    old = tier_defaults(simulated=False, age_days=45)
    with pytest.warns(TierDefaultsWarning, match="45.0 days old"):
        d = load_tier_defaults(old)
    assert d.age_days is not None and d.age_days > 44
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_tier_defaults(old, max_age_days=60)
        monkeypatch.setenv("EVALKIT_TIER_DEFAULTS_MAX_AGE_DAYS", "90")
        load_tier_defaults(old)
    monkeypatch.setenv("EVALKIT_TIER_DEFAULTS_MAX_AGE_DAYS", "10")
    with pytest.warns(TierDefaultsWarning):
        load_tier_defaults(tier_defaults(simulated=False, age_days=11))


def test_the_default_location_is_the_env_var_then_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_tier_defaults_file(tmp_path / "tier_defaults.json", run_id="from-cwd")
    assert load_tier_defaults(allow_simulated=True).run_id == "from-cwd"
    elsewhere = write_tier_defaults_file(tmp_path / "other.json", run_id="from-env")
    monkeypatch.setenv("EVALKIT_TIER_DEFAULTS", str(elsewhere))
    assert load_tier_defaults(allow_simulated=True).run_id == "from-env"
    assert json.loads(elsewhere.read_text())["schema"] == TIER_DEFAULTS_SCHEMA


@pytest.mark.parametrize(
    ("category", "charge", "action"),
    [
        ("rate_limit", "none", "fallback"),
        ("server", "none", "fallback"),
        ("moderation", "none", "fallback"),
        ("bad_request", "none", "fallback"),
        ("unknown_outcome", "unknown", "stop"),
        ("timeout", "unknown", "stop"),
        ("budget", "none", "stop"),
        ("cancelled", "none", "stop"),
        ("bad_output", "known", "fallback"),
    ],
)
def test_failure_action(category, charge, action):
    assert failure_action(category, charge) == action
    if charge == "unknown":
        assert failure_action(category, charge, continue_after_unknown=True) == "fallback"


async def test_a_plain_provider_error_still_raises_when_no_tier_is_given(ws_sim):
    ws_sim.sim.add_fault("moderation", count=1)
    with pytest.raises(ProviderError) as info:
        await agenerate_image_edit(make_png(), "x", model="qwen-edit", workspace=False, provider_options=_opts(ws_sim))
    assert info.value.category == Category.MODERATION


def _within_limits(alt: dict, max_cost_usd: float | None, max_p95_ms: float | None) -> bool:
    """Whether an alternative fits a tier's price and latency limits (written out here, not taken from the router)."""
    if max_cost_usd is not None and (alt["cost_usd"] is None or alt["cost_usd"] > max_cost_usd):
        return False
    return max_p95_ms is None or alt["latency_p95_ms"] is None or alt["latency_p95_ms"] <= max_p95_ms


def test_routes_follow_a_file_written_by_choose_defaults(synthetic_workspace, tmp_path):
    """The routing reads what the tiers module really writes (not only the hand-written fixture), and re-checks
    each alternative against the tier's limits: tightened limits in the file drop the alternatives they rule out."""
    from evalkit.decide.tiers import choose_defaults, write_tier_defaults
    from tests.decide.test_tiers import JUDGE, tiers
    from tests.plugins import synthetic as S

    ws = synthetic_workspace.ws
    ws.update_run(S.RUN_ID, simulated=1)
    limits = tiers()
    path = write_tier_defaults(choose_defaults(ws, S.RUN_ID, limits, quality=JUDGE), tmp_path / "out")
    written = json.loads(path.read_text())
    tightened = json.loads(path.read_text())
    # cheap: alpha ($0.04) is over $0.03; premium: alpha (p95 4020 ms) is over 2000 ms, beta (1465 ms) is not
    tightened["tiers"]["cheap"]["constraints"]["max_cost_usd"] = 0.03
    tightened["tiers"]["premium"]["constraints"]["max_latency_p95_ms"] = 2000.0
    seen: dict[str, list[str]] = {}
    for data in (written, tightened):
        defaults = load_tier_defaults(data, allow_simulated=True)
        for tier, entry in defaults.tiers.items():
            max_cost, max_p95 = entry["constraints"]["max_cost_usd"], entry["constraints"]["max_latency_p95_ms"]
            assert max_cost == (0.03 if data is tightened and tier == "cheap" else limits[tier].max_cost_usd)
            for op, d in entry["operations"].items():
                if d["status"] != "ok":
                    with pytest.raises(TierDefaultsError, match=f"tier '{tier}', operation '{op}'"):
                        plan_route(defaults, tier, op)
                    continue
                route = plan_route(defaults, tier, op)
                fits = [
                    a["model"]
                    for a in d["alternatives"]
                    if a["eligibility"] == "eligible" and _within_limits(a, max_cost, max_p95)
                ]
                # the default first, then the eligible alternatives within the limits, in the file's order
                assert route.models == [d["default"], *fits]
                assert {m for m, _ in route.skipped} == {a["model"] for a in d["alternatives"]} - set(route.models)
                seen[f"{tier}{'*' if data is tightened else ''}"] = route.models
    assert seen == {
        "cheap": ["beta", "alpha"],
        "premium": ["gamma", "alpha", "beta"],
        "cheap*": ["beta"],
        "premium*": ["gamma", "beta"],
    }


async def test_a_5xx_submit_known_not_accepted_falls_back_as_a_server_error(ws_sim, tier_file, tmp_path):
    """With resend_submit_on_503 the provider treats a bare 503 as "not accepted"; after its retries the
    route moves on (charge none). Without it the same 503 is an unknown outcome (test above)."""
    ws_sim.sim.add_fault("submit_5xx", model="qwen-edit-plus", status=503)
    opts = _opts(ws_sim)
    opts["wavespeed"]["resend_submit_on_503"] = True
    r = await agenerate_image_edit(
        make_png(), "x", tier="standard", tiers=tier_file, allow_simulated=True, workspace=False, provider_options=opts
    )
    assert r.model_id == "seedream-v4-edit"
    assert (r.fallbacks[0].category, r.fallbacks[0].charge) == ("server", "none")
    assert _submitted(ws_sim) == ["seedream-v4-edit"]


async def test_a_request_priced_over_the_tier_maximum_is_not_sent(ws_sim, tmp_path):
    data = tier_defaults()
    std = data["tiers"]["standard"]
    std["constraints"]["max_cost_usd"] = 0.035
    std["operations"]["general_edit"]["default"] = "nano-banana-edit"  # lists $0.038 per edit in the catalogue
    r = await _edit(ws_sim, write_tier_defaults_file(tmp_path / "t.json", data), tmp_path, tier="standard")
    assert r.model_id == "seedream-v4-edit"
    fb = r.fallbacks[0]
    assert (fb.model, fb.category, fb.charge) == ("nano-banana-edit", "bad_request", "none")
    assert "> tier standard max $0.035" in fb.reason
    assert _submitted(ws_sim) == ["seedream-v4-edit"]
