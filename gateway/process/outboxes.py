"""The gateway's outbox, built the one way that keeps every consumer's rows, and its fault events."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from functools import partial
from typing import Any

from community_protocol.topics import Topics
from gateway.config import LoadedConfig
from gateway.mqtt.uplink import CONSUMER
from gateway.sdk.clock import Clock
from gateway.sdk.model import GATEWAY_STORAGE, Priority, encode_gateway_event
from gateway.sinks.sink import Sink, build_sinks
from gateway.storage.outbox import Consumer, Outbox, OutboxItem
from gateway.storage.outbox_ram import default_ram_dir

__all__ = ["StorageEvents", "build_outbox"]


def build_outbox(
    loaded: LoadedConfig, sinks: Sequence[Sink] | None = None, *, memory_tier: bool = True
) -> Outbox:
    """The outbox of a config, with the MQTT consumer and every configured sink's.

    Everything that opens the outbox must build it here: `Outbox.open` deletes the
    pending rows of any consumer it is not given.  `sinks` None: the config's sinks.
    `memory_tier` False: leave the RAM file alone (a command run beside the gateway
    must not take the running gateway's readings to disk and remove its file).
    """
    cfg = loaded.config.outbox
    ram_dir = default_ram_dir() if memory_tier and cfg.memory_tier else None
    if sinks is None:
        sinks = build_sinks(loaded.config)
    return Outbox(
        cfg.path,
        max_messages=cfg.max_messages,
        commit_interval_ms=cfg.commit_interval_ms,
        quiet_ms=cfg.commit_quiet_ms,
        sync=cfg.sync,
        consumers=[Consumer(CONSUMER), *(s.consumer() for s in sinks)],
        on_storage_fault=StorageEvents(loaded, Clock(loaded.config.clock.check)).item,
        reserve_bytes=cfg.reserve_bytes,
        ram_dir=ram_dir,
        # A sink acknowledges after its batch is written: readings wait for it in RAM.
        spill_after_s=max([cfg.spill_after_s, *(s.batch_s + 1.0 for s in sinks)]),
    )


class StorageEvents:
    """Builds the `gateway.storage` events the outbox and the stores report their faults with."""

    def __init__(self, loaded: LoadedConfig, clock: Clock) -> None:
        self.identity = loaded.config.identity
        self.topics = Topics(loaded.config.broker.topic_prefix, self.identity)
        self.clock = clock

    def item(self, data: Mapping[str, Any]) -> OutboxItem:
        ts = datetime.now(UTC)
        return OutboxItem(
            priority=Priority.EVENT,
            channel="events",
            device_kind="gateway",
            topic=self.topics.gateway_events,
            build_payload=partial(self._encode, dict(data), ts),
        )

    def _encode(self, data: dict[str, Any], ts: datetime, seq: int) -> bytes:
        return encode_gateway_event(
            GATEWAY_STORAGE,
            data,
            self.identity,
            seq,
            self.clock.state(),
            ts,
            uptime_ms=self.clock.uptime_ms(),
            boot_id=self.clock.boot_id,
        )
