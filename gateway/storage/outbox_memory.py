"""Events the disk refused: held in memory for the uplinks until each consumer has them.

When even the reserve cannot take an event (the card is full or failing), the outbox
keeps the event here with its seq, under a negative row id that no stored row has.
Readers hand these rows out before the stored ones; an ack with a negative id clears
the consumer's bit, and the row goes once every consumer has it.  When there is room
again, the rows still held are stored like any other (new ids, same seqs).  Bounded:
past `limit` an event is logged and lost, which on a gateway raising fewer than one
alarm a second means the disk stayed full for hours with nobody acting.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import replace

from gateway.storage.outbox_sql import NewRow

__all__ = ["Unstored"]

log = logging.getLogger("gateway.storage.outbox")


class Unstored:
    """The held events; safe from any thread."""

    def __init__(self, limit: int = 10_000) -> None:
        self.limit = limit
        self.lost = 0
        self._rows: dict[int, NewRow] = {}
        self._next_id = -1
        self._lock = threading.Lock()

    def add(self, rows: Iterable[NewRow]) -> int:
        """Hold `rows`; returns how many fit."""
        kept = 0
        with self._lock:
            for row in rows:
                if len(self._rows) >= self.limit:
                    self.lost += 1
                    log.error(
                        "outbox: event seq %d lost: %d held in memory already", row.seq, self.limit
                    )
                    continue
                self._rows[self._next_id] = row
                self._next_id -= 1
                kept += 1
        return kept

    def count(self) -> int:
        return len(self._rows)

    def take_all(self) -> list[NewRow]:
        """Every held row, in the order they came, removed from memory."""
        with self._lock:
            rows = [self._rows[k] for k in sorted(self._rows, reverse=True)]
            self._rows.clear()
        return rows

    def pending(self, mask: int, skip: set[int]) -> list[tuple[int, NewRow]]:
        """(id, row) of the held rows a consumer has not acknowledged and not read yet."""
        with self._lock:
            return [
                (k, row)
                for k, row in sorted(self._rows.items(), reverse=True)
                if row.pending & mask and k not in skip
            ]

    def ack(self, mask: int, ids: Iterable[int]) -> None:
        with self._lock:
            for k in ids:
                row = self._rows.get(k)
                if row is None:
                    continue  # stored meanwhile, or acknowledged before
                left = row.pending & ~mask
                if left:
                    self._rows[k] = replace(row, pending=left)
                else:
                    del self._rows[k]
