"""Plugs a gateway's sinks into its host: their figures in the health message."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gateway.host import Host
from gateway.sinks.sink import Sink

__all__ = ["attach"]


def attach(host: Host, sinks: Sequence[Sink]) -> None:
    """Report `sinks` under the health message's `sinks` (absent without sinks).

    The runtime itself starts and stops them: their outbox consumers must exist when
    the outbox opens, and they stop with the uplink, after the drivers.
    """
    if not sinks:  # no `sinks` key, as before, on gateways without sinks
        return

    def health() -> dict[str, Any]:
        return {sink.name: sink.health() for sink in sinks}

    host.add_health_part("sinks", health)
