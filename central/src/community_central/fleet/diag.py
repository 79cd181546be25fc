"""Remote diagnostics from central: one signed `cmd/diag/...` request, its reply awaited.

The gateway answers only requests signed by a fleet key (its `security.config_keys`;
docs/fleet.md, "Remote diagnostics"): the operator's key file signs the request here,
so nobody hand-signs a payload.  The request goes with an MQTT 5 response topic in the
gateway's subtree; a gateway on MQTT 3.1.1 answers on `reply/diag/...`, so both are
heard and the reply is matched by `request_id`.  A reply that does not follow the
contract (command-reply.json) is an error, not something to print half-understood.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from jsonschema import ValidationError

from community_protocol.documents import dumps, format_ts
from community_protocol.ed25519 import CommandSigner
from community_protocol.ids import Identity
from community_protocol.schemas import validator
from community_protocol.topics import CommandPath, Topics

from ..broker import BrokerSettings, publish_properties
from .link import FleetLink

__all__ = ["DIAG_WAIT_S", "DiagError", "diag_fields", "diagnose", "render"]

# The gateway allows a check 30 s (device reads included); the rest answer at once.
DIAG_WAIT_S = 45.0


class DiagError(RuntimeError):
    """No usable reply: none in time, or one that breaks the contract (one line)."""


def diag_fields(
    command: str,
    *,
    lines: int | None = None,
    level: str | None = None,
    device: str | None = None,
    driver: str | None = None,
    devices: bool | None = None,
    by: str | None = None,
) -> tuple[str, dict[str, Any]]:
    """The command path (`CommandPath.DIAG_*`) and the request's arguments, checked.

    ValueError names the argument the request schema refuses.
    """
    path = f"{CommandPath.DIAG}/{command}"
    if path not in CommandPath.DIAG_COMMANDS:
        names = ", ".join(p.split("/", 1)[1] for p in CommandPath.DIAG_COMMANDS)
        raise ValueError(f"unknown diagnostics command {command!r} (known: {names})")
    given = {"lines": lines, "level": level, "device": device, "driver": driver,
             "devices": devices, "by": by}  # fmt: skip
    fields = {k: v for k, v in given.items() if v is not None}
    # Validated with a placeholder signature: the shape is the contract's, not ours.
    probe = {**fields, "auth": {"key_id": "0" * 16, "issued_at": format_ts(datetime.now(UTC)),
                                "nonce": "x" * 24, "sig": "A" * 88}}  # fmt: skip
    error = next(iter(validator("command-request", "diag").iter_errors(probe)), None)
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "request"
        raise ValueError(f"{where}: {error.message}")
    return path, fields


def diagnose(
    broker: BrokerSettings,
    identity: Identity,
    path: str,
    fields: Mapping[str, Any],
    signer: CommandSigner,
    *,
    wait_s: float = DIAG_WAIT_S,
) -> dict[str, Any]:
    """Send one signed diagnostics request to `identity`; its reply, checked against the schema.

    A refusal (`ok` false: unauthorized, busy, error) is a reply like any other; the
    caller reads `ok` and `status`.  DiagError when none comes within `wait_s`.
    """
    topics = Topics(broker.prefix, identity)
    request_id = uuid.uuid4().hex
    # Stale once we stop waiting: a gateway offline now must not run it later.
    expires = format_ts(datetime.now(UTC) + timedelta(seconds=wait_s))
    payload = signer.sign(identity, path, {**fields, "request_id": request_id, "expires": expires})
    deadline = time.monotonic() + wait_s
    with FleetLink(broker) as link:
        mine = topics.central_reply(link.client_id)
        link.subscribe(mine, topics.reply(path))
        link.publish(
            topics.command(path),
            dumps(payload),
            retain=False,
            properties=publish_properties(ResponseTopic=mine, CorrelationData=request_id.encode()),
        )
        while (msg := link.receive(deadline)) is not None:
            reply = _reply_of(msg.payload, request_id)
            if reply is not None:
                _check(reply, path)
                return reply
    raise DiagError(
        f"no reply from {identity.site}/{identity.gateway} to {path} within {wait_s:g} s"
        " (is it online? `community-central fleet list` shows its state)"
    )


def _reply_of(payload: bytes, request_id: str) -> dict[str, Any] | None:
    try:
        reply = json.loads(payload)
    except ValueError:
        return None
    if isinstance(reply, dict) and reply.get("request_id") == request_id:
        return reply
    return None


def _check(reply: dict[str, Any], path: str) -> None:
    try:
        validator("command-reply").validate(reply)
        if reply.get("ok") is True:
            name = f"{path.replace('/', '_')}_result"
            validator("command-reply", name).validate(reply.get("result"))
    except ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "reply"
        raise DiagError(
            f"the reply to {path} breaks the contract at {where}: {exc.message}"
        ) from exc


def render(reply: Mapping[str, Any]) -> list[str]:
    """The reply as lines for a person: a check's results, the log lines, or key: value."""
    if reply.get("ok") is not True:
        return [f"{reply.get('status', 'error')}: {reply.get('error', '')}"]
    result = reply["result"]
    command = reply.get("command")
    if command == CommandPath.DIAG_LOGS:
        out = list(result["lines"])
        if result["truncated"] or result["dropped"]:
            out.append(f"({len(out)} of {result['held']} lines held; {result['dropped']} dropped)")
        return out
    if command == CommandPath.DIAG_CHECK:
        out = list(result["problems"])
        for r in result["results"]:
            out.append(f"{r['status']:4} {r['name']}: {r['detail']}")
            if r.get("hint"):
                out.append(f"     hint: {r['hint']}")
        if result["omitted"]:
            out.append(f"({result['omitted']} more results left out)")
        out.append("all checks passed" if result["ok"] else "a check failed")
        return out
    return list(_flat(result))


def _flat(value: Any, key: str = "") -> list[str]:
    if isinstance(value, Mapping) and value:
        return [line for k, v in value.items() for line in _flat(v, f"{key}.{k}" if key else k)]
    shown = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return [f"{key}: {shown}" if key else str(shown)]
