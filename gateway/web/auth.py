"""Staff sessions, CSRF tokens and the sign-in rate limit, all in memory.

Sessions live in the gateway process and, so that a restart does not sign out the
console left open on the office PC, in a file of SHA-256 keys of their tokens: no
session token ever touches the disk.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "DeviceTrust",
    "FailureLimiter",
    "Session",
    "SessionStore",
    "WindowLimiter",
    "token_key",
    "tokens_match",
]


def tokens_match(given: str | None, expected: str) -> bool:
    """Constant-time comparison of a submitted token with the expected one."""
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def token_key(token: str) -> str:
    """The key a session is stored under: a SHA-256 of its token, so the file holds no token."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(slots=True)
class Session:
    """A signed-in staff member: the key of the cookie token, and the CSRF token of their forms."""

    key: str
    staff_id: str
    name: str
    csrf: str
    last_used: float
    token: str = ""  # the cookie's token: known only to the request that created it


@dataclass
class SessionStore:
    """Random session tokens with an idle timeout, bounded, kept across restarts by a file.

    At most `max_sessions` in all and `per_staff` per staff member (the least recently
    used make way), so signing in again and again cannot grow the memory.  `dump` and
    `restore` carry the sessions over a restart: the time left of each, not a clock
    reading, so the time the gateway was down does not count as idle.
    """

    idle_s: float
    clock: Callable[[], float] = time.monotonic
    max_sessions: int = 1000
    per_staff: int = 20
    _sessions: dict[str, Session] = field(default_factory=dict)
    # Bumped on every change worth saving (create, drop); `dump` readers compare it.
    version: int = 0

    def create(self, staff_id: str, name: str) -> Session:
        self._expire()
        token = secrets.token_urlsafe(32)
        s = Session(token_key(token), staff_id, name, secrets.token_urlsafe(32), self.clock())
        s.token = token
        mine = [k for k, v in self._sessions.items() if v.staff_id == staff_id]
        for key in mine[: max(0, len(mine) - self.per_staff + 1)]:
            del self._sessions[key]
        self._sessions[s.key] = s
        while len(self._sessions) > self.max_sessions:
            del self._sessions[next(iter(self._sessions))]
        self.version += 1
        return s

    def get(self, token: str | None) -> Session | None:
        """The live session of a cookie, refreshed; None if unknown or idle too long."""
        if not token or len(token) > 256:
            return None
        key = token_key(token)
        s = self._sessions.get(key)
        if s is None:
            return None
        if self.clock() - s.last_used > self.idle_s:
            del self._sessions[key]
            self.version += 1
            return None
        self.touch(key)
        return s

    def touch(self, key: str) -> bool:
        """Count use of a session (a request, or activity of its event stream); False if gone."""
        s = self._sessions.pop(key, None)
        if s is None or self.clock() - s.last_used > self.idle_s:
            return False
        s.last_used = self.clock()
        self._sessions[key] = s  # most recently used last: the first to go is the oldest
        return True

    def alive(self, key: str) -> bool:
        """Whether a session still exists, without counting this as use."""
        s = self._sessions.get(key)
        return s is not None and self.clock() - s.last_used <= self.idle_s

    def drop(self, key: str) -> None:
        if self._sessions.pop(key, None) is not None:
            self.version += 1

    def drop_staff(self, staff_id: str) -> None:
        """Sign out every session of a staff member (account removed)."""
        for key in [k for k, s in self._sessions.items() if s.staff_id == staff_id]:
            del self._sessions[key]
            self.version += 1

    def __len__(self) -> int:
        return len(self._sessions)

    def dump(self) -> dict[str, Any]:
        """The live sessions as a document for the sessions file (keys, never tokens)."""
        self._expire()
        now = self.clock()
        return {
            "version": 1,
            "sessions": [
                {
                    "key": s.key,
                    "staff_id": s.staff_id,
                    "name": s.name,
                    "csrf": s.csrf,
                    "idle_left_s": round(self.idle_s - (now - s.last_used), 1),
                }
                for s in self._sessions.values()
            ],
        }

    def restore(self, doc: Any) -> int:
        """Take back the sessions of `dump` (a file read at start); how many. ValueError if bad."""
        if not isinstance(doc, dict) or doc.get("version") != 1:
            raise ValueError('expected an object with "version": 1')
        entries = doc.get("sessions")
        if not isinstance(entries, list):
            raise ValueError('"sessions" must be a list')
        now = self.clock()
        n = 0
        for entry in entries[-self.max_sessions :]:
            try:
                key, staff_id, name, csrf = (
                    str(entry[k]) for k in ("key", "staff_id", "name", "csrf")
                )
                left = min(float(entry["idle_left_s"]), self.idle_s)
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"sessions[{n}]: {exc}") from exc
            if left > 0 and len(key) == 64:
                self._sessions[key] = Session(key, staff_id, name, csrf, now - (self.idle_s - left))
                n += 1
        return n

    def _expire(self) -> None:
        now = self.clock()
        for key in [k for k, s in self._sessions.items() if now - s.last_used > self.idle_s]:
            del self._sessions[key]
            self.version += 1


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
    """At most `limit` events per key in any `window_s` (service requests, code lookups).

    Bounded like FailureLimiter: a key is forgotten once its events are older than the
    window, and at most `max_keys` keys are kept (the least recently active make way).
    """

    limit: int
    window_s: float
    clock: Callable[[], float] = time.monotonic
    max_keys: int = 10_000
    # In order of last event, so the stalest key is at the front.
    _events: dict[str, deque[float]] = field(default_factory=dict)

    def allow(self, key: str) -> bool:
        """Count one event for `key` and say whether it is within the limit."""
        return self.retry_after(key) == 0.0

    def retry_after(self, key: str) -> float:
        """Count one event for `key`; 0 if within the limit, else seconds until it would be."""
        now = self.clock()
        self._prune(now)
        q = self._events.pop(key, None) or deque()
        while q and now - q[0] > self.window_s:
            q.popleft()
        self._events[key] = q
        if len(q) >= self.limit:
            return max(0.001, self.window_s - (now - q[0]))
        q.append(now)
        while len(self._events) > self.max_keys:
            del self._events[next(iter(self._events))]
        return 0.0

    def blocked_for(self, key: str) -> float:
        """Seconds until `key` may have another event (0: now), without counting one."""
        now = self.clock()
        q = self._events.get(key)
        if not q:
            return 0.0
        live = [t for t in q if now - t <= self.window_s]
        if len(live) < self.limit:
            return 0.0
        return max(0.001, self.window_s - (now - live[0]))

    def tracked(self) -> int:
        return len(self._events)

    def _prune(self, now: float) -> None:
        while self._events:
            key = next(iter(self._events))
            q = self._events[key]
            if q and now - q[-1] <= self.window_s:
                break
            del self._events[key]


