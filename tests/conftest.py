"""Shared fixtures: real peers started per test, and a recording driver context."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.sdk.model import Message
from tests.peers import Mosquitto, PtyPair, pty_pair


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A running Mosquitto of this test's own on a free port; stopped afterwards."""
    b = Mosquitto(tmp_path / "broker")
    b.start()
    yield b
    b.remove()


@pytest.fixture
def ptys(tmp_path: Path) -> Iterator[PtyPair]:
    with pty_pair(tmp_path) as pair:
        yield pair


class RecordingContext:
    """The driver's side of the runtime, recording what a driver emits.

    Used by driver tests that check one driver against its real peer; end-to-end tests
    run the real runtime instead.
    """

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.availability: dict[str, tuple[bool | None, str]] = {}
        self.logger = logging.getLogger("test.driver")
        self.new_message = asyncio.Event()

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def emit(self, message: Message) -> None:
        self.messages.append(message)
        self.new_message.set()

    def set_available(self, device_id: str, available: bool | None, reason: str = "") -> None:
        self.availability[device_id] = (available, reason)


@pytest.fixture
def recording_ctx() -> RecordingContext:
    return RecordingContext()
