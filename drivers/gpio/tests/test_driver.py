"""The driver glue in real time: a fake chip feeds edges through the real GpioDriver.run()."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from community_protocol.schemas import validator
from drivers.gpio import DRIVER, GpioDriver
from drivers.gpio.driver import read_once
from drivers.gpio.settings import Bias
from drivers.gpio.source import ChipUnavailable, LineConfig, explain, open_gpiod
from drivers.gpio.tests.fakechip import FakeChip, Opener
from gateway.sdk.model import ClockState, Event, EventType, Identity, Message, encode
from tests.driverkit import device_specs, running, until
from tests.driverkit import event_types as types
from tests.recording import RecordingContext

E = EventType


DOOR = (
    "door",
    "door",
    {
        "line": 17,
        "role": "door_contact",
        "contact": "nc",
        "rex_line": 27,
        "debounce_ms": 10,
        "held_open_s": 0.4,
    },
)
SMOKE = ("smoke", "smoke", {"line": 22, "role": "smoke_relay", "contact": "nc", "debounce_ms": 10})
SOS = ("sos", "elderly_alarm", {"line": 23, "role": "sos_button", "debounce_ms": 30})
# At rest with pull-ups: NC contacts closed (0), NO contacts open (1).
REST = {17: 0, 27: 1, 22: 0, 23: 1}


def test_door_forced_held_open_and_exit_button(
    tmp_path: Path, recording_ctx: RecordingContext
) -> None:
    chip = FakeChip(REST)
    driver = GpioDriver(device_specs(tmp_path, DRIVER, DOOR), recording_ctx, opener=Opener(chip))

    async def body() -> None:
        async with running(driver):
            await until(lambda: recording_ctx.availability.get("door") == (True, ""))
            chip.set(17, 1)  # opened with nobody pressing the exit button
            await until(lambda: E.DOOR_HELD_OPEN in types(recording_ctx))
            chip.set(17, 0)
            await until(lambda: E.DOOR_CLOSED in types(recording_ctx))
            chip.set(27, 0)  # exit button pressed...
            chip.set(27, 1)  # ...and released within the debounce: a 2 ms press is noise
            await asyncio.sleep(0.05)
            chip.set(27, 0)
            await asyncio.sleep(0.05)
            chip.set(27, 1)
            chip.set(17, 1)
            await asyncio.sleep(0.05)
            chip.set(17, 0)
            await until(lambda: types(recording_ctx).count(E.DOOR_CLOSED) == 2)

    asyncio.run(body())
    assert types(recording_ctx) == [
        E.DOOR_OPENED,
        E.DOOR_FORCED,
        E.DOOR_HELD_OPEN,
        E.DOOR_CLOSED,
        E.DOOR_REQUEST_TO_EXIT,
        E.DOOR_OPENED,
        E.DOOR_CLOSED,
    ]
    # What the platform receives is valid against the published event schema.
    check = validator("event")
    for n, m in enumerate(recording_ctx.messages):
        check.validate(json.loads(encode(m, Identity("s", "g"), n + 1, ClockState.SYNCED)))
    # Each line is requested with its wiring, so the kernel can pull it up and debounce.
    assert chip.requested == {17: LineConfig(Bias.PULL_UP, 10), 27: LineConfig(Bias.PULL_UP, 10)}


def test_a_grant_from_outside_lets_the_door_open(
    tmp_path: Path, recording_ctx: RecordingContext
) -> None:
    chip = FakeChip(REST)
    driver = GpioDriver(device_specs(tmp_path, DRIVER, DOOR), recording_ctx, opener=Opener(chip))

    async def body() -> None:
        async with running(driver):
            await until(lambda: recording_ctx.availability.get("door") == (True, ""))
            driver.grant("door")  # as the card reader will
            chip.set(17, 1)
            await asyncio.sleep(0.05)
            chip.set(17, 0)
            await until(lambda: E.DOOR_CLOSED in types(recording_ctx))

    asyncio.run(body())
    assert types(recording_ctx) == [E.DOOR_OPENED, E.DOOR_CLOSED]


def test_smoke_relay_and_a_held_sos_button(tmp_path: Path, recording_ctx: RecordingContext) -> None:
    chip = FakeChip(REST)
    driver = GpioDriver(
        device_specs(tmp_path, DRIVER, SMOKE, SOS), recording_ctx, opener=Opener(chip)
    )
    pressed: list[datetime] = []

    async def body() -> None:
        async with running(driver):
            await until(lambda: len(recording_ctx.availability) == 2)
            chip.set(22, 1)  # NC relay opens: alarm
            await until(lambda: E.SMOKE_ALARM in types(recording_ctx))
            chip.set(22, 0)
            # A resident presses and holds the button; it bounces on the way down.
            for level in (0, 1, 0, 1, 0):
                chip.set(23, level)
            pressed.append(datetime.now(UTC))
            await asyncio.sleep(0.3)
            chip.set(23, 1)
            await asyncio.sleep(0.1)

    asyncio.run(body())
    assert types(recording_ctx, "smoke") == [E.SMOKE_ALARM, E.SMOKE_CLEARED]
    assert types(recording_ctx, "sos") == [E.ELDERLY_SOS]
    sos = next(m for m in recording_ctx.messages if m.device.id == "sos")
    assert isinstance(sos, Event) and sos.data == {"input": "sos_button"}
    # Stamped when the button went down, not when the 30 ms debounce let it through.
    assert abs(sos.ts - pressed[0]) < timedelta(milliseconds=10)
    assert driver.health().extra["events"] == 3


def test_smoke_relay_in_alarm_at_start_is_reported(
    tmp_path: Path, recording_ctx: RecordingContext
) -> None:
    chip = FakeChip({**REST, 22: 1})
    driver = GpioDriver(device_specs(tmp_path, DRIVER, SMOKE), recording_ctx, opener=Opener(chip))

    async def body() -> None:
        async with running(driver):
            await until(lambda: E.SMOKE_ALARM in types(recording_ctx))

    asyncio.run(body())


def test_missing_chip_is_explained_logged_once_and_retried(
    tmp_path: Path, recording_ctx: RecordingContext, caplog: pytest.LogCaptureFixture
) -> None:
    chip = FakeChip(REST)
    opener = Opener(chip, failures=3)
    driver = GpioDriver(
        device_specs(tmp_path, DRIVER, SMOKE),
        recording_ctx,
        opener=opener,
        retry_min_s=0.02,
        retry_max_s=0.05,
    )

    async def body() -> None:
        async with running(driver):
            await until(lambda: opener.calls >= 2)
            assert recording_ctx.availability["smoke"] == (
                False,
                "no /dev/gpiochip0: is this a Raspberry Pi? is the user in group gpio?",
            )
            await until(lambda: recording_ctx.availability["smoke"] == (True, ""))
            chip.set(22, 1)
            await until(lambda: E.SMOKE_ALARM in types(recording_ctx))
            chip.unplug()  # the HAT is pulled: unavailable again, then back
            await until(lambda: recording_ctx.availability["smoke"][0] is False)
            await until(lambda: recording_ctx.availability["smoke"] == (True, ""))

    with caplog.at_level(logging.INFO, logger=recording_ctx.logger.name):
        asyncio.run(body())
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings[0] == (
        "gpio lines on /dev/gpiochip0 unavailable, retrying: "
        "no /dev/gpiochip0: is this a Raspberry Pi? is the user in group gpio?"
    )
    assert len(warnings) == 2  # three failed opens, one line; the unplug, one more
    assert chip.closed
    # The relay stayed in alarm over the reconnect: no second alarm.
    assert types(recording_ctx) == [E.SMOKE_ALARM]


class Timed(Opener):
    def __init__(self, chip: FakeChip, failures: int) -> None:
        super().__init__(chip, failures)
        self.times: list[float] = []

    def __call__(self, path: str, lines: Mapping[int, LineConfig]) -> FakeChip:
        self.times.append(time.monotonic())
        return super().__call__(path, lines)


def test_retries_back_off_and_start_over_after_a_good_spell(
    tmp_path: Path, recording_ctx: RecordingContext
) -> None:
    chip = FakeChip(REST)
    opener = Timed(chip, failures=4)
    driver = GpioDriver(
        device_specs(tmp_path, DRIVER, SMOKE),
        recording_ctx,
        opener=opener,
        retry_min_s=0.2,
        retry_max_s=0.8,
    )

    async def body() -> None:
        async with running(driver):
            await until(lambda: recording_ctx.availability.get("smoke") == (True, ""))
            opener.failures = 1_000  # unplugged for good now
            chip.unplug()
            await until(lambda: opener.calls >= 7)

    asyncio.run(body())
    gaps = [b - a for a, b in itertools.pairwise(opener.times)]
    # 0.2, 0.4, 0.8, 0.8 (the cap), connected; then 0.2 again after the fresh fault.  A
    # loaded machine adds to each gap: up to 0.15 s is allowed, less than any step, so
    # each gap still tells which step it was (0.05 s steps with 0.08 s allowed did not).
    for gap, expected in zip(gaps, [0.2, 0.4, 0.8, 0.8, 0.2, 0.4], strict=True):
        assert expected - 0.005 <= gap < expected + 0.15, gaps


def test_two_devices_on_one_line_are_refused(
    tmp_path: Path, recording_ctx: RecordingContext
) -> None:
    chip = FakeChip(REST)
    other = ("sos2", "elderly_alarm", {**SOS[2], "line": 22})
    driver = GpioDriver(
        device_specs(tmp_path, DRIVER, SMOKE, other), recording_ctx, opener=Opener(chip)
    )

    async def body() -> None:
        async with running(driver):
            await until(lambda: recording_ctx.availability.get("smoke") == (True, ""))

    asyncio.run(body())
    assert recording_ctx.availability["sos2"] == (
        False,
        "line 22 of /dev/gpiochip0 is already used by device smoke",
    )
    assert list(chip.requested) == [22]


class RefusesSmoke(RecordingContext):
    """An outbox that refuses the smoke detector's messages, as a full disk would."""

    async def emit(self, message: Message) -> None:
        if message.device.id == "smoke":
            raise OSError("database or disk is full")
        await super().emit(message)


