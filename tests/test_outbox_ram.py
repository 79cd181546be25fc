"""The outbox's memory tier (gateway/storage/outbox_ram.py) against real SQLite files.

Telemetry the broker takes in time never reaches the card; what it does not take in
time, and everything at a clean stop, does; a crash of the process loses nothing and
reuses no number; a power cut (the RAM file gone) skips to the reservation and says
which numbers may not have been used.
"""

from __future__ import annotations

import itertools
import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from gateway.config import SyncMode
from gateway.sdk.model import Priority
from gateway.storage.outbox import Consumer, Outbox, OutboxItem, Row
from gateway.storage.outbox_batch import QUIET_MS
from gateway.storage.outbox_ram import RAM_BASE, SEQ_BLOCK, CardAcks, ram_file
from gateway.storage.outbox_types import Ack
from tests.outbox_writer import kill_9_streaming
from tests.peers import wait_for

MARK = "reading-%d-never-on-the-card"


def _item(prio: Priority, n: int, body: dict[str, Any]) -> OutboxItem:
    telemetry = prio is Priority.TELEMETRY
    return OutboxItem(
        priority=prio,
        channel="telemetry" if telemetry else "events",
        device_kind="meter" if telemetry else "door",
        topic=f"{'t' if telemetry else 'e'}/{n}",
        build_payload=lambda seq: json.dumps({"seq": seq, **body}).encode(),
    )


def reading(n: int) -> OutboxItem:
    return _item(Priority.TELEMETRY, n, {"mark": MARK % n})


def event(n: int) -> OutboxItem:
    return _item(Priority.EVENT, n, {"event": n})


class Tiered:
    """Opens outboxes with a memory tier on one card file; closes what is left open."""

    def __init__(self, tmp: Path) -> None:
        self.card = tmp / "state" / "outbox.db"
        self.ram_dir = tmp / "ram"
        self.opened: list[Outbox] = []
        self.reports: list[Mapping[str, Any]] = []

    def __call__(
        self,
        *,
        spill_after_s: float = 600,
        ram: bool = True,
        commit_interval_ms: int = 0,
        quiet_ms: float = QUIET_MS,
    ) -> Outbox:
        def fault(data: Mapping[str, Any]) -> OutboxItem:
            self.reports.append(dict(data))
            return event(-1)

        box = Outbox(
            self.card,
            max_messages=100_000,
            sync=SyncMode.FULL,
            consumers=[Consumer("mqtt")],
            on_storage_fault=fault,
            ram_dir=self.ram_dir if ram else None,
            spill_after_s=spill_after_s,
            commit_interval_ms=commit_interval_ms,
            quiet_ms=quiet_ms,
        )
        box.open()
        self.opened.append(box)
        return box

    @property
    def ram(self) -> Path:
        return ram_file(self.card, self.ram_dir)

    def card_rows(self) -> list[tuple[int, int]]:
        """(id, seq) of the telemetry on the card, read with a connection of our own."""
        conn = sqlite3.connect(self.card)
        try:
            return conn.execute("SELECT id, seq FROM messages WHERE prio = 1").fetchall()
        finally:
            conn.close()

    def card_bytes(self) -> bytes:
        return b"".join(
            p.read_bytes() for p in self.card.parent.iterdir() if p.name.startswith("outbox.db")
        )


@pytest.fixture
def tiered(tmp_path: Path) -> Iterator[Tiered]:
    t = Tiered(tmp_path)
    yield t
    for box in t.opened:
        box.close()


def read(box: Outbox) -> list[Row]:
    reader = box.reader()
    try:
        return reader.next_batch("mqtt", {}, 1_000_000)
    finally:
        reader.close()


def committed(box: Outbox, n: int) -> None:
    assert wait_for(lambda: box.stats().accepted_total >= n and box.stats().queued == 0, 10)


def spilled(tiered: Tiered, n: int) -> Outbox:
    """An outbox whose first `n` readings were not acknowledged in time: on the card."""
    box = tiered(spill_after_s=0.2)
    for k in range(n):
        box.offer(reading(k))
    committed(box, n)
    assert wait_for(lambda: len(tiered.card_rows()) == n, 10), "spilled after 0.2 s"
    return box


