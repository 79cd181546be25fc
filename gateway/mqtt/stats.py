"""The uplink's publishing figures, for the health message's `publish` section."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["PublishStats"]


@dataclass(frozen=True, slots=True)
class PublishStats:
    """Figures for the health message's `publish` section."""

    published_total: int
    acked_total: int
    rate_per_s: float
    inflight: int
    connected: bool
    connects_total: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "published_total": self.published_total,
            "acked_total": self.acked_total,
            "rate_per_s": round(self.rate_per_s, 1),
            "inflight": self.inflight,
            "connected": self.connected,
            "connects_total": self.connects_total,
        }
