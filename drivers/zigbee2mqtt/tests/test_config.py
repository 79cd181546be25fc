"""Device settings are checked before anything connects, with the file's line numbers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from drivers.zigbee2mqtt import DRIVER
from drivers.zigbee2mqtt.settings import Zigbee2MqttSettings
from gateway.config import load_config
from gateway.sdk.model import Kind
from tests.driverkit import config_problems, one_device_config

FOLDER = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, driver: dict[str, Any], kind: str = "smoke") -> Path:
    return one_device_config(tmp_path, "zigbee2mqtt", driver, kind=kind, device_id="dev-1")


def problems(path: Path) -> str:
    return config_problems(path, DRIVER)


def test_the_sample_config_validates() -> None:
    loaded = load_config(FOLDER / "sample.yaml", drivers={"zigbee2mqtt": DRIVER})
    assert {d.kind for d in loaded.devices} == {Kind.SMOKE, Kind.ELDERLY_ALARM, Kind.DOOR}


@pytest.mark.parametrize(
    ("kind", "mapping"),
    [("smoke", "smoke"), ("elderly_alarm", "sos_button"), ("door", "door")],
)
def test_the_mapping_defaults_by_kind(tmp_path: Path, kind: str, mapping: str) -> None:
    loaded = load_config(
        write(tmp_path, {"friendly_name": "x"}, kind), drivers={"zigbee2mqtt": DRIVER}
    )
    s = loaded.devices[0].settings
    assert isinstance(s, Zigbee2MqttSettings)
    assert (s.mapping, s.broker_url, s.base_topic) == (
        mapping,
        "mqtt://127.0.0.1:1883",
        "zigbee2mqtt",
    )
    assert (s.host, s.port) == ("127.0.0.1", 1883)


def test_an_explicit_mapping_overrides_the_kind(tmp_path: Path) -> None:
    # a smoke detector whose pairing exposes a button, say
    path = write(tmp_path, {"friendly_name": "x", "mapping": "sos_button"}, "elderly_alarm")
    s = load_config(path, drivers={"zigbee2mqtt": DRIVER}).devices[0].settings
    assert isinstance(s, Zigbee2MqttSettings) and s.mapping == "sos_button"


def test_an_unknown_mapping_lists_the_known_ones(tmp_path: Path) -> None:
    text = problems(write(tmp_path, {"friendly_name": "x", "mapping": "siren"}))
    assert "devices[0].driver.mapping" in text
    assert "unknown mapping 'siren'" in text and "sos_button" in text


@pytest.mark.parametrize(
    ("driver", "where", "says"),
    [
        ({"friendly_name": "a/+"}, "friendly_name", "no '+', '#'"),
        ({"friendly_name": "bridge/state"}, "friendly_name", "zigbee2mqtt itself"),
        ({"friendly_name": "x", "base_topic": "/z2m"}, "base_topic", "leading or trailing"),
        ({"friendly_name": "x", "broker_url": "mqtts://h:8883"}, "broker_url", "mqtt://127.0.0.1"),
        ({"friendly_name": "x", "broker_url": "mqtt://u:p@h"}, "broker_url", "no credentials"),
        ({"friendly_name": "x", "broker_url": "mqtt://h:99999"}, "broker_url", "port"),
        ({}, "friendly_name", "field required"),
        ({"friendly_name": "x", "topic": "y"}, "topic", "unknown key"),
    ],
)
def test_wrong_settings_name_the_key(
    tmp_path: Path, driver: dict[str, Any], where: str, says: str
) -> None:
    path = write(tmp_path, driver)
    text = problems(path)
    assert f"devices[0].driver.{where}" in text and says in text, text
    assert "site.yaml:" in text


def test_a_meter_is_not_a_kind_this_driver_handles(tmp_path: Path) -> None:
    text = problems(write(tmp_path, {"friendly_name": "x", "mapping": "smoke"}, kind="meter"))
    assert "does not handle kind meter" in text
