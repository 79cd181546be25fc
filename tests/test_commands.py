"""Commands over MQTT against the real gateway process: replies, errors, device commands."""

from __future__ import annotations

import json
import threading
import uuid
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from community_protocol.schemas import validator
from tests.harness import GatewayProc, Subscriber, topic_base, write_config
from tests.peers import Mosquitto

pytestmark = [pytest.mark.broker]

SMOKE = {
    "id": "smoke-1",
    "kind": "smoke",
    "location": {"building": "2", "floor": 3, "unit": "stairwell"},
    "driver": {"type": "simulated"},
}


class Requester:
    """An MQTT 5 client that sends a command with a response topic and waits for the reply."""

    def __init__(self, port: int) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.replies: dict[bytes, dict[str, Any]] = {}
        self.cond = threading.Condition()
        self.reply_topic = f"platform/replies/{uuid.uuid4().hex[:8]}"
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.subscribe(self.reply_topic, qos=1)
        self.client.loop_start()

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with self.cond:
            self.replies[msg.properties.CorrelationData] = json.loads(msg.payload)  # type: ignore[union-attr]
            self.cond.notify_all()

    def ask(self, topic: str, payload: bytes, timeout: float = 10) -> dict[str, Any]:
        corr = uuid.uuid4().bytes
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = self.reply_topic
        props.CorrelationData = corr
        self.client.publish(topic, payload, qos=1, properties=props)
        with self.cond:
            assert self.cond.wait_for(lambda: corr in self.replies, timeout), f"no reply to {topic}"
            reply = self.replies[corr]
        validator("command-reply").validate(reply)
        return reply

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def running(tmp_path: Path, broker: Mosquitto) -> Any:
    config = write_config(tmp_path / "gw.yaml", broker.url, [SMOKE])
    base = topic_base(config)
    status = Subscriber(broker.port, f"{base}/status").start()
    gw = GatewayProc(config).start()
    assert status.wait(lambda ms: any(m.json()["state"] == "online" for m in ms)), gw.log()
    status.stop()
    req = Requester(broker.port)
    yield base, req, gw
    req.close()
    gw.terminate()


def test_ping_replies_on_the_response_topic_with_correlation(running: Any) -> None:
    base, req, _ = running
    reply = req.ask(f"{base}/cmd/ping", b'{"request_id": "r-1"}')
    assert reply["ok"] is True and reply["request_id"] == "r-1"
    assert reply["result"]["pong"] is True and reply["result"]["session"] >= 1


@pytest.mark.parametrize(
    ("path", "payload", "error"),
    [
        ("ping", b"{not json", "payload is not JSON"),
        ("ping", b"[1, 2]", "payload must be a JSON object, not list"),
        (
            "ping",
            b'{"request_id": 42}',
            "field 'request_id' must be a string of 1 to 64 characters",
        ),
        ("reboot", b"{}", "unknown command 'reboot' (known: alarms, devices, diag, ping, update)"),
        ("devices/nope/inject", b"{}", "unknown device 'nope'"),
        ("devices/smoke-1", b"{}", "device commands are cmd/devices/{device}/{command}"),
        ("ping", b"x" * 70_000, "payload is 70000 bytes; the limit is 65536"),
        # Under 64 KiB, but nested past what the JSON parser's recursion survives.
        ("ping", b'{"a": ' + b"[" * 30_000 + b"]" * 30_000 + b"}", "payload nests deeper than 32"),
        ("ping", b'{"a": ' + b"[" * 40 + b"]" * 40 + b"}", "payload nests deeper than 32"),
        ("ping", b'{"expires": "2020-01-01T00:00:00Z"}', "command expired at 2020-01-01"),
        ("ping", b'{"expires": "tomorrow"}', "field 'expires' must be an RFC 3339 time"),
    ],
)
def test_bad_commands_get_a_clear_error_and_the_gateway_keeps_running(
    running: Any, path: str, payload: bytes, error: str
) -> None:
    base, req, gw = running
    reply = req.ask(f"{base}/cmd/{path}", payload)
    assert reply["ok"] is False
    assert reply["error"].startswith(error), reply
    assert gw.running()
    assert req.ask(f"{base}/cmd/ping", b"")["ok"] is True


def test_device_command_injects_a_test_alarm(running: Any, broker: Mosquitto) -> None:
    base, req, _ = running
    events = Subscriber(broker.port, f"{base}/devices/smoke-1/events").start()
    try:
        reply = req.ask(
            f"{base}/cmd/devices/smoke-1/inject",
            json.dumps({"type": "smoke.alarm", "data": {"test": True}}).encode(),
        )
        assert reply["ok"] is True, reply
        assert events.wait(lambda ms: any(m.json()["event"]["type"] == "smoke.alarm" for m in ms))
        bad = req.ask(f"{base}/cmd/devices/smoke-1/inject", b'{"type": "elderly.sos"}')
        assert bad["ok"] is False and "smoke" in bad["error"]
    finally:
        events.stop()


def test_mqtt311_gets_replies_on_the_reply_topic(tmp_path: Path, broker: Mosquitto) -> None:
    config = write_config(
        tmp_path / "gw.yaml", broker.url, [SMOKE], broker={"url": broker.url, "protocol": "mqtt311"}
    )
    base = topic_base(config)
    replies = Subscriber(broker.port, f"{base}/reply/#").start()
    status = Subscriber(broker.port, f"{base}/status").start()
    gw = GatewayProc(config).start()
    try:
        assert status.wait(lambda ms: any(m.json()["state"] == "online" for m in ms)), gw.log()
        client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
        client.connect("127.0.0.1", broker.port)
        client.loop_start()
        client.publish(f"{base}/cmd/ping", b'{"request_id": "old-1"}', qos=1).wait_for_publish(5)
        assert replies.wait(lambda ms: any(m.topic == f"{base}/reply/ping" for m in ms))
        assert replies.snapshot()[0].json()["request_id"] == "old-1"
        client.disconnect()
        client.loop_stop()
    finally:
        replies.stop()
        status.stop()
        gw.terminate()
