"""The gateway's retained state documents: its status (birth, will, goodbye), availability.

Built here, published by the uplink (retained, QoS 1); the document shapes themselves
are the protocol package's.  `FeatureDocuments` holds the retained documents features
publish (remote configuration's report) and the topics they watch.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

import paho.mqtt.client as mqtt

from community_protocol.documents import availability_document, status_document
from community_protocol.enums import AvailabilityState, GatewayState
from gateway import __version__
from gateway.sdk.model import ClockState, DeviceRef, Identity

__all__ = ["FeatureDocuments", "StateDocs"]

log = logging.getLogger("gateway.mqtt.uplink")


class _Publish(Protocol):
    def __call__(
        self, topic: str, doc: dict[str, Any] | bytes, *, qos: int, retain: bool
    ) -> None: ...


class FeatureDocuments:
    """Features' retained documents and watched topics; used in the uplink thread only.

    `watches` is filled before the uplink starts: topic -> a callable given each
    payload on it (in the uplink thread; it must not block).
    """

    def __init__(self) -> None:
        self.watches: dict[str, Callable[[bytes], None]] = {}
        self._documents: dict[str, bytes] = {}

    def keep(self, topic: str, payload: bytes, publish: _Publish) -> None:
        """Remember the latest `payload` of `topic` and publish it (when connected)."""
        self._documents[topic] = payload
        publish(topic, payload, qos=1, retain=True)

    def connected(self, client: mqtt.Client, publish: _Publish) -> None:
        """After the birth: subscribe to the watched topics, publish every document again."""
        for topic in self.watches:
            client.subscribe(topic, qos=1)
        for topic, payload in self._documents.items():
            publish(topic, payload, qos=1, retain=True)

    def watched(self, msg: mqtt.MQTTMessage) -> bool:
        """Hand `msg` to its watcher; False when nobody watches its topic."""
        watcher = self.watches.get(msg.topic)
        if watcher is None:
            return False
        try:
            watcher(bytes(msg.payload))
        except Exception:  # a feature's bug must not end the uplink thread
            log.exception("watcher of %s failed", msg.topic)
        return True


class StateDocs:
    """Builds the status and availability documents of one gateway run."""

    def __init__(
        self, identity: Identity, started: datetime, clock: Callable[[], ClockState]
    ) -> None:
        self.identity = identity
        self.started = started
        # Whether the wall clock is synced now (gateway.sdk.clock.Clock.state): documents
        # say it beside their timestamps, as telemetry and events do.
        self.clock = clock
        self.started_clock = clock()

    def status(self, state: str, session: int, reason: str = "") -> bytes:
        """The status payload: `online`, or `offline` for the last will and the goodbye."""
        doc = status_document(
            GatewayState(state),
            session=session,
            identity=self.identity,
            version=__version__,
            started=self.started,
            ts=datetime.now(UTC),
            clock=_both(self.started_clock, self.clock()),
            reason=reason,
        )
        return json.dumps(doc).encode()

    def availability(
        self,
        device: DeviceRef,
        online: bool | None,
        reason: str,
        *,
        session: int,
        ts: datetime,
        clock: ClockState,
    ) -> dict[str, Any]:
        """A device's availability document; `online` None is unknown, not offline."""
        state = (
            AvailabilityState.UNKNOWN
            if online is None
            else AvailabilityState.ONLINE
            if online
            else AvailabilityState.OFFLINE
        )
        return availability_document(
            state,
            reason=reason,
            session=session,
            identity=self.identity,
            device=device.as_dict(),
            ts=ts,
            clock=clock,
        )


def _both(a: ClockState, b: ClockState) -> ClockState:
    """Synced only when both timestamps of a document were taken with a synced clock."""
    return ClockState.SYNCED if a is b is ClockState.SYNCED else ClockState.UNSYNCED
