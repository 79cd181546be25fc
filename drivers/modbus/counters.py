"""Counter plausibility: a counter that runs backwards or jumps too far is not published.

Pure code.  Each counter point of each device has a `CounterGuard` that remembers the
last value it let through.  A reading is plausible when it is not below that value and
not above it by more than `max_rate` per hour of elapsed time (plus one count of the
meter's resolution, so a slow counter may tick between two close polls).

An implausible reading is withheld and reported once as an `Anomaly`.  If the next
readings agree with it instead of with the old value (a replaced or reset meter), the
guard adopts the new level after `confirm` consistent readings in a row, and publishes
again from there; a one-off misread is simply forgotten when the next reading fits the
old value.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["CONFIRM_READS", "Anomaly", "CounterGuard", "Reason", "Verdict"]

CONFIRM_READS = 3


class Reason(StrEnum):
    """Why a counter reading was not plausible."""

    BACKWARDS = "backwards"
    JUMP = "jump"


class Verdict(StrEnum):
    """What happens to one reading."""

    PUBLISH = "publish"  # plausible: publish it
    WITHHOLD = "withhold"  # implausible: leave it out of the telemetry
    ADOPT = "adopt"  # confirmed new level after an anomaly: publish it from now on


@dataclass(frozen=True, slots=True)
class Anomaly:
    """An implausible counter reading, for a `meter.counter_anomaly` event."""

    old: float
    new: float
    elapsed_s: float
    reason: Reason
    max_rate: float | None

    def as_data(self, reading: str, unit: str) -> dict[str, str | float | None]:
        return {
            "reading": reading,
            "unit": unit,
            "old": self.old,
            "new": self.new,
            "elapsed_s": round(self.elapsed_s, 3),
            "reason": str(self.reason),
            "max_rate_per_h": self.max_rate,
        }


@dataclass(slots=True)
class _Level:
    value: float
    t: float
    count: int = 1


class CounterGuard:
    """Decides, reading by reading, whether one counter's value can be published."""

    def __init__(
        self, max_rate: float | None, resolution: float = 0.0, confirm: int = CONFIRM_READS
    ) -> None:
        self.max_rate = max_rate
        self.resolution = resolution
        self.confirm = confirm
        self._base: _Level | None = None
        self._candidate: _Level | None = None

    @property
    def last_published(self) -> float | None:
        return None if self._base is None else self._base.value

    def _why_not(self, ref: _Level, value: float, t: float) -> Reason | None:
        if value < ref.value:
            return Reason.BACKWARDS
        if self.max_rate is not None:
            allowed = self.max_rate * max(t - ref.t, 0.0) / 3600 + self.resolution
            if value - ref.value > allowed:
                return Reason.JUMP
        return None

    def check(self, value: float, t: float) -> tuple[Verdict, Anomaly | None]:
        """Judge a reading taken at monotonic time `t` (seconds); updates the guard."""
        if self._base is None:
            self._base = _Level(value, t)
            return Verdict.PUBLISH, None
        reason = self._why_not(self._base, value, t)
        if reason is None:
            self._base = _Level(value, t)
            self._candidate = None
            return Verdict.PUBLISH, None
        cand = self._candidate
        if cand is not None and self._why_not(cand, value, t) is None:
            cand.value, cand.t, cand.count = value, t, cand.count + 1
            if cand.count >= self.confirm:
                self._base, self._candidate = _Level(value, t), None
                return Verdict.ADOPT, None
            return Verdict.WITHHOLD, None
        self._candidate = _Level(value, t)
        anomaly = Anomaly(self._base.value, value, t - self._base.t, reason, self.max_rate)
        return Verdict.WITHHOLD, anomaly
