"""The project's recording driver context, for this folder's driver tests."""

from tests.conftest import recording_ctx

__all__ = ["recording_ctx"]
