"""config/example-building.yaml validates, with its secret files in place; no I/O beyond them."""

from __future__ import annotations

from pathlib import Path

import pytest

from drivers.gpio.settings import GpioSettings
from gateway.config import ConfigError, load_config
from gateway.sdk.model import Kind
from gateway.wellness.settings import activity_devices
from tests.certs import Pki, make_pki

EXAMPLE = Path(__file__).resolve().parents[1] / "config" / "example-building.yaml"
ETC = "/etc/community-gateway/"
SECRETS = {
    "broker.password": "not-the-real-password\n",
    "influx.token": "not-the-real-token\n",
    "osdp-reader-3-lobby.scbk": "00112233445566778899aabbccddeeff\n",
    "osdp-site.secret": "a-site-secret-of-enough-bytes-0123\n",
    "osdp-allow-lobby.txt": "# card pseudonyms, one a line\nc-5CXCB6IWFD6QRN7YN3UIE2M5\n",
}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    # validate loads the certificates and keys: stand-in text would be refused.
    return make_pki(tmp_path_factory.mktemp("pki"))


def _installed(tmp_path: Path, pki: Pki, skip: str = "") -> Path:
    """The example with /etc/community-gateway/ in tmp_path, and its secret files there."""
    for name, text in SECRETS.items():
        if name != skip:
            (tmp_path / name).write_text(text)
    for name, source in (
        ("platform-ca.pem", pki.ca),
        ("web.crt", pki.server_cert),
        ("web.key", pki.server_key),
    ):
        (tmp_path / name).write_bytes(source.read_bytes())
    path = tmp_path / "gateway.yaml"
    path.write_text(EXAMPLE.read_text("utf-8").replace(ETC, f"{tmp_path}/"))
    return path


def test_the_example_building_validates_with_every_driver(tmp_path: Path, pki: Pki) -> None:
    loaded = load_config(_installed(tmp_path, pki))
    cfg = loaded.config
    assert {d.driver for d in loaded.devices} == {
        "modbus",
        "dlt645",
        "osdp",
        "gpio",
        "serial_line",
        "zigbee2mqtt",
    }
    assert {d.kind for d in loaded.devices} == set(Kind)
    assert cfg.broker.uses_tls and cfg.broker.tls is not None
    assert cfg.broker.password is not None and cfg.broker.password.file is not None
    assert cfg.sinks.influxdb is not None and cfg.sinks.influxdb.token is not None
    assert str(cfg.outbox.sync) == "full"
    door = loaded.device("door-3-lobby").settings
    assert isinstance(door, GpioSettings) and door.grant_from == ("reader-3-lobby",)
    buzzer = loaded.device("buzzer-3-office").settings
    assert isinstance(buzzer, GpioSettings) and str(buzzer.role) == "relay"
    assert cfg.alarms.escalation.output is not None
    assert cfg.alarms.escalation.output.device == "buzzer-3-office"
    assert cfg.web.enabled and cfg.web.tls is not None
    (check,) = cfg.wellness.checks
    assert check.seconds == 12 * 3600
    # Flat 101's motion sensor, pendant, electricity meter and smoke detector.
    assert set(activity_devices(check, loaded.devices)) == {
        "sos-3-101",
        "motion-3-101",
        "meter-3-101-elec",
        "smoke-3-101",
    }


def test_the_example_names_its_secret_files_when_one_is_missing(tmp_path: Path, pki: Pki) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(_installed(tmp_path, pki, skip="influx.token"))
    (problem,) = info.value.problems
    assert f"sinks.influxdb.token.file: secret file {tmp_path}/influx.token not found" in str(
        problem
    )


def test_the_example_holds_no_inline_secret() -> None:
    text = EXAMPLE.read_text("utf-8")
    for line in text.splitlines():
        code = line.split("#", 1)[0]
        for key in ("password:", "token:", "scbk:", "site_secret:"):
            if key in code:
                assert "{file:" in code or "{env:" in code, line
