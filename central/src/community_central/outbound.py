"""The ticket service's way out: acknowledgements to gateways, ticket events to staff.

Runs in the service thread.  Ticket events go out on the second connection (`events`),
a slice at a time, so a burst of events does not hold up the next alarms.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import paho.mqtt.client as mqtt

from .broker import publish_properties
from .contract import Identity
from .servicestate import ServiceState
from .store import Ticket

__all__ = ["EVENT_SLICE", "Outbound"]

log = logging.getLogger("community_central.service")  # one name for all the service says

EVENT_SLICE = 10  # ticket events published between two looks at the incoming alarms


class Outbound(ServiceState):
    """Send what is due: acknowledgements, then this worker's unpublished ticket events."""

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
