"""A device's health: offline after N failures, online at the first success, backoff."""

from __future__ import annotations

from drivers.modbus.faults import DeviceHealth, FaultKind, Transition, hint_for


def test_offline_after_n_failures_once_and_online_at_first_success() -> None:
    h = DeviceHealth(offline_after=3, poll_interval_s=10, backoff_max_s=300)
    assert h.success() is Transition.ONLINE  # first poll settles the unknown state
    assert [h.failure() for _ in range(5)] == [None, None, Transition.OFFLINE, None, None]
    assert h.online is False
    assert h.success() is Transition.ONLINE
    assert h.success() is None


def test_a_device_dead_from_the_start_goes_offline_too() -> None:
    h = DeviceHealth(offline_after=2, poll_interval_s=1, backoff_max_s=60)
    assert [h.failure(), h.failure()] == [None, Transition.OFFLINE]


def test_retry_delay_keeps_the_interval_then_doubles_up_to_the_cap() -> None:
    h = DeviceHealth(offline_after=3, poll_interval_s=10, backoff_max_s=100)
    delays = []
    for _ in range(7):
        h.failure()
        delays.append(h.next_delay())
    assert delays == [10, 10, 20, 40, 80, 100, 100]
    h.success()
    assert h.next_delay() == 10


def test_each_fault_is_logged_once_until_recovery() -> None:
    h = DeviceHealth(offline_after=3, poll_interval_s=10, backoff_max_s=100)
    assert h.first_time("no_response")
    assert not h.first_time("no_response")
    assert h.first_time("exception:2")
    assert h.clear_logged() == {"no_response", "exception:2"}
    assert h.first_time("no_response")


def test_hints_name_what_to_check() -> None:
    assert "A to A" in hint_for(FaultKind.NO_RESPONSE, serial=True)
    assert "termination" in hint_for(FaultKind.NO_RESPONSE, serial=True)
    assert "baud" in hint_for(FaultKind.GARBLED, serial=True)
    assert "max_gap" in hint_for(FaultKind.EXCEPTION, serial=True, code=2)
    assert "dialout" in hint_for(FaultKind.PORT, serial=True)
    assert "firewall" in hint_for(FaultKind.PORT, serial=False)
