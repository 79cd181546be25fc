"""What the screens show live: devices (availability, last value) and alarms, with a fan-out
to every open server-sent-events stream.

Fed by the gateway's message and availability observers and by the alarm engine's
`listen`; all on the event loop, nothing blocks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Any

from gateway.alarms.engine import AlarmEngine
from gateway.sdk.driver import DeviceSpec
from gateway.sdk.model import DeviceRef, Event, Message, Telemetry, format_ts
from gateway.web.meters import MeterHistory
from gateway.web.timefmt import local_time

__all__ = ["DeviceState", "Hub", "LiveState", "building_banner"]

log = logging.getLogger(__name__)

# Alarm types that concern everybody in a building, shown on the kiosk (type and place
# only).  Care and wellness alarms are about one resident and never appear there.
BUILDING_WIDE = frozenset({"fire"})
_CONDITION_PRESENT = frozenset({"active", "acknowledged"})


@dataclass(slots=True)
class DeviceState:
    """One row of the devices table."""

    id: str
    kind: str
    name: str
    location: dict[str, str]
    available: bool | None = None  # None: not reported since the gateway started
    reason: str = ""
    last_value: str = ""  # in English, as the API has it
    last_at: str = ""
    # The same, for the screens to put in their language: (reading, value, unit) of the
    # last telemetry, or the type of the last event.
    last_readings: tuple[tuple[str, str, str], ...] = ()
    last_event: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "name": self.name,
            "location": self.location,
            "available": self.available,
            "reason": self.reason,
            "last_value": self.last_value,
            "last_at": self.last_at,
            "last_readings": [list(r) for r in self.last_readings],
            "last_event": self.last_event,
        }


def _readings(message: Telemetry) -> tuple[tuple[str, str, str], ...]:
    return tuple(
        (r.name, f"{r.value:.6g}" if isinstance(r.value, float) else str(r.value), str(r.unit))
        for r in message.readings
    )


def _describe(readings: tuple[tuple[str, str, str], ...]) -> str:
    return ", ".join(
        f"{name} {value}{' ' + unit if unit else ''}" for name, value, unit in readings
    )


def building_banner(alarms: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The kiosk's alarm banner: building-wide alarms still present, type and place only."""
    out = []
    seen = set()
    for doc in alarms:
        if doc.get("type") not in BUILDING_WIDE or doc.get("state") not in _CONDITION_PRESENT:
            continue
        loc = (doc.get("device") or {}).get("location") or {}
        # Building and floor only: no unit, which could be a resident's flat.
        entry = (str(doc["type"]), str(loc.get("building", "")), loc.get("floor"))
        if entry in seen:
            continue
        seen.add(entry)
        out.append(
            {
                "type": entry[0],
                "building": entry[1],
                "floor": None if entry[2] is None else str(entry[2]),
            }
        )
    return out


class Hub:
    """Fan-out of (event, data) pairs to each open stream; a slow stream is dropped."""

    def __init__(self, max_queue: int = 256) -> None:
        self._queues: set[asyncio.Queue[tuple[str, Any] | None]] = set()
        self._max = max_queue

    def subscribe(self) -> asyncio.Queue[tuple[str, Any] | None]:
        q: asyncio.Queue[tuple[str, Any] | None] = asyncio.Queue(self._max)
        self._queues.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue[tuple[str, Any] | None]) -> None:
        self._queues.discard(q)

    @property
    def listening(self) -> bool:
        """Whether any stream is open (else there is no point building an update)."""
        return bool(self._queues)

    def publish(self, event: str, data: Any) -> None:
        for q in list(self._queues):
            try:
                q.put_nowait((event, data))
            except asyncio.QueueFull:
                # The browser is not reading (a tablet asleep): end its stream; it
                # reconnects and starts from a fresh snapshot instead of stale backlog.
                self._queues.discard(q)
                with contextlib.suppress(asyncio.QueueEmpty):
                    q.get_nowait()
                q.put_nowait(None)

    def close(self) -> None:
        for q in list(self._queues):
            with contextlib.suppress(asyncio.QueueFull):
                q.put_nowait(None)
        self._queues.clear()


