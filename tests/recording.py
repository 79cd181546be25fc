"""A recording driver context: the driver's side of the runtime, for driver tests."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from gateway.sdk.model import Message

__all__ = ["HistoryContext", "RecordingContext"]


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


class HistoryContext(RecordingContext):
    """A recording context that also keeps every availability change, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.changes: list[tuple[str, bool | None, str]] = []

    def set_available(self, device_id: str, available: bool | None, reason: str = "") -> None:
        super().set_available(device_id, available, reason)
        self.changes.append((device_id, available, reason))
