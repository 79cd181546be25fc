"""The project's real-peer fixtures (Mosquitto broker, recording context) for this folder."""

from tests.conftest import broker, recording_ctx

__all__ = ["broker", "recording_ctx"]
