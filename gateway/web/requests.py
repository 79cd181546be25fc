"""Resident service requests: validation, short codes, a SQLite store, and the MQTT side.

A request is stored (with its status history) in a small SQLite file so codes and
statuses survive restarts, and published to the platform through the outbox on
`{base}/requests/{code}` (QoS 1, channel "requests", priority EVENT), so a request made
while the uplink is down is delivered when it returns.  The platform sends status
updates as the `requests/{code}/status` command.

Durable end to end: a request is stored unpublished, handed to the outbox, and marked
published only once the outbox has committed it.  Requests still unpublished (the
process died in between, or the outbox refused) are handed to the outbox again at start
and on `publish_pending`, so the platform gets each request at least once, with `code`
as the idempotency key.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

from community_protocol.enums import RequestCategory, RequestStatusUpdate
from community_protocol.names import SchemaName, schema_ref
from community_protocol.topics import CommandPath, Topics
from gateway.mqtt.commands import Command, CommandFailed
from gateway.sdk.model import ClockState, Identity, Priority, format_ts
from gateway.storage.outbox import Outbox, OutboxItem
from gateway.storage.sqlitestore import Schema, SqliteStore, SyncMode, transaction

__all__ = [
    "CODE_ALPHABET",
    "Category",
    "RequestError",
    "RequestStatus",
    "RequestStore",
    "ServiceRequest",
    "StatusEntry",
    "new_code",
    "normalise_code",
]

log = logging.getLogger(__name__)

# No 0/O, 1/I/L, 2/Z, 5/S, 8/B: easy to read aloud and to type on a kiosk keypad.
CODE_ALPHABET = "34679ACDEFGHJKMNPQRTUVWXY"
CODE_LEN = 6
MAX_TEXT = 500
MAX_FLAT = 16
MAX_PHONE = 24
MAX_NOTE = 500
_PHONE = re.compile(r"^[0-9+\- ]*$")
_CODE = re.compile(rf"^[{CODE_ALPHABET}]{{{CODE_LEN}}}$")


# What a resident asks for: the contract's value set (service-request.json `category`).
Category = RequestCategory


class RequestStatus(StrEnum):
    """Where a request is; `filed` until the platform says it received it."""

    FILED = "filed"
    RECEIVED = "received"
    ASSIGNED = "assigned"
    DONE = "done"


class RequestError(ValueError):
    """A request form field is wrong; `field` names it for the form."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


def new_code() -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LEN))


def normalise_code(text: str) -> str | None:
    """A code as typed (spaces, lower case) in canonical form, or None if it cannot be one."""
    code = re.sub(r"[\s-]", "", text).upper()
    return code if _CODE.match(code) else None


@dataclass(frozen=True, slots=True)
class StatusEntry:
    status: RequestStatus
    note: str
    at: str


@dataclass(frozen=True, slots=True)
class ServiceRequest:
    """A filed request as stored and published."""

    code: str
    kiosk: str
    category: Category
    flat: str
    phone: str
    text: str
    lang: str
    created_at: str
    # Whether created_at was taken with a synced clock; set when the request is filed.
    clock: ClockState = ClockState.UNSYNCED

    @staticmethod
    def validate(
        *, kiosk: str, category: str, flat: str, phone: str, text: str, lang: str
    ) -> ServiceRequest:
        """A request from form fields, or RequestError naming the first wrong field."""
        try:
            cat = Category(category)
        except ValueError as exc:
            raise RequestError("category", "choose one of the buttons") from exc
        flat, phone, text = flat.strip(), phone.strip(), text.strip()
        if len(flat) > MAX_FLAT:
            raise RequestError("flat", f"at most {MAX_FLAT} characters")
        if len(phone) > MAX_PHONE or not _PHONE.match(phone):
            raise RequestError("phone", f"digits, '+', '-' and spaces, at most {MAX_PHONE}")
        if len(text) > MAX_TEXT:
            raise RequestError("text", f"at most {MAX_TEXT} characters")
        if any(ord(c) < 32 and c not in "\n\t" for c in flat + phone + text):
            raise RequestError("text", "control characters are not allowed")
        return ServiceRequest(
            code=new_code(),
            kiosk=kiosk,
            category=cat,
            flat=flat,
            phone=phone,
            text=text,
            lang=lang,
            created_at=format_ts(datetime.now(UTC)),
        )

    def document(self, identity: Identity) -> dict[str, Any]:
        """The `community.service_request` v1 message (protocol/community_protocol/schemas/service-request.json)."""
        return {
            "schema": schema_ref(SchemaName.SERVICE_REQUEST),
            "site": identity.site,
            "gateway": identity.gateway,
            "kiosk": self.kiosk,
            "code": self.code,
            "category": str(self.category),
            "flat": self.flat or None,
            "phone": self.phone or None,
            "text": self.text,
            "lang": self.lang,
            "created_at": self.created_at,
            "clock": str(self.clock),
        }


_SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    code TEXT PRIMARY KEY, kiosk TEXT NOT NULL, category TEXT NOT NULL, flat TEXT NOT NULL,
    phone TEXT NOT NULL, text TEXT NOT NULL, lang TEXT NOT NULL, created_at TEXT NOT NULL,
    published INTEGER NOT NULL DEFAULT 0, clock TEXT
);
CREATE TABLE IF NOT EXISTS request_status (
    id INTEGER PRIMARY KEY, code TEXT NOT NULL REFERENCES requests(code),
    status TEXT NOT NULL, note TEXT NOT NULL, at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS request_status_code ON request_status(code);
"""

# The columns of a ServiceRequest, in its field order.
_COLUMNS = "code, kiosk, category, flat, phone, text, lang, created_at, clock"


def _add_columns(db: sqlite3.Connection) -> None:
    # Files from before the schema was versioned lack the columns added since.
    columns = {row[1] for row in db.execute("PRAGMA table_info(requests)")}
    if columns and "published" not in columns:
        # A file of the first version: its requests were handed to the outbox right
        # after they were stored, so they count as published (no flood at upgrade).
        db.execute("ALTER TABLE requests ADD COLUMN published INTEGER NOT NULL DEFAULT 1")
    if columns and "clock" not in columns:
        db.execute("ALTER TABLE requests ADD COLUMN clock TEXT")


def _request_of(row: tuple[Any, ...]) -> ServiceRequest:
    # No clock stored (a file of an older version): not known to be synced.
    clock = ClockState.UNSYNCED if row[-1] is None else ClockState(row[-1])
    code, kiosk, category, flat, phone, text, lang, created_at = row[:-1]
    return ServiceRequest(
        code, kiosk, Category(category), flat, phone, text, lang, created_at, clock
    )


class RequestStore(SqliteStore):
    """Service requests and their status history in SQLite; the blocking work in a thread."""

    schema = Schema("request store", 1, _SCHEMA, {1: _add_columns})

    def __init__(
        self,
        path: Path,
        outbox: Outbox,
        topics: Topics,
        clock: Callable[[], ClockState] = lambda: ClockState.UNSYNCED,
    ) -> None:
        super().__init__(path, sync=SyncMode.FULL)
        self._outbox = outbox
        self._topics = topics
        self._clock = clock  # gateway.sdk.clock.Clock.state: is the wall clock synced now?
        self._lock = threading.Lock()
        # Codes being handed to the outbox right now, so `publish_pending` does not hand
        # a request filed this moment a second time.
        self._in_flight: set[str] = set()

    def opened(self, conn: sqlite3.Connection) -> None:
        if self.salvage is not None:
            self._outbox.report_storage_fault({"store": "requests", **self.salvage.as_dict()})

    def close(self) -> None:
        # Under the lock: a write a cancelled request left running in its thread must
        # end first; closing SQLite under it crashes the process.
        with self._lock:
            super().close()

    def _db(self) -> sqlite3.Connection:
        # Opened on first use: a status command can arrive as soon as the uplink is up,
        # possibly before the web service has started.
        with self._lock:
            if not self.is_open:
                self.open()
            return self.conn

    # ---- filing ----------------------------------------------------------------------

    def _insert(self, req: ServiceRequest) -> ServiceRequest:
        db = self._db()
        with self._lock:
            # A fresh code on the rare collision: 25^6 is about 244 million codes.
            for _ in range(20):
                try:
                    with transaction(db):
                        db.execute(
                            f"INSERT INTO requests ({_COLUMNS}, published)"
                            " VALUES (?,?,?,?,?,?,?,?,?,0)",
                            (
                                req.code,
                                req.kiosk,
                                str(req.category),
                                req.flat,
                                req.phone,
                                req.text,
                                req.lang,
                                req.created_at,
                                str(req.clock),
                            ),
                        )
                        db.execute(
                            "INSERT INTO request_status (code, status, note, at) VALUES (?,?,?,?)",
                            (req.code, str(RequestStatus.FILED), "", req.created_at),
                        )
                    return req
                except sqlite3.IntegrityError:
                    req = replace(req, code=new_code())
            raise RuntimeError("could not find a free request code")

    def _mark_published(self, code: str) -> None:
        db = self._db()
        with self._lock:
            db.execute("UPDATE requests SET published = 1 WHERE code = ?", (code,))

    def _is_published(self, code: str) -> bool:
        db = self._db()
        with self._lock:
            row = db.execute("SELECT published FROM requests WHERE code = ?", (code,)).fetchone()
        return row is None or bool(row[0])  # a purged request is not handed over either

    def _unpublished(self) -> list[ServiceRequest]:
        db = self._db()
        with self._lock:
            rows = db.execute(
                f"SELECT {_COLUMNS} FROM requests WHERE published = 0 ORDER BY created_at, code"
            ).fetchall()
        return [_request_of(r) for r in rows]

    async def _publish(self, req: ServiceRequest) -> None:
        """Hand a stored request to the outbox, then mark it published (raises if refused)."""
        payload = json.dumps(
            req.document(self._topics.identity), ensure_ascii=False, separators=(",", ":")
        ).encode()
        self._in_flight.add(req.code)
        try:
            await self._outbox.aput(
                OutboxItem(
                    priority=Priority.EVENT,
                    channel="requests",
                    device_kind="kiosk",
                    topic=self._topics.request(req.code),
                    build_payload=lambda _seq: payload,
                )
            )
            # Only now: a crash before this line leaves the request unpublished, and it
            # is handed to the outbox again at the next start.
            await asyncio.to_thread(self._mark_published, req.code)
        finally:
            self._in_flight.discard(req.code)

    async def file(self, req: ServiceRequest) -> ServiceRequest:
        """Store a request, then hand it to the outbox; returns it with its final code.

        Once this returns the request is durable in SQLite, so its code may be shown.  If
        the outbox refuses it (full disk, stopping), it stays unpublished and is handed
        over again by `publish_pending`; the resident keeps the code.
        """
        req = await asyncio.to_thread(self._insert, replace(req, clock=self._clock()))
        try:
            await self._publish(req)
        except Exception:
            log.exception(
                "service request %s stored, not yet in the outbox; retried later", req.code
            )
        return req

    async def publish_pending(self) -> int:
        """Hand every stored, unpublished request to the outbox; how many were handed."""
        pending = await asyncio.to_thread(self._unpublished)
        n = 0
        for req in pending:
            # Looked at again just before: `file` may have handed it over meanwhile (it
            # is then in flight until marked, and marked before it leaves the set).
            if await asyncio.to_thread(self._is_published, req.code):
                continue
            if req.code in self._in_flight:
                continue
            await self._publish(req)
            n += 1
        if n:
            log.info("handed %d stored service requests to the outbox", n)
        return n

    # ---- retention -------------------------------------------------------------------

    def purge(self, keep_days: int, now: datetime | None = None) -> int:
        """Delete requests filed more than `keep_days` ago, with their history; how many."""
        cutoff = format_ts((now or datetime.now(UTC)) - timedelta(days=keep_days))
        db = self._db()
        with self._lock, transaction(db):
            old = "SELECT code FROM requests WHERE created_at < ?"
            db.execute(f"DELETE FROM request_status WHERE code IN ({old})", (cutoff,))
            n = db.execute("DELETE FROM requests WHERE created_at < ?", (cutoff,)).rowcount
        return int(n)

    # ---- status ----------------------------------------------------------------------

    def _history(self, code: str) -> tuple[ServiceRequest, list[StatusEntry]] | None:
        db = self._db()
        with self._lock:
            row = db.execute(f"SELECT {_COLUMNS} FROM requests WHERE code = ?", (code,)).fetchone()
            if row is None:
                return None
            rows = db.execute(
                "SELECT status, note, at FROM request_status WHERE code = ? ORDER BY id",
                (code,),
            ).fetchall()
        return _request_of(row), [StatusEntry(RequestStatus(s), n, a) for s, n, a in rows]

    async def history(self, code: str) -> tuple[ServiceRequest, list[StatusEntry]] | None:
        """The request with this code and its statuses, oldest first; None if unknown."""
        return await asyncio.to_thread(self._history, code)

    def _add_status(self, code: str, status: RequestStatus, note: str) -> str | None:
        db = self._db()
        at = format_ts(datetime.now(UTC))
        with self._lock:
            if db.execute("SELECT 1 FROM requests WHERE code = ?", (code,)).fetchone() is None:
                return None
            last = db.execute(
                "SELECT status, note, at FROM request_status WHERE code = ? ORDER BY id DESC",
                (code,),
            ).fetchone()
            if last is not None and (last[0], last[1]) == (str(status), note):
                # The same update again (QoS 1 redelivers): one line in the history.
                return str(last[2])
            db.execute(
                "INSERT INTO request_status (code, status, note, at) VALUES (?,?,?,?)",
                (code, str(status), note, at),
            )
        return at

    async def command(self, cmd: Command) -> tuple[str, Any]:
        """The `requests/{code}/status` command of the platform: record a status update."""
        if len(cmd.parts) != 3 or cmd.parts[2] != "status":
            raise CommandFailed(f"request commands are {CommandPath.REQUEST_STATUS_FORM}")
        code = cmd.parts[1]
        if normalise_code(code) != code:
            raise CommandFailed(f"{code!r} is not a request code")
        unknown = set(cmd.args) - {"status", "note"}
        if unknown:
            raise CommandFailed(f"unknown field {sorted(unknown)[0]!r}")
        raw = cmd.args.get("status")
        if raw is None:
            raise CommandFailed("field 'status' required")
        # The statuses the contract lets the platform send (command-request.json).
        allowed = list(RequestStatusUpdate)
        if raw not in [str(s) for s in allowed]:
            names = ", ".join(str(s) for s in allowed)
            raise CommandFailed(f"field 'status' must be one of {names}")
        note = cmd.args.get("note", "")
        if not isinstance(note, str) or len(note) > MAX_NOTE:
            raise CommandFailed(f"field 'note' must be a string of at most {MAX_NOTE} characters")
        at = await asyncio.to_thread(self._add_status, code, RequestStatus(raw), note)
        if at is None:
            raise CommandFailed(f"unknown request {code!r}")
        return "done", {"code": code, "status": raw, "at": at}
