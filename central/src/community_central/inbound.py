"""The ticket service's way in: alarms and replies applied in order, then acknowledged.

Runs in the service thread.  A message is acknowledged to the broker (PUBACK) only
after what it changes is committed, so a crash means a redelivery, never a loss.
"""

from __future__ import annotations

import json
import logging
import time

from .documents import AlarmDoc, BadAlarm, parse_alarm
from .servicestate import Message, ServiceState
from .store import Applied

__all__ = ["MAX_REPLY_BYTES", "Inbound"]

log = logging.getLogger("community_central.service")  # one name for all the service says

MAX_REPLY_BYTES = 256 * 1024


class Inbound(ServiceState):
    """Apply what comes in: alarm documents, gateways' replies and status."""

    def _flush_messages(self) -> None:
        """Apply the drained messages in order, alarms in one transaction per run.

        When the database fails (locked by a peer for longer than the timeout, disk
        full), the messages from the failed one on stay queued, unacknowledged, and are
        tried again a second later, in the same order.
        """
        if not self._pending or time.monotonic() < self._db_retry_at:
            return
        pending, self._pending = self._pending, []
        batch: list[tuple[Message, AlarmDoc | None]] = []
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

    def _classify(self, msg: Message) -> tuple[str, AlarmDoc | None]:
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

    def _commit(self, batch: list[tuple[Message, AlarmDoc | None]], *, reply: bool = False) -> bool:
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

    def _puback(self, msg: Message) -> None:
        """Acknowledge `msg` to the broker, on the connection it came on only.

        After a reconnect the broker sends an unacknowledged message again, and its old
        packet id may name another message.
        """
        assert self.client is not None
        if msg.qos > 0 and msg.connection == self._connection:
            self.client.ack(msg.mid, msg.qos)

    def _gateway_status(self, msg: Message) -> None:
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

    def _reply(self, msg: Message) -> None:
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
