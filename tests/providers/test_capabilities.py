"""The typed part of the provider protocol: :class:`ProviderCapabilities` (declared by every built-in
provider, defaults for one that declares nothing, old bare flags still honoured) and the engine honouring
what a provider declares — and only that; plus :meth:`EditOutcome.provider_failure`, the one way providers
word a failure (service, the server's words, what to do, no key)."""

from __future__ import annotations

import pytest

from evalkit.credentials import Secret
from evalkit.engine.control import StopController
from evalkit.engine.execution import CallSource, Execution
from evalkit.engine.limits import ProviderLimits
from evalkit.engine.planning import PlannedCall, iter_plan
from evalkit.errors import Category, MissingKeyError
from evalkit.providers import create_provider
from evalkit.providers.base import (
    MAX_DETAIL_CHARS,
    NO_CAPABILITIES,
    ChecksCredentials,
    EditOutcome,
    EditRequest,
    PreparedRequest,
    ProviderCapabilities,
    QuotesPrices,
    capabilities_of,
    ensure_credentials,
)
from evalkit.providers.huggingface import HuggingFaceEditProvider
from evalkit.providers.local import LocalEditProvider
from evalkit.providers.retry import RetryPolicy
from evalkit.providers.stability import StabilityEditProvider
from evalkit.providers.wavespeed import WaveSpeedEditProvider
from evalkit.store import CallStatus, Workspace
from evalkit.suites import load_suite

KEY = "sk-live-THIS-IS-A-SECRET-123456"

# ---- declared ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "expected"),
    [
        (WaveSpeedEditProvider, ProviderCapabilities(resumable=True, reconcilable=True, reports_finished=True)),
        (StabilityEditProvider, ProviderCapabilities(resumable=True)),
        (HuggingFaceEditProvider, NO_CAPABILITIES),
        (LocalEditProvider, NO_CAPABILITIES),
    ],
    ids=["wavespeed", "stability", "huggingface", "local"],
)
def test_every_built_in_provider_declares_its_capabilities(cls, expected):
    assert isinstance(cls.__dict__["capabilities"], ProviderCapabilities)  # declared on the class, typed
    assert capabilities_of(cls) == expected
    # no bare flags left beside the declaration (they would be read by nobody)
    assert not {"resumable", "reconcilable", "reports_finished"} & set(vars(cls))


def test_a_provider_that_declares_nothing_gets_no_optional_capability():
    class Bare:
        name = "bare"

    assert capabilities_of(Bare()) is NO_CAPABILITIES
    assert NO_CAPABILITIES == ProviderCapabilities(resumable=False, reconcilable=False, reports_finished=False)


def test_flags_of_providers_written_before_capabilities_existed_are_honoured():
    class Old:
        name = "old"
        resumable = True
        reports_finished = True

    assert capabilities_of(Old()) == ProviderCapabilities(resumable=True, reports_finished=True)


def test_a_declaration_wins_over_bare_flags():
    class Both:
        capabilities = ProviderCapabilities(reconcilable=True)
        resumable = True  # stale: the declaration is what counts

    assert capabilities_of(Both()) == ProviderCapabilities(reconcilable=True)


def test_optional_methods_are_found_by_their_protocols(monkeypatch):
    monkeypatch.delenv("WAVESPEED_API_KEY", raising=False)
    wavespeed = create_provider("wavespeed")
    assert isinstance(wavespeed, ChecksCredentials) and isinstance(wavespeed, QuotesPrices)
    assert not isinstance(LocalEditProvider(), ChecksCredentials)
    assert not isinstance(LocalEditProvider(), QuotesPrices)
    with pytest.raises(MissingKeyError, match="WAVESPEED_API_KEY"):
        ensure_credentials(wavespeed)
    ensure_credentials(LocalEditProvider())  # nothing to check: no error


# ---- honoured by the engine ------------------------------------------------------------------------------


class Recording:
    """A third-party provider that declares nothing: the local baselines, recording the hooks ``edit`` gets
    and the ``resume`` calls."""

    name = "local"

    def __init__(self) -> None:
        self.inner = LocalEditProvider()
        self.hooks: list[set[str]] = []
        self.finished = 0
        self.resumed: list[str] = []

    def prepare(self, request: EditRequest) -> PreparedRequest:
        return self.inner.prepare(request)

    async def edit(self, request: EditRequest, *, on_submitted=None, **hooks) -> EditOutcome:
        self.hooks.append(set(hooks))
        if on_submitted is not None:
            await on_submitted(f"job-{len(self.hooks)}")
        if "on_sending" in hooks:
            await hooks["on_sending"]({"model": request.model.id})
        outcome = await self.inner.edit(request)
        if "on_finished" in hooks:
            self.finished += 1
            hooks["on_finished"]()
        return outcome

    async def resume(self, request: EditRequest, prediction_id: str) -> EditOutcome:
        self.resumed.append(prediction_id)
        return await self.inner.edit(request)

    async def aclose(self) -> None:
        pass


class Declares(Recording):
    capabilities = ProviderCapabilities(resumable=True, reconcilable=True, reports_finished=True)


class OldFlags(Recording):
    reports_finished = True


