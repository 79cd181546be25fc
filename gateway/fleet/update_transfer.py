"""Receiving an update over MQTT: chunks from the uplink thread to the staging file, bounded.

`on_chunk` runs in the uplink's thread for every message on `cmd/update/chunk`.  Until
a signed announce opened a transfer it drops everything at once (counted), so a
stranger on the broker costs a counter, never memory or disk.  Chunks of the open
transfer wait in a short queue (at most MAX_WAITING bytes: beyond, they are dropped
and asked for again by the next announce) for `run`, which writes them in a thread, syncs and
records them about once a second, hands a complete bundle to the install, and ends a
transfer that stayed idle (no chunk, no announce) for `idle_s`, discarding its file.
The idle time runs on the monotonic clock and starts again at each start of the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable

from community_protocol.chunks import MAX_CHUNK_BYTES, MAX_HEADER_BYTES, ChunkError, decode_chunk

from .update_chunks import Staged, Staging

__all__ = ["MAX_WAITING", "ChunkReceiver"]

log = logging.getLogger(__name__)

# Bytes of chunks between the uplink thread and the writer: 128 chunks of 64 KiB.
MAX_WAITING = 8 * 1024 * 1024
FLUSH_EVERY_S = 1.0

Complete = Callable[[Staged], Awaitable[None]]
Expired = Callable[[Staged, str], Awaitable[None]]


class ChunkReceiver:
    """The open transfer's chunks, from the uplink thread to the staging file."""

    def __init__(self, staging: Staging, idle_s: float) -> None:
        self.staging = staging
        self.idle_s = idle_s
        self.dropped = 0  # chunks refused: no transfer, another transfer, malformed, queue full
        self._active: str | None = None  # read in the uplink thread
        self._inbox: deque[tuple[int, bytes]] = deque()
        self._waiting = 0  # bytes in the inbox
        self._lock = threading.Lock()
        self._disk = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._touched = time.monotonic()
        self._handed: Staged | None = None  # complete, with the install now

    @property
    def staged(self) -> Staged | None:
        return self.staging.staged

    def opened(self) -> None:
        """A transfer is open (announced, or found at start): take its chunks from now on."""
        staged = self.staging.staged
        self._active = staged.transfer.id if staged is not None else None
        self.touch()

    def touch(self) -> None:
        """Something of the open transfer arrived: its idle time starts again."""
        self._touched = time.monotonic()
        self._poke()

    # ---- the uplink thread ---------------------------------------------------------------

    def on_chunk(self, payload: bytes) -> None:
        active = self._active
        if active is None or len(payload) > MAX_HEADER_BYTES + MAX_CHUNK_BYTES:
            self.dropped += 1
            return
        try:
            transfer, index, data = decode_chunk(payload)
        except ChunkError:
            self.dropped += 1
            return
        if transfer != active:
            self.dropped += 1
            return
        with self._lock:
            if self._waiting + len(data) > MAX_WAITING:
                self.dropped += 1
                return
            self._inbox.append((index, data))
            self._waiting += len(data)
        self._poke()

    def _poke(self) -> None:
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            loop.call_soon_threadsafe(wake.set)

    def _open(self) -> Staged | None:
        """The transfer that takes chunks now (not one handed to the install)."""
        staged = self.staging.staged
        return None if staged is self._handed else staged

    # ---- the event loop ------------------------------------------------------------------

    def _take(self) -> list[tuple[int, bytes]]:
        with self._lock:
            batch = list(self._inbox)
            self._inbox.clear()
            self._waiting = 0
        return batch

    def _write(self, batch: list[tuple[int, bytes]], flush: bool) -> int:
        # One writer at a time: the last write at a stop may overlap one still in its thread.
        with self._disk:
            wrong = sum(not self.staging.write(index, data) for index, data in batch)
            if flush:
                self.staging.flush()
        return wrong

    async def run(self, complete: Complete, expired: Expired) -> None:
        """Write chunks as they come; hand over a complete bundle; end an idle transfer."""
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        flushed = time.monotonic()
        try:
            await self._receive(complete, expired, flushed)
        finally:
            # Stopping: what arrived is kept, so a restart asks only for the rest.
            if self._open() is not None:
                try:
                    self._write(self._take(), flush=True)
                except OSError as exc:
                    log.error("update transfer: the last chunks were not kept: %s", exc)

    async def _receive(self, complete: Complete, expired: Expired, flushed: float) -> None:
        assert self._wake is not None
        while True:
            timeout = FLUSH_EVERY_S
            if self._open() is not None:
                timeout = min(timeout, max(0.0, self._touched + self.idle_s - time.monotonic()))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            self._wake.clear()
            batch = self._take()
            staged = self._open()
            if staged is None:
                continue  # chunks of a transfer that ended meanwhile, or of none
            if batch:
                self._touched = time.monotonic()
            flush = time.monotonic() - flushed >= FLUSH_EVERY_S
            self.dropped += await asyncio.to_thread(self._write, batch, flush)
            if flush:
                flushed = time.monotonic()
            if staged.complete:
                self._active, self._handed = None, staged
                await complete(staged)
            elif time.monotonic() - self._touched >= self.idle_s:
                self._active = None
                reason = (
                    f"the transfer of version {staged.manifest.get('version')} stopped:"
                    f" {staged.received} of {staged.transfer.chunks} chunks, then nothing"
                    f" for {self.idle_s:g} s; its file is deleted"
                )
                await asyncio.to_thread(self.staging.discard)
                await expired(staged, reason)

    def health(self) -> dict[str, object] | None:
        """The open transfer for the health message, or None."""
        staged = self.staging.staged
        if staged is None:
            return None
        return {
            "id": staged.transfer.id,
            "version": staged.manifest.get("version"),
            "received": staged.received,
            "chunks": staged.transfer.chunks,
            "dropped": self.dropped,
        }
