"""Alarm rules as data: which signals raise an alarm of which type and severity, which clear it.

A rule names the event types (or `offline`) that raise its alarm and the signals that
clear it: event types, `online`, or `ack` for a condition nobody can see end (a tamper
switch, an SOS pendant), which clears when a person acknowledges it.  A rule may be
limited to device kinds or device ids.  `DEFAULT_RULES` is what a gateway uses when its
config says nothing; the config's `alarms.rules` replaces a default of the same name or
adds a rule.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from community_protocol.enums import AlarmType, Severity
from gateway.sdk.model import EventType, Kind

__all__ = [
    "ACK",
    "DEFAULT_RULES",
    "OFFLINE",
    "ONLINE",
    "AlarmType",
    "Rule",
    "RuleSet",
    "Severity",
]

OFFLINE = "offline"  # raise signal: the device became unreachable
ONLINE = "online"  # clear signal: the device is reachable again
ACK = "ack"  # clear signal: a person acknowledged the alarm


_EVENTS = {str(e) for e in EventType}


def _check_signals(values: Sequence[str], extra: set[str], where: str) -> None:
    for v in values:
        if v not in _EVENTS and v not in extra:
            known = ", ".join(sorted(extra)) + " or an event type such as smoke.alarm"
            raise ValueError(f"{where}: {v!r} is not a signal ({known})")


class Rule(BaseModel):
    """One rule: `raise_on` signals open (or repeat) an alarm of `type` and `severity`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")
    type: AlarmType
    severity: Severity
    raise_on: tuple[str, ...] = Field(min_length=1)
    clear_on: tuple[str, ...] = Field(min_length=1)
    kinds: tuple[Kind, ...] | None = None  # None: every kind
    devices: tuple[str, ...] | None = None  # None: every device
    enabled: bool = True

    @field_validator("raise_on")
    @classmethod
    def _raise_on(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        _check_signals(value, {OFFLINE}, "raise_on")
        return value

    @field_validator("clear_on")
    @classmethod
    def _clear_on(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        _check_signals(value, {ONLINE, ACK}, "clear_on")
        return value

    @model_validator(mode="after")
    def _disjoint(self) -> Self:
        if both := sorted(set(self.raise_on) & set(self.clear_on)):
            raise ValueError(f"rule {self.name}: {', '.join(both)} both raises and clears")
        return self

    def applies_to(self, device_id: str, kind: Kind) -> bool:
        """Whether this rule looks at signals of that device."""
        if not self.enabled:
            return False
        if self.kinds is not None and kind not in self.kinds:
            return False
        return self.devices is None or device_id in self.devices

    @property
    def clears_on_ack(self) -> bool:
        return ACK in self.clear_on


def _rule(**fields: object) -> Rule:
    return Rule.model_validate(fields)


# The table.  Care and tamper alarms have no reliable "it is over" signal from
# the device, so the person who acknowledges them also clears them.
DEFAULT_RULES: tuple[Rule, ...] = (
    _rule(
        name="fire", type="fire", severity="critical",
        raise_on=["smoke.alarm"], clear_on=["smoke.cleared"],
    ),
    _rule(
        name="care", type="care", severity="critical",
        raise_on=["elderly.sos", "elderly.fall"], clear_on=["elderly.cleared", ACK],
    ),
    _rule(
        name="wellness", type="wellness", severity="high",
        raise_on=["elderly.inactivity"], clear_on=["elderly.cleared", ACK],
    ),
    _rule(
        name="door-forced", type="security", severity="high",
        raise_on=["door.forced"], clear_on=["door.closed"],
    ),
    _rule(
        name="door-held-open", type="security", severity="medium",
        raise_on=["door.held_open"], clear_on=["door.closed"],
    ),
    _rule(
        name="offline", type="maintenance", severity="low",
        raise_on=[OFFLINE], clear_on=[ONLINE],
    ),
    _rule(
        name="tamper", type="maintenance", severity="low",
        raise_on=["device.tamper"], clear_on=[ACK],
    ),
)  # fmt: skip


class RuleSet:
    """The rules in force: the defaults, with the config's rules replacing or adding."""

    def __init__(self, rules: Iterable[Rule]) -> None:
        self.rules: tuple[Rule, ...] = tuple(rules)

    @classmethod
    def merged(cls, overrides: Iterable[Rule], defaults: Iterable[Rule] = DEFAULT_RULES) -> Self:
        by_name = {r.name: r for r in defaults}
        for rule in overrides:
            by_name[rule.name] = rule
        return cls(by_name.values())

    def raising(self, signal: str, device_id: str, kind: Kind) -> Rule | None:
        """The first rule that raises an alarm on this signal of this device."""
        for rule in self.rules:
            if signal in rule.raise_on and rule.applies_to(device_id, kind):
                return rule
        return None

    def by_name(self, name: str) -> Rule | None:
        for rule in self.rules:
            if rule.name == name:
                return rule
        return None
