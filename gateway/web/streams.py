"""Server-sent event streams of the console and the kiosk: a snapshot, each change, heartbeats.

Open streams are capped per client and in total per screen (`web.limits`): a stream
holds a connection for as long as the page is open, so the caps keep a LAN client
from holding every file descriptor.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime
from enum import Enum
from typing import Any

from aiohttp import web

from gateway.sdk.model import format_ts
from gateway.web.guard import Caps, RefusalLog
from gateway.web.settings import WebConfig

__all__ = ["HEARTBEAT_S", "SSE_HEADERS", "EventStreams", "session_ended", "sse"]

HEARTBEAT_S = 15.0
_GONE_CHECK_S = 1.0
SSE_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-store",
    "X-Accel-Buffering": "no",
}


class EventStreams:
    """The event streams of the web's screens (`console`, `kiosk`), within their caps."""

    def __init__(self, cfg: WebConfig) -> None:
        caps = cfg.limits
        self.caps = {
            "console": Caps(caps.streams_per_client, caps.streams_total),
            "kiosk": Caps(caps.streams_per_client, caps.streams_total),
        }
        self.refusals = RefusalLog("event streams", caps.log_every_s)

    async def open(
        self,
        request: web.Request,
        screen: str,
        hub: Any,
        first_event: str,
        first: Callable[[], Any],
        transform: Callable[[Any], Any] = lambda data: data,
        ended: Callable[[], str | None] = lambda: None,
        heartbeat_s: float = HEARTBEAT_S,
    ) -> web.StreamResponse:
        """Server-sent events: a snapshot first, then each change, and a heartbeat.

        `ended` is asked before each write; a reason it gives is sent as the last event
        (`session-ended`), so the page knows to sign in instead of reconnecting.
        """
        caps = self.caps[screen]
        client = request.remote or "?"
        why = caps.acquire(client)
        if why is not None:
            # Before anything is prepared or subscribed: the refusal costs one short reply,
            # and the connection closes so its file descriptor is free at once.
            self.refusals.refused(client, f"{why} cap of {screen} streams reached")
            cls = web.HTTPTooManyRequests if why == "client" else web.HTTPServiceUnavailable
            raise cls(
                text=f"{cls.status_code}: too many open event streams; retry later",
                headers={"Retry-After": "30", "Connection": "close"},
            )
        try:
            return await self._held(request, hub, first_event, first, transform, ended, heartbeat_s)
        finally:
            caps.release(client)

    async def _held(
        self,
        request: web.Request,
        hub: Any,
        first_event: str,
        first: Callable[[], Any],
        transform: Callable[[Any], Any],
        ended: Callable[[], str | None],
        heartbeat_s: float,
    ) -> web.StreamResponse:
        resp = web.StreamResponse(headers=SSE_HEADERS)
        await resp.prepare(request)
        q = hub.subscribe()
        try:
            await resp.write(b"retry: 5000\n\n" + sse(first_event, transform(first())))
            while True:
                reason = ended()
                if reason is not None:
                    await resp.write(session_ended(reason))
                    break
                item = await _next_or_gone(request, q, heartbeat_s)
                if item is _Tick.GONE:  # the client went away: give its place back now
                    break
                if item is _Tick.BEAT:
                    # An event, not a comment: the page can see it and know it is live.
                    await resp.write(sse("ping", {"now": format_ts(datetime.now(UTC))}))
                    continue
                if item is None:  # gateway stopping, or the client fell behind
                    break
                event, data = item
                if event != "recheck":  # only wakes the streams to ask `ended` again
                    await resp.write(sse(event, transform(data)))
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            hub.unsubscribe(q)
        return resp


class _Tick(Enum):
    BEAT = "beat"
    GONE = "gone"


async def _next_or_gone(
    request: web.Request, q: asyncio.Queue[tuple[str, Any] | None], heartbeat_s: float
) -> tuple[str, Any] | _Tick | None:
    """The hub's next item; BEAT when a heartbeat is due; GONE when the client left.

    A closed connection is seen only when written to, so it is looked at every second:
    a stream's place under the caps is free a second after its client left, not at the
    next heartbeat.
    """
    loop = asyncio.get_running_loop()
    due = loop.time() + heartbeat_s
    while True:
        transport = request.transport
        if transport is None or transport.is_closing():
            return _Tick.GONE
        left = due - loop.time()
        if left <= 0:
            return _Tick.BEAT
        try:
            async with asyncio.timeout(min(left, _GONE_CHECK_S)):
                return await q.get()
        except TimeoutError:
            continue


def session_ended(reason: str) -> bytes:
    """The last event of a console stream whose session ended, and why."""
    return sse("session-ended", {"reason": reason, "signin": "/signin"})


def sse(event: str, data: Any) -> bytes:
    """One server-sent event with `data` as JSON."""
    # json.dumps never emits a raw newline, so one data: line carries the whole document.
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return f"event: {event}\ndata: {text}\n\n".encode()
