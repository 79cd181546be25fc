"""The zigbee2mqtt driver: device state and availability from zigbee2mqtt's MQTT topics.

A device is *unknown* until zigbee2mqtt says something about it: its availability
topic, or a live state message.  Reporting it online at start would tell the platform
a smoke detector works before anything was heard from it.
"""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from drivers.zigbee2mqtt.client import (
    Connected,
    Disconnected,
    Inbound,
    Received,
    SubscriberClient,
)
from drivers.zigbee2mqtt.mapping import (
    Availability,
    DeviceState,
    Ignored,
    Problem,
    ProblemKind,
    parse_availability,
)
from drivers.zigbee2mqtt.settings import Zigbee2MqttSettings, check_devices
from gateway.sdk.devicechecks import admit
from gateway.sdk.driver import DeviceSpec, Driver, DriverContext, DriverHealth
from gateway.sdk.model import Event, EventType, Kind

__all__ = ["Zigbee2MqttDriver"]

# After an unexpected error while serving a broker, wait before starting again.
_RESTART_DELAY_S = 5.0
# Problems are logged once per topic and kind; bound the memory of what was logged.
_MAX_LOGGED = 1000

NOT_HEARD = "zigbee2mqtt has said nothing about it since the gateway started"
REPORTS_OFFLINE = "zigbee2mqtt reports it offline"


@dataclass(slots=True)
class _Device:
    spec: DeviceSpec
    state: DeviceState
    z2m_online: bool | None = None  # what zigbee2mqtt last said; None: it said nothing


@dataclass(slots=True)
class _Broker:
    """The devices served by one broker, by the topics zigbee2mqtt publishes them on."""

    host: str
    port: int
    state_topics: dict[str, _Device] = field(default_factory=dict)
    availability_topics: dict[str, _Device] = field(default_factory=dict)
    connected: bool = False
    reason: str = ""

    @property
    def subscriptions(self) -> list[str]:
        bases = {
            d.spec.settings_as(Zigbee2MqttSettings).base_topic for d in self.state_topics.values()
        }
        return [f"{base}/#" for base in sorted(bases)]


