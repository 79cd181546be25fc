"""Backoff: doubling with jitter up to a ceiling that holds however long failures last."""

from __future__ import annotations

import pytest

from gateway.sdk.backoff import Backoff, doubled


def test_backoff_doubles_to_its_ceiling_with_jitter_and_resets() -> None:
    b = Backoff(1.0, 8.0)
    delays = [b.next() for _ in range(6)]
    for delay, full in zip(delays, [1, 2, 4, 8, 8, 8], strict=True):
        assert full / 2 <= delay <= full
    b.reset()
    assert b.next() <= 1.0
    with pytest.raises(ValueError):
        Backoff(0, 1)


def test_a_million_failures_keep_the_delay_at_its_ceiling() -> None:
    # Before: low * 2**attempt overflowed a float at the 1,025th call and killed the
    # thread retrying (the influx sink after ~13 h of a failing server).
    b = Backoff(1.0, 60.0)
    lowest = highest = b.next()
    for _ in range(10**6):
        delay = b.next()
        lowest, highest = min(lowest, delay), max(highest, delay)
    assert 30.0 <= b.next() <= 60.0
    assert highest <= 60.0
    b.reset()
    assert b.next() <= 1.0


def test_a_tiny_low_and_huge_high_still_reach_the_ceiling() -> None:
    b = Backoff(1e-9, 1e300)
    for _ in range(5000):
        delay = b.next()
    assert 0.5e300 <= delay <= 1e300


def test_without_jitter_the_delays_are_exact_and_reset() -> None:
    # Drivers retry their own port: the documented 1, 2, 4 ... 60 s, nothing drawn.
    b = Backoff(1.0, 60.0, jitter=False)
    assert [b.next() for _ in range(8)] == [1, 2, 4, 8, 16, 32, 60, 60]
    assert b.delay == 60.0
    b.reset()
    assert b.delay == 1.0
    assert b.next() == 1.0


def test_doubled_from_a_failure_count_is_capped_and_never_overflows() -> None:
    # A meter's poll delay is computed from its count of failed polls, kept elsewhere.
    assert [doubled(10.0, 300.0, n) for n in (0, 1, 2, 5, 6)] == [10, 20, 40, 300, 300]
    assert doubled(10.0, 300.0, 10**9) == 300.0
    assert doubled(10.0, 300.0, -3) == 10.0
    assert doubled(1e300, float("inf"), 5000) == float("inf")
