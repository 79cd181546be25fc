"""Staff sessions, CSRF tokens and the sign-in rate limit, all in memory.

Sessions live only in the gateway process: a restart signs everybody out, which is
acceptable for a console on the LAN and means no session token ever touches the disk.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["FailureLimiter", "Session", "SessionStore", "WindowLimiter", "tokens_match"]


def tokens_match(given: str | None, expected: str) -> bool:
    """Constant-time comparison of a submitted token with the expected one."""
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


@dataclass(slots=True)
class Session:
    """A signed-in staff member: the cookie token, and the CSRF token of their forms."""

    token: str
    staff_id: str
    name: str
    csrf: str
    last_used: float


@dataclass
class SessionStore:
    """Random session tokens with an idle timeout."""

    idle_s: float
    clock: Callable[[], float] = time.monotonic
    _sessions: dict[str, Session] = field(default_factory=dict)

    def create(self, staff_id: str, name: str) -> Session:
        self._expire()
        s = Session(
            secrets.token_urlsafe(32), staff_id, name, secrets.token_urlsafe(32), self.clock()
        )
        self._sessions[s.token] = s
        return s

    def get(self, token: str | None) -> Session | None:
        """The live session of a cookie, refreshed; None if unknown or idle too long."""
        if not token:
            return None
        s = self._sessions.get(token)
        now = self.clock()
        if s is None:
            return None
        if now - s.last_used > self.idle_s:
            del self._sessions[token]
            return None
        s.last_used = now
        return s

    def alive(self, token: str) -> bool:
        """Whether a session still exists, without counting this as use (event streams)."""
        s = self._sessions.get(token)
        return s is not None and self.clock() - s.last_used <= self.idle_s

    def drop(self, token: str) -> None:
        self._sessions.pop(token, None)

    def drop_staff(self, staff_id: str) -> None:
        """Sign out every session of a staff member (account removed)."""
        for token in [t for t, s in self._sessions.items() if s.staff_id == staff_id]:
            del self._sessions[token]

    def _expire(self) -> None:
        now = self.clock()
        for token in [t for t, s in self._sessions.items() if now - s.last_used > self.idle_s]:
            del self._sessions[token]


@dataclass
class FailureLimiter:
    """Locks a key (a client address, a staff id) after too many failures in a window."""

    max_failures: int
    window_s: float
    lockout_s: float
    clock: Callable[[], float] = time.monotonic
    _failures: dict[str, deque[float]] = field(default_factory=dict)
    _locked_until: dict[str, float] = field(default_factory=dict)

    def locked_for(self, key: str) -> float:
        """Seconds the key stays locked; 0 when it may try."""
        until = self._locked_until.get(key, 0.0)
        left = until - self.clock()
        if left <= 0:
            self._locked_until.pop(key, None)
            return 0.0
        return left

    def failure(self, key: str) -> None:
        now = self.clock()
        q = self._failures.setdefault(key, deque())
        q.append(now)
        while q and now - q[0] > self.window_s:
            q.popleft()
        if len(q) >= self.max_failures:
            self._locked_until[key] = now + self.lockout_s
            q.clear()

    def success(self, key: str) -> None:
        """Forget the key's failures, and a lockout its own last attempt started."""
        self._failures.pop(key, None)
        self._locked_until.pop(key, None)


@dataclass
class WindowLimiter:
    """At most `limit` events per key in any `window_s` (service requests per kiosk)."""

    limit: int
    window_s: float
    clock: Callable[[], float] = time.monotonic
    _events: dict[str, deque[float]] = field(default_factory=dict)

    def allow(self, key: str) -> bool:
        """Count one event for `key` and say whether it is within the limit."""
        now = self.clock()
        q = self._events.setdefault(key, deque())
        while q and now - q[0] > self.window_s:
            q.popleft()
        if len(q) >= self.limit:
            return False
        q.append(now)
        return True