@dataclass
class DeviceTrust:
    """Devices on which a staff member signed in: a random cookie, trusted for that id only.

    A sign-in from a trusted device skips the lockouts a stranger can cause (per address,
    per staff id), so the real staff member can sign in during an attack; its own wrong
    PINs count against the device, which loses its trust after too many.  Bounded:
    `per_staff` devices per staff member and `max_devices` in all, the least recently
    used make way; a device unused for `ttl_s` is forgotten.  Kept across restarts with
    the sessions (keys only, never the cookie).
    """

    ttl_s: float = 180 * 86400.0
    clock: Callable[[], float] = time.monotonic
    per_staff: int = 10
    max_devices: int = 2000
    # key (SHA-256 of the cookie) -> (staff id, last use), least recently used first.
    _devices: dict[str, tuple[str, float]] = field(default_factory=dict)

    def trust(self, staff_id: str, token: str | None) -> str:
        """Trust this device for `staff_id` (a new cookie token unless it had one); the token."""
        if token:
            self._devices.pop(token_key(token), None)
        token = secrets.token_urlsafe(32)
        mine = [k for k, (sid, _) in self._devices.items() if sid == staff_id]
        for key in mine[: max(0, len(mine) - self.per_staff + 1)]:
            del self._devices[key]
        self._devices[token_key(token)] = (staff_id, self.clock())
        while len(self._devices) > self.max_devices:
            del self._devices[next(iter(self._devices))]
        return token

    def trusted(self, staff_id: str, token: str | None) -> str | None:
        """The device's key if `token` is a live cookie of this staff id's devices, else None."""
        if not token or len(token) > 256:
            return None
        key = token_key(token)
        entry = self._devices.get(key)
        if entry is None or entry[0] != staff_id:
            return None
        if self.clock() - entry[1] > self.ttl_s:
            del self._devices[key]
            return None
        return key

    def forget(self, key: str) -> None:
        self._devices.pop(key, None)

    def __len__(self) -> int:
        return len(self._devices)

    def dump(self) -> list[dict[str, Any]]:
        now = self.clock()
        return [
            {"key": k, "staff_id": sid, "ttl_left_s": round(self.ttl_s - (now - used), 1)}
            for k, (sid, used) in self._devices.items()
            if now - used <= self.ttl_s
        ]

    def restore(self, entries: Any) -> None:
        """Take back `dump`'s list; ValueError if it is not one."""
        if not isinstance(entries, list):
            raise ValueError('"devices" must be a list')
        now = self.clock()
        for i, entry in enumerate(entries[-self.max_devices :]):
            try:
                key, sid = str(entry["key"]), str(entry["staff_id"])
                left = min(float(entry["ttl_left_s"]), self.ttl_s)
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"devices[{i}]: {exc}") from exc
            if left > 0 and len(key) == 64:
                self._devices[key] = (sid, now - (self.ttl_s - left))