def test_an_event_the_outbox_refuses_does_not_stop_the_other_inputs(tmp_path: Path) -> None:
    ctx = RefusesSmoke()
    chip = FakeChip(REST)
    opener = Opener(chip)
    driver = GpioDriver(device_specs(tmp_path, DRIVER, SMOKE, SOS), ctx, opener=opener)

    async def body() -> None:
        async with running(driver):
            await until(lambda: ctx.availability.get("sos") == (True, ""))
            chip.set(22, 1)
            await until(lambda: driver.health().errors == 1)
            chip.set(23, 0)
            await until(lambda: E.ELDERLY_SOS in types(ctx))

    asyncio.run(body())
    assert opener.calls == 1 and ctx.availability["smoke"] == (True, "")
    assert driver.health().last_error == "smoke: database or disk is full"


def test_real_libgpiod_on_a_machine_without_the_chip(tmp_path: Path) -> None:
    path = str(tmp_path / "gpiochip7")
    with pytest.raises(
        ChipUnavailable,
        match=r"^no .*gpiochip7: is this a Raspberry Pi\? is the user in group gpio\?$",
    ):
        open_gpiod(path, {3: LineConfig(Bias.PULL_UP, 10)})
    spec = device_specs(tmp_path, DRIVER, ("s", "smoke", {**SMOKE[2], "chip": path}))[0]
    result = asyncio.run(read_once(spec))
    assert not result.ok and "gpiochip7" in result.fault


