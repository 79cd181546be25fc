"""Card-reader grants reaching the door logic, and relay outputs switched by commands."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

import gateway.process.runtime
from drivers.gpio import DRIVER, GpioDriver
from drivers.gpio.driver import read_once
from drivers.gpio.settings import Bias
from drivers.gpio.source import LineConfig
from drivers.gpio.tests.fakechip import FakeChip, Opener
from drivers.simulated import DRIVER as SIMULATED
from gateway.config import load_config
from gateway.process.runtime import Gateway
from gateway.sdk.driver import CommandError, DeviceSpec
from gateway.sdk.model import Event, EventType, Message
from gateway.sdk.registry import available_drivers
from tests.driverkit import event_types as types
from tests.driverkit import running, until
from tests.harness import Subscriber, topic_base, write_config
from tests.peers import Mosquitto
from tests.recording import RecordingContext

E = EventType
LOC = {"building": "2", "floor": 0, "unit": "lobby"}
DOOR = {
    "id": "door-b2",
    "kind": "door",
    "location": LOC,
    "driver": {
        "type": "gpio",
        "line": 17,
        "role": "door_contact",
        "contact": "nc",
        "debounce_ms": 5,
        "grant_from": ["reader-b2"],
    },
}
READER = {"id": "reader-b2", "kind": "door", "location": LOC, "driver": {"type": "simulated"}}
OTHER_READER = {**READER, "id": "reader-b3"}
BUZZER = {
    "id": "buzzer-office",
    "kind": "elderly_alarm",
    "location": {"building": "1", "floor": 0, "unit": "office"},
    "driver": {"type": "gpio", "line": 5, "role": "relay", "active": "low"},
}
REST = {17: 0}  # the NC door contact closed under the pull-up


def gpio_specs(tmp_path: Path, *devices: dict[str, Any]) -> list[DeviceSpec]:
    path = write_config(tmp_path / "site.yaml", "mqtt://127.0.0.1:1883", list(devices))
    drivers = {"gpio": DRIVER, "simulated": SIMULATED}
    return [d for d in load_config(path, drivers=drivers).devices if d.driver == "gpio"]


def grant_of(reader: dict[str, Any], tmp_path: Path, kind: EventType = E.ACCESS_GRANTED) -> Message:
    path = write_config(tmp_path / "readers.yaml", "mqtt://127.0.0.1:1883", [reader])
    (spec,) = load_config(path, drivers={"simulated": SIMULATED}).devices
    return Event(spec.ref, datetime.now(UTC), kind, {"card": "c-1f3a"})


# ---- grants ------------------------------------------------------------------------


def test_a_granted_opening_is_not_forced_and_an_ungranted_one_is(
    tmp_path: Path, recording_ctx: RecordingContext
) -> None:
    chip = FakeChip(REST)
    specs = gpio_specs(tmp_path, DOOR, READER, OTHER_READER)
    driver = GpioDriver(specs, recording_ctx, opener=Opener(chip))
    granted = grant_of(READER, tmp_path)

    async def cycle(expect_closed: int) -> None:
        chip.set(17, 1)
        await asyncio.sleep(0.03)
        chip.set(17, 0)
        await until(lambda: types(recording_ctx).count(E.DOOR_CLOSED) == expect_closed)

    async def body() -> None:
        async with running(driver):
            await until(lambda: recording_ctx.availability.get("door-b2") == (True, ""))
            driver.observe(granted)  # the reader this door names: one person in
            await cycle(1)
            await cycle(2)  # the grant was used up: forced
            driver.observe(grant_of(OTHER_READER, tmp_path))  # another door's reader
            await cycle(3)
            driver.observe(grant_of(READER, tmp_path, E.ACCESS_DENIED))  # refused card
            await cycle(4)

    asyncio.run(body())
    assert types(recording_ctx) == [
        E.DOOR_OPENED,
        E.DOOR_CLOSED,
        *[E.DOOR_OPENED, E.DOOR_FORCED, E.DOOR_CLOSED] * 3,
    ]


@pytest.fixture
def fake_chip_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeChip]:
    """The registry the runtime reads, with the gpio driver on a fake chip."""
    chip = FakeChip(REST)
    real = available_drivers()

    def factory(devices: Any, ctx: Any) -> GpioDriver:
        return GpioDriver(devices, ctx, opener=Opener(chip))

    patched = {**real, "gpio": dataclasses.replace(DRIVER, factory=factory)}
    monkeypatch.setattr(gateway.process.runtime, "available_drivers", lambda: patched)
    yield chip


def test_a_card_readers_grant_reaches_the_door_through_the_runtime(
    tmp_path: Path, broker: Mosquitto, fake_chip_registry: FakeChip
) -> None:
    chip = fake_chip_registry
    reader = {
        **READER,
        "driver": {"type": "simulated", "events": [{"at_s": 0.3, "type": "access.granted"}]},
    }
    config = write_config(tmp_path / "gw" / "site.yaml", broker.url, [DOOR, reader])
    sub = Subscriber(broker.port, f"{topic_base(config)}/devices/door-b2/events").start()

    async def main() -> None:
        gw = Gateway(load_config(config))
        seen: list[Message] = []
        gw.message_observers.append(seen.append)
        stop = asyncio.Event()
        task = asyncio.create_task(gw.run(stop))
        try:
            await until(lambda: any(m.device.id == "reader-b2" for m in seen), timeout=5)
            for _ in range(2):  # the granted opening, then one nobody granted
                chip.set(17, 1)
                await asyncio.sleep(0.03)
                chip.set(17, 0)
                await asyncio.sleep(0.03)
            await until(
                lambda: sum(isinstance(m, Event) and m.type is E.DOOR_CLOSED for m in seen) == 2
            )
        finally:
            stop.set()
            await task

    asyncio.run(main())
    assert sub.wait(lambda ms: len(ms) == 5)
    got = [json.loads(m.payload)["event"]["type"] for m in sub.snapshot()]
    assert got == ["door.opened", "door.closed", "door.opened", "door.forced", "door.closed"]
    sub.stop()


# ---- relays ------------------------------------------------------------------------


def test_relay_on_off_and_pulse_drive_the_line(
    tmp_path: Path, recording_ctx: RecordingContext
) -> None:
    chip = FakeChip({})
    driver = GpioDriver(gpio_specs(tmp_path, BUZZER), recording_ctx, opener=Opener(chip))
    replies: list[Any] = []

    async def body() -> None:
        async with running(driver):
            await until(lambda: recording_ctx.availability.get("buzzer-office") == (True, ""))
            # Requested as an output that is off: active-low, so high.
            assert chip.requested == {5: LineConfig(Bias.NONE, 0, output=1)}
            replies.append(await driver.command("buzzer-office", "on", {}))
            replies.append(await driver.command("buzzer-office", "off", {}))
            replies.append(await driver.command("buzzer-office", "pulse", {"seconds": 0.1}))
            assert chip.levels[5] == 0
            await until(lambda: chip.levels[5] == 1)
            # A new pulse replaces a running one; `on` cancels the pending off.
            await driver.command("buzzer-office", "pulse", {"seconds": 0.05})
            await driver.command("buzzer-office", "on", {})
            await asyncio.sleep(0.15)
            assert chip.levels[5] == 0
            assert driver.health().extra["relays_on"] == 1
            await driver.command("buzzer-office", "off", {})
            assert driver.health().extra["relays_on"] == 0

    asyncio.run(body())
    assert replies == [{"state": "on"}, {"state": "off"}, {"state": "on", "off_after_s": 0.1}]
    assert chip.writes == [(5, 0), (5, 1), (5, 0), (5, 1), (5, 0), (5, 0), (5, 1)]
    assert recording_ctx.messages == []  # a relay reports no events of its own


@pytest.mark.parametrize(
    ("name", "args", "error"),
    [
        ("toggle", {}, "relay 'buzzer-office' has no command 'toggle' (it has: on, off, pulse)"),
        ("pulse", {"seconds": 0}, "pulse needs seconds between 0 and 3600, not 0"),
        ("pulse", {"seconds": "3"}, "pulse needs seconds between 0 and 3600, not '3'"),
        ("pulse", {"seconds": True}, "pulse needs seconds between 0 and 3600, not True"),
        ("on", {"seconds": 3}, "relay command 'on' takes no seconds"),
    ],
)
def test_wrong_relay_commands_are_refused_with_the_reason(
    tmp_path: Path, recording_ctx: RecordingContext, name: str, args: dict[str, Any], error: str
) -> None:
    chip = FakeChip({})
    driver = GpioDriver(gpio_specs(tmp_path, BUZZER), recording_ctx, opener=Opener(chip))

    async def body() -> None:
        async with running(driver):
            await until(lambda: recording_ctx.availability.get("buzzer-office") == (True, ""))
            with pytest.raises(CommandError) as info:
                await driver.command("buzzer-office", name, args)
            assert str(info.value) == error

    asyncio.run(body())
    assert chip.writes == []


def test_a_relay_on_a_missing_chip_refuses_and_comes_back_as_commanded(
    tmp_path: Path, recording_ctx: RecordingContext
) -> None:
    chip = FakeChip({17: 0})
    opener = Opener(chip, failures=1)
    specs = gpio_specs(tmp_path, BUZZER, DOOR, READER)
    driver = GpioDriver(specs, recording_ctx, opener=opener, retry_min_s=0.05, retry_max_s=0.05)

    async def body() -> None:
        async with running(driver):
            await until(lambda: opener.calls == 1)
            with pytest.raises(CommandError, match=r"^relay buzzer-office cannot switch: no "):
                await driver.command("buzzer-office", "on", {})
            await until(lambda: recording_ctx.availability.get("buzzer-office") == (True, ""))
            await driver.command("buzzer-office", "on", {})
            with pytest.raises(CommandError, match="is an input; only relays take commands"):
                await driver.command("door-b2", "on", {})
            chip.broken = True
            with pytest.raises(CommandError, match="No such device"):
                await driver.command("buzzer-office", "off", {})
            chip.broken = False
            chip.unplug()  # requested again: at the state last commanded, on
            await until(lambda: opener.calls == 3)

    asyncio.run(body())
    assert chip.requested[5] == LineConfig(Bias.NONE, 0, output=0)
    assert chip.requested[17] == LineConfig(Bias.PULL_UP, 5)


def test_read_once_does_not_touch_a_relay(tmp_path: Path) -> None:
    chip = FakeChip({})
    opener = Opener(chip)
    (spec,) = gpio_specs(tmp_path, BUZZER)
    result = asyncio.run(read_once(spec, opener=opener))
    assert not result.ok and "requesting its line would switch it" in result.fault
    assert opener.calls == 0


def test_the_sample_has_a_relay_and_the_readme_shows_grant_from() -> None:
    sample = yaml.safe_load((DRIVER.folder / "sample.yaml").read_text("utf-8"))
    assert "relay" in {d["driver"]["role"] for d in sample["devices"]}
    readme = (DRIVER.folder / "README.md").read_text("utf-8")
    assert "grant_from: [reader-b1-lobby]" in readme


def test_real_libgpiod_builds_an_output_request_before_finding_no_chip(tmp_path: Path) -> None:
    from drivers.gpio.source import ChipUnavailable, open_gpiod

    lines = {3: LineConfig(Bias.PULL_UP, 10), 5: LineConfig(Bias.NONE, 0, output=1)}
    with pytest.raises(ChipUnavailable, match=r"gpiochip9: is this a Raspberry Pi\?"):
        open_gpiod(str(tmp_path / "gpiochip9"), lines)
