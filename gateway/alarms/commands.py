"""The `alarms` command family: `cmd/alarms/{alarm_id}/ack` over MQTT.

The payload is checked with a pydantic model that mirrors protocol/community_protocol/schemas/alarm-ack.json
(tests/test_alarms_config.py checks both agree on a corpus of good and bad
payloads), so the runtime does not need jsonschema.  Every refusal says which field is
wrong and why; the router turns it into an error reply and a log line.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from community_protocol.topics import CommandPath
from gateway.mqtt.commands import Command, CommandFailed, Handler

from .engine import MAX_BY, MAX_NOTE, AlarmEngine, UnknownAlarm

__all__ = ["AckRequest", "alarms_handler", "parse_ack"]


class AckRequest(BaseModel):
    """The fields of an acknowledgement (request_id is taken off by the router)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    by: str = Field(min_length=1, max_length=MAX_BY)
    note: str = Field("", max_length=MAX_NOTE)


def _describe(err: Mapping[str, Any]) -> str:
    field = ".".join(str(p) for p in err["loc"]) or "payload"
    kind = err["type"]
    if kind == "missing":
        return f"field '{field}' required"
    if kind == "extra_forbidden":
        return f"unknown field '{field}' (an ack takes by, note, request_id)"
    if kind == "string_type":
        got = type(err.get("input")).__name__
        return f"field '{field}' must be a string, not {got}"
    if kind == "string_too_short":
        return f"field '{field}' must not be empty"
    if kind == "string_too_long":
        limit = err.get("ctx", {}).get("max_length")
        return f"field '{field}' is longer than {limit} characters"
    return f"field '{field}': {err['msg']}"


def parse_ack(args: Mapping[str, Any]) -> AckRequest:
    """The acknowledgement in a command's arguments, or CommandFailed naming every problem."""
    try:
        return AckRequest.model_validate(dict(args))
    except ValidationError as exc:
        problems = "; ".join(_describe(e) for e in exc.errors())
        raise CommandFailed(f"malformed ack: {problems}") from None


def alarms_handler(engine: AlarmEngine) -> Handler:
    """The router handler of `alarms/...` for this engine."""

    async def handle(cmd: Command) -> tuple[str, Any]:
        if len(cmd.parts) != 3 or cmd.parts[2] != "ack":
            raise CommandFailed(f"alarm commands are {CommandPath.ALARM_ACK_FORM}")
        alarm_id = cmd.parts[1]
        request = parse_ack(cmd.args)
        try:
            outcome = await engine.acknowledge(
                alarm_id, by=request.by, note=request.note, via="mqtt"
            )
        except UnknownAlarm:
            shown = alarm_id if len(alarm_id) <= 64 else alarm_id[:64] + "..."
            raise CommandFailed(f"unknown alarm {shown!r} on this gateway") from None
        except ValueError as exc:
            raise CommandFailed(f"malformed ack: {exc}") from None
        return outcome.status, outcome.alarm

    return handle
