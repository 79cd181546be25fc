"""Every shipped profile loads and is sound; broken profiles are refused with their line."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from drivers.modbus.profile import (
    PROFILE_DIR,
    Emit,
    load_profile,
    profile_names,
)
from gateway.sdk.model import Kind, Unit, ValueType
from gateway.sdk.profiles import ProfileError

NAMES = profile_names()


def test_the_issue_s_device_models_are_shipped() -> None:
    assert set(NAMES) >= {
        "eastron_sdm120",
        "eastron_sdm630",
        "chint_ddsu666",
        "chint_dtsu666",
        "dynaflox_ultrad",
        "moxa_e1210_fire_zones",
    }


@pytest.mark.parametrize("name", NAMES)
def test_profile_loads_and_is_sound(name: str) -> None:
    prof = load_profile(name)
    # the source names a document, not just a brand
    assert any(w in prof.source.lower() for w in ("manual", "register", "protocol", "table"))
    names = [p.name for p in prof.points]
    assert len(names) == len(set(names))
    for p in prof.points:
        assert isinstance(p.unit, Unit)
        if p.type is ValueType.COUNTER:
            assert p.max_rate is not None, f"{name}.{p.name}: a counter needs max_rate"
            assert p.unit is not Unit.NONE
        if p.emit is Emit.EVENT:
            assert prof.kind is Kind.SMOKE or p.on_true is None or p.on_true.startswith("meter.")
    cells: dict[tuple[str, int, int | None], str] = {}
    for p in prof.points:
        for table, address, count in p.spans():
            for a in range(address, address + count):
                key = (str(table), a, p.bit)
                assert key not in cells, f"{p.name} overlaps {cells[key]}"
                cells[key] = p.name


def test_energy_meters_publish_energy_in_kwh_and_the_panel_emits_smoke_events() -> None:
    for name in ("eastron_sdm120", "eastron_sdm630", "chint_ddsu666", "chint_dtsu666"):
        assert load_profile(name).point("energy_import").unit is Unit.KWH
    assert load_profile("dynaflox_ultrad").point("volume_forward").unit is Unit.M3
    zones = load_profile("moxa_e1210_fire_zones")
    assert zones.kind is Kind.SMOKE
    assert {str(p.on_true) for p in zones.points if p.on_true} == {"smoke.alarm"}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text(textwrap.dedent(text))
    return path


GOOD_HEAD = """\
model: Test meter
kind: meter
source: Test meter manual, register table
points:
"""


@pytest.mark.parametrize(
    ("points", "line", "message"),
    [
        (
            "  - {name: a, table: input, address: 0, decode: float32, unit: V}\n"
            "  - {name: b, table: input, address: 1, decode: float32, unit: V}\n",
            6,
            "points a and b overlap at input 1",
        ),
        ("  - {name: a, table: input, address: 0, decode: float32, unit: kW}\n", 5, "unit"),
        ("  - {name: a, table: coil, address: 0, decode: int16}\n", 5, "decodes as bool"),
        ("  - {name: a, table: holding, address: 0, decode: bit}\n", 5, "bit: 0-15"),
        (
            "  - {name: a, table: input, address: 0, decode: float32, max_rate: 5}\n",
            5,
            "max_rate applies to counters",
        ),
        (
            "  - {name: a, table: discrete, address: 0, decode: bool, emit: event, on_true: door.opened}\n",
            5,
            "door.opened is not an event of a meter",
        ),
        ("  - {name: Energy, table: input, address: 0, decode: float32}\n", 5, "lower-case"),
        ("  - {name: a, table: input, adress: 0, decode: float32}\n", 5, "unknown key"),
    ],
)
def test_broken_profile_is_refused_with_file_line_and_reason(
    tmp_path: Path, points: str, line: int, message: str
) -> None:
    path = write(tmp_path, GOOD_HEAD + points)
    with pytest.raises(ProfileError) as info:
        load_profile(str(path))
    text = str(info.value)
    assert message in text
    assert f"{path}:{line}" in text


def test_two_bits_of_one_status_register_do_not_overlap(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        GOOD_HEAD.replace("kind: meter", "kind: smoke")
        + "  - {name: active, table: holding, address: 7, decode: bit, bit: 11, emit: event, on_true: smoke.alarm}\n"
        + "  - {name: trouble, table: holding, address: 7, decode: bit, bit: 13, emit: event, on_true: device.fault}\n",
    )
    assert [p.bit for p in load_profile(str(path)).points] == [11, 13]


def test_profile_files_are_the_only_device_knowledge() -> None:
    assert all(p.suffix == ".yaml" for p in PROFILE_DIR.iterdir())
