"""The driver against a real Mosquitto, with messages shaped as zigbee2mqtt publishes them."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from drivers.zigbee2mqtt import DRIVER
from gateway.config import load_config
from gateway.sdk.driver import DeviceSpec, DriverHealth
from gateway.sdk.model import EventType
from tests.driverkit import event_types as types
from tests.driverkit import events, run_driver, until
from tests.peers import Mosquitto
from tests.recording import RecordingContext

pytestmark = pytest.mark.broker

BASE = "z2m-test"
# zigbee2mqtt's friendly names may hold '/', to group devices by place.
SMOKE, BUTTON, DOOR = "b3/101/kitchen_smoke", "b3/101/sos", "b3/lobby_door"
IDS = {"smoke-101": SMOKE, "sos-101": BUTTON, "door-lobby": DOOR}


def load(tmp_path: Path, broker: Mosquitto) -> list[DeviceSpec]:
    kinds = {"smoke-101": "smoke", "sos-101": "elderly_alarm", "door-lobby": "door"}
    doc = {
        "version": 1,
        "site": {"id": "s"},
        "gateway": {"id": "g"},
        "broker": {"url": "mqtts://platform.example.net:8883"},
        "devices": [
            {
                "id": device_id,
                "kind": kinds[device_id],
                "location": {"building": "3"},
                "driver": {
                    "type": "zigbee2mqtt",
                    "broker_url": broker.url,
                    "base_topic": BASE,
                    "friendly_name": name,  # mapping: the default of the kind
                },
            }
            for device_id, name in IDS.items()
        ],
    }
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(doc))
    # allow_conflicts: some tests give the driver conflicting devices on purpose.
    return list(load_config(path, drivers={"zigbee2mqtt": DRIVER}, allow_conflicts=True).devices)


class Z2M:
    """Publishes what zigbee2mqtt would, over its own connection to the broker.

    With `announce`, it starts as zigbee2mqtt with availability enabled does: each
    device's availability, retained.
    """

    def __init__(self, broker: Mosquitto, announce: bool = True) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()
        if announce:
            for name in IDS.values():
                self.raw(f"{name}/availability", '{"state": "online"}', retain=True)

    def raw(self, topic: str, payload: bytes | str, retain: bool = False) -> None:
        self.client.publish(f"{BASE}/{topic}", payload, qos=1, retain=retain).wait_for_publish(5)

    def state(self, name: str, retain: bool = False, **values: Any) -> None:
        self.raw(name, json.dumps(values), retain)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def all_available(ctx: RecordingContext) -> bool:
    return set(ctx.availability) == set(IDS) and all(a for a, _ in ctx.availability.values())


def subscribed(ctx: RecordingContext) -> bool:
    """The driver is subscribed: no device is still waiting for the broker."""
    return set(ctx.availability) == set(IDS) and not any(
        r.startswith("connecting") for _, r in ctx.availability.values()
    )


def run(
    specs: list[DeviceSpec],
    ctx: RecordingContext,
    script: Callable[[], Awaitable[None]],
    timeout: float = 30.0,
    ready: Callable[[RecordingContext], bool] = all_available,
) -> DriverHealth:
    """Run the driver until `ready` (all devices available), then the script."""
    return run_driver(DRIVER, specs, ctx, lambda: ready(ctx), script, timeout)


async def marker(z2m: Z2M, ctx: RecordingContext) -> None:
    """A press of the SOS button; once emitted, every earlier message was handled."""
    before = len(events(ctx, "sos-101"))
    await asyncio.to_thread(z2m.state, BUTTON, action="emergency", battery=97, linkquality=80)
    await until(lambda: len(events(ctx, "sos-101")) > before)


def test_smoke_alarm_then_cleared_and_no_duplicates_from_republished_state(
    tmp_path: Path, broker: Mosquitto, recording_ctx: RecordingContext
) -> None:
    ctx = recording_ctx
    z2m = Z2M(broker)

    async def script() -> None:
        full: dict[str, Any] = {
            "battery": 100,
            "battery_low": False,
            "tamper": False,
            "voltage": 3000,
        }
        await asyncio.to_thread(z2m.state, SMOKE, smoke=True, linkquality=120, **full)
        await asyncio.to_thread(z2m.state, SMOKE, smoke=True, linkquality=120, **full)
        await asyncio.to_thread(z2m.state, SMOKE, smoke=True, linkquality=87, **full)
        await asyncio.to_thread(z2m.state, SMOKE, smoke=False, linkquality=90, **full)
        await asyncio.to_thread(z2m.state, SMOKE, smoke=False, linkquality=90, **full)
        await marker(z2m, ctx)

    health = run(load(tmp_path, broker), ctx, script)
    z2m.close()
    assert types(ctx, "smoke-101") == [EventType.SMOKE_ALARM, EventType.SMOKE_CLEARED]
    first = events(ctx, "smoke-101")[0]
    assert first.data == {"friendly_name": SMOKE, "key": "smoke", "value": True}
    assert first.device.kind == "smoke"
    assert health.extra["connected"] == 1
    assert health.devices_online == health.devices_total == 3


def test_battery_low_and_tamper_give_events_when_they_turn_true(
    tmp_path: Path, broker: Mosquitto, recording_ctx: RecordingContext
) -> None:
    ctx = recording_ctx
    z2m = Z2M(broker)

    async def script() -> None:
        await asyncio.to_thread(z2m.state, SMOKE, smoke=False, battery_low=False, tamper=False)
        await asyncio.to_thread(z2m.state, SMOKE, smoke=False, battery_low=True, tamper=False)
        await asyncio.to_thread(z2m.state, SMOKE, smoke=False, battery_low=True, tamper=True)
        await marker(z2m, ctx)

    run(load(tmp_path, broker), ctx, script)
    z2m.close()
    assert types(ctx, "smoke-101") == [
        EventType.SMOKE_CLEARED,  # the first state after start tells the platform where it is
        EventType.DEVICE_BATTERY_LOW,
        EventType.DEVICE_TAMPER,
    ]


def test_every_press_of_the_sos_button_is_an_event(
    tmp_path: Path, broker: Mosquitto, recording_ctx: RecordingContext
) -> None:
    ctx = recording_ctx
    z2m = Z2M(broker)

    async def script() -> None:
        for action in ("emergency", "emergency", "", "sos"):  # "" clears action after a press
            await asyncio.to_thread(z2m.state, BUTTON, action=action, battery=97)
        await until(lambda: len(events(ctx, "sos-101")) == 3)
        await asyncio.to_thread(z2m.state, DOOR, contact=False)
        await asyncio.to_thread(z2m.state, DOOR, contact=False)
        await asyncio.to_thread(z2m.state, DOOR, contact=True)
        await until(lambda: len(events(ctx, "door-lobby")) == 2)
        await marker(z2m, ctx)

    run(load(tmp_path, broker), ctx, script)
    z2m.close()
    assert types(ctx, "sos-101") == [EventType.ELDERLY_SOS] * 4
    assert [e.data["value"] for e in events(ctx, "sos-101")[:3]] == [
        "emergency",
        "emergency",
        "sos",
    ]
    assert types(ctx, "door-lobby") == [EventType.DOOR_OPENED, EventType.DOOR_CLOSED]


def test_availability_in_both_formats_sets_the_device_available_or_not(
    tmp_path: Path, broker: Mosquitto, recording_ctx: RecordingContext
) -> None:
    ctx = recording_ctx
    z2m = Z2M(broker)
    topic = f"{SMOKE}/availability"

    async def script() -> None:
        steps: list[tuple[bytes | str, bool]] = [
            ('{"state": "offline"}', False),  # zigbee2mqtt 2.x, and 1.x with JSON availability
            ('{"state": "online"}', True),
            ("offline", False),  # zigbee2mqtt 1.x legacy availability
            ("online", True),
        ]
        for payload, expected in steps:
            await asyncio.to_thread(z2m.raw, topic, payload, True)
            await until(lambda: ctx.availability["smoke-101"][0] is expected)  # noqa: B023
            if not expected:
                assert "zigbee2mqtt reports it offline" in ctx.availability["smoke-101"][1]
            assert ctx.availability["sos-101"] == (True, "")

    run(load(tmp_path, broker), ctx, script)
    z2m.close()


def test_malformed_messages_are_logged_once_and_other_devices_still_work(
    tmp_path: Path,
    broker: Mosquitto,
    recording_ctx: RecordingContext,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ctx = recording_ctx
    caplog.set_level(logging.DEBUG, logger=ctx.logger.name)
    z2m = Z2M(broker)

    async def script() -> None:
        await asyncio.to_thread(z2m.raw, SMOKE, '{"smoke": tru')
        await asyncio.to_thread(z2m.raw, SMOKE, '{"smoke": tru')
        await asyncio.to_thread(z2m.raw, SMOKE, b"\xff\xfe")
        await asyncio.to_thread(z2m.raw, SMOKE, "[1, 2]")
        await asyncio.to_thread(z2m.raw, SMOKE, '{"smoke": "yes", "tamper": false}')
        await asyncio.to_thread(z2m.raw, f"{SMOKE}/availability", "maybe")
        await asyncio.to_thread(z2m.raw, "bridge/state", '{"state": "online"}')  # not a device
        await asyncio.to_thread(z2m.state, DOOR, contact=False)
        await asyncio.to_thread(z2m.state, SMOKE, smoke=True)
        await marker(z2m, ctx)

    health = run(load(tmp_path, broker), ctx, script)
    z2m.close()
    assert types(ctx, "door-lobby") == [EventType.DOOR_OPENED]
    assert types(ctx, "smoke-101") == [EventType.SMOKE_ALARM]
    assert health.extra["malformed"] == 5
    assert health.extra["unexpected_type"] == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    smoke_topic = f"{BASE}/{SMOKE}:"
    assert (
        sum(w.startswith(f"zigbee2mqtt {smoke_topic}") and "(malformed;" in w for w in warnings)
        == 1
    )
    assert sum("(unexpected_type;" in w and "'smoke' is" in w for w in warnings) == 1
    assert sum("availability:" in w and "(malformed;" in w for w in warnings) == 1
    assert ctx.availability["smoke-101"] == (True, "")


def test_broker_loss_marks_devices_unavailable_and_reconnects(
    tmp_path: Path, broker: Mosquitto, recording_ctx: RecordingContext
) -> None:
    ctx = recording_ctx
    Z2M(broker).close()  # the devices' availability, retained

    async def script() -> None:
        await asyncio.to_thread(broker.stop)
        await until(lambda: not any(a for a, _ in ctx.availability.values()))
        for _, reason in ctx.availability.values():
            assert "zigbee2mqtt's broker" in reason
        await asyncio.to_thread(broker.start)
        await until(lambda: all_available(ctx), timeout=15)
        z2m = Z2M(broker)
        try:
            await marker(z2m, ctx)
        finally:
            z2m.close()

    health = run(load(tmp_path, broker), ctx, script)
    assert types(ctx, "sos-101") == [EventType.ELDERLY_SOS]
    assert health.extra["disconnects"] == 1
    assert "zigbee2mqtt's broker" in health.last_error


def test_retained_state_is_reported_once_and_a_retained_press_is_not_replayed(
    tmp_path: Path, broker: Mosquitto, recording_ctx: RecordingContext
) -> None:
    ctx = recording_ctx
    z2m = Z2M(broker)
    # zigbee2mqtt with `retain: true` leaves the last state on the broker.
    z2m.state(SMOKE, retain=True, smoke=True, battery_low=False)
    z2m.state(BUTTON, retain=True, action="emergency")

    async def script() -> None:
        await until(lambda: len(events(ctx, "smoke-101")) == 1)
        await marker(z2m, ctx)

    run(load(tmp_path, broker), ctx, script)
    z2m.close()
    assert types(ctx, "smoke-101") == [EventType.SMOKE_ALARM]  # an alarm still on is reported
    assert types(ctx, "sos-101") == [EventType.ELDERLY_SOS]  # only the marker's live press


def any_pending(ctx: RecordingContext) -> bool:
    return any(available is None for available, _ in ctx.availability.values())


def test_a_broker_not_up_yet_at_start_is_waited_for(
    tmp_path: Path, broker: Mosquitto, recording_ctx: RecordingContext
) -> None:
    """At boot the gateway may start before Mosquitto; the devices follow the broker."""
    ctx = recording_ctx
    specs = load(tmp_path, broker)
    Z2M(broker).close()  # the devices' availability, retained
    broker.stop()

    async def main() -> None:
        driver = DRIVER.factory(specs, ctx)
        task = asyncio.create_task(driver.run())
        try:
            # "connecting" (None) comes first; under load the check came before the refusal.
            await until(lambda: set(ctx.availability) == set(IDS) and not any_pending(ctx))
            for available, reason in ctx.availability.values():
                assert not available and "cannot connect to zigbee2mqtt's broker" in reason
            await asyncio.to_thread(broker.start)
            await until(lambda: all_available(ctx), timeout=15)
            z2m = Z2M(broker)
            try:
                await marker(z2m, ctx)
            finally:
                z2m.close()
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(main())
    assert types(ctx, "sos-101") == [EventType.ELDERLY_SOS]


def test_a_double_press_a_hold_and_a_long_press_raise_the_alarm_and_ignored_ones_are_counted(
    tmp_path: Path,
    broker: Mosquitto,
    recording_ctx: RecordingContext,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Aqara WXKG11LM's double and hold, Sonoff SNZB-01's long, an unlisted model's press."""
    ctx = recording_ctx
    caplog.set_level(logging.DEBUG, logger=ctx.logger.name)
    z2m = Z2M(broker)
    presses = ["double", "hold", "long", "button_1_triple"]

    async def script() -> None:
        for action in presses:
            await asyncio.to_thread(z2m.state, BUTTON, action=action, battery=80)
            await asyncio.to_thread(z2m.state, BUTTON, action="release", battery=80)
        await asyncio.to_thread(z2m.state, DOOR, action="single")  # a door has no actions
        await until(lambda: len(events(ctx, "sos-101")) == len(presses))
        await marker(z2m, ctx)

    health = run(load(tmp_path, broker), ctx, script)
    z2m.close()
    assert [e.data["value"] for e in events(ctx, "sos-101")] == [*presses, "emergency"]
    assert types(ctx, "sos-101") == [EventType.ELDERLY_SOS] * (len(presses) + 1)
    assert health.extra["ignored"] == len(presses) + 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert sum("'release' gave no event (mapped to no event" in w for w in warnings) == 1
    assert (
        sum(f"{DOOR}: action 'single' gave no event (not in the mapping" in w for w in warnings)
        == 1
    )


