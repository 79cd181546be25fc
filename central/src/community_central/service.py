"""The ticket service: alarms in from every gateway, one ticket each, acknowledgements out.

Threads: paho's network thread only queues what arrives (messages, PUBACKs, connects);
the service thread owns the database and does everything else, so SQLite is used from
one thread and the order of work is the order of arrival.

Delivery: the service keeps a persistent MQTT 5 session (fixed client id, no clean
start, a session expiry), so alarms published while it is down wait at the broker.
Incoming alarms are acknowledged to the broker (manual PUBACK) only after the ticket
change is committed: a crash between the two means a redelivery, which the rev-ordered
upsert ignores, never a lost alarm.

Alarms arrive on the shared subscription `$share/{group}/{prefix}/+/+/alarms/+`, so
several instances split the load.  Retained messages are never sent on a shared
subscription (MQTT 5, 4.8.2), so at start, and whenever the broker lost our session,
the service also subscribes plainly to `{prefix}/+/+/alarms/+` to read every gateway's
retained alarm state, and unsubscribes once no retained message came for a while.

Trust: the broker's ACL (gateway security acl) lets a gateway publish only under its own
topics, so the topic says who sent a document; a document that claims another site or
gateway than its topic, or fails its JSON Schema, is refused and counted.  Each gateway
has an alarm budget (fair.py): a flood from one is coalesced and deferred, so the
others' alarms are ticketed as quickly as when it is quiet.  Replies come on a topic in
the answering gateway's own subtree (`{prefix}/{site}/{gateway}/reply/central/{client
id}`, the only place its ACL lets it answer), and count only for a request sent to that
gateway.  Counters go to the database for `community-central stats`.

Ticket events go out retained on `{prefix}/central/tickets/{ticket_id}`; a ticket is
marked published when its PUBACK comes, and whatever is unpublished after a reconnect
or a restart is published again (the current state, carrying its `version`).  They go
out on a second connection (client id `{client_id}.events`, no session): on the
alarms' connection the broker's PUBACKs for them would sit in front of the next alarm,
held back by Nagle's algorithm until our delayed TCP ACK, 40 ms on Linux (measured:
p99 raised → opened 43 ms with one connection, 6 ms with two).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from .broker import (
    BrokerSettings,
    build_client,
    publish_properties,
    refused_credentials,
    stop_loop,
)
from .contract import CentralTopics, Identity
from .documents import AlarmDoc, BadAlarm, parse_alarm
from .fair import Budget, FairQueue
from .routing import Routes
from .signing import CommandSigner
from .store import Applied, Ticket, TicketStore

__all__ = ["ServiceConfig", "TicketService"]

log = logging.getLogger(__name__)

MAX_REPLY_BYTES = 256 * 1024
EVENT_SLICE = 10  # ticket events published between two looks at the incoming alarms
DUTY_S = 1.0  # heartbeat, leadership and the leader's checks, this often
DEAD_AFTER_S = 3.0  # a worker silent this long has stopped (or hangs)
# While a worker of the group is stopped, the broker keeps queueing a share of the
# alarms in its session: the leader reads the retained alarms this often meanwhile.
ORPHAN_RECONCILE_S = 5.0
CLIENT_STOP_S = 2.0  # a paho thread that takes longer to stop is left to the exit


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    """How one service instance connects and where it keeps its tickets."""

    broker: BrokerSettings
    db: str | Path  # a SQLite file or a postgresql:// URL
    client_id: str
    group: str = "tickets"
    session_expiry_s: int = 7 * 24 * 3600
    reconcile_quiet_s: float = 1.0
    reconcile_every_s: float = 600.0
    poll_s: float = 0.25
    budget: Budget = field(default_factory=Budget)
    signer: CommandSigner | None = None  # signs acknowledgements (docs/security.md)


@dataclass(frozen=True, slots=True)
class _Message:
    topic: str
    payload: bytes
    retain: bool
    mid: int
    qos: int
    correlation: bytes | None
    connection: int  # which connection it came on: a PUBACK only makes sense on that one


class TicketService:
    """One instance of the reference ticket service; `run` until `stop` is set."""

    def __init__(self, cfg: ServiceConfig, routes: Routes) -> None:
        self.cfg = cfg
        self.routes = routes
        self.topics = CentralTopics(cfg.broker.prefix, cfg.group, cfg.client_id)
        self._inbox: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._connected = False
        self._bad_topics: set[str] = set()
        self._reconciling = False  # the plain subscription for retained alarms is on
        self._ever_connected = False
        self._last_retained = 0.0
        self._reconciled_at = 0.0
        self._want_reconcile = False  # connected again: retained alarms must be read
        self._leader = False  # this worker reconciles (the database's lock, see store)
        self._next_duty = 0.0
        self._seen_requests: int | None = None  # followers' reconcile requests seen
        self._mourned: dict[str, float] = {}  # stopped workers already reconciled for
        self._orphans = False  # some worker is stopped and its session still takes alarms
        self._mine: set[int] = set()  # tickets this worker changed: it publishes them
        self._last_sweep: set[tuple[int, int]] = set()  # the leader's look at stuck events
        self._publishing: dict[int, tuple[int, int]] = {}  # mid -> (ticket, version)
        self._in_flight: dict[int, int] = {}  # ticket -> version being published
        self._published: list[tuple[int, int]] = []
        self._pending: list[_Message] = []  # messages drained, not yet applied
        self._db_retry_at = 0.0
        self._connection = 0  # counts connections of the alarms client (paho's thread)
        self._errors: tuple[type[Exception], ...] = ()  # the store's database errors
        self.client: mqtt.Client | None = None
        self.events: mqtt.Client | None = None
        self._events_connected = False
        self.store: TicketStore | None = None
        # Used from paho's thread (admit, so a flood costs the service thread nothing)
        # and from the service thread (release, counters): hence the lock.
        self.fair: FairQueue[_Message] = FairQueue(cfg.budget)
        self._fair_lock = threading.Lock()
        self.counts: Counter[str] = Counter()  # not yet added to the database's counters

    # ---- paho's thread: queue only --------------------------------------------------

    def _on_connect(self, client: mqtt.Client, _u: Any, flags: Any, rc: Any, _p: Any) -> None:
        if rc.is_failure:
            hint = ""
            if refused_credentials(rc):
                hint = ": check --username and --password-file"
            log.error("the broker refused the ticket service (%s)%s", rc, hint)
            return
        self._connection += 1
        self._inbox.put(("connected", bool(flags.session_present)))

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        self._inbox.put(("disconnected", str(rc)))

    def _on_message(self, client: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        props = getattr(msg, "properties", None)
        correlation = getattr(props, "CorrelationData", None) if props is not None else None
        message = _Message(
            msg.topic,
            bytes(msg.payload),
            bool(msg.retain),
            msg.mid,
            msg.qos,
            correlation,
            self._connection,
        )
        levels = self.topics.split(msg.topic)
        if levels is not None and len(levels) == 4 and levels[2] == "alarms" and message.payload:
            with self._fair_lock:
                admitted = self.fair.admit((levels[0], levels[1]), msg.topic, message)
            if not admitted:
                # Kept (or dropped, counted) by the budget: acknowledged here, on the
                # connection it came on, without waking the service thread.
                if msg.qos > 0:
                    client.ack(msg.mid, msg.qos)
                return
        self._inbox.put(("message", message))

    def _on_events_connect(self, _c: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        if rc.is_failure:
            log.error("broker refused the ticket events connection: %s", rc)
            return
        self._inbox.put(("events-connected", None))

    def _on_events_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        self._inbox.put(("events-disconnected", str(rc)))

    def _on_publish(self, _c: mqtt.Client, _u: Any, mid: int, _rc: Any, _p: Any) -> None:
        self._inbox.put(("puback", mid))

    # ---- the service thread ---------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Connect, then serve until `stop` is set; disconnects keeping the session."""
        self.store = TicketStore(self.cfg.db)
        self._errors = self.store.errors
        client = build_client(self.cfg.broker, self.cfg.client_id)
        client.manual_ack_set(True)  # PUBACK after the commit, see the module docstring
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        events = build_client(self.cfg.broker, f"{self.cfg.client_id}.events")
        events.on_connect = self._on_events_connect
        events.on_disconnect = self._on_events_disconnect
        events.on_publish = self._on_publish
        self.events = events
        events.connect_async(
            self.cfg.broker.host, self.cfg.broker.port, keepalive=self.cfg.broker.keepalive_s
        )
        events.loop_start()
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.cfg.session_expiry_s
        self.client = client
        client.connect_async(
            self.cfg.broker.host,
            self.cfg.broker.port,
            keepalive=self.cfg.broker.keepalive_s,
            clean_start=False,
            properties=props,
        )
        client.loop_start()
        log.info(
            "ticket service %s: broker %s, prefix %s, group %s, database %s",
            self.cfg.client_id,
            self.cfg.broker.url,
            self.topics.prefix,
            self.cfg.group,
            self.cfg.db,
        )
        next_tick = 0.0
        try:
            while not stop.is_set():
                try:
                    kind, value = self._inbox.get(timeout=self.cfg.poll_s)
                    self._handle(kind, value)
                    # Drain what is queued before the periodic work, in arrival order.
                    for _ in range(500):
                        kind, value = self._inbox.get_nowait()
                        self._handle(kind, value)
                except queue.Empty:
                    pass
                # Deferred alarms were acknowledged to the broker when deferred: qos 0
                # marks them so that they are not acknowledged a second time.
                with self._fair_lock:
                    released = self.fair.release()
                self._pending += [replace(m, qos=0) for m in released]
                self._flush_messages()
                now = time.monotonic()
                try:
                    if now >= next_tick:
                        next_tick = now + self.cfg.poll_s
                        self._tick()
                    self._publish_tickets()
                except self._errors as exc:
                    # Acknowledgements and ticket events wait in the database: the
                    # next round sends them.
                    log.warning("database error, tried again shortly: %s", exc)
        finally:
            stop_loop(client, self.cfg.client_id, CLIENT_STOP_S)
            stop_loop(events, f"{self.cfg.client_id}.events", CLIENT_STOP_S)
            self.store.close()

    def _handle(self, kind: str, value: Any) -> None:
        if kind == "message":
            self._pending.append(value)
            return
        self._flush_messages()  # keep arrival order across kinds
        if kind == "puback":
            done = self._publishing.pop(value, None)
            if done is not None:
                self._published.append(done)
                if self._in_flight.get(done[0]) == done[1]:
                    del self._in_flight[done[0]]
        elif kind == "connected":
            self._connected_now(session_present=value)
        elif kind == "events-connected":
            self._events_connected = True
            # paho resends its unacknowledged publishes itself, but a ticket changed
            # meanwhile must go out in its newest version: publish afresh.
            self._publishing.clear()
            self._in_flight.clear()
        elif kind == "events-disconnected":
            self._events_connected = False
        elif kind == "disconnected":
            if self._connected:
                log.warning("lost the broker (%s); reconnecting", value)
            self._connected = False

    def _connected_now(self, *, session_present: bool) -> None:
        assert self.client is not None
        self._connected = True
        opts = SubscribeOptions(qos=1)
        self.client.subscribe(
            [
                (self.topics.shared_alarms, opts),
                (self.topics.shared_replies, opts),
                (self.topics.shared_status, opts),
                (self.topics.replies, opts),
            ]
        )
        # Whatever the broker says it kept, read the retained alarms again: Mosquitto
        # 2.0.11 resumes the session ("session present") without the shared
        # subscriptions it had, and what gateways published until we subscribed
        # again went to nobody of our group (docs/tickets.md, "Converging").
        self._want_reconcile = True
        self._ever_connected = True
        log.info(
            "connected (%s); subscribed again; the retained alarms are read",
            "session resumed" if session_present else "new session",
        )

    def _reconcile(self) -> None:
        """Read every retained alarm document through a plain subscription."""
        assert self.client is not None
        self.client.subscribe(self.topics.alarms, qos=1)
        self._reconciling = True
        self._last_retained = self._reconciled_at = time.monotonic()

    def _save_counts(self) -> None:
        with self._fair_lock:
            self.counts.update(self.fair.counts)
            self.fair.counts.clear()
        if not self.counts:
            return
        try:
            self._store().add_counters(self.counts)
        except self._errors as exc:
            log.warning("database error, counters kept for the next try: %s", exc)
            return
        self.counts.clear()

    def _tick(self) -> None:
        assert self.client is not None
        self._save_counts()
        now = time.monotonic()
        if now >= self._next_duty:
            self._next_duty = now + DUTY_S
            self._duties()
        if not self._connected:
            return
        quiet = now - self._last_retained >= self.cfg.reconcile_quiet_s
        if self._reconciling and quiet:
            self.client.unsubscribe(self.topics.alarms)
            self._reconciling = False  # until the next round
            log.info("retained alarms read; following the shared subscription only")
        elif self._reconciling:
            pass
        elif self._leader and self._want_reconcile:
            self._want_reconcile = False
            self._reconcile()
        elif self._leader and self._orphans and now - self._reconciled_at >= ORPHAN_RECONCILE_S:
            log.debug("re-reading retained alarms: a stopped worker's session takes a share")
            self._reconcile()
        elif self._leader and now - self._reconciled_at >= self.cfg.reconcile_every_s:
            # Anti-entropy: an alarm message lost anywhere (e.g. queued for a stopped
            # instance whose session then expired) is still retained at the broker.
            log.debug("re-reading retained alarms")
            self._reconcile()
        elif self._want_reconcile:
            # One worker at a time reads the retained alarms: ask the leader.
            self._want_reconcile = False
            self.counts["reconcile_requests"] += 1
            log.info("following the shared subscription; the leader reads the retained alarms")
        self._send_acks()

    def _duties(self) -> None:
        """Heartbeat and leadership; the leader also watches the others (every DUTY_S)."""
        store, wall = self._store(), time.time()
        store.heartbeat(self.cfg.client_id, wall)
        was = self._leader
        self._leader = store.try_lead(self.cfg.client_id, wall)
        if self._leader and not was:
            # The previous leader may have died mid-round: a round of our own, and
            # every event still unpublished is ours to publish now.
            log.info("leading: this worker reads the retained alarms for the group")
            self._want_reconcile = True
            self._mine |= {t.number for t in store.unpublished(limit=1000)}
        elif was and not self._leader:
            log.warning("no longer leading (the database connection was lost)")
        if not self._leader:
            return
        requests = store.counters().get("reconcile_requests", 0)
        if self._seen_requests is not None and requests > self._seen_requests:
            self._want_reconcile = True
        self._seen_requests = requests
        self._orphans = False
        for name, seen in store.workers().items():
            if name == self.cfg.client_id or wall - seen < DEAD_AFTER_S:
                continue
            if wall - seen > self.cfg.session_expiry_s:
                continue  # its session is gone from the broker, and its share with it
            self._orphans = True
            if self._mourned.get(name) != seen:
                # Stopped since we last looked: the broker keeps giving its session a
                # share of the alarms; they are retained, so a round finds them.
                self._mourned[name] = seen
                log.warning("worker %s stopped; reading the retained alarms for it", name)
                self._want_reconcile = True
        # Events whose worker died before publishing them: unpublished at two looks.
        stuck = {(t.number, t.version) for t in store.unpublished(limit=500)}
        self._mine |= {number for number, _ in stuck & self._last_sweep}
        self._last_sweep = stuck

    # ---- alarms and replies in ------------------------------------------------------

    def _flush_messages(self) -> None:
        """Apply the drained messages in order, alarms in one transaction per run.

        When the database fails (locked by a peer for longer than the timeout, disk
        full), the messages from the failed one on stay queued, unacknowledged, and are
        tried again a second later, in the same order.
        """
        if not self._pending or time.monotonic() < self._db_retry_at:
            return
        pending, self._pending = self._pending, []
        batch: list[tuple[_Message, AlarmDoc | None]] = []
        start = 0  # index in `pending` of the first message of `batch`
        for i, msg in enumerate(pending):
            kind, doc = self._classify(msg)
            if kind == "status":
                self._gateway_status(msg)  # changes nothing but a retry time: no order
                continue
            if kind != "reply":
                batch.append((msg, doc))
                continue
            if not self._commit(batch):
                break
            start, batch = i, []
            if not self._commit([(msg, None)], reply=True):
                break
            start = i + 1
        else:
            if self._commit(batch):
                return
        self._pending = pending[start:] + self._pending
        self._db_retry_at = time.monotonic() + 1.0

    def _classify(self, msg: _Message) -> tuple[str, AlarmDoc | None]:
        """("reply", None), ("alarm", doc) or ("skip", None) for something not to apply."""
        levels = self.topics.split(msg.topic)
        if levels is not None and (
            (len(levels) == 5 and levels[2:] == ("reply", "central", self.cfg.client_id))
            or (len(levels) == 6 and levels[2:4] == ("reply", "alarms") and levels[5] == "ack")
        ):
            return "reply", None
        if levels is not None and len(levels) == 3 and levels[2] == "status":
            return "status", None
        if levels is None or len(levels) != 4 or levels[2] != "alarms":
            log.debug("ignoring message on %s", msg.topic)
            return "skip", None
        if msg.retain and self._reconciling:
            self._last_retained = time.monotonic()
        if not msg.payload:
            return "skip", None  # a closed alarm's retained state being removed
        try:
            doc = parse_alarm(levels[0], levels[1], levels[3], msg.payload)
        except BadAlarm as exc:
            self.counts[f"refused_{exc.kind}"] += 1
            if msg.topic not in self._bad_topics:
                if len(self._bad_topics) > 10_000:
                    self._bad_topics.clear()
                self._bad_topics.add(msg.topic)
                log.warning("skipping a malformed alarm on %s: %s", msg.topic, exc)
            return "skip", None
        self._bad_topics.discard(msg.topic)
        return "alarm", doc

    def _commit(
        self, batch: list[tuple[_Message, AlarmDoc | None]], *, reply: bool = False
    ) -> bool:
        """Apply, commit, then PUBACK: a crash in between means redelivery, not loss.

        False if the database failed: nothing of the batch is applied or acknowledged.
        """
        if not batch:
            return True
        try:
            if reply:
                self._reply(batch[0][0])
            else:
                docs = [(d, self.routes.team_for(d.type)) for _, d in batch if d is not None]
                if docs:
                    self._applied(self._store().apply_alarms(docs, time.time()))
        except self._errors as exc:
            log.error("database error, %d message(s) wait and are tried again: %s", len(batch), exc)
            return False
        for msg, _ in batch:
            self._puback(msg)
        return True

    def _puback(self, msg: _Message) -> None:
        """Acknowledge `msg` to the broker, on the connection it came on only.

        After a reconnect the broker sends an unacknowledged message again, and its old
        packet id may name another message.
        """
        assert self.client is not None
        if msg.qos > 0 and msg.connection == self._connection:
            self.client.ack(msg.mid, msg.qos)

    def _gateway_status(self, msg: _Message) -> None:
        """A gateway came online: send the acknowledgements waiting for it now."""
        levels = self.topics.split(msg.topic)
        assert levels is not None
        try:
            online = json.loads(msg.payload).get("state") == "online"
        except (ValueError, AttributeError):
            online = False
        try:
            # Half a second later: a gateway says it is online just before it subscribes
            # to its commands.
            at = time.time() + 0.5
            if online and self._store().resend_acks_to(levels[0], levels[1], at):
                log.info("%s/%s is online: sending its acknowledgements now", *levels[:2])
        except self._errors as exc:
            log.warning("database error on %s, its retry keeps its time: %s", msg.topic, exc)
        self._puback(msg)

    def _store(self) -> TicketStore:
        assert self.store is not None
        if self.store.db.broken():
            # PostgreSQL restarted or the network was cut: a new connection; if that
            # fails too, the caller's except clause keeps the work for the next try.
            old = self.store
            self.store = TicketStore(old.target)
            old.close()
            log.warning("database connection lost; reconnected")
        return self.store

    def _applied(self, results: list[Applied]) -> None:
        for applied in results:
            t = applied.ticket
            if applied.outcome != "stale":
                self._mine.add(t.number)
            if applied.outcome == "opened":
                log.info(
                    "%s opened for %s alarm %s/%s/%s (%s), team %s, %.0f ms after it was raised",
                    t.ticket_id,
                    t.alarm_type,
                    t.site,
                    t.gateway,
                    t.alarm_id,
                    t.alarm_state,
                    t.team,
                    t.open_latency_s * 1000,
                )
            elif applied.outcome == "reopened":
                log.warning(
                    "%s reopened: alarm %s/%s/%s is %s again (rev %d)",
                    t.ticket_id,
                    t.site,
                    t.gateway,
                    t.alarm_id,
                    t.alarm_state,
                    t.alarm_rev,
                )
            elif applied.outcome == "updated":
                log.info(
                    "%s: alarm rev %d is %s; ticket %s",
                    t.ticket_id,
                    t.alarm_rev,
                    t.alarm_state,
                    t.state,
                )

    def _reply(self, msg: _Message) -> None:
        if len(msg.payload) > MAX_REPLY_BYTES:
            log.warning("skipping a %d-byte reply on %s", len(msg.payload), msg.topic)
            return
        try:
            reply = json.loads(msg.payload)
        except (UnicodeDecodeError, json.JSONDecodeError):
            log.warning("skipping a reply that is not JSON on %s", msg.topic)
            return
        if not isinstance(reply, dict):
            log.warning("skipping a reply that is not a JSON object on %s", msg.topic)
            return
        request_id = reply.get("request_id")
        if not isinstance(request_id, str) and msg.correlation:
            request_id = msg.correlation.decode(errors="replace")
        if not isinstance(request_id, str):
            log.warning("skipping a reply without request_id on %s", msg.topic)
            return
        if reply.get("status") == "replayed":
            # A redelivered copy of a signed command the gateway has run already: its
            # first reply, or the answer to our next (freshly signed) attempt, counts.
            log.debug("ignoring the reply to a redelivered copy of %s", request_id)
            return
        levels = self.topics.split(msg.topic)
        req = self._store().ack_request(request_id)
        if req is not None and levels is not None and (req.site, req.gateway) != levels[:2]:
            # Any gateway may publish in its own reply topics: it answers only for itself.
            self.counts["refused_reply_wrong_gateway"] += 1
            log.warning(
                "skipping a reply on %s to %s, which went to %s/%s",
                msg.topic,
                request_id,
                req.site,
                req.gateway,
            )
            return
        ticket = self._store().record_reply(request_id, reply, time.time())
        if ticket is None:
            log.debug("reply %s is for no request of ours", request_id)
            return
        self._mine.add(ticket.number)
        if reply.get("ok") is True:
            log.info(
                "%s: gateway answered %s to acknowledgement %s",
                ticket.ticket_id,
                reply.get("status"),
                request_id,
            )
        else:
            log.warning(
                "%s: gateway refused acknowledgement %s: %s",
                ticket.ticket_id,
                request_id,
                reply.get("error"),
            )
        result = reply.get("result")
        if isinstance(result, dict) and result:
            # The reply carries the alarm as it now is: apply it like any alarm message.
            try:
                doc = parse_alarm(
                    ticket.site, ticket.gateway, ticket.alarm_id, json.dumps(result).encode()
                )
            except BadAlarm as exc:
                log.warning("%s: the reply's alarm document is unusable: %s", ticket.ticket_id, exc)
                return
            self._applied(self._store().apply_alarms([(doc, ticket.team)], time.time()))

    # ---- acknowledgements and ticket events out -------------------------------------

    def _send_acks(self) -> None:
        assert self.client is not None
        for req in self._store().claim_due_acks(time.time()):
            payload: dict[str, Any] = {"by": req.by, "note": req.note, "request_id": req.request_id}
            if self.cfg.signer is not None:
                # Signed afresh on every attempt: a new nonce, so a retry is not a replay.
                payload = self.cfg.signer.sign(
                    Identity(req.site, req.gateway), f"alarms/{req.alarm_id}/ack", payload
                )
            props = publish_properties(
                ResponseTopic=self.topics.reply_to(req.site, req.gateway),
                CorrelationData=req.request_id.encode(),
            )
            self.client.publish(
                self.topics.ack_command(req.site, req.gateway, req.alarm_id),
                json.dumps(payload, ensure_ascii=False),
                qos=1,
                properties=props,
            )
            log.info(
                "%s: sent acknowledgement %s by %s to %s/%s (attempt %d)",
                f"T-{req.ticket_number:06d}",
                req.request_id,
                req.by,
                req.site,
                req.gateway,
                req.attempts + 1,
            )

    def _publish_tickets(self) -> None:
        """Publish a slice of this worker's tickets whose newest state is not acknowledged.

        A slice, because a paho publish costs most of a millisecond here: publishing a
        burst's events in one go would hold up the next alarms by tens of ms.  Each
        worker publishes the tickets it changed, so several workers do not publish
        the same events; the leader takes over those of a worker that died first.
        """
        store = self._store()
        if self._published:
            store.mark_published(self._published)
            self._published = []
        if not self._events_connected or not self._mine:
            return
        looked = sorted(self._mine)[: 4 * EVENT_SLICE + len(self._in_flight)]
        tickets = store.unpublished_of(looked)
        self._mine -= set(looked) - {t.number for t in tickets}  # published already
        sent = 0
        for ticket in tickets:
            if self._in_flight.get(ticket.number, 0) >= ticket.version:
                continue
            info = self._publish_ticket(ticket)
            self._publishing[info.mid] = (ticket.number, ticket.version)
            self._in_flight[ticket.number] = ticket.version
            sent += 1
            if sent >= EVENT_SLICE:
                break

    def _publish_ticket(self, ticket: Ticket) -> mqtt.MQTTMessageInfo:
        assert self.events is not None
        body = json.dumps(ticket.event(), ensure_ascii=False, separators=(",", ":"))
        return self.events.publish(self.topics.ticket(ticket.ticket_id), body, qos=1, retain=True)
