"""Every shipped profile loads, and a wrong profile is refused with a reason."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from drivers.simulated.profile import Profile, ReadingSource, load_profile, profile_names


def test_every_profile_loads() -> None:
    names = profile_names()
    assert {"household_electricity", "household_water"} <= set(names)
    for name in names:
        profile = load_profile(name)
        assert any(r.source is ReadingSource.COUNTER for r in profile.readings), name


def test_unknown_profile_is_a_key_error() -> None:
    with pytest.raises(KeyError):
        load_profile("no_such_profile")


def good() -> dict[str, Any]:
    return {
        "description": "test",
        "demand": {"unit": "W", "mean": 100, "hourly": [1.0] * 24, "noise": 0.1},
        "readings": [
            {"name": "energy", "source": "counter", "unit": "kWh", "per_demand_hour": 0.001},
            {"name": "power", "source": "demand", "unit": "W"},
            {"name": "voltage", "source": "steady", "unit": "V", "value": 230},
            {"name": "current", "source": "quotient", "unit": "A", "divisor": "voltage"},
        ],
    }


def refused(doc: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as info:
        Profile.model_validate(doc)
    return str(info.value)


def test_a_good_profile_validates() -> None:
    Profile.model_validate(good())


def test_hourly_needs_24_factors() -> None:
    doc = good()
    doc["demand"]["hourly"] = [1.0] * 23
    assert "at least 24 items" in refused(doc)


def test_noise_that_could_make_demand_negative_is_refused() -> None:
    doc = good()
    doc["demand"]["hourly"] = [0.0] + [1.0] * 23
    assert "can push demand below zero" in refused(doc)


def test_readings_need_the_fields_of_their_source() -> None:
    doc = good()
    del doc["readings"][0]["per_demand_hour"]
    assert "a counter reading needs per_demand_hour" in refused(doc)
    doc = good()
    doc["readings"][1]["value"] = 3
    assert "a demand reading has no value" in refused(doc)


def test_quotient_divides_by_a_steady_reading() -> None:
    doc = good()
    doc["readings"][3]["divisor"] = "power"
    assert "divides by 'power', not a steady reading" in refused(doc)


def test_a_meter_profile_needs_a_counter() -> None:
    doc = good()
    del doc["readings"][0]
    assert "needs at least one counter reading" in refused(doc)


def test_demand_reading_is_in_the_demand_unit() -> None:
    doc = good()
    doc["readings"][1]["unit"] = "kWh"
    assert "its unit is W" in refused(doc)
