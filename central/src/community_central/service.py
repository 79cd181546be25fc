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

Code: this module has the threads, the connections and the leader's duties;
inbound.py applies what comes in, outbound.py sends what goes out, servicestate.py
holds the config and the state they share.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import replace
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from .broker import (
    build_client,
    refused_credentials,
    stop_loop,
)
from .inbound import Inbound
from .outbound import Outbound
from .servicestate import Message, ServiceConfig
from .store import TicketStore

__all__ = ["ServiceConfig", "TicketService"]

log = logging.getLogger(__name__)

DUTY_S = 1.0  # heartbeat, leadership and the leader's checks, this often
DEAD_AFTER_S = 3.0  # a worker silent this long has stopped (or hangs)
# While a worker of the group is stopped, the broker keeps queueing a share of the
# alarms in its session: the leader reads the retained alarms this often meanwhile.
ORPHAN_RECONCILE_S = 5.0
CLIENT_STOP_S = 2.0  # a paho thread that takes longer to stop is left to the exit


class TicketService(Inbound, Outbound):
    """One instance of the reference ticket service; `run` until `stop` is set."""

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
        message = Message(
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
