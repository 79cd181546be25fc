"""Commands received on `{prefix}/{site}/{gateway}/cmd/...`: admission, parsing, routing.

A command is a JSON object, optionally with a `request_id` and an `expires` time.
Handlers are registered by the first path segment (`ping`, `devices`, `alarms`), so a
new command family slots in without touching the router.  Every reply, good or bad, has
the same shape (protocol/community_protocol/schemas/command-reply.json); a malformed command gets an error
reply that says what is wrong, never an exception out of here.

Commands cost the gateway work that telemetry and alarms must not wait for, so the
uplink admits them through a `CommandGate` first: a per-gateway rate (token bucket) and
a bound on commands being handled at once.  A command over the rate is answered `busy`
while the refusals themselves stay within the same rate; beyond that, and when the
queue is full, it is dropped and counted (health `commands`).  Refusals are logged as a
count once per interval, so a flood cannot fill the disk with log lines either.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any

from community_protocol.documents import reply_document as reply_doc
from gateway.sdk.model import format_ts

__all__ = [
    "MAX_DEPTH",
    "Admission",
    "Command",
    "CommandFailed",
    "CommandGate",
    "CommandRouter",
    "Guard",
    "Handler",
    "Throttled",
    "reply_doc",
]

log = logging.getLogger(__name__)

# JSON nesting allowed in a command: real commands nest two or three levels; a 64 KiB
# payload of brackets nests 30,000 deep and would exhaust Python's recursion limit.
MAX_DEPTH = 32


class CommandFailed(Exception):
    """A handler refuses a command; the text goes into the reply's `error`."""

    def __init__(self, message: str, status: str = "error") -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class Command:
    """One parsed command: its path below cmd/, split, its JSON arguments, when it expires."""

    path: str
    parts: tuple[str, ...]
    args: Mapping[str, Any]
    request_id: str | None
    expires: datetime | None = None
    # `auth` of a signed command, and every other field as received (what it signs);
    # checked by the router's guard (gateway/security/signing.py), unseen by handlers.
    auth: Any = None
    signed: Mapping[str, Any] | None = None


# A handler returns (status, result); raising CommandFailed gives an error reply.
Handler = Callable[[Command], Awaitable[tuple[str, Any]]]
# Runs before any handler; raises CommandFailed for a command that must not run.
Guard = Callable[[Command], None]