class Zigbee2MqttDriver(Driver):
    """Subscribes to zigbee2mqtt; one MQTT client per broker, shared by all its devices."""

    def __init__(self, devices: Sequence[DeviceSpec], ctx: DriverContext) -> None:
        super().__init__(devices, ctx)
        self._brokers: list[_Broker] = []
        self._online: dict[str, bool | None] = {}
        self._stats = DriverHealth(devices_total=len(devices))
        self._counts: Counter[str] = Counter()
        self._logged: set[tuple[str, str]] = set()

    async def run(self) -> None:
        specs, problems = admit("zigbee2mqtt", self.devices.values(), check_devices, self.ctx)
        for problem in problems:
            self._error(problem.message)
        by_broker: dict[tuple[str, int], list[DeviceSpec]] = defaultdict(list)
        for spec in specs:
            s = spec.settings_as(Zigbee2MqttSettings)
            by_broker[(s.host, s.port)].append(spec)
        async with asyncio.TaskGroup() as group:
            for (host, port), on_broker in by_broker.items():
                broker = self._broker(host, port, on_broker)
                self._brokers.append(broker)
                group.create_task(self._keep(broker), name=f"zigbee2mqtt {host}:{port}")
        await asyncio.Future()  # the contract: return only when cancelled

    def health(self) -> DriverHealth:
        s = self._stats
        s.devices_online = sum(1 for online in self._online.values() if online)
        s.extra = {
            "connected": sum(b.connected for b in self._brokers),
            **{k: self._counts[k] for k in ("messages", "events", "disconnects", "ignored")},
            **{str(k): self._counts[str(k)] for k in ProblemKind},
        }
        return s

    def _error(self, text: str) -> None:
        self._stats.errors += 1
        self._stats.last_error = text

    def _set(self, device: _Device, available: bool | None, reason: str = "") -> None:
        self._online[device.spec.id] = available
        self.ctx.set_available(device.spec.id, available, reason)

    def _show_z2m(self, device: _Device) -> None:
        """Report what zigbee2mqtt last said about the device (while connected)."""
        said = device.z2m_online
        reason = NOT_HEARD if said is None else "" if said else REPORTS_OFFLINE
        self._set(device, said, reason)

    def _broker(self, host: str, port: int, specs: list[DeviceSpec]) -> _Broker:
        broker = _Broker(host, port)
        for spec in specs:
            s = spec.settings_as(Zigbee2MqttSettings)
            topic = f"{s.base_topic}/{s.friendly_name}"
            # On an alarm pendant a press the mapping does not know is still a press.
            fallback = EventType.ELDERLY_SOS if spec.kind is Kind.ELDERLY_ALARM else None
            device = _Device(spec, DeviceState(s.profile, fallback))
            broker.state_topics[topic] = device
            broker.availability_topics[f"{topic}/availability"] = device
            # Replaces what the last run left retained on the platform's broker.
            self._set(device, None, f"connecting to zigbee2mqtt's broker at {host}:{port}")
        return broker

    async def _keep(self, broker: _Broker) -> None:
        # A bug met while handling one message must not end the alarms of every device.
        while True:
            client = SubscriberClient(broker.host, broker.port, broker.subscriptions)
            client.start()
            try:
                while True:
                    await self._handle(broker, await client.inbox.get())
            except asyncio.CancelledError:
                raise
            except Exception:
                self.ctx.logger.exception(
                    "zigbee2mqtt: serving %s:%d failed", broker.host, broker.port
                )
            finally:
                client.stop()
            await asyncio.sleep(_RESTART_DELAY_S)

    async def _handle(self, broker: _Broker, item: Inbound) -> None:
        if isinstance(item, Connected):
            if broker.reason:
                self.ctx.logger.info(
                    "zigbee2mqtt: connected to %s:%d again", broker.host, broker.port
                )
            broker.connected, broker.reason = True, ""
            # zigbee2mqtt's retained availability follows right after the subscription.
            for device in broker.state_topics.values():
                self._show_z2m(device)
        elif isinstance(item, Disconnected):
            if broker.connected:
                self._counts["disconnects"] += 1
            broker.connected = False
            self._error(item.reason)
            if item.reason != broker.reason:
                self.ctx.logger.warning("zigbee2mqtt: %s; retrying", item.reason)
                for device in broker.state_topics.values():
                    self._set(device, False, item.reason)
            broker.reason = item.reason
        else:
            await self._message(broker, item)

    async def _message(self, broker: _Broker, item: Received) -> None:
        self._counts["messages"] += 1
        if (device := broker.state_topics.get(item.topic)) is not None:
            if device.z2m_online is None and not item.retained:
                # zigbee2mqtt just heard from it (without availability enabled this is
                # all it says); an old retained state proves nothing about now.
                device.z2m_online = True
                self._show_z2m(device)
            applied = device.state.apply(item.payload, retained=item.retained)
            for problem in applied.problems:
                self._problem(item.topic, problem)
            for ignored in applied.ignored:
                self._ignored(item.topic, ignored)
            s = device.spec.settings_as(Zigbee2MqttSettings)
            for f in applied.found:
                self._counts["events"] += 1
                data = {"friendly_name": s.friendly_name, "key": f.key, "value": f.value}
                await self.ctx.emit(Event(device.spec.ref, self.ctx.now(), f.event, data))
        elif (device := broker.availability_topics.get(item.topic)) is not None:
            said = parse_availability(item.payload)
            if isinstance(said, Problem):
                self._problem(item.topic, said)
                return
            device.z2m_online = said is Availability.ONLINE
            if broker.connected:
                self._show_z2m(device)
        # Anything else is zigbee2mqtt's own (bridge/...) or a device of no one's.

    def _problem(self, topic: str, problem: Problem) -> None:
        self._counts[str(problem.kind)] += 1
        self._error(f"{topic}: {problem.detail}")
        self._once(
            (topic, problem.kind),
            "zigbee2mqtt %s: %s (%s; logged once per topic, counted in health)",
            topic,
            problem.detail,
            problem.kind,
        )

    def _ignored(self, topic: str, ignored: Ignored) -> None:
        # Not an error (a `release` after a `hold` is normal), but never silent: an
        # installer must be able to see that a button's press gave no event.
        self._counts["ignored"] += 1
        self._once(
            (topic, f"ignored {ignored.key}={ignored.value}"),
            "zigbee2mqtt %s: %s %r gave no event (%s; logged once per topic and value, "
            "counted in health as ignored)",
            topic,
            ignored.key,
            ignored.value,
            ignored.why,
        )

    def _once(self, key: tuple[str, str], text: str, *args: object) -> None:
        """Log at warning the first time of `key`, at debug afterwards."""
        if key in self._logged or len(self._logged) >= _MAX_LOGGED:
            self.ctx.logger.debug(text, *args)
            return
        self._logged.add(key)
        self.ctx.logger.warning(text, *args)
