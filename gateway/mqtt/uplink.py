"""The MQTT uplink: publishes the outbox at QoS 1 and keeps the gateway's retained state.

One thread owns the paho client and runs its network loop with its own `select`, so
paho is never touched from two threads.  Other threads talk to it through a queue of
actions and a wake-up pipe: the outbox wakes it after a commit, the runtime hands it
availability changes, health figures and command replies.

Delivery: rows are read from the outbox (events before telemetry), published with
QoS 1, and acknowledged to the outbox only on PUBACK, which deletes them.  After a
reconnect every row still in the outbox is sent again from the start: at-least-once,
duplicates carry the same msg_id.

Session: the gateway connects with a persistent MQTT session (MQTT 5: clean start off,
`broker.session_expiry_s`; 3.1.1: clean session off), so a command published while it is
down waits at the broker and arrives when it connects again.

Reconnecting needs no disk write: session numbers are reserved in blocks, one durable
increment when the uplink starts (`sessions`); a full or failing disk cannot keep the
gateway off the broker.  Between attempts a cheap TCP probe of the broker's port
decides whether a full (TLS, MQTT) connection is worth trying (`connect`).  Commands
are admitted and answered by `inbound`; the retained documents are built by `retained`.
"""

from __future__ import annotations

import json
import logging
import queue
import select
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as mqtt

from community_protocol.topics import Topics
from gateway.config import BrokerConfig
from gateway.mqtt.connect import connect, probe
from gateway.mqtt.inbound import CommandHandler, CommandInbox, Reply
from gateway.mqtt.retained import FeatureDocuments, StateDocs
from gateway.mqtt.sessions import SessionNumbers
from gateway.mqtt.stats import PublishStats
from gateway.mqtt.wakeup import WakePipe
from gateway.sdk.backoff import Backoff
from gateway.sdk.model import ClockState, DeviceRef, Identity, Priority
from gateway.storage.outbox import Outbox, OutboxError, OutboxReader

__all__ = ["CONSUMER", "CommandHandler", "PublishStats", "Reply", "SessionNumbers", "Uplink"]

log = logging.getLogger(__name__)

# device, online (None: unknown), reason, ts, and whether the clock was synced at ts
_Availability = tuple[DeviceRef, bool | None, str, datetime, ClockState]

CONSUMER = "mqtt"
READ_BURST = 256  # packets read from the broker before the outbox gets its turn


