"""Fixtures of the Modbus driver's tests: a recording context that keeps history."""

from __future__ import annotations

import pytest

from tests.recording import HistoryContext

__all__ = ["ctx"]


@pytest.fixture
def ctx() -> HistoryContext:
    """A fresh recording context that keeps every availability change."""
    return HistoryContext()