class LiveState:
    """Devices and alarms as the screens show them, and the hubs that stream changes."""

    def __init__(
        self,
        devices: list[DeviceSpec],
        alarms: AlarmEngine,
        zone: tzinfo = UTC,
        *,
        site_name: str = "",
        meters: MeterHistory | None = None,
    ) -> None:
        self.zone = zone  # the screens' local time zone
        self.site_name = site_name  # shown in the console's header (the id if no name)
        self.meters = meters
        self.devices: dict[str, DeviceState] = {}
        self.set_devices(devices)
        self.alarms = alarms
        self.console = Hub()
        self.kiosk = Hub()
        self._unlisten: Callable[[], None] | None = None
        self._banner: list[dict[str, Any]] = []

    def set_devices(self, devices: Sequence[DeviceSpec]) -> None:
        """Show exactly `devices` (a remote change of devices): new rows, removed ones gone.

        A device that stays keeps its availability and last value; its name, kind and
        place are taken from the new list.  Open consoles get the new snapshot.
        """
        old = self.devices
        self.devices = {}
        for d in devices:
            row = DeviceState(d.id, str(d.ref.kind), d.name, d.ref.location.as_dict())
            kept = old.get(d.id)
            if kept is not None:
                row.available, row.reason, row.last_at = kept.available, kept.reason, kept.last_at
                row.last_value, row.last_readings = kept.last_value, kept.last_readings
                row.last_event = kept.last_event
            self.devices[d.id] = row
        if self.meters is not None:
            self.meters.meters = {d.id for d in devices if str(d.ref.kind) == "meter"}
        if old and self.console.listening:
            self.console.publish("snapshot", self.console_snapshot())

    def console_snapshot(self) -> dict[str, Any]:
        """What an open console starts from: the gateway's time, the alarms, the devices."""
        # `now` lets the page's script reckon ages by the gateway's clock, not the tablet's.
        return {
            "now": format_ts(datetime.now(UTC)),
            "alarms": self.console_alarms(),
            "devices": [self.console_device(d) for d in self.devices.values()],
        }

    def start(self) -> None:
        self._unlisten = self.alarms.listen(self.on_alarm)

    def stop(self) -> None:
        if self._unlisten is not None:
            self._unlisten()
            self._unlisten = None
        self.console.close()
        self.kiosk.close()

    def alarm_snapshot(self) -> list[dict[str, Any]]:
        return self.alarms.snapshot(recent=50)

    def console_alarm(self, doc: dict[str, Any]) -> dict[str, Any]:
        """An alarm document for the console: a copy with `since_local` (raised_at, local)."""
        return {**doc, "since_local": local_time(doc.get("raised_at"), self.zone)}

    def console_alarms(self) -> list[dict[str, Any]]:
        return [self.console_alarm(d) for d in self.alarm_snapshot()]

    def console_device(self, state: DeviceState) -> dict[str, Any]:
        """A device row for the console: its fields and `at_local` (last_at, local)."""
        return {**state.as_dict(), "at_local": local_time(state.last_at, self.zone)}

    def banner(self) -> list[dict[str, Any]]:
        # Computed from the engine each time, so alarms restored at start are shown even
        # before their next change.
        return building_banner(self.alarm_snapshot())

    # ---- observers -------------------------------------------------------------------

    def on_message(self, message: Message) -> None:
        state = self.devices.get(message.device.id)
        if state is None:
            return
        if isinstance(message, Telemetry):
            state.last_readings, state.last_event = _readings(message), ""
            state.last_value = _describe(state.last_readings)
            if self.meters is not None:
                self.meters.on_message(message)
        else:
            assert isinstance(message, Event)
            state.last_readings, state.last_event = (), str(message.type)
            state.last_value = state.last_event
        state.last_at = format_ts(message.ts)
        self._device_changed(state)

    def on_availability(self, ref: DeviceRef, available: bool | None, reason: str) -> None:
        state = self.devices.get(ref.id)
        if state is None:
            return
        state.available = available
        state.reason = reason
        if not state.last_at:
            state.last_at = format_ts(datetime.now(UTC))
        self._device_changed(state)

    def _device_changed(self, state: DeviceState) -> None:
        # Every message of every device passes here: build the row only for open consoles.
        if self.console.listening:
            self.console.publish("device", self.console_device(state))

    def on_alarm(self, doc: dict[str, Any]) -> None:
        self.console.publish("alarm", self.console_alarm(doc))
        banner = self.banner()
        if banner != self._banner:
            self._banner = banner
            self.kiosk.publish("banner", banner)
