"""End to end against a real Mosquitto: the gateway process loses nothing.

Each test runs the real `gateway run` process with simulated devices, and a real
subscriber that keeps its session like a platform consumer.  "Nothing lost" is checked
exactly: every seq the outbox ever assigned is either received or still in the outbox.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from community_protocol.schemas import validator
from tests.harness import GATEWAY, GatewayProc, Received, Subscriber, topic_base, write_config
from tests.peers import Mosquitto, wait_for

pytestmark = [pytest.mark.broker, pytest.mark.slow]

SCHEMA_OF = {
    "community.telemetry": "telemetry",
    "community.event": "event",
    "community.gateway_event": "gateway-event",
    "community.status": "status",
    "community.availability": "availability",
    "community.health": "health",
    "community.reply": "command-reply",
    "community.alarm": "alarm",
}


def meters(n: int, rate_hz: float) -> list[dict[str, Any]]:
    return [
        {
            "id": f"m{i}",
            "kind": "meter",
            "location": {"building": "1", "floor": 1, "unit": f"10{i}"},
            "driver": {
                "type": "simulated",
                "profile": "household_electricity",
                "rate_hz": rate_hz,
                "seed": i,
            },
        }
        for i in range(n)
    ]


def smoke(every_s: float | None = None, at_s: float | None = None) -> dict[str, Any]:
    rule: dict[str, Any] = {"type": "smoke.alarm"}
    rule.update({"every_s": every_s} if every_s else {"at_s": at_s})
    return {
        "id": "smoke-1",
        "kind": "smoke",
        "location": {"building": "2", "floor": 3, "unit": "stairwell"},
        "driver": {"type": "simulated", "events": [rule]},
    }


def outbox_seqs(config: Path) -> set[int]:
    with sqlite3.connect(config.parent / "outbox.db") as db:
        # seq 0: alarm state documents, which take no number.
        return {row[0] for row in db.execute("SELECT seq FROM messages WHERE seq > 0")}


def data_messages(sub: Subscriber) -> list[dict[str, Any]]:
    return [m.json() for m in sub.snapshot() if m.topic.endswith(("/telemetry", "/events"))]


def assert_valid(messages: list[Received]) -> None:
    for m in messages:
        if not m.payload:  # a closed alarm's topic being emptied
            continue
        doc = m.json()
        validator(SCHEMA_OF[doc["schema"]["name"]]).validate(doc)


def assert_nothing_lost(sub: Subscriber, config: Path) -> list[dict[str, Any]]:
    """Every seq from 1 to the highest is received or still in the outbox; no others."""
    docs = data_messages(sub)
    received = {d["seq"] for d in docs}
    stored = outbox_seqs(config)
    top = max(received | stored)
    missing = set(range(1, top + 1)) - received - stored
    assert not missing, f"{len(missing)} seqs lost, e.g. {sorted(missing)[:10]}"
    # Redelivered duplicates are the same message: same seq, same msg_id.
    ids: dict[int, str] = {}
    for d in docs:
        assert ids.setdefault(d["seq"], d["msg_id"]) == d["msg_id"]
    return docs


def assert_device_order(docs: list[dict[str, Any]]) -> None:
    """Per device and channel, first arrivals come in seq order."""
    seen: set[int] = set()
    last: dict[tuple[str, str], int] = defaultdict(int)
    for d in docs:
        if d["seq"] in seen:
            continue
        seen.add(d["seq"])
        key = (d["device"]["id"], d["schema"]["name"])
        assert d["seq"] > last[key], f"{key}: seq {d['seq']} arrived after {last[key]}"
        last[key] = d["seq"]


@pytest.fixture
def offline_subscriber(tmp_path: Path) -> Any:
    """A broker that knows the subscriber's session but is stopped, and a factory to resume."""

    def make(config: Path) -> tuple[Mosquitto, Subscriber]:
        broker = Mosquitto(tmp_path / "broker")
        broker.start()
        sub = Subscriber(broker.port, f"{topic_base(config)}/#").start()
        return broker, sub

    return make


def test_broker_down_at_start_then_up_everything_arrives(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "broker")
    broker.start()
    config = write_config(
        tmp_path / "gw.yaml",
        broker.url,
        [*meters(2, 20), smoke(at_s=0.5)],
        broker={"url": broker.url, "reconnect": {"min_delay_s": 0.2, "max_delay_s": 1}},
    )
    sub = Subscriber(broker.port, f"{topic_base(config)}/#").start()
    broker.stop()  # the subscriber's session is saved with the broker's persistence
    gw = GatewayProc(config).start()
    try:
        time.sleep(3)
        assert outbox_seqs(config), "nothing was kept while the broker was down"
        broker.start()
        assert sub.wait(lambda ms: any(m.topic.endswith("/events") for m in ms)), gw.log()
        time.sleep(1)
    finally:
        assert gw.terminate() == 0
        broker.kill()
    docs = assert_nothing_lost(sub, config)
    assert any(d.get("event", {}).get("type") == "smoke.alarm" for d in docs)
    assert_valid(sub.snapshot())


