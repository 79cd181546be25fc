"""Checks across devices that several drivers make alike, for `DriverInfo.check_devices`.

Devices that share a line (a serial port, a receiver, a broker) take its settings from
the first of them, and each identity on it (an address, a code, a name) belongs to one
device.  `SharedLine` collects the problems, worded the same for every driver.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field

from gateway.sdk.driver import DeviceProblem, DeviceSpec

__all__ = ["SharedLine"]


@dataclass
class SharedLine:
    """The devices of one driver grouped by what they share; `problems` lists the clashes.

    `noun` names the shared thing in messages ("receiver", "bus").
    """

    noun: str
    problems: list[DeviceProblem] = field(default_factory=list)
    _first: dict[Hashable, tuple[DeviceSpec, Mapping[str, object]]] = field(default_factory=dict)
    _owners: dict[tuple[Hashable, str, Hashable], str] = field(default_factory=dict)

    def settings(self, spec: DeviceSpec, place: str, values: Mapping[str, object]) -> None:
        """Each of `values` (key path -> value) must equal the first device's on `place`."""
        first, theirs = self._first.setdefault(place, (spec, values))
        for key, value in values.items():
            if value != theirs[key]:
                self.problems.append(
                    DeviceProblem(
                        spec.id,
                        tuple(key.split(".")),
                        f"{key} is {value}, but {first.id} on the same {self.noun} ({place}) "
                        f"has {theirs[key]}; devices on one {self.noun} share its settings",
                    )
                )

    def claim(
        self,
        spec: DeviceSpec,
        place: str,
        key: str,
        value: Hashable,
        hint: str,
        *,
        path: str | None = None,
    ) -> None:
        """`value` of `key` belongs to one device on `place`; a second claim names both.

        Either device could be the one answering (or pressed), so both are in conflict.
        `path` is the setting holding it, when not `key` (a door's `rex_line` is a line).
        """
        other = self._owners.setdefault((place, key, value), spec.id)
        if other != spec.id:
            self.problems.append(
                DeviceProblem(
                    spec.id,
                    tuple((path or key).split(".")),
                    f"{key} {value} is also {other}'s on the {self.noun} {place}; {hint}",
                    also=(other,),
                )
            )
