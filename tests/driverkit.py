"""What driver tests share: one-device configs, config problems, running a driver."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.config import ConfigError, load_config
from gateway.driver import DeviceSpec, DriverHealth, DriverInfo
from gateway.model import Event, EventType
from tests.conftest import RecordingContext

__all__ = [
    "config_problems",
    "event_types",
    "events",
    "one_device_config",
    "run_driver",
    "until",
]


def one_device_config(
    tmp_path: Path,
    driver_type: str,
    driver: dict[str, Any],
    *,
    kind: str,
    device_id: str = "dev-1",
) -> Path:
    """A complete config file with one device of `driver_type` (settings `driver`)."""
    doc = {
        "version": 1,
        "site": {"id": "s"},
        "gateway": {"id": "g"},
        "broker": {"url": "mqtt://127.0.0.1:1883"},
        "devices": [
            {
                "id": device_id,
                "kind": kind,
                "location": {"building": "1"},
                "driver": {"type": driver_type, **driver},
            }
        ],
    }
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def config_problems(path: Path, info: DriverInfo) -> str:
    """The text of the ConfigError the file must raise (the test fails if it loads)."""
    with pytest.raises(ConfigError) as raised:
        load_config(path, drivers={info.name: info})
    return str(raised.value)


def events(ctx: RecordingContext, device_id: str | None = None) -> list[Event]:
    """The events the driver emitted, of one device or all."""
    return [
        m
        for m in ctx.messages
        if isinstance(m, Event) and (device_id is None or m.device.id == device_id)
    ]


def event_types(ctx: RecordingContext, device_id: str) -> list[EventType]:
    return [e.type for e in events(ctx, device_id)]


async def until(done: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll `done` on the event loop; TimeoutError after `timeout` seconds."""
    async with asyncio.timeout(timeout):
        while not done():
            await asyncio.sleep(0.01)


def run_driver(
    info: DriverInfo,
    specs: list[DeviceSpec],
    ctx: RecordingContext,
    ready: Callable[[], bool],
    script: Callable[[], Awaitable[None]],
    timeout: float = 20.0,
) -> DriverHealth:
    """Run the driver until `ready`, then the script; the driver must still be running
    after it.  Returns the driver's health."""

    async def main() -> DriverHealth:
        driver = info.factory(specs, ctx)
        task = asyncio.create_task(driver.run())
        try:
            async with asyncio.timeout(timeout):
                await until(ready, timeout)
                await script()
                assert not task.done(), task
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        return driver.health()

    return asyncio.run(main())
