"""Device settings are validated up front, with file:line; a bus's devices must agree."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from drivers.modbus import DRIVER, validate_group
from drivers.modbus.settings import ModbusSettings, SerialBus, TcpBus
from gateway.config import ConfigError, load_config

from .helpers import config_file, specs

SAMPLE = Path(__file__).resolve().parent.parent / "sample.yaml"

METER = """\
- id: m1
  kind: meter
  location: {building: A}
  driver:
    type: modbus
    bus: {port: /dev/ttyUSB0, baud: 9600}
    unit_id: 1
    profile: eastron_sdm120
"""


def test_sample_config_validates_through_the_installed_entry_point() -> None:
    loaded = load_config(SAMPLE)  # drivers come from the entry points
    mine = [d for d in loaded.devices if d.driver == "modbus"]
    buses = {type(d.settings.bus) for d in mine if isinstance(d.settings, ModbusSettings)}
    assert buses == {SerialBus, TcpBus}
    assert {str(d.kind) for d in mine} == {"meter", "smoke"}
    assert validate_group(loaded.devices) == []


def problems(tmp_path: Path, devices: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(config_file(tmp_path, devices), {"modbus": DRIVER})
    return [str(p) for p in info.value.problems]


@pytest.mark.parametrize(
    ("old", "new", "line", "path", "message"),
    [
        (
            "baud: 9600",
            "baud: 9601",
            11,
            "devices[0].driver.bus.serial.baud",
            "Input should be 1200",
        ),
        (
            "unit_id: 1",
            "unit_id: 0",
            12,
            "devices[0].driver.unit_id",
            "an RS-485 device has an address from 1 to 247",
        ),
        (
            "eastron_sdm120",
            "eastron_sdm12O",
            13,
            "devices[0].driver.profile",
            "unknown profile 'eastron_sdm12O'",
        ),
        (
            "kind: meter",
            "kind: smoke",
            13,
            "devices[0].driver.profile",
            "profile eastron_sdm120 is for a meter device, and this one is a smoke",
        ),
        ("/dev/ttyUSB0", "ttyUSB0", 11, "devices[0].driver.bus.serial.port", "absolute path"),
        (
            "{port: /dev/ttyUSB0, baud: 9600}",
            "{host: 10.0.0.5, port: 502, framer: ascii}",
            11,
            "devices[0].driver.bus.tcp.framer",
            "'socket' or 'rtu'",
        ),
        (
            "unit_id: 1",
            "unit_id: 1\n    poll_interval: 5",
            13,
            "devices[0].driver.poll_interval",
            "unknown key",
        ),
    ],
)
def test_a_wrong_setting_names_file_line_and_key(
    tmp_path: Path, old: str, new: str, line: int, path: str, message: str
) -> None:
    found = problems(tmp_path, METER.replace(old, new))
    assert len(found) == 1, found
    file = tmp_path / "site.yaml"
    assert found[0].startswith(f"{file}:{line} {path}: "), found[0]
    assert message in found[0]


def test_tcp_devices_accept_unit_id_0_and_255(tmp_path: Path) -> None:
    devices = METER.replace("{port: /dev/ttyUSB0, baud: 9600}", "{host: 10.0.0.5}")
    (spec,) = specs(tmp_path, devices.replace("unit_id: 1", "unit_id: 255"))
    assert isinstance(spec.settings, ModbusSettings)
    assert spec.settings.bus.key == ("tcp", "10.0.0.5", "502")


def _device(i: int, bus: str, unit: int) -> str:
    return (
        METER.replace("id: m1", f"id: m{i}")
        .replace("{port: /dev/ttyUSB0, baud: 9600}", bus)
        .replace("unit_id: 1", f"unit_id: {unit}")
    )


def test_group_devices_on_one_port_must_share_line_settings_and_not_unit_ids(
    tmp_path: Path,
) -> None:
    devices = "".join(
        [
            _device(1, "{port: /dev/ttyUSB0, baud: 9600}", 1),
            _device(2, "{port: /dev/ttyUSB0, baud: 19200}", 2),  # another baud on the same wire
            _device(3, "{port: /dev/ttyUSB0, baud: 9600, timeout_s: 2}", 1),  # same address
            _device(4, "{port: /dev/ttyUSB1, baud: 19200}", 1),  # another port: fine
            _device(5, "{host: 10.0.0.5, framer: rtu}", 1),
            _device(6, "{host: 10.0.0.5, framer: socket}", 2),  # one endpoint, two framings
        ]
    )
    # The driver's own check, without load_config's (which would refuse the file).
    unchecked = {"modbus": replace(DRIVER, check_devices=None)}
    loaded = load_config(config_file(tmp_path, devices), unchecked)
    assert validate_group(loaded.devices) == [
        "m2: bus.baud is 19200, but m1 on the same bus (/dev/ttyUSB0 19200 8N1) has 9600; "
        "devices on one bus share its settings",
        "m3: unit_id 1 is already used by m1 on /dev/ttyUSB0 9600 8N1; each device on a bus "
        "needs its own address",
        "m6: bus.framer is socket, but m5 on the same bus (10.0.0.5:502 (socket)) has rtu; "
        "devices on one bus share its settings",
    ]


def test_default_inter_frame_gap_is_three_and_a_half_characters() -> None:
    assert SerialBus(port="/dev/x", baud=9600).gap_s == pytest.approx(3.5 * 10 / 9600)
    assert SerialBus(port="/dev/x", baud=9600, parity="E").gap_s == pytest.approx(3.5 * 11 / 9600)
    assert SerialBus(port="/dev/x", baud=115200).gap_s == pytest.approx(0.00175)
    assert SerialBus(port="/dev/x", inter_frame_gap_ms=20).gap_s == pytest.approx(0.02)


def test_a_site_profile_is_given_by_absolute_path_and_validated_up_front(tmp_path: Path) -> None:
    mine = tmp_path / "acme_em1.yaml"
    mine.write_text(
        "model: ACME EM1\nkind: meter\nsource: ACME EM1 manual, Modbus register table\n"
        "points:\n  - {name: voltage, table: input, address: 0, decode: uint16, scale: 0.1, unit: V}\n"
    )
    (spec,) = specs(tmp_path, METER.replace("eastron_sdm120", str(mine)))
    assert isinstance(spec.settings, ModbusSettings)
    assert spec.settings.profile_model.model == "ACME EM1"
    broken = tmp_path / "broken.yaml"
    broken.write_text(mine.read_text().replace("unit: V", "unit: volts"))
    (found,) = problems(tmp_path, METER.replace("eastron_sdm120", str(broken)))
    assert "devices[0].driver.profile: profile file" in found
    assert f"{broken}:5 points[0].unit" in found
    assert "\n" not in found  # one line: the device's line, then the profile file's
    (relative,) = problems(tmp_path, METER.replace("eastron_sdm120", "acme_em1.yaml"))
    assert "give the absolute path of a profile file" in relative


def test_gateway_validate_reports_bus_conflicts_at_their_lines(tmp_path: Path) -> None:
    devices = "".join(
        [
            _device(1, "{port: /dev/ttyUSB0, baud: 9600}", 1),
            _device(2, "{port: /dev/ttyUSB0, baud: 19200}", 2),
            _device(3, "{port: /dev/ttyUSB0, baud: 9600}", 1),
        ]
    )
    with pytest.raises(ConfigError) as info:
        load_config(config_file(tmp_path, devices), drivers={"modbus": DRIVER})
    text = str(info.value)
    assert "devices[1].driver.bus.baud" in text and "m1 on the same bus" in text
    assert "devices[2].driver.unit_id" in text and "already used by m1" in text