def test_readings_acknowledged_in_time_never_reach_the_card(tiered: Tiered) -> None:
    box = tiered()
    for n in range(200):
        assert box.offer(reading(n))
    committed(box, 200)
    rows = read(box)
    assert [r.seq for r in rows] == list(range(1, 201))
    assert all(r.id >= RAM_BASE for r in rows)
    box.ack("mqtt", [r.id for r in rows])
    assert box.put(event(1)).result(timeout=10) == 201  # one counter for both
    box.close()
    # Not in the card file, its WAL, nor anywhere after the checkpoint at close.
    card = tiered.card_bytes()
    assert not any((MARK % n).encode() in card for n in range(200))
    assert not tiered.ram.exists(), "a clean stop removes the RAM file"
    again = tiered()
    assert [r.seq for r in read(again)] == [201]
    assert again.put(event(2)).result(timeout=10) == 202


def test_readings_not_acknowledged_in_time_go_to_the_card(tiered: Tiered) -> None:
    box = spilled(tiered, 50)
    assert sorted(seq for _, seq in tiered.card_rows()) == list(range(1, 51))
    # The reader finds them on the card now, once each, and an ack deletes them.
    rows = read(box)
    assert [r.seq for r in rows] == list(range(1, 51)) and all(r.id < RAM_BASE for r in rows)
    box.ack("mqtt", [r.id for r in rows])
    box.put(event(1)).result(timeout=10)  # a card write: the acks ride along
    assert wait_for(lambda: tiered.card_rows() == [], 10)


def test_a_clean_stop_moves_the_rest_to_the_card_for_any_release(tiered: Tiered) -> None:
    box = tiered()
    for n in range(30):
        box.offer(reading(n))
    committed(box, 30)
    box.close()
    assert not tiered.ram.exists()
    # Opened without the tier (an older release, or memory_tier: false): all there,
    # and counting goes on exactly.
    plain = tiered(ram=False)
    assert [r.seq for r in read(plain)] == list(range(1, 31))
    assert plain.put(event(1)).result(timeout=10) == 31


def _kill_9_streaming(tiered: Tiered) -> list[int]:
    """A writer process streaming readings with the tier, killed with SIGKILL mid-stream."""
    return kill_9_streaming(tiered.card, 1500, tiered.ram_dir)


def test_kill_9_loses_no_reading_in_ram_and_counting_goes_on_exactly(tiered: Tiered) -> None:
    reported = _kill_9_streaming(tiered)
    assert tiered.ram.exists(), "the kernel keeps the RAM file of a killed process"
    box = tiered()
    rows = read(box)
    seqs = [r.seq for r in rows]
    assert set(reported) <= set(seqs)
    assert len(seqs) == len(set(seqs))
    # Nothing skipped: every number up to the highest stored is there.
    assert sorted(seqs) == list(range(1, max(seqs) + 1))
    assert box.put(event(1)).result(timeout=10) == max(seqs) + 1
    assert tiered.reports == []


def test_a_power_cut_skips_to_the_reservation_and_names_the_numbers(tiered: Tiered) -> None:
    reported = _kill_9_streaming(tiered)
    for p in tiered.ram_dir.iterdir():  # what a reboot does to a tmpfs
        p.unlink()
    box = tiered()
    rows = read(box)
    # Events were on the card (synced) before they were reported: all kept.
    assert {r.seq for r in rows if r.priority is Priority.EVENT} >= {
        s for s in reported if s % 7 == 0 and s <= max(reported)
    } - {s for s in reported if s not in {r.seq for r in rows}}
    new = box.put(event(1)).result(timeout=10)
    assert new > max(reported), "no number is ever given twice"
    assert new - max(reported) <= SEQ_BLOCK + 20
    [report] = [r for r in tiered.reports if r["problem"] == "unclean_stop"]
    [[first, last]] = report["lost_seq"]
    assert first <= min(set(reported) - {r.seq for r in rows}, default=first)
    assert last == new - 2  # the gateway.storage event itself took the number between


def test_a_ram_file_left_by_another_card_file_is_not_published(tiered: Tiered) -> None:
    _kill_9_streaming(tiered)
    for p in tiered.card.parent.iterdir():  # the card replaced, the RAM file still there
        p.unlink()
    box = tiered()
    assert read(box) == []
    assert box.put(event(1)).result(timeout=10) == 1


def test_a_delivered_event_is_not_waiting_while_its_ack_waits_for_a_card_write(
    tiered: Tiered,
) -> None:
    # The ack of a card row rides along with the next card write (one synced commit
    # fewer per event), but health and the update's health gate must see it delivered.
    box = tiered()
    seq = box.put(event(1)).result(timeout=10)
    [row] = read(box)
    box.ack("mqtt", [row.id])
    assert wait_for(
        lambda: box.stats().depth_events == 0 and box.stats().lowest_seq["mqtt"] > seq, 5
    ), box.stats()

    def on_card() -> int:
        conn = sqlite3.connect(tiered.card)
        try:
            return int(conn.execute("SELECT count(*) FROM messages").fetchone()[0])
        finally:
            conn.close()

    assert on_card() == 1, "the ack is not written on its own"
    box.put(event(2)).result(timeout=10)
    assert wait_for(lambda: on_card() == 1, 5), "written with the next event: only that one left"
    assert box.stats().depth_events == 1