def test_a_chip_the_user_may_not_open_says_which_group(tmp_path: Path) -> None:
    chip = tmp_path / "gpiochip0"
    chip.touch()
    denied = PermissionError(13, "Permission denied")
    assert (
        explain(str(chip), denied) == f"no access to {chip}: add the gateway's user to group gpio"
    )
    busy = OSError(16, "Device or resource busy")
    assert explain(str(chip), busy) == (
        f"{chip}: a line is held by another program; `gpioinfo` shows its consumer"
    )
    assert explain(str(chip), OSError(5, "Input/output error")) == f"{chip}: Input/output error"


def test_read_once_names_each_input_state(tmp_path: Path) -> None:
    chip = FakeChip({**REST, 17: 1})
    door = device_specs(tmp_path, DRIVER, DOOR)[0]
    result = asyncio.run(read_once(door, opener=Opener(chip)))
    assert [(p.name, p.value, p.raw) for p in result.points] == [
        ("door_contact", "open", "line 17 level 1"),
        ("request_to_exit", "released", "line 27 level 1"),
    ]
    assert chip.closed


def test_run_returns_only_when_cancelled_even_with_nothing_to_watch(
    recording_ctx: RecordingContext,
) -> None:
    # The driver contract (gateway/sdk/driver.py): run() returns only when cancelled.
    driver = GpioDriver([], recording_ctx, opener=Opener(FakeChip({})))

    async def body() -> None:
        async with running(driver):
            await asyncio.sleep(0.05)

    asyncio.run(body())
