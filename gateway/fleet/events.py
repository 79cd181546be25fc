"""The audit events of fleet operations: a `gateway.config` or `gateway.update` event as an outbox item."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from functools import partial
from typing import Any

from community_protocol.enums import GatewayEventType
from gateway.host import Host
from gateway.sdk.model import Priority, encode_gateway_event
from gateway.storage.outbox import OutboxItem

__all__ = ["gateway_event"]


def gateway_event(host: Host, event_type: GatewayEventType, data: Mapping[str, Any]) -> OutboxItem:
    """An event of the gateway itself on its events topic, stamped now, numbered by the outbox."""
    return OutboxItem(
        priority=Priority.EVENT,
        channel="events",
        device_kind="gateway",
        topic=host.topics.gateway_events,
        build_payload=partial(_encode, host, event_type, dict(data), datetime.now(UTC)),
    )


def _encode(
    host: Host, event_type: GatewayEventType, data: dict[str, Any], ts: datetime, seq: int
) -> bytes:
    clock = host.clock
    return encode_gateway_event(
        str(event_type),
        data,
        host.config.identity,
        seq,
        clock.state(),
        ts,
        uptime_ms=clock.uptime_ms(),
        boot_id=clock.boot_id,
    )
