"""The sample and demo configs validate; a wrong scenario is refused with file, line and key."""

from __future__ import annotations

import itertools
from collections import defaultdict
from pathlib import Path

import pytest

from drivers.simulated import DRIVER
from drivers.simulated.scenario import ScriptedEvent, schedule
from drivers.simulated.settings import SimulatedSettings
from gateway.config import load_config
from gateway.sdk.model import EventType, Kind
from gateway.sdk.registry import available_drivers
from tests.driverkit import driver_yaml_problems

SAMPLE = DRIVER.folder / "sample.yaml"
DEMO = Path(__file__).resolve().parents[3] / "config" / "demo.yaml"


def test_driver_is_registered_by_entry_point() -> None:
    assert available_drivers()["simulated"] is DRIVER


def test_sample_config_is_valid_and_shows_every_kind() -> None:
    loaded = load_config(SAMPLE)
    assert {d.kind for d in loaded.devices} == set(Kind)
    assert loaded.config.broker.url == "mqtt://127.0.0.1:1883"


def test_readme_shows_the_sample_config_as_it_is() -> None:
    readme = (DRIVER.folder / "README.md").read_text(encoding="utf-8")
    assert SAMPLE.read_text(encoding="utf-8") in readme


def settings(spec_settings: object) -> SimulatedSettings:
    assert isinstance(spec_settings, SimulatedSettings)
    return spec_settings


def test_demo_config_is_sunrise_gardens() -> None:
    loaded = load_config(DEMO)
    cfg = loaded.config
    assert (cfg.site.id, cfg.gateway.id) == ("sunrise-gardens", "gw-demo")
    assert cfg.broker.url == "mqtt://127.0.0.1:1883"
    assert cfg.outbox.path == DEMO.parent / "state" / "demo-outbox.db"
    assert str(cfg.clock.check) == "trust" and cfg.logging.level == "info"
    assert {d.driver for d in loaded.devices} == {"simulated"}

    by_building: defaultdict[str, list[Kind]] = defaultdict(list)
    flats: defaultdict[str, set[str | None]] = defaultdict(set)
    for d in loaded.devices:
        by_building[d.ref.location.building].append(d.kind)
        if d.kind is Kind.METER:
            flats[d.ref.location.building].add(d.ref.location.unit)
            assert settings(d.settings).telemetry_period_s == 5
    assert set(by_building) == {"1", "2"}
    for building, kinds in by_building.items():
        # A lobby door in each; building 2's also has its card reader (kind door).
        assert kinds.count(Kind.DOOR) == int(building) and kinds.count(Kind.SMOKE) >= 1, building
        assert 3 <= len(flats[building]) <= 4, building
        assert kinds.count(Kind.METER) == 2 * len(flats[building]), (
            building
        )  # electricity and water
    # Two SOS buttons, a fall pendant, a motion sensor and the office buzzer.
    assert sum(kinds.count(Kind.ELDERLY_ALARM) for kinds in by_building.values()) == 5


def test_demo_scenario_plays_what_the_demo_announces() -> None:
    """The first 400 s of the demo: what scripts/demo and the README promise."""
    happened: list[tuple[float, str, EventType]] = []
    for d in load_config(DEMO).devices:
        for due in itertools.takewhile(
            lambda due: due.t <= 400, schedule(settings(d.settings), d.id)
        ):
            if isinstance(due.action, ScriptedEvent):
                happened.append((round(due.t, 3), d.ref.location.building, due.action.type))

    def when(event: EventType) -> list[tuple[float, str]]:
        return sorted((t, b) for t, b, e in happened if e is event)

    assert when(EventType.SMOKE_ALARM) == [(30, "2")]
    assert when(EventType.SMOKE_CLEARED) == [(90, "2")]
    assert when(EventType.DOOR_FORCED) == [(75, "1")]
    assert [t for t, _ in when(EventType.ELDERLY_SOS)] == [45, 345]
    for building in ("1", "2"):
        opened = [t for t, b in when(EventType.DOOR_OPENED) if b == building]
        gaps = [b - a for a, b in itertools.pairwise(opened)]
        assert len(opened) >= 9 and all(30 <= g <= 50 for g in gaps), building
        assert len([t for t, b in when(EventType.DOOR_CLOSED) if b == building]) >= 9


