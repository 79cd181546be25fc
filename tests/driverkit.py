"""What driver tests share: configs with devices, config problems, running a driver."""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.config import ConfigError, load_config
from gateway.sdk.driver import DeviceSpec, Driver, DriverHealth, DriverInfo
from gateway.sdk.model import Event, EventType
from gateway.sdk.pacing import GROUP
from tests.recording import RecordingContext

__all__ = [
    "assert_paced",
    "config_head",
    "config_problem_lines",
    "config_problems",
    "config_with_devices",
    "device_specs",
    "driver_yaml_problems",
    "event_types",
    "events",
    "one_device_config",
    "readme_shows_sample",
    "run_driver",
    "running",
    "until",
]


def config_with_devices(tmp_path: Path, devices: list[dict[str, Any]]) -> Path:
    """A complete config file `site.yaml` in `tmp_path` with these device entries."""
    doc = {
        "version": 1,
        "site": {"id": "s"},
        "gateway": {"id": "g"},
        "broker": {"url": "mqtt://127.0.0.1:1883"},
        "devices": devices,
    }
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def one_device_config(
    tmp_path: Path,
    driver_type: str,
    driver: dict[str, Any],
    *,
    kind: str,
    device_id: str = "dev-1",
) -> Path:
    """A complete config file with one device of `driver_type` (settings `driver`)."""
    return config_with_devices(
        tmp_path,
        [
            {
                "id": device_id,
                "kind": kind,
                "location": {"building": "1"},
                "driver": {"type": driver_type, **driver},
            }
        ],
    )


def device_specs(
    tmp_path: Path, info: DriverInfo, *devices: tuple[str, str, dict[str, Any]]
) -> list[DeviceSpec]:
    """Devices `(id, kind, driver settings)` of one driver, through the real config loader.

    Conflicts between them are allowed, as `gateway run` allows them: a driver's own
    guard against conflicting devices is tested with these.
    """
    path = config_with_devices(
        tmp_path,
        [
            {
                "id": device_id,
                "kind": kind,
                "location": {"building": "1"},
                "driver": {"type": info.name, **driver},
            }
            for device_id, kind, driver in devices
        ],
    )
    return list(load_config(path, drivers={info.name: info}, allow_conflicts=True).devices)


def config_head(driver_type: str, kind: str) -> str:
    """A config's YAML text up to device d1's `driver:` block, whose `type:` is line 10.

    Append the driver's own keys indented by six spaces: they start on line 11, so a
    problem's line number is stable."""
    return (
        "version: 1\n"
        "site: {id: s}\n"
        "gateway: {id: g}\n"
        'broker: {url: "mqtt://127.0.0.1:1883"}\n'
        "devices:\n"
        "  - id: d1\n"
        f"    kind: {kind}\n"
        '    location: {building: "1"}\n'
        "    driver:\n"
        f"      type: {driver_type}\n"
    )


def config_problems(path: Path, info: DriverInfo) -> str:
    """The text of the ConfigError the file must raise (the test fails if it loads)."""
    with pytest.raises(ConfigError) as raised:
        load_config(path, drivers={info.name: info})
    return str(raised.value)


def config_problem_lines(path: Path, info: DriverInfo) -> list[str]:
    """The problems the file must raise, one a line, its path shortened to its name."""
    with pytest.raises(ConfigError) as raised:
        load_config(path, drivers={info.name: info})
    return [str(p).replace(f"{path}:", f"{path.name}:") for p in raised.value.problems]


def driver_yaml_problems(
    tmp_path: Path, info: DriverInfo, kind: str, driver: str, more: str = ""
) -> list[str]:
    """The problems of a config whose device d1 of `kind` has the driver keys `driver`.

    `driver` is YAML text (dedented here; its keys start on line 11) and `more` is YAML
    appended after it, such as further devices.  The file is bad.yaml, named so in each
    problem."""
    path = tmp_path / "bad.yaml"
    body = textwrap.indent(textwrap.dedent(driver), " " * 6)
    path.write_text(config_head(info.name, kind) + body + more)
    return config_problem_lines(path, info)


def readme_shows_sample(info: DriverInfo) -> bool:
    """Whether the driver's README quotes its sample.yaml to the letter."""
    readme = (info.folder / "README.md").read_text(encoding="utf-8")
    return (info.folder / "sample.yaml").read_text(encoding="utf-8") in readme


def events(
    ctx: RecordingContext, device_id: str | None = None, *, of_type: EventType | None = None
) -> list[Event]:
    """The events the driver emitted, of one device or all, of one type or all."""
    return [
        m
        for m in ctx.messages
        if isinstance(m, Event)
        and (device_id is None or m.device.id == device_id)
        and (of_type is None or m.type is of_type)
    ]


def event_types(ctx: RecordingContext, device_id: str | None = None) -> list[EventType]:
    """The types of the events the driver emitted, of one device or all, in order."""
    return [e.type for e in events(ctx, device_id)]


async def until(done: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll `done` on the event loop; TimeoutError after `timeout` seconds."""
    async with asyncio.timeout(timeout):
        while not done():
            await asyncio.sleep(0.01)


@asynccontextmanager
async def running(driver: Driver) -> AsyncIterator[asyncio.Task[None]]:
    """Run `driver.run()` as a task for the body; then cancel it, and it must end cancelled
    (an error it raised instead fails the test)."""
    task = asyncio.create_task(driver.run())
    try:
        yield task
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


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
        async with running(driver) as task, asyncio.timeout(timeout):
            await until(ready, timeout)
            await script()
            assert not task.done(), task
        return driver.health()

    return asyncio.run(main())


def assert_paced(times: Mapping[str, Sequence[float]], interval: float) -> None:
    """Meters (in config order, GROUP + a few) polled as gateway.sdk.pacing says.

    `times[name][k]` is when meter `name`'s k-th reading was taken (three at least).
    All are read at the start; in the next two rounds the first GROUP come before the
    rest, which come at least a quarter of the interval later; each keeps its interval.
    Bounds that only load can stretch, never meet without pacing: a loaded machine
    delays polls, it does not bring a later group forward.
    """
    names = list(times)
    early, late = names[:GROUP], names[GROUP:]
    assert late, "more meters than one group are needed to see the groups"
    assert max(times[n][0] for n in names) < min(times[n][1] for n in names)
    for k in (1, 2):
        assert max(times[n][k] for n in early) < min(times[n][k] for n in late), k
        assert min(times[n][k] for n in late) - min(times[n][k] for n in early) > interval / 4
    for n in names:
        assert 0.8 * interval < times[n][2] - times[n][1] < 1.6 * interval, n
