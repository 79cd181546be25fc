"""End to end against a real Mosquitto: the gateway process loses nothing.

Each test runs the real `gateway run` process with simulated devices, and a real
subscriber that keeps its session like a platform consumer.  "Nothing lost" is checked
exactly: every seq the outbox ever assigned is either received or still in the outbox.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from community_protocol.names import DOCUMENT_FILES
from community_protocol.schemas import validator
from gateway.storage.outbox_ram import ram_file
from tests.harness import GATEWAY, GatewayProc, Received, Subscriber, topic_base, write_config
from tests.peers import Mosquitto, wait_for

pytestmark = [pytest.mark.broker, pytest.mark.slow]

# Every document a gateway may publish, checked by its schema file (the protocol's list).
SCHEMA_OF = {str(name): file for name, file in DOCUMENT_FILES.items()}


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


def stored_seqs(config: Path) -> set[int]:
    """The outbox's seqs while the gateway may still be creating it (empty until then)."""
    if not (config.parent / "outbox.db").exists():
        return set()  # connecting would create the file before the gateway does
    try:
        return outbox_seqs(config)
    except sqlite3.OperationalError:  # the file exists, its tables not yet
        return set()


def data_messages(sub: Subscriber) -> list[dict[str, Any]]:
    return [m.json() for m in sub.snapshot() if m.topic.endswith(("/telemetry", "/events"))]


def assert_valid(messages: list[Received]) -> None:
    for m in messages:
        if not m.payload:  # a closed alarm's topic being emptied
            continue
        doc = m.json()
        validator(SCHEMA_OF[doc["schema"]["name"]]).validate(doc)


def missing_seqs(sub: Subscriber, config: Path) -> set[int]:
    """Seqs from 1 to the highest that are neither received nor still in the outbox."""
    received = {d["seq"] for d in data_messages(sub)}
    stored = outbox_seqs(config)
    return set(range(1, max(received | stored) + 1)) - received - stored


def assert_nothing_lost(sub: Subscriber, config: Path) -> list[dict[str, Any]]:
    """Every seq from 1 to the highest is received or still in the outbox; no others.

    Call it once the gateway has stopped, so the outbox no longer changes.  What the
    broker acknowledged left the outbox but may still be on its way to the subscriber:
    that is waited for (bounded), not slept for.
    """
    sub.wait(lambda _: not missing_seqs(sub, config), timeout=10)
    missing = missing_seqs(sub, config)
    assert not missing, f"{len(missing)} seqs lost, e.g. {sorted(missing)[:10]}"
    docs = data_messages(sub)
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
def own_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A broker of this test's own, not started: the test starts and stops it; removed after."""
    broker = Mosquitto(tmp_path / "broker")
    yield broker
    broker.remove()


@pytest.fixture
def run_gateway() -> Iterator[Callable[[Path], GatewayProc]]:
    """Starts `gateway run` on a config; one a failed test left running is killed after."""
    started: list[GatewayProc] = []

    def start(config: Path) -> GatewayProc:
        started.append(GatewayProc(config).start())
        return started[-1]

    yield start
    for gw in started:
        if gw.running():
            gw.kill()


def outage_config(
    tmp_path: Path,
    peer: Mosquitto,
    devices: list[dict[str, Any]],
    max_delay_s: float = 1,
    **sections: Any,
) -> Path:
    """A gateway config for `peer` that reconnects quickly (0.2 s, up to `max_delay_s`).

    A `broker=` section adds to (or overrides) the broker settings.
    """
    reconnect = {"min_delay_s": 0.2, "max_delay_s": max_delay_s}
    broker = {"url": peer.url, "reconnect": reconnect, **sections.pop("broker", {})}
    return write_config(tmp_path / "gw.yaml", peer.url, devices, broker=broker, **sections)


def publishing(
    config: Path,
    broker: Mosquitto,
    run_gateway: Callable[[Path], GatewayProc],
    more_than: int,
) -> tuple[Subscriber, GatewayProc]:
    """A subscriber on the gateway's tree and the gateway, once more than `more_than`
    messages have come."""
    sub = Subscriber(broker.port, f"{topic_base(config)}/#").start()
    gw = run_gateway(config)
    assert sub.wait(lambda ms: len(ms) > more_than), gw.log()
    return sub, gw


def test_broker_down_at_start_then_up_everything_arrives(
    tmp_path: Path, own_broker: Mosquitto, run_gateway: Callable[[Path], GatewayProc]
) -> None:
    broker = own_broker
    broker.start()
    config = outage_config(tmp_path, broker, [*meters(2, 20), smoke(at_s=0.5)])
    sub = Subscriber(broker.port, f"{topic_base(config)}/#").start()
    broker.stop()  # the subscriber's session is saved with the broker's persistence
    gw = run_gateway(config)
    assert wait_for(lambda: stored_seqs(config), timeout=30), (
        f"nothing was kept while the broker was down: {gw.log()}"
    )
    broker.start()
    assert sub.wait(lambda ms: any(m.topic.endswith("/events") for m in ms)), gw.log()
    assert gw.terminate() == 0
    docs = assert_nothing_lost(sub, config)
    assert any(d.get("event", {}).get("type") == "smoke.alarm" for d in docs)
    assert_valid(sub.snapshot())


