"""PollPacer: first polls timed from a model's completion times, later polls at the provider's pace."""

from __future__ import annotations

import pytest

from evalkit.errors import InvalidInputError
from evalkit.providers.pacing import PacerConfig, PollPacer


def test_without_samples_or_prior_the_first_poll_uses_the_fallback():
    p = PollPacer(PacerConfig(fallback_first_s=1.5))
    assert p.estimate_s("m") is None and p.first_delay_s("m") == 1.5


def test_the_prior_times_the_first_wave_until_enough_samples_exist():
    p = PollPacer(PacerConfig(min_samples=3, margin_s=0.1, margin_frac=0.0), priors={"m": 7.0})
    # a prior is a reported figure: the first poll at half of it, the next one aimed at it
    assert p.first_delay_s("m") == pytest.approx(3.55) and p.from_prior("m")
    assert p.next_delay_s(3.55, "m") == pytest.approx(3.55)
    p.observe("m", 3.0)
    p.observe("m", 3.0)
    assert p.first_delay_s("m") == pytest.approx(3.55)  # two samples are not yet trusted
    p.observe("m", 3.0)
    assert p.first_delay_s("m") == pytest.approx(3.1)
    assert p.first_delay_s("other") == PacerConfig().fallback_first_s


def test_the_first_poll_aims_at_a_high_quantile_plus_a_margin():
    p = PollPacer(PacerConfig(quantile=0.9, margin_s=0.1, margin_frac=0.05))
    p.seed("m", [float(s) for s in range(1, 11)])  # 1 … 10 s
    assert p.estimate_s("m") == 9.0
    assert p.first_delay_s("m") == pytest.approx(9.0 + 0.45)
    p.seed("fast", [0.5] * 5)
    assert p.first_delay_s("fast") == pytest.approx(0.6)  # the absolute margin wins for fast models


def test_only_the_most_recent_window_counts():
    p = PollPacer(PacerConfig(window=4, quantile=1.0, margin_s=0.0, margin_frac=0.0))
    p.seed("m", [30.0, 30.0, 3.0, 3.0, 3.0, 3.0])
    assert p.estimate_s("m") == 3.0


def test_bad_observations_are_ignored():
    p = PollPacer(PacerConfig(min_samples=1))
    for bad in (None, 0.0, -1.0, float("nan"), float("inf")):
        p.observe("m", bad)
    assert p.samples("m") == 0


def test_the_first_poll_is_capped():
    p = PollPacer(PacerConfig(min_samples=1, max_first_s=60.0))
    p.observe("slow", 600.0)
    assert p.first_delay_s("slow") == 60.0


def test_later_polls_keep_the_minimum_interval_and_back_off_for_long_tasks():
    p = PollPacer(PacerConfig(min_interval_s=2.0, max_interval_s=5.0))
    assert p.next_delay_s(3.0) == 2.0
    assert p.next_delay_s(35.0) == pytest.approx(3.5)
    assert p.next_delay_s(600.0) == 5.0
    assert PollPacer(PacerConfig(min_interval_s=0.5, max_interval_s=0.5)).next_delay_s(1.0) == 0.5


def test_a_later_poll_aims_at_the_estimate_when_it_is_still_ahead():
    # a first-wave task polled early (nothing known yet); meanwhile the model showed 30 s tasks
    p = PollPacer(PacerConfig(min_samples=1, quantile=1.0, margin_s=0.5, margin_frac=0.0))
    p.observe("m", 30.0)
    assert p.next_delay_s(1.0, "m") == pytest.approx(29.5)  # not 2 s polls for half a minute
    assert p.next_delay_s(31.0, "m") == pytest.approx(3.1)  # past the estimate: the usual spacing
    assert p.next_delay_s(1.0, "unseen") == 2.0


def test_the_sample_is_a_lower_bound_that_does_not_feed_the_margin_back():
    # inference reported 3.0 s; a poll at 3.2 s found it done: the sample stays 3.0, so waves do not creep up
    assert PollPacer.sample(3.0, None) == 3.0
    # a poll at 3.1 s still saw it queued / processing: the task took longer than 3.1 s from acceptance
    assert PollPacer.sample(3.0, 3.1) == 3.1
    assert PollPacer.sample(None, None) is None
    p = PollPacer(PacerConfig(min_samples=1, quantile=1.0, margin_s=0.1, margin_frac=0.0))
    for _ in range(20):  # steady 3 s tasks polled at the estimate: the first delay stays put
        p.observe("m", PollPacer.sample(3.0, None))
    assert p.first_delay_s("m") == pytest.approx(3.1)


def test_the_margin_narrows_while_first_polls_hit_and_widens_when_they_miss():
    c = PacerConfig(min_samples=1, quantile=1.0, margin_s=0.2, margin_frac=0.0, margin_step_s=0.2)
    p = PollPacer(c)
    p.seed("m", [3.0] * 10)
    assert p.margin_s("m") == pytest.approx(0.2)  # the configured rule to start with
    for _ in range(10):
        p.first_poll("m", hit=True)
    assert p.margin_s("m") == pytest.approx(0.2 - 10 * c.target_miss_rate * 0.2)
    for _ in range(100):
        p.first_poll("m", hit=True)
    assert p.margin_s("m") == c.margin_floor_s  # tight completion times: never below the floor
    assert p.first_delay_s("m") == pytest.approx(3.0 + c.margin_floor_s)
    p.first_poll("m", hit=False)  # a miss costs that task min_interval_s: the margin widens at once
    assert p.margin_s("m") == pytest.approx(c.margin_floor_s + (1 - c.target_miss_rate) * 0.2)
    # at the target miss rate the margin stays where it is (one miss in 1 / rate first polls)
    before = p.margin_s("m")
    n = round(1 / c.target_miss_rate)
    for i in range(n):
        p.first_poll("m", hit=i != 0)
    assert p.margin_s("m") == pytest.approx(before)
    assert p.margin_s("unseen") is None
    p.first_poll("unseen", hit=True)  # nothing known: nothing to steer
    assert p.margin_s("unseen") is None


