"""A device's scenario as a time-ordered stream of what is due: pure, no clock, no sleeping.

`schedule()` turns a device's settings into an iterator of `Due` items, in time order
(seconds after the driver started).  The driver only waits until each one is due and
performs it; tests read the same stream with numbers.

While the device is in an offline window, its events and readings are dropped, as
those of a device that cannot be reached; a meter's counter keeps counting meanwhile.
"""

from __future__ import annotations

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
_TICK = TelemetryTick()  # one for every meter: it holds nothing

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


class _Occurrences:
    """The times a rule's event is due (plus `after`), as an iterator of `Due`.

    A small object rather than a generator: a generator's frame costs about 0.5 KB,
    and a site of 500 simulated devices holds two or three of them per device (M2 of
    issue 16, the RSS with 500 devices).
    """

    __slots__ = ("_action", "_after", "_k", "_keys", "_rule", "_seq")

    def __init__(
        self, rule: EventRule, keys: tuple[int, ...], seq: int, action: Action, after: float
    ) -> None:
        self._rule, self._keys, self._seq, self._action = rule, keys, seq, action
        self._after = after
        self._k = 0

    def __iter__(self) -> _Occurrences:
        return self

    def __next__(self) -> Due:
        rule, k = self._rule, self._k
        if rule.every_s is None:
            if k > 0:
                raise StopIteration
            t = rule.first_s
        else:
            jitter = rule.jitter_s * noise(*self._keys, k) if rule.jitter_s else 0.0
            # Jitter may not move the first occurrence before the start.
            t = max(0.0, rule.first_s + k * rule.every_s + jitter)
        self._k = k + 1
        return _due(t + self._after, self._seq, self._action)


def _rule_streams(rule: EventRule, index: int, keys: tuple[int, ...]) -> list[Iterator[Due]]:
    keys = (*keys, index)
    main = ScriptedEvent(rule.type, rule.data)
    streams: list[Iterator[Due]] = [_Occurrences(rule, keys, 2 * index, main, 0.0)]
    if rule.then is not None and rule.then_after_s is not None:
        second = ScriptedEvent(rule.then, {})
        # A stream of its own: with jitter, a pair's second event can come after the
        # next pair's first one would in a single stream, and merging needs order.
        streams.append(_Occurrences(rule, keys, 2 * index + 1, second, rule.then_after_s))
    return streams


class _Ticks:
    """A meter's readings: one `Due` every `period` seconds from `phase`, endless."""

    __slots__ = ("_k", "_period", "_phase")

    def __init__(self, period: float, phase: float) -> None:
        self._period, self._phase, self._k = period, phase, 0

    def __iter__(self) -> _Ticks:
        return self

    def __next__(self) -> Due:
        k = self._k
        self._k = k + 1
        # Multiplying, not adding, so a day at 10 Hz does not drift.
        return _due(self._phase + k * self._period, 0, _TICK)


class _Merge:
    """Streams each in time order merged into one, as `heapq.merge` but without its
    generator: a device has at most a few streams, so the earliest head is found by a
    scan; equal heads go in stream order, as heapq.merge's do."""

    __slots__ = ("_heads",)

    def __init__(self, streams: list[Iterator[Due]]) -> None:
        heads: list[tuple[Due, Iterator[Due]]] = []
        for stream in streams:
            first = next(stream, None)
            if first is not None:
                heads.append((first, stream))
        self._heads = heads

    def __iter__(self) -> _Merge:
        return self

    def __next__(self) -> Due:
        heads = self._heads
        if not heads:
            raise StopIteration
        best = 0
        for i in range(1, len(heads)):
            if heads[i][0] < heads[best][0]:
                best = i
        due, stream = heads[best]
        following = next(stream, None)
        if following is None:
            del heads[best]
        else:
            heads[best] = (following, stream)
        return due


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
        # A plain meter: "online" at 0, then its readings, already in order: no merge
        # and no outage filter to hold (issue 16).
        ticks = () if period is None else _Ticks(period, telemetry_phase(settings, device_id))
        return itertools.chain(start, ticks)
    return _merged(settings, device_id, start)


def _merged(settings: SimulatedSettings, device_id: str, online: list[Due]) -> Iterator[Due]:
    keys = (settings.seed, salt(device_id))
    streams: list[Iterator[Due]] = [iter(online)]
    for i, rule in enumerate(settings.events):
        streams.extend(_rule_streams(rule, i, keys))
    period = settings.telemetry_period_s
    if period is not None:
        streams.append(_Ticks(period, telemetry_phase(settings, device_id)))
    if not settings.offline:
        return _Merge(streams)  # nothing to drop: no filter
    return _outside_outages(_Merge(streams), settings)


def _outside_outages(merged: Iterator[Due], settings: SimulatedSettings) -> Iterator[Due]:
    windows = sorted((w.at_s, w.end_s) for w in settings.offline)
    starts = [start for start, _ in windows]
    for due in merged:
        if not isinstance(due.action, Availability):
            i = bisect_right(starts, due.t) - 1
            if i >= 0 and due.t < windows[i][1]:
                continue
        yield due
