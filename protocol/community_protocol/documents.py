"""Builders of the documents both sides exchange: one function per shape, no hand-built dicts.

Each returns a plain dict ready for `json.dumps` (or bytes where noted) that passes its
JSON Schema; tests/test_protocol.py validates every builder's output.  Timestamps are
RFC 3339 UTC with milliseconds (`format_ts`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from .enums import AvailabilityState, ClockState, ConfigResult, GatewayState
from .ids import Identity
from .names import SchemaName, schema_ref

__all__ = [
    "availability_document",
    "config_desired_document",
    "config_reported_document",
    "dumps",
    "envelope",
    "format_ts",
    "reply_document",
    "status_document",
]


def format_ts(ts: datetime) -> str:
    """RFC 3339 in UTC with milliseconds, e.g. 2026-11-26T23:58:21.123Z."""
    utc = ts.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def dumps(doc: Mapping[str, Any]) -> bytes:
    """Compact UTF-8 JSON; NaN and infinity refused (they are not JSON)."""
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def envelope(
    name: SchemaName,
    msg_id: str,
    seq: int,
    ts: datetime,
    clock: ClockState,
    identity: Identity,
    *,
    uptime_ms: int | None = None,
    boot_id: str | None = None,
) -> dict[str, Any]:
    """The envelope fields of a data message (telemetry, event, gateway event).

    `uptime_ms` and `boot_id` go in only while the clock is unsynchronised: the
    platform places such messages in time once a synchronised one of the same boot
    arrives, instead of trusting a wall clock that may say 1970.
    """
    doc: dict[str, Any] = {
        "schema": schema_ref(name),
        "msg_id": msg_id,
        "seq": seq,
        "ts": format_ts(ts),
        "clock": str(clock),
        "site": identity.site,
        "gateway": identity.gateway,
    }
    if clock is ClockState.UNSYNCED:
        if uptime_ms is not None:
            doc["uptime_ms"] = uptime_ms
        if boot_id is not None:
            doc["boot_id"] = boot_id
    return doc


def reply_document(
    path: str, request_id: str | None, ok: bool, status: str, **extra: Any
) -> dict[str, Any]:
    """A command-reply.json document without its `ts` and `clock` (added when it is sent).

    `extra` holds `error` (exactly when not ok) and `result`.
    """
    return {
        "schema": schema_ref(SchemaName.REPLY),
        "request_id": request_id,
        "command": path,
        "ok": ok,
        "status": status,
        **extra,
    }


def status_document(
    state: GatewayState,
    *,
    session: int,
    identity: Identity,
    version: str,
    started: datetime,
    ts: datetime,
    clock: ClockState,
    reason: str = "",
) -> dict[str, Any]:
    """A gateway's retained status (status.json); the offline form is its last will."""
    doc: dict[str, Any] = {
        "schema": schema_ref(SchemaName.STATUS),
        "state": str(state),
        "session": session,
        "site": identity.site,
        "gateway": identity.gateway,
        "version": version,
        "started": format_ts(started),
        "ts": format_ts(ts),
        "clock": str(clock),
    }
    if reason:
        doc["reason"] = reason
    return doc


def availability_document(
    state: AvailabilityState,
    *,
    reason: str,
    session: int,
    identity: Identity,
    device: Mapping[str, Any],
    ts: datetime,
    clock: ClockState,
) -> dict[str, Any]:
    """Whether the gateway reaches a device (availability.json), retained per device."""
    return {
        "schema": schema_ref(SchemaName.AVAILABILITY),
        "state": str(state),
        "reason": reason,
        "session": session,
        "site": identity.site,
        "gateway": identity.gateway,
        "device": dict(device),
        "ts": format_ts(ts),
        "clock": str(clock),
    }


def config_desired_document(
    identity: Identity,
    *,
    version: int,
    config: Mapping[str, Any],
    signed_by: str,
    issued_at: datetime,
) -> dict[str, Any]:
    """A desired configuration (config-desired.json) without its `auth`: sign it next."""
    return {
        "schema": schema_ref(SchemaName.CONFIG_DESIRED),
        "site": identity.site,
        "gateway": identity.gateway,
        "version": version,
        "issued_at": format_ts(issued_at),
        "signed_by": signed_by,
        "config": dict(config),
    }


def config_reported_document(
    identity: Identity,
    *,
    version: int,
    sha256: str,
    applied_at: str | None,
    signed_by: str | None,
    result: ConfigResult,
    desired_version: int | None,
    previous_version: int | None,
    problems: list[dict[str, str]],
    ts: datetime,
    clock: ClockState,
    reason: str = "",
) -> dict[str, Any]:
    """What the gateway runs and how the last desired configuration went (config-reported.json)."""
    doc: dict[str, Any] = {
        "schema": schema_ref(SchemaName.CONFIG_REPORTED),
        "site": identity.site,
        "gateway": identity.gateway,
        "ts": format_ts(ts),
        "clock": str(clock),
        "version": version,
        "sha256": sha256,
        "applied_at": applied_at,
        "signed_by": signed_by,
        "result": str(result),
        "desired_version": desired_version,
        "previous_version": previous_version,
        "problems": problems[:100],
    }
    if reason:
        doc["reason"] = reason
    return doc
