"""The gateway's retained state documents: its status (birth, will, goodbye), availability.

Built here, published by the uplink (retained, QoS 1); the document shapes themselves
are the protocol package's.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from community_protocol.documents import availability_document, status_document
from community_protocol.enums import AvailabilityState, GatewayState
from gateway import __version__
from gateway.sdk.model import ClockState, DeviceRef, Identity

__all__ = ["StateDocs"]


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
