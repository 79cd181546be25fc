"""A per-gateway alarm budget, so one noisy or hostile gateway cannot starve the others.

Every gateway has a token bucket (`rate_per_s`, up to `burst`).  An alarm message with a
token is processed at once, as before.  Without one it is deferred: kept in that
gateway's queue, latest document per alarm topic (an alarm document is the alarm's
full retained state, so an older one is worth nothing once a newer one is in:
replacing it is "coalescing"), and the service acknowledges it to the broker at once,
so it holds no place in the broker's in-flight window that other gateways' alarms need.
Deferred documents are released round-robin across gateways as their buckets refill.

Bounds: `per_gateway` alarm topics per gateway and `total` over all; a document beyond
them is dropped (counted).  Nothing is lost for good: the alarm stays retained at the
broker and the service's periodic re-read of retained alarms brings it in again, and a
crash loses only deferred documents, which that re-read after the restart covers.

Not thread-safe: the service thread owns it.
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

__all__ = ["Budget", "FairQueue"]

T = TypeVar("T")
Key = tuple[str, str]  # (site, gateway)


@dataclass(frozen=True, slots=True)
class Budget:
    """How many alarm documents a second each gateway gets processed, and the bounds."""

    rate_per_s: float = 20.0
    burst: int = 200
    per_gateway: int = 1000
    total: int = 50_000


@dataclass(slots=True)
class _Gateway(Generic[T]):
    tokens: float
    at: float
    deferred: OrderedDict[str, T] = field(default_factory=OrderedDict)


class FairQueue(Generic[T]):
    """Admits, defers and releases alarm documents per gateway; counts what it does."""

    def __init__(self, budget: Budget, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.budget = budget
        self._clock = clock
        self._gateways: dict[Key, _Gateway[T]] = {}
        self._ring: OrderedDict[Key, None] = OrderedDict()  # gateways with deferred documents
        self.deferred_now = 0
        self.counts: Counter[str] = Counter()

    def _bucket(self, key: Key) -> _Gateway[T]:
        now = self._clock()
        g = self._gateways.get(key)
        if g is None:
            if len(self._gateways) >= 4 * self.budget.total:
                # Bounded memory against a flood of made-up gateway names: forget the
                # full buckets (they carry no state a fresh one would not have).
                self._gateways = {k: v for k, v in self._gateways.items() if v.deferred}
            g = self._gateways[key] = _Gateway(float(self.budget.burst), now)
        else:
            g.tokens = min(
                float(self.budget.burst), g.tokens + (now - g.at) * self.budget.rate_per_s
            )
            g.at = now
        return g

    def admit(self, key: Key, topic: str, item: T) -> bool:
        """True: process `item` now.  False: it was deferred or dropped (counted); ack it."""
        g = self._bucket(key)
        if not g.deferred and g.tokens >= 1:
            g.tokens -= 1
            return True
        if topic in g.deferred:
            g.deferred[topic] = item
            self.counts["coalesced"] += 1
            return False
        if len(g.deferred) >= self.budget.per_gateway or self.deferred_now >= self.budget.total:
            self.counts["dropped"] += 1
            return False
        g.deferred[topic] = item
        self.deferred_now += 1
        self.counts["deferred"] += 1
        self._ring[key] = None
        return False

    def release(self, limit: int = 100) -> list[T]:
        """Deferred documents whose gateway has a token again, one per gateway per round."""
        out: list[T] = []
        while self._ring and len(out) < limit:
            progressed = False
            for key in list(self._ring):
                g = self._bucket(key)
                if g.tokens < 1:
                    continue
                g.tokens -= 1
                _, item = g.deferred.popitem(last=False)
                self.deferred_now -= 1
                out.append(item)
                progressed = True
                if not g.deferred:
                    del self._ring[key]
                if len(out) >= limit:
                    break
            if not progressed:
                break
        return out
