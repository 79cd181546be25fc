"""Device settings are checked before any port is opened, with the file's line numbers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from drivers.serial_line import DRIVER
from drivers.serial_line.settings import SerialLineSettings
from gateway.config import load_config
from gateway.sdk.model import Kind
from tests.driverkit import config_problems, one_device_config

FOLDER = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, driver: dict[str, Any], kind: str = "elderly_alarm") -> Path:
    return one_device_config(tmp_path, "serial_line", driver, kind=kind, device_id="sos-1")


def problems(path: Path) -> str:
    return config_problems(path, DRIVER)


def test_the_sample_config_validates() -> None:
    loaded = load_config(FOLDER / "sample.yaml", drivers={"serial_line": DRIVER})
    kinds = {d.kind for d in loaded.devices}
    assert kinds == {Kind.ELDERLY_ALARM, Kind.SMOKE}
    ports = {d.settings.port for d in loaded.devices}  # type: ignore[attr-defined]
    assert len(ports) == 1, "the sample shows several transmitters sharing one receiver"


def test_defaults_come_from_the_profile() -> None:
    s = SerialLineSettings.model_validate({"port": "/dev/ttyUSB0", "code": "1A2B3C"})
    assert (s.profile, s.line_baud, s.window_s) == ("rf433_text", 9600, 3.0)
    s = SerialLineSettings.model_validate(
        {"port": "/dev/ttyUSB0", "code": "1A2B3C", "baud": 115200, "dedupe_s": 1.5}
    )
    assert (s.line_baud, s.window_s) == (115200, 1.5)


def test_a_code_yaml_reads_as_a_number_is_refused_with_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    write(tmp_path, {"port": "/dev/ttyUSB0", "code": "x"})
    path.write_text(path.read_text().replace("code: x", "code: 012345"))
    line = path.read_text().splitlines().index("    code: 012345") + 1
    text = problems(path)
    assert f"site.yaml:{line} devices[0].driver.code" in text
    assert "write the code in quotes" in text


def test_a_code_of_the_wrong_shape_names_the_pattern(tmp_path: Path) -> None:
    text = problems(write(tmp_path, {"port": "/dev/ttyUSB0", "code": "1a2b3c"}))
    assert "does not look like a rf433_text code" in text and "[0-9A-F]{6}" in text


def test_an_unknown_profile_lists_the_known_ones(tmp_path: Path) -> None:
    text = problems(write(tmp_path, {"port": "/dev/ttyUSB0", "code": "1A2B3C", "profile": "x"}))
    assert "unknown profile 'x'" in text and "rf433_text" in text and "ev1527_kv" in text


def test_misspelled_keys_and_missing_port_are_reported_together(tmp_path: Path) -> None:
    text = problems(write(tmp_path, {"code": "1A2B3C", "bauds": 9600}))
    assert "devices[0].driver.port" in text and "field required" in text
    assert "devices[0].driver.bauds" in text and "unknown key" in text


def test_a_meter_is_not_a_kind_this_driver_handles(tmp_path: Path) -> None:
    text = problems(write(tmp_path, {"port": "/dev/ttyUSB0", "code": "1A2B3C"}, kind="meter"))
    assert "does not handle kind meter" in text
