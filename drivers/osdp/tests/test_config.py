"""The sample config validates, wrong configs are refused with the key, and the CLI."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from drivers.osdp import DRIVER
from drivers.osdp.cli import osdp_group
from drivers.osdp.pseudonym import card_pseudonym
from drivers.osdp.settings import Feedback, OsdpSettings, SecureChannel
from drivers.osdp.wiegand import encode
from gateway.config import load_config
from gateway.sdk.model import Kind
from tests.driverkit import config_head, driver_yaml_problems, readme_shows_sample

SAMPLE = DRIVER.folder / "sample.yaml"
SECRET = "a-site-secret-of-more-than-16-bytes"


def test_sample_config_is_valid_two_readers_on_one_bus() -> None:
    loaded = load_config(SAMPLE, drivers={"osdp": DRIVER})
    assert {d.kind for d in loaded.devices} == {Kind.DOOR}
    lobby = loaded.device("reader-b1-lobby").settings
    bikes = loaded.device("reader-b1-bikes").settings
    assert isinstance(lobby, OsdpSettings) and isinstance(bikes, OsdpSettings)
    assert (lobby.port, lobby.address, bikes.address) == ("/dev/ttyUSB0", 1, 2)
    assert lobby.secure_channel is SecureChannel.SCBK and lobby.feedback is Feedback.LED_AND_BUZZER
    assert lobby.allow_list is not None and bikes.allow_list is None
    assert not lobby.publish_raw_card and not lobby.publish_raw_pin  # private by default


def test_readme_shows_the_sample_config_as_it_is() -> None:
    assert readme_shows_sample(DRIVER)


def problems(tmp_path: Path, driver: str, extra_device: str = "") -> list[str]:
    (tmp_path / "site.secret").write_text(SECRET + "\n")
    (tmp_path / "short.secret").write_text("short\n")
    (tmp_path / "key.hex").write_text("00112233445566778899aabbccddeeff\n")
    (tmp_path / "bad.hex").write_text("0011\n")
    return driver_yaml_problems(tmp_path, DRIVER, "door", driver, extra_device)


BASE = "port: /dev/ttyUSB0\naddress: 1\nsite_secret: {file: site.secret}\n"
SECOND = """\
  - id: d2
    kind: door
    location: {building: "1"}
    driver: {type: osdp, port: /dev/ttyUSB0, address: ADDR, baudrate: BAUD,
             secure_channel: "off", site_secret: {file: site.secret}}
"""


@pytest.mark.parametrize(
    ("driver", "extra", "expected"),
    [
        (BASE, "", "devices[0].driver: secure_channel scbk needs scbk: {file: PATH}"),
        (
            BASE + "secure_channel: 'off'\nscbk: {file: key.hex}\n",
            "",
            "devices[0].driver: scbk is given but secure_channel is off",
        ),
        (
            BASE + "scbk: 00112233445566778899aabbccddeeff\n",
            "",
            "devices[0].driver.scbk: secrets are never written inline",
        ),
        (BASE + "scbk: {file: bad.hex}\n", "", "devices[0].driver.scbk: the SCBK has 2 bytes"),
        (BASE + "scbk: {file: missing.hex}\n", "", "devices[0].driver.scbk: cannot read the SCBK"),
        (
            "port: /dev/ttyUSB0\naddress: 1\nsecure_channel: 'off'\nsite_secret: {file: short.secret}\n",
            "",
            "devices[0].driver.site_secret: the site secret has 5 bytes",
        ),
        (
            # Written once: a key written twice is itself refused.
            BASE.replace("address: 1\n", "address: 127\n") + "secure_channel: 'off'\n",
            "",
            "devices[0].driver.address: ",
        ),
        (BASE + "secure_channel: 'off'\nbaudrate: 4800\n", "", "devices[0].driver.baudrate: "),
        (
            BASE + "secure_channel: 'off'\nallow_list: /dev/zero\n",
            "",
            "devices[0].driver.allow_list: /dev/zero is not a regular file",
        ),
        (
            BASE + "secure_channel: 'off'\nwiegand: true\n",
            "",
            "devices[0].driver.wiegand: unknown key",
        ),
        (
            BASE + "secure_channel: 'off'\n",
            SECOND.replace("ADDR", "1").replace("BAUD", "9600"),
            "devices[1].driver.address: address 1 on /dev/ttyUSB0 is already device d1",
        ),
        (
            BASE + "secure_channel: 'off'\n",
            SECOND.replace("ADDR", "2").replace("BAUD", "19200"),
            "devices[1].driver.baudrate: /dev/ttyUSB0 runs at 9600 for device d1",
        ),
    ],
)
def test_wrong_configs_are_refused_with_the_key_path(
    tmp_path: Path, driver: str, extra: str, expected: str
) -> None:
    found = problems(tmp_path, driver, extra)
    assert len(found) == 1 and expected in found[0], found
    assert "00112233445566778899aabbccddeeff" not in found[0]  # a key is never echoed


def test_cli_prints_the_pseudonym_the_driver_publishes(tmp_path: Path) -> None:
    (tmp_path / "site.secret").write_text(SECRET + "\n")
    config = tmp_path / "site.yaml"
    config.write_text(
        config_head("osdp", "door") + textwrap.indent("secure_channel: 'off'\n" + BASE, " " * 6)
    )
    expected = card_pseudonym(SECRET.encode(), encode(12, 34567), 26)
    runner = CliRunner()
    by_number = runner.invoke(
        osdp_group, ["pseudonym", "--config", str(config), "--wiegand", "12:34567"]
    )
    assert by_number.exit_code == 0, by_number.output
    assert by_number.output == expected + "\n"
    by_hex = runner.invoke(
        osdp_group,
        [
            "pseudonym",
            "--config",
            str(config),
            "--card-hex",
            encode(12, 34567).hex(),
            "--bits",
            "26",
        ],
    )
    assert by_hex.output == expected + "\n"
    bad = runner.invoke(osdp_group, ["pseudonym", "--config", str(config), "--wiegand", "300:1"])
    assert bad.exit_code == 1 and "facility code 300 does not fit 8 bits" in bad.output
    both = runner.invoke(osdp_group, ["pseudonym", "--config", str(config)])
    assert both.exit_code != 0 and "exactly one of" in both.output
