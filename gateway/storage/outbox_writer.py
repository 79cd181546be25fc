"""The outbox's writer thread: it owns the write connection and commits in groups.

It waits for the first queued request, takes everything queued behind it, and commits
the lot as one transaction, by the commit policy of `outbox_batch`.  After each commit it publishes a
`Snapshot` of its counters, read lock-free by `Outbox.stats`.

A damaged file is rebuilt under it (`outbox_recovery`); on a full disk it sheds
telemetry and keeps events, in memory if they fit nowhere else (`outbox_room`).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import math
import queue
import sqlite3
import threading
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from gateway.sdk.model import Priority
from gateway.storage import dbrecovery
from gateway.storage import outbox_sql as sql
from gateway.storage.diskspace import Room, no_room
from gateway.storage.outbox_batch import gather
from gateway.storage.outbox_memory import Unstored
from gateway.storage.outbox_ram import CardAcks, RamTier
from gateway.storage.outbox_recovery import open_file, reopen_damaged, stored_next_seq
from gateway.storage.outbox_room import BoundWarnings, FullDisk, checkpoint
from gateway.storage.outbox_types import (
    STOP,
    Ack,
    Batch,
    CommitNews,
    Handoff,
    Increment,
    Put,
    Recover,
    Request,
    Settings,
    Snapshot,
    Staged,
    fail,
    fail_staged,
    new_row,
    settle_waiters,
)

__all__ = ["Settings", "Writer"]

log = logging.getLogger("gateway.storage.outbox")

_WARN_EVERY_S = 60.0
_LOWEST_EVERY_S = 0.5


class Writer:
    """The writer thread of one outbox and the state only it changes.

    `snap`, `generation` and `masks` are read by other threads: each is replaced
    whole, never changed in place.
    """

    def __init__(self, cfg: Settings, handoff: Handoff, room: Room, memory: Unstored) -> None:
        self.cfg = cfg
        self.handoff = handoff
        self.room = room
        self.memory = memory
        self.disk = FullDisk(cfg.path, room, memory, self.report)
        self.generation = 0  # +1 per rebuild: readers reopen the new file
        self.masks: dict[str, int] = {}
        self.snap = Snapshot(depth={p: 0 for p in Priority})
        self.news = CommitNews()  # read by the uplinks: events committed, wake-ups
        self.thread: threading.Thread | None = None
        self._conn: sqlite3.Connection
        self._next_seq = 0
        self._retry_acks: list[Ack] = []
        self._warned_room = -math.inf
        self._bound_warnings = BoundWarnings(cfg.max_messages)
        self._lowest_stale = False
        self._lowest_at = -math.inf
        self._dropped_owed = 0  # dropped while nothing could be written
        self._batch_dropped = 0
        self.ram = None if cfg.ram_path is None else RamTier(cfg.ram_path, cfg.spill_after_s)
        self._card_acks = CardAcks()
        self._stopping = False
        self._spilled = False  # a spill wrote the card since the last batch

    def open(self) -> sql.StoredState:
        """Open (or rebuild) the file, make the reserve, start the thread; the state found."""
        opened = open_file(self.cfg.path, self.cfg.sync, [c.name for c in self.cfg.consumers])
        self._conn, state, self.masks = opened.conn, opened.state, opened.masks
        if opened.rebuilt:
            self.generation += 1
        if not self.room.make_reserve():
            log.warning(
                "outbox: no room for the %d-byte reserve next to %s; telemetry is shed"
                " until there is",
                self.room.reserve_bytes,
                self.cfg.path,
            )
        self._next_seq = state.next_seq
        depth = dict(state.depth)
        skipped = None
        if self.ram is not None:
            resumed = self.ram.attach(self._conn, state.next_seq)
            self._next_seq, skipped = resumed.next_seq, resumed.skipped
            depth[Priority.TELEMETRY] += resumed.kept_rows
        self.snap = Snapshot(
            depth=depth,
            oldest_created=state.oldest_created,
            dropped_telemetry=state.dropped_telemetry,
            lowest_seq=sql.lowest_pending(
                self._conn, self.masks, self._next_seq, self.ram is not None
            ),
        )
        self._lowest_at = time.monotonic()
        self.thread = threading.Thread(target=self._run, name="outbox-writer", daemon=True)
        self.thread.start()
        if opened.report is not None:
            self.report(opened.report)
        if skipped is not None:
            self.report(RamTier.unclean_report(self.cfg.path, skipped))
        return replace(state, next_seq=self._next_seq)

    def _recover(self, reason: str) -> None:
        """Rebuild the damaged file under the writer and carry on with the new one."""
        with contextlib.suppress(sqlite3.Error):
            self._conn.close()
        opened = reopen_damaged(self.cfg.path, self.cfg.sync, self.masks, reason, self._next_seq)
        self._conn, state = opened.conn, opened.state
        if opened.rebuilt:
            self.generation += 1
        if self.ram is not None:
            self.ram.reattach(self._conn, self._next_seq)
        else:
            self._next_seq = max(self._next_seq, state.next_seq)
        self.snap = replace(
            self.snap,
            depth=state.depth,
            oldest_created=state.oldest_created,
            dropped_telemetry=max(self.snap.dropped_telemetry, state.dropped_telemetry),
        )
        assert opened.report is not None
        self.report(opened.report)

    def report(self, data: Mapping[str, Any]) -> None:
        """Queue a `gateway.storage` event (if a builder is set); stored with the next batch."""
        if self.cfg.on_storage_fault is None:
            return
        try:
            self.handoff.queue.put(
                Put(self.cfg.on_storage_fault(data), concurrent.futures.Future(), time.time())
            )
        except Exception:
            log.exception("outbox: the gateway.storage event could not be built: %s", data)

    def _run(self) -> None:
        stopping = False
        while not stopping:
            batch, stopping = self._collect()
            self._stopping = stopping  # the last commit takes the waiting card acks too
            try:
                self._commit(batch)
            except BaseException as exc:  # a bug here must not leave callers waiting forever
                log.exception("outbox writer failed on a batch of %d requests", len(batch))
                fail(batch, exc)
        self._store_held_events()
        if self.ram is not None:
            try:
                moved = self.ram.close(self._conn, self._next_seq)
                log.info("outbox: %d unacknowledged readings moved from memory to disk", moved)
            except sqlite3.Error:
                log.exception("outbox: readings in memory could not be moved to disk at close")
        try:
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error:
            log.exception("outbox checkpoint at close failed")
        self._conn.close()
        if self._retry_acks:
            log.warning("outbox closed with acknowledgements not stored: rows will be resent")

    def _store_held_events(self) -> None:
        """At close: events still held in memory go to disk if they fit now, else are lost."""
        rows = self.memory.take_all()
        if not rows:
            return
        self.room.release()  # the reserve is for exactly this
        try:
            self._batch_dropped = 0
            self._write(Batch([Staged(None, r, False) for r in rows], self._next_seq, [], []))
        except sqlite3.Error as exc:
            log.error(
                "outbox closed with %d undelivered events it could not store: %s", len(rows), exc
            )

    def _collect(self) -> tuple[list[Request], bool]:
        """Wait for a request, then gather what follows it; returns (batch, stop seen)."""
        first = self._next_request()
        if first is STOP:
            return [], True
        return gather(
            self.handoff.queue, first, self.cfg.commit_interval_ms / 1000, self.cfg.quiet_ms / 1000
        )

    def _next_request(self) -> Request | None:
        """Block for the next request; when idle, refresh a stale `lowest_seq`, spill, ack."""
        while True:
            lowest = self._lowest_at + _LOWEST_EVERY_S if self._lowest_stale else None
            spill = None if self.ram is None else self.ram.next_spill()
            due = [t for t in (lowest, spill, self._card_acks.due_at()) if t is not None]
            if not due:
                return self.handoff.queue.get()
            try:
                return self.handoff.queue.get(timeout=max(0.0, min(due) - time.monotonic()))
            except queue.Empty:
                self._spill_due()
                if (acks_at := self._card_acks.due_at()) and time.monotonic() >= acks_at:
                    self._commit([])
                if self._lowest_stale and time.monotonic() >= self._lowest_at + _LOWEST_EVERY_S:
                    self._refresh_lowest()

    def _spill_due(self) -> None:
        """Move to the card what waited in RAM too long, or beyond the RAM file's bound."""
        if self.ram is not None and self.ram.spill_due(self._conn):
            self.snap = replace(self.snap, commits=self.snap.commits + 1)
            self._lowest_stale = True
            # The card was written: held acks go with the next commit, not 30 s later
            # (in a backlog that spills, tens of thousands of them slowed every commit).
            self._spilled = True

    def _refresh_lowest(self) -> None:
        self._lowest_stale = False
        self._lowest_at = time.monotonic()
        try:
            held = self._card_acks.held()
            lowest = sql.lowest_pending(
                self._conn, self.masks, self._next_seq, self.ram is not None, held
            )
            self.snap = replace(self.snap, delivered=self._card_acks.delivered(self._conn))
        except sqlite3.Error as exc:
            log.warning("outbox: cannot read the lowest waiting seq: %s", exc)
            return
        self.snap = replace(self.snap, lowest_seq=lowest)

    def _commit(self, batch: list[Request]) -> None:
        try:
            self._commit_batch(batch)
        finally:
            settle_waiters(batch)
        self._spill_due()  # a busy queue never leaves the writer idle long enough
        self._lowest_stale = True
        if time.monotonic() - self._lowest_at >= _LOWEST_EVERY_S:
            self._refresh_lowest()

    def _commit_batch(self, batch: list[Request]) -> None:
        self.news.new_batch()
        for request in batch:
            if isinstance(request, Recover) and request.generation == self.generation:
                self._recover(request.reason)
        staged: list[Staged] = []
        increments = [r for r in batch if isinstance(r, Increment)]
        acks = self._retry_acks + [r for r in batch if isinstance(r, Ack)]
        self._retry_acks = []
        with self.handoff.lock:
            self.handoff.queued -= sum(1 for r in batch if isinstance(r, Put) and r.offered)
            shed, self.handoff.shed = self.handoff.shed, 0
        # Each shed reading gets a seq nobody receives: the platform sees the gap.
        seq = self._next_seq + shed
        self._batch_dropped = shed  # readings of this batch whose seq nobody will get
        puts = [r for r in batch if isinstance(r, Put)]
        if self.ram is not None:
            # Card rows numbered before telemetry: see outbox_sql.write_batch (no gap if
            # a crash falls between its two commits).  Per device and channel the order
            # stays as it came.
            puts.sort(key=lambda p: p.item.priority is Priority.TELEMETRY)
        # Payloads are built before the transaction opens: a failing one fails alone.
        for put in puts:
            if not put.future.set_running_or_notify_cancel():
                continue  # cancelled before it was stored: it never will be
            numbered = put.item.sequenced
            try:
                row = new_row(put, seq if numbered else 0, self.cfg.consumers, self.masks)
            except Exception as exc:
                put.future.set_exception(exc)
                continue
            if row is None:
                put.future.set_result(-1)
                continue
            staged.append(Staged(put.future, row, put.offered))
            if numbered:
                seq += 1
        if self.disk.short_of_room():
            staged = self._shed_telemetry(staged, "disk almost full: telemetry shed")
        staged += self._memory_back()
        acks = self._acks_now(acks, staged, bool(increments))
        if not (staged or acks or increments or self._batch_dropped or self._dropped_owed):
            return
        try:
            out = self._write_with_fallbacks(Batch(staged, seq, acks, increments))
        except sqlite3.Error as exc:
            if no_room(exc) and any(st.row.prio is Priority.EVENT for st in staged):
                self._keep_in_memory(Batch(staged, seq, acks, increments), exc)
                return
            self.memory.add([st.row for st in staged if st.future is None])
            offered = sum(st.offered for st in staged)
            # On a full disk this repeats at every commit: say it once a minute.
            now = time.monotonic()
            quiet = no_room(exc) and now - self._warned_room < _WARN_EVERY_S
            if not quiet and no_room(exc):
                self._warned_room = now
            (log.debug if quiet else log.error)(
                "outbox commit failed (%s): %d messages refused (%d telemetry counted as"
                " dropped), %d acknowledgements kept for the next commit",
                exc,
                len(staged),
                offered,
                sum(len(a.ids) for a in acks),
            )
            self._retry_acks = acks
            self._next_seq = stored_next_seq(self._conn, self._next_seq, self.ram is not None)
            # Nobody waits for offered telemetry: it is shed, and gets its seq (a gap)
            # with the next commit that succeeds, like the readings shed before.
            with self.handoff.lock:
                self.handoff.shed += self._batch_dropped + offered
            fail_staged(staged, increments, f"outbox commit failed: {exc}", exc)
            return
        self._next_seq = seq
        self._note_ram(staged)
        snap = self.snap
        self.snap = replace(
            snap,
            depth=out.depth,
            delivered=self._card_acks.delivered(self._conn),
            oldest_created=out.oldest_created,
            dropped_telemetry=snap.dropped_telemetry + out.dropped + self._batch_dropped,
            accepted=snap.accepted + len(staged),
            commits=snap.commits + 1,
            bytes_written=snap.bytes_written
            + sum(
                len(st.row.payload) + len(st.row.topic.encode())
                for st in staged
                if self.ram is None or st.row.prio is not Priority.TELEMETRY
            ),
        )
        self._bound_warnings.check(
            out.dropped, out.depth[Priority.EVENT], self.snap.dropped_telemetry
        )
        if self.disk.full:
            checkpoint(self._conn)
        for st in staged:
            if st.future is not None:
                st.future.set_result(st.row.seq)
        for inc in increments:
            inc.future.set_result(out.counters[inc.key])
        if staged:
            self.news.batch_committed(sum(1 for st in staged if st.row.prio is Priority.EVENT))

    def _acks_now(self, acks: list[Ack], staged: list[Staged], increments: bool) -> list[Ack]:
        """The acks to commit now (with the memory tier, card rows' wait for a card write)."""
        if self.ram is None:
            return acks
        cards = any(st.row.prio is not Priority.TELEMETRY for st in staged)
        card_write = bool(increments or self._batch_dropped or self._dropped_owed or cards)
        card_write, self._spilled = card_write or self._spilled, False
        return self._card_acks.now(acks, card_write, self._stopping)

    def _note_ram(self, staged: list[Staged]) -> None:
        """Tell the memory tier this commit put telemetry in RAM (its spill clock starts)."""
        if self.ram is not None:
            self.ram.noted(self._conn, sum(1 for st in staged if st.row.prio is Priority.TELEMETRY))

    def _write_with_fallbacks(self, batch: Batch) -> sql.BatchOutcome:
        """Commit; rebuild a damaged file, or free the reserve for events, and try again.

        `batch.staged` loses its telemetry in place when the reserve is freed for events.
        """
        try:
            return self._write(batch)
        except sqlite3.DatabaseError as exc:
            if dbrecovery.is_damage(exc):
                # The file went bad under us (a worn card, a power cut earlier): rebuild
                # it and commit this batch into the new one; ids and seqs are kept.
                self._recover(str(exc))
                return self._write(batch)
            if not no_room(exc):
                raise
            self.disk.enter(str(exc))
            if not self.room.release():
                raise
            batch.staged[:] = self._shed_telemetry(batch.staged, f"outbox commit failed: {exc}")
            return self._write(batch)

    def _write(self, batch: Batch) -> sql.BatchOutcome:
        if self.ram is not None:
            self.ram.ensure_reserved(self._conn, batch.next_seq)
        out = sql.write_batch(
            self._conn,
            [st.row for st in batch.staged],
            batch.next_seq,
            [(a.mask, a.ids) for a in batch.acks],
            [i.key for i in batch.increments],
            self.snap.depth,
            self.cfg.max_messages,
            # Owed: dropped while nothing could be written, already in the snapshot.
            dropped=self._batch_dropped + self._dropped_owed,
            ram=self.ram is not None,
            on_card=self.news.card_committed,
        )
        self._dropped_owed = 0
        return out

    def _shed_telemetry(self, staged: list[Staged], why: str) -> list[Staged]:
        """Drop the telemetry of a batch; their seqs stay taken (the gap), counted."""
        dropped = [st for st in staged if st.row.prio is Priority.TELEMETRY]
        fail_staged(dropped, [], why, None)
        self._batch_dropped += sum(1 for st in dropped if st.row.seq)
        return [st for st in staged if st.row.prio is not Priority.TELEMETRY]

    def _keep_in_memory(self, batch: Batch, exc: sqlite3.Error) -> None:
        """Nothing fits any more: events go to the uplinks from memory, with their seqs."""
        self._retry_acks = batch.acks
        self._next_seq = batch.next_seq  # the seqs are published: never give them again
        events = [st for st in batch.staged if st.row.prio is Priority.EVENT]
        telemetry = [st for st in batch.staged if st.row.prio is Priority.TELEMETRY]
        fail_staged(telemetry, batch.increments, f"outbox commit failed: {exc}", exc)
        dropped = self._batch_dropped + sum(1 for st in telemetry if st.row.seq)
        self._dropped_owed += dropped  # written with the next commit that succeeds
        self.snap = replace(self.snap, dropped_telemetry=self.snap.dropped_telemetry + dropped)
        kept = self.memory.add([st.row for st in events])
        log.error("outbox: disk full (%s): %d events published from memory, not stored", exc, kept)
        for st in events:
            if st.future is not None:
                st.future.set_result(st.row.seq)
        self.news.notify()

    def _memory_back(self) -> list[Staged]:
        """Events held in memory, to store now that there is room (ids change, seqs stay)."""
        if self.disk.full:
            return []
        return [Staged(None, row, False) for row in self.memory.take_all()]
