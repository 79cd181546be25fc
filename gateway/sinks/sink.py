"""The `Sink` protocol the runtime knows sinks by, and the one place that builds them."""

from __future__ import annotations

from typing import Protocol

from gateway.config import GatewayConfig
from gateway.storage.outbox import Consumer, Outbox

__all__ = ["Sink", "build_sinks"]


class Sink(Protocol):
    """A destination fed from the outbox by a thread of its own."""

    name: str

    @property
    def batch_s(self) -> float:
        """How long this sink gathers rows before it writes and acknowledges them.

        The outbox keeps readings in RAM at least this long (plus a second), so a
        healthy sink's batching does not send them to the SD card.
        """
        ...

    def consumer(self) -> Consumer:
        """The outbox consumer, with `accepts` picking what this sink stores."""
        ...

    def start(self, outbox: Outbox) -> None:
        """Start delivering; the outbox is open and has this sink's consumer."""
        ...

    def stop(self, timeout: float) -> None:
        """Deliver what can be delivered within `timeout`, then stop; before the outbox closes."""
        ...

    def health(self) -> dict[str, int | float | str]:
        """Figures for the health message's `sinks.<name>` object."""
        ...


def build_sinks(config: GatewayConfig) -> list[Sink]:
    """The sinks the config enables, not started; constructors only assign."""
    # Imported only when configured: influxdb-client takes half a second to import.
    sinks: list[Sink] = []
    if config.sinks.influxdb is not None:
        from gateway.sinks.influx import InfluxSink

        sinks.append(InfluxSink(config.sinks.influxdb))
    return sinks