def test_devices_are_unknown_until_zigbee2mqtt_says_anything_about_them(
    tmp_path: Path, broker: Mosquitto, recording_ctx: RecordingContext
) -> None:
    """Not "online" before the bridge has said a word (it used to be 13 s before)."""
    ctx = recording_ctx
    z2m = Z2M(broker, announce=False)  # availability not published yet, or not enabled
    changes: list[tuple[str, bool | None]] = []
    real = ctx.set_available

    def record(device_id: str, available: bool | None, reason: str = "") -> None:
        changes.append((device_id, available))
        real(device_id, available, reason)

    ctx.set_available = record  # type: ignore[method-assign]

    async def script() -> None:
        for _, reason in ctx.availability.values():
            assert "said nothing about it" in reason
        assert all(a is None for a, _ in ctx.availability.values())
        await asyncio.to_thread(z2m.raw, f"{SMOKE}/availability", '{"state": "online"}')
        await until(lambda: ctx.availability["smoke-101"] == (True, ""))
        await asyncio.to_thread(z2m.raw, f"{DOOR}/availability", "offline")
        await until(lambda: ctx.availability["door-lobby"][0] is False)
        await asyncio.to_thread(z2m.state, BUTTON, battery=90)  # a live report: it is there
        await until(lambda: ctx.availability["sos-101"] == (True, ""))

    health = run(load(tmp_path, broker), ctx, script, ready=subscribed)
    z2m.close()
    # Before any word from zigbee2mqtt no device was ever reported online.
    first_online = changes.index(("smoke-101", True))
    assert all(a is None for _, a in changes[:first_online])
    assert ctx.availability["door-lobby"] == (False, "zigbee2mqtt reports it offline")
    assert health.devices_online == 2


def test_a_retained_state_alone_does_not_make_a_device_online(
    tmp_path: Path, broker: Mosquitto, recording_ctx: RecordingContext
) -> None:
    ctx = recording_ctx
    z2m = Z2M(broker, announce=False)
    z2m.state(SMOKE, retain=True, smoke=False)  # left by zigbee2mqtt's `retain: true`, long ago

    async def script() -> None:
        await until(lambda: len(events(ctx, "smoke-101")) == 1)

    run(load(tmp_path, broker), ctx, script, ready=subscribed)
    z2m.close()
    assert ctx.availability["smoke-101"][0] is None