def test_a_model_nobody_has_timed_is_probed_at_staggered_moments():
    c = PacerConfig(probes=4, probe_first_s=0.5, min_interval_s=2.0, margin_s=0.2, margin_frac=0.0)
    p = PollPacer(c)
    assert p.probing("m")
    assert [p.probe_delay_s(i) for i in range(5)] == pytest.approx([0.5, 1.0, 1.5, 2.0, 0.5])
    # between the probes' first polls and their 2 s spacing, every 0.5 s of the task's life is looked at
    assert p.follower_wait_s("m") == c.max_first_s  # no prior: followers wait for a probe's sample
    assert p.follower_delay_s("m", 1.0) == 0.0  # woken with nothing known (the probes failed): poll now
    p.observe("m", 3.0)
    assert not p.probing("m")
    # a follower accepted 1 s after the probe: its first poll at 3.0 s + margin from its own acceptance
    assert p.follower_delay_s("m", 2.0) == pytest.approx(1.0 + 0.2)
    assert p.follower_delay_s("m", 9.0) == 0.0  # already past it
    assert not PollPacer(PacerConfig(probes=0)).probing("m")  # probing off


def test_a_prior_bounds_how_long_followers_wait():
    p = PollPacer(PacerConfig(margin_s=0.0, margin_frac=0.0, prior_fraction=0.5), priors={"m": 8.0})
    assert p.probing("m") and p.follower_wait_s("m") == pytest.approx(4.0)


def test_one_early_sample_times_the_followers_until_enough_samples_exist():
    p = PollPacer(PacerConfig(min_samples=3, margin_s=0.2, margin_frac=0.0), priors={"m": 60.0})
    p.observe("m", 3.0)
    # the followers of the first wave trust what a probe saw, not the catalogue's 60 s
    assert p.follower_delay_s("m", 0.0) == pytest.approx(3.2)
    p.observe("m", 4.0)
    assert p.follower_delay_s("m", 0.0) == pytest.approx(4.2)  # the slowest seen so far


@pytest.mark.parametrize(
    "kw",
    [
        {"min_interval_s": -1},
        {"quantile": 0},
        {"quantile": 1.5},
        {"window": 0},
        {"margin_s": -0.1},
        {"probes": -1},
        {"target_miss_rate": 0},
        {"target_miss_rate": 1},
        {"margin_floor_s": -0.01},
    ],
)
def test_bad_configuration_is_a_clear_error(kw):
    with pytest.raises(InvalidInputError):
        PacerConfig(**kw)


def test_the_engine_seeds_each_pacer_with_the_catalogue_prior_and_earlier_runs(catalog):
    from evalkit.engine.runner import _seed_pacers

    ultra = catalog.get("nano-banana-pro-edit-ultra")
    qwen = catalog.get("qwen-edit")
    assert ultra.typical_latency_s == 120.0 and qwen.typical_latency_s is None

    class Store:
        def completion_times(self, model_id, limit=256, simulated=None):
            return [4.0, 4.0, 4.0, 5.0] if model_id == "qwen-edit" else []

    class Provider:
        base_url = "https://api.wavespeed.ai"

        def __init__(self):
            self.pacer = PollPacer(PacerConfig(quantile=1.0, margin_s=0.0, margin_frac=0.0, min_samples=3))

    class Plain:  # a provider without a pacer is left alone
        pass

    p = Provider()
    _seed_pacers(Store(), {"wavespeed": p, "local": Plain()}, [ultra, qwen])
    assert p.pacer.first_delay_s("nano-banana-pro-edit-ultra") == 60.0  # half the prior: nothing seen yet
    assert p.pacer.first_delay_s("qwen-edit") == 5.0  # earlier runs' completion times
    local = Provider()
    local.base_url = "http://127.0.0.1:8765"  # a simulator is not the real model: no catalogue prior
    _seed_pacers(Store(), {"wavespeed": local}, [ultra])
    assert local.pacer.first_delay_s("nano-banana-pro-edit-ultra") == local.pacer.config.fallback_first_s


def test_a_bad_typical_latency_is_a_catalogue_error():
    from evalkit.catalog.spec import parse_model
    from evalkit.errors import EvalkitError

    raw = {
        "id": "m",
        "provider": "wavespeed",
        "endpoint": "a/b",
        "operations": ["general_edit"],
        "price": {"kind": "flat", "usd": 0.01},
        "inputs": {"param": "image"},
        "typical_latency_s": -3,
    }
    with pytest.raises(EvalkitError, match="typical_latency_s"):
        parse_model(raw, "test")
    assert parse_model({**raw, "typical_latency_s": 7}, "test").typical_latency_s == 7.0
