"""The scenario and meter model as numbers: no clock, no sleeping."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.simulated.meter import EPOCH, MeterModel
from drivers.simulated.profile import load_profile
from drivers.simulated.scenario import (
    OUTAGE_REASON,
    Availability,
    Due,
    ScriptedEvent,
    TelemetryTick,
    _Merge,
    schedule,
)
from drivers.simulated.settings import SimulatedSettings
from gateway.sdk.model import EventType, ValueType


def settings(kind: str, **raw: Any) -> SimulatedSettings:
    return SimulatedSettings.model_validate(raw, context={"kind": kind})


def until(stream: Iterator[Due], t: float) -> list[Due]:
    return list(itertools.takewhile(lambda d: d.t <= t, stream))


def events(dues: list[Due]) -> list[tuple[float, EventType]]:
    return [(round(d.t, 6), d.action.type) for d in dues if isinstance(d.action, ScriptedEvent)]


def ticks(dues: list[Due]) -> list[float]:
    return [d.t for d in dues if isinstance(d.action, TelemetryTick)]


# ---- events -------------------------------------------------------------------------


def test_scripted_events_come_at_their_times_in_order() -> None:
    s = settings(
        "smoke",
        events=[
            {"at_s": 90, "type": "smoke.cleared"},
            {"at_s": 30, "type": "smoke.alarm", "data": {"zone": "stairwell"}},
        ],
    )
    dues = list(schedule(s, "smoke-1"))
    assert events(dues) == [(30, EventType.SMOKE_ALARM), (90, EventType.SMOKE_CLEARED)]
    alarm = next(d.action for d in dues if isinstance(d.action, ScriptedEvent))
    assert alarm.data == {"zone": "stairwell"}


def test_device_starts_online_and_a_finite_scenario_ends() -> None:
    dues = list(schedule(settings("smoke"), "smoke-1"))
    assert [d.action for d in dues] == [Availability(True)]


def test_repeating_event_with_its_pair() -> None:
    s = settings(
        "door",
        events=[{"every_s": 60, "type": "door.opened", "then_after_s": 5, "then": "door.closed"}],
    )
    assert events(until(schedule(s, "door-1"), 200)) == [
        (60, EventType.DOOR_OPENED),
        (65, EventType.DOOR_CLOSED),
        (120, EventType.DOOR_OPENED),
        (125, EventType.DOOR_CLOSED),
        (180, EventType.DOOR_OPENED),
        (185, EventType.DOOR_CLOSED),
    ]


def test_without_outages_events_stream_as_with_an_outage_after_them() -> None:
    # Without offline windows the stream skips the outage filter; same items until one.
    rule = {"every_s": 60, "jitter_s": 20, "type": "door.opened", "then_after_s": 5}
    plain = settings("door", events=[{**rule, "then": "door.closed"}])
    later = settings(
        "door", events=[{**rule, "then": "door.closed"}], offline=[{"at_s": 86400, "for_s": 9}]
    )
    got = [(d, d.action) for d in until(schedule(plain, "door-1"), 3600)]
    assert got == [(d, d.action) for d in until(schedule(later, "door-1"), 3600)]
    assert len(events([d for d, _ in got])) == 120


def test_start_s_sets_the_first_of_a_repeating_event() -> None:
    s = settings("elderly_alarm", events=[{"every_s": 300, "start_s": 45, "type": "elderly.sos"}])
    assert [t for t, _ in events(until(schedule(s, "sos-1"), 1000))] == [45, 345, 645, 945]


def test_jitter_stays_within_bounds_keeps_order_and_keeps_pairs_apart() -> None:
    rule = {
        "every_s": 40,
        "jitter_s": 5,
        "type": "door.opened",
        "then_after_s": 5,
        "then": "door.closed",
    }
    got = events(until(schedule(settings("door", events=[rule]), "door-1"), 40 * 200))
    opened = [t for t, e in got if e is EventType.DOOR_OPENED]
    closed = [t for t, e in got if e is EventType.DOOR_CLOSED]
    assert len(opened) >= 199
    for k, t in enumerate(opened):
        assert abs(t - 40 * (k + 1)) <= 5
    # Every door closes 5 s after it opened, before it opens again.
    assert [e for _, e in got][: 2 * 199] == [EventType.DOOR_OPENED, EventType.DOOR_CLOSED] * 199
    assert all(c == pytest.approx(o + 5) for o, c in zip(opened, closed, strict=False))
    assert len({round(t - 40 * (k + 1), 3) for k, t in enumerate(opened)}) > 100  # really jittered


def test_same_seed_same_schedule_other_seed_or_device_differs() -> None:
    rule = {"every_s": 40, "jitter_s": 5, "type": "door.opened"}

    def times(seed: int, device: str) -> list[float]:
        return [
            t
            for t, _ in events(
                until(schedule(settings("door", events=[rule], seed=seed), device), 400)
            )
        ]

    assert times(7, "door-1") == times(7, "door-1")
    assert times(7, "door-1") != times(8, "door-1")
    assert times(7, "door-1") != times(7, "door-2")


# ---- offline windows ----------------------------------------------------------------


def test_offline_window_toggles_availability_and_swallows_what_is_due() -> None:
    s = settings(
        "smoke",
        events=[
            {"at_s": 10, "type": "smoke.alarm"},
            {"at_s": 120, "type": "device.tamper"},  # at the very start of the outage: lost
            {"at_s": 135, "type": "smoke.alarm"},  # inside: lost
            {"at_s": 150, "type": "smoke.cleared"},  # back at 150: delivered
        ],
        offline=[{"at_s": 120, "for_s": 30}],
    )
    dues = list(schedule(s, "smoke-1"))
    assert [(d.t, d.action) for d in dues] == [
        (0, Availability(True)),
        (10, ScriptedEvent(EventType.SMOKE_ALARM, {})),
        (120, Availability(False, OUTAGE_REASON)),
        (150, Availability(True)),
        (150, ScriptedEvent(EventType.SMOKE_CLEARED, {})),
    ]


def test_outage_from_the_start_means_offline_at_once() -> None:
    dues = list(schedule(settings("door", offline=[{"at_s": 0, "for_s": 5}]), "door-1"))
    assert [(d.t, d.action.available) for d in dues if isinstance(d.action, Availability)] == [
        (0, False),
        (5, True),
    ]


def test_meter_sends_no_readings_while_offline() -> None:
    s = settings(
        "meter",
        profile="household_water",
        telemetry_interval_s=5,
        offline=[{"at_s": 20, "for_s": 20}],
    )
    got = ticks(until(schedule(s, "m-1"), 60))
    assert got and not [t for t in got if 20 <= t < 40]
    assert len([t for t in got if t >= 40]) == 4


# ---- telemetry timing -----------------------------------------------------------------


def test_telemetry_every_interval_starting_within_the_first_one() -> None:
    s = settings("meter", profile="household_electricity", telemetry_interval_s=5)
    got = ticks(until(schedule(s, "m-1"), 100))
    assert 0 <= got[0] < 5
    assert [b - a for a, b in itertools.pairwise(got)] == pytest.approx([5.0] * (len(got) - 1))
    assert len(got) == 20


def test_a_plain_meter_streams_what_one_with_a_later_outage_streams_until_then() -> None:
    # A meter without events or outages takes a shorter path than the general merge;
    # an outage a day away sends the same meter down the general one.
    plain = settings("meter", profile="household_electricity", telemetry_interval_s=5)
    later = settings(
        "meter",
        profile="household_electricity",
        telemetry_interval_s=5,
        offline=[{"at_s": 86400, "for_s": 60}],
    )
    got = until(schedule(plain, "m-1"), 3600)
    assert [(d, d.action) for d in got] == [
        (d, d.action) for d in until(schedule(later, "m-1"), 3600)
    ]
    assert (got[0].t, got[0].action) == (0.0, Availability(True))
    assert len(ticks(got)) == 720


def test_default_interval_is_10_s_and_rate_hz_overrides_it() -> None:
    slow = ticks(until(schedule(settings("meter", profile="household_water"), "m-1"), 100))
    fast = ticks(
        until(schedule(settings("meter", profile="household_water", rate_hz=10), "m-1"), 10)
    )
    assert len(slow) == 10
    assert len(fast) == 100
    assert [b - a for a, b in itertools.pairwise(fast)] == pytest.approx([0.1] * 99)


def test_meters_started_together_spread_their_readings() -> None:
    s = settings("meter", profile="household_electricity", telemetry_interval_s=10)
    firsts = [ticks(until(schedule(s, f"m-{i}"), 10))[0] for i in range(50)]
    assert all(0 <= t < 10 for t in firsts)
    assert len({int(t) for t in firsts}) >= 8  # over most of the interval, not one burst


# ---- the meter model ------------------------------------------------------------------

DAY_START = datetime(2026, 3, 10, tzinfo=UTC)


def meter(profile: str = "household_electricity", **kw: Any) -> MeterModel:
    return MeterModel(load_profile(profile), device_id=kw.pop("device_id", "m-1"), **kw)


def day_samples(m: MeterModel, step_s: float) -> list[tuple[float, dict[str, float]]]:
    out = []
    for i in range(int(86400 / step_s) + 1):
        ts = DAY_START + timedelta(seconds=i * step_s)
        out.append((i * step_s, {r.name: float(r.value) for r in m.readings(ts)}))
    return out


def test_electricity_readings_are_named_with_units_and_types() -> None:
    readings = meter().readings(DAY_START)
    assert [(r.name, str(r.unit), r.type) for r in readings] == [
        ("energy_import", "kWh", ValueType.COUNTER),
        ("power", "W", ValueType.GAUGE),
        ("voltage", "V", ValueType.GAUGE),
        ("current", "A", ValueType.GAUGE),
    ]


def test_counter_never_decreases_over_a_day() -> None:
    for profile in ("household_electricity", "household_water"):
        samples = day_samples(meter(profile), 10)
        counter = "energy_import" if profile == "household_electricity" else "volume"
        values = [v[counter] for _, v in samples]
        assert all(b >= a for a, b in itertools.pairwise(values)), profile
        assert values[-1] > values[0]


def test_energy_is_the_integral_of_power() -> None:
    m = meter(scale=1.3, seed=5)
    # Fine numeric integration of the reported power (unrounded) against the counter.
    step = 2.0
    t, acc = DAY_START, 0.0
    prev = m.demand(t)
    for _ in range(int(6 * 3600 / step)):
        t += timedelta(seconds=step)
        cur = m.demand(t)
        acc += (prev + cur) / 2 * step / 3600
        prev = cur
    assert m.demand_hours(t) - m.demand_hours(DAY_START) == pytest.approx(acc, rel=1e-4)
    # And as the platform sees it: rounded readings every 10 s over a whole day.
    samples = day_samples(m, 10)
    energy = samples[-1][1]["energy_import"] - samples[0][1]["energy_import"]
    from_power = sum(v["power"] * 10 / 3600 / 1000 for _, v in samples[:-1])
    assert energy == pytest.approx(from_power, rel=0.01)


def test_a_day_of_a_household_is_its_profile_mean() -> None:
    # 400 W on average is 9.6 kWh a day; 0.0125 m³/h is 300 litres.
    elec, water = meter(scale=1.5), meter("household_water")
    end = DAY_START + timedelta(days=1)
    assert elec.demand_hours(end) - elec.demand_hours(DAY_START) == pytest.approx(
        1.5 * 9600, rel=1e-9
    )
    assert water.demand_hours(end) - water.demand_hours(DAY_START) == pytest.approx(0.3, rel=1e-9)


def test_evening_peak_and_quiet_night() -> None:
    m = meter()
    night = [m.demand(DAY_START + timedelta(hours=3, minutes=i)) for i in range(60)]
    evening = [m.demand(DAY_START + timedelta(hours=19, minutes=i)) for i in range(60)]
    assert sum(evening) / 60 > 3 * sum(night) / 60
    assert min(night) > 0


def test_current_is_power_over_voltage() -> None:
    for _, v in day_samples(meter(), 600):
        assert v["current"] == pytest.approx(v["power"] / v["voltage"], abs=0.01)
        assert 225 <= v["voltage"] <= 235


def test_water_meter_reads_volume_and_flow() -> None:
    readings = {
        r.name: r for r in meter("household_water").readings(DAY_START + timedelta(hours=7))
    }
    assert set(readings) == {"volume", "flow"}
    assert str(readings["volume"].unit) == "m³" and readings["volume"].type is ValueType.COUNTER
    assert str(readings["flow"].unit) == "m³/h" and float(readings["flow"].value) > 0


def test_readings_are_a_function_of_seed_device_and_time() -> None:
    ts = DAY_START + timedelta(hours=12, seconds=17)
    assert meter(seed=3).readings(ts) == meter(seed=3).readings(ts)
    assert meter(seed=3).demand(ts) != meter(seed=4).demand(ts)
    assert meter(seed=3).demand(ts) != meter(seed=3, device_id="m-2").demand(ts)


def test_counter_continues_across_a_restart() -> None:
    # A new model (a restarted gateway) reads what the old one would have read.
    before = meter(seed=1)
    before.readings(DAY_START)
    later = DAY_START + timedelta(hours=5, seconds=3.3)
    assert meter(seed=1).readings(later) == before.readings(later)
    assert float(meter(seed=1).readings(later)[0].value) > float(
        before.readings(DAY_START)[0].value
    )


def test_counter_reads_years_of_use_from_its_installation_on() -> None:
    m = meter()
    assert EPOCH <= m.installed < EPOCH + timedelta(days=365)
    assert m.demand_hours(m.installed - timedelta(seconds=1)) == 0
    assert m.demand_hours(m.installed + timedelta(days=2)) == pytest.approx(2 * 9600, rel=0.02)
    assert meter().readings(datetime(1970, 1, 1, tzinfo=UTC))[0].value == 0  # clock not set yet
    value = float(m.readings(datetime(2026, 1, 1, tzinfo=UTC))[0].value)
    assert 366 * 9.6 < value < 731 * 9.6  # installed during 2024, 9.6 kWh a day
    # Flats of the same size were not all installed on the same day.
    counters = {meter(device_id=f"m-{i}").readings(DAY_START)[0].value for i in range(10)}
    assert len(counters) == 10


def test_utc_offset_moves_the_curve_to_local_time() -> None:
    utc, east = meter(), meter(utc_offset_s=3 * 3600)
    # 16:00 UTC is 19:00 at UTC+3: the evening peak.
    assert east.demand(DAY_START + timedelta(hours=16)) > utc.demand(
        DAY_START + timedelta(hours=16)
    )


@given(st.lists(st.lists(st.integers(0, 5), max_size=6), max_size=5))
def test_streams_merge_as_heapq_merge_would_with_ties_in_stream_order(
    times: list[list[int]],
) -> None:
    # schedule() merges a device's streams without heapq.merge's generator (memory,
    # issue 16); the order must stay heapq's, equal items in the order of their streams.
    streams = [
        [Due(float(t), 1, 0, ScriptedEvent(EventType("door.opened"), {"s": i})) for t in sorted(ts)]
        for i, ts in enumerate(times)
    ]
    want = [d.action for d in heapq.merge(*(iter(x) for x in streams))]
    assert [d.action for d in _Merge([iter(x) for x in streams])] == want
