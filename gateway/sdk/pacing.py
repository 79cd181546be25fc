"""When the devices of one bus are polled: all at the start, then spread over the interval.

A bus's devices are all read at once when the gateway starts (an installer sees every
device answer), then each keeps its own slot: the i-th of n adds i/n of its interval
to its first interval only, and keeps its cadence from there.  Readings then reach the
outbox, the uplink and the broker one device at a time instead of in one burst per
interval, so each is published within milliseconds of being read, at the same CPU
cost (docs/benchmarks.md, issue 16), and the bus carries an even load.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["first_offsets"]


def first_offsets(intervals: Sequence[float]) -> list[float]:
    """What each device, in bus order, adds to its first interval: i/n of its own."""
    n = len(intervals)
    return [interval * i / n for i, interval in enumerate(intervals)]
