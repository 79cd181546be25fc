"""Several workers on one database: the leader's reconciliation survives its death, and
the loop converges after a broker restart that did not restore the shared subscription.

Against a real Mosquitto 2.0.11 (which resumes a session without its `$share`
subscriptions) and the store on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest
from community_central.documents import parse_alarm
from community_central.store import TicketStore

from central.tests.tickets_harness import Publisher, Workers, alarm_doc, tickets_in
from tests.harness import Subscriber
from tests.peers import Mosquitto, wait_for

SITE = "sunrise-gardens"


def _publish_alarms(pub: Publisher, prefix: str, tag: str, n: int) -> set[str]:
    ids = set()
    for i in range(n):
        gw, alarm_id = f"gw-{i % 5}", f"{tag}-{i}"
        doc = alarm_doc(SITE, gw, alarm_id)
        pub.publish(f"{prefix}/{SITE}/{gw}/alarms/{alarm_id}", json.dumps(doc))
        ids.add(alarm_id)
    return ids


def _ticketed(db: str) -> list[str]:
    return [t.alarm_id for t in tickets_in(db)]


def _leader(svc: Workers) -> int:
    """Which worker leads (says so in its log)."""
    assert wait_for(lambda: any("leading:" in p.log() for p in svc.procs), timeout=10)
    return next(i for i, p in enumerate(svc.procs) if "leading:" in p.log())


@pytest.mark.slow
def test_the_leader_killed_hands_reconciliation_on_and_no_alarm_is_lost(
    broker: Mosquitto, tmp_path: Path, db_target: str
) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}/v1"
    svc = Workers(broker.url, db_target, prefix, 3, tmp_path).start()
    pub = Publisher(broker.port)
    try:
        first = _publish_alarms(pub, prefix, "a", 30)
        assert wait_for(lambda: len(_ticketed(db_target)) == 30, timeout=20), svc.log()
        leader = _leader(svc)
        svc.kill(leader)  # kill -9: its session stays at the broker and gets a share
        # Published while the dead worker's session still takes its share of the group.
        second = _publish_alarms(pub, prefix, "b", 30)
        # Another worker takes the lead, sees the dead one and reads the retained alarms.
        assert wait_for(lambda: len(_ticketed(db_target)) == 60, timeout=30), svc.log()
        ids = _ticketed(db_target)
        assert sorted(ids) == sorted(first | second)  # none missing, none doubled
        others = [p for i, p in enumerate(svc.procs) if i != leader]
        assert sum("leading:" in p.log() for p in others) == 1, svc.log()
        assert wait_for(
            lambda: any("stopped; reading the retained alarms" in p.log() for p in others),
            timeout=10,
        ), svc.log()
    finally:
        pub.stop()
        svc.terminate()


def test_after_a_broker_restart_alarms_published_before_the_workers_resubscribed_are_ticketed(
    broker: Mosquitto, tmp_path: Path, db_target: str
) -> None:
    # Mosquitto 2.0.11 restores the persistent session ("session present") but not its
    # shared subscription, and an alarm published before the workers reconnect goes to
    # no member of the group: only a read of the retained alarms finds it.
    prefix = f"t{uuid.uuid4().hex[:8]}/v1"
    svc = Workers(broker.url, db_target, prefix, 2, tmp_path).start()
    try:
        broker.stop()
        broker.start()
        pub = Publisher(broker.port)  # a gateway reconnects faster than the service
        try:
            ids = _publish_alarms(pub, prefix, "r", 10)
            assert wait_for(lambda: set(_ticketed(db_target)) == ids, timeout=30), svc.log()
            # And the shared subscription works again for what comes next.
            later = _publish_alarms(pub, prefix, "s", 10)
            assert wait_for(lambda: set(_ticketed(db_target)) == ids | later, timeout=10)
        finally:
            pub.stop()
        assert all("session resumed" in p.log() for p in svc.procs), svc.log()
    finally:
        svc.terminate()


def test_a_ticket_whose_worker_died_before_telling_it_is_told_by_the_others(
    broker: Mosquitto, tmp_path: Path, db_target: str
) -> None:
    # A worker commits a new ticket and is killed before it publishes the event: the
    # database then holds an opened ticket that nobody told staff about.  That state is
    # made here directly, so the crash falls exactly between the commit and the publish.
    prefix = f"t{uuid.uuid4().hex[:8]}/v1"
    events = Subscriber(broker.port, f"{prefix}/central/tickets/+").start()
    svc = Workers(broker.url, db_target, prefix, 2, tmp_path).start()
    try:
        _leader(svc)
        store = TicketStore(db_target)
        try:
            raw = json.dumps(alarm_doc(SITE, "gw-0", "orphan-1")).encode()
            doc = parse_alarm(SITE, "gw-0", "orphan-1", raw)
            [applied] = store.apply_alarms([(doc, "fire-safety")], time.time())
        finally:
            store.close()
        # The survivors see it unpublished and tell it, as it is: open.
        assert events.wait(lambda ms: any(m.json()["state"] == "open" for m in ms), timeout=15), (
            events.snapshot(),
            svc.log(),
        )
        [told] = [m.json() for m in events.snapshot()]
        assert told["ticket_id"] == "T-000001" and told["alarm"]["alarm_id"] == "orphan-1", told
        assert told["version"] == applied.ticket.version, (told, applied)
    finally:
        events.stop()
        svc.terminate()
