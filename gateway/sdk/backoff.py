"""Exponential backoff with jitter, for everything that reconnects (uplink, sinks, drivers)."""

from __future__ import annotations

import random

__all__ = ["Backoff"]


class Backoff:
    """Delays that double from `low` to `high`, each jittered into its upper half.

    The jitter is why: after a broker or network outage, the gateways of a site must not
    all retry in the same second.  Once a delay reaches `high` it stays there for as long
    as the failures last: the delay is doubled step by step and clamped, never computed
    as `low * 2**attempt`, whose power overflows a float after 1,024 failures.
    """

    def __init__(self, low: float, high: float) -> None:
        if not 0 < low <= high:
            raise ValueError(f"backoff needs 0 < low <= high, got {low} and {high}")
        self.low, self.high, self.attempt = low, high, 0
        self._delay = low

    def next(self) -> float:
        """The delay before the next attempt; each call counts one more failure."""
        delay = self._delay
        self._delay = min(self.high, delay * 2.0)  # a float product reaches inf, never raises
        self.attempt += 1
        return delay / 2 + random.uniform(0, delay / 2)

    def reset(self) -> None:
        """After a success: the next failure waits `low` again."""
        self.attempt = 0
        self._delay = self.low
