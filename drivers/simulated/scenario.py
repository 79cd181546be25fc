"""A device's scenario as a time-ordered stream of what is due: pure, no clock, no sleeping.

`schedule()` turns a device's settings into an iterator of `Due` items, in time order
(seconds after the driver started).  The driver only waits until each one is due and
performs it; tests read the same stream with numbers.

While the device is in an offline window, its events and readings are dropped, as
those of a device that cannot be reached; a meter's counter keeps counting meanwhile.
"""

from __future__ import annotations

import heapq
import itertools
from bisect import bisect_right
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.sdk.model import EventType

from .noise import noise, salt, unit_interval
from .settings import EventRule, SimulatedSettings

__all__ = [
    "OUTAGE_REASON",
    "Action",
    "Availability",
    "Due",
    "ScriptedEvent",
    "TelemetryTick",
    "schedule",
    "telemetry_phase",
]

OUTAGE_REASON = "simulated outage"


@dataclass(frozen=True, slots=True)
class Availability:
    """The device becomes reachable or unreachable."""

    available: bool
    reason: str = ""


@dataclass(frozen=True, slots=True)
class ScriptedEvent:
    """The device reports an event."""

    type: EventType
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TelemetryTick:
    """A meter reports its readings (computed from the wall clock when performed)."""


Action = Availability | ScriptedEvent | TelemetryTick

# At the same instant: availability first (an outage starting at t swallows what is
# due at t), then events, then readings.
_RANK = {Availability: 0, ScriptedEvent: 1, TelemetryTick: 2}


@dataclass(frozen=True, slots=True, order=True)
class Due:
    """`action` is due `t` seconds after start; `rank` and `seq` break ties stably."""

    t: float
    rank: int
    seq: int
    action: Action = field(compare=False)


def _due(t: float, seq: int, action: Action) -> Due:
    return Due(t, _RANK[type(action)], seq, action)


def _occurrences(rule: EventRule, keys: tuple[int, ...]) -> Iterator[float]:
    if rule.every_s is None:
        yield rule.first_s
        return
    for k in itertools.count():
        jitter = rule.jitter_s * noise(*keys, k) if rule.jitter_s else 0.0
        # Jitter may not move the first occurrence before the start.
        yield max(0.0, rule.first_s + k * rule.every_s + jitter)


def _rule_streams(rule: EventRule, index: int, keys: tuple[int, ...]) -> list[Iterator[Due]]:
    keys = (*keys, index)
    main = ScriptedEvent(rule.type, rule.data)
    streams: list[Iterator[Due]] = [(_due(t, 2 * index, main) for t in _occurrences(rule, keys))]
    if rule.then is not None and rule.then_after_s is not None:
        after, second = rule.then_after_s, ScriptedEvent(rule.then, {})
        # A stream of its own: with jitter, a pair's second event can come after the
        # next pair's first one would in a single stream, and merge needs order.
        streams.append(_due(t + after, 2 * index + 1, second) for t in _occurrences(rule, keys))
    return streams


def _telemetry(period: float, phase: float) -> Iterator[Due]:
    tick = TelemetryTick()
    for k in itertools.count():
        # Multiplying, not adding, so a day at 10 Hz does not drift.
        yield _due(phase + k * period, 0, tick)


def _availability(settings: SimulatedSettings) -> list[Due]:
    windows = sorted(settings.offline, key=lambda w: w.at_s)
    out = []
    if not windows or windows[0].at_s > 0:
        out.append(_due(0.0, 0, Availability(True)))
    for w in windows:
        out.append(_due(w.at_s, 0, Availability(False, OUTAGE_REASON)))
        out.append(_due(w.end_s, 0, Availability(True)))
    return out


def telemetry_phase(settings: SimulatedSettings, device_id: str) -> float:
    """When a meter's first reading is due: spread over one period, fixed by the seed.

    Many meters started together would otherwise all report at the same instant, which
    no real bus poller does.
    """
    period = settings.telemetry_period_s
    return 0.0 if period is None else period * unit_interval(settings.seed, salt(device_id))


def schedule(settings: SimulatedSettings, device_id: str) -> Iterator[Due]:
    """Everything due for one device, in time order; endless if anything repeats."""
    start = _availability(settings)
    period = settings.telemetry_period_s
    if not settings.events and not settings.offline:
        # A plain meter: "online" at 0, then its readings, already in order.  Without the
        # merge and the outage filter its stream holds 0.7 KB instead of 2.4 KB (issue 16).
        ticks = () if period is None else _telemetry(period, telemetry_phase(settings, device_id))
        return itertools.chain(start, ticks)
    return _merged(settings, device_id, start)


def _merged(settings: SimulatedSettings, device_id: str, online: list[Due]) -> Iterator[Due]:
    keys = (settings.seed, salt(device_id))
    streams: list[Iterator[Due]] = [iter(online)]
    for i, rule in enumerate(settings.events):
        streams.extend(_rule_streams(rule, i, keys))
    period = settings.telemetry_period_s
    if period is not None:
        streams.append(_telemetry(period, telemetry_phase(settings, device_id)))
    if not settings.offline:
        return heapq.merge(*streams)  # nothing to drop: no filter (0.7 KB a device)
    return _outside_outages(heapq.merge(*streams), settings)


def _outside_outages(merged: Iterator[Due], settings: SimulatedSettings) -> Iterator[Due]:
    windows = sorted((w.at_s, w.end_s) for w in settings.offline)
    starts = [start for start, _ in windows]
    for due in merged:
        if not isinstance(due.action, Availability):
            i = bisect_right(starts, due.t) - 1
            if i >= 0 and due.t < windows[i][1]:
                continue
        yield due
