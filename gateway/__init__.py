"""Community IoT edge gateway runtime."""

__version__ = "0.1.0"
