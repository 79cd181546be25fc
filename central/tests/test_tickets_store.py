"""The ticket database and the alarm document checks, without a broker."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from community_central.contract import validator
from community_central.documents import AlarmDoc, BadAlarm, parse_alarm
from community_central.records import TicketState
from community_central.store import AckStatus, TicketStore, format_ticket_id, parse_ticket_id

from central.tests.tickets_harness import alarm_doc, tickets_cli

SITE, GW = "sunrise-gardens", "gw-a"


def _doc(alarm_id: str, rev: int, **kw: object) -> AlarmDoc:
    raw = alarm_doc(SITE, GW, alarm_id, rev, **kw)  # type: ignore[arg-type]
    return parse_alarm(SITE, GW, alarm_id, json.dumps(raw).encode())


@pytest.fixture
def store(db_target: str) -> Iterator[TicketStore]:
    """The store on SQLite, then on PostgreSQL: every test below runs on both."""
    s = TicketStore(db_target)
    yield s
    s.close()


def test_ticket_ids_are_short_and_parse_back() -> None:
    assert format_ticket_id(42) == "T-000042"
    assert parse_ticket_id("T-000042") == parse_ticket_id("t-42") == parse_ticket_id("42") == 42
    with pytest.raises(ValueError, match="not a ticket id"):
        parse_ticket_id("ticket 42")


def test_an_alarm_seen_first_when_already_closed_opens_a_resolved_ticket(
    store: TicketStore,
) -> None:
    applied = store.apply_alarm(_doc("a-1", 5, state="closed", by="web-jo"), "fire-safety", 100.0)
    t = applied.ticket
    assert applied.outcome == "opened"
    assert (t.state, t.acknowledged_by, t.resolved_ts) == (TicketState.RESOLVED, "web-jo", 100.0)


def test_cleared_unacknowledged_keeps_the_ticket_open_until_someone_acknowledges(
    store: TicketStore,
) -> None:
    # The gateway keeps such an alarm `cleared` because it still needs a person: so does
    # the ticket.  Acknowledged later, the alarm closes and the ticket is resolved.
    store.apply_alarm(_doc("a-1", 1), "fire-safety", 100.0)
    t = store.apply_alarm(_doc("a-1", 2, state="cleared"), "fire-safety", 101.0).ticket
    assert (t.state, t.alarm_state, t.resolved_ts) == (TicketState.OPEN, "cleared", None)
    t = store.apply_alarm(
        _doc("a-1", 3, state="closed", by="staff-li"), "fire-safety", 102.0
    ).ticket
    assert (t.state, t.acknowledged_by, t.acknowledged_ts, t.resolved_ts) == (
        TicketState.RESOLVED,
        "staff-li",
        102.0,
        102.0,
    )
    assert store.apply_alarm(_doc("a-1", 3), "fire-safety", 103.0).outcome == "stale"


# Every transition of the gateway's alarm state machine (gateway/alarms), as the
# documents a ticket sees, with the ticket state each revision must leave.
LIFECYCLES = {
    "ack-then-clear": [
        ("active", "open"),
        ("acknowledged", "acknowledged"),
        ("closed", "resolved"),
    ],
    "clear-then-ack": [("active", "open"), ("cleared", "open"), ("closed", "resolved")],
    "cleared-raised-again": [
        ("active", "open"),
        ("cleared", "open"),
        ("active", "open"),
        ("acknowledged", "acknowledged"),
        ("closed", "resolved"),
    ],
    "first-seen-acknowledged": [("acknowledged", "acknowledged"), ("closed", "resolved")],
    "first-seen-cleared": [("cleared", "open"), ("closed", "resolved")],
    "first-seen-closed": [("closed", "resolved")],
}


@pytest.mark.parametrize("name", LIFECYCLES)
def test_the_ticket_follows_every_alarm_transition_in_order_repeated_and_out_of_order(
    store: TicketStore, name: str
) -> None:
    steps = LIFECYCLES[name]
    docs = [_doc("a-1", rev, state=state, by="staff-li") for rev, (state, _) in enumerate(steps, 1)]
    for doc, (_, want) in zip(docs, steps, strict=True):
        t = store.apply_alarm(doc, "fire-safety", 100.0 + doc.rev).ticket
        assert t.state == want, (doc.rev, doc.state)
        # A repeat of the same revision, and every older one, change nothing.
        for old in docs[: doc.rev]:
            assert store.apply_alarm(old, "fire-safety", 200.0).outcome == "stale"
        assert store.get(t.number).state == want
    # The same documents in reverse order (a late retained read, redelivery): the newest
    # decides at once and the older ones are ignored.
    other = [_doc("b-1", d.rev, state=d.state, by="staff-li") for d in docs]
    outcomes = [store.apply_alarm(d, "fire-safety", 300.0).outcome for d in reversed(other)]
    assert outcomes == ["opened"] + ["stale"] * (len(other) - 1)
    assert store.tickets()[0].state == steps[-1][1]


def test_an_alarm_active_again_after_its_ticket_was_resolved_reopens_it_visibly(
    store: TicketStore,
) -> None:
    # A gateway that lost its alarm state (or an older service that resolved on
    # `cleared`): a newer revision that is not closed must not leave the ticket resolved.
    store.apply_alarm(_doc("a-1", 1, state="closed", by="staff-li"), "fire-safety", 100.0)
    applied = store.apply_alarm(_doc("a-1", 2, state="active"), "fire-safety", 101.0)
    t = applied.ticket
    assert applied.outcome == "reopened"
    assert (t.state, t.reopened, t.resolved_ts) == (TicketState.OPEN, 1, None)
    assert t.event()["reopened"] == 1 and t.event()["state"] == "open"
    validator("ticket").validate(t.event())
    t = store.apply_alarm(
        _doc("a-1", 3, state="closed", by="staff-li"), "fire-safety", 102.0
    ).ticket
    assert (t.state, t.reopened, t.resolved_ts) == (TicketState.RESOLVED, 1, 102.0)


def test_an_accepted_acknowledgement_is_not_undone_by_an_older_alarm_document(
    store: TicketStore,
) -> None:
    store.apply_alarm(_doc("a-1", 1), "care", 100.0)
    rid = store.request_ack(1, "staff-li", "", 110.0)
    store.record_reply(rid, {"ok": True, "status": "accepted"}, 111.0)
    # An escalation published just before the gateway applied the acknowledgement.
    t = store.apply_alarm(_doc("a-1", 2), "care", 112.0).ticket
    assert t.state is TicketState.ACKNOWLEDGED


def test_a_success_reply_is_final_and_an_error_is_shown_until_a_success(store: TicketStore) -> None:
    store.apply_alarm(_doc("a-1", 1), "care", 100.0)
    rid = store.request_ack(1, "staff-li", "on my way", 110.0)
    [due] = store.claim_due_acks(110.0)
    assert (due.request_id, due.alarm_id, due.attempts) == (rid, "a-1", 0)
    assert store.claim_due_acks(112.0) == []  # not due again before its retry delay
    assert [r.attempts for r in store.claim_due_acks(115.0)] == [1]
    error = {"ok": False, "status": "error", "error": "gateway busy"}
    assert store.record_reply(rid, error, 116.0).last_ack_error == "gateway busy"  # type: ignore[union-attr]
    req = store.ack_request(rid)
    assert req is not None and req.status is AckStatus.ERROR
    rid2 = store.request_ack(1, "staff-li", "", 120.0)
    t = store.record_reply(rid2, {"ok": True, "status": "accepted"}, 121.0)
    assert t is not None and (t.state, t.acknowledged_by, t.last_ack_error) == (
        TicketState.ACKNOWLEDGED,
        "staff-li",
        None,
    )
    late = store.record_reply(rid2, {"ok": False, "status": "error", "error": "late"}, 122.0)
    assert late is not None and late.last_ack_error is None
    assert store.ack_request(rid2).status is AckStatus.ACCEPTED  # type: ignore[union-attr]
    assert store.record_reply("T-000001.unknown", {"ok": True}, 123.0) is None


def test_already_acknowledged_credits_who_really_acknowledged(store: TicketStore) -> None:
    store.apply_alarm(_doc("a-1", 1), "care", 100.0)
    rid = store.request_ack(1, "staff-mo", "", 110.0)
    result = alarm_doc(SITE, GW, "a-1", 2, state="acknowledged", by="web-jo")
    reply = {"ok": True, "status": "already_acknowledged", "result": result}
    t = store.record_reply(rid, reply, 111.0)
    assert t is not None and t.acknowledged_by == "web-jo"


def test_ack_requests_check_their_fields(store: TicketStore) -> None:
    store.apply_alarm(_doc("a-1", 1), "care", 100.0)
    with pytest.raises(ValueError, match="--by"):
        store.request_ack(1, "", "", 1.0)
    with pytest.raises(ValueError, match="--note is 501"):
        store.request_ack(1, "staff-li", "x" * 501, 1.0)
    with pytest.raises(LookupError, match="no ticket T-000002"):
        store.request_ack(2, "staff-li", "", 1.0)


def test_ticket_events_validate_against_the_schema(store: TicketStore) -> None:
    store.apply_alarm(_doc("a-1", 1), "fire-safety", 100.0)
    t = store.apply_alarm(_doc("a-1", 2, state="closed"), "fire-safety", 101.0).ticket
    validator("ticket").validate(t.event())
    assert [(u.number, u.version) for u in store.unpublished()] == [(1, 2)]
    store.mark_published([(1, 2)])
    assert store.unpublished() == []


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\xff\xfe", "not JSON"),
        (b'"text"', "a JSON str, not an object"),
        (
            json.dumps({"schema": {"name": "community.alarm", "version": 2}}).encode(),
            "'site' is a required property",
        ),
        (
            json.dumps(
                {**alarm_doc(SITE, GW, "a-1"), "schema": {"name": "community.alarm", "version": 2}}
            ).encode(),
            "schema.version",
        ),
        (json.dumps({**alarm_doc(SITE, GW, "a-1"), "severity": "urgent"}).encode(), "severity"),
        (
            json.dumps({**alarm_doc(SITE, GW, "a-1"), "raised_at": "yesterday"}).encode(),
            "raised_at",
        ),
        (
            json.dumps({**alarm_doc(SITE, GW, "a-1"), "acknowledged": True}).encode(),
            "fails alarm.json: acknowledged",
        ),
    ],
    # Named by the reason, not the payload: alarm_doc() stamps the current time, and test
    # ids that differ between xdist workers stop the whole run at collection.
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_bad_alarm_documents_say_what_is_wrong(payload: bytes, reason: str) -> None:
    with pytest.raises(BadAlarm, match=reason):
        parse_alarm(SITE, GW, "a-1", payload)


def test_a_document_about_another_gateway_than_its_topic_is_refused() -> None:
    spoof = json.dumps(alarm_doc("site-b", GW, "a-1")).encode()
    with pytest.raises(BadAlarm, match="about site-b/gw-a/a-1, the topic names") as caught:
        parse_alarm(SITE, GW, "a-1", spoof)
    assert caught.value.kind == "mismatch"
    extra = json.dumps({**alarm_doc(SITE, GW, "a-1"), "injected": "x" * 10}).encode()
    with pytest.raises(BadAlarm, match="Additional properties") as caught:
        parse_alarm(SITE, GW, "a-1", extra)
    assert caught.value.kind == "schema"


def test_list_and_stats_show_tickets_and_timings(store: TicketStore, db_target: str) -> None:
    store.apply_alarm(_doc("a-1", 1), "fire-safety", 100.0)
    store.apply_alarm(_doc("a-2", 1, type="care"), "care", 100.0)
    rid = store.request_ack(1, "staff-li", "", 110.0)
    store.record_reply(rid, {"ok": True, "status": "accepted"}, 111.0)
    db = db_target
    out = tickets_cli("list", "--db", db, "--state", "acknowledged", check=True).stdout
    assert "T-000001" in out and "staff-li" in out and "T-000002" not in out
    stats = json.loads(tickets_cli("stats", "--db", db, "--json", check=True).stdout)
    assert stats["tickets"] == 2
    assert stats["by_state"] == {"open": 1, "acknowledged": 1, "resolved": 0}
    assert stats["by_team"] == {"care": 1, "fire-safety": 1}
    assert stats["ack_s"]["p50"] is not None


def test_commands_refuse_a_file_that_is_not_a_ticket_database(tmp_path: Path) -> None:
    bad = tmp_path / "notes.txt"
    bad.write_text("not a database\n" * 100)
    for args in (["list"], ["stats"], ["ack", "T-000001", "--by", "staff-li"]):
        done = tickets_cli(*args, "--db", str(bad))
        assert done.returncode == 2, (args, done.stderr)
        assert "Invalid value for --db" in done.stderr and "is not a database" in done.stderr


def test_concurrent_workers_open_one_ticket_per_alarm_and_claim_each_ack_once(
    db_target: str,
) -> None:
    # Eight connections (as eight worker processes have) apply the same 40 alarms, in
    # different orders and in batches, at the same time.
    TicketStore(db_target).close()
    docs = [_doc(f"c-{i}", 1) for i in range(40)]
    outcomes: list[str] = []
    claimed: list[str] = []
    failures: list[BaseException] = []
    start = threading.Barrier(8)

    def worker(n: int) -> None:
        s = TicketStore(db_target)
        try:
            start.wait(30)
            mine = docs[n:] + docs[:n]
            for i in range(0, len(mine), 7):
                batch = [(d, "fire-safety") for d in mine[i : i + 7]]
                outcomes.extend(a.outcome for a in s.apply_alarms(batch, 100.0))
            if n == 0:
                # By number as stored: PostgreSQL's sequence may leave gaps where two
                # workers raced to insert the same alarm.
                for t in s.tickets():
                    s.request_ack(t.number, "staff-li", "", 100.0)
            start.wait(30)
            claimed.extend(r.request_id for r in s.claim_due_acks(200.0, limit=50))
        except BaseException as exc:  # reported below, with the others'
            failures.append(exc)
        finally:
            s.close()

    threads = [threading.Thread(target=worker, args=(n,), daemon=True) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert failures == []
    assert outcomes.count("opened") == 40 and outcomes.count("stale") == 7 * 40
    s = TicketStore(db_target)
    try:
        tickets = s.tickets()
        assert len(tickets) == 40
        assert {t.alarm_id for t in tickets} == {f"c-{i}" for i in range(40)}
    finally:
        s.close()
    assert len(claimed) == 40 and len(set(claimed)) == 40  # each sent by one worker only


def test_commands_say_when_the_postgresql_database_cannot_be_reached() -> None:
    from tests.peers import free_port

    url = f"postgresql://tickets@127.0.0.1:{free_port()}/tickets"
    done = tickets_cli("list", "--db", url)
    assert done.returncode == 2, done.stderr
    assert "Invalid value for --db: 127.0.0.1" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_a_database_of_the_previous_version_gains_the_new_column(tmp_path: Path) -> None:
    import sqlite3

    db = tmp_path / "old.db"
    old = sqlite3.connect(db)
    old.execute(
        "CREATE TABLE tickets (id INTEGER PRIMARY KEY AUTOINCREMENT, site TEXT NOT NULL,"
        " gateway TEXT NOT NULL, alarm_id TEXT NOT NULL, team TEXT NOT NULL, state TEXT NOT NULL,"
        " alarm_type TEXT NOT NULL, severity TEXT NOT NULL, alarm_state TEXT NOT NULL,"
        " alarm_rev INTEGER NOT NULL, alarm TEXT NOT NULL, raised_at TEXT NOT NULL,"
        " raised_ts REAL NOT NULL, opened_ts REAL NOT NULL, acknowledged_ts REAL,"
        " acknowledged_by TEXT, ack_note TEXT, resolved_ts REAL, last_ack_error TEXT,"
        " version INTEGER NOT NULL DEFAULT 1, published_version INTEGER NOT NULL DEFAULT 0,"
        " UNIQUE (site, gateway, alarm_id))"
    )
    old.close()
    store = TicketStore(db)
    try:
        t = store.apply_alarm(_doc("a-1", 1), "care", 100.0).ticket
        assert (t.state, t.reopened) == (TicketState.OPEN, 0)
    finally:
        store.close()
