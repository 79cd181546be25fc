"""Conflicts between devices: validate refuses them with file:line; run starts the rest.

One policy for every driver (docs/config.md, "Conflicts between devices"): each
driver's `check_devices` names the devices in conflict; `gateway validate` exits 2 on
them, and a gateway that runs such a config anyway leaves exactly those devices
unstarted, published unavailable with the reason, and runs everything else.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from gateway.config import ConfigError, conflicting_devices, load_config
from gateway.process.runtime import Gateway
from gateway.sdk.model import DeviceRef
from gateway.sdk.registry import available_drivers
from tests.harness import GATEWAY, GatewayProc, write_config
from tests.peers import Mosquitto, free_port, wait_for


def device(dev_id: str, kind: str, **driver: Any) -> dict[str, Any]:
    return {"id": dev_id, "kind": kind, "location": {"building": "1"}, "driver": driver}


def pendant(dev_id: str, code: str, **extra: Any) -> dict[str, Any]:
    return device(
        dev_id, "elderly_alarm", type="serial_line", port="/dev/ttyUSB0", code=code, **extra
    )


def dlt(dev_id: str, address: str, **bus: Any) -> dict[str, Any]:
    return device(
        dev_id, "meter", type="dlt645", address=address, bus={"port": "/dev/ttyUSB1", **bus}
    )


def gpio(dev_id: str, line: int, **extra: Any) -> dict[str, Any]:
    return device(dev_id, "elderly_alarm", type="gpio", line=line, role="sos_button", **extra)


def modbus(dev_id: str, unit: int, port: int) -> dict[str, Any]:
    return device(
        dev_id,
        "meter",
        type="modbus",
        bus={"host": "127.0.0.1", "port": port, "timeout_s": 0.2},
        unit_id=unit,
        profile="eastron_sdm120",
    )


def problems_of(tmp_path: Path, devices: list[dict[str, Any]]) -> list[str]:
    path = write_config(tmp_path / "gw.yaml", "mqtt://127.0.0.1:1883", devices)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return [str(p).split(" ", 1)[1] for p in info.value.problems]


def test_two_pendants_with_one_code_on_one_receiver(tmp_path: Path) -> None:
    found = problems_of(tmp_path, [pendant("sos-101", "1A2B3C"), pendant("sos-102", "1A2B3C")])
    assert found == [
        "devices[1].driver.code: code 1A2B3C is also sos-101's on the receiver /dev/ttyUSB0; "
        "a press could be either device: give each transmitter its own code"
    ]


@pytest.mark.parametrize(
    ("extra", "key", "mine", "theirs"),
    [
        ({"baud": 19200}, "baud", "19200", "9600"),
        ({"dedupe_s": 9}, "dedupe_s", "9", "3"),
    ],
)
def test_one_receiver_has_one_baud_and_one_repeat_window(
    tmp_path: Path, extra: dict[str, Any], key: str, mine: str, theirs: str
) -> None:
    found = problems_of(
        tmp_path, [pendant("sos-101", "1A2B3C"), pendant("sos-102", "0C4F01", **extra)]
    )
    (line,) = found
    assert line.startswith(f"devices[1].driver.{key}: {key} is {mine}") and f"has {theirs}" in line


def test_two_dlt645_meters_at_one_address_or_with_other_serial_settings(tmp_path: Path) -> None:
    found = problems_of(
        tmp_path,
        [
            dlt("m-101", "000012345678"),
            dlt("m-102", "000012345678"),
            dlt("m-103", "000012345679", baud=9600, parity="N"),
        ],
    )
    assert found == [
        "devices[1].driver.address: address 000012345678 is also m-101's on the bus /dev/ttyUSB1; "
        "each meter on a bus has its own address (read it from the meter's label)",
        "devices[2].driver.bus.baud: bus.baud is 9600, but m-101 on the same bus "
        "(/dev/ttyUSB1) has 2400; devices on one bus share its settings",
        "devices[2].driver.bus.parity: bus.parity is N, but m-101 on the same bus "
        "(/dev/ttyUSB1) has E; devices on one bus share its settings",
    ]


def test_gpio_lines_are_not_shared(tmp_path: Path) -> None:
    found = problems_of(tmp_path, [gpio("sos-1", 17), gpio("sos-2", 17)])
    assert found == [
        "devices[1].driver.line: line 17 is also sos-1's on the chip /dev/gpiochip0; one wire, one device"
    ]


def test_a_gpio_chip_takes_at_most_ten_line_settings(tmp_path: Path) -> None:
    # Ten distinct debounce periods fill the kernel's ten attributes; the eleventh fails.
    fitting = [gpio(f"sos-{i}", i, debounce_ms=10 + i) for i in range(10)]
    load_config(write_config(tmp_path / "ok.yaml", "mqtt://127.0.0.1:1883", fitting))
    same_period = gpio("sos-same", 20, debounce_ms=12)  # a period already used: fits
    new_period = gpio("sos-new", 21, debounce_ms=99)
    found = problems_of(tmp_path, [*fitting, same_period, new_period])
    (line,) = found
    assert line.startswith("devices[11].driver.debounce_ms: /dev/gpiochip0 cannot take")
    assert "the kernel allows 10 different line settings per chip" in line


def test_two_zigbee_devices_with_one_friendly_name(tmp_path: Path) -> None:
    found = problems_of(
        tmp_path,
        [
            device("smoke-101", "smoke", type="zigbee2mqtt", friendly_name="b1/101/smoke"),
            device("smoke-102", "smoke", type="zigbee2mqtt", friendly_name="b1/101/smoke"),
        ],
    )
    assert found == [
        "devices[1].driver.friendly_name: friendly_name b1/101/smoke is also smoke-101's on the broker "
        "127.0.0.1:1883 (zigbee2mqtt/); each device has its own name in zigbee2mqtt"
    ]


def test_one_serial_port_is_opened_by_one_driver(tmp_path: Path) -> None:
    """Each driver opens its port exclusively: whichever opens second never works."""
    rtu = device(
        "water-1",
        "meter",
        type="modbus",
        bus={"port": "/dev/ttyUSB1", "baud": 2400, "parity": "E"},
        unit_id=1,
        profile="eastron_sdm120",
    )
    found = problems_of(
        tmp_path,
        [
            dlt("m-101", "000012345678"),
            rtu,
            pendant("sos-1", "1A2B3C"),
            dlt("m-102", "000012345679"),
        ],
    )
    assert found == [
        "devices[1].driver.bus.port: /dev/ttyUSB1 is also the serial port of m-101 (driver "
        "dlt645); a port is opened by one driver only: give each bus its own adapter",
    ]
    # The device named first keeps the port; a running gateway leaves the other unstarted.
    path = write_config(
        tmp_path / "run.yaml", "mqtt://127.0.0.1:1883", [dlt("m-1", "000012345678"), rtu]
    )
    specs = load_config(path, allow_conflicts=True).devices
    assert list(conflicting_devices(specs, available_drivers())) == ["water-1"]


def test_a_misspelt_key_hides_no_conflict(tmp_path: Path) -> None:
    """Every problem in one run: the typo and the clash it would have hidden."""
    found = problems_of(
        tmp_path, [pendant("sos-101", "1A2B3C", dedupe=3), pendant("sos-102", "1A2B3C")]
    )
    assert found == [
        "devices[0].driver.dedupe: unknown key (check the spelling; see the sample config)",
        "devices[1].driver.code: code 1A2B3C is also sos-101's on the receiver /dev/ttyUSB0; "
        "a press could be either device: give each transmitter its own code",
    ]


@pytest.mark.broker
def test_run_starts_everything_but_the_conflicting_devices(
    tmp_path: Path, broker: Mosquitto
) -> None:
    """A config that reaches run with a unit-id clash: the smoke detector is monitored."""
    port = free_port()  # nothing listens: the one started meter just stays offline
    smoke = device(
        "smoke-1", "smoke", type="simulated", events=[{"type": "smoke.alarm", "every_s": 0.2}]
    )
    devices = [
        smoke,
        modbus("meter-101", 5, port),
        modbus("meter-102", 5, port),
        modbus("meter-103", 6, port),
    ]
    path = write_config(tmp_path / "gw.yaml", broker.url, devices)
    with pytest.raises(ConfigError) as info:
        load_config(path)  # what validate, check and first boot do
    (refused,) = info.value.problems
    loaded = load_config(path, allow_conflicts=True)  # what run does
    assert [str(p) for p in loaded.conflicts] == [str(refused)]
    unavailable: dict[str, str] = {}
    seen: list[str] = []

    def on_availability(ref: DeviceRef, available: bool | None, reason: str) -> None:
        if available is False:
            unavailable[ref.id] = reason

    async def scenario() -> None:
        gw = Gateway(loaded)
        gw.availability_observers.append(on_availability)
        gw.message_observers.append(lambda m: seen.append(m.device.id))
        stop = asyncio.Event()
        run = asyncio.create_task(gw.run(stop))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not (
            seen.count("smoke-1") >= 2 and len(unavailable) >= 2
        ):
            await asyncio.sleep(0.05)
        started = set(gw.drivers["modbus"].devices)
        stop.set()
        await run
        assert started == {"meter-103"}

    asyncio.run(scenario())
    assert seen.count("smoke-1") >= 2, "the smoke detector runs"
    assert set(unavailable) >= {"meter-101", "meter-102"}
    assert unavailable["meter-102"].startswith(
        "not started: unit_id 5 is already used by meter-101"
    )
    assert unavailable["meter-101"] == unavailable["meter-102"]


@pytest.mark.broker
def test_gateway_run_prints_each_conflict_and_keeps_running(
    tmp_path: Path, broker: Mosquitto
) -> None:
    """The process: validate exits 2 on the file; run says what it leaves out and runs."""
    port = free_port()
    devices = [
        device("smoke-1", "smoke", type="simulated"),
        modbus("meter-101", 5, port),
        modbus("meter-102", 5, port),
    ]
    path = write_config(tmp_path / "gw.yaml", broker.url, devices)
    validate = subprocess.run(
        [GATEWAY, "validate", "-c", str(path)], capture_output=True, text=True, timeout=30
    )
    assert validate.returncode == 2
    (line,) = [x for x in validate.stderr.splitlines() if "unit_id 5" in x]
    # Commands that operate on the box still work, and say what run leaves out.
    devices_cmd = subprocess.run(
        [GATEWAY, "devices", "-c", str(path)], capture_output=True, text=True, timeout=30
    )
    assert devices_cmd.returncode == 0 and "meter-102" in devices_cmd.stdout
    assert f"{line} (gateway run leaves this device out)" in devices_cmd.stderr
    gw = GatewayProc(path).start()
    try:
        assert wait_for(lambda: "gateway test-site/" in gw.log() and "running" in gw.log())
        assert f"{line} (gateway run leaves this device out)" in gw.log()
        assert "device meter-101 not started: unit_id 5 is already used by meter-101" in gw.log()
        assert gw.running()
    finally:
        assert gw.terminate() == 0
