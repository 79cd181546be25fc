"""Fixtures of the central tests: the repository's real peers (Mosquitto per test)."""

from __future__ import annotations

from tests.conftest import broker

__all__ = ["broker"]
