"""The door state machine, driven by timelines of contact changes and grants."""

from __future__ import annotations

from drivers.gpio.door import DoorLogic
from gateway.sdk.model import EventType as E


def play(door: DoorLogic, timeline: list[tuple[float, str]], until: float) -> list[tuple[float, E]]:
    """Apply ("open" | "close" | "grant" | "rex") at their times, ticking every 0.5 s."""
    out = []
    steps = sorted({t for t, _ in timeline} | {i / 2 for i in range(int(until * 2) + 1)})
    for t in steps:
        for when, what in timeline:
            if when != t:
                continue
            if what == "open":
                out += door.opened(t)
            elif what == "close":
                out += door.closed(t)
            elif what == "rex":
                out += door.request_to_exit(t)
            else:
                door.grant(t)
        out += door.tick(t)
    return [(e.ts, e.type) for e in out]


def test_opening_without_a_grant_is_forced() -> None:
    assert play(DoorLogic(), [(5, "open"), (8, "close")], 20) == [
        (5, E.DOOR_OPENED),
        (5, E.DOOR_FORCED),
        (8, E.DOOR_CLOSED),
    ]


def test_exit_button_before_opening_is_not_forced() -> None:
    assert play(DoorLogic(), [(3, "rex"), (5, "open"), (8, "close")], 20) == [
        (3, E.DOOR_REQUEST_TO_EXIT),
        (5, E.DOOR_OPENED),
        (8, E.DOOR_CLOSED),
    ]


def test_a_grant_from_a_reader_allows_one_opening_within_the_window() -> None:
    door = DoorLogic(grant_window_s=10)
    events = play(
        door, [(0, "grant"), (9.5, "open"), (12, "close"), (14, "open"), (15, "close")], 20
    )
    # the second opening rides on no grant: the first used it up
    assert [e for e in events if e[1] is E.DOOR_FORCED] == [(14, E.DOOR_FORCED)]


def test_a_grant_older_than_the_window_does_not_count() -> None:
    events = play(DoorLogic(grant_window_s=10), [(0, "grant"), (10.5, "open")], 12)
    assert (10.5, E.DOOR_FORCED) in events


def test_held_open_is_reported_once_per_opening() -> None:
    door = DoorLogic(held_open_s=30)
    events = play(door, [(0, "rex"), (1, "open"), (50, "close"), (51, "rex"), (52, "open")], 90)
    assert [e for e in events if e[1] is E.DOOR_HELD_OPEN] == [
        (31, E.DOOR_HELD_OPEN),
        (82, E.DOOR_HELD_OPEN),
    ]


def test_closing_before_the_limit_reports_no_held_open() -> None:
    events = play(DoorLogic(held_open_s=30), [(0, "rex"), (1, "open"), (30.5, "close")], 60)
    assert E.DOOR_HELD_OPEN not in [t for _, t in events]
    assert DoorLogic().due is None


def test_a_door_found_open_at_start_is_silent_but_timed() -> None:
    door = DoorLogic(held_open_s=30)
    door.start(True, 100)
    assert door.opened(101) == []  # no second "opened" while open
    assert door.due == 130
    assert [(e.ts, e.type) for e in door.tick(130)] == [(130, E.DOOR_HELD_OPEN)]
    closed = door.closed(140)
    assert [(e.type, e.data) for e in closed] == [(E.DOOR_CLOSED, {"open_s": 40})]