def _plan(tmp_path, catalog, provider) -> tuple[Workspace, list[PlannedCall], Execution]:
    cases = [c for c in load_suite("smoke").cases if c.operation == "general_edit"][:1]
    specs = [catalog.get("identity")]
    ws = Workspace(tmp_path)
    ws.create_run(
        "cap",
        suite_name="smoke",
        suite_path=None,
        suite_fingerprint=None,
        catalog_fingerprint=None,
        models=["identity"],
        repeats=3,
        budget_usd=None,
        config={},
    )
    planned = list(iter_plan("cap", cases, specs, {"local": provider}, repeats=3))
    assert len(planned) == 3 and all(pc.status == CallStatus.PLANNED for pc in planned)
    ws.insert_calls(pc.row() for pc in planned)
    for pc in planned:
        pc.release()
    source = CallSource(
        "cap",
        {pc.case_id: pc.case for pc in planned},
        {pc.model.id: pc.model for pc in planned},
        {pc.case_id: pc.inputs for pc in planned},
    )
    fast = RetryPolicy(max_attempts=2, base_s=0.01, max_backoff_s=0.02, max_retry_after_s=0.02)
    ex = Execution(
        ws=ws,
        run_id="cap",
        source=source,
        providers={"local": provider},
        budget_usd=None,
        concurrency=2,
        limits={"local": ProviderLimits(max_concurrent=1)},
        no_cache=True,
        progress=False,
        grace_period_s=5.0,
        resubmit_unknown=False,
        retry_failed=False,
        controller=StopController(),
        patience=fast,
    )
    return ws, planned, ex


async def test_a_provider_that_declares_nothing_gets_no_optional_hook(tmp_path, catalog):
    provider = Recording()
    ws, planned, ex = _plan(tmp_path, catalog, provider)
    await ex.execute()
    assert {r["status"] for r in ws.call_rows("cap")} == {CallStatus.COMPLETED}
    assert provider.hooks == [set()] * len(planned)  # neither on_sending nor on_finished
    assert provider.finished == 0


@pytest.mark.parametrize("cls", [Declares, OldFlags], ids=["declared", "old-flag"])
async def test_a_provider_that_reports_finished_gets_on_finished_calls(tmp_path, catalog, cls):
    provider = cls()
    ws, planned, ex = _plan(tmp_path, catalog, provider)
    await ex.execute()
    assert {r["status"] for r in ws.call_rows("cap")} == {CallStatus.COMPLETED}
    assert all("on_finished" in h for h in provider.hooks) and provider.finished == len(planned)
    # on_sending only where reconcilable is declared: its body is recorded for the history search
    assert all(("on_sending" in h) == (cls is Declares) for h in provider.hooks)


@pytest.mark.parametrize("cls", [Recording, Declares], ids=["not-resumable", "resumable"])
async def test_an_accepted_job_is_resumed_only_by_a_resumable_provider(tmp_path, catalog, cls):
    provider = cls()
    ws, planned, ex = _plan(tmp_path, catalog, provider)
    victim = planned[0]
    # the job was accepted (and its id recorded) before the process died
    ws.mark_submitting(victim.call_id, reserved_usd=0.0)
    ws.mark_submitted(victim.call_id, "job-before-crash")
    await ex.execute()
    row = ws.get_call(victim.call_id)
    if cls is Declares:
        assert provider.resumed == ["job-before-crash"] and row["status"] == CallStatus.COMPLETED
    else:  # today's fallback: nothing to collect it with, so it is unknown (and never sent again)
        assert provider.resumed == [] and row["status"] == CallStatus.UNKNOWN
    assert len(provider.hooks) == len(planned) - 1  # the victim was not re-sent either way


# ---- the failure helper ----------------------------------------------------------------------------------


def test_a_failure_names_the_service_says_what_happened_and_what_to_do():
    out = EditOutcome.provider_failure(
        "qwen-edit",
        Category.AUTH,
        "submit failed: HTTP 401",
        service="WaveSpeed",
        detail="invalid api key",
        hint="check the key (WAVESPEED_API_KEY)",
        code=401,
        status_code=401,
    )
    assert not out.ok and out.model_id == "qwen-edit" and out.cost_usd == 0.0
    assert out.error is not None and out.error.category == Category.AUTH
    assert out.error.code == 401 and out.error.status_code == 401 and not out.error.retryable
    assert out.error.message == (
        "WaveSpeed: submit failed: HTTP 401: invalid api key — check the key (WAVESPEED_API_KEY)"
    )


def test_a_message_that_names_its_service_is_not_prefixed_again():
    out = EditOutcome.provider_failure("m", Category.SERVER, "Stability answered 500", service="Stability")
    assert out.error is not None and out.error.message == "Stability answered 500"


def test_no_key_survives_in_a_failure():
    # the key as the server echoed it, in a bearer header, in the message itself: all masked
    out = EditOutcome.provider_failure(
        "m",
        Category.AUTH,
        f"refused key {KEY}",
        service="Acme",
        detail=f"header was 'Authorization: Bearer {KEY}' and key={KEY}",
        hint="check ACME_API_KEY",
        secrets=[Secret(KEY, "ACME_API_KEY")],
    )
    assert out.error is not None
    text = out.error.message + repr(out) + repr(out.error)
    assert KEY not in text and "***" in out.error.message
    assert "check ACME_API_KEY" in out.error.message


def test_a_long_server_detail_is_cut():
    out = EditOutcome.provider_failure("m", Category.SERVER, "boom", service="Acme", detail="x" * 5000)
    assert out.error is not None
    assert len(out.error.message) < MAX_DETAIL_CHARS + 50 and out.error.message.endswith("…")


async def test_a_local_baseline_failure_says_which_baseline_and_what_to_do(tmp_path, catalog, monkeypatch):
    import evalkit.providers.local as local

    def broken(prepared):
        raise ValueError("cannot read the mask")

    monkeypatch.setattr(local, "run_baseline", broken)
    provider = Recording()
    _ws, planned, _ex = _plan(tmp_path, catalog, provider)
    request = planned[0].build(provider).built[0]
    out = await LocalEditProvider().edit(request)
    assert out.error is not None and out.error.category == Category.TASK_FAILED and out.cost_source == "free"
    msg = out.error.message
    assert msg.startswith("local baseline: identity failed") and "ValueError: cannot read the mask" in msg
    assert "check the input image" in msg