def test_broker_stopped_through_a_long_backlog_every_seq_arrives_in_order(
    tmp_path: Path, own_broker: Mosquitto, run_gateway: Callable[[Path], GatewayProc]
) -> None:
    broker = own_broker
    broker.start()
    config = outage_config(tmp_path, broker, [*meters(4, 25), smoke(every_s=0.5)])
    sub, gw = publishing(config, broker, run_gateway, more_than=50)
    broker.stop()
    # Down until the gateway has kept 600 messages (some 6 s of readings, several
    # reconnect attempts at the 1 s maximum delay), however slow the machine is.
    assert wait_for(lambda: len(stored_seqs(config)) >= 600, timeout=60), gw.log()
    broker.start()
    assert sub.wait(lambda ms: len(ms) > 1200, timeout=60), gw.log()
    assert gw.terminate() == 0
    docs = assert_nothing_lost(sub, config)
    assert len({d["seq"] for d in docs}) > 1000
    assert_device_order(docs)
    assert "connected again" in gw.log()


def test_kill_9_with_backlog_then_restart_backlog_arrives_and_seq_continues(
    tmp_path: Path, own_broker: Mosquitto, run_gateway: Callable[[Path], GatewayProc]
) -> None:
    broker = own_broker
    config = outage_config(tmp_path, broker, [*meters(2, 20), smoke(every_s=0.3)])
    gw = run_gateway(config)
    # A backlog of some size, however long a loaded machine takes to make it.
    assert wait_for(lambda: len(stored_seqs(config)) > 50, timeout=30), gw.log()
    gw.kill()
    backlog = outbox_seqs(config)
    assert len(backlog) > 50
    broker.start()
    sub = Subscriber(broker.port, f"{topic_base(config)}/#").start()
    gw2 = run_gateway(config)
    # The backlog and the first message of the new run, which continues its seqs.
    assert sub.wait(
        lambda ms: (
            backlog | {max(backlog) + 1}
            <= {
                m.json()["seq"]
                for m in ms
                if "/devices/" in m.topic and not m.topic.endswith("availability")
            }
        ),
        timeout=20,
    ), gw2.log()
    assert gw2.terminate() == 0
    docs = assert_nothing_lost(sub, config)
    newer = [d["seq"] for d in docs if d["seq"] > max(backlog)]
    assert newer, "the restarted gateway published nothing new"
    assert min(newer) == max(backlog) + 1


def test_kill_9_while_connected_loses_no_reading_and_skips_no_number(
    tmp_path: Path, broker: Mosquitto, run_gateway: Callable[[Path], GatewayProc]
) -> None:
    # Readings wait in the outbox's memory tier for the broker's acknowledgement: the
    # kernel keeps that file when the process is killed, and the next run sends them.
    config = write_config(tmp_path / "gw.yaml", broker.url, [*meters(2, 20), smoke(every_s=0.5)])
    sub, gw = publishing(config, broker, run_gateway, more_than=100)
    gw.kill()
    top = max(d["seq"] for d in data_messages(sub))
    gw2 = run_gateway(config)
    assert sub.wait(lambda _: max(d["seq"] for d in data_messages(sub)) > top + 100), gw2.log()
    assert gw2.terminate() == 0
    assert_nothing_lost(sub, config)
    assert "unclean_stop" not in gw2.log()


def test_a_power_cut_is_reported_with_the_numbers_it_may_have_cost(
    tmp_path: Path, own_broker: Mosquitto, run_gateway: Callable[[Path], GatewayProc]
) -> None:
    broker = own_broker
    broker.start()
    config = outage_config(tmp_path, broker, [*meters(2, 20), smoke(every_s=0.5)])
    sub, gw = publishing(config, broker, run_gateway, more_than=100)
    broker.stop()  # readings now wait in RAM, unacknowledged
    kept = len(stored_seqs(config))
    gw.kill()
    ram = [ram_file(config.parent / "outbox.db", config.parent / "run")]
    assert ram[0].exists(), "the memory tier's file, kept by the kernel"
    for path in ram[0].parent.glob(ram[0].name + "*"):  # a reboot empties the tmpfs
        path.unlink()
    on_card = outbox_seqs(config)
    assert len(on_card) >= kept
    broker.start()
    gw2 = run_gateway(config)
    assert sub.wait(
        lambda ms: any(
            m.json().get("event", {}).get("data", {}).get("problem") == "unclean_stop"
            for m in ms
            if m.topic.endswith("/events")
        )
    ), gw2.log()
    assert gw2.terminate() == 0
    [report] = [
        d["event"]["data"]
        for d in data_messages(sub)
        if d.get("event", {}).get("data", {}).get("problem") == "unclean_stop"
    ]
    [[first, last]] = report["lost_seq"]
    received = {d["seq"] for d in data_messages(sub)} | outbox_seqs(config)
    missing = set(range(1, max(received) + 1)) - received
    assert missing, "readings were waiting in RAM when the power went"
    assert missing <= set(range(first, last + 1)), (sorted(missing)[:5], first, last)
    assert on_card <= received, "what was on the card survives the power cut"
    assert_valid(sub.snapshot())


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


