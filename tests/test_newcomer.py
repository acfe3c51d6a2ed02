"""A real user's first day (issue 13): one provider key, their own images, `--models all`, `evalkit doctor`."""

from __future__ import annotations

import pytest

from evalkit.catalog import Catalog
from evalkit.providers.availability import has_key, select_models

OTHER_KEYS = ("STABILITY_API_KEY", "HF_TOKEN", "EVALKIT_JUDGE_API_KEY")


def test_all_means_the_models_you_can_call() -> None:
    cat = Catalog.load()
    sel = select_models(cat, "all", env={"WAVESPEED_API_KEY": "k"})
    assert {m.provider for m in sel.models} == {"wavespeed", "local"}
    assert sel.left_out == {"stability": "STABILITY_API_KEY", "huggingface": "HF_TOKEN"}
    assert "export STABILITY_API_KEY" in sel.note() and "export HF_TOKEN" in sel.note()
    # no key at all: the offline baselines still run
    assert {m.provider for m in select_models(cat, "all", env={}).models} == {"local"}
    # a key given in the provider options (the demo, tests) counts like one in the environment
    sel = select_models(cat, None, {"huggingface": {"token": "t"}}, env={})
    assert "huggingface" in {m.provider for m in sel.models} and "huggingface" not in sel.left_out
    # naming models is explicit: nothing is dropped here (the runner then reports the missing key)
    assert {m.provider for m in select_models(cat, "provider:stability", env={}).models} == {"stability"}
    assert select_models(cat, "qwen-edit,identity", env={}).left_out == {}
    assert has_key("some-third-party", env={})
