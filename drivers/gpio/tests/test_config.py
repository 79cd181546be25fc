"""The sample config validates and the README shows it; wrong wiring is refused with the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from drivers.gpio import DRIVER
from drivers.gpio.settings import Active, Contact, GpioSettings, Role
from gateway.config import ConfigError, load_config
from gateway.sdk.model import Kind
from tests.driverkit import config_head, driver_yaml_problems, readme_shows_sample

SAMPLE = DRIVER.folder / "sample.yaml"


def test_sample_config_is_valid_and_shows_door_smoke_and_sos() -> None:
    loaded = load_config(SAMPLE, drivers={"gpio": DRIVER})
    assert {d.kind for d in loaded.devices} == {Kind.DOOR, Kind.SMOKE, Kind.ELDERLY_ALARM}
    assert loaded.config.broker.url == "mqtt://127.0.0.1:1883"
    door = loaded.device("door-b1-lobby").settings
    assert isinstance(door, GpioSettings)
    assert door.rex_contact is Contact.NO  # an unquoted YAML `no` is not false here
    assert (door.role, door.rex_line, door.grant_window_s, door.held_open_s) == (
        Role.DOOR_CONTACT,
        27,
        10,
        30,
    )


def test_readme_shows_the_sample_config_as_it_is() -> None:
    assert readme_shows_sample(DRIVER)


def problems(tmp_path: Path, kind: str, driver: str) -> list[str]:
    return driver_yaml_problems(tmp_path, DRIVER, kind, driver)


@pytest.mark.parametrize(
    ("kind", "driver", "expected"),
    [
        (
            "smoke",
            "line: 4\nrole: sos_button\n",
            "devices[0].driver.role: sos_button is not a role of a smoke device "
            "(allowed: smoke_relay, relay)",
        ),
        (
            "smoke",
            "line: 4\nrole: smoke_relay\nheld_open_s: 5\n",
            "devices[0].driver: held_open_s only apply to role door_contact",
        ),
        (
            "door",
            "line: 4\nrole: door_contact\nrex_line: 4\n",
            "devices[0].driver: rex_line 4 is the door contact's own line",
        ),
        (
            "door",
            "line: 4\nrole: door_contact\ncontact: normally_closed\n",
            "devices[0].driver.contact: ",
        ),
        (
            "elderly_alarm",
            "line: 4\nrole: relay\ncontact: nc\ndebounce_ms: 5\n",
            "devices[0].driver: contact, debounce_ms only apply to inputs, not a relay",
        ),
        (
            "smoke",
            "line: 4\nrole: smoke_relay\nactive: low\n",
            "devices[0].driver: active only applies to role relay",
        ),
        (
            "smoke",
            "line: 4\nrole: smoke_relay\ngrant_from: [reader-1]\n",
            "devices[0].driver: grant_from only apply to role door_contact",
        ),
        (
            "door",
            "line: 4\nrole: door_contact\ngrant_from: [d1]\n",
            "devices[0].driver.grant_from[0]: a door cannot grant itself; name its access reader",
        ),
        (
            "door",
            "line: 4\nrole: door_contact\ngrant_from: [reader-9]\n",
            "devices[0].driver.grant_from[0]: no device 'reader-9' "
            "(grant_from names the access readers of this door)",
        ),
    ],
)
def test_wrong_wiring_is_refused_with_key_path(
    tmp_path: Path, kind: str, driver: str, expected: str
) -> None:
    found = problems(tmp_path, kind, driver)
    assert len(found) == 1 and expected in found[0], found


def test_grant_from_must_name_a_door_reader(tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(
        config_head("gpio", "door")
        + "      line: 4\n      role: door_contact\n      grant_from: [sos-1]\n"
        + '  - id: sos-1\n    kind: elderly_alarm\n    location: {building: "1"}\n'
        + "    driver: {type: gpio, line: 5, role: sos_button}\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(path, drivers={"gpio": DRIVER})
    assert [str(p) for p in info.value.problems] == [
        f"{path}:13 devices[0].driver.grant_from[0]: "
        "device 'sos-1' is of kind elderly_alarm, not a door (an access reader)"
    ]


def test_a_relay_fits_any_kind_and_is_active_high_by_default(tmp_path: Path) -> None:
    for kind in Kind:
        path = tmp_path / f"{kind}.yaml"
        path.write_text(config_head("gpio", str(kind)) + "      line: 4\n      role: relay\n")
        (spec,) = load_config(path, drivers={"gpio": DRIVER}).devices
        assert isinstance(spec.settings, GpioSettings)
        assert spec.settings.active is Active.HIGH
