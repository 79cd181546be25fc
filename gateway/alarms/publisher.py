"""Alarm documents out: retained on the alarm's topic through the outbox, and to the listeners.

Every transition and escalation is published at once; repeats of one alarm (count,
last seen) at most once a second.  What the outbox has not taken (closed, failing, a
crash in between) is handed to it again by `republish`, from the store's unpublished
revs: the store, not this object, is what survives a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import Future
from datetime import datetime
from functools import partial
from typing import Any

from community_protocol.topics import Topics
from gateway.sdk.model import Identity, Priority
from gateway.storage.outbox import Outbox, OutboxItem

from .model import Alarm, AlarmState
from .store import MAX_UNSAVED, AlarmStore

__all__ = ["CHANNEL", "REPEAT_PUBLISH_S", "AlarmPublisher", "Listener", "log_mark_error"]

log = logging.getLogger(__name__)

CHANNEL = "alarms"
REPEAT_PUBLISH_S = 1.0  # repeats of one alarm are published at most this often

Listener = Callable[[dict[str, Any]], None]


class AlarmPublisher:
    """Hands alarm documents to the outbox and the listeners; used on the event loop only."""

    def __init__(
        self, outbox: Outbox, topics: Topics, store: AlarmStore, closed_retain_s: float = 0.0
    ) -> None:
        self.outbox = outbox
        self.closed_retain_s = closed_retain_s
        self.topics = topics
        self.identity: Identity = topics.identity
        self.store = store
        self.store_open = False  # the engine's: revs the outbox took are marked while open
        self._listeners: list[Listener] = []
        self._inflight: dict[str, int] = {}  # alarm id -> rev handed to the outbox
        self._sent_rev: dict[str, int] = {}  # alarm id -> latest rev the outbox took
        self._last_publish: dict[str, float] = {}  # open alarm id -> monotonic time
        self._deferred: set[str] = set()  # alarms with a repeat not yet published
        # Closed alarms whose retained document the broker forgets later: id -> (due
        # monotonic time, device kind).  Bounded by the alarms closed in the period.
        self._forget_at: dict[str, tuple[float, str]] = {}

    def listen(self, callback: Listener) -> Callable[[], None]:
        """Call `callback(document)` whenever a document is published; returns the unsubscribe."""
        self._listeners.append(callback)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._listeners.remove(callback)

        return unsubscribe

    def offer(self, alarm: Alarm, *, repeat: bool) -> None:
        """Publish `alarm` now, or, a repeat within a second of the last, at `republish`."""
        last = self._last_publish.get(alarm.id)
        if repeat and last is not None and time.monotonic() - last < REPEAT_PUBLISH_S:
            # A detector that repeats its alarm every few hundred ms: the count is
            # stored at once, the document goes out at most once a second (run()).
            self._deferred.add(alarm.id)
            return
        self.publish(alarm)

    def publish(self, alarm: Alarm) -> None:
        """Hand `alarm`'s document to the outbox (retained), then tell the listeners."""
        doc = alarm.document(self.identity)
        payload = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()
        topic = self.topics.alarm(alarm.id)
        items = [self._item(topic, payload, alarm.device.kind)]
        if alarm.state is AlarmState.CLOSED:
            if self.closed_retain_s <= 0:
                items.append(self._item(topic, b"", alarm.device.kind))  # the broker forgets it
            else:
                due = time.monotonic() + self.closed_retain_s
                self._forget_at[alarm.id] = (due, alarm.device.kind)
        try:
            futures = [self.outbox.put(item) for item in items]
        except Exception as exc:  # outbox closed or failing: run() tries again
            log.warning("alarm %s rev %d not queued for publishing: %s", alarm.id, alarm.rev, exc)
            return
        self._inflight[alarm.id] = alarm.rev
        self._deferred.discard(alarm.id)
        if alarm.is_open:
            self._last_publish[alarm.id] = time.monotonic()
        else:
            self._last_publish.pop(alarm.id, None)
        for listener in list(self._listeners):
            try:
                listener(doc)
            except Exception:  # a broken listener must not stop the others
                log.exception("alarm listener %r failed", listener)
        loop = asyncio.get_running_loop()

        def done(fut: Any) -> None:
            # RuntimeError: the loop is closed, the commit came after the engine stopped
            # (at shutdown); its rev is not noted as published, so the next start
            # publishes it again (retained, the same document).
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._published, alarm.id, alarm.rev, fut.exception())

        futures[-1].add_done_callback(done)

    def keep_closed(self, closed: list[Alarm], now: datetime) -> None:
        """At start: forget the closed documents kept retained, when their time comes.

        `closed`: recently closed alarms (newest first); those closed longer ago than
        the period plus a week are taken to be forgotten already.
        """
        if self.closed_retain_s <= 0:
            return
        for alarm in closed:
            if alarm.closed_at is None:
                continue
            age = (now - alarm.closed_at).total_seconds()
            if age > self.closed_retain_s + 7 * 86400:
                break
            left = max(0.0, self.closed_retain_s - age)
            self._forget_at[alarm.id] = (time.monotonic() + left, alarm.device.kind)

    def forget_due(self) -> None:
        """Tell the broker to forget the closed documents whose period is over."""
        now = time.monotonic()
        for alarm_id, (due, kind) in list(self._forget_at.items()):
            if due > now:
                continue
            try:
                self.outbox.put(self._item(self.topics.alarm(alarm_id), b"", kind))
            except Exception as exc:  # outbox closed or failing: the next round tries again
                log.warning("alarm %s: its closed document not forgotten yet: %s", alarm_id, exc)
                return
            del self._forget_at[alarm_id]

    def republish(self) -> None:
        """Hand the outbox every latest rev it has not taken (after a crash or an error)."""
        for alarm in self.store.unpublished():
            if max(self._inflight.get(alarm.id, 0), self._sent_rev.get(alarm.id, 0)) >= alarm.rev:
                continue
            if alarm.id in self._deferred:
                last = self._last_publish.get(alarm.id, 0.0)
                if time.monotonic() - last < REPEAT_PUBLISH_S:
                    continue
            else:
                log.info("alarm %s: publishing rev %d again", alarm.id, alarm.rev)
            self.publish(alarm)

    @staticmethod
    def _item(topic: str, payload: bytes, kind: str) -> OutboxItem:
        return OutboxItem(
            priority=Priority.EVENT,
            channel=CHANNEL,
            device_kind=kind,
            topic=topic,
            build_payload=partial(_fixed, payload),
            retain=True,
            sequenced=False,  # a gap in seq must keep meaning dropped telemetry
        )

    def _published(self, alarm_id: str, rev: int, error: BaseException | None) -> None:
        if self._inflight.get(alarm_id) == rev:
            del self._inflight[alarm_id]
        if error is not None:
            log.warning("alarm %s rev %d not stored in the outbox: %s", alarm_id, rev, error)
            return
        if len(self._sent_rev) >= MAX_UNSAVED:  # bounded: forgetting costs a repeat at most
            self._sent_rev.clear()
        self._sent_rev[alarm_id] = max(rev, self._sent_rev.get(alarm_id, 0))
        if self.store_open:
            # A full card refuses it: _sent_rev keeps run() from repeating the alarm.
            self.store.mark_published_later(alarm_id, rev).add_done_callback(log_mark_error)


def log_mark_error(fut: Future[None]) -> None:
    # A mark (run clock, published rev) the database refused: the next one will do.
    if (exc := fut.exception()) is not None:
        log.debug("alarms: bookkeeping not stored: %s", exc)


def _fixed(payload: bytes, seq: int) -> bytes:
    return payload
