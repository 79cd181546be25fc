"""When a driver's devices are polled: all at the start, then in groups spread over the interval.

A driver's devices are all read at once when the gateway starts (an installer sees
every device answer).  After that they are read in groups of at most GROUP, the groups
spread evenly over the interval: device i of n adds (i // GROUP) / ceil(n / GROUP) of
its interval to its first interval only, and keeps its cadence from there.  Across
buses too: 32 meters each at an address of its own burst as much as 32 on one line.

Why groups, not one slot per device: the readings of one poll burst share the outbox's
commit and the uplink's wake-ups, which is most of their CPU; one slot per device made
the 32-meter benchmark use 3.4 times the CPU.  A burst of 32 waits for itself (data age
p50 14.8 ms); bursts of 16 give 8.9 ms at the same values per CPU-second
(docs/benchmarks.md, issue 16).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["GROUP", "Cadence", "first_offsets"]

GROUP = 16  # devices read together: fresh data (short bursts) at batched CPU cost


def first_offsets(intervals: Sequence[float], group: int = GROUP) -> list[float]:
    """What each device, in order, adds to its first interval: its group's share of it."""
    slots = -(-len(intervals) // group)
    return [interval * (i // group) / slots for i, interval in enumerate(intervals)]


@dataclass(slots=True)
class Cadence:
    """When one device is next due (seconds on the monotonic clock), for a bus poller.

    `phase` is its group's share of the interval (`first_offsets`), added to the first
    interval after a poll that succeeded and then dropped: the device keeps its group's
    slot from there on.  A failed poll keeps the phase for the next success.
    """

    due: float = 0.0
    phase: float = 0.0

    def keep(self, interval: float, now: float) -> None:
        """Due `interval` after the last due time: the rhythm kept; never in the past."""
        self.due = max(self.due + interval + self.phase, now)
        self.phase = 0.0

    def retry(self, delay: float, now: float) -> None:
        """Due `delay` from now (a failed poll's backoff): the rhythm starts again."""
        self.due = now + delay
