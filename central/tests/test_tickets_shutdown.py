"""SIGTERM stops `community-central serve` within its stop timeout, whatever it waits on.

The service thread can be stuck in the database for a long time: SQLite waits up to
its busy timeout (30 s) for a peer's write lock, PostgreSQL waits on a peer's row lock
without end.  A stop must not wait for that: the service gives its thread
`--stop-timeout` seconds, then says in its log what it abandons and exits.  Nothing
is lost by that: an alarm is acknowledged to the broker only after its commit, so the
one being applied comes again at the next start.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from central.tests.tickets_harness import Publisher, TicketServiceProc, alarm_doc, tickets_in
from tests.peers import Mosquitto, wait_for

SITE = "sunrise-gardens"
STOP_TIMEOUT_S = 3.0


class RowLock:
    """Another client holding the ticket rows' lock, as a stuck peer would."""

    def __init__(self, db: str) -> None:
        self.db = db
        self.conn: Any = None

    def take(self) -> None:
        if db_is_postgres(self.db):
            import psycopg

            self.conn = psycopg.connect(self.db, autocommit=True)
            self.conn.execute("BEGIN")
            self.conn.execute("SELECT id FROM tickets FOR UPDATE").fetchall()
        else:
            self.conn = sqlite3.connect(self.db, isolation_level=None)
            self.conn.execute("BEGIN IMMEDIATE")  # the file's write lock

    def release(self) -> None:
        if self.conn is not None:
            self.conn.execute("COMMIT")
            self.conn.close()
            self.conn = None


def db_is_postgres(db: str) -> bool:
    return db.startswith("postgresql://")


@pytest.fixture
def lock(db_target: str) -> Iterator[RowLock]:
    held = RowLock(db_target)
    yield held
    held.release()


def test_sigterm_stops_the_service_while_a_peer_holds_the_database_lock(
    broker: Mosquitto, tmp_path: Path, db_target: str, lock: RowLock
) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}/v1"
    extra = ["--stop-timeout", str(STOP_TIMEOUT_S)]
    svc = TicketServiceProc(broker.url, db_target, prefix, logdir=tmp_path, extra=extra)
    pub = Publisher(broker.port)
    topic = f"{prefix}/{SITE}/gw-a/alarms/x-1"
    try:
        svc.start()
        pub.publish(topic, json.dumps(alarm_doc(SITE, "gw-a", "x-1")))
        assert wait_for(lambda: len(tickets_in(db_target)) == 1)
        lock.take()
        pub.publish(topic, json.dumps(alarm_doc(SITE, "gw-a", "x-1", 2, state="cleared")))
        time.sleep(1)  # the service is now waiting for the lock to apply rev 2
        started = time.monotonic()
        code = svc.terminate(timeout=STOP_TIMEOUT_S + 7)
        took = time.monotonic() - started
        assert took < STOP_TIMEOUT_S + 3, took
        assert code == 1, svc.log()
        assert "still busy" in svc.log() and "abandoned" in svc.log(), svc.log()
        lock.release()
        # Rev 2 was never acknowledged to the broker: the session gives it again.
        svc.start()
        assert wait_for(lambda: tickets_in(db_target)[0].alarm_rev == 2), svc.log()
        assert svc.terminate() == 0, svc.log()
        assert svc.log().count("abandoned") == 1
    finally:
        pub.stop()
        if svc.running():
            svc.kill()


def test_the_unit_leaves_the_service_its_stop_timeout() -> None:
    # systemd kills the service TimeoutStopSec after SIGTERM: the service's own bound
    # must come first, or its log never says what it abandoned.
    from community_central.cli import serve

    unit = Path(__file__).resolve().parents[1] / "systemd" / "community-central.service"
    [line] = [x for x in unit.read_text().splitlines() if x.startswith("TimeoutStopSec=")]
    [option] = [p for p in serve.params if p.name == "stop_timeout"]
    assert isinstance(option.default, float)
    assert option.default + 5 <= float(line.partition("=")[2]), line
