"""The fleet's audit trail in central's database: what was pushed, and what gateways said.

One table, `fleet_audit`, in the same database as the tickets (a SQLite file by
default, PostgreSQL through `community_central.database`).  Rows are of three
origins: `pushed` (a desired document or an update command this fleet published: who
signed it, with which key, its version and hash), `reported` (the gateway's answer)
and `event` (a `gateway.config` or `gateway.update` audit event a gateway published:
applied, committed, refused, rolled back).  A software update's rows name its
`release` (a string) and leave the config `version` empty.  Gateway events carry a `msg_id`, unique in the table, so the
same event seen twice (a QoS 1 duplicate, two listeners) is stored once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..database import Database, open_database

__all__ = ["AuditError", "AuditRow", "AuditStore"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS fleet_audit (
    id {pk},
    at {real} NOT NULL,
    origin TEXT NOT NULL,
    site TEXT NOT NULL,
    gateway TEXT NOT NULL,
    version INTEGER,
    result TEXT NOT NULL,
    signed_by TEXT,
    key_id TEXT,
    sha256 TEXT,
    reason TEXT NOT NULL DEFAULT '',
    msg_id TEXT UNIQUE,
    release TEXT
);
CREATE INDEX IF NOT EXISTS fleet_audit_gateway ON fleet_audit (site, gateway, id)
"""

COLUMNS = (
    "at, origin, site, gateway, version, result, signed_by, key_id, sha256, reason, msg_id, release"
)
MAX_REASON = 1000


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@dataclass(frozen=True, slots=True)
class AuditRow:
    """One line of the audit trail; `at` is Unix time (when it was recorded here)."""

    at: float
    origin: str  # pushed / reported / event
    site: str
    gateway: str
    version: int | None
    result: str
    signed_by: str | None = None
    key_id: str | None = None
    sha256: str | None = None
    reason: str = ""
    msg_id: str | None = None
    release: str | None = None  # a software update's release; `version` is a config's

    def row(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "origin": self.origin,
            "site": self.site,
            "gateway": self.gateway,
            "version": self.version,
            "result": self.result,
            "signed_by": self.signed_by,
            "key_id": self.key_id,
            "sha256": self.sha256,
            "reason": self.reason,
            "msg_id": self.msg_id,
            "release": self.release,
        }


class AuditError(RuntimeError):
    """The audit database cannot be opened; the message names it (no password) and why."""


class AuditStore:
    """The `fleet_audit` table; one instance per thread (like `Database`)."""

    def __init__(self, target: str | Path) -> None:
        shown = str(target).split("@")[-1]  # a URL's user and password stay out of messages
        try:
            self.db: Database = open_database(target)
        except ImportError as exc:
            raise AuditError(
                f"{shown}: PostgreSQL needs psycopg: pip install 'community-central[postgres]'"
            ) from exc
        except Exception as exc:  # sqlite3, psycopg or OSError: one line saying why
            raise AuditError(f"{shown}: {_first_line(exc)}") from exc
        try:
            self.db.create(SCHEMA)
        except Exception as exc:
            self.db.close()
            raise AuditError(f"{shown}: {_first_line(exc)}") from exc

    def close(self) -> None:
        self.db.close()

    def record(self, row: AuditRow) -> bool:
        """Store one row; False when it is a gateway event stored already."""
        values = (
            row.at or time.time(),
            row.origin,
            row.site,
            row.gateway,
            row.version,
            row.result,
            row.signed_by,
            row.key_id,
            row.sha256,
            row.reason[:MAX_REASON],
            row.msg_id,
            row.release,
        )
        with self.db.transaction() as db:
            cur = db.execute(
                f"INSERT INTO fleet_audit ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (msg_id) DO NOTHING",
                values,
            )
            return bool(cur.rowcount)

    def last_pushed_version(self, site: str, gateway: str) -> int:
        """The highest version this fleet pushed to the gateway (0 if none)."""
        cur = self.db.execute(
            "SELECT MAX(version) FROM fleet_audit WHERE origin = 'pushed' AND site = ? AND gateway = ?",
            (site, gateway),
        )
        found = cur.fetchone()
        return int(found[0]) if found and found[0] is not None else 0

    def rows(
        self, *, site: str | None = None, gateway: str | None = None, limit: int = 100
    ) -> list[AuditRow]:
        """The newest rows first, of one site or gateway if given."""
        where, args = [], []
        if site is not None:
            where.append("site = ?")
            args.append(site)
        if gateway is not None:
            where.append("gateway = ?")
            args.append(gateway)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        cur = self.db.execute(
            f"SELECT {COLUMNS} FROM fleet_audit{clause} ORDER BY id DESC LIMIT ?",
            (*args, limit),
        )
        return [AuditRow(*r) for r in cur.fetchall()]
