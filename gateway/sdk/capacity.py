"""What a config asks the gateway to store per second, against what it can store.

Drivers that poll on a schedule say how many messages a device makes a second
(`DriverInfo.message_rate`).  The outbox takes readings without making a device wait,
but what a gateway can commit and publish is bounded: beyond it, readings are shed and
counted as dropped telemetry.  `gateway validate` warns before that happens.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from gateway.sdk.driver import DeviceSpec, DriverInfo

__all__ = ["STORABLE_PER_S", "configured_rate", "rate_warnings"]

# Messages a second a gateway stores and publishes for as long as it runs: 1,561/s
# measured end to end on the 2-core VM (docs/benchmarks.md, "(2) sustained"), rounded
# down for the SD card of a Raspberry Pi-class box.
STORABLE_PER_S = 1000.0


def configured_rate(devices: Sequence[DeviceSpec], drivers: Mapping[str, DriverInfo]) -> float:
    """Messages a second the devices make at their configured intervals (known ones)."""
    total = 0.0
    for spec in devices:
        info = drivers.get(spec.driver)
        if info is not None and info.message_rate is not None:
            total += info.message_rate(spec)
    return total


def rate_warnings(
    devices: Sequence[DeviceSpec],
    drivers: Mapping[str, DriverInfo],
    storable_per_s: float = STORABLE_PER_S,
) -> list[str]:
    """One line per problem: the devices ask for more than the gateway can store."""
    rate = configured_rate(devices, drivers)
    if rate <= storable_per_s:
        return []
    busiest = sorted(
        (-info.message_rate(spec), spec.id)
        for spec in devices
        if (info := drivers.get(spec.driver)) is not None and info.message_rate is not None
    )[:3]
    names = ", ".join(f"{device} {-rate_:g}/s" for rate_, device in busiest)
    return [
        f"the devices are polled for about {rate:.0f} messages/s, more than the"
        f" {storable_per_s:.0f}/s a gateway stores (docs/benchmarks.md): readings beyond that"
        f" are shed and counted as dropped telemetry; raise poll_interval_s (busiest: {names})"
    ]
