"""The health message: outbox, uplink, commands and drivers, as the platform monitors them."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from community_protocol.names import SchemaName, schema_ref
from gateway.mqtt.uplink import CONSUMER, Uplink
from gateway.sdk.clock import Clock
from gateway.sdk.driver import Driver
from gateway.sdk.model import Identity, format_ts
from gateway.storage.outbox import Outbox

__all__ = ["build_health"]


def build_health(
    identity: Identity,
    clock: Clock,
    outbox: Outbox,
    uplink: Uplink,
    drivers: Mapping[str, Driver],
) -> dict[str, Any]:
    """The health message's document, without the parts features add (`Hooks.health_parts`)."""
    s = outbox.stats()
    doc: dict[str, Any] = {
        "schema": schema_ref(SchemaName.HEALTH),
        "site": identity.site,
        "gateway": identity.gateway,
        "ts": format_ts(datetime.now(UTC)),
        "session": uplink.session,
        # Host uptime on the same clock as an unsynced message's uptime_ms, so the
        # platform can place such messages once a synced health message arrives.
        "uptime_s": round(clock.uptime_ms() / 1000, 1),
        "boot_id": clock.boot_id,
        "clock": str(clock.state()),
        "outbox": {
            "depth": s.depth,
            "depth_events": s.depth_events,
            "depth_telemetry": s.depth_telemetry,
            "oldest_age_s": None if s.oldest_age_s is None else round(s.oldest_age_s, 1),
            "dropped_telemetry": s.dropped_telemetry,
            "accepted_total": s.accepted_total,
            "commits_total": s.commits_total,
            "bytes_written_per_hour": round(s.bytes_written_per_hour),
            "disk_write_bytes_per_hour": None
            if s.disk_write_bytes_per_hour is None
            else round(s.disk_write_bytes_per_hour),
            "queued": s.queued,
            "lowest_seq": s.lowest_seq[CONSUMER],
            "free_bytes": s.free_bytes,
            "reserve_bytes": s.reserve_bytes,
            "unstored_events": s.unstored_events,
        },
        "publish": uplink.stats().as_dict(),
        "commands": uplink.gate.stats(),
        "drivers": {name: d.health().as_dict() for name, d in drivers.items()},
    }
    return doc
