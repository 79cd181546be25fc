"""A real PostgreSQL server for tests and benchmarks, started in a temp directory.

Debian's `postgresql` binaries; the server refuses to run as root, so when we are root
it runs as the `postgres` user in a directory handed to it.  It listens on a free
loopback port and on a unix socket in its own directory; `trust` authentication, so
URLs carry no password.  One server per test session; each test gets its own database.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

from tests.peers import free_port

__all__ = ["PostgresServer", "pg_bin"]

USER = "tickets"


def pg_bin(name: str) -> str | None:
    """The path of a PostgreSQL server program (initdb, pg_ctl), or None if not installed."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


class PostgresServer:
    """initdb + pg_ctl start in a temp directory; `url(db)` for a database on it."""

    def __init__(self, *, fsync: bool = False) -> None:
        # Tests skip fsync (nothing here survives a power cut); benchmarks keep it.
        self.fsync = fsync
        self.dir = Path(tempfile.mkdtemp(prefix="pg-"))
        self.port = free_port()
        self._as: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
            self._as = ["runuser", "-u", "postgres", "--"]

    def _run(self, *cmd: str) -> None:
        done = subprocess.run([*self._as, *cmd], capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"{cmd[0]} failed: {done.stdout}{done.stderr}")

    def start(self) -> PostgresServer:
        initdb, pg_ctl = pg_bin("initdb"), pg_bin("pg_ctl")
        assert initdb and pg_ctl, "PostgreSQL is not installed (apt-get install postgresql)"
        data = str(self.dir / "data")
        self._run(initdb, "-D", data, "-A", "trust", "-U", USER, "--no-sync", "-E", "UTF8")
        opts = (
            f"-k {self.dir} -p {self.port} -c listen_addresses=127.0.0.1"
            f" -c max_connections=200 -c fsync={'on' if self.fsync else 'off'}"
        )
        self._run(pg_ctl, "-D", data, "-o", opts, "-l", str(self.dir / "log"), "-w", "start")
        return self

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{dbname}"

    def new_database(self) -> str:
        """Create an empty database; its URL."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def log(self) -> str:
        path = self.dir / "log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        pg_ctl = pg_bin("pg_ctl")
        if pg_ctl and (self.dir / "data" / "postmaster.pid").exists():
            subprocess.run(
                [*self._as, pg_ctl, "-D", str(self.dir / "data"), "-m", "immediate", "stop"],
                capture_output=True,
                timeout=60,
            )
        shutil.rmtree(self.dir, ignore_errors=True)
