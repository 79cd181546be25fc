"""The pure mapping code: state changes and actions to events, availability payloads."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from drivers.zigbee2mqtt.mapping import (
    Availability,
    DeviceState,
    Mapping,
    Problem,
    ProblemKind,
    load_mapping,
    mapping_names,
    parse_availability,
)
from gateway.model import EventType

E = EventType


def events(state: DeviceState, doc: Any, retained: bool = False) -> list[EventType]:
    found, problems = state.apply(json.dumps(doc).encode(), retained=retained)
    assert not problems, problems
    return [f.event for f in found]


def test_every_mapping_loads_and_the_kind_defaults_exist() -> None:
    assert {"smoke", "sos_button", "door"} <= set(mapping_names())
    assert E.SMOKE_ALARM in load_mapping("smoke").events
    assert E.ELDERLY_SOS in load_mapping("sos_button").events
    assert {E.DOOR_OPENED, E.DOOR_CLOSED} <= load_mapping("door").events


def test_state_keys_give_events_only_when_they_change() -> None:
    s = DeviceState(load_mapping("smoke"))
    quiet = {"battery_low": False, "tamper": False, "linkquality": 120}
    assert events(s, {"smoke": False, **quiet}) == [E.SMOKE_CLEARED]
    assert events(s, {"smoke": False, **quiet, "linkquality": 60}) == []
    assert events(s, {"smoke": True, **quiet}) == [E.SMOKE_ALARM]
    assert events(s, {"smoke": True, **quiet}) == []
    assert events(s, {"linkquality": 10}) == []  # a partial report keeps the known state
    assert events(s, {"smoke": True, "battery_low": True, "tamper": False}) == [
        E.DEVICE_BATTERY_LOW
    ]
    assert events(s, {"smoke": False, "battery_low": False, "tamper": True}) == [
        E.SMOKE_CLEARED,
        E.DEVICE_TAMPER,
    ]
    assert events(s, {"smoke": None}) == []  # zigbee2mqtt's null: unknown, not a change


def test_actions_give_an_event_every_time_but_not_when_replayed() -> None:
    s = DeviceState(load_mapping("sos_button"))
    assert events(s, {"action": "emergency"}) == [E.ELDERLY_SOS]
    assert events(s, {"action": "emergency"}) == [E.ELDERLY_SOS]
    assert events(s, {"action": ""}) == []
    assert events(s, {"action": "double"}) == []  # a press the mapping does not know
    assert events(s, {"action": "sos"}, retained=True) == []


def test_door_contact() -> None:
    s = DeviceState(load_mapping("door"))
    assert events(s, {"contact": True}) == [E.DOOR_CLOSED]
    assert events(s, {"contact": False}) == [E.DOOR_OPENED]
    assert events(s, {"contact": False}) == []
    assert events(s, {"contact": True}) == [E.DOOR_CLOSED]


@pytest.mark.parametrize(
    ("payload", "kind"),
    [
        (b'{"smoke": tru', ProblemKind.MALFORMED),
        (b"", ProblemKind.MALFORMED),
        (b"\xff\xfe", ProblemKind.MALFORMED),
        (b"[true]", ProblemKind.MALFORMED),
        (b'"smoke"', ProblemKind.MALFORMED),
        (b'{"smoke": "yes"}', ProblemKind.UNEXPECTED_TYPE),
        (b'{"smoke": 1}', ProblemKind.UNEXPECTED_TYPE),  # 1 is not true
        (b'{"smoke": {"on": true}}', ProblemKind.UNEXPECTED_TYPE),
    ],
)
def test_bad_payloads_are_problems_and_change_nothing(payload: bytes, kind: ProblemKind) -> None:
    s = DeviceState(load_mapping("smoke"))
    found, problems = s.apply(payload)
    assert found == [] and [p.kind for p in problems] == [kind]
    assert s.last == {}


def test_an_action_of_the_wrong_type_is_a_problem() -> None:
    found, problems = DeviceState(load_mapping("sos_button")).apply(b'{"action": true}')
    assert found == [] and [p.kind for p in problems] == [ProblemKind.UNEXPECTED_TYPE]


scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
json_values = (
    scalars | st.sampled_from(["", "emergency", "sos", "yes"]) | st.lists(scalars, max_size=2)
)
keys = st.sampled_from(["smoke", "battery_low", "tamper", "contact", "action", "linkquality", "x"])


@given(st.binary(max_size=300))
def test_no_bytes_make_apply_raise(payload: bytes) -> None:
    for name in mapping_names():
        mapping = load_mapping(name)
        found, problems = DeviceState(mapping).apply(payload)
        assert all(isinstance(p, Problem) for p in problems)
        assert {f.event for f in found} <= mapping.events
    assert isinstance(parse_availability(payload), Availability | Problem)


@given(st.lists(st.dictionaries(keys, json_values, max_size=5), max_size=5))
def test_no_json_object_makes_apply_raise_and_states_only_fire_on_change(
    docs: list[dict[str, Any]],
) -> None:
    s = DeviceState(load_mapping("smoke"))
    for doc in docs:
        payload = json.dumps(doc).encode()
        s.apply(payload)
        again, _ = s.apply(payload)  # the same report twice: never an event the second time
        assert again == []


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b'{"state": "online"}', Availability.ONLINE),
        (b'{"state":"offline"}', Availability.OFFLINE),
        (b"online", Availability.ONLINE),
        (b"offline\n", Availability.OFFLINE),
    ],
)
def test_availability_formats(payload: bytes, expected: Availability) -> None:
    assert parse_availability(payload) is expected


@pytest.mark.parametrize(
    "payload", [b"maybe", b'{"state": "gone"}', b"{", b"[]", b'{"state": true}']
)
def test_bad_availability_is_malformed(payload: bytes) -> None:
    got = parse_availability(payload)
    assert isinstance(got, Problem) and got.kind is ProblemKind.MALFORMED


def refused(doc: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as info:
        Mapping.model_validate(doc)
    return str(info.value)


def test_wrong_mappings_are_refused() -> None:
    assert "at least one" in refused({"description": "x"})
    assert "both a state and an action" in refused(
        {
            "description": "x",
            "state": {"a": {True: "smoke.alarm"}},
            "actions": {"a": {"b": "elderly.sos"}},
        }
    )
    assert "mixes boolean and text" in refused(
        {"description": "x", "state": {"a": {True: "smoke.alarm", "on": "smoke.alarm"}}}
    )
    assert "smoke.fire" in refused({"description": "x", "state": {"a": {True: "smoke.fire"}}})
