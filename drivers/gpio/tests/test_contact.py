"""Debounce, wiring polarity and role events, driven by timelines of (ms, level)."""

from __future__ import annotations

import pytest

from drivers.gpio.contact import ROLE_EVENTS, Debouncer, active_level
from drivers.gpio.settings import Bias, Contact, Role
from gateway.sdk.model import EventType

MS = 1_000_000


def play(
    debouncer: Debouncer, timeline: list[tuple[int, int]], until_ms: int
) -> list[tuple[int, int]]:
    """Feed edges at their times and settle every millisecond: the stable changes seen."""
    edges = dict(timeline)
    changes: list[tuple[int, int]] = []
    for t in range(until_ms + 1):
        if t in edges:
            debouncer.feed(t * MS, edges[t])
        settled = debouncer.settle(t * MS)
        if settled is not None:
            changes.append((settled[0], settled[1] // MS))
    return changes


def test_a_bouncing_press_is_one_change_dated_at_its_last_edge() -> None:
    d = Debouncer(1, 20 * MS)
    # A button to GND pressed at 100 ms, bouncing for 4 ms, released at 300 ms.
    timeline = [(100, 0), (101, 1), (102, 0), (104, 1), (104, 0), (300, 1), (302, 0), (303, 1)]
    assert play(d, timeline, 400) == [(0, 104), (1, 303)]
    assert d.level == 1 and d.due is None


def test_a_glitch_shorter_than_the_period_is_ignored() -> None:
    d = Debouncer(0, 20 * MS)
    assert play(d, [(50, 1), (55, 0)], 200) == []
    assert d.level == 0


def test_due_says_when_to_settle() -> None:
    d = Debouncer(1, 20 * MS)
    d.feed(10 * MS, 0)
    assert d.due == 30 * MS
    assert d.settle(29 * MS) is None
    assert d.settle(30 * MS) == (0, 10 * MS)


def test_zero_period_accepts_each_edge_at_once() -> None:
    d = Debouncer(1, 0)
    d.feed(5, 0)
    assert d.settle(5) == (0, 5)


@pytest.mark.parametrize(
    ("contact", "bias", "active"),
    [
        (Contact.NO, Bias.PULL_UP, 0),  # closes to GND when active
        (Contact.NC, Bias.PULL_UP, 1),  # opens when active: the pull-up wins
        (Contact.NO, Bias.NONE, 0),  # external pull-up, same wiring
        (Contact.NO, Bias.PULL_DOWN, 1),  # closes to 3V3 when active
        (Contact.NC, Bias.PULL_DOWN, 0),
    ],
)
def test_active_level_follows_wiring(contact: Contact, bias: Bias, active: int) -> None:
    assert active_level(contact, bias) == active


def test_roles_give_the_documented_events() -> None:
    assert ROLE_EVENTS[Role.SMOKE_RELAY].on_active is EventType.SMOKE_ALARM
    assert ROLE_EVENTS[Role.SMOKE_RELAY].on_inactive is EventType.SMOKE_CLEARED
    for role in (Role.SOS_BUTTON, Role.PULL_CORD):
        # a release is not a second alarm
        assert (ROLE_EVENTS[role].on_active, ROLE_EVENTS[role].on_inactive) == (
            EventType.ELDERLY_SOS,
            None,
        )
    assert ROLE_EVENTS[Role.REQUEST_TO_EXIT].on_active is EventType.DOOR_REQUEST_TO_EXIT
    assert Role.DOOR_CONTACT not in ROLE_EVENTS  # the door state machine decides those
