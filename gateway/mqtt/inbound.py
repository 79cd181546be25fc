"""Commands from the broker: admitted within a rate, routed to a handler, answered.

Runs in the uplink thread (paho's `on_message`); the handler answers later through
`CommandInbox.answered`, which the uplink calls in its own thread too.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as mqtt

from community_protocol.topics import Topics
from gateway.config import BrokerConfig, MqttProtocol
from gateway.mqtt.client import publish_properties
from gateway.mqtt.commands import Admission, CommandGate, Throttled, reply_doc
from gateway.sdk.model import ClockState, format_ts

__all__ = ["MAX_COMMAND_BYTES", "CommandHandler", "CommandInbox", "Reply"]

log = logging.getLogger("gateway.mqtt.uplink")

MAX_COMMAND_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class Reply:
    """Where a command's reply goes: MQTT 5 response topic, or the 3.1.1 reply topic."""

    topic: str
    correlation: bytes | None


# (command path, payload, reply) -> None; the handler answers later through Uplink.reply.
CommandHandler = Callable[[str, bytes, Reply], None]


class CommandInbox:
    """Admits, routes and answers the commands of one gateway (uplink thread only)."""

    def __init__(
        self,
        cfg: BrokerConfig,
        topics: Topics,
        *,
        clock: Callable[[], ClockState],
        client: Callable[[], mqtt.Client | None],
        on_command: CommandHandler | None,
    ) -> None:
        self.protocol = cfg.protocol
        self.topics = topics
        self.clock = clock
        self.client = client  # the connected paho client, None between connections
        self.on_command = on_command
        self.gate = CommandGate(
            cfg.commands.rate_per_s, cfg.commands.burst, cfg.commands.max_pending
        )
        self._refusals = Throttled(log)

    def handle(self, msg: mqtt.MQTTMessage) -> None:
        """A message on the command topics: run it, or answer busy or error at once."""
        path = self.topics.command_path(msg.topic)
        if path is None:
            return
        # Admission first, before any parsing: in a flood, each command over the rate
        # costs one short reply at most, then nothing but a counter.
        verdict = self.gate.admit()
        if verdict is Admission.DROP:
            return
        reply = self._route(msg, path)
        if verdict is Admission.BUSY:
            self.send(
                reply,
                reply_doc(
                    path[:200],
                    None,
                    False,
                    "busy",
                    error=f"more than {self.gate.rate:g} commands/s; try again later",
                ),
            )
            return
        if len(msg.payload) > MAX_COMMAND_BYTES:
            error = f"payload is {len(msg.payload)} bytes; the limit is {MAX_COMMAND_BYTES}"
        elif self.on_command is None:
            error = "this gateway takes no commands"
        else:
            self.on_command(path, bytes(msg.payload), reply)
            return
        self._refusals.warning("command %s refused: %s", path[:200], error)
        self.answered(reply, reply_doc(path[:200], None, False, "error", error=error))

    def answered(self, reply: Reply, doc: dict[str, Any]) -> None:
        """Send a command's answer and free its place in the queue."""
        self.gate.done()
        self.send(reply, doc)

    def _route(self, msg: mqtt.MQTTMessage, path: str) -> Reply:
        props = getattr(msg, "properties", None)
        topic = getattr(props, "ResponseTopic", None) if props is not None else None
        correlation = getattr(props, "CorrelationData", None) if props is not None else None
        if self.protocol is MqttProtocol.MQTT5 and topic:
            return Reply(topic, correlation)
        return Reply(self.topics.reply(path), None)

    def send(self, reply: Reply, doc: dict[str, Any]) -> None:
        """Publish a reply document (QoS 1), stamped now if it has no `ts`."""
        client = self.client()
        if client is None:
            return  # lost with the connection, as the command's PUBACK may have been
        if "ts" not in doc:
            doc["ts"] = format_ts(datetime.now(UTC))
            doc["clock"] = str(self.clock())
        payload = json.dumps(doc, ensure_ascii=False).encode()
        if self.protocol is MqttProtocol.MQTT5 and reply.correlation is not None:
            props = publish_properties(CorrelationData=reply.correlation)
            client.publish(reply.topic, payload, qos=1, properties=props)
        else:
            client.publish(reply.topic, payload, qos=1)
