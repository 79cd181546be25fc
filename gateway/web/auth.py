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
    """Locks a key (a client address, a staff id) after too many failures in a window.

    Bounded: a key's failures are forgotten once they are all older than the window and
    its lock once it ends, and at most `max_keys` keys are tracked in each table (the
    least recently failed, or the soonest to end, make way), so a flood of made-up staff
    ids or addresses cannot grow the gateway's memory.  Evicting a key's partial count
    only helps an attacker who already fails from many addresses; a flood from one
    address locks that address first.
    """

    max_failures: int
    window_s: float
    lockout_s: float
    clock: Callable[[], float] = time.monotonic
    max_keys: int = 10_000
    # Both dicts are kept in time order (a key is moved to the end when it fails or is
    # locked; the lockout is the same length for all), so expired entries are at the front.
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
        self._prune(now)
        q = self._failures.pop(key, None) or deque()
        q.append(now)
        while q and now - q[0] > self.window_s:
            q.popleft()
        if len(q) >= self.max_failures:
            self._locked_until.pop(key, None)
            self._locked_until[key] = now + self.lockout_s
            while len(self._locked_until) > self.max_keys:
                del self._locked_until[next(iter(self._locked_until))]
            return
        self._failures[key] = q
        while len(self._failures) > self.max_keys:
            del self._failures[next(iter(self._failures))]

    def success(self, key: str) -> None:
        """Forget the key's failures, and a lockout its own last attempt started."""
        self._failures.pop(key, None)
        self._locked_until.pop(key, None)

    def tracked(self) -> int:
        """How many keys have failures or a lock on record (for tests and health)."""
        return len(self._failures) + len(self._locked_until)

    def _prune(self, now: float) -> None:
        # Oldest first, stopping at the first live entry: the cost is what expired.
        while self._failures:
            key = next(iter(self._failures))
            if now - self._failures[key][-1] <= self.window_s:
                break
            del self._failures[key]
        while self._locked_until:
            key = next(iter(self._locked_until))
            if self._locked_until[key] > now:
                break
            del self._locked_until[key]


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
