"""When to poll an accepted task: at the provider's pace, without wasting seconds.

WaveSpeed asks for image tasks to be polled ≥ 2 s apart (reference wavespeed-api.md §1.4). With a fixed
schedule a 3 s task is seen done at the poll after 3 s — often 4–5 s — and a wave of 100 such tasks waits
for its slowest poll. :class:`PollPacer` instead times the *first* poll of each task from what the model
has shown: a high quantile of its completion times (this run's, and earlier runs' seeded from the
workspace) plus a small margin, so most tasks are collected with one poll just after they finish.
Before a model has shown anything, a per-model prior (catalogue data) is used, else ``fallback_first_s``.
Every later poll of the task keeps ``min_interval_s`` (≥ 2 s by default) from the previous one and backs
off for long tasks (a tenth of the time already waited, up to ``max_interval_s``).

**The first wave** of a model nobody has timed yet: a few tasks are *probes*, first polled at staggered
moments (``probe_first_s``, then every ``min_interval_s / probes``), so between them the model's completion
time is found to within a fraction of the 2 s spacing; the other tasks (*followers*) are not polled until a
probe has seen one finish (or the prior's moment has come), then aim at that first sample plus the margin.

**The margin** starts at ``max(margin_s, margin_frac × estimate)`` and then follows how first polls fare:
a first poll that finds its task unfinished (a *miss*: the task waits another ``min_interval_s``) widens it,
one that finds it done narrows it, so that about ``target_miss_rate`` of first polls miss — tight completion
times get a margin near ``margin_floor_s``, a server that shows results some time after the reported
inference gets the margin that covers it.

A completion-time *sample* is what can be known without bias: the later of the server-reported inference
time and the last moment a poll still saw the task unfinished (both lower bounds of the true time from
acceptance). Using the moment the finishing poll arrived would feed the margin back into the estimate and
make it creep up wave after wave. A queued task shows up as a miss (the poll saw it unfinished), which
raises its sample, so queueing is learnt too.

Pure: no clock, no I/O; the provider feeds it observations and asks it for delays.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from evalkit.errors import InvalidInputError

__all__ = ["PollPacer", "PacerConfig"]


@dataclass(frozen=True)
class PacerConfig:
    #: seconds between two polls of one task (WaveSpeed's guidance for images: ≥ 2 s)
    min_interval_s: float = 2.0
    #: the longest wait between two polls of a long task
    max_interval_s: float = 5.0
    #: which quantile of a model's completion times the first poll aims at
    quantile: float = 0.9
    #: added to the quantile: at least ``margin_s``, or ``margin_frac`` of it when that is more
    margin_s: float = 0.2
    margin_frac: float = 0.05
    #: samples kept per model (the most recent)
    window: int = 256
    #: samples needed before they replace the prior
    min_samples: int = 3
    #: the first poll of a model with neither samples nor prior
    fallback_first_s: float = 1.0
    #: no first poll later than this (a bad estimate must not hide a finished task for long)
    max_first_s: float = 300.0
    #: a catalogue prior is a reported figure, often of low confidence: the first poll comes at this fraction
    #: of it (a faster task is not kept waiting), the next one aims at the prior itself
    prior_fraction: float = 0.5
    #: tasks of a model with no sample yet that probe it (staggered first polls); the others wait for a sample.
    #: 0: no probing (every task's first poll from the prior or ``fallback_first_s``)
    probes: int = 8
    #: the first probe's first poll (seconds from acceptance); the others follow ``min_interval_s / probes`` apart
    probe_first_s: float = 0.5
    #: the share of first polls allowed to miss (find the task unfinished); the margin is steered towards it
    target_miss_rate: float = 0.05
    #: how far one first poll moves the margin (seconds; a miss widens it by ``(1 - target) ×`` this, a hit
    #: narrows it by ``target ×`` this)
    margin_step_s: float = 0.2
    #: the margin never goes below this
    margin_floor_s: float = 0.05

    def __post_init__(self) -> None:
        if min(self.min_interval_s, self.max_interval_s, self.margin_s, self.margin_frac, self.fallback_first_s) < 0:
            raise InvalidInputError("poll pacing: intervals and margins must be ≥ 0")
        if not 0 < self.quantile <= 1:
            raise InvalidInputError("poll pacing: quantile must be within (0, 1]")
        if self.window < 1 or self.min_samples < 1:
            raise InvalidInputError("poll pacing: window and min_samples must be ≥ 1")
        if self.probes < 0 or min(self.probe_first_s, self.margin_step_s, self.margin_floor_s) < 0:
            raise InvalidInputError("poll pacing: probes, probe_first_s and margins must be ≥ 0")
        if not 0 < self.target_miss_rate < 1:
            raise InvalidInputError("poll pacing: target_miss_rate must be within (0, 1)")


class PollPacer:
    """Per-model completion-time estimates and the poll delays derived from them."""

    def __init__(self, config: PacerConfig | None = None, *, priors: Mapping[str, float] | None = None):
        self.config = config or PacerConfig()
        self._priors = {k: float(v) for k, v in (priors or {}).items() if v is not None and float(v) > 0}
        self._samples: dict[str, deque[float]] = {}
        self._cached: dict[str, float] = {}
        #: per model: the margin as steered by first polls (absent: the configured rule)
        self._margin: dict[str, float] = {}

    # ---- learning ---------------------------------------------------------------------------
    def set_prior(self, model: str, seconds: float | None) -> None:
        if seconds is not None and seconds > 0:
            self._priors[model] = float(seconds)
            self._cached.pop(model, None)

    def observe(self, model: str, seconds: float | None) -> None:
        """One task's completion time (seconds from acceptance; see the module docstring)."""
        if seconds is None or not math.isfinite(seconds) or seconds <= 0:
            return
        q = self._samples.get(model)
        if q is None:
            q = self._samples[model] = deque(maxlen=self.config.window)
        q.append(float(seconds))
        self._cached.pop(model, None)

    def seed(self, model: str, samples: Iterable[float | None]) -> None:
        """Completion times from earlier runs (oldest first; only the last ``window`` are kept)."""
        for s in samples:
            self.observe(model, s)

    @staticmethod
    def sample(inference_s: float | None, last_unfinished_s: float | None) -> float | None:
        """The unbiased completion-time sample of one task (both arguments seconds from acceptance)."""
        known = [v for v in (inference_s, last_unfinished_s) if v is not None and v > 0]
        return max(known) if known else None

    def samples(self, model: str) -> int:
        return len(self._samples.get(model, ()))

    def first_poll(self, model: str, hit: bool) -> None:
        """How a first poll aimed at the estimate fared: ``hit`` = it found the task finished."""
        c = self.config
        est = self.estimate_s(model)
        if est is None or c.margin_step_s == 0:
            return
        m = self._margin_for(model, est)
        m += -c.target_miss_rate * c.margin_step_s if hit else (1 - c.target_miss_rate) * c.margin_step_s
        self._margin[model] = min(max(c.margin_floor_s, m), max(c.margin_floor_s, c.max_first_s))

    def margin_s(self, model: str) -> float | None:
        """The margin added to the model's estimate (None while nothing is known)."""
        est = self.estimate_s(model)
        return None if est is None else self._margin_for(model, est)

    def _margin_for(self, model: str, est: float) -> float:
        """The steered margin of ``model``, else the configured rule for an estimate of ``est`` seconds."""
        return self._margin.get(model, max(self.config.margin_s, est * self.config.margin_frac))

    def _aim_s(self, model: str, est: float) -> float:
        """Seconds from acceptance a first poll aims at, for an estimate of ``est`` seconds."""
        return min(est + self._margin_for(model, est), self.config.max_first_s)

    # ---- deciding ---------------------------------------------------------------------------
    def estimate_s(self, model: str) -> float | None:
        """The quantile of the model's completion times, else its prior, else None."""
        if model in self._cached:
            return self._cached[model]
        q = self._samples.get(model)
        value: float | None
        if q is not None and len(q) >= self.config.min_samples:
            ordered = sorted(q)
            value = ordered[min(len(ordered) - 1, max(0, math.ceil(self.config.quantile * len(ordered)) - 1))]
        else:
            value = self._priors.get(model)
        if value is not None:
            self._cached[model] = value
        return value

    def from_prior(self, model: str) -> bool:
        """Whether the model's estimate is the catalogue prior (not enough samples yet)."""
        return self.samples(model) < self.config.min_samples and model in self._priors

    def _target_s(self, model: str) -> float | None:
        est = self.estimate_s(model)
        return None if est is None else self._aim_s(model, est)

    # ---- the first wave -----------------------------------------------------------------------
    def probing(self, model: str) -> bool:
        """Whether new tasks of ``model`` are timed by probes (no sample of it yet, probing on)."""
        return self.config.probes > 0 and self.samples(model) == 0

    def probe_delay_s(self, index: int) -> float:
        """Seconds from acceptance to the first poll of probe number ``index`` (0-based, cycling)."""
        c = self.config
        return c.probe_first_s + (index % c.probes) * c.min_interval_s / c.probes

    def follower_wait_s(self, model: str) -> float:
        """The longest a follower waits for a probe's sample before its first poll: the prior's first-poll
        moment when there is a prior, else ``max_first_s``."""
        if self.from_prior(model):
            return self.first_delay_s(model)
        return self.config.max_first_s

    def follower_delay_s(self, model: str, waited_s: float) -> float:
        """Seconds from now to a follower's first poll, ``waited_s`` after its acceptance, once woken: aimed at
        the first samples (their maximum) plus the margin; 0 when that moment has passed or nothing is known."""
        q = self._samples.get(model)
        if not q:
            return 0.0
        est = max(q) if len(q) < self.config.min_samples else self.estimate_s(model)
        assert est is not None
        return max(0.0, self._aim_s(model, est) - waited_s)

    def first_delay_s(self, model: str) -> float:
        """Seconds from acceptance to the first poll of a new task of ``model``."""
        target = self._target_s(model)
        if target is None:
            return self.config.fallback_first_s
        if self.from_prior(model):
            return max(self.config.fallback_first_s, target * self.config.prior_fraction)
        return target

    def next_delay_s(self, waited_s: float, model: str | None = None) -> float:
        """Seconds from one poll of a task to the next, ``waited_s`` after its acceptance: at least
        ``min_interval_s``; when the model's estimate (learnt meanwhile, e.g. while the first wave ran) is
        still ahead, aimed at it; otherwise backing off for long tasks (a tenth of the time waited)."""
        c = self.config
        delay = max(c.min_interval_s, min(c.max_interval_s, 0.1 * max(0.0, waited_s)))
        target = self._target_s(model) if model is not None else None
        if target is not None:
            until_expected = target - waited_s
            if until_expected > delay:
                delay = min(until_expected, c.max_first_s)
        return delay
