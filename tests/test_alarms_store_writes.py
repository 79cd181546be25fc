"""Alarm database writes run off the event loop, and an alarm is on disk before it is published."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from typing import Any

from gateway.alarms.store import AlarmStore
from gateway.sdk.clock import RunMark
from gateway.sdk.model import Event, EventType
from tests.driverkit import until
from tests.test_alarms_engine import SMOKE, SMOKE_REF, T0, _engine, _outbox, _rows, book, s


def _stored_rev(db: Path, alarm_id: str) -> int | None:
    conn = sqlite3.connect(db)
    try:
        row = conn.execute("SELECT rev FROM alarms WHERE id = ?", (alarm_id,)).fetchone()
    finally:
        conn.close()
    return None if row is None else int(row[0])


def test_a_slow_alarm_database_does_not_block_the_loop_nor_publish_early(tmp_path: Path) -> None:
    outbox = _outbox(tmp_path / "outbox.db")
    outbox.open()
    db = tmp_path / "alarms.db"
    published: list[tuple[int, int | None]] = []  # (rev published, rev on disk then)

    def on_publish(doc: dict[str, Any]) -> None:
        published.append((doc["rev"], _stored_rev(db, doc["alarm_id"])))

    async def scenario() -> float:
        engine = _engine(tmp_path, outbox)
        engine.start()
        engine.listen(on_publish)
        # Another process (`gateway ack`, a backup) holds the write lock: every write
        # to the alarm database waits for it, as for a slow SD card.
        blocker = sqlite3.connect(db, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        ticks = 0

        async def heartbeat() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        beat = asyncio.create_task(heartbeat())
        started = time.monotonic()
        for _ in range(21):  # raised, then 20 repeats: one queued write, not 21
            engine.observe(Event(SMOKE_REF, T0, EventType.SMOKE_ALARM))
        took = time.monotonic() - started
        await until(lambda: ticks >= 5)  # the loop runs on while the write waits
        [doc] = engine.snapshot()
        assert doc["count"] == 21, "the alarm is current in memory at once"
        assert published == [], "not published before it is on disk"
        blocker.execute("ROLLBACK")
        blocker.close()
        await until(lambda: len(published) == 1)

        def whats() -> list[str]:
            return [what for _, what, _ in engine.store.transitions(doc["alarm_id"])]

        await until(lambda: len(whats()) == 21)
        assert whats() == ["raised"] + ["repeated"] * 20, "every change stored, in order"
        beat.cancel()
        engine.close()
        return took

    took = asyncio.run(scenario())
    rows = _rows(outbox)
    outbox.close()
    # The lock is held far longer than this; SQLite would wait up to its 5 s busy timeout.
    assert took < 1.0, f"21 observe() calls waited {took:.2f} s for the disk"
    [(rev, on_disk)] = published  # the repeats wait for run(): at most one a second
    assert rev == 1 and on_disk is not None and on_disk >= rev, "published once it was on disk"
    assert len(rows) == 1 and rows[0].retain


def _published_rev(db: Path, alarm_id: str) -> int:
    conn = sqlite3.connect(db)
    try:
        return int(
            conn.execute("SELECT published_rev FROM alarms WHERE id = ?", (alarm_id,)).fetchone()[0]
        )
    finally:
        conn.close()


def test_a_published_rev_rides_along_with_the_next_write_not_its_own(tmp_path: Path) -> None:
    # Each write alone is a synced commit on the SD card; a published rev lost in a
    # crash only makes the next start publish that retained state again.
    db = tmp_path / "alarms.db"
    st = AlarmStore(db)
    st.open()
    st.start_writer()
    b = book(new_id=st.new_id)
    [fire] = b.signal(SMOKE, "smoke.alarm", s(0))
    st.save_later([fire], RunMark(0.0, "boot", 0.0)).result(timeout=10)
    done = st.mark_published_later(fire.alarm.id, 1)
    time.sleep(0.3)
    assert _published_rev(db, fire.alarm.id) == 0 and not done.done(), "not written alone"
    st.save_mark_later(RunMark(1.0, "boot", 1.0)).result(timeout=10)
    assert done.result(timeout=10) is None
    assert _published_rev(db, fire.alarm.id) == 1, "stored with the run mark"
    st.mark_published_later(fire.alarm.id, 2)
    st.close()
    assert _published_rev(db, fire.alarm.id) == 2, "and what is left, at close"