def test_broker_stopped_for_ten_seconds_every_seq_arrives_in_order(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "broker")
    broker.start()
    config = write_config(
        tmp_path / "gw.yaml",
        broker.url,
        [*meters(4, 25), smoke(every_s=0.5)],
        broker={"url": broker.url, "reconnect": {"min_delay_s": 0.2, "max_delay_s": 1}},
    )
    sub = Subscriber(broker.port, f"{topic_base(config)}/#").start()
    gw = GatewayProc(config).start()
    try:
        assert sub.wait(lambda ms: len(ms) > 50), gw.log()
        broker.stop()
        time.sleep(10)
        broker.start()
        time.sleep(4)
    finally:
        assert gw.terminate() == 0
    time.sleep(1)
    broker.kill()
    docs = assert_nothing_lost(sub, config)
    assert len({d["seq"] for d in docs}) > 1000
    assert_device_order(docs)
    assert "connected again" in gw.log()


def test_kill_9_with_backlog_then_restart_backlog_arrives_and_seq_continues(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "broker")
    config = write_config(
        tmp_path / "gw.yaml",
        broker.url,
        [*meters(2, 20), smoke(every_s=0.3)],
        broker={"url": broker.url, "reconnect": {"min_delay_s": 0.2, "max_delay_s": 1}},
    )
    gw = GatewayProc(config).start()
    time.sleep(3)
    gw.kill()
    backlog = outbox_seqs(config)
    assert len(backlog) > 50
    broker.start()
    sub = Subscriber(broker.port, f"{topic_base(config)}/#").start()
    gw2 = GatewayProc(config).start()
    try:
        assert sub.wait(
            lambda ms: (
                backlog
                <= {
                    m.json()["seq"]
                    for m in ms
                    if "/devices/" in m.topic and not m.topic.endswith("availability")
                }
            ),
            timeout=20,
        ), gw2.log()
        time.sleep(1)
    finally:
        assert gw2.terminate() == 0
        broker.kill()
    docs = assert_nothing_lost(sub, config)
    newer = [d["seq"] for d in docs if d["seq"] > max(backlog)]
    assert newer, "the restarted gateway published nothing new"
    assert min(newer) == max(backlog) + 1


def test_last_will_marks_a_dead_gateway_offline_with_its_session(
    tmp_path: Path, broker: Mosquitto
) -> None:
    config = write_config(tmp_path / "gw.yaml", broker.url, [smoke(at_s=60)])
    base = topic_base(config)
    sub = Subscriber(broker.port, f"{base}/status").start()
    gw = GatewayProc(config).start()
    assert sub.wait(lambda ms: any(m.json()["state"] == "online" for m in ms)), gw.log()
    online = [m.json() for m in sub.snapshot() if m.json()["state"] == "online"][-1]
    gw.kill()
    assert sub.wait(lambda ms: ms[-1].json()["state"] == "offline")
    will = sub.snapshot()[-1].json()
    assert will["reason"] == "last will" and will["session"] == online["session"]
    assert_valid(sub.snapshot())
    # The next run starts a higher session, so a late will can never mark it offline.
    gw2 = GatewayProc(config).start()
    try:
        assert sub.wait(lambda ms: ms[-1].json()["state"] == "online")
        assert sub.snapshot()[-1].json()["session"] > will["session"]
    finally:
        gw2.terminate()
    assert sub.wait(lambda ms: ms[-1].json().get("reason") == "clean shutdown")


def test_full_outbox_drops_oldest_telemetry_and_keeps_every_alarm(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "broker")
    config = write_config(
        tmp_path / "gw.yaml",
        broker.url,
        [*meters(3, 50), smoke(every_s=0.1)],
        outbox={"max_messages": 200, "commit_interval_ms": 20},
        broker={"url": broker.url, "reconnect": {"min_delay_s": 0.2, "max_delay_s": 0.5}},
    )
    gw = GatewayProc(config).start()

    def overfilled() -> bool:
        # Enough alarms stored and the bound passed: on a busy machine that takes longer.
        try:
            with sqlite3.connect(config.parent / "outbox.db") as db:
                n = db.execute("SELECT count(*) FROM messages WHERE prio = 0 AND seq > 0")
                return n.fetchone()[0] >= 30 and max(outbox_seqs(config)) > 400
        except (sqlite3.OperationalError, ValueError):
            return False

    assert wait_for(overfilled, timeout=30), gw.log()
    assert gw.terminate() == 0
    with sqlite3.connect(config.parent / "outbox.db") as db:
        events = {r[0] for r in db.execute("SELECT seq FROM messages WHERE prio = 0 AND seq > 0")}
        telemetry = db.execute("SELECT count(*) FROM messages WHERE prio = 1").fetchone()[0]
    assert len(events) >= 30, "events were lost or never made"
    assert telemetry <= 200
    top = max(outbox_seqs(config))
    assert top > 400, "the test did not overfill the outbox"
    out = subprocess.run(
        [GATEWAY, "outbox", "-c", str(config)], capture_output=True, text=True, check=True
    ).stdout
    dropped = int(out.split("dropped")[1].split()[0])
    assert dropped == top - len(events) - telemetry
    broker.start()
    sub = Subscriber(broker.port, f"{topic_base(config)}/#").start()
    gw2 = GatewayProc(config).start()
    try:
        assert sub.wait(
            lambda ms: events <= {m.json()["seq"] for m in ms if m.topic.endswith("/events")}
        ), gw2.log()
        assert sub.wait(
            lambda ms: any(
                m.topic.endswith("/health")
                and m.json()["outbox"]["dropped_telemetry"] >= dropped > 0
                for m in ms
            )
        )
    finally:
        gw2.terminate()
        broker.kill()
    assert_valid(sub.snapshot())


