"""Zigbee mappings as data, and the pure code applying them to zigbee2mqtt messages.

A mapping (one YAML file in `profiles/`) names the keys of a device's zigbee2mqtt state
that become events: `state` keys give an event when their value changes (zigbee2mqtt
republishes the whole state on every report), `actions` keys give one every time.  An
action value mapped to `null` is explicitly no event (the `release` after a `hold`).
A mapping may list the action vocabulary of the real button models it is meant for
(`models:`, each with its source); every value of such a vocabulary must be decided in
the table, so a model's `double` or `hold` cannot be forgotten.

On a device of kind `elderly_alarm` every `action` value the mapping does not map
explicitly raises `elderly.sos`: a person in distress presses twice or holds, and a
button model nobody listed must not swallow that press.

Nothing here does I/O: `DeviceState.apply` takes the payload bytes and returns events,
problems and ignored actions, and never raises.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gateway.sdk.model import EventType, Kind
from gateway.sdk.profiles import ProfileLibrary

__all__ = [
    "DEFAULT_MAPPING",
    "PROFILE_DIR",
    "Applied",
    "Availability",
    "ButtonModel",
    "DeviceState",
    "Found",
    "Ignored",
    "Mapping",
    "Problem",
    "ProblemKind",
    "load_mapping",
    "mapping_names",
    "parse_availability",
]

PROFILE_DIR = Path(__file__).parent / "profiles"

DEFAULT_MAPPING = {Kind.SMOKE: "smoke", Kind.ELDERLY_ALARM: "sos_button", Kind.DOOR: "door"}

# zigbee2mqtt values are JSON booleans or strings; the table's keys say which.  A value
# mapped to None is explicitly no event.
Table = dict[bool | str, EventType | None]

# zigbee2mqtt's key for button presses, whatever the model.
ACTION_KEY = "action"


class ButtonModel(BaseModel):
    """The action values one real device model publishes, and where that list comes from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    vendor: str = Field(min_length=1)
    model: str = Field(min_length=1)
    key: str = ACTION_KEY
    values: list[str] = Field(min_length=1)
    source: str = Field(min_length=10, description="where the vocabulary was read")


class Mapping(BaseModel):
    """Which zigbee2mqtt keys of one device family become which events."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str = Field(min_length=1)
    state: dict[str, Table] = Field(default_factory=dict)
    actions: dict[str, Table] = Field(default_factory=dict)
    models: list[ButtonModel] = Field(default_factory=list)

    @model_validator(mode="after")
    def _sane(self) -> Self:
        if not self.state and not self.actions:
            raise ValueError("a mapping needs at least one `state` or `actions` key")
        if both := set(self.state) & set(self.actions):
            raise ValueError(f"{', '.join(sorted(both))} cannot be both a state and an action")
        for key, table in {**self.state, **self.actions}.items():
            if not table:
                raise ValueError(f"key {key!r} maps no value to an event")
            if len({type(v) for v in table}) > 1:
                raise ValueError(f"key {key!r} mixes boolean and text values")
        for m in self.models:
            undecided = [v for v in m.values if v not in self.actions.get(m.key, {})]
            if undecided:
                raise ValueError(
                    f"{m.vendor} {m.model} publishes {m.key} {', '.join(undecided)}, which "
                    f"the actions table does not decide (map each to an event or to null)"
                )
        return self

    @property
    def events(self) -> frozenset[EventType]:
        return frozenset(
            e
            for t in (*self.state.values(), *self.actions.values())
            for e in t.values()
            if e is not None
        )


_LIBRARY = ProfileLibrary(PROFILE_DIR, Mapping)


def mapping_names() -> tuple[str, ...]:
    """Names of the mappings shipped in `profiles/`, sorted."""
    return _LIBRARY.names


def load_mapping(name: str) -> Mapping:
    """The validated mapping `name`; KeyError if there is no such file."""
    return _LIBRARY.load(name)


class ProblemKind(StrEnum):
    """Why a message gave no event; each is logged once per topic and counted in health."""

    MALFORMED = "malformed"  # not JSON, or not the shape zigbee2mqtt publishes
    UNEXPECTED_TYPE = "unexpected_type"  # a mapped key with a value of another type


@dataclass(frozen=True, slots=True)
class Problem:
    kind: ProblemKind
    detail: str


@dataclass(frozen=True, slots=True)
class Ignored:
    """An action that gave no event, and why: counted in health and logged once."""

    key: str
    value: str
    why: str


@dataclass(frozen=True, slots=True)
class Found:
    """An event a message means, with what caused it."""

    event: EventType
    key: str
    value: bool | str


@dataclass(frozen=True, slots=True)
class Applied:
    """What one message meant: events, problems, and actions deliberately not events."""

    found: list[Found] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    ignored: list[Ignored] = field(default_factory=list)


_SHOWN = 60


def _shown(payload: bytes) -> str:
    text = payload.decode("utf-8", "backslashreplace")
    return repr(text[:_SHOWN] + ("…" if len(text) > _SHOWN else ""))


def _decode_object(payload: bytes) -> dict[str, Any] | Problem:
    try:
        doc = json.loads(payload)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return Problem(ProblemKind.MALFORMED, f"not JSON: {_shown(payload)}")
    if not isinstance(doc, dict):
        return Problem(ProblemKind.MALFORMED, f"not a JSON object: {_shown(payload)}")
    return doc


def _wrong_type(table: Table, key: str, value: Any) -> Problem | None:
    """A Problem if `value` is not of the type of the table's values (bool is not int)."""
    wanted = type(next(iter(table)))
    if type(value) is wanted:
        return None
    name = "true/false" if wanted is bool else "text"
    return Problem(
        ProblemKind.UNEXPECTED_TYPE, f"{key!r} is {_shown(repr(value).encode())}, expected {name}"
    )