def problems(tmp_path: Path, kind: str, driver: str) -> list[str]:
    return driver_yaml_problems(tmp_path, DRIVER, kind, driver)


@pytest.mark.parametrize(
    ("kind", "driver", "expected"),
    [
        (
            "meter",
            """\
            profile: household_electricity
            events:
              - {at_s: 1, type: meter.counter_anomaly}
              - {at_s: 30, type: smoke.alarm}
            """,
            "bad.yaml:14 devices[0].driver.events[1].type: smoke.alarm is not an event of a meter "
            "(a meter emits: meter.counter_anomaly, device.fault, device.battery_low, device.tamper)",
        ),
        (
            "smoke",
            """\
            events:
              - {at_s: 1, type: smoke.alarmm}
            """,
            "bad.yaml:12 devices[0].driver.events[0].type: unknown event type 'smoke.alarmm' "
            "(known: smoke.alarm, smoke.cleared, device.fault, device.battery_low, device.tamper)",
        ),
        (
            "door",
            """\
            events:
              - {at_s: 1, type: door.opened, then: access.granted}
            """,
            "bad.yaml:12 devices[0].driver.events[0]: then and then_after_s go together",
        ),
        (
            "smoke",
            """\
            events:
              - {at_s: 5, every_s: 60, type: smoke.alarm}
            """,
            "bad.yaml:12 devices[0].driver.events[0]: give exactly one of at_s (once) or every_s (repeating)",
        ),
        (
            "door",
            """\
            events:
              - {every_s: 10, jitter_s: 2, type: door.opened, then_after_s: 7, then: door.closed}
            """,
            "bad.yaml:12 devices[0].driver.events[0]: then_after_s must be shorter than "
            "every_s - 2 x jitter_s (6 s), or a pair overlaps the next one",
        ),
        (
            "meter",
            """\
            telemetry_interval_s: 5
            """,
            "bad.yaml:9 devices[0].driver.profile: a meter needs a profile "
            "(one of: common_electricity, household_electricity, household_water)",
        ),
        (
            "meter",
            """\
            profile: household_gas
            """,
            "bad.yaml:11 devices[0].driver.profile: unknown profile 'household_gas' "
            "(known: common_electricity, household_electricity, household_water)",
        ),
        (
            "meter",
            """\
            profile: household_water
            telemetry_interval_s: 5
            rate_hz: 10
            """,
            "bad.yaml:13 devices[0].driver.rate_hz: give telemetry_interval_s or rate_hz, not both",
        ),
        (
            "door",
            """\
            profile: household_water
            """,
            "bad.yaml:11 devices[0].driver.profile: applies to meters only, and this device is a door",
        ),
        (
            "elderly_alarm",
            """\
            rate_hz: 10
            """,
            "bad.yaml:11 devices[0].driver.rate_hz: applies to meters only, "
            "and this device is an elderly alarm",
        ),
        (
            "smoke",
            """\
            offline:
              - {at_s: 100, for_s: 30}
              - {at_s: 120, for_s: 5}
            """,
            "bad.yaml:11 devices[0].driver.offline: offline[1] starts at 120 s, before offline[0] "
            "is over (130 s); merge them into one window",
        ),
        (
            "smoke",
            """\
            evnts: []
            """,
            "bad.yaml:11 devices[0].driver.evnts: unknown key (check the spelling; see the sample config)",
        ),
    ],
)
def test_wrong_scenarios_are_refused_with_line_and_key_path(
    tmp_path: Path, kind: str, driver: str, expected: str
) -> None:
    assert problems(tmp_path, kind, driver) == [expected]
