"""The DI table and the meter settings: what an installer writes is checked before any I/O."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from drivers.dlt645 import DRIVER
from drivers.dlt645.settings import Dlt645Settings
from drivers.dlt645.table import TABLE_FILE, DataTable, Sign, load_table
from gateway.config import ConfigError, load_config
from gateway.sdk.model import Unit, ValueType

FOLDER = Path(__file__).parent.parent


def test_sample_config_is_valid_and_complete() -> None:
    loaded = load_config(FOLDER / "sample.yaml", drivers={"dlt645": DRIVER})
    assert [d.id for d in loaded.devices] == ["meter-3-101", "meter-3-102", "meter-3-common"]
    first = loaded.devices[0].settings
    assert isinstance(first, Dlt645Settings)
    assert first.address == "000012345678"
    assert first.bus.baud == 2400 and first.bus.parity == "E"


def test_readme_shows_the_sample() -> None:
    readme = (FOLDER / "README.md").read_text()
    assert 'address: "000012345678"' in readme
    assert "gateway scan dlt645" in readme


def test_table_has_the_values_the_issue_asks_for() -> None:
    table = load_table()
    expect = {
        "energy_total": (0x00010000, Unit.KWH, ValueType.COUNTER),
        "energy_t1": (0x00010100, Unit.KWH, ValueType.COUNTER),
        "voltage_a": (0x02010100, Unit.V, ValueType.GAUGE),
        "current_a": (0x02020100, Unit.A, ValueType.GAUGE),
        "power_total": (0x02030000, Unit.W, ValueType.GAUGE),
        "power_factor_total": (0x02060000, Unit.NONE, ValueType.GAUGE),
    }
    for name, (di, unit, kind) in expect.items():
        item = table.get(name)
        assert item is not None, name
        assert (item.di, item.canonical_unit, item.type) == (di, unit, kind)
    assert all(i.sign is Sign.UNSIGNED for i in table.items if i.type is ValueType.COUNTER)


def _table_with(tmp_path: Path, **changes: object) -> Path:
    doc = yaml.safe_load(TABLE_FILE.read_text())
    doc["items"][0].update(changes)
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"di": 2010100}, "8 hexadecimal digits in quotes"),
        ({"sign": "msb"}, "a counter cannot be signed"),
        ({"decimals": 9}, "less than or equal to 8"),
        ({"unit": "MWh"}, "unknown unit"),
        ({"name": "voltage_a"}, "name voltage_a appears twice"),
        ({"di": "02010100"}, "di 02010100 appears twice"),
    ],
)
def test_a_wrong_table_entry_is_refused(
    tmp_path: Path, change: dict[str, object], message: str
) -> None:
    path = _table_with(tmp_path, **change)
    with pytest.raises(ValidationError, match=message):
        DataTable.model_validate(yaml.safe_load(path.read_text()))


GOOD = """\
version: 1
site: {id: s}
gateway: {id: g}
broker: {url: "mqtt://127.0.0.1:1883"}
devices:
  - id: m1
    kind: meter
    location: {building: "1"}
    driver:
      type: dlt645
      bus: {port: /dev/ttyUSB1}
      address: "000012345678"
"""


def _problems(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "site.yaml"
    path.write_text(textwrap.dedent(text))
    with pytest.raises(ConfigError) as info:
        load_config(path, drivers={"dlt645": DRIVER})
    return [str(p).removeprefix(str(path)) for p in info.value.problems]


def test_defaults_are_the_usual_meter_line(tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(GOOD)
    settings = load_config(path, drivers={"dlt645": DRIVER}).devices[0].settings
    assert isinstance(settings, Dlt645Settings)
    assert (settings.bus.baud, settings.bus.parity, settings.bus.stopbits) == (2400, "E", 1)
    assert "energy_total" in settings.readings


def test_unquoted_address_is_refused_with_the_fix(tmp_path: Path) -> None:
    # YAML reads 000012345670 as octal: the label's digits would silently change.
    found = _problems(tmp_path, GOOD.replace('"000012345678"', "000012345670"))
    assert found == [
        ':12 devices[0].driver.address: write the address in quotes, as on the label: address: "000012345678"'
    ]


def test_short_address_is_refused(tmp_path: Path) -> None:
    found = _problems(tmp_path, GOOD.replace('"000012345678"', '"12345678"'))
    assert len(found) == 1 and "must be the 12 digits printed on the meter's label" in found[0]


def test_unknown_reading_and_bad_baud_are_both_reported(tmp_path: Path) -> None:
    text = GOOD.replace("bus: {port: /dev/ttyUSB1}", "bus: {port: /dev/ttyUSB1, baud: 2401}")
    text += "      readings: [energy_total, voltage_x]\n"
    found = _problems(tmp_path, text)
    assert any("driver.bus.baud: DL/T 645 meters use 1200, 2400" in p for p in found), found
    assert any(
        "driver.readings: unknown reading voltage_x (known: energy_total," in p for p in found
    ), found


def test_wrong_kind_is_refused(tmp_path: Path) -> None:
    found = _problems(tmp_path, GOOD.replace("kind: meter", "kind: smoke"))
    assert found == [
        ":7 devices[0].kind: driver dlt645 does not handle kind smoke (it handles: meter)"
    ]


def test_readme_lists_every_reading_of_the_table() -> None:
    readme = (FOLDER / "README.md").read_text()
    for item in load_table().items:
        if item.name.startswith("energy_t") and item.name[-1].isdigit():
            assert "`energy_t1` .. `energy_t4`" in readme
            continue
        assert f"`{item.name}`" in readme, item.name
