"""Act on :mod:`evalkit.engine.reconcile`'s decisions for one run's unknown calls, in the workspace.

Used at ``--resume`` (before the remaining calls are carried on), at the end of a run that left unknown
submits behind, and by ``evalkit reconcile RUN_ID``. Per call:

* **matched** → the row becomes ``submitted`` with the prediction id (error and cost cleared): the engine
  then collects it like any accepted job — polls, downloads, records its cost; nothing is re-sent;
* **resubmit** → the row goes back to ``planned`` and is submitted again as a normal call;
* **unknown** → the row stays (or becomes) ``unknown`` with the reason in its error message.

Only calls whose provider can list its predictions (``reconcilable``) are considered; others keep the
old behaviour (unknown until ``--resubmit-unknown``).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from evalkit.engine.reconcile import Decision, ReconcilePolicy, UnknownCall, Verdict, reconcile
from evalkit.errors import InvalidInputError
from evalkit.providers.base import capabilities_of
from evalkit.providers.history import parse_time

__all__ = ["SettleReport", "policy_from_env", "settle_unknown"]

log = logging.getLogger("evalkit.engine.settle")

#: statuses whose submit's fate is not known (``submitting``: the process died while sending)
UNSETTLED = ("unknown", "submitting")

_ENV = {
    "clock_skew_s": "EVALKIT_RECONCILE_SKEW_S",
    "settle_s": "EVALKIT_RECONCILE_SETTLE_S",
    "max_submit_s": "EVALKIT_RECONCILE_MAX_SUBMIT_S",
}


def policy_from_env(base: ReconcilePolicy | None = None) -> ReconcilePolicy:
    """The default policy, with ``EVALKIT_RECONCILE_SKEW_S`` / ``_SETTLE_S`` / ``_MAX_SUBMIT_S`` applied."""
    kw: dict[str, Any] = {}
    for name, var in _ENV.items():
        raw = os.environ.get(var, "").strip()
        if raw:
            try:
                kw[name] = float(raw)
            except ValueError:
                raise InvalidInputError(f"{var}={raw!r} is not a number of seconds") from None
    base = base or ReconcilePolicy()
    if not kw:
        return base
    from dataclasses import replace

    return replace(base, **kw)


@dataclass
class SettleReport:
    decisions: list[Decision] = field(default_factory=list)
    #: calls not considered (their provider cannot list predictions)
    skipped: int = 0

    def count(self, verdict: Verdict) -> int:
        return sum(1 for d in self.decisions if d.verdict == verdict)

    @property
    def matched(self) -> int:
        return self.count(Verdict.MATCHED)

    @property
    def resubmit(self) -> int:
        return self.count(Verdict.RESUBMIT)

    @property
    def unknown(self) -> int:
        return self.count(Verdict.UNKNOWN)

    def as_dict(self) -> dict[str, Any]:
        return {
            "matched": self.matched,
            "resubmit": self.resubmit,
            "unknown": self.unknown,
            "skipped": self.skipped,
            "reasons": sorted({d.reason for d in self.decisions if d.verdict == Verdict.UNKNOWN})[:20],
        }


def _sent(raw: Any) -> Any:
    if raw is None:
        return None
    if isinstance(raw, str):
        import json

        try:
            return json.loads(raw)
        except ValueError:
            return None
    return raw


async def settle_unknown(
    ws: Any,
    run_id: str,
    providers: Mapping[str, Any],
    endpoints: Mapping[str, str],
    *,
    policy: ReconcilePolicy | None = None,
    wait_for_settle_s: float = 0.0,
    now: datetime | None = None,
) -> SettleReport:
    """Reconcile every unsettled call of ``run_id`` whose provider is reconcilable; write the outcome.

    ``endpoints`` maps a model id to the model name the provider's history uses (WaveSpeed: the endpoint).
    ``wait_for_settle_s``: when some windows closed too recently, wait up to this long and ask again once.
    """
    policy = policy or policy_from_env()
    rows = ws.call_rows(
        run_id,
        statuses=UNSETTLED,
        columns=("call_id", "model_id", "provider", "status", "submitting_at", "completed_at", "sent_body"),
    )
    report = SettleReport()
    by_provider: dict[str, list[UnknownCall]] = {}
    for r in rows:
        provider = providers.get(r["provider"])
        start = parse_time(r["submitting_at"])
        if provider is None or not capabilities_of(provider).reconcilable or start is None:
            report.skipped += 1
            continue
        # a crash mid-submit has no end (None: the longest a submit can take); the first recorded unknown outcome does
        end = parse_time(r["completed_at"]) if r["status"] == "unknown" else None
        model = endpoints.get(r["model_id"], r["model_id"])
        by_provider.setdefault(r["provider"], []).append(
            UnknownCall(r["call_id"], model, start, end, _sent(r["sent_body"]))
        )
    if not by_provider:
        return report
    for name, calls in by_provider.items():
        provider = providers[name]

        async def fetch(model: str, after: datetime, before: datetime, page: int, size: int, _p: Any = provider):
            return await _p.list_predictions(model, after, before, page=page, page_size=size, include_inputs=True)

        claimed = ws.claimed_prediction_ids(name)
        decisions = await reconcile(calls, fetch, claimed=claimed, now=now, policy=policy)
        waits = [d.retry_after_s for d in decisions if d.retry_after_s is not None]
        if waits and wait_for_settle_s > 0 and max(waits) <= wait_for_settle_s:
            log.info("reconcile: waiting %.1f s for the newest submit windows to settle", max(waits))
            await asyncio.sleep(max(waits) + 0.05)
            again = {d.call_id for d in decisions if d.retry_after_s is not None}
            redo = [c for c in calls if c.call_id in again]
            # what the first pass handed out is owned now: never give it to a second call
            claimed = set(claimed) | {d.prediction_id for d in decisions if d.prediction_id}
            fresh = {d.call_id: d for d in await reconcile(redo, fetch, claimed=claimed, policy=policy)}
            decisions = [fresh.get(d.call_id, d) for d in decisions]
        _apply(ws, decisions)
        report.decisions.extend(decisions)
    log.info("reconcile %s: %s", run_id, report.as_dict())
    return report


def _apply(ws: Any, decisions: list[Decision]) -> None:
    for d in decisions:
        if d.verdict == Verdict.MATCHED:
            assert d.prediction_id is not None
            ws.adopt_prediction(d.call_id, d.prediction_id, note=f"reconciled: {d.reason}")
        elif d.verdict == Verdict.RESUBMIT:
            ws.reset_call(d.call_id)
        else:
            ws.note_unknown(
                d.call_id,
                "whether this submit was accepted is unknown and the provider's history cannot settle it: "
                f"{d.reason}. It was not sent again; `evalkit reconcile RUN_ID` asks again, and "
                "--resubmit-unknown sends it again (this may pay twice).",
            )


async def areconcile_run(
    run_id: str,
    *,
    workspace: Any = None,
    catalog: Any = None,
    provider_options: Mapping[str, Mapping[str, Any]] | None = None,
    policy: ReconcilePolicy | None = None,
    wait_for_settle_s: float = 0.0,
) -> SettleReport:
    """``evalkit reconcile RUN_ID``: settle the run's unknown calls now (matched ones are then collected,
    and proven-unaccepted ones sent, by ``evalkit run --resume RUN_ID``)."""
    from evalkit.catalog import Catalog
    from evalkit.providers import create_provider
    from evalkit.store import Workspace, check_id

    check_id(run_id, "run id")
    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    run = ws.get_run(run_id)
    catalog = catalog or Catalog.load(ws.path)
    specs = catalog.select(run["models"])
    names = sorted({m.provider for m in specs})
    opts = {k: dict(v) for k, v in (provider_options or {}).items()}
    providers = {name: create_provider(name, **opts.get(name, {})) for name in names}
    try:
        with ws.run_lock(run_id):
            return await settle_unknown(
                ws,
                run_id,
                providers,
                {m.id: m.endpoint for m in specs},
                policy=policy,
                wait_for_settle_s=wait_for_settle_s,
            )
    finally:
        for p in providers.values():
            try:
                await p.aclose()
            except Exception:  # noqa: BLE001
                log.debug("closing provider failed", exc_info=True)