def test_availability_and_health_are_published_and_valid(tmp_path: Path, broker: Mosquitto) -> None:
    dev = smoke(at_s=60)
    dev["driver"]["offline"] = [{"at_s": 1.0, "for_s": 1.0}]
    config = write_config(tmp_path / "gw.yaml", broker.url, [dev])
    sub = Subscriber(broker.port, f"{topic_base(config)}/#").start()
    gw = GatewayProc(config).start()
    try:
        assert sub.wait(
            lambda ms: (
                [m.json()["state"] for m in ms if m.topic.endswith("/availability")][-3:]
                == ["online", "offline", "online"]
            )
        ), gw.log()
        assert sub.wait(lambda ms: any(m.topic.endswith("/health") for m in ms))
    finally:
        gw.terminate()
    avail = sub.matching("/devices/smoke-1/availability")
    assert avail[1].json()["reason"], "an offline device says why"
    assert_valid(sub.snapshot())
    # Retained: a late subscriber sees the last availability and the status at once.
    late = Subscriber(broker.port, f"{topic_base(config)}/#").start()
    assert late.wait(
        lambda ms: (
            {m.topic.rsplit("/", 1)[-1] for m in ms if m.retain} >= {"availability", "status"}
        )
    )
    late.stop()


def test_late_last_will_of_an_older_session_is_repaired(tmp_path: Path, broker: Mosquitto) -> None:
    import paho.mqtt.publish as publish

    config = write_config(tmp_path / "gw.yaml", broker.url, [smoke(at_s=60)])
    base = topic_base(config)
    sub = Subscriber(broker.port, f"{base}/status").start()
    gw = GatewayProc(config).start()
    try:
        assert sub.wait(lambda ms: any(m.json()["state"] == "online" for m in ms)), gw.log()
        session = sub.snapshot()[-1].json()["session"]
        stale = sub.snapshot()[-1].json() | {
            "state": "offline",
            "session": session - 1,
            "reason": "last will",
        }
        publish.single(
            f"{base}/status",
            json.dumps(stale),
            qos=1,
            retain=True,
            hostname="127.0.0.1",
            port=broker.port,
        )
        assert sub.wait(
            lambda ms: ms[-1].json()["state"] == "online" and ms[-1].json()["session"] == session
        )
    finally:
        gw.terminate()


def test_an_alarm_overtakes_a_telemetry_backlog(tmp_path: Path) -> None:
    """Events go before telemetry: the alarm is not stuck behind a backlog of readings."""
    broker = Mosquitto(tmp_path / "broker")
    config = write_config(
        tmp_path / "gw.yaml",
        broker.url,
        [*meters(3, 50), smoke(at_s=1.5)],
        broker={
            "url": broker.url,
            "max_inflight": 10,
            "reconnect": {"min_delay_s": 0.2, "max_delay_s": 0.5},
        },
    )
    broker.start()
    sub = Subscriber(broker.port, f"{topic_base(config)}/devices/#").start()
    broker.stop()
    gw = GatewayProc(config).start()

    def stored(prio: int) -> int:
        # Device messages only: the alarm the smoke event raises is stored at prio 0 too.
        with sqlite3.connect(config.parent / "outbox.db") as db:
            try:
                query = db.execute(
                    "SELECT count(*) FROM messages WHERE prio = ? AND channel != 'alarms'",
                    (prio,),
                )
            except sqlite3.OperationalError:  # the file exists, its tables not yet
                return 0
            return int(query.fetchone()[0])

    try:
        assert wait_for(
            lambda: (config.parent / "outbox.db").exists() and stored(0) == 1, timeout=15
        )
        assert stored(1) > 100, "no telemetry backlog to overtake"
        broker.start()
        assert sub.wait(lambda ms: any(m.topic.endswith("/events") for m in ms)), gw.log()
    finally:
        gw.terminate()
        broker.kill()
    data = [m for m in sub.snapshot() if not m.topic.endswith("availability")]
    first_event = next(i for i, m in enumerate(data) if m.topic.endswith("/events"))
    assert first_event < 20, f"the alarm came after {first_event} backlog readings"
