"""Every shipped profile loads, and a wrong profile is refused with a reason."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from drivers.serial_line.profile import Profile, load_profile, profile_names


def test_every_profile_loads() -> None:
    assert {"rf433_text", "ev1527_kv"} <= set(profile_names())
    for name in profile_names():
        profile = load_profile(name)
        assert profile.rules and profile.dedupe_s > 0, name


def test_unknown_profile_is_a_key_error() -> None:
    with pytest.raises(KeyError):
        load_profile("no_such_profile")


def good() -> dict[str, Any]:
    return {
        "description": "test",
        "code_pattern": "[0-9A-F]{6}",
        "rules": [
            {"match": "^RX (?P<code>\\w+) (?P<fn>\\w+)$", "functions": {"SOS": "elderly.sos"}}
        ],
    }


def refused(doc: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as info:
        Profile.model_validate(doc)
    return str(info.value)


def test_the_good_profile_is_accepted() -> None:
    Profile.model_validate(good())


def test_a_rule_without_a_code_group_is_refused() -> None:
    doc = good()
    doc["rules"][0]["match"] = "^RX (?P<fn>\\w+)$"
    assert "no named group (?P<code>" in refused(doc)


def test_functions_without_an_fn_group_are_refused() -> None:
    doc = good()
    doc["rules"][0]["match"] = "^RX (?P<code>\\w+)$"
    assert "no named group (?P<fn>" in refused(doc)


def test_a_rule_needs_exactly_one_of_event_or_functions() -> None:
    doc = good()
    doc["rules"][0]["event"] = "elderly.sos"
    assert "exactly one of" in refused(doc)


def test_an_unknown_event_is_refused() -> None:
    doc = good()
    doc["rules"][0]["functions"] = {"SOS": "elderly.help"}
    assert "elderly.help" in refused(doc)


def test_a_broken_regex_is_refused() -> None:
    doc = good()
    doc["ignore"] = ["^(OK"]
    assert "invalid regular expression" in refused(doc)