class Uplink:
    """Publishes the outbox and the gateway's retained state to the broker."""

    def __init__(
        self,
        cfg: BrokerConfig,
        identity: Identity,
        outbox: Outbox,
        *,
        started: datetime,
        clock: Callable[[], ClockState],
        on_command: CommandHandler | None = None,
    ) -> None:
        self.cfg = cfg
        self.identity = identity
        self.outbox = outbox
        self.topics = Topics(cfg.topic_prefix, identity)
        self.started = started
        self.clock = clock  # whether the wall clock is synced now (gateway.sdk.clock)
        self.docs = StateDocs(identity, started, clock)
        self.client_id = cfg.client_id or f"{identity.site}.{identity.gateway}"
        self.session = 0
        self.sessions = SessionNumbers(outbox)
        self.inbox = CommandInbox(
            cfg, self.topics, clock=clock, client=lambda: self._client, on_command=on_command
        )
        self.gate = self.inbox.gate
        self._actions: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._wakeup = WakePipe()
        self._stop = threading.Event()
        self._flush_deadline = 0.0
        self._thread: threading.Thread | None = None
        self._connected = False
        self._client: mqtt.Client | None = None  # from CONNECT until the connection ends
        self._heartbeat = time.monotonic()
        self._availability: dict[str, _Availability] = {}
        self.documents = FeatureDocuments()  # features' retained documents and watches
        # Publishing state, touched by the uplink thread only.
        self._inflight: dict[int, int] = {}  # paho mid -> outbox row id
        self._after: dict[Priority, int] = {p: 0 for p in Priority}
        self._more = True  # the outbox may hold rows we have not read yet
        self._events_seen = 0  # outbox.events_committed() when last refilled
        self._acked: list[int] = []
        self._published = 0
        self._acked_total = 0
        self._connects = 0
        self.attempts = 0  # connection attempts since the start, failed ones included
        self._rate = 0.0
        self._rate_mark = (time.monotonic(), 0)
        self.last_error = ""

    # ---- called from other threads -------------------------------------------------

    def start(self) -> None:
        self.outbox.add_listener(self.wake)
        self._thread = threading.Thread(target=self._main, name="uplink", daemon=True)
        self._thread.start()

    def stop(self, flush_s: float = 2.0) -> None:
        """Publish what can be published within `flush_s`, say offline, disconnect."""
        self._flush_deadline = time.monotonic() + flush_s
        self._stop.set()
        self.wake()
        if self._thread is not None:
            self._thread.join(timeout=flush_s + 5)
        self._wakeup.close()

    def wake(self) -> None:
        self._wakeup.wake()

    def alive(self) -> bool:
        """True while the uplink thread is looping (for the systemd watchdog)."""
        return (
            self._thread is not None
            and self._thread.is_alive()
            and time.monotonic() - self._heartbeat < 15
        )

    def set_availability(self, device: DeviceRef, online: bool | None, reason: str) -> None:
        self._call(lambda: self._set_availability(device, online, reason))

    def publish_document(self, topic: str, payload: bytes) -> None:
        """Publish `payload` retained, QoS 1, now if connected and at every connection."""
        self._call(lambda: self.documents.keep(topic, payload, self._publish_now))

    def publish_health(self, doc: dict[str, Any]) -> None:
        def send() -> None:
            # The doc may have been built before the connection it goes out on (session
            # 0 while the broker was down at start): it names the connection of now.
            if self.session:
                self._publish_now(
                    self.topics.health, {**doc, "session": self.session}, qos=0, retain=False
                )

        self._call(send)

    def reply(self, reply: Reply, doc: dict[str, Any]) -> None:
        """Send the answer to a command handed to `on_command`; frees its queue place."""
        self._call(lambda: self.inbox.answered(reply, doc))

    def stats(self) -> PublishStats:
        return PublishStats(
            self._published,
            self._acked_total,
            self._rate,
            len(self._inflight),
            self._connected,
            self._connects,
        )

    def _call(self, fn: Callable[[], None]) -> None:
        self._actions.put(fn)
        self.wake()

    # ---- the uplink thread -----------------------------------------------------------

    def _main(self) -> None:
        # An exception out of here ends the thread; gateway.process.supervision then stops the
        # whole process (exit 1), so that it is restarted instead of running half-alive.
        reader = self.outbox.reader()
        backoff = Backoff(self.cfg.reconnect.min_delay_s, self.cfg.reconnect.max_delay_s)
        try:
            while not self._stop.is_set():
                client = self._connect(reader)
                if client is None:
                    self._sleep(backoff.next())
                    continue
                backoff.reset()
                self._serve(client, reader)
                if not self._stop.is_set():
                    self._sleep(backoff.next())
        finally:
            reader.close()

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self._stop.is_set() and (left := deadline - time.monotonic()) > 0:
            self._heartbeat = time.monotonic()
            self._wait(min(left, 1.0), None)
            self._run_actions()

    def _report(self, message: str) -> None:
        # The same failure every few seconds for an hour is one log line, not a thousand.
        if message != self.last_error:
            log.warning("broker %s: %s; retrying with backoff", self.cfg.url, message)
            self.last_error = message

    def _connect(self, reader: OutboxReader) -> mqtt.Client | None:
        self.attempts += 1
        if not probe(self.cfg, self._report):
            return None
        self.sessions.reserve(reader)
        session = self.sessions.take()
        client = connect(
            self.cfg,
            self.client_id,
            will=(self.topics.status, self._status_doc("offline", "last will", session)),
            on_message=self._on_message,
            stop=self._stop,
            report=self._report,
            track=self._track,
        )
        if client is None:
            return None
        self.session = session
        if self.last_error:
            log.info("broker %s: connected again (session %d)", self.cfg.url, session)
        else:
            log.info("broker %s: connected (session %d)", self.cfg.url, session)
        self.last_error = ""
        return client

    def _track(self, client: mqtt.Client | None) -> None:
        self._client = client

    def _serve(self, client: mqtt.Client, reader: OutboxReader) -> None:
        self._connects += 1
        self._connected = True
        self._inflight.clear()
        # Resend everything still in the outbox, but not what the broker acknowledged
        # before: its acks wait for a card write (up to 30 s), so write them first.
        self._commit_acks()
        try:
            self.outbox.flush_acks()
        except (OutboxError, RuntimeError) as exc:  # a full card, or closing: sent again
            log.warning("outbox: acknowledgements not committed before resending: %s", exc)
        self._after = {p: 0 for p in Priority}
        self._more = True
        client.on_publish = self._on_publish
        client.on_disconnect = self._on_disconnect
        # Commands first: the broker handles a connection's packets in order, so whoever
        # sees "online" can send a command at once (a first session had it dropped).
        # Status after, so that the retained status it gets back is this "online".
        client.subscribe(self.topics.commands, qos=1)
        self._publish_now(self.topics.status, self._status_doc("online"), qos=1, retain=True)
        client.subscribe(self.topics.status, qos=1)
        for device, online, reason, ts, clock in self._availability.values():
            self._publish_availability(device, online, reason, ts, clock)
        self.documents.connected(client, self._publish_now)
        flushing = False
        while self._connected:
            self._heartbeat = time.monotonic()
            if self._stop.is_set():
                if not flushing:
                    flushing = True
                if time.monotonic() > self._flush_deadline or (
                    not self._inflight and not self._more
                ):
                    self._say_goodbye(client)
                    break
            self._wait(0.5, client)
            self._run_actions()
            self._pump(client, reader)
            self._commit_acks()
            self._measure()
        self._connected = False
        self._client = None
        self._commit_acks()

    def _wait(self, timeout: float, client: mqtt.Client | None) -> None:
        rlist: list[Any] = [self._wakeup]
        wlist: list[Any] = []
        sock = client.socket() if client is not None else None
        if sock is not None:
            rlist.append(sock)
            if client is not None and client.want_write():
                wlist.append(sock)
        try:
            readable, writable, _ = select.select(rlist, wlist, [], timeout)
        except (OSError, ValueError):
            readable, writable = [], []
        if self._wakeup in readable:
            self._wakeup.drain()
            self._more = True
        if client is None:
            return
        if sock is not None and sock in readable:
            self._read(client, sock)
        if sock is not None and sock in writable:
            client.loop_write()
        if client.loop_misc() != mqtt.MQTT_ERR_SUCCESS:
            self._connected = False

    @staticmethod
    def _read(client: mqtt.Client, sock: Any) -> None:
        # paho reads one packet per call when little is in flight: under a flood of
        # commands that would be one trip round the whole loop (actions, outbox query,
        # acks) per command.  Read what has arrived, up to a bound that keeps the outbox
        # publishing between bursts.  `pending()`: bytes TLS has decrypted already,
        # which select() cannot see.
        for _ in range(READ_BURST):
            if client.loop_read() != mqtt.MQTT_ERR_SUCCESS:
                return
            pending = getattr(sock, "pending", None)
            if pending is not None and pending() > 0:
                continue
            try:
                more, _, _ = select.select([sock], [], [], 0)
            except (OSError, ValueError):
                return
            if not more:
                return

    def _run_actions(self) -> None:
        while True:
            try:
                action = self._actions.get_nowait()
            except queue.Empty:
                return
            try:
                action()
            except Exception:
                log.exception("uplink action failed")

    def _pump(self, client: mqtt.Client, reader: OutboxReader) -> None:
        room = self.cfg.max_inflight - len(self._inflight)
        events = self.outbox.events_committed()
        # Refill in chunks, not after every PUBACK: one outbox query per quarter window;
        # but a new event (an alarm) goes out as soon as there is any room at all.
        if self._inflight and room < max(1, self.cfg.max_inflight // 4):
            if room == 0 or events == self._events_seen:
                return
            self._more = True
        self._events_seen = events
        while self._connected and self._more and room > 0:
            rows = reader.next_batch(CONSUMER, self._after, min(room, 200))
            if not rows:
                self._more = False
                return
            for row in rows:
                info = client.publish(row.topic, row.payload, qos=1, retain=row.retain)
                if info.rc != mqtt.MQTT_ERR_SUCCESS:
                    self._connected = False
                    return
                self._inflight[info.mid] = row.id
                self._after[row.priority] = row.id
                self._published += 1
            room -= len(rows)

    def _on_publish(self, _c: mqtt.Client, _u: Any, mid: int, rc: Any, _p: Any) -> None:
        row_id = self._inflight.pop(mid, None)
        if row_id is None:
            return  # a direct publish (status, availability, reply)
        if rc is not None and getattr(rc, "is_failure", False):
            # The broker refused this message (e.g. not authorised for the topic). It stays
            # in the outbox and is tried again after the next reconnect.
            log.warning("broker refused outbox row %d: %s", row_id, rc)
            return
        self._acked.append(row_id)
        self._acked_total += 1
        # Room in the window, but not a reason to read: a pump that ran out of room
        # left `_more` set, and new rows come with the writer's wake-up.  Reading on
        # every PUBACK was an empty query per burst's acknowledgements (issue 16).

    def _commit_acks(self) -> None:
        if self._acked:
            self.outbox.ack(CONSUMER, self._acked)
            self._acked = []

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        if self._connected and not self._stop.is_set():
            self._report(f"connection lost ({rc})")
        self._connected = False

    def _measure(self) -> None:
        t0, n0 = self._rate_mark
        now = time.monotonic()
        if now - t0 >= 1.0:
            self._rate = (self._acked_total - n0) / (now - t0)
            self._rate_mark = (now, self._acked_total)

    def _say_goodbye(self, client: mqtt.Client) -> None:
        info = client.publish(
            self.topics.status, self._status_doc("offline", "clean shutdown"), qos=1, retain=True
        )
        deadline = time.monotonic() + 1.0
        while not info.is_published() and time.monotonic() < deadline:
            self._wait(0.05, client)
        client.disconnect()
        client.loop_write()

    # ---- retained state and commands ---------------------------------------------------

    def _status_doc(self, state: str, reason: str = "", session: int | None = None) -> bytes:
        return self.docs.status(state, self.session if session is None else session, reason)

    def _publish_now(
        self, topic: str, doc: dict[str, Any] | bytes, *, qos: int, retain: bool
    ) -> None:
        if not self._connected or self._client is None:
            return
        payload = doc if isinstance(doc, bytes) else json.dumps(doc, ensure_ascii=False).encode()
        self._client.publish(topic, payload, qos=qos, retain=retain)

    def _set_availability(self, device: DeviceRef, online: bool | None, reason: str) -> None:
        known = self._availability.get(device.id)
        if known is not None and known[1] == online and known[2] == reason:
            return
        ts, clock = datetime.now(UTC), self.clock()
        self._availability[device.id] = (device, online, reason, ts, clock)
        self._publish_availability(device, online, reason, ts, clock)

    def _publish_availability(
        self, device: DeviceRef, online: bool | None, reason: str, ts: datetime, clock: ClockState
    ) -> None:
        doc = self.docs.availability(
            device, online, reason, session=self.session, ts=ts, clock=clock
        )
        self._publish_now(self.topics.availability(device.id), doc, qos=1, retain=True)

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.topic == self.topics.status:
            self._repair_status(bytes(msg.payload))
        elif not self.documents.watched(msg):
            self.inbox.handle(msg)

    def _repair_status(self, payload: bytes) -> None:
        # A last will of an older session can arrive after our birth (the broker noticed
        # the old connection late). It would mark a live gateway offline: say online again.
        try:
            doc = json.loads(payload)
            state, session = doc["state"], int(doc["session"])
        except (ValueError, KeyError, TypeError):
            return
        if state == "offline" and session < self.session and not self._stop.is_set():
            log.info("late last will of session %d seen; publishing online again", session)
            self._publish_now(self.topics.status, self._status_doc("online"), qos=1, retain=True)