@dataclass(slots=True)
class DeviceState:
    """The last known state of one device; turns each message into events on change.

    `fallback` is the event of an `action` value the mapping does not decide: the
    alarm on an `elderly_alarm` device, None (ignored, but counted) elsewhere.
    """

    mapping: Mapping
    fallback: EventType | None = None
    last: dict[str, bool | str] = field(default_factory=dict)

    def apply(self, payload: bytes, *, retained: bool = False) -> Applied:
        """Events, problems and ignored actions of one state message.

        The first value of a state key counts as a change: after a restart the
        platform learns the current state (an alarm still on is reported again).
        A retained message replays an old one, so its actions are not new presses.
        """
        doc = _decode_object(payload)
        if isinstance(doc, Problem):
            return Applied(problems=[doc])
        out = Applied()
        for key, table in self.mapping.state.items():
            value = doc.get(key)
            if value is None:
                continue
            if problem := _wrong_type(table, key, value):
                out.problems.append(problem)
                continue
            if self.last.get(key) == value:
                continue
            self.last[key] = value
            if (event := table.get(value)) is not None:
                out.found.append(Found(event, key, value))
        # Every device's `action` is looked at: a press that gives no event is reported.
        tables = {ACTION_KEY: {}, **self.mapping.actions}
        for key, table in tables.items():
            value = doc.get(key)
            if value is None or value == "":  # zigbee2mqtt clears `action` after a press
                continue
            self._action(out, key, table, value, retained)
        return out

    def _action(self, out: Applied, key: str, table: Table, value: Any, retained: bool) -> None:
        fallback = self.fallback if key == ACTION_KEY else None
        # An empty table (only the fallback) expects text, as zigbee2mqtt's actions are.
        if problem := _wrong_type(table or {"": None}, key, value):
            out.problems.append(problem)
            return
        if retained:
            out.ignored.append(Ignored(key, value, "retained: a replay of an old press"))
        elif value in table:
            if (event := table[value]) is None:
                out.ignored.append(Ignored(key, value, "mapped to no event"))
            else:
                out.found.append(Found(event, key, value))
        elif fallback is not None:
            out.found.append(Found(fallback, key, value))
        else:
            out.ignored.append(Ignored(key, value, "not in the mapping"))


class Availability(StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"


def parse_availability(payload: bytes) -> Availability | Problem:
    """`{"state": "online"}` (zigbee2mqtt 1.x with JSON availability, 2.x) or plain `online`."""
    text = payload.decode("utf-8", "replace").strip()
    if text in ("online", "offline"):
        return Availability(text)
    doc = _decode_object(payload)
    if isinstance(doc, Problem):
        return doc
    state = doc.get("state")
    if state in ("online", "offline"):
        return Availability(state)
    return Problem(
        ProblemKind.MALFORMED, f"availability is neither online nor offline: {_shown(payload)}"
    )
