"""`gateway gpio check` against the fake chip interface: states, edges, and relays left alone."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from drivers.gpio import DRIVER
from drivers.gpio.check import LineReport, check_lines, gpio_group
from drivers.gpio.settings import Role
from drivers.gpio.source import LineConfig
from drivers.gpio.tests.fakechip import FakeChip, Opener
from tests.driverkit import config_with_devices, device_specs

DOOR = ("door", "door", {"line": 17, "role": "door_contact", "contact": "nc", "rex_line": 27})
SOS = ("sos", "elderly_alarm", {"line": 23, "role": "sos_button"})
BUZZER = ("buzzer", "elderly_alarm", {"line": 24, "role": "relay", "active": "low"})
# At rest with pull-ups: NC contacts closed (0), NO contacts open (1); the relay's line
# holds whatever it was left at (1: off for an active-low board).
REST = {17: 0, 27: 1, 23: 1, 24: 1}


class ScriptedOpener(Opener):
    """The fake chip, and edges an installer makes during the window: (delay, line, level)."""

    def __init__(self, chip: FakeChip, edges: list[tuple[float, int, int]]) -> None:
        super().__init__(chip)
        self.edges = edges

    def __call__(self, path: str, lines: Mapping[int, LineConfig]) -> FakeChip:
        chip = super().__call__(path, lines)
        loop = asyncio.get_running_loop()
        for delay, offset, level in self.edges:
            loop.call_later(delay, chip.set, offset, level)
        return chip


def by_line(reports: list[LineReport]) -> dict[int, LineReport]:
    return {r.offset: r for r in reports}


def test_states_and_edges_are_reported_and_a_relay_is_not_touched(tmp_path: Path) -> None:
    chip = FakeChip({**REST, 17: 1})  # the door stands open
    opener = ScriptedOpener(chip, [(0.05, 23, 0), (0.1, 23, 1), (0.15, 17, 0)])
    specs = device_specs(tmp_path, DRIVER, DOOR, SOS, BUZZER)
    reports = by_line(asyncio.run(check_lines(specs, window_s=0.4, opener=opener)))
    assert (reports[17].state, reports[17].level, reports[17].edges) == ("open", 1, [0])
    assert (reports[27].role, reports[27].state, reports[27].edges) == (
        Role.REQUEST_TO_EXIT,
        "released",
        [],
    )
    assert (reports[23].state, reports[23].edges) == ("released", [0, 1])  # pressed, released
    assert "not requested" in reports[24].note and reports[24].level is None
    # Requesting an output would drive it: the relay line was never requested nor written.
    assert 24 not in chip.requested and chip.writes == []
    assert chip.closed


def test_toggle_switches_each_relay_on_briefly_then_off(tmp_path: Path) -> None:
    chip = FakeChip(REST)
    specs = device_specs(tmp_path, DRIVER, SOS, BUZZER)
    reports = by_line(
        asyncio.run(
            check_lines(specs, window_s=0.3, toggle=True, pulse_s=0.05, opener=Opener(chip))
        )
    )
    assert chip.requested[24].output == 1  # requested off: high on an active-low board
    assert chip.writes == [(24, 0), (24, 1)]  # on (low), then off (high)
    assert reports[24].note == "switched on for 0.05 s, then off"


def test_a_chip_lost_during_the_window_is_a_fault_of_each_line(tmp_path: Path) -> None:
    chip = FakeChip(REST)
    opener = Opener(chip)
    specs = device_specs(tmp_path, DRIVER, DOOR, SOS)

    async def body() -> list[LineReport]:
        asyncio.get_running_loop().call_later(0.05, chip.unplug)
        return await check_lines(specs, window_s=5, opener=opener)

    reports = asyncio.run(asyncio.wait_for(body(), 3))
    assert {r.fault for r in reports} == {"/dev/gpiochip0: No such device"}


def cli(tmp_path: Path, *args: str, obj: Any = None) -> Any:
    devices = [
        {"id": i, "kind": k, "location": {"building": "1"}, "driver": {"type": "gpio", **d}}
        for i, k, d in (DOOR, SOS, BUZZER)
    ]
    config = config_with_devices(tmp_path, devices)
    return CliRunner().invoke(gpio_group, ["check", "-c", str(config), *args], obj=obj)


def test_the_command_prints_one_line_per_line_and_exits_0(tmp_path: Path) -> None:
    chip = FakeChip(REST)
    opener = ScriptedOpener(chip, [(0.05, 23, 0), (0.1, 23, 1)])
    result = cli(tmp_path, "--seconds", "0.3", obj={"gpio_opener": opener})
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "relays are left alone" in lines[0]
    assert lines[1].split() == ["DEVICE", "LINE", "ROLE", "STATE", "EDGES"]
    rows = {line.split()[1]: line for line in lines[2:]}
    assert rows["/dev/gpiochip0:17"].split()[3:] == ["closed", "(level", "0)", "0"]
    assert rows["/dev/gpiochip0:23"].split()[3:] == ["released", "(level", "1)", "2:", "0", "1"]
    assert "output not requested" in rows["/dev/gpiochip0:24"]
    assert chip.writes == []


def test_the_command_on_a_machine_without_the_chip_says_what_to_check(tmp_path: Path) -> None:
    result = cli(tmp_path, "--seconds", "0.1", "--device", "sos")  # the real libgpiod
    assert result.exit_code == 1
    assert "FAULT no /dev/gpiochip0: is this a Raspberry Pi? is the user in group gpio?" in (
        result.output
    )
    assert "gpiodetect" in result.output
    assert "buzzer" not in result.output


def test_an_unknown_device_is_refused(tmp_path: Path) -> None:
    result = cli(tmp_path, "--device", "nope")
    assert result.exit_code == 2 and "no gpio device 'nope'" in result.output


def test_two_devices_on_one_line_are_reported_not_mixed(tmp_path: Path) -> None:
    chip = FakeChip(REST)
    copy = ("sos-copy", "elderly_alarm", {"line": 23, "role": "pull_cord"})
    # Two configs: `gateway validate` may refuse the clash in one; the check must not
    # mix the two up either way.
    (tmp_path / "b").mkdir()
    specs = device_specs(tmp_path, DRIVER, SOS) + device_specs(tmp_path / "b", DRIVER, copy)
    reports = asyncio.run(check_lines(specs, window_s=0.1, opener=Opener(chip)))
    assert [(r.device, r.state, r.fault) for r in reports] == [
        ("sos", "released", ""),
        ("sos-copy", "", "line 23 is already used by device sos"),
    ]
