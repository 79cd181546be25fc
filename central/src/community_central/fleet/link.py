"""The fleet command's broker connection: subscribe, collect what arrives, publish and confirm.

A short-lived MQTT 5 client (clean start, no session: the fleet command reads retained
documents and waits for answers, it does not consume a queue).  Messages arrive on
paho's thread and wait in a bounded queue for the caller's thread; beyond the bound the
newest are dropped and counted, so a broker flooding us costs memory we chose.
"""

from __future__ import annotations

import queue
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties

from ..broker import BrokerSettings, build_client, refused_credentials

__all__ = ["FleetLink", "Incoming", "LinkError"]

MAX_QUEUED = 50_000
MAX_PAYLOAD = 1024 * 1024 + 4096  # a desired document is at most 1 MiB (gateway side)


class LinkError(RuntimeError):
    """The broker could not be reached or refused us; the message says which, in one line."""


@dataclass(frozen=True, slots=True)
class Incoming:
    topic: str
    payload: bytes
    retain: bool


class FleetLink:
    """One connection for one fleet operation; use as a context manager."""

    def __init__(self, broker: BrokerSettings, *, connect_timeout_s: float = 10.0) -> None:
        self.broker = broker
        self.connect_timeout_s = connect_timeout_s
        self.dropped = 0
        self._queue: queue.Queue[Incoming] = queue.Queue(MAX_QUEUED)
        self._connected = threading.Event()
        self._refused: str | None = None
        self._subscribed: dict[int, threading.Event] = {}
        self._lock = threading.Lock()
        self._client: mqtt.Client | None = None
        # A topic level too: MQTT 5 replies come to `reply/central/{client_id}`.
        self.client_id = f"fleet-{uuid.uuid4().hex[:12]}"

    def __enter__(self) -> FleetLink:
        client = build_client(self.broker, self.client_id)
        client.on_connect = self._on_connect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        try:
            client.connect(self.broker.host, self.broker.port, keepalive=self.broker.keepalive_s)
        except (OSError, ValueError) as exc:
            raise LinkError(f"cannot reach the broker {self.broker.url}: {exc}") from exc
        client.loop_start()
        self._client = client
        if not self._connected.wait(self.connect_timeout_s) or self._refused:
            self.close()
            raise LinkError(
                f"the broker {self.broker.url} refused the connection: {self._refused}"
                if self._refused
                else f"no answer from the broker {self.broker.url} in {self.connect_timeout_s:g} s"
            )
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.disconnect()
            client.loop_stop()

    # ---- paho's thread -----------------------------------------------------------------

    def _on_connect(self, _c: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        if rc.is_failure:
            hint = " (check --username and --password-file)" if refused_credentials(rc) else ""
            self._refused = f"{rc}{hint}"
        self._connected.set()

    def _on_subscribe(self, _c: mqtt.Client, _u: Any, mid: int, _rc: Any, _p: Any) -> None:
        with self._lock:
            done = self._subscribed.get(mid)
        if done is not None:
            done.set()

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        if len(msg.payload) > MAX_PAYLOAD:
            self.dropped += 1
            return
        try:
            self._queue.put_nowait(Incoming(msg.topic, bytes(msg.payload), bool(msg.retain)))
        except queue.Full:
            self.dropped += 1

    # ---- the caller's thread -------------------------------------------------------------

    def subscribe(self, *filters: str, timeout_s: float = 10.0) -> None:
        """Subscribe (QoS 1) and wait for the broker's SUBACK: retained documents follow."""
        assert self._client is not None, "use FleetLink as a context manager"
        done = threading.Event()
        with self._lock:
            rc, mid = self._client.subscribe([(f, 1) for f in filters])
            if rc != mqtt.MQTT_ERR_SUCCESS or mid is None:
                raise LinkError(f"cannot subscribe: {mqtt.error_string(rc)}")
            self._subscribed[mid] = done
        if not done.wait(timeout_s):
            raise LinkError(f"the broker did not confirm the subscription in {timeout_s:g} s")

    def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        retain: bool = True,
        timeout_s: float = 10.0,
        properties: Properties | None = None,
    ) -> None:
        """Publish QoS 1 and wait for the broker's PUBACK; LinkError if it does not come."""
        assert self._client is not None, "use FleetLink as a context manager"
        info = self._client.publish(topic, payload, qos=1, retain=retain, properties=properties)
        try:
            info.wait_for_publish(timeout_s)
        except (RuntimeError, ValueError) as exc:
            raise LinkError(f"publishing to {topic} failed: {exc}") from exc
        if not info.is_published():
            raise LinkError(f"the broker did not acknowledge {topic} in {timeout_s:g} s")

    def receive(self, until: float) -> Incoming | None:
        """The next message, or None once the monotonic time `until` has passed."""
        remaining = until - time.monotonic()
        try:
            if remaining <= 0:
                return self._queue.get_nowait()
            return self._queue.get(timeout=remaining)
        except queue.Empty:
            return None
