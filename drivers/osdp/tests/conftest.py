"""The project's fixtures this folder's tests use: recording context, broker, pty pair."""

from tests.conftest import broker, ptys, recording_ctx

__all__ = ["broker", "ptys", "recording_ctx"]
