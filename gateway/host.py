"""What a feature sees of the running gateway: the narrow extension interface.

A feature (alarms, web, wellness, the SMS notifier, the sinks' health) is given a `Host`
and plugs itself in through it: it observes the messages once they are durable, runs a
long-lived service, answers a command family, puts documents into the outbox, looks
devices up (and hears when remote configuration changes them), commands a device's
outputs, adds a part to the health message, reads the health message and restarts one
driver (remote diagnostics).  It
never sees the `Gateway` object, so a feature can be built and tested without one, and
no import cycle runs between the runtime and its features.

`gateway.process.runtime.Gateway` implements `Host`; `Hooks` is the part of it that
keeps what features registered, usable by any other host (a test, a bench).

May import: `gateway.sdk`, `gateway.config`, `gateway.storage`, `gateway.mqtt`, and
`community_protocol` (the topic tree).
Imported by: the feature packages and `gateway.process`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from community_protocol.topics import Topics
from gateway.config import GatewayConfig, LoadedConfig
from gateway.mqtt.commands import CommandRouter, Handler
from gateway.sdk.clock import Clock
from gateway.sdk.driver import DeviceSpec
from gateway.sdk.model import DeviceRef, Message
from gateway.storage.outbox import Outbox

__all__ = [
    "AvailabilityObserver",
    "DevicesObserver",
    "HealthPart",
    "Hooks",
    "Host",
    "MessageObserver",
    "Service",
    "TopicWatcher",
]

# Called on the event loop after a message is durable in the outbox (telemetry: once
# handed to it).  Must not block: slow work goes to a task or a thread.
MessageObserver = Callable[[Message], None]
# A device became available (True), unavailable (False) or unknown (None), with why.
AvailabilityObserver = Callable[[DeviceRef, bool | None, str], None]
# Called on the event loop once a remote change of devices runs (`apply_devices`), with
# every device now configured: a feature that shows or watches devices reads the list
# here instead of keeping the one it was started with.  Must not block.
DevicesObserver = Callable[[Sequence[DeviceSpec]], None]
# A long-running part of the gateway besides the drivers, started after the uplink and
# cancelled before it stops (same order as the drivers); restarted if it crashes.
Service = Callable[[], Awaitable[None]]
# Builds one part of the health message (its key is the part's name).
HealthPart = Callable[[], dict[str, Any]]
# Called in the uplink's thread with the payload of a message on a watched topic; must
# not block (hand the work to the event loop).
TopicWatcher = Callable[[bytes], None]

log = logging.getLogger(__name__)


class Host(Protocol):
    """The capabilities a running gateway offers its features, and nothing more.

    Register everything before the host runs: services are started once, with the
    drivers.  `emit` and `command_device` are for use once it runs.
    """

    @property
    def config(self) -> GatewayConfig:
        """The validated config (features read their own section)."""
        ...

    @property
    def devices(self) -> Sequence[DeviceSpec]:
        """Every configured device."""
        ...

    def device(self, device_id: str) -> DeviceSpec:
        """The device `device_id`; KeyError when it is not configured."""
        ...

    @property
    def loaded(self) -> LoadedConfig:
        """The config and devices as they run (remote configuration compares a candidate)."""
        ...

    @property
    def driver_failures(self) -> Mapping[str, str]:
        """Each driver's last crash or refused start, by driver name, in one line."""
        ...

    async def apply_devices(self, loaded: LoadedConfig, drivers: set[str]) -> None:
        """Run `loaded`'s devices: the `drivers` named restart on their new devices, alone.

        Only for a config whose devices alone differ from the running one.
        """
        ...

    @property
    def topics(self) -> Topics:
        """This gateway's topic tree."""
        ...

    @property
    def clock(self) -> Clock:
        """Whether the wall clock can be trusted, uptime and boot id for documents."""
        ...

    @property
    def outbox(self) -> Outbox:
        """The durable outbox, for documents a feature publishes itself (alarm states)."""
        ...

    def add_message_observer(self, observer: MessageObserver) -> None:
        """Call `observer` with every message once it is durable."""
        ...

    def add_availability_observer(self, observer: AvailabilityObserver) -> None:
        """Call `observer` when a device's availability changes."""
        ...

    def add_devices_observer(self, observer: DevicesObserver) -> None:
        """Call `observer` with the new device list whenever the configured devices change."""
        ...

    def add_service(self, name: str, service: Service) -> None:
        """Run `service` with the drivers, under `name`; ValueError if the name is taken."""
        ...

    def add_command_route(self, family: str, handler: Handler) -> None:
        """Answer the commands `cmd/{family}/...`; ValueError if the family is taken."""
        ...

    def add_health_part(self, name: str, part: HealthPart) -> None:
        """Add `part()` to every health message under `name`; ValueError if taken."""
        ...

    async def emit(self, message: Message, *, source: str = "") -> None:
        """Hand a message to the outbox, then to the observers (but not `source`'s own)."""
        ...

    @property
    def config_path(self) -> Path:
        """The config file the gateway runs (remote configuration replaces it)."""
        ...

    def watch(self, topic: str, watcher: TopicWatcher) -> None:
        """Subscribe to `topic` (one of this gateway's own, no wildcards) at every connection."""
        ...

    def publish_document(self, topic: str, payload: bytes) -> None:
        """Publish `payload` retained (QoS 1) now if connected, and again at every connection."""
        ...

    def broker_problem(self) -> str:
        """Why the last connection attempt to the broker failed; empty while it works."""
        ...

    def request_restart(self, reason: str) -> None:
        """Stop in order and start the process again on the config file as it is then."""
        ...

    def health_doc(self) -> dict[str, Any]:
        """The health message as it would be published now, every part included."""
        ...

    async def restart_driver(self, name: str) -> None:
        """Stop the driver `name` and start it afresh on its devices; the others run on.

        KeyError: no driver of that name is running.
        """
        ...

    async def command_device(self, device_id: str, command: str, args: Mapping[str, Any]) -> Any:
        """Run a device command (switch an output) through its driver; its result.

        KeyError: no such device; RuntimeError: its driver is not running; whatever
        the driver raises for a command it refuses.
        """
        ...


