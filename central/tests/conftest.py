"""Fixtures of the central tests: a real PostgreSQL server per session (per xdist worker)
with a fresh database per test; the Mosquitto `broker` comes from tests/plugin.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from central.tests.pgserver import PostgresServer, pg_bin

__all__ = ["db_target", "pg_server", "pg_url"]


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the session (initdb + start take a second or two)."""
    if pg_bin("initdb") is None:
        pytest.skip("PostgreSQL is not installed (scripts/bootstrap installs it)")
    server = PostgresServer().start()
    yield server
    server.stop()


@pytest.fixture
def pg_url(pg_server: PostgresServer) -> str:
    """The URL of a new, empty database of this test's own."""
    return pg_server.new_database()


@pytest.fixture(params=["sqlite", "postgres"])
def db_target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """`--db` of each store: a SQLite file, then a PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "tickets.db")
    url: str = request.getfixturevalue("pg_url")
    return url
