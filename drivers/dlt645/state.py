"""Per-meter bookkeeping, pure: failures, offline transitions, backoff, counter checks.

The driver feeds in poll outcomes and acts on what comes back; nothing here does I/O
or reads a clock, so every rule is tested with plain numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum

from gateway.sdk.backoff import doubled

__all__ = ["Anomaly", "CounterGuard", "MeterHealth", "Transition"]


class Transition(StrEnum):
    """What a poll outcome changed about a meter's availability."""

    NONE = "none"
    ONLINE = "online"  # first success, or back after being offline
    OFFLINE = "offline"  # the failure that reached `offline_after`


@dataclass(slots=True)
class MeterHealth:
    """Consecutive failures of one meter and when to poll it next."""

    poll_interval_s: float
    offline_after: int
    backoff_max_s: float
    failures: int = 0
    online: bool | None = None  # None until the first poll outcome

    def succeeded(self) -> Transition:
        self.failures = 0
        was = self.online
        self.online = True
        return Transition.NONE if was else Transition.ONLINE

    def failed(self) -> Transition:
        self.failures += 1
        if self.failures >= self.offline_after and self.online is not False:
            self.online = False
            return Transition.OFFLINE
        return Transition.NONE

    def next_delay(self) -> float:
        """Seconds until the next poll.

        At the normal interval until the meter is declared offline, so the time to
        notice a dead meter is predictable; then doubling up to `backoff_max_s`, so a
        dead meter does not spend the shared bus's time on timeouts.
        """
        if self.online is not False:
            return self.poll_interval_s
        cap = max(self.backoff_max_s, self.poll_interval_s)
        return doubled(self.poll_interval_s, cap, self.failures - self.offline_after + 1)


@dataclass(frozen=True, slots=True)
class Anomaly:
    """A counter that read lower than the last value accepted."""

    name: str
    previous: Decimal
    current: Decimal


@dataclass(slots=True)
class CounterGuard:
    """Accepts a counter only when it did not go backwards.

    A backwards counter (meter replaced or reset, a misread, another meter answering
    at this address) is reported once per episode and not published as truth; the
    last good value stays the reference until the counter climbs back above it.
    """

    last: dict[str, Decimal] = field(default_factory=dict)
    in_anomaly: set[str] = field(default_factory=set)

    def check(self, name: str, value: Decimal) -> tuple[bool, Anomaly | None]:
        """(publish it?, the anomaly to report if this is the first backwards reading)."""
        previous = self.last.get(name)
        if previous is not None and value < previous:
            if name in self.in_anomaly:
                return False, None
            self.in_anomaly.add(name)
            return False, Anomaly(name, previous, value)
        self.in_anomaly.discard(name)
        self.last[name] = value
        return True, None