class Throttled:
    """Warnings of one kind, at most `budget` lines per interval; the rest only counted.

    Ordinary use logs every line; a flood logs `budget` lines a minute, and the next
    line logged says how many were left out.
    """

    def __init__(self, logger: logging.Logger, interval_s: float = 60.0, budget: int = 20) -> None:
        self._log = logger
        self._interval = interval_s
        self._budget = budget
        self._window = -math.inf
        self._logged = 0
        self._suppressed = 0

    def warning(self, msg: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._window >= self._interval:
            self._window, self._logged = now, 0
        if self._logged >= self._budget:
            self._suppressed += 1
            return
        self._logged += 1
        if self._suppressed:
            msg += f" ({self._suppressed} more like it were not logged)"
            self._suppressed = 0
        self._log.warning(msg, *args)


def _depth(value: Any, limit: int) -> bool:
    """Whether `value` nests no deeper than `limit`; iterative, so any depth is safe."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            if level > limit:
                return False
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, level + 1) for child in children if isinstance(child, dict | list))
    return True


def _expires(value: Any) -> datetime:
    """The time in a command's `expires`, or CommandFailed."""
    moment = None
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            moment = datetime.fromisoformat(value)
    if moment is None or moment.tzinfo is None:
        raise CommandFailed("field 'expires' must be an RFC 3339 time with a time zone")
    return moment


class CommandRouter:
    """Parses a command payload and runs the handler registered for its first segment.

    `now` gives the current time when the gateway's clock is synced, else None; an
    `expires` in a command is only judged by a synced clock (an unsynced one could be
    years off and refuse everything, or nothing).
    """

    def __init__(
        self, *, now: Callable[[], datetime | None] = lambda: None, timeout_s: float = 30.0
    ) -> None:
        self._handlers: dict[str, Handler] = {}
        self._now = now
        self.timeout_s = timeout_s
        self._refusals = Throttled(log)
        self.guard: Guard | None = None

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
        except RecursionError as exc:  # the C parser's own limit, below ours only rarely
            raise CommandFailed(f"payload nests deeper than {MAX_DEPTH} levels") from exc
        if not isinstance(args, dict):
            raise CommandFailed(f"payload must be a JSON object, not {type(args).__name__}")
        if not _depth(args, MAX_DEPTH):
            raise CommandFailed(f"payload nests deeper than {MAX_DEPTH} levels")
        auth = args.pop("auth", None)
        signed = dict(args)
        request_id = args.pop("request_id", None)
        # Same bounds as command-request.json: an empty id could not be matched to a reply.
        if request_id is not None and (
            not isinstance(request_id, str) or not 1 <= len(request_id) <= 64
        ):
            raise CommandFailed("field 'request_id' must be a string of 1 to 64 characters")
        expires = _expires(args.pop("expires")) if "expires" in args else None
        return Command(path, parts, args, request_id, expires, auth, signed)

    async def handle(self, path: str, payload: bytes) -> dict[str, Any]:
        """Run one command; always returns a reply document."""
        request_id: str | None = None
        try:
            cmd = self.parse(path, payload)
            request_id = cmd.request_id
            if self.guard is not None:
                self.guard(cmd)
            now = self._now()
            if cmd.expires is not None and now is not None and now >= cmd.expires:
                raise CommandFailed(
                    f"command expired at {format_ts(cmd.expires)}; not run", status="expired"
                )
            handler = self._handlers.get(cmd.parts[0])
            if handler is None:
                known = ", ".join(sorted(self._handlers)) or "none"
                raise CommandFailed(f"unknown command {path!r} (known: {known})")
            try:
                async with asyncio.timeout(self.timeout_s):
                    status, result = await handler(cmd)
            except TimeoutError as exc:
                # A handler that hangs would hold its place in the command queue for good.
                raise CommandFailed(f"no result within {self.timeout_s:g} s") from exc
        except CommandFailed as exc:
            self._refusals.warning("command %s refused: %s", path[:200], exc)
            return reply_doc(path, request_id, False, exc.status, error=str(exc))
        except Exception as exc:  # a handler bug must not take the gateway down
            log.exception("command %s failed", path)
            return reply_doc(path, request_id, False, "error", error=f"internal error: {exc}")
        doc = reply_doc(path, request_id, True, status)
        if result is not None:
            doc["result"] = result
        return doc


class Admission(Enum):
    """What the gate does with one arriving command."""

    RUN = "run"
    BUSY = "busy"  # answered with a short refusal, not run
    DROP = "drop"  # not answered: even refusals are over the rate, or the queue is full


class CommandGate:
    """A per-gateway command rate and a bound on commands in progress; not thread-safe.

    Tokens refill at `rate_per_s` up to `burst`.  A command takes a token and a queue
    place; without a token it is refused `busy` while refusals stay within the same
    rate (their own bucket), else dropped; with a full queue it is dropped.  Used by
    the uplink thread only.
    """

    def __init__(
        self,
        rate_per_s: float = 20.0,
        burst: int = 40,
        max_pending: int = 64,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate, self.burst, self.max_pending = rate_per_s, burst, max_pending
        self._clock = clock
        self._tokens = float(burst)
        self._refusal_tokens = float(burst)
        self._at = clock()
        self.pending = 0
        self.run_total = 0
        self.busy_total = 0
        self.dropped_total = 0
        self._log = Throttled(log, budget=1)

    def _refill(self) -> None:
        now = self._clock()
        gained = (now - self._at) * self.rate
        self._at = now
        self._tokens = min(float(self.burst), self._tokens + gained)
        self._refusal_tokens = min(float(self.burst), self._refusal_tokens + gained)

    def admit(self) -> Admission:
        """Decide about one arriving command; RUN takes a queue place until `done()`."""
        self._refill()
        if self.pending >= self.max_pending:
            verdict = Admission.DROP
        elif self._tokens >= 1:
            self._tokens -= 1
            self.pending += 1
            self.run_total += 1
            return Admission.RUN
        elif self._refusal_tokens >= 1:
            self._refusal_tokens -= 1
            verdict = Admission.BUSY
        else:
            verdict = Admission.DROP
        if verdict is Admission.BUSY:
            self.busy_total += 1
        else:
            self.dropped_total += 1
        self._log.warning(
            "commands arrive faster than %g/s or more than %d at once: refusing or dropping"
            " them (%d refused, %d dropped so far)",
            self.rate,
            self.max_pending,
            self.busy_total,
            self.dropped_total,
        )
        return verdict

    def done(self) -> None:
        """An admitted command has been answered: its queue place is free."""
        self.pending = max(0, self.pending - 1)

    def stats(self) -> dict[str, int]:
        """The health message's `commands` figures."""
        return {
            "run_total": self.run_total,
            "busy_total": self.busy_total,
            "dropped_total": self.dropped_total,
            "pending": self.pending,
        }
