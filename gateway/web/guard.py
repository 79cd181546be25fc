"""Caps on what one client and all clients together may hold open, refused cheaply.

A flood of connections or event streams from the LAN must not exhaust the gateway's file
descriptors (which the MQTT uplink, the outbox and the serial ports need too) nor fill
its log.  Three layers:

- `GuardedServer` counts TCP connections per client address and in total, and closes one
  beyond its cap at once, before any HTTP is read: the cheapest refusal there is.
- `Caps` counts what a route holds open (event streams) per client and in total; the
  route answers 429 or 503 with `Retry-After` beyond it.
- `RefusalLog` logs the first refusal at once and then one summary per interval, and
  `quiet_resource_errors` does the same for the event loop's "out of file descriptors"
  errors, so that no flood writes a traceback per attempt.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import resource
import socket
import ssl
import struct
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from aiohttp import web

__all__ = [
    "KEEPALIVE_S",
    "SECURITY_HEADERS",
    "SERVER_NAME",
    "Caps",
    "GuardedServer",
    "QuietHandler",
    "RefusalLog",
    "client_of",
    "connection_budget",
    "quiet_resource_errors",
]

log = logging.getLogger(__name__)

# File descriptors kept for everything but web connections: the broker, the outbox and
# request databases, serial ports, log files, the sessions file.
_RESERVED_FDS = 128
_RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
_MAX_LOGGED_CLIENTS = 1000
# An idle connection (none of a browser's needs longer) is closed after this long; also
# one that never sends a request.
KEEPALIVE_S = 30.0

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
# Named without a version, which would tell an attacker which advisories apply.
SERVER_NAME = "community-gateway"


def client_of(peer: Any) -> str:
    """The client key of a peer address: its IP (a port changes with every connection)."""
    if isinstance(peer, tuple) and peer:
        return str(peer[0])
    return "?"


@dataclass
class RefusalLog:
    """One warning at the first refusal, then at most one summary per `every_s`."""

    what: str
    every_s: float = 60.0
    clock: Callable[[], float] = time.monotonic
    _since: float | None = None
    _counts: Counter[str] = field(default_factory=Counter)

    def first_in_interval(self) -> bool:
        """Whether the next `refused` starts an interval (so may be logged in full)."""
        return self._since is None or self.clock() - self._since >= self.every_s

    def refused(self, client: str, why: str) -> None:
        now = self.clock()
        # Bounded too: a flood from ever new addresses (IPv6) is summed up as "others".
        if client in self._counts or len(self._counts) < _MAX_LOGGED_CLIENTS:
            self._counts[client] += 1
        else:
            self._counts["others"] += 1
        if self._since is None:
            log.warning(
                "web: refusing %s from %s (%s); further refusals are summed up every %.0f s",
                self.what,
                client,
                why,
                self.every_s,
            )
            self._since = now
            self._counts.clear()
        elif now - self._since >= self.every_s:
            total = sum(self._counts.values())
            top, n = self._counts.most_common(1)[0]
            log.warning(
                "web: refused %d %s in the last %.0f s (%d clients; most from %s: %d); %s",
                total,
                self.what,
                now - self._since,
                len(self._counts),
                top,
                n,
                why,
            )
            self._since = now
            self._counts.clear()


@dataclass
class Caps:
    """How many of something each client and all clients hold; bounded by both caps."""

    per_client: int
    total: int
    _held: Counter[str] = field(default_factory=Counter)

    def acquire(self, client: str) -> str | None:
        """Take one for `client`; None if granted, else why not ("client" or "total")."""
        if self._held[client] >= self.per_client:
            return "client"
        if sum(self._held.values()) >= self.total:
            return "total"
        self._held[client] += 1
        return None

    def release(self, client: str) -> None:
        self._held[client] -= 1
        if self._held[client] <= 0:
            del self._held[client]  # the table holds only clients with something open

    def held(self, client: str | None = None) -> int:
        return self._held[client] if client is not None else sum(self._held.values())


def connection_budget(wanted: int) -> int:
    """The total connection cap the process's open-file limit allows, at most `wanted`.

    Logs once when the limit forces a lower cap (the unit's LimitNOFILE is too low).
    """
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft - _RESERVED_FDS >= wanted:
        return wanted
    budget = max(8, soft - _RESERVED_FDS)
    log.warning(
        "web: the open-file limit (%d) allows only %d web connections, not %d; "
        "raise LimitNOFILE of the service",
        soft,
        budget,
        wanted,
    )
    return budget


class QuietHandler(web.RequestHandler):
    """aiohttp's connection handler, with its own error answers made safe and quiet.

    aiohttp answers a request it cannot parse (or a handler's crash) itself, past the
    application's hooks: with the parser's message echoing the input, its version in
    `Server`, no security headers, and a traceback in the log for each one.  Here the
    answer is the status line's phrase with the usual headers, a malformed request is
    logged once per interval, and a crash's traceback once per interval too.
    """

    def __init__(self, manager: web.Server, *, bad: RefusalLog, crashes: RefusalLog) -> None:
        super().__init__(
            manager,
            loop=asyncio.get_running_loop(),
            access_log=None,  # type: ignore[arg-type]  # None turns the access log off
            keepalive_timeout=KEEPALIVE_S,
        )
        self._bad = bad
        self._crashes = crashes

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        client = request.remote or "?"
        if status >= 500:
            if self._crashes.first_in_interval():
                log.error("web: error handling a request from %s", client, exc_info=exc)
            self._crashes.refused(client, f"HTTP {status}")
        else:
            self._bad.refused(client, f"HTTP {status}: {type(exc).__name__}")
        if request.writer.output_size > 0:
            raise ConnectionError("response already started; the connection is closed")
        resp = web.Response(status=status, text=f"{status}: {HTTPStatus(status).phrase}")
        resp.headers.update(SECURITY_HEADERS)
        resp.headers["Server"] = SERVER_NAME
        resp.force_close()
        return resp


class _Admitted(asyncio.Protocol):
    """An admitted connection: handed to the HTTP protocol; gives its place back at the end."""

    def __init__(self, inner: asyncio.Protocol, release: Callable[[], None]) -> None:
        self._inner = inner
        self._release: Callable[[], None] | None = release

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._release is not None:
            self._release()
            self._release = None
        self._inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


@dataclass
class GuardedServer:
    """Listening sockets whose connections pass the caps before reaching `protocol_factory`.

    Accepts by itself instead of through `loop.create_server`, so that a connection
    beyond a cap is closed (with a reset) right after `accept()`, before asyncio builds
    a transport for it: thousands of refusals a second cost little.  Running out of file
    descriptors pauses accepting for a second, logged once per interval.
    """

    protocol_factory: Callable[[], asyncio.Protocol]
    caps: Caps
    refusals: RefusalLog = field(default_factory=lambda: RefusalLog("web connections"))
    backlog: int = 128
    _socks: list[socket.socket] = field(default_factory=list)
    _ssl: ssl.SSLContext | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _exhausted: RefusalLog = field(
        default_factory=lambda: RefusalLog("connections: out of file descriptors")
    )

    async def start(self, host: str, port: int, ssl_context: ssl.SSLContext | None) -> None:
        loop = asyncio.get_running_loop()
        self._ssl = ssl_context
        self._exhausted.every_s = self.refusals.every_s
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        try:
            for family, kind, proto, _name, addr in infos:
                sock = socket.socket(family, kind, proto)
                self._socks.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind(addr)
                sock.listen(self.backlog)
                sock.setblocking(False)
                loop.add_reader(sock.fileno(), self._accept, sock)
        except OSError:
            self.close()
            raise

    def _accept(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(self.backlog):
            try:
                conn, peer = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno not in _RESOURCE_ERRNOS:
                    raise
                self._exhausted.refused("?", f"{exc.strerror}; raise LimitNOFILE")
                # As asyncio does: stop accepting for a second, the backlog waits.
                loop.remove_reader(sock.fileno())
                loop.call_later(1.0, self._resume, sock)
                return
            client = client_of(peer)
            why = self.caps.acquire(client)
            if why is not None:
                self.refusals.refused(client, f"{why} connection cap reached")
                # A reset instead of an orderly close: no TIME_WAIT, nothing to send.
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.close()
                continue
            conn.setblocking(False)
            task = loop.create_task(self._serve(conn, client))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _resume(self, sock: socket.socket) -> None:
        if sock in self._socks:
            asyncio.get_running_loop().add_reader(sock.fileno(), self._accept, sock)

    async def _serve(self, conn: socket.socket, client: str) -> None:
        loop = asyncio.get_running_loop()
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.caps.release(client)

        try:
            await loop.connect_accepted_socket(
                lambda: _Admitted(self.protocol_factory(), release), conn, ssl=self._ssl
            )
        except (OSError, ssl.SSLError, TimeoutError) as exc:
            # A failed TLS handshake, or a client gone at once: its place is free again.
            release()
            conn.close()
            log.debug("web: connection from %s ended before HTTP: %s", client, exc)

    def ports(self) -> list[int]:
        """The ports listened on (one per address family), e.g. after asking for port 0."""
        return [int(sock.getsockname()[1]) for sock in self._socks]

    def close(self) -> None:
        """Stop listening (open connections are ended by the HTTP runner's cleanup)."""
        loop = asyncio.get_running_loop()
        for sock in self._socks:
            loop.remove_reader(sock.fileno())
            sock.close()
        self._socks.clear()


def quiet_resource_errors(loop: asyncio.AbstractEventLoop, every_s: float = 60.0) -> None:
    """Log the loop's out-of-file-descriptor errors (failed accepts) once per interval.

    asyncio logs every failed `accept()` with a traceback; when the process runs out of
    file descriptors that is dozens of tracebacks a second.  Other errors go to the
    handler that was there before.
    """
    previous = loop.get_exception_handler()
    refusals = RefusalLog("connections: out of file descriptors", every_s)

    def handler(lp: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, OSError) and exc.errno in _RESOURCE_ERRNOS:
            refusals.refused("?", f"{exc.strerror}; raise LimitNOFILE or lower web.limits")
            return
        if previous is not None:
            previous(lp, context)
        else:
            lp.default_exception_handler(context)

    loop.set_exception_handler(handler)
