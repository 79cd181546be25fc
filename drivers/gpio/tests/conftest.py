"""The project's recording driver context and Mosquitto broker, for this folder's tests."""

from tests.conftest import broker, recording_ctx

__all__ = ["broker", "recording_ctx"]
