"""The project's pytest plugin: real-peer fixtures every test folder shares, and ordering.

Registered once in the root conftest.py (`pytest_plugins`), so the tests of `tests/` and of
every `drivers/<name>/tests/` get these fixtures without importing a conftest module.
Helpers that are not fixtures live in ordinary modules (tests/peers.py, tests/harness.py,
tests/recording.py, tests/driverkit.py) and are imported as such.

Ordering: tests marked `slow` run first. With pytest-xdist (./scripts/test runs several
workers) the long ones then start at once on their own workers while the many short ones
fill the others, instead of one worker finishing a 3-minute install test alone at the end.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.peers import Mosquitto, PtyPair, pty_pair
from tests.recording import RecordingContext

__all__ = ["broker", "ptys", "pytest_collection_modifyitems", "recording_ctx"]


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A running Mosquitto of this test's own on a free port; stopped afterwards."""
    b = Mosquitto(tmp_path / "broker")
    b.start()
    yield b
    b.remove()


@pytest.fixture
def ptys(tmp_path: Path) -> Iterator[PtyPair]:
    """A socat pty pair of this test's own (two linked serial-like ends)."""
    with pty_pair(tmp_path) as pair:
        yield pair


@pytest.fixture
def recording_ctx() -> RecordingContext:
    """A fresh recording driver context."""
    return RecordingContext()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Slow tests first, otherwise in collection order (a stable sort keeps it).

    Every xdist worker collects and sorts the same way, as xdist requires.
    """
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
