"""The project's real-peer fixtures (socat pty pair, recording context) for this folder."""

from tests.conftest import ptys, recording_ctx

__all__ = ["ptys", "recording_ctx"]
