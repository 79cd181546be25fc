"""Helpers of the Modbus driver's tests: configs from YAML snippets, a running driver."""

from __future__ import annotations

import asyncio
import contextlib
import textwrap
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from drivers.modbus import DRIVER, ModbusDriver
from drivers.modbus.decode import ByteOrder, DataType, encode
from drivers.modbus.plan import plan_device
from drivers.modbus.profile import load_profile
from gateway.config import load_config
from gateway.sdk.driver import DeviceSpec, DriverContext
from gateway.sdk.model import Event, EventType, Message, Telemetry

from .peers import PeerUnit, float32_words

__all__ = [
    "config_file",
    "events",
    "meter_unit",
    "readings",
    "running",
    "specs",
    "telemetry",
    "wait_until",
]

HEAD = """\
version: 1
site: {id: test-site}
gateway: {id: gw-test}
broker: {url: "mqtt://127.0.0.1:1883"}
devices:
"""


def config_file(tmp_path: Path, devices: str) -> Path:
    """A complete config file with these devices (YAML list items, any indentation)."""
    path = tmp_path / "site.yaml"
    path.write_text(HEAD + textwrap.indent(textwrap.dedent(devices), "  "))
    return path


def specs(tmp_path: Path, devices: str) -> list[DeviceSpec]:
    """The validated devices of a config made of these device entries."""
    loaded = load_config(config_file(tmp_path, devices), {"modbus": DRIVER})
    return list(loaded.devices)


@contextlib.asynccontextmanager
async def running(devices: list[DeviceSpec], ctx: DriverContext) -> AsyncIterator[ModbusDriver]:
    """A Modbus driver running its buses until the block ends."""
    driver = ModbusDriver(devices, ctx)
    task = asyncio.create_task(driver.run())
    try:
        yield driver
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll `predicate` every 10 ms; fails the test after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.01)


def telemetry(messages: list[Message], device: str) -> list[Telemetry]:
    return [m for m in messages if isinstance(m, Telemetry) and m.device.id == device]


def events(messages: list[Message], device: str, kind: EventType | None = None) -> list[Event]:
    return [
        m
        for m in messages
        if isinstance(m, Event) and m.device.id == device and (kind is None or m.type is kind)
    ]


def meter_unit(unit: int, profile: str, **values: float | bool) -> PeerUnit:
    """A peer unit implementing every register the profile's reads cover, with `values`
    (by point name, in the device's raw units) and zero elsewhere.

    float32 values are encoded by pymodbus, so those tests do not check the driver's
    decoder against itself; other types use the driver's encoder (tested on vectors).
    """
    prof = load_profile(profile)
    peer = PeerUnit(unit)
    for read in plan_device(prof.points, max_gap=prof.max_gap, profile=prof).reads:
        peer.fill(read.table, read.start, read.count)
    for name, value in values.items():
        p = prof.point(name)
        if p.decode is DataType.FLOAT32 and p.order is ByteOrder.ABCD:
            words = float32_words(float(value))
        elif p.decode is DataType.BOOL:
            words = [1 if value else 0]
        else:
            words = encode(value, p.decode, p.order)
        peer.set(p.table, p.address, words)
    return peer


def readings(t: Telemetry) -> dict[str, tuple[float | int | bool | str, str, str]]:
    """name -> (value, unit, type) of one telemetry message."""
    return {r.name: (r.value, str(r.unit), str(r.type)) for r in t.readings}
