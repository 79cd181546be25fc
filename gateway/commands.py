"""Commands received on `{prefix}/{site}/{gateway}/cmd/...`: parsing, routing, replies.

A command is a JSON object, optionally with a `request_id`.  Handlers are registered by
the first path segment (`ping`, `devices`, later `alarms`), so a new command family
slots in without touching the router.  Every reply, good or bad, has the same shape
(gateway/schemas/command-reply.json); a malformed command gets an error reply that says
what is wrong, and a log line, never an exception out of here.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Command", "CommandFailed", "CommandRouter", "Handler"]

log = logging.getLogger(__name__)


class CommandFailed(Exception):
    """A handler refuses a command; the text goes into the reply's `error`."""

    def __init__(self, message: str, status: str = "error") -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class Command:
    """One parsed command: its path below cmd/, split, and its JSON arguments."""

    path: str
    parts: tuple[str, ...]
    args: Mapping[str, Any]
    request_id: str | None


# A handler returns (status, result); raising CommandFailed gives an error reply.
Handler = Callable[[Command], Awaitable[tuple[str, Any]]]


def _reply(
    path: str, request_id: str | None, ok: bool, status: str, **extra: Any
) -> dict[str, Any]:
    return {
        "schema": {"name": "community.reply", "version": 1},
        "request_id": request_id,
        "command": path,
        "ok": ok,
        "status": status,
        **extra,
    }


class CommandRouter:
    """Parses a command payload and runs the handler registered for its first segment."""

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}

    def register(self, head: str, handler: Handler) -> None:
        if head in self._handlers:
            raise ValueError(f"command family {head!r} is registered twice")
        self._handlers[head] = handler

    def parse(self, path: str, payload: bytes) -> Command:
        """The command in `payload`, or CommandFailed saying exactly what is wrong."""
        parts = tuple(path.split("/"))
        if not path or any(not p for p in parts):
            raise CommandFailed(f"command path {path!r} has an empty level")
        if payload.strip() in (b"", b"{}"):
            return Command(path, parts, {}, None)
        try:
            args = json.loads(payload)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CommandFailed(f"payload is not JSON: {exc}") from exc
        if not isinstance(args, dict):
            raise CommandFailed(f"payload must be a JSON object, not {type(args).__name__}")
        request_id = args.pop("request_id", None)
        # Same bounds as command-request.json: an empty id could not be matched to a reply.
        if request_id is not None and (
            not isinstance(request_id, str) or not 1 <= len(request_id) <= 64
        ):
            raise CommandFailed("field 'request_id' must be a string of 1 to 64 characters")
        return Command(path, parts, args, request_id)

    async def handle(self, path: str, payload: bytes) -> dict[str, Any]:
        """Run one command; always returns a reply document."""
        request_id: str | None = None
        try:
            cmd = self.parse(path, payload)
            request_id = cmd.request_id
            handler = self._handlers.get(cmd.parts[0])
            if handler is None:
                known = ", ".join(sorted(self._handlers)) or "none"
                raise CommandFailed(f"unknown command {path!r} (known: {known})")
            status, result = await handler(cmd)
        except CommandFailed as exc:
            log.warning("command %s refused: %s", path, exc)
            return _reply(path, request_id, False, exc.status, error=str(exc))
        except Exception as exc:  # a handler bug must not take the gateway down
            log.exception("command %s failed", path)
            return _reply(path, request_id, False, "error", error=f"internal error: {exc}")
        doc = _reply(path, request_id, True, status)
        if result is not None:
            doc["result"] = result
        return doc
