"""The project's pytest plugin: real-peer fixtures every test folder shares, and ordering.

Registered once in the root conftest.py (`pytest_plugins`), so the tests of `tests/` and of
every `drivers/<name>/tests/` get these fixtures without importing a conftest module.
Helpers that are not fixtures live in ordinary modules (tests/peers.py, tests/harness.py,
tests/recording.py, tests/driverkit.py) and are imported as such.

Leaks: an MQTT client (paho) whose network thread a test started and never stopped is
stopped after the test (see `pytest_runtest_teardown`): such threads reconnected to
brokers long gone, costing CPU and file descriptors for the rest of the worker's life.
A `Subscriber` (tests/harness.py) may rely on it; any other client gets a warning that
names the test.

Ordering: tests marked `slow` run first. With pytest-xdist (./scripts/test runs several
workers) the long ones then start at once on their own workers while the many short ones
fill the others, instead of one worker finishing a 3-minute install test alone at the end.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Generator, Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from tests.harness import SUBSCRIBER_CLIENTS
from tests.peers import Mosquitto, PtyPair, pty_pair
from tests.recording import RecordingContext

__all__ = [
    "LeftRunning",
    "broker",
    "ptys",
    "pytest_collection_modifyitems",
    "pytest_fixture_setup",
    "pytest_runtest_call",
    "pytest_runtest_setup",
    "pytest_runtest_teardown",
    "recording_ctx",
]

# paho names the thread of `loop_start()` so.
_PAHO_THREAD = "paho-mqtt-client-"
_BEFORE = pytest.StashKey[set[int]]()  # threads alive before the test's own ones
_BROAD = pytest.StashKey[bool]()


class LeftRunning(UserWarning):
    """A test left a client thread running (not a ResourceWarning: Python hides those)."""


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


_current: list[pytest.Item] = []  # the item whose setup runs now


def _threads() -> set[int]:
    return {t.ident for t in threading.enumerate() if t.ident}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, None, None]:
    item.stash[_BEFORE] = _threads()
    _current[:] = [item]
    yield
    _current.clear()


def pytest_fixture_setup(fixturedef: pytest.FixtureDef[object]) -> None:
    # A fixture that outlives the test (module, session) may keep a client running on
    # purpose: then only what the test body started counts.
    if fixturedef.scope != "function" and _current:
        _current[0].stash[_BROAD] = True


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    if item.stash.get(_BROAD, False):
        item.stash[_BEFORE] = _threads()
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, None, None]:
    """After the test's fixtures are gone: stop the MQTT clients it left running."""
    yield
    before = item.stash.get(_BEFORE, None)
    if before is None:
        return
    left = [
        t
        for t in threading.enumerate()
        if t.ident not in before and t.name.startswith(_PAHO_THREAD) and t.is_alive()
    ]
    clients = [getattr(getattr(t, "_target", None), "__self__", None) for t in left]
    stopping = [c for c in clients if isinstance(c, mqtt.Client)]
    for client in stopping:  # all first: each loop then ends within its 1 s wait
        client.disconnect()
    for client in stopping:
        client.loop_stop()
    # A Subscriber is stopped here by design (tests/harness.py); any other client the
    # test should have stopped itself.
    named = [
        t.name.removeprefix(_PAHO_THREAD)
        for t, c in zip(left, clients, strict=True)
        if not (isinstance(c, mqtt.Client) and c in SUBSCRIBER_CLIENTS)
    ]
    if named:
        warnings.warn(
            f"{item.nodeid} left MQTT clients running ({', '.join(named)}): stopped "
            "after it; stop them in the test or fixture (client.loop_stop())",
            LeftRunning,
            stacklevel=1,
        )
