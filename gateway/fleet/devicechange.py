"""Applying a change to devices only, in the running process: which drivers it concerns.

Remote configuration (gateway.fleet.service) applies a candidate config in process,
without the exec restart, when the validated models differ in `devices:` only; then
only the drivers whose device lists changed are stopped and started again.  Anything
else (broker, identity, outbox, security, a feature's section) keeps the restart, with
one exception: the `wellness:` checks may change with the devices while the wellness
feature runs (a flat's alarm device removed with its check), because that feature
reads its checks again with every new device list.  The web console and the wellness
checks follow the devices through the host's device-list hook (`Host.add_devices_observer`;
docs/fleet.md, "What restarts").
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from gateway.config import LoadedConfig, load_config
from gateway.sdk.driver import DeviceSpec

__all__ = ["DeviceChange", "concerned_drivers", "device_change", "devices_only"]


def devices_only(running: LoadedConfig, candidate: LoadedConfig) -> bool:
    """True when `candidate` can be applied in process: only its devices differ."""
    old, new = running.config, candidate.config
    # Without checks at start the wellness feature is not attached: new checks need it.
    same = {"devices", "wellness"} if old.wellness.checks else {"devices"}
    return old.model_dump(exclude=same) == new.model_dump(exclude=same)


def _by_driver(devices: Iterable[DeviceSpec]) -> dict[str, list[DeviceSpec]]:
    out: dict[str, list[DeviceSpec]] = {}
    for spec in devices:
        out.setdefault(spec.driver, []).append(spec)
    return out


def concerned_drivers(running: LoadedConfig, candidate: LoadedConfig) -> set[str]:
    """The drivers whose devices (or their settings, or order) differ between the two."""
    old, new = _by_driver(running.devices), _by_driver(candidate.devices)
    return {name for name in old.keys() | new.keys() if old.get(name) != new.get(name)}


@dataclass(frozen=True, slots=True)
class DeviceChange:
    """A candidate applied in process: its devices, the drivers to restart, what to go back to."""

    candidate: LoadedConfig
    previous: LoadedConfig
    drivers: set[str]


def device_change(running: LoadedConfig, config: Path) -> DeviceChange | None:
    """The in-process change from `running` to the config file now at `config`, or None.

    None: the file does not load here, or more than devices differ (the process restarts).
    """
    try:
        candidate = load_config(config, allow_conflicts=True)
    except Exception:  # the restart's start judges it, as for any other candidate
        return None
    if not devices_only(running, candidate):
        return None
    return DeviceChange(candidate, running, concerned_drivers(running, candidate))
