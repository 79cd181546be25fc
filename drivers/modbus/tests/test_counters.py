"""Counter plausibility: what gets published, what is withheld, and when a new level sticks."""

from __future__ import annotations

import pytest

from drivers.modbus.counters import CounterGuard, Reason, Verdict

P, W, ADOPT = Verdict.PUBLISH, Verdict.WITHHOLD, Verdict.ADOPT


def run(
    guard: CounterGuard, readings: list[tuple[float, float]]
) -> list[tuple[Verdict, str | None]]:
    out = []
    for t, value in readings:
        verdict, anomaly = guard.check(value, t)
        out.append((verdict, None if anomaly is None else str(anomaly.reason)))
    return out


@pytest.mark.parametrize(
    ("max_rate", "readings", "expected"),
    [
        # a normal meter: steady rise, standstill
        (15, [(0, 100.0), (3600, 110.0), (7200, 110.0)], [(P, None)] * 3),
        # backwards by 0.1: withheld and reported
        (15, [(0, 100.0), (10, 99.9)], [(P, None), (W, "backwards")]),
        # 15 kWh/h allows 0.25 kWh in a minute; 0.3 is a jump
        (15, [(0, 100.0), (60, 100.25)], [(P, None), (P, None)]),
        (15, [(0, 100.0), (60, 100.3)], [(P, None), (W, "jump")]),
        # after a day offline, a day's worth of rise is plausible
        (15, [(0, 100.0), (86400, 400.0)], [(P, None), (P, None)]),
        # no max_rate: only backwards is checked
        (None, [(0, 100.0), (1, 1e9), (2, 5.0)], [(P, None), (P, None), (W, "backwards")]),
        # a one-off misread is forgotten when the next reading fits the old value
        (
            15,
            [(0, 100.0), (10, 5000.0), (20, 100.01), (30, 100.02)],
            [(P, None), (W, "jump"), (P, None), (P, None)],
        ),
        # a replaced meter: three consistent readings at the new level, then published
        (
            15,
            [(0, 100.0), (10, 0.5), (20, 0.5), (30, 0.51), (40, 0.52)],
            [(P, None), (W, "backwards"), (W, None), (ADOPT, None), (P, None)],
        ),
        # two different misreads in a row are two anomalies, not a new level
        (15, [(0, 100.0), (10, 5000.0), (20, 3.0)], [(P, None), (W, "jump"), (W, "backwards")]),
    ],
)
def test_counter_table(
    max_rate: float | None,
    readings: list[tuple[float, float]],
    expected: list[tuple[Verdict, str | None]],
) -> None:
    assert run(CounterGuard(max_rate), readings) == expected


def test_resolution_lets_a_slow_integer_counter_tick_between_close_polls() -> None:
    # 0.01 kWh steps, 1 kWh/h: between polls 1 s apart only 0.0003 kWh is plausible,
    # but one step of the register must pass.
    guard = CounterGuard(1.0, resolution=0.01)
    assert run(guard, [(0, 5.00), (1, 5.01)]) == [(P, None), (P, None)]
    assert run(guard, [(2, 5.03)]) == [(W, "jump")]


def test_anomaly_data_names_old_new_and_elapsed() -> None:
    guard = CounterGuard(15)
    guard.check(100.0, 0)
    _, anomaly = guard.check(99.0, 12.5)
    assert anomaly is not None
    assert anomaly.reason is Reason.BACKWARDS
    assert anomaly.as_data("energy_import", "kWh") == {
        "reading": "energy_import",
        "unit": "kWh",
        "old": 100.0,
        "new": 99.0,
        "elapsed_s": 12.5,
        "reason": "backwards",
        "max_rate_per_h": 15,
    }
    assert guard.last_published == 100.0