def test_an_alarm_is_readable_before_the_readings_committed_with_it(tiered: Tiered) -> None:
    # An event commits at once with whatever is queued before it; the uplink is woken
    # when the card has it, not after the readings' commit to the RAM file too.
    box = tiered(commit_interval_ms=5000, quiet_ms=1000)  # the readings wait for company
    reader = box.reader()
    seen: list[list[Priority]] = []
    box.add_listener(lambda: seen.append([r.priority for r in reader.next_batch("mqtt", {}, 99)]))
    try:
        for n in range(5):
            assert box.offer(reading(n))
        box.put(event(1)).result(timeout=10)
        assert wait_for(lambda: len(seen) >= 2, 5), seen
    finally:
        reader.close()
    assert seen[0] == [Priority.EVENT], seen
    assert sorted(seen[-1]) == [Priority.EVENT] + [Priority.TELEMETRY] * 5, seen


def test_a_reading_moved_to_the_card_while_being_read_keeps_its_place(tiered: Tiered) -> None:
    # The reader reads the card, then RAM. A spill commits the card copy, then deletes
    # the RAM one: a read whose card snapshot came before the first commit and whose RAM
    # snapshot came after the second saw the reading in neither file, went on with the
    # newer ones, and found it on the card next time: out of seq order (mqtt-api.md,
    # "Ordering"). Readings are spilled as fast as they come while a reader reads.
    box = tiered(spill_after_s=0.0)
    stop = threading.Event()

    def produce() -> None:
        n = 0
        while not stop.is_set():
            box.put(reading(n)).result()
            n += 1

    writer = threading.Thread(target=produce)
    writer.start()
    reader = box.reader()
    first: list[int] = []
    seen: set[int] = set()
    try:
        after: dict[Priority, int] = {}  # as the uplink passes it: the last id it got
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            for row in reader.next_batch("mqtt", after, 50):
                after[row.priority] = row.id
                if row.seq not in seen:
                    seen.add(row.seq)
                    first.append(row.seq)
    finally:
        stop.set()
        writer.join()
        reader.close()
    assert len(first) > 200, len(first)
    late = [(a, b) for a, b in itertools.pairwise(first) if b < a]
    assert not late, late[:5]


def test_acks_of_spilled_readings_go_to_the_card_with_the_next_commit(tiered: Tiered) -> None:
    # A spill writes the card: the acks held for a card write go with the next commit.
    # Held for the next event or 30 s instead, a backlog that spilled every second piled
    # up tens of thousands of them, and every commit counted them again: the longer the
    # backlog, the slower the gateway drained it (issue 16).
    box = spilled(tiered, 50)
    box.ack("mqtt", [r.id for r in read(box)])
    for n in range(50, 60):  # readings only, no event: they spill in turn
        box.offer(reading(n))
    assert wait_for(lambda: sorted(s for _, s in tiered.card_rows()) == list(range(51, 61)), 10)


def test_held_acks_deliver_a_row_once_every_consumer_has_acked_it() -> None:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE messages (id INTEGER PRIMARY KEY, prio INTEGER, pending INTEGER)")
    rows = [(1, Priority.EVENT, 0b11), (2, Priority.TELEMETRY, 0b11), (3, Priority.TELEMETRY, 1)]
    conn.executemany("INSERT INTO messages VALUES (?, ?, ?)", rows)
    acks = CardAcks()
    assert acks.now([Ack(0b01, (1, 2, 3))], card_write=False, stopping=False) == []
    assert acks.delivered(conn) == {Priority.TELEMETRY: 1}  # 3; 1 and 2 wait for 0b10
    acks.now([Ack(0b10, (2,))], card_write=False, stopping=False)
    assert acks.delivered(conn) == {Priority.TELEMETRY: 2}
    acks.now([Ack(0b10, (1, 2))], card_write=False, stopping=False)  # 2 twice: once
    assert acks.delivered(conn) == {Priority.EVENT: 1, Priority.TELEMETRY: 2}
    assert acks.held() == {1: 0b11, 2: 0b11, 3: 0b01}
    flushed = acks.now([], card_write=True, stopping=False)
    assert [(a.mask, a.ids) for a in flushed] == [(1, (1, 2, 3)), (2, (2,)), (2, (1, 2))]
    assert (acks.delivered(conn), dict(acks.held())) == ({}, {})
