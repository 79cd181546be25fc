"""The real simulated driver, run for a scaled-down scenario against a recording context."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter, defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

from drivers.simulated import DRIVER, SimulatedDriver
from drivers.simulated.driver import read_once
from drivers.simulated.settings import SimulatedSettings
from gateway.sdk.driver import CommandError, DeviceSpec
from gateway.sdk.model import DeviceRef, Event, EventType, Kind, Location, Message, Telemetry
from tests.recording import HistoryContext as Recorder


def spec(device_id: str, kind: str, **raw: Any) -> DeviceSpec:
    settings = SimulatedSettings.model_validate(raw, context={"kind": kind})
    ref = DeviceRef(device_id, Kind(kind), Location("1"))
    return DeviceSpec(ref=ref, settings=settings, driver="simulated")


async def run_for(driver: SimulatedDriver, seconds: float) -> datetime:
    """Run the driver for `seconds`; returns the wall-clock time it started."""
    start = datetime.now(UTC)
    task = asyncio.create_task(driver.run())
    await asyncio.sleep(seconds)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return start


def of(messages: Sequence[Message], device_id: str) -> list[Message]:
    return [m for m in messages if m.device.id == device_id]


def test_events_and_telemetry_arrive_on_time() -> None:
    ctx = Recorder()
    driver = SimulatedDriver(
        [
            spec(
                "door-1",
                "door",
                events=[
                    {"at_s": 0.2, "type": "door.opened", "then_after_s": 0.1, "then": "door.closed"}
                ],
            ),
            spec(
                "smoke-1",
                "smoke",
                events=[{"at_s": 0.3, "type": "smoke.alarm", "data": {"zone": "B"}}],
            ),
            spec("meter-1", "meter", profile="household_electricity", rate_hz=20),
        ],
        ctx,
    )
    start = asyncio.run(run_for(driver, 1.0))

    door = of(ctx.messages, "door-1")
    assert [m.type for m in door if isinstance(m, Event)] == [
        EventType.DOOR_OPENED,
        EventType.DOOR_CLOSED,
    ]
    assert (door[0].ts - start).total_seconds() == pytest.approx(0.2, abs=0.1)
    assert (door[1].ts - door[0].ts).total_seconds() == pytest.approx(0.1, abs=0.05)
    (alarm,) = of(ctx.messages, "smoke-1")
    assert isinstance(alarm, Event) and alarm.type is EventType.SMOKE_ALARM
    assert dict(alarm.data) == {"zone": "B"}
    assert (alarm.ts - start).total_seconds() == pytest.approx(0.3, abs=0.1)

    readings = of(ctx.messages, "meter-1")
    assert 14 <= len(readings) <= 21  # 20 Hz for 1 s, the first within 50 ms
    assert all(isinstance(m, Telemetry) for m in readings)
    first = readings[0]
    assert isinstance(first, Telemetry)
    assert [r.name for r in first.readings] == ["energy_import", "power", "voltage", "current"]
    assert [m.ts for m in readings] == sorted(m.ts for m in readings)

    assert ctx.availability == {d: (True, "") for d in ("door-1", "smoke-1", "meter-1")}
    health = driver.health()
    assert (health.devices_online, health.devices_total, health.errors) == (3, 3, 0)
    assert health.extra["events"] == 3 and health.extra["telemetry"] == len(readings)


def test_outage_toggles_availability_and_silences_the_device() -> None:
    ctx = Recorder()
    driver = SimulatedDriver(
        [
            spec(
                "meter-1",
                "meter",
                profile="household_water",
                rate_hz=20,
                offline=[{"at_s": 0.3, "for_s": 0.4}],
            ),
            spec("smoke-1", "smoke", events=[{"at_s": 0.5, "type": "smoke.alarm"}]),
        ],
        ctx,
    )

    async def scenario() -> tuple[datetime, int]:
        task = asyncio.create_task(run_for(driver, 1.0))
        await asyncio.sleep(0.5)
        online_during_outage = driver.health().devices_online
        return await task, online_during_outage

    start, online_during_outage = asyncio.run(scenario())
    assert [c for c in ctx.changes if c[0] == "meter-1"] == [
        ("meter-1", True, ""),
        ("meter-1", False, "simulated outage"),
        ("meter-1", True, ""),
    ]
    assert online_during_outage == 1  # the smoke detector only
    offsets = [(m.ts - start).total_seconds() for m in of(ctx.messages, "meter-1")]
    assert not [t for t in offsets if 0.35 < t < 0.65]
    assert [t for t in offsets if t < 0.3] and [t for t in offsets if t > 0.7]


def test_inject_emits_at_once_through_the_command_path() -> None:
    ctx = Recorder()
    driver = SimulatedDriver([spec("smoke-1", "smoke"), spec("sos-1", "elderly_alarm")], ctx)

    async def scenario() -> None:
        task = asyncio.create_task(driver.run())
        await asyncio.sleep(0.05)
        before = datetime.now(UTC)
        await driver.command("smoke-1", "inject", {"type": "smoke.alarm", "data": {"test": True}})
        await driver.inject("sos-1", EventType.ELDERLY_SOS, {"button": "pendant"})
        assert len(ctx.messages) == 2  # emitted before the calls returned
        assert all(m.ts >= before for m in ctx.messages)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    smoke, sos = ctx.messages
    assert isinstance(smoke, Event) and smoke.type is EventType.SMOKE_ALARM
    assert smoke.device.id == "smoke-1" and dict(smoke.data) == {"test": True}
    assert (
        isinstance(sos, Event)
        and sos.type is EventType.ELDERLY_SOS
        and dict(sos.data) == {"button": "pendant"}
    )
    assert driver.health().extra["injected"] == 2


@pytest.mark.parametrize(
    ("device", "name", "args", "message"),
    [
        ("meter-1", "inject", {"type": "smoke.alarm"}, "smoke.alarm is not an event of a meter"),
        ("smoke-1", "inject", {"type": "smoke.alarmm"}, "unknown event type 'smoke.alarmm'"),
        ("smoke-1", "inject", {}, "inject needs a type"),
        ("smoke-1", "inject", {"type": "smoke.alarm", "when": 3}, "unknown: when"),
        ("smoke-1", "inject", {"type": "smoke.alarm", "data": [1]}, "'data' must be an object"),
        ("nope", "inject", {"type": "smoke.alarm"}, "no simulated device 'nope'"),
        ("smoke-1", "reboot", {}, "has no command 'reboot'"),
    ],
)
def test_bad_commands_are_refused_with_the_reason(
    device: str, name: str, args: dict[str, Any], message: str
) -> None:
    ctx = Recorder()
    driver = SimulatedDriver(
        [spec("smoke-1", "smoke"), spec("meter-1", "meter", profile="household_water")], ctx
    )
    with pytest.raises(CommandError, match=message):
        asyncio.run(driver.command(device, name, args))
    assert ctx.messages == []


def test_inject_is_refused_during_an_outage() -> None:
    ctx = Recorder()
    driver = SimulatedDriver([spec("smoke-1", "smoke", offline=[{"at_s": 0, "for_s": 10}])], ctx)

    async def scenario() -> None:
        task = asyncio.create_task(driver.run())
        await asyncio.sleep(0.05)
        try:
            with pytest.raises(CommandError, match="offline"):
                await driver.inject("smoke-1", EventType.SMOKE_ALARM, {})
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    asyncio.run(scenario())
    assert ctx.messages == []
    assert ctx.availability["smoke-1"] == (False, "simulated outage")


class SlowCommit(Recorder):
    """emit() returns after 50 ms, as it does when the outbox batches its commits."""

    def __init__(self) -> None:
        super().__init__()
        self.in_flight: Counter[str] = Counter()
        self.max_in_flight_per_device = 0
        self.max_in_flight = 0  # of all devices together: the commits that overlapped

    async def emit(self, message: Message) -> None:
        self.in_flight[message.device.id] += 1
        self.max_in_flight_per_device = max(
            self.max_in_flight_per_device, self.in_flight[message.device.id]
        )
        self.max_in_flight = max(self.max_in_flight, self.in_flight.total())
        await asyncio.sleep(0.05)
        self.in_flight[message.device.id] -= 1
        await super().emit(message)


def test_500_meters_at_10_hz_are_not_held_back_by_commit_latency() -> None:
    ctx = SlowCommit()
    devices = [
        spec(f"m{i}", "meter", profile="household_electricity", rate_hz=10, seed=i)
        for i in range(500)
    ]
    driver = SimulatedDriver(devices, ctx)

    async def scenario() -> int:
        task = asyncio.create_task(run_for(driver, 2.0))
        await asyncio.sleep(1.0)
        tasks = len(asyncio.all_tasks())
        await task
        return tasks

    tasks_mid_run = asyncio.run(scenario())
    # One after another, a 50 ms commit would allow 40 messages in 2 s; 10 Hz x 500 x 2 s
    # is 10,000.  How many a machine makes depends on the CPU other jobs leave it (3,461
    # and 400 were seen under load), so the overlap is counted directly: 50 devices
    # waiting on their commits at once, and 5 times the serial bound.
    assert ctx.max_in_flight >= 50, ctx.max_in_flight
    assert len(ctx.messages) >= 200
    assert ctx.max_in_flight_per_device == 1  # a device's messages stay in order...
    assert tasks_mid_run <= 500 + 3  # ...so at most one short task per device
    per_device: defaultdict[str, list[datetime]] = defaultdict(list)
    for m in ctx.messages:
        per_device[m.device.id].append(m.ts)
    assert len(per_device) == 500
    assert all(ts == sorted(ts) for ts in per_device.values())
    health = driver.health()
    assert health.extra["telemetry"] == len(ctx.messages) and health.errors == 0


class FailingFor(Recorder):
    """emit() fails for one device, as a full outbox or a bad message would."""

    def __init__(self, device_id: str) -> None:
        super().__init__()
        self.bad = device_id

    async def emit(self, message: Message) -> None:
        if message.device.id == self.bad:
            raise RuntimeError("outbox refused the message")
        await super().emit(message)


def test_one_failing_device_does_not_stop_the_others(caplog: pytest.LogCaptureFixture) -> None:
    ctx = FailingFor("bad")
    driver = SimulatedDriver(
        [
            spec("bad", "meter", profile="household_water", rate_hz=20),
            spec("good", "meter", profile="household_water", rate_hz=20),
        ],
        ctx,
    )
    with caplog.at_level("INFO", logger=ctx.logger.name):
        asyncio.run(run_for(driver, 0.5))
    assert len(of(ctx.messages, "good")) >= 7
    health = driver.health()
    assert health.errors >= 7
    assert health.last_error == "bad: outbox refused the message"
    # The same fault again and again is logged once, not twenty times a second.
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [
        "simulated device bad failed: outbox refused the message"
    ]


def test_cancelling_run_leaves_no_task_behind() -> None:
    ctx = SlowCommit()
    driver = SimulatedDriver(
        [spec(f"m{i}", "meter", profile="household_water", rate_hz=50) for i in range(20)], ctx
    )

    async def scenario() -> set[asyncio.Task[Any]]:
        await run_for(driver, 0.3)
        return asyncio.all_tasks() - {asyncio.current_task()}

    assert asyncio.run(scenario()) == set()


def test_read_once_shows_readings_and_scenario() -> None:
    assert DRIVER.read_once is read_once
    meter = asyncio.run(read_once(spec("meter-1", "meter", profile="household_electricity")))
    assert meter.ok and [p.name for p in meter.points] == [
        "energy_import",
        "power",
        "voltage",
        "current",
    ]
    assert meter.points[0].unit == "kWh" and float(meter.points[0].value or 0) > 0
    door = asyncio.run(
        read_once(
            spec(
                "door-1",
                "door",
                events=[
                    {
                        "every_s": 40,
                        "jitter_s": 5,
                        "type": "door.opened",
                        "then_after_s": 5,
                        "then": "door.closed",
                    }
                ],
            )
        )
    )
    assert [(p.name, p.value, p.note) for p in door.points] == [
        ("events[0]", "door.opened", "every 40 s from 40 s ± 5 s, then door.closed 5 s later")
    ]
