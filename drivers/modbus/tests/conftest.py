"""Fixtures of the Modbus driver's tests: a recording context that keeps history."""

from __future__ import annotations

import pytest

from tests.recording import RecordingContext

__all__ = ["HistoryContext", "ctx"]


class HistoryContext(RecordingContext):
    """A recording context that also keeps every availability change, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.changes: list[tuple[str, bool | None, str]] = []

    def set_available(self, device_id: str, available: bool | None, reason: str = "") -> None:
        super().set_available(device_id, available, reason)
        self.changes.append((device_id, available, reason))


@pytest.fixture
def ctx() -> HistoryContext:
    return HistoryContext()
