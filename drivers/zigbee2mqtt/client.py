"""The paho adapter: one client per broker, its thread handing everything to the event loop.

paho runs its network loop in its own thread (`loop_start`) and reconnects by itself;
every callback only forwards to the asyncio loop with `call_soon_threadsafe`, so the
driver never touches its state from two threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

__all__ = ["Connected", "Disconnected", "Inbound", "Received", "SubscriberClient"]

RECONNECT_MIN_S = 1
RECONNECT_MAX_S = 30


@dataclass(frozen=True, slots=True)
class Received:
    topic: str
    payload: bytes
    retained: bool


@dataclass(frozen=True, slots=True)
class Connected:
    pass


@dataclass(frozen=True, slots=True)
class Disconnected:
    reason: str


Inbound = Received | Connected | Disconnected


class SubscriberClient:
    """Subscribes to `topics` on one broker and queues what happens, in order."""

    def __init__(self, host: str, port: int, topics: list[str]) -> None:
        self.host = host
        self.port = port
        self.topics = topics
        self.inbox: asyncio.Queue[Inbound] = asyncio.Queue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: mqtt.Client | None = None

    def start(self) -> None:
        """Connect in paho's thread; returns at once, a failed connect is retried there."""
        self._loop = asyncio.get_running_loop()
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"community-gateway-z2m-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5,
        )
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_connect_fail = self._on_connect_fail
        client.on_subscribe = self._on_subscribe
        client.reconnect_delay_set(RECONNECT_MIN_S, RECONNECT_MAX_S)
        client.connect_async(self.host, self.port, keepalive=30)
        client.loop_start()
        self._client = client

    def stop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.disconnect()
            client.loop_stop()

    def _put(self, item: Inbound) -> None:
        assert self._loop is not None
        # The loop is gone once the driver was cancelled and the gateway shuts down;
        # raising here would end paho's thread.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self.inbox.put_nowait, item)

    def _on_connect(
        self, client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any
    ) -> None:
        if reason.is_failure:
            self._put(Disconnected(f"broker refused the connection: {reason}"))
            return
        # Connected is reported once the broker granted the subscriptions (on_subscribe):
        # from then on nothing zigbee2mqtt publishes is missed.
        client.subscribe([(topic, 1) for topic in self.topics])

    def _on_subscribe(
        self, _client: mqtt.Client, _userdata: Any, _mid: int, reasons: list[Any], _props: Any
    ) -> None:
        failed = [str(r) for r in reasons if r.is_failure]
        if failed:
            self._put(Disconnected(f"broker refused the subscription: {', '.join(failed)}"))
            return
        self._put(Connected())

    def _on_disconnect(
        self, _client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any
    ) -> None:
        self._put(Disconnected(f"lost the connection to zigbee2mqtt's broker ({reason})"))

    def _on_connect_fail(self, _client: mqtt.Client, _userdata: Any) -> None:
        self._put(
            Disconnected(f"cannot connect to zigbee2mqtt's broker at {self.host}:{self.port}")
        )

    def _on_message(self, _client: mqtt.Client, _userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self._put(Received(msg.topic, bytes(msg.payload), bool(msg.retain)))
