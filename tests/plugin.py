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

Ordering (longest first, so the workers of pytest-xdist end together): first the files
with tests that took 8 s or more in a measured run (tests/durations.json, written by
the CPU report of tests/cpureport.py; a file not measured yet: its `slow` tests), the
file with the longest such test first and those tests first in it; then the other
files, the longest first. Before, the ticket end-to-end tests (15-25 s each, collected
last from central/tests) ended every run on a few busy workers. A file's tests stay
together: taken apart, the browser tests launched Chromium again for each part.
"""

from __future__ import annotations

import json
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


DURATIONS = Path(__file__).with_name("durations.json")
_UNMEASURED_SLOW_S = 60.0  # a `slow` test not measured yet: assume it is long


def _durations() -> tuple[dict[str, float], dict[str, float]]:
    """Seconds per file, and per test for the long ones, from tests/durations.json."""
    try:
        doc = json.loads(DURATIONS.read_text())
        files = {name: float(f["wall"]) for name, f in doc["files"].items()}
        return files, {nodeid: float(s) for nodeid, s in doc["long"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}, {}  # no figures: the `slow` markers alone order the suite


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Files with long tests first (by their longest), those tests first in them; then
    the other files, the longest first. A file's tests stay together.

    Every xdist worker collects and sorts the same way (the same file), as xdist requires.
    """
    files, long = _durations()

    def seconds(item: pytest.Item) -> float:
        if item.nodeid.split("::")[0] in files:  # measured: long only if it took long
            return long.get(item.nodeid, 0.0)
        return _UNMEASURED_SLOW_S if item.get_closest_marker("slow") else 0.0

    longest: dict[str, float] = {}
    for item in items:
        name = item.nodeid.split("::")[0]
        longest[name] = max(longest.get(name, 0.0), seconds(item))

    def key(item: pytest.Item) -> tuple[int, float, str, float]:
        name = item.nodeid.split("::")[0]
        if longest[name]:
            return (0, -longest[name], name, -seconds(item))
        return (1, -files.get(name, 0.0), name, 0.0)

    items.sort(key=key)  # stable: collection order among a file's short tests


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
