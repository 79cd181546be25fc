"""The alarm loop against real gateway processes and a real broker: raise, ack, clear, close.

Smoke alarms are injected through the simulated driver's `inject` command, so each
step happens when the test says, not on a timer.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from community_protocol.schemas import validator
from tests.harness import GATEWAY, GatewayProc, Received, Subscriber, topic_base, write_config
from tests.peers import Mosquitto, wait_for
from tests.test_commands import Requester

pytestmark = [pytest.mark.broker]


def sim_device(device_id: str, kind: str = "smoke") -> dict[str, Any]:
    return {
        "id": device_id,
        "name": f"{device_id} name",
        "kind": kind,
        "location": {"building": "2", "floor": 3, "unit": "stairwell"},
        "driver": {"type": "simulated"},
    }


FAST = {"damping_s": 0, "escalation": {"critical": 600}}


@dataclass
class Site:
    """One running gateway, a subscriber on its alarm topics, and a requester."""

    config: Path
    base: str
    gw: GatewayProc
    alarms: Subscriber
    req: Requester
    broker: Mosquitto

    def inject(self, device: str, event: str) -> None:
        reply = self.req.ask(
            f"{self.base}/cmd/devices/{device}/inject", json.dumps({"type": event}).encode()
        )
        assert reply["ok"], reply

    def wait_commands(self) -> None:
        """Until the gateway answers commands: it says online just before it subscribes."""

        def answered() -> bool:
            try:
                return bool(self.req.ask(f"{self.base}/cmd/ping", b"", timeout=0.5)["ok"])
            except AssertionError:
                return False

        assert wait_for(answered, timeout=20), self.gw.log()[-3000:]

    def restart_after_kill(self) -> None:
        self.gw.kill()
        self.gw.start()
        self.wait_commands()

    def stop(self) -> None:
        """Close the requester and the subscriber, and stop the gateway if it runs."""
        self.req.close()
        self.alarms.stop()
        if self.gw.running():
            self.gw.terminate()

    def docs(self) -> list[dict[str, Any]]:
        return [m.json() for m in self.alarms.snapshot() if m.payload]

    def wait_doc(self, pred: Any, timeout: float = 10) -> dict[str, Any]:
        found: list[dict[str, Any]] = []

        def check() -> bool:
            found[:] = [d for d in self.docs() if pred(d)]
            return bool(found)

        assert wait_for(check, timeout=timeout, interval=0.05), (self.docs(), self.gw.log()[-3000:])
        validator("alarm").validate(found[-1])
        return found[-1]

    def ack(self, alarm_id: str, payload: bytes | dict[str, Any]) -> dict[str, Any]:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        return self.req.ask(f"{self.base}/cmd/alarms/{alarm_id}/ack", body)


def start_site(
    tmp_path: Path,
    mosquitto: Mosquitto,
    devices: list[dict[str, Any]],
    *,
    env: dict[str, str] | None = None,
    **sections: Any,
) -> Site:
    """A gateway process with `devices` (and `env`), online and answering commands."""
    broker = mosquitto
    config = write_config(tmp_path / "gw.yaml", broker.url, devices, **sections)
    base = topic_base(config)
    status = Subscriber(broker.port, f"{base}/status").start()
    alarms = Subscriber(broker.port, f"{base}/alarms/#").start()
    gw = GatewayProc(config, extra_env=dict(env or {})).start()
    assert status.wait(lambda ms: any(m.json()["state"] == "online" for m in ms)), gw.log()
    status.stop()
    site = Site(config, base, gw, alarms, Requester(broker.port), broker)
    if sections.get("broker", {}).get("protocol") != "mqtt311":  # replies go elsewhere
        site.wait_commands()
    return site


@pytest.fixture
def site(tmp_path: Path, broker: Mosquitto) -> Iterator[Site]:
    s = start_site(tmp_path, broker, [sim_device("smoke-1")], alarms=FAST)
    yield s
    s.stop()


def retained(port: int, topic: str, wait_s: float = 1.0) -> list[Received]:
    """What a new subscriber gets for `topic` right after subscribing: the retained state."""
    sub = Subscriber(port, topic, client_id=f"late-{uuid.uuid4().hex[:8]}").start()
    wait_for(lambda: False, timeout=wait_s)  # retained messages come right after SUBACK
    sub.client.unsubscribe(topic)
    sub.stop()
    return [m for m in sub.snapshot() if m.retain]


def test_smoke_alarm_ack_clear_close_over_mqtt5(site: Site) -> None:
    site.inject("smoke-1", "smoke.alarm")
    raised = site.wait_doc(lambda d: d["state"] == "active")
    alarm_id = raised["alarm_id"]
    assert (raised["type"], raised["severity"], raised["device"]["name"]) == (
        "fire", "critical", "smoke-1 name",
    )  # fmt: skip
    [kept] = retained(site.broker.port, f"{site.base}/alarms/#")
    assert kept.json()["alarm_id"] == alarm_id and kept.json()["state"] == "active"

    reply = site.ack(alarm_id, {"by": "staff-li", "note": "on my way", "request_id": "r-1"})
    assert (reply["ok"], reply["status"], reply["request_id"]) == (True, "accepted", "r-1")
    assert reply["result"]["ack"]["by"] == "staff-li"
    validator("alarm").validate(reply["result"])
    acked = site.wait_doc(lambda d: d["state"] == "acknowledged")
    assert acked["ack"] == {**acked["ack"], "by": "staff-li", "note": "on my way", "via": "mqtt"}
    [kept] = retained(site.broker.port, f"{site.base}/alarms/#")
    assert kept.json()["state"] == "acknowledged" and kept.json()["rev"] == acked["rev"]

    again = site.ack(alarm_id, {"by": "staff-wu"})
    assert (again["ok"], again["status"]) == (True, "already_acknowledged")
    assert again["result"]["ack"]["by"] == "staff-li"

    site.inject("smoke-1", "smoke.alarm")  # a repeat: same alarm, count 2
    repeat = site.wait_doc(lambda d: d["count"] == 2)
    assert repeat["alarm_id"] == alarm_id and repeat["state"] == "acknowledged"

    site.inject("smoke-1", "smoke.cleared")
    closed = site.wait_doc(lambda d: d["state"] == "closed")
    assert closed["alarm_id"] == alarm_id and closed["closed_at"] is not None
    assert site.alarms.wait(lambda ms: ms[-1].payload == b""), "the topic is emptied"
    assert retained(site.broker.port, f"{site.base}/alarms/#") == []
    revs = [d["rev"] for d in site.docs()]
    assert revs == sorted(revs) and len(set(revs)) == len(revs), "in order, none doubled"
    assert {d["alarm_id"] for d in site.docs()} == {alarm_id}


def test_ack_before_clear_and_cleared_before_ack(site: Site) -> None:
    site.inject("smoke-1", "smoke.alarm")
    first = site.wait_doc(lambda d: d["state"] == "active")["alarm_id"]
    site.inject("smoke-1", "smoke.cleared")
    cleared = site.wait_doc(lambda d: d["state"] == "cleared")
    assert cleared["acknowledged"] is False, "a stopped alarm still needs a person"
    reply = site.ack(first, {"by": "staff-li"})
    assert reply["status"] == "accepted" and reply["result"]["state"] == "closed"
    site.wait_doc(lambda d: d["state"] == "closed")
    # A closed alarm acknowledged again: the same idempotent answer.
    late = site.ack(first, {"by": "staff-li"})
    assert (late["ok"], late["status"]) == (True, "already_acknowledged")
    # The next smoke is a new alarm.
    site.inject("smoke-1", "smoke.alarm")
    second = site.wait_doc(lambda d: d["state"] == "active" and d["alarm_id"] != first)
    assert second["alarm_id"].split("-")[0] == first.split("-")[0]


HOSTILE: list[tuple[bytes, str]] = [
    (b'{"note": "no by"}', "field 'by' required"),
    (b'{"by": 42}', "field 'by' must be a string, not int"),
    (b'{"by": ["staff"]}', "field 'by' must be a string, not list"),
    (b'{"by": ""}', "field 'by' must not be empty"),
    (b'{"by": "x", "note": {"a": 1}}', "field 'note' must be a string"),
    (json.dumps({"by": "x", "note": "n" * 501}).encode(), "longer than 500"),
    (b'{"by": "x", "shell": "rm -rf /"}', "unknown field 'shell'"),
    (b'{"by": "x", "request_id": 7}', "field 'request_id'"),
    (b"not json at all", "payload is not JSON"),
    (b"\xff\xfe\x00garbage", "payload is not JSON"),
    (b'["by", "x"]', "payload must be a JSON object"),
    (b"null", "payload must be a JSON object"),
    (b"{" * 50_000, "payload is not JSON"),
    (json.dumps({"by": "x" * 1_048_576}).encode(), "the limit is 65536"),
]


def test_hostile_ack_payloads_get_clear_errors_and_change_nothing(site: Site) -> None:
    # One gateway for every payload: each must leave it running and the alarm as it was.
    site.inject("smoke-1", "smoke.alarm")
    alarm_id = site.wait_doc(lambda d: d["state"] == "active")["alarm_id"]
    for payload, error in HOSTILE:
        what = payload[:40]
        reply = site.ack(alarm_id, payload)
        assert reply["ok"] is False and reply["status"] == "error", what
        assert error in reply["error"], (what, reply)
        validator("command-reply").validate(reply)
        assert site.gw.running(), what
    log = site.gw.log()
    assert log.count(f"command alarms/{alarm_id}/ack refused") == len(HOSTILE), log[-3000:]
    assert all(d["state"] == "active" for d in site.docs())
    assert site.ack(alarm_id, {"by": "staff-li"})["status"] == "accepted"


def test_unknown_alarm_and_wrong_paths(site: Site) -> None:
    reply = site.ack("nope-1", {"by": "staff-li"})
    assert reply["ok"] is False and "unknown alarm 'nope-1'" in reply["error"]
    wrong = site.req.ask(f"{site.base}/cmd/alarms/nope-1/silence", b'{"by": "x"}')
    assert "cmd/alarms/{alarm_id}/ack" in wrong["error"]
    short = site.req.ask(f"{site.base}/cmd/alarms", b'{"by": "x"}')
    assert short["ok"] is False
    assert site.gw.running()


def test_mqtt311_reply_topic(tmp_path: Path, broker: Mosquitto) -> None:
    s = start_site(
        tmp_path,
        broker,
        [sim_device("smoke-1")],
        alarms=FAST,
        broker={"url": broker.url, "protocol": "mqtt311"},
    )
    try:
        replies = Subscriber(broker.port, f"{s.base}/reply/#").start()
        # The injection's reply comes on the MQTT 3.1.1 reply topic too: use a 3.1.1 client.
        client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
        client.connect("127.0.0.1", broker.port)
        client.loop_start()

        def pong() -> bool:  # the gateway subscribes just after it says online
            client.publish(f"{s.base}/cmd/ping", b"", qos=1)
            return replies.wait(lambda ms: bool(ms), timeout=0.5)

        assert wait_for(pong, timeout=20), s.gw.log()
        client.publish(
            f"{s.base}/cmd/devices/smoke-1/inject", b'{"type": "smoke.alarm"}', qos=1
        ).wait_for_publish(5)
        alarm_id = s.wait_doc(lambda d: d["state"] == "active")["alarm_id"]
        topic = f"{s.base}/cmd/alarms/{alarm_id}/ack"
        client.publish(topic, b'{"by": "staff-li", "request_id": "old-1"}', qos=1)
        client.publish(topic, b'{"request_id": "old-2"}', qos=1)
        acks = f"{s.base}/reply/alarms/"
        assert replies.wait(lambda ms: sum(m.topic.startswith(acks) for m in ms) >= 2), s.gw.log()
        by_id = {m.json()["request_id"]: m for m in replies.snapshot() if m.topic.startswith(acks)}
        assert by_id["old-1"].topic == f"{s.base}/reply/alarms/{alarm_id}/ack"
        assert by_id["old-1"].json()["status"] == "accepted"
        assert "field 'by' required" in by_id["old-2"].json()["error"]
        s.wait_doc(lambda d: d["state"] == "acknowledged" and d["ack"]["by"] == "staff-li")
        client.disconnect()
        client.loop_stop()
        replies.stop()
    finally:
        s.stop()


def test_escalation_republishes_with_a_raised_level_and_switches_the_output(
    tmp_path: Path, broker: Mosquitto
) -> None:
    s = start_site(
        tmp_path,
        broker,
        [sim_device("smoke-1"), sim_device("buzzer-office", "door")],
        alarms={
            "damping_s": 0,
            "escalation": {"critical": 0.7, "max_level": 2, "output": {"device": "buzzer-office"}},
        },
    )
    health = Subscriber(broker.port, f"{s.base}/health").start()

    def outputs_on() -> int | None:
        ms = health.snapshot()
        return ms[-1].json()["drivers"]["simulated"]["outputs_on"] if ms else None

    try:
        assert wait_for(lambda: outputs_on() == 0, timeout=10)
        s.inject("smoke-1", "smoke.alarm")
        first = s.wait_doc(lambda d: d["escalation"] == 1)
        assert first["state"] == "active"
        assert wait_for(lambda: outputs_on() == 1, timeout=10), s.gw.log()
        second = s.wait_doc(lambda d: d["escalation"] == 2)
        wait_for(lambda: False, timeout=1.5)
        assert max(d["escalation"] for d in s.docs()) == 2, "max_level caps it"
        assert s.ack(second["alarm_id"], {"by": "staff-li"})["status"] == "accepted"
        assert wait_for(lambda: outputs_on() == 0, timeout=10), s.gw.log()
        assert "simulated output buzzer-office switched on" in s.gw.log()
    finally:
        health.stop()
        s.stop()


def test_cli_ack_while_the_broker_is_down_is_published_when_it_returns(site: Site) -> None:
    site.inject("smoke-1", "smoke.alarm")
    alarm_id = site.wait_doc(lambda d: d["state"] == "active")["alarm_id"]
    site.broker.stop()
    out = subprocess.run(
        [GATEWAY, "ack", alarm_id, "--by", "staff-on-site", "--note", "uplink down", "-c",
         str(site.config)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert out.returncode == 0 and out.stdout.startswith("acknowledged:"), out
    table = subprocess.run(
        [GATEWAY, "alarms", "-c", str(site.config)], capture_output=True, text=True, timeout=30
    )
    assert "acknowledged" in table.stdout and "staff-on-site" in table.stdout, table
    site.broker.start()
    acked = site.wait_doc(lambda d: d["state"] == "acknowledged", timeout=20)
    assert acked["ack"]["via"] == "cli" and acked["ack"]["by"] == "staff-on-site"
    [kept] = retained(site.broker.port, f"{site.base}/alarms/#")
    assert kept.json()["state"] == "acknowledged"


def test_kill_9_and_restart_keep_the_same_alarm(site: Site) -> None:
    site.inject("smoke-1", "smoke.alarm")
    alarm_id = site.wait_doc(lambda d: d["state"] == "active")["alarm_id"]
    site.restart_after_kill()
    site.inject("smoke-1", "smoke.alarm")
    repeat = site.wait_doc(lambda d: d["count"] == 2)
    assert repeat["alarm_id"] == alarm_id and repeat["rev"] == 2
    assert site.ack(alarm_id, {"by": "staff-li"})["status"] == "accepted"
    site.restart_after_kill()
    assert site.ack(alarm_id, {"by": "staff-wu"})["status"] == "already_acknowledged"
    site.inject("smoke-1", "smoke.cleared")
    site.wait_doc(lambda d: d["state"] == "closed")
    assert {d["alarm_id"] for d in site.docs()} == {alarm_id}, "no duplicate alarm"
    revs = [d["rev"] for d in site.docs()]
    assert sorted(set(revs)) == list(range(1, max(revs) + 1)), "no rev lost"


def test_an_ack_on_another_gateways_topic_touches_only_that_gateway(
    tmp_path: Path, broker: Mosquitto, site: Site
) -> None:
    prefix = site.base.split("/test-site/")[0]
    other = start_site(
        tmp_path / "other",
        broker,
        [sim_device("smoke-9")],
        alarms=FAST,
        broker={"url": broker.url, "topic_prefix": prefix},
    )
    try:
        site.inject("smoke-1", "smoke.alarm")
        ours = site.wait_doc(lambda d: d["state"] == "active")["alarm_id"]
        other.inject("smoke-9", "smoke.alarm")
        theirs = other.wait_doc(lambda d: d["state"] == "active")["alarm_id"]
        ours_replies = Subscriber(broker.port, f"{site.base}/reply/#").start()
        # Our alarm's id on the other gateway's topic: that gateway does not know it.
        reply = other.ack(ours, {"by": "staff-li"})
        assert reply["ok"] is False and "unknown alarm" in reply["error"]
        # Its alarm's id on its own topic is acknowledged there, and only there.
        assert other.ack(theirs, {"by": "staff-li"})["status"] == "accepted"
        wait_for(lambda: False, timeout=1.0)
        assert all(d["state"] == "active" for d in site.docs()), "ours untouched"
        assert ours_replies.snapshot() == [], "ours does not answer"
        assert all(d["gateway"] == other.base.rsplit("/", 1)[1] for d in other.docs())
        ours_replies.stop()
    finally:
        other.stop()


def test_escalation_timer_survives_a_kill_9(tmp_path: Path, broker: Mosquitto) -> None:
    s = start_site(
        tmp_path,
        broker,
        [sim_device("smoke-1")],
        alarms={"damping_s": 0, "escalation": {"critical": 3, "max_level": 1}},
    )
    try:
        s.inject("smoke-1", "smoke.alarm")
        raised = s.wait_doc(lambda d: d["state"] == "active")
        s.restart_after_kill()  # usually well before the 3 s are over
        back = datetime.now(UTC)
        escalated = s.wait_doc(lambda d: d["escalation"] == 1)
        assert escalated["alarm_id"] == raised["alarm_id"]
        assert "1 open alarms restored" in s.gw.log()

        def at(ts: str) -> datetime:
            return datetime.fromisoformat(ts.replace("Z", "+00:00"))

        # Due 3 s after it was raised (or at once if the restart took longer), not 3 s
        # after the restart.
        due = max(at(raised["raised_at"]) + timedelta(seconds=3), back)
        assert at(raised["raised_at"]) + timedelta(seconds=3) <= at(escalated["updated_at"])
        assert at(escalated["updated_at"]) < due + timedelta(seconds=1.5), (escalated, back)
    finally:
        s.stop()
