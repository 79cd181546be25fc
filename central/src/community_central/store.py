"""The ticket database: one ticket per alarm, its acknowledgement requests and timings.

What it holds (tables, and the rows as values) is records.py; this module is what is
done with it, in transactions.

SQLite (one file, the default) or PostgreSQL (several workers on several machines),
see database.py; the same SQL and the same tests run on both.  A ticket reported
opened is committed durably first.  Several service processes (and the
`community-central` commands) may share one database.  The UNIQUE key on (site,
gateway, alarm_id) with `INSERT ... ON CONFLICT DO NOTHING` is what guarantees one
ticket per alarm whichever worker sees the alarm first; the row is then locked
(`FOR UPDATE`) while a document is applied to it.  Alarm documents are applied in `rev`
order: one not newer than the rev already applied changes nothing, so redelivery, two
workers receiving the same document and the two subscription paths (shared and
retained) are harmless.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .database import Database, open_database
from .records import (
    SCHEMA,
    TICKET_COLUMNS,
    AckRequest,
    AckStatus,
    Applied,
    Ticket,
    TicketState,
    format_ticket_id,
    parse_ticket_id,
    ticket_from_row,
    ticket_state,
)

if TYPE_CHECKING:
    from .documents import AlarmDoc

__all__ = [
    "AckRequest",
    "AckStatus",
    "Applied",
    "Ticket",
    "TicketState",
    "TicketStore",
    "format_ticket_id",
    "parse_ticket_id",
    "ticket_state",
]

# The reconciling worker's lease on SQLite (PostgreSQL ends it with the connection).
LEASE_S = 5.0

# Retry an unanswered ack command after 5 s, doubling to at most a minute: a gateway
# that is offline gets it from its broker session anyway, the retry covers the rest.
RETRY_FIRST_S = 5.0
RETRY_MAX_S = 60.0


class TicketStore:
    """The tickets in a SQLite file or a PostgreSQL database; one instance per thread."""

    def __init__(self, target: str | Path) -> None:
        self.target = target
        self.db = open_database(target)
        self.errors = self.db.errors  # what a failing database raises
        self._leading = False  # PostgreSQL: this connection holds the leader's lock
        try:
            if not self._current():
                self.db.create(SCHEMA)
                self._migrate()
        except BaseException:
            self.db.close()
            raise

    def close(self) -> None:
        self.db.close()

    def _current(self) -> bool:
        """Whether the schema is already there, as this version makes it (PostgreSQL).

        CREATE INDEX IF NOT EXISTS and ALTER TABLE lock the table against writers even
        when there is nothing to do: a `list` or a new worker would stall every other
        worker's transactions.  SQLite's file lock makes that moot.
        """
        if self.db.kind != "postgres":
            return False
        row = self.db.execute(
            "SELECT count(*) FROM information_schema.columns WHERE table_schema = current_schema()"
            " AND ((table_name = 'tickets' AND column_name = 'reopened')"
            " OR (table_name IN ('workers', 'leader', 'counters', 'ack_requests')"
            " AND ordinal_position = 1))"
        ).fetchone()
        return bool(row and row[0] == 5)

    def _migrate(self) -> None:
        """Add the columns a database made by an older version lacks."""
        if self.db.kind == "postgres":
            with self._write() as db:
                db.execute(
                    "ALTER TABLE tickets ADD COLUMN IF NOT EXISTS reopened INTEGER NOT NULL DEFAULT 0"
                )
            return
        columns = {row[1] for row in self.db.execute("PRAGMA table_info(tickets)")}
        if "reopened" not in columns:
            with self._write() as db:
                db.execute("ALTER TABLE tickets ADD COLUMN reopened INTEGER NOT NULL DEFAULT 0")

    def _write(self, *, durable: bool = True) -> Any:
        return self.db.transaction(durable=durable)

    # ---- counters -----------------------------------------------------------------

    def add_counters(self, counts: dict[str, int]) -> None:
        """Add to the named counters (refused documents, deferred alarms, ...)."""
        with self._write() as db:
            db.executemany(
                "INSERT INTO counters(name, value) VALUES (?, ?)"
                " ON CONFLICT(name) DO UPDATE SET value = counters.value + excluded.value",
                sorted(counts.items()),
            )

    def counters(self) -> dict[str, int]:
        """Every counter, by name."""
        return {n: v for n, v in self.db.execute("SELECT name, value FROM counters ORDER BY name")}

    # ---- workers ------------------------------------------------------------------

    def heartbeat(self, client_id: str, now: float) -> None:
        """Say this worker is alive (the leader reconciles for one that stops saying so)."""
        with self._write(durable=False) as db:
            db.execute(
                "INSERT INTO workers(client_id, seen_ts) VALUES (?, ?)"
                " ON CONFLICT(client_id) DO UPDATE SET seen_ts = excluded.seen_ts",
                (client_id, now),
            )

    def workers(self) -> dict[str, float]:
        """Every worker that ever ran, with when it was last alive (its clock)."""
        return {n: t for n, t in self.db.execute("SELECT client_id, seen_ts FROM workers")}

    def try_lead(self, client_id: str, now: float) -> bool:
        """Whether this worker reconciles: take or keep the leader's lock.

        PostgreSQL: a session advisory lock, which the server releases the moment the
        holder's connection ends (a worker killed with -9 included).  SQLite: a lease
        of LEASE_S seconds in the file, renewed by each call, taken over once expired.
        """
        if self.db.kind == "postgres":
            if not self._leading:
                self._leading = self.db.try_leader_lock()
            return self._leading
        with self._write(durable=False) as db:
            db.execute(
                "INSERT INTO leader(id, holder, until_ts) VALUES (1, ?, ?) ON CONFLICT(id)"
                " DO UPDATE SET holder = excluded.holder, until_ts = excluded.until_ts"
                " WHERE leader.holder = excluded.holder OR leader.until_ts < ?",
                (client_id, now + LEASE_S, now),
            )
            row = db.execute("SELECT holder FROM leader WHERE id = 1").fetchone()
        return bool(row and row[0] == client_id)

    # ---- alarms -------------------------------------------------------------------

    def apply_alarm(self, doc: AlarmDoc, team: str, now: float) -> Applied:
        """Open the alarm's ticket, or bring it up to this document if `rev` is newer."""
        return self.apply_alarms([(doc, team)], now)[0]

    def apply_alarms(self, docs: Sequence[tuple[AlarmDoc, str]], now: float) -> list[Applied]:
        """`apply_alarm` for each (document, team), in order, in one transaction.

        One commit (one fsync) for a burst of alarms instead of one each: what lets the
        service keep up when a whole site reports at once.
        """
        # Rows are locked in one order (by alarm) in every worker, so two workers'
        # transactions wait for each other instead of deadlocking; each alarm's own
        # documents keep their order (a stable sort).
        ordered = sorted(docs, key=lambda d: (d[0].site, d[0].gateway, d[0].alarm_id))
        with self._write() as db:
            return [self._apply(db, doc, team, now) for doc, team in ordered]

    def _locked(self, db: Database, doc: AlarmDoc) -> Any:
        return db.execute(
            f"SELECT {TICKET_COLUMNS} FROM tickets WHERE site=? AND gateway=? AND alarm_id=?"
            + db.for_update,
            (doc.site, doc.gateway, doc.alarm_id),
        ).fetchone()

    def _apply(self, db: Database, doc: AlarmDoc, team: str, now: float) -> Applied:
        row = self._locked(db, doc)
        state = ticket_state(doc)
        resolved = state is TicketState.RESOLVED
        if row is None:
            ack = doc.ack if doc.acknowledged else None
            # Another worker may insert the same alarm at the same moment: the UNIQUE
            # key lets one insert win; the other waits for it, inserts nothing, and
            # applies its document to the winner's row like any later document.
            inserted = db.execute(
                "INSERT INTO tickets (site, gateway, alarm_id, team, state, alarm_type,"
                " severity, alarm_state, alarm_rev, alarm, raised_at, raised_ts, opened_ts,"
                " acknowledged_ts, acknowledged_by, ack_note, resolved_ts)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
                " ON CONFLICT (site, gateway, alarm_id) DO NOTHING RETURNING id",
                (
                    doc.site,
                    doc.gateway,
                    doc.alarm_id,
                    team,
                    str(state),
                    doc.type,
                    doc.severity,
                    str(doc.state),
                    doc.rev,
                    doc.as_json(),
                    doc.raised_at,
                    doc.raised_ts(),
                    now,
                    now if ack else None,
                    ack.by if ack else None,
                    ack.note if ack else None,
                    now if resolved else None,
                ),
            ).fetchone()
            if inserted is not None:
                return Applied("opened", self._get(db, int(inserted[0])))
            row = self._locked(db, doc)
            assert row is not None, "a conflicting insert leaves the row"
        old = ticket_from_row(row)
        if doc.rev <= old.alarm_rev:
            return Applied("stale", old)  # a repeat, or overtaken by a newer revision
        if state is TicketState.OPEN and old.state is TicketState.ACKNOWLEDGED:
            # The gateway accepted an acknowledgement (its reply) that this document,
            # published before, does not show yet: not a step back to "needs a person".
            state = TicketState.ACKNOWLEDGED
        reopened = old.state is TicketState.RESOLVED and not resolved
        ack = doc.ack if doc.acknowledged and old.acknowledged_ts is None else None
        db.execute(
            "UPDATE tickets SET state=?, alarm_state=?, alarm_rev=?, alarm=?, severity=?,"
            " acknowledged_ts=COALESCE(acknowledged_ts, ?),"
            " acknowledged_by=COALESCE(acknowledged_by, ?), ack_note=COALESCE(ack_note, ?),"
            " resolved_ts=?, reopened=reopened+?, version=version+1 WHERE id=?",
            (
                str(state),
                str(doc.state),
                doc.rev,
                doc.as_json(),
                doc.severity,
                now if ack else None,
                ack.by if ack else None,
                ack.note if ack else None,
                (old.resolved_ts or now) if resolved else None,
                1 if reopened else 0,
                old.number,
            ),
        )
        return Applied("reopened" if reopened else "updated", self._get(db, old.number))

    # ---- reading ------------------------------------------------------------------

    def _get(self, db: Database, number: int) -> Ticket:
        row = db.execute(f"SELECT {TICKET_COLUMNS} FROM tickets WHERE id=?", (number,)).fetchone()
        if row is None:
            raise LookupError(f"no ticket {format_ticket_id(number)}")
        return ticket_from_row(row)

    def get(self, number: int) -> Ticket:
        """The ticket; LookupError if there is none with that number."""
        return self._get(self.db, number)

    def tickets(self, state: TicketState | None = None, limit: int | None = None) -> list[Ticket]:
        """Tickets, newest first, optionally of one state only."""
        sql = f"SELECT {TICKET_COLUMNS} FROM tickets"
        args: list[Any] = []
        if state is not None:
            sql += " WHERE state=?"
            args.append(str(state))
        sql += " ORDER BY id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        return [ticket_from_row(r) for r in self.db.execute(sql, args)]

    # ---- ticket events ------------------------------------------------------------

    def unpublished_of(self, numbers: Sequence[int]) -> list[Ticket]:
        """Those of these tickets whose current version is not published yet."""
        if not numbers:
            return []
        marks = ",".join("?" * len(numbers))
        rows = self.db.execute(
            f"SELECT {TICKET_COLUMNS} FROM tickets WHERE id IN ({marks})"
            " AND version > published_version ORDER BY id",
            list(numbers),
        )
        return [ticket_from_row(r) for r in rows]

    def unpublished(self, limit: int = 200) -> list[Ticket]:
        """Tickets whose current version has not been published (PUBACKed) yet."""
        rows = self.db.execute(
            f"SELECT {TICKET_COLUMNS} FROM tickets WHERE version > published_version"
            " ORDER BY id LIMIT ?",
            (limit,),
        )
        return [ticket_from_row(r) for r in rows]

    def mark_published(self, done: list[tuple[int, int]]) -> None:
        """Record that these (ticket number, version) events reached the broker."""
        # Losing these marks in a power cut only means publishing those states again,
        # so they are not worth an fsync each: the next durable commit syncs them too.
        with self._write(durable=False) as db:
            db.executemany(
                "UPDATE tickets SET published_version=? WHERE id=? AND published_version < ?",
                [(version, number, version) for number, version in sorted(done)],
            )

    # ---- acknowledgements ---------------------------------------------------------

    def request_ack(self, number: int, by: str, note: str, now: float) -> str:
        """Queue a staff acknowledgement of ticket `number`; returns its request id."""
        if not 1 <= len(by) <= 64:
            raise ValueError("--by must be 1 to 64 characters")
        if len(note) > 500:
            raise ValueError(f"--note is {len(note)} characters; at most 500")
        request_id = f"{format_ticket_id(number)}.{uuid.uuid4().hex[:12]}"
        with self._write() as db:
            self._get(db, number)
            db.execute(
                "INSERT INTO ack_requests (request_id, ticket_id, by, note, requested_ts, status,"
                " next_attempt_ts) VALUES (?,?,?,?,?,?,?)",
                (request_id, number, by, note, now, str(AckStatus.PENDING), now),
            )
        return request_id

    def _ack(self, db: Database, where: str, args: tuple[Any, ...]) -> list[AckRequest]:
        rows = db.execute(
            "SELECT a.request_id, a.ticket_id, a.by, a.note, a.requested_ts, a.status,"
            " a.attempts, a.error, t.site, t.gateway, t.alarm_id"
            f" FROM ack_requests a JOIN tickets t ON t.id = a.ticket_id WHERE {where}",
            args,
        ).fetchall()
        return [
            AckRequest(r[0], r[1], r[2], r[3], r[4], AckStatus(r[5]), r[6], r[7], r[8], r[9], r[10])
            for r in rows
        ]

    def ack_request(self, request_id: str) -> AckRequest | None:
        found = self._ack(self.db, "a.request_id=?", (request_id,))
        return found[0] if found else None

    def claim_due_acks(self, now: float, limit: int = 50) -> list[AckRequest]:
        """Pending acks due for (re)sending; each is pushed back by its retry delay."""
        with self._write() as db:
            due = self._ack(
                db,
                "a.status='pending' AND a.next_attempt_ts <= ? ORDER BY a.next_attempt_ts LIMIT ?"
                # Two workers never claim the same request: the second skips the rows
                # the first holds, and sees them pushed back once it commits.
                + db.skip_locked.replace("UPDATE", "UPDATE OF a"),
                (now, limit),
            )
            for req in due:
                delay = min(RETRY_MAX_S, RETRY_FIRST_S * 2**req.attempts)
                db.execute(
                    "UPDATE ack_requests SET attempts=attempts+1, sent_ts=?, next_attempt_ts=?"
                    " WHERE request_id=?",
                    (now, now + delay, req.request_id),
                )
        return due

    def resend_acks_to(self, site: str, gateway: str, at: float) -> int:
        """Make the pending acks of a gateway due at `at` (it came online); how many."""
        with self._write() as db:
            cur = db.execute(
                "UPDATE ack_requests SET next_attempt_ts=? WHERE status='pending'"
                " AND next_attempt_ts > ? AND ticket_id IN"
                " (SELECT id FROM tickets WHERE site=? AND gateway=?)",
                (at, at, site, gateway),
            )
            return cur.rowcount

    def record_reply(self, request_id: str, reply: dict[str, Any], now: float) -> Ticket | None:
        """Record the gateway's reply to an ack command; the ticket, or None if unknown.

        A success is final: a later `already_acknowledged` (the answer to a retry) or a
        late error does not overwrite `accepted`.
        """
        with self._write() as db:
            lock = db.for_update.replace("UPDATE", "UPDATE OF a")
            found = self._ack(db, "a.request_id=?" + lock, (request_id,))
            if not found:
                return None
            req = found[0]
            final = {AckStatus.ACCEPTED, AckStatus.ALREADY_ACKNOWLEDGED}
            ok = reply.get("ok") is True
            status = str(reply.get("status", ""))
            if req.status not in final:
                if not ok:
                    new = AckStatus.ERROR
                elif status == AckStatus.ALREADY_ACKNOWLEDGED:
                    new = AckStatus.ALREADY_ACKNOWLEDGED
                else:
                    new = AckStatus.ACCEPTED
                error = None if ok else str(reply.get("error") or "error without a reason")
                db.execute(
                    "UPDATE ack_requests SET status=?, replied_ts=?, reply=?, error=? WHERE request_id=?",
                    (str(new), now, json.dumps(reply), error, request_id),
                )
                if ok:
                    by = req.by
                    result = reply.get("result")
                    if new is AckStatus.ALREADY_ACKNOWLEDGED and isinstance(result, dict):
                        ack = result.get("ack")
                        if isinstance(ack, dict) and isinstance(ack.get("by"), str):
                            by = ack["by"]
                    db.execute(
                        "UPDATE tickets SET"
                        " state=CASE state WHEN 'open' THEN 'acknowledged' ELSE state END,"
                        " acknowledged_ts=COALESCE(acknowledged_ts, ?),"
                        " acknowledged_by=COALESCE(acknowledged_by, ?),"
                        " ack_note=COALESCE(ack_note, ?), last_ack_error=NULL,"
                        " version=version+1 WHERE id=?",
                        (now, by, req.note, req.ticket_number),
                    )
                else:
                    db.execute(
                        "UPDATE tickets SET last_ack_error=?, version=version+1 WHERE id=?",
                        (error, req.ticket_number),
                    )
            return self._get(db, req.ticket_number)
