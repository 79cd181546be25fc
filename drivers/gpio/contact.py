"""Pure input logic: software debounce, wiring polarity, and what a role's edges mean.

Times are integers in nanoseconds on the monotonic clock, as the kernel stamps GPIO
edge events; nothing here sleeps or reads a clock, so it is tested with timelines.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from gateway.sdk.model import EventType

from .settings import Bias, Contact, Role

__all__ = ["ROLE_EVENTS", "Debouncer", "RoleEvents", "active_level"]


def active_level(contact: Contact, bias: Bias) -> int:
    """The line level meaning "active" (door open, button pressed, relay in alarm).

    With a pull-up (internal or external) the contact goes to GND, so a closed contact
    reads 0; with a pull-down it goes to 3V3 and reads 1.  A normally-open contact is
    closed when active; a normally-closed one is open when active (and a cut wire then
    reads as active, which is why smoke relays and door contacts are usually NC).
    """
    closed = 1 if bias is Bias.PULL_DOWN else 0
    return closed if contact is Contact.NO else 1 - closed


class Debouncer:
    """Accepts a new level only once it has held for `period_ns` without another edge.

    Contacts bounce for a few milliseconds, and not every chip debounces in hardware.
    `feed` records an edge; `settle(now)` returns the new stable level once it is due,
    and `due` says when to call it.  A bounce back to the stable level cancels the change.
    """

    def __init__(self, level: int, period_ns: int) -> None:
        self.level = level
        self.period_ns = period_ns
        self._pending: tuple[int, int] | None = None  # (level, ts of its last edge)

    def feed(self, ts_ns: int, level: int) -> None:
        self._pending = None if level == self.level else (level, ts_ns)

    @property
    def due(self) -> int | None:
        """When `settle` may next return a change, or None with nothing pending."""
        return None if self._pending is None else self._pending[1] + self.period_ns

    def settle(self, now_ns: int) -> tuple[int, int] | None:
        """(new stable level, time of its edge) once it has held long enough, else None."""
        if self._pending is None or now_ns < self._pending[1] + self.period_ns:
            return None
        self.level, since = self._pending
        self._pending = None
        return self.level, since


@dataclass(frozen=True, slots=True)
class RoleEvents:
    """The events of a plain input: on becoming active, and on becoming inactive."""

    on_active: EventType | None
    on_inactive: EventType | None


# Door contacts are not here: their events depend on grants and time (see door.py).
ROLE_EVENTS: Mapping[Role, RoleEvents] = MappingProxyType(
    {
        Role.SMOKE_RELAY: RoleEvents(EventType.SMOKE_ALARM, EventType.SMOKE_CLEARED),
        Role.SOS_BUTTON: RoleEvents(EventType.ELDERLY_SOS, None),
        Role.PULL_CORD: RoleEvents(EventType.ELDERLY_SOS, None),
        Role.REQUEST_TO_EXIT: RoleEvents(EventType.DOOR_REQUEST_TO_EXIT, None),
    }
)
