"""MQTT session numbers: growing across connections and restarts, one disk write a start."""

from __future__ import annotations

import logging

from gateway.storage.outbox import Outbox, OutboxError, OutboxReader

__all__ = ["SessionNumbers"]

log = logging.getLogger("gateway.mqtt.uplink")


class SessionNumbers:
    """The `session` of each connection: growing across connections and restarts.

    The outbox's durable counter `mqtt_session` counts uplink starts.  Start n uses the
    block 2n: the numbers 2n * BLOCK .. 2n * BLOCK + BLOCK - 1, one per connection, so
    only the start writes to disk, never a reconnect.  A start whose write fails (a
    full disk) uses the odd block 2s + 1 after the stored counter s: above every number
    used before, below the next start that can write (block 2s + 2).  It tries the
    write again at each connection and, once it succeeds, goes on in its new block.
    (Before blocks, the counter counted connections; 2n * BLOCK is above any such count.)
    Only two starts in a row that both cannot write may reuse numbers.
    """

    BLOCK = 1 << 20  # a million connections per start; numbers stay exact in JSON

    def __init__(self, outbox: Outbox) -> None:
        self._outbox = outbox
        self._next = 0
        self._end = 0
        self._reserved = False

    def reserve(self, reader: OutboxReader) -> None:
        """Reserve a block if none is reserved yet; never raises for a disk that fails."""
        if self._reserved:
            return
        try:
            start = self._outbox.meta_increment("mqtt_session")
        except (OutboxError, RuntimeError) as exc:
            if self._end == 0:  # nothing to go on yet: the block after the stored counter
                self._use(2 * reader.counter("mqtt_session") + 1)
                log.error(
                    "cannot reserve MQTT session numbers (%s); connecting with session %d"
                    " anyway, and trying again at each connection",
                    exc,
                    self._next,
                )
            return
        self._reserved = True
        self._use(2 * start)

    def _use(self, block: int) -> None:
        self._next = max(self._next, block * self.BLOCK)
        self._end = max(self._end, (block + 1) * self.BLOCK)

    def take(self) -> int:
        """The number for the next connection (call `reserve` first)."""
        if self._next >= self._end:
            self._reserved = False  # a million reconnects: reserve the next start's block
            self._end = self._next + self.BLOCK
        number = self._next
        self._next += 1
        return number
