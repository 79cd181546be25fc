"""Communication faults, what an installer should check for each, and a device's health.

Pure code.  `DeviceHealth` counts consecutive failed polls: the device goes offline at
`offline_after`, is retried with a doubling delay from then on, and comes back online at
the first successful poll.  It also remembers which faults were already logged, so a
meter that stays dead is logged once, not on every poll.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from gateway.sdk.backoff import doubled

__all__ = [
    "EXCEPTION_NAMES",
    "DeviceHealth",
    "Fault",
    "FaultKind",
    "LinkFault",
    "Transition",
    "hint_for",
]


class FaultKind(StrEnum):
    """Why a request got no usable reply."""

    NO_RESPONSE = "no_response"  # nothing came back before the timeout
    GARBLED = "garbled"  # bytes came back but no valid frame: CRC error, noise
    EXCEPTION = "exception"  # the device answered with a Modbus exception code
    PORT = "port"  # the serial port cannot be opened, or the TCP connection failed


EXCEPTION_NAMES = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    5: "acknowledge (busy with a long command)",
    6: "server device busy",
    10: "gateway path unavailable",
    11: "gateway target device failed to respond",
}

_EXCEPTION_HINTS = {
    1: "the device does not read this table: check the profile matches the device model",
    2: "the device has no such register: check the profile matches the model and firmware, "
    "or lower max_gap so reads do not span registers the device lacks",
    3: "the read is longer than the device accepts: lower the profile's max_registers_per_read",
    4: "the device reported an internal error: power-cycle it",
    5: "the device is busy: raise poll_interval_s",
    6: "the device is busy: raise poll_interval_s",
    10: "the Modbus gateway has no route to this unit id: check the gateway's serial settings",
    11: "the Modbus gateway got no reply from this unit id: check its RS-485 wiring (A/B), "
    "baud rate, the unit id and termination",
}


def hint_for(kind: FaultKind, *, serial: bool, code: int | None = None) -> str:
    """What the installer should check for a fault of this kind on this transport."""
    if kind is FaultKind.EXCEPTION:
        return _EXCEPTION_HINTS.get(code or 0, "see the device manual for this exception code")
    if kind is FaultKind.GARBLED:
        return (
            "replies arrive corrupted (CRC errors): check baud rate and parity match the "
            "device, 120 Ω termination at both ends of the bus only, shielded twisted pair "
            "with short stubs, and that no second master polls the bus"
            if serial
            else "replies arrive malformed: check the framer (socket for Modbus TCP, rtu for "
            "RTU over TCP serial servers) and the serial server's settings"
        )
    if kind is FaultKind.PORT:
        return (
            "check the USB-RS485 adapter is plugged in, the port name (ls /dev/serial/by-id/), "
            "and that the gateway's user may open it (group dialout)"
            if serial
            else "check the host address and port (502 by default), the network, any firewall, "
            "and that the device is powered"
        )
    return (
        "check wiring (A to A, B to B; swap them if no device answers), baud rate and "
        "parity match the device, the unit id matches its address, the device is powered, "
        "and 120 Ω termination at both ends of the bus"
        if serial
        else "check the device is powered and reachable, and the unit id (a TCP-to-RS485 "
        "gateway forwards by unit id: then check its serial side as well)"
    )


@dataclass(frozen=True, slots=True)
class Fault:
    """One failed request: its kind, the exact detail, and what to check."""

    kind: FaultKind
    detail: str
    hint: str
    code: int | None = None

    @property
    def key(self) -> str:
        """Faults with the same key are logged once until the device recovers."""
        return f"{self.kind}:{self.code}" if self.code is not None else str(self.kind)


class LinkFault(Exception):
    """Raised by the link for a request that got no usable reply."""

    def __init__(self, fault: Fault) -> None:
        super().__init__(fault.detail)
        self.fault = fault


class Transition(StrEnum):
    """A change of a device's availability."""

    ONLINE = "online"
    OFFLINE = "offline"


@dataclass(slots=True)
class DeviceHealth:
    """Consecutive failures, availability, retry delay, and what was already logged."""

    offline_after: int
    poll_interval_s: float
    backoff_max_s: float
    online: bool | None = None  # None until the first poll settles it
    failures: int = 0
    logged: set[str] = field(default_factory=set)

    def success(self) -> Transition | None:
        """Record a poll that got data; ONLINE if the device was offline or unknown."""
        self.failures = 0
        was, self.online = self.online, True
        return None if was is True else Transition.ONLINE

    def failure(self) -> Transition | None:
        """Record a poll that got no data; OFFLINE when it is the offline_after'th in a row."""
        self.failures += 1
        if self.failures >= self.offline_after and self.online is not False:
            self.online = False
            return Transition.OFFLINE
        return None

    def next_delay(self) -> float:
        """Seconds until the next poll: the interval, doubling once offline, up to the cap."""
        if self.failures < self.offline_after:
            return self.poll_interval_s
        cap = max(self.poll_interval_s, self.backoff_max_s)
        return doubled(self.poll_interval_s, cap, self.failures - self.offline_after + 1)

    def first_time(self, key: str) -> bool:
        """True the first time `key` is seen since the device last recovered."""
        if key in self.logged:
            return False
        self.logged.add(key)
        return True

    def clear_logged(self) -> set[str]:
        """Forget the logged faults (the device recovered); returns what was logged."""
        done, self.logged = self.logged, set()
        return done