class Hooks:
    """What features registered with a host: observers, services, command routes, health."""

    def __init__(self, router: CommandRouter) -> None:
        self.router = router
        self.message_observers: list[MessageObserver] = []
        self.availability_observers: list[AvailabilityObserver] = []
        self.devices_observers: list[DevicesObserver] = []
        self.services: dict[str, Service] = {}
        self.health_parts: dict[str, HealthPart] = {}

    def add_message_observer(self, observer: MessageObserver) -> None:
        self.message_observers.append(observer)

    def add_availability_observer(self, observer: AvailabilityObserver) -> None:
        self.availability_observers.append(observer)

    def add_devices_observer(self, observer: DevicesObserver) -> None:
        self.devices_observers.append(observer)

    def add_service(self, name: str, service: Service) -> None:
        if name in self.services:
            raise ValueError(f"service {name!r} is added twice")
        self.services[name] = service

    def add_command_route(self, family: str, handler: Handler) -> None:
        self.router.register(family, handler)

    def add_health_part(self, name: str, part: HealthPart) -> None:
        if name in self.health_parts:
            raise ValueError(f"health part {name!r} is added twice")
        self.health_parts[name] = part

    def tell_observers(self, message: Message) -> None:
        """Give `message` to every message observer; one that raises is logged and skipped."""
        # A broken observer must not lose the driver its message (it is already stored)
        # nor stop the next observer.
        for observer in self.message_observers:
            try:
                observer(message)
            except Exception:
                log.exception("observer %r failed on a message of %s", observer, message.device.id)

    def observe_availability(self, ref: DeviceRef, available: bool | None, reason: str) -> None:
        """Give an availability change to every availability observer, likewise."""
        for observer in self.availability_observers:
            try:
                observer(ref, available, reason)
            except Exception:
                log.exception("availability observer %r failed on %s", observer, ref.id)

    def tell_devices(self, devices: Sequence[DeviceSpec]) -> None:
        """Give the new device list to every devices observer, likewise."""
        for observer in self.devices_observers:
            try:
                observer(devices)
            except Exception:
                log.exception("devices observer %r failed on the new device list", observer)

    def health_parts_doc(self) -> dict[str, Any]:
        """Every registered health part, built now."""
        return {name: part() for name, part in self.health_parts.items()}