def test_full_outbox_drops_oldest_telemetry_and_keeps_every_alarm(
    tmp_path: Path, own_broker: Mosquitto, run_gateway: Callable[[Path], GatewayProc]
) -> None:
    broker = own_broker
    config = outage_config(
        tmp_path,
        broker,
        [*meters(3, 50), smoke(every_s=0.1)],
        max_delay_s=0.5,
        outbox={"max_messages": 200, "commit_interval_ms": 20},
    )
    gw = run_gateway(config)

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
    gw2 = run_gateway(config)
    assert sub.wait(
        lambda ms: events <= {m.json()["seq"] for m in ms if m.topic.endswith("/events")}
    ), gw2.log()
    assert sub.wait(
        lambda ms: any(
            m.topic.endswith("/health") and m.json()["outbox"]["dropped_telemetry"] >= dropped > 0
            for m in ms
        )
    )
    gw2.terminate()
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


def test_an_alarm_overtakes_a_telemetry_backlog(
    tmp_path: Path, own_broker: Mosquitto, run_gateway: Callable[[Path], GatewayProc]
) -> None:
    """Events go before telemetry: the alarm is not stuck behind a backlog of readings."""
    broker = own_broker
    config = outage_config(
        tmp_path,
        broker,
        [*meters(3, 50), smoke(at_s=1.5)],
        max_delay_s=0.5,
        broker={"max_inflight": 10},
    )
    broker.start()
    sub = Subscriber(broker.port, f"{topic_base(config)}/devices/#").start()
    broker.stop()
    gw = run_gateway(config)

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

    # The smoke event and a backlog of readings before it to overtake, however long a
    # loaded machine takes to make them.
    assert wait_for(
        lambda: (config.parent / "outbox.db").exists() and stored(0) == 1 and stored(1) > 100,
        timeout=30,
    ), f"no event behind a telemetry backlog: {gw.log()}"
    broker.start()
    assert sub.wait(lambda ms: any(m.topic.endswith("/events") for m in ms)), gw.log()
    gw.terminate()
    data = [m for m in sub.snapshot() if not m.topic.endswith("availability")]
    first_event = next(i for i, m in enumerate(data) if m.topic.endswith("/events"))
    assert first_event < 20, f"the alarm came after {first_event} backlog readings"


@pytest.mark.broker
def test_an_event_the_broker_had_is_not_sent_again_after_it_restarts(
    tmp_path: Path, own_broker: Mosquitto, run_gateway: Callable[[Path], GatewayProc]
) -> None:
    # With the memory tier an event's acknowledgement waits for the next card write (up
    # to 30 s), and a quiet site makes none: a reconnection within that time read the
    # event as still pending and sent it again.  The uplink now commits the acks first.
    broker = own_broker
    broker.start()
    door = {
        "id": "door-1",
        "kind": "door",
        "location": {"building": "1"},
        "driver": {"type": "simulated", "events": [{"type": "door.opened", "at_s": 0.5}]},
    }  # an event that raises no alarm: no alarm state follows it to write the card
    config = outage_config(tmp_path, broker, [*meters(1, 5), door])
    base = topic_base(config)
    events = Subscriber(broker.port, f"{base}/devices/+/events").start()
    readings = Subscriber(broker.port, f"{base}/devices/+/telemetry").start()
    gw = run_gateway(config)
    assert events.wait(lambda ms: len(ms) == 1, timeout=20), gw.log()
    # Readings published after the event were acknowledged after it, so the event's
    # PUBACK has been handled by then.
    after = len(readings.snapshot())
    assert readings.wait(lambda ms: len(ms) >= after + 5), gw.log()
    broker.stop()
    broker.start()
    since = len(readings.snapshot())
    assert readings.wait(lambda ms: len(ms) >= since + 10, timeout=20), gw.log()
    assert [m.json()["seq"] for m in events.snapshot()] == [events.snapshot()[0].json()["seq"]]
    assert gw.terminate() == 0
