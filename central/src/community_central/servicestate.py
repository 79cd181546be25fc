"""What the parts of the ticket service share: its config, a message, and its state.

`TicketService` (service.py: threads, connections, leadership) is made of `Inbound`
(inbound.py: alarms and replies in) and `Outbound` (outbound.py: acknowledgements and
ticket events out); all three read and write the state `ServiceState.__init__` sets,
from the service thread only, but for the few fields paho's thread touches (said so
where they are).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from .broker import BrokerSettings
from .contract import CentralTopics
from .fair import Budget, FairQueue
from .routing import Routes
from .signing import CommandSigner
from .store import TicketStore

__all__ = ["Message", "ServiceConfig", "ServiceState"]

log = logging.getLogger("community_central.service")  # one name for all the service says


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    """How one service instance connects and where it keeps its tickets."""

    broker: BrokerSettings
    db: str | Path  # a SQLite file or a postgresql:// URL
    client_id: str
    group: str = "tickets"
    session_expiry_s: int = 7 * 24 * 3600
    reconcile_quiet_s: float = 1.0
    reconcile_every_s: float = 600.0
    poll_s: float = 0.25
    budget: Budget = field(default_factory=Budget)
    signer: CommandSigner | None = None  # signs acknowledgements (docs/security.md)


@dataclass(frozen=True, slots=True)
class Message:
    """One message from paho's thread, as the service thread handles it."""

    topic: str
    payload: bytes
    retain: bool
    mid: int
    qos: int
    correlation: bytes | None
    connection: int  # which connection it came on: a PUBACK only makes sense on that one


class ServiceState:
    """The ticket service's state, and its database connection (re-made when lost)."""

    def __init__(self, cfg: ServiceConfig, routes: Routes) -> None:
        self.cfg = cfg
        self.routes = routes
        self.topics = CentralTopics(cfg.broker.prefix, cfg.group, cfg.client_id)
        self._inbox: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._connected = False
        self._bad_topics: set[str] = set()
        self._reconciling = False  # the plain subscription for retained alarms is on
        self._ever_connected = False
        self._last_retained = 0.0
        self._reconciled_at = 0.0
        self._want_reconcile = False  # connected again: retained alarms must be read
        self._leader = False  # this worker reconciles (the database's lock, see store)
        self._next_duty = 0.0
        self._seen_requests: int | None = None  # followers' reconcile requests seen
        self._mourned: dict[str, float] = {}  # stopped workers already reconciled for
        self._orphans = False  # some worker is stopped and its session still takes alarms
        self._mine: set[int] = set()  # tickets this worker changed: it publishes them
        self._last_sweep: set[tuple[int, int]] = set()  # the leader's look at stuck events
        self._publishing: dict[int, tuple[int, int]] = {}  # mid -> (ticket, version)
        self._in_flight: dict[int, int] = {}  # ticket -> version being published
        self._published: list[tuple[int, int]] = []
        self._pending: list[Message] = []  # messages drained, not yet applied
        self._db_retry_at = 0.0
        self._connection = 0  # counts connections of the alarms client (paho's thread)
        self._errors: tuple[type[Exception], ...] = ()  # the store's database errors
        self.client: mqtt.Client | None = None
        self.events: mqtt.Client | None = None
        self._events_connected = False
        self.store: TicketStore | None = None
        # Used from paho's thread (admit, so a flood costs the service thread nothing)
        # and from the service thread (release, counters): hence the lock.
        self.fair: FairQueue[Message] = FairQueue(cfg.budget)
        self._fair_lock = threading.Lock()
        self.counts: Counter[str] = Counter()  # not yet added to the database's counters

    def _store(self) -> TicketStore:
        assert self.store is not None
        if self.store.db.broken():
            # PostgreSQL restarted or the network was cut: a new connection; if that
            # fails too, the caller's except clause keeps the work for the next try.
            old = self.store
            self.store = TicketStore(old.target)
            old.close()
            log.warning("database connection lost; reconnected")
        return self.store
