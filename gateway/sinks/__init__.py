"""Sinks: extra destinations that read the durable outbox besides the MQTT uplink.

Each sink is an outbox consumer of its own: it reads with its own cursor and
acknowledges what it delivered, so an outage of one sink loses nothing and holds up
no other.  The runtime only knows the `Sink` protocol; `build_sinks` is the one place
that maps the `sinks:` config section to sink objects.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from gateway.sinks.settings import InfluxConfig, SinksConfig

if TYPE_CHECKING:  # gateway.config imports this package: no runtime import back
    from gateway.config import GatewayConfig
    from gateway.storage.outbox import Consumer, Outbox, OutboxItem

__all__ = ["InfluxConfig", "Sink", "SinksConfig", "build_sinks", "meter_telemetry"]


class Sink(Protocol):
    """A destination fed from the outbox by a thread of its own."""

    name: str

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


def meter_telemetry(item: OutboxItem) -> bool:
    """Accepts meter readings only: events and other kinds' telemetry go to MQTT alone."""
    return item.channel == "telemetry" and item.device_kind == "meter"


def build_sinks(config: GatewayConfig) -> list[Sink]:
    """The sinks the config enables, not started; constructors only assign."""
    # Imported only when configured: influxdb-client takes half a second to import, and
    # the sink modules import the outbox, which imports gateway.config, which imports us.
    sinks: list[Sink] = []
    if config.sinks.influxdb is not None:
        from gateway.sinks.influx import InfluxSink

        sinks.append(InfluxSink(config.sinks.influxdb))
    return sinks
