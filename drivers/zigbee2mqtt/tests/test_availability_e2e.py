"""The gateway process publishes a zigbee2mqtt device as unknown until the bridge speaks."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from community_protocol.schemas import validator
from tests.harness import GatewayProc, Received, Subscriber, topic_base, write_config
from tests.peers import Mosquitto

pytestmark = pytest.mark.broker


def states(messages: list[Received]) -> list[str]:
    return [json.loads(m.payload)["state"] for m in messages]


def test_a_zigbee_device_is_unknown_on_the_platform_until_zigbee2mqtt_reports_it(
    tmp_path: Path, broker: Mosquitto
) -> None:
    base_topic = f"z2m-{uuid.uuid4().hex[:8]}"
    smoke: dict[str, Any] = {
        "id": "smoke-101",
        "kind": "smoke",
        "location": {"building": "3", "unit": "101"},
        "driver": {
            "type": "zigbee2mqtt",
            "broker_url": broker.url,
            "base_topic": base_topic,
            "friendly_name": "b3/101/kitchen_smoke",
        },
    }
    config = write_config(tmp_path / "gw.yaml", broker.url, [smoke])
    sub = Subscriber(broker.port, f"{topic_base(config)}/devices/+/availability").start()
    gateway = GatewayProc(config).start()
    z2m = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    try:
        # Subscribed to zigbee2mqtt's broker: unknown, with the reason a technician reads.
        assert sub.wait(
            lambda ms: any("said nothing" in json.loads(m.payload)["reason"] for m in ms)
        ), gateway.log()
        check = validator("availability")
        for m in sub.snapshot():
            check.validate(json.loads(m.payload))
        assert set(states(sub.snapshot())) == {"unknown"}
        z2m.connect("127.0.0.1", broker.port)
        z2m.loop_start()
        topic = f"{base_topic}/b3/101/kitchen_smoke/availability"
        z2m.publish(topic, '{"state": "online"}', qos=1, retain=True).wait_for_publish(5)
        assert sub.wait(lambda ms: "online" in states(ms)), gateway.log()
        online = [m for m in sub.snapshot() if json.loads(m.payload)["state"] == "online"]
        check.validate(json.loads(online[0].payload))
        assert states(sub.snapshot())[-1] == "online"
    finally:
        z2m.loop_stop()
        z2m.disconnect()
        assert gateway.terminate() == 0
        sub.stop()
