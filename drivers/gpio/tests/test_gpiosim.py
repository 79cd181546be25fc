"""The real GpiodSource and libgpiod against a kernel gpio-sim chip (skipped without one).

Everything but the wiring is real: the driver requests the lines through libgpiod, the
kernel debounces and stamps the edges, `add_reader` wakes the event loop.  Run as root
on a kernel with gpio-sim:  sudo modprobe gpio-sim && sudo .venv/bin/pytest
drivers/gpio/tests/test_gpiosim.py
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from drivers.gpio import DRIVER, GpioDriver
from drivers.gpio.check import check_lines
from drivers.gpio.driver import read_once
from drivers.gpio.tests.gpiosim import SimChip, unavailable
from gateway.sdk.model import EventType
from tests.driverkit import device_specs, running, until
from tests.driverkit import event_types as types
from tests.recording import RecordingContext

REASON = unavailable()
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")

SOS_LINE, RELAY_LINE = 3, 5


@pytest.fixture
def sim() -> Iterator[SimChip]:
    with SimChip() as chip:
        yield chip


def devices(tmp_path: Path, sim: SimChip) -> list[Any]:
    sos = {"chip": sim.path, "line": SOS_LINE, "role": "sos_button", "debounce_ms": 10}
    relay = {"chip": sim.path, "line": RELAY_LINE, "role": "relay"}
    return device_specs(
        tmp_path, DRIVER, ("sos", "elderly_alarm", sos), ("buzzer", "elderly_alarm", relay)
    )


def test_a_press_on_a_kernel_chip_is_one_sos_and_a_relay_drives_the_line(
    tmp_path: Path, sim: SimChip, recording_ctx: RecordingContext
) -> None:
    driver = GpioDriver(devices(tmp_path, sim), recording_ctx)  # the real open_gpiod

    async def body() -> None:
        async with running(driver):
            await until(lambda: recording_ctx.availability.get("sos", (False, ""))[0] is True)
            assert sim.value(SOS_LINE) == 1  # the driver's pull-up: a button at rest
            sim.set(SOS_LINE, 0)  # pressed: the contact pulls the line to GND
            await until(lambda: EventType.ELDERLY_SOS in types(recording_ctx), timeout=5)
            sim.set(SOS_LINE, 1)
            assert await driver.command("buzzer", "on", {}) == {"state": "on"}
            assert sim.value(RELAY_LINE) == 1
            await driver.command("buzzer", "off", {})
            assert sim.value(RELAY_LINE) == 0
            await asyncio.sleep(0.1)  # a release gives nothing; let one arrive if it would

    asyncio.run(body())
    assert types(recording_ctx, "sos") == [EventType.ELDERLY_SOS]


def test_read_and_check_through_the_kernel_chip(tmp_path: Path, sim: SimChip) -> None:
    specs = devices(tmp_path, sim)
    read = asyncio.run(read_once(specs[0]))
    assert [(p.value, p.raw) for p in read.points] == [("released", f"line {SOS_LINE} level 1")]

    async def check() -> Any:
        loop = asyncio.get_running_loop()
        loop.call_later(0.2, sim.set, SOS_LINE, 0)
        loop.call_later(0.4, sim.set, SOS_LINE, 1)
        return await check_lines(specs, window_s=1.0, toggle=True, pulse_s=0.1)

    sos, buzzer = asyncio.run(check())
    assert (sos.state, sos.edges, sos.fault) == ("released", [0, 1], "")
    assert buzzer.note == "switched on for 0.1 s, then off" and sim.value(RELAY_LINE) == 0
