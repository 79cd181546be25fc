"""Doubling retry delays, for everything that reconnects or polls a silent device.

One definition for the uplink, the sinks and every driver: `Backoff` for a loop that
retries (with jitter or not, per use), `doubled` for a delay computed from a count of
failures that is kept elsewhere (a meter's consecutive failed polls).
"""

from __future__ import annotations

import math
import random

__all__ = ["Backoff", "doubled"]


def doubled(low: float, high: float, steps: int) -> float:
    """`low` doubled `steps` times, never above `high`: the delay after `steps` failures.

    Computed, not doubled step by step; a device failing for years gets `high`, never
    the OverflowError of a power past the largest float.
    """
    try:
        return min(high, math.ldexp(low, max(steps, 0)))
    except OverflowError:
        return high


class Backoff:
    """Delays that double from `low` to `high` and stay there while failures last.

    With `jitter` (the default) each delay is drawn from its upper half: after a broker
    or network outage, the gateways of a site must not all retry in the same second.
    A driver retrying its own port on its own box needs no jitter, and its delays stay
    exactly as documented (`jitter=False`).
    """

    def __init__(self, low: float, high: float, *, jitter: bool = True) -> None:
        if not 0 < low <= high:
            raise ValueError(f"backoff needs 0 < low <= high, got {low} and {high}")
        self.low, self.high, self.jitter, self.attempt = low, high, jitter, 0

    @property
    def delay(self) -> float:
        """The full delay the next call to `next` starts from (before any jitter)."""
        return doubled(self.low, self.high, self.attempt)

    def next(self) -> float:
        """The delay before the next attempt; each call counts one more failure."""
        delay = self.delay
        self.attempt += 1
        return delay / 2 + random.uniform(0, delay / 2) if self.jitter else delay

    def reset(self) -> None:
        """After a success: the next failure waits `low` again."""
        self.attempt = 0
