"""Offline detection, backoff and counter checks, with plain numbers."""

from __future__ import annotations

from decimal import Decimal

from drivers.dlt645.state import Anomaly, CounterGuard, MeterHealth, Transition


def test_offline_after_n_failures_once_then_online_again() -> None:
    h = MeterHealth(poll_interval_s=60, offline_after=3, backoff_max_s=600)
    assert h.succeeded() is Transition.ONLINE
    assert h.succeeded() is Transition.NONE
    assert [h.failed() for _ in range(5)] == [
        Transition.NONE,
        Transition.NONE,
        Transition.OFFLINE,
        Transition.NONE,
        Transition.NONE,
    ]
    assert h.succeeded() is Transition.ONLINE
    assert h.failures == 0


def test_a_meter_that_never_answers_goes_offline_too() -> None:
    h = MeterHealth(poll_interval_s=60, offline_after=2, backoff_max_s=600)
    assert h.failed() is Transition.NONE
    assert h.failed() is Transition.OFFLINE


def test_backoff_starts_once_offline_and_is_capped() -> None:
    h = MeterHealth(poll_interval_s=60, offline_after=2, backoff_max_s=600)
    delays = []
    for _ in range(7):
        h.failed()
        delays.append(h.next_delay())
    assert delays == [60, 120, 240, 480, 600, 600, 600]
    h.succeeded()
    assert h.next_delay() == 60


def test_counter_going_backwards_is_reported_once_and_not_accepted() -> None:
    g = CounterGuard()
    assert g.check("energy_total", Decimal("100.00")) == (True, None)
    assert g.check("energy_total", Decimal("100.00")) == (True, None)
    assert g.check("energy_total", Decimal("99.50")) == (
        False,
        Anomaly("energy_total", Decimal("100.00"), Decimal("99.50")),
    )
    assert g.check("energy_total", Decimal("99.60")) == (False, None)
    assert g.check("energy_t1", Decimal("5")) == (True, None)  # other counters unaffected
    assert g.check("energy_total", Decimal("100.10")) == (True, None)
    assert g.check("energy_total", Decimal("90")) == (
        False,
        Anomaly("energy_total", Decimal("100.10"), Decimal("90")),
    )
