"""Session numbers: growing across connections and restarts, with one disk write a start."""

from __future__ import annotations

import logging

import pytest

from gateway.mqtt.uplink import SessionNumbers
from tests.test_outbox import Opener, opener  # noqa: F401 (a fixture)

BLOCK = SessionNumbers.BLOCK


def test_numbers_grow_across_connections_and_restarts_with_one_write_a_start(
    opener: Opener,  # noqa: F811 (the fixture imported above)
) -> None:
    outbox = opener()
    reader = outbox.reader()
    first = SessionNumbers(outbox)
    first.reserve(reader)
    taken = [first.take() for _ in range(3)]
    first.reserve(reader)  # already reserved: no second write
    taken.append(first.take())
    assert taken == [2 * BLOCK, 2 * BLOCK + 1, 2 * BLOCK + 2, 2 * BLOCK + 3]
    assert reader.counter("mqtt_session") == 1
    restarted = SessionNumbers(outbox)
    restarted.reserve(reader)
    assert restarted.take() == 4 * BLOCK > taken[-1]
    reader.close()


def test_a_start_that_cannot_write_stays_between_the_starts_that_can(
    opener: Opener,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    outbox = opener()
    reader = outbox.reader()
    before = SessionNumbers(outbox)
    before.reserve(reader)
    earlier = before.take()
    outbox.close()  # every write refused from now on, as on a full disk
    stuck = SessionNumbers(outbox)
    with caplog.at_level(logging.ERROR):
        for _ in range(3):  # one reservation attempt per connection, logged once
            stuck.reserve(reader)
            number = stuck.take()
    assert number == 3 * BLOCK + 2 > earlier
    assert len([r for r in caplog.records if "cannot reserve" in r.getMessage()]) == 1
    # Restarted once the disk takes writes again: above what the stuck start used.
    after = SessionNumbers(opener())
    after.reserve(reader)
    assert after.take() == 4 * BLOCK > number
    reader.close()
