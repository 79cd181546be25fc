"""Checks across devices that several drivers make alike, for `DriverInfo.check_devices`.

Devices that share a line (a serial port, a receiver, a broker) take its settings from
the first of them, and each identity on it (an address, a code, a name) belongs to one
device.  `SharedLine` collects the problems, worded the same for every driver.
Across drivers, a serial port is opened by one driver only (`serial_port_clashes`, from
what each driver declares in `DriverInfo.serial_ports`).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from gateway.sdk.driver import (
    DeviceCheck,
    DeviceProblem,
    DeviceSpec,
    DriverContext,
    DriverInfo,
    SerialPortUse,
)

__all__ = ["SharedLine", "admit", "serial_port_clashes", "serial_port_users"]


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


def serial_port_users(
    specs: Sequence[DeviceSpec], drivers: Mapping[str, DriverInfo]
) -> dict[str, list[tuple[DeviceSpec, SerialPortUse]]]:
    """Each serial port the devices open (as declared by their drivers), with its users."""
    users: dict[str, list[tuple[DeviceSpec, SerialPortUse]]] = {}
    for spec in specs:
        info = drivers.get(spec.driver)
        if info is None:
            continue
        for use in info.serial_ports_of(spec):
            users.setdefault(use.path, []).append((spec, use))
    return users


def serial_port_clashes(
    specs: Sequence[DeviceSpec], drivers: Mapping[str, DriverInfo]
) -> list[DeviceProblem]:
    """Devices whose port a device of another driver opens first.

    Every driver opens its port exclusively, so the second driver's open always fails.
    The device named first in the config keeps the port: the clash is the other's alone.
    """
    problems: list[DeviceProblem] = []
    for path, users in serial_port_users(specs, drivers).items():
        first, _ = users[0]
        for spec, use in users[1:]:
            if spec.driver != first.driver:
                problems.append(
                    DeviceProblem(
                        spec.id,
                        use.key,
                        f"{path} is also the serial port of {first.id} (driver "
                        f"{first.driver}); a port is opened by one driver only: give each "
                        "bus its own adapter",
                    )
                )
    return problems


def admit(
    driver: str, devices: Iterable[DeviceSpec], check: DeviceCheck, ctx: DriverContext
) -> tuple[list[DeviceSpec], list[DeviceProblem]]:
    """The devices `check` finds in no conflict, and the problems it found.

    `gateway validate` refuses such a config and `gateway run` leaves those devices out
    before a driver sees them (docs/config.md); this is for a driver given its devices
    some other way (a test, a library user), which must still not mix two meters up.
    The device named first keeps its place: only each problem's own device is refused,
    logged and published unavailable with the reason.
    """
    specs = list(devices)
    problems = check(specs, specs)
    refused: dict[str, str] = {}
    for p in problems:
        refused.setdefault(p.device_id, p.message)
    for device_id, reason in refused.items():
        ctx.logger.error("%s device %s not used: %s", driver, device_id, reason)
        ctx.set_available(device_id, False, reason)
    return [s for s in specs if s.id not in refused], problems
