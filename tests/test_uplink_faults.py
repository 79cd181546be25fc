"""The uplink under faults, against a real Mosquitto: dead threads, a full disk, sessions.

- A worker thread that dies takes the gateway down with exit 1 and one log line,
  instead of leaving it up and publishing nothing.
- Reconnecting needs no disk write: with the outbox's file system full, a broker
  restart still brings the gateway back.
- The session is persistent: a command sent while the gateway is down is answered when
  it comes back, and one that expired meanwhile is refused, not run.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import uuid
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from community_protocol.schemas import validator
from gateway.config import load_config
from gateway.process.runtime import Gateway
from gateway.process.service import serve
from tests.harness import GatewayProc, Subscriber, topic_base, write_config
from tests.peers import Mosquitto
from tests.test_storage_faults import fill, small_disk  # noqa: F401 (a fixture)

pytestmark = [pytest.mark.broker]

METER = {
    "id": "m1",
    "kind": "meter",
    "location": {"building": "1", "floor": 1, "unit": "101"},
    "driver": {"type": "simulated", "profile": "household_electricity", "rate_hz": 2, "seed": 1},
}


def online_sessions(sub: Subscriber) -> list[int]:
    return [
        m.json()["session"] for m in sub.snapshot() if m.payload and m.json()["state"] == "online"
    ]


def test_a_dying_worker_thread_stops_the_gateway_with_exit_1_and_one_line(
    tmp_path: Path, broker: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    config = write_config(tmp_path / "gw.yaml", broker.url, [METER])
    status = Subscriber(broker.port, f"{topic_base(config)}/status").start()

    def worker() -> None:
        assert status.wait(lambda ms: any(m.json()["state"] == "online" for m in ms))
        raise OSError(5, "Input/output error")

    killer = threading.Thread(target=worker, name="test-worker")
    killer.start()
    with caplog.at_level(logging.INFO):
        code = serve(load_config(config))
    killer.join()
    assert code == 1
    deaths = [r for r in caplog.records if r.levelno == logging.CRITICAL]
    assert len(deaths) == 1
    assert (
        deaths[0]
        .getMessage()
        .startswith(
            "thread test-worker died: OSError: [Errno 5] Input/output error (at test_uplink_faults.py:"
        )
    )
    # It stopped in order: the platform is told it is offline, not left guessing.
    assert status.wait(
        lambda ms: (
            ms[-1].json()["state"] == "offline" and ms[-1].json()["reason"] == "clean shutdown"
        )
    )


def test_the_uplink_thread_dying_stops_the_gateway(
    tmp_path: Path, broker: Mosquitto, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A storage fault under the uplink's reader (what a damaged SD card gives).
    import sqlite3

    from gateway.storage.outbox import OutboxReader

    def broken(*_a: Any, **_k: Any) -> Any:
        raise sqlite3.DatabaseError("database disk image is malformed")

    monkeypatch.setattr(OutboxReader, "next_batch", broken)
    loaded = load_config(write_config(tmp_path / "gw.yaml", broker.url, [METER]))

    async def scenario() -> Gateway:
        gw = Gateway(loaded)
        await asyncio.wait_for(gw.run(asyncio.Event()), 20)  # returns by itself
        return gw

    gw = asyncio.run(scenario())
    assert gw.failure is not None and gw.failure.thread == "uplink"
    assert "malformed" in str(gw.failure)


def test_a_full_disk_does_not_keep_the_gateway_off_a_returning_broker(
    tmp_path: Path,
    small_disk: Path,  # noqa: F811 (the fixture imported above)
) -> None:
    broker = Mosquitto(tmp_path / "broker")
    broker.start()
    config = write_config(
        tmp_path / "gw.yaml",
        broker.url,
        [METER],
        outbox={"path": str(small_disk / "outbox.db")},
        broker={"url": broker.url, "reconnect": {"min_delay_s": 0.2, "max_delay_s": 0.5}},
    )
    status = Subscriber(broker.port, f"{topic_base(config)}/status").start()
    gw = GatewayProc(config).start()
    try:
        assert status.wait(lambda ms: len(online_sessions(status)) == 1), gw.log()
        fill(small_disk)
        broker.stop()
        broker.start()
        # Before: the reconnect's session write failed and killed the uplink thread.
        assert status.wait(lambda ms: len(online_sessions(status)) >= 2, timeout=10), gw.log()
        first, again = online_sessions(status)[:2]
        assert again > first
        assert gw.running()
    finally:
        gw.terminate()
        status.stop()
        broker.remove()


class Commander:
    """A platform client that publishes commands at QoS 1 and collects the replies."""

    def __init__(self, port: int, base: str, protocol: mqtt.MQTTProtocolVersion) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=protocol)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.base = base

    def send(self, path: str, doc: dict[str, Any]) -> None:
        info = self.client.publish(f"{self.base}/cmd/{path}", json.dumps(doc), qos=1)
        info.wait_for_publish(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.mark.parametrize("protocol", ["mqtt5", "mqtt311"])
def test_a_command_sent_while_the_gateway_is_down_is_answered_when_it_returns(
    tmp_path: Path, broker: Mosquitto, protocol: str
) -> None:
    config = write_config(
        tmp_path / "gw.yaml", broker.url, [METER], broker={"url": broker.url, "protocol": protocol}
    )
    base = topic_base(config)
    status = Subscriber(broker.port, f"{base}/status").start()
    replies = Subscriber(broker.port, f"{base}/reply/#").start()
    gw = GatewayProc(config).start()
    assert status.wait(lambda ms: len(online_sessions(status)) == 1), gw.log()
    assert gw.terminate() == 0
    commander = Commander(broker.port, base, mqtt.MQTTv5 if protocol == "mqtt5" else mqtt.MQTTv311)
    late = f"late-{uuid.uuid4().hex[:6]}"
    commander.send("ping", {"request_id": late})
    commander.send("ping", {"request_id": "stale", "expires": "2020-01-01T00:00:00Z"})
    gw = GatewayProc(config).start()
    try:
        assert replies.wait(lambda ms: len(ms) >= 2), gw.log()
        by_id = {m.json()["request_id"]: m.json() for m in replies.snapshot()}
        for doc in by_id.values():
            validator("command-reply").validate(doc)
        assert by_id[late]["ok"] is True
        assert by_id[late]["result"]["session"] > online_sessions(status)[0]
        assert by_id["stale"]["ok"] is False and by_id["stale"]["status"] == "expired"
    finally:
        commander.close()
        gw.terminate()


def test_a_command_flood_is_bounded_counted_and_leaves_telemetry_flowing(
    tmp_path: Path, broker: Mosquitto
) -> None:
    config = write_config(
        tmp_path / "gw.yaml",
        broker.url,
        [METER],
        broker={"url": broker.url, "commands": {"rate_per_s": 10, "burst": 10, "max_pending": 8}},
    )
    base = topic_base(config)
    telemetry = Subscriber(broker.port, f"{base}/devices/+/telemetry").start()
    health = Subscriber(broker.port, f"{base}/health").start()
    replies = Subscriber(broker.port, f"{base}/reply/#").start()
    gw = GatewayProc(config).start()
    flooder = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    flooder.max_inflight_messages_set(1000)
    flooder.max_queued_messages_set(0)
    flooder.connect("127.0.0.1", broker.port)
    flooder.loop_start()
    try:
        assert health.wait(lambda ms: len(ms) > 0), gw.log()
        deep = b'{"a": ' + b"[" * 20_000 + b"]" * 20_000 + b"}"
        before = len(telemetry.snapshot())
        infos = [
            flooder.publish(f"{base}/cmd/ping", deep if i % 50 == 0 else b"{}", qos=1)
            for i in range(5000)
        ]
        for info in infos:
            info.wait_for_publish(30)
        flooded = len(telemetry.snapshot())

        def counted(ms: list[Any]) -> bool:
            c = ms[-1].json()["commands"]
            return bool(c["run_total"] + c["busy_total"] + c["dropped_total"] >= 5000)

        assert health.wait(counted, timeout=30), gw.log()
        figures = health.snapshot()[-1].json()["commands"]
        # At most the burst plus the rate over the flood ran, as many were refused, the
        # rest dropped unanswered; nothing is left waiting.
        assert 10 <= figures["run_total"] < 1000 and 10 <= figures["busy_total"] < 1000
        assert figures["dropped_total"] >= 3000
        statuses = {m.json()["status"] for m in replies.snapshot()}
        assert statuses <= {"done", "busy", "error"}, statuses
        # Telemetry went on during the flood and after it; the gateway still answers.
        assert flooded > before
        assert telemetry.wait(lambda ms: len(ms) > flooded + 2), gw.log()
        pong = f"after-{uuid.uuid4().hex[:6]}"
        assert replies.wait(
            lambda ms: (
                _send(flooder, f"{base}/cmd/ping", pong)
                and any(m.json()["request_id"] == pong for m in ms)
            ),
            timeout=15,
        )
        log = gw.log()
        assert "Traceback" not in log and "RecursionError" not in log
        assert log.count("refused") <= 25, "refusals are logged within a budget"
    finally:
        flooder.disconnect()
        flooder.loop_stop()
        gw.terminate()


def _send(client: mqtt.Client, topic: str, request_id: str) -> bool:
    # Sent again at each poll until answered: the first may still meet an empty bucket.
    client.publish(topic, json.dumps({"request_id": request_id}), qos=1)
    return True
