"""Sinks: extra destinations that read the durable outbox besides the MQTT uplink.

Each sink is an outbox consumer of its own: it reads with its own cursor and
acknowledges what it delivered, so an outage of one sink loses nothing and holds up
no other.  Lives here: `settings` (the `sinks:` section; imported by `gateway.config`),
`sink` (the `Sink` protocol the runtime knows, and `build_sinks`, the one place that
maps the section to sink objects), `influx` and `influx_mapping` (InfluxDB / Victoria
Metrics), `wiring` (a host's health message reports the sinks).  Only the config models
are imported here, so that `gateway.config` can load them alone.

May import: `gateway.sdk`, `gateway.config`, `gateway.storage`, `gateway.mqtt`,
`gateway.host` and the other feature packages; `settings` imports only `gateway.sdk`.
"""

from gateway.sinks.settings import InfluxConfig, SinksConfig

__all__ = ["InfluxConfig", "SinksConfig"]
