"""The door state machine: opened, closed, forced and held open, from contact and grants.

Pure: times are seconds on any monotonic clock, given by the caller.  A grant comes
from the door's request-to-exit input, or from outside (an access reader) through
`grant`.  An opening consumes the grant, so one badge lets one person in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gateway.sdk.model import EventType

__all__ = ["DoorEvent", "DoorLogic"]


@dataclass(frozen=True, slots=True)
class DoorEvent:
    """An event the door logic decided, at the time it happened."""

    ts: float
    type: EventType
    data: dict[str, Any] = field(default_factory=dict)


class DoorLogic:
    """Turns door contact changes and grants into door events."""

    def __init__(self, *, grant_window_s: float = 10.0, held_open_s: float = 30.0) -> None:
        self.grant_window_s = grant_window_s
        self.held_open_s = held_open_s
        self.is_open = False
        self._opened_at: float | None = None
        self._held_reported = False
        self._grant_at: float | None = None

    def start(self, is_open: bool, ts: float) -> None:
        """Set the state found at start-up, without events (nobody saw how it got there)."""
        self.is_open = is_open
        self._opened_at = ts if is_open else None
        self._held_reported = False

    def grant(self, ts: float) -> None:
        """An access grant: the next opening within `grant_window_s` is not forced."""
        self._grant_at = ts

    def request_to_exit(self, ts: float) -> list[DoorEvent]:
        """The exit button was pressed: reported, and it grants the next opening."""
        self.grant(ts)
        return [DoorEvent(ts, EventType.DOOR_REQUEST_TO_EXIT)]

    def opened(self, ts: float) -> list[DoorEvent]:
        if self.is_open:
            return []
        self.is_open, self._opened_at, self._held_reported = True, ts, False
        granted = self._grant_at is not None and 0 <= ts - self._grant_at <= self.grant_window_s
        self._grant_at = None
        out = [DoorEvent(ts, EventType.DOOR_OPENED)]
        if not granted:
            out.append(DoorEvent(ts, EventType.DOOR_FORCED))
        return out

    def closed(self, ts: float) -> list[DoorEvent]:
        if not self.is_open:
            return []
        open_s = ts - self._opened_at if self._opened_at is not None else None
        self.is_open, self._opened_at = False, None
        data = {} if open_s is None else {"open_s": round(open_s, 3)}
        return [DoorEvent(ts, EventType.DOOR_CLOSED, data)]

    @property
    def due(self) -> float | None:
        """When `tick` would report the door held open, or None."""
        if not self.is_open or self._held_reported or self._opened_at is None:
            return None
        return self._opened_at + self.held_open_s

    def tick(self, ts: float) -> list[DoorEvent]:
        """Report a door held open too long, once per opening."""
        due = self.due
        if due is None or ts < due:
            return []
        self._held_reported = True
        return [DoorEvent(due, EventType.DOOR_HELD_OPEN, {"held_open_s": self.held_open_s})]
