"""The ticket service alone, against a real Mosquitto and as a real process.

Alarm documents are published with paho exactly as the contract shapes them (each is
checked against gateway/schemas/alarm.json), as gateways publish them.  The ack tests
use a paho client on the gateway's command topic that answers like a gateway does.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from community_central.broker import publish_properties
from community_central.contract import validator
from community_central.records import TicketState
from community_central.routing import load_routes
from community_central.store import AckStatus, TicketStore
from paho.mqtt.enums import CallbackAPIVersion

from central.tests.tickets_harness import (
    Publisher,
    TicketServiceProc,
    alarm_doc,
    tickets_cli,
    tickets_in,
)
from tests.harness import Subscriber
from tests.peers import Mosquitto, free_port, wait_for

SITE = "sunrise-gardens"


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:8]}/v1"


@pytest.fixture
def svc(broker: Mosquitto, tmp_path: Path, prefix: str) -> Iterator[TicketServiceProc]:
    """The ticket service on this test's broker, prefix and SQLite file; stopped after."""
    service = TicketServiceProc(broker.url, tmp_path / "tickets.db", prefix).start()
    yield service
    if service.running():
        service.terminate()


@pytest.fixture
def pub(broker: Mosquitto) -> Iterator[Publisher]:
    """Publishes alarm documents as gateways do; stopped after the test."""
    publisher = Publisher(broker.port)
    yield publisher
    publisher.stop()


def _topic(prefix: str, gateway: str, alarm_id: str) -> str:
    return f"{prefix}/{SITE}/{gateway}/alarms/{alarm_id}"


def _publish(pub: Publisher, prefix: str, doc: dict[str, Any], *, retain: bool = True) -> None:
    pub.publish(_topic(prefix, doc["gateway"], doc["alarm_id"]), json.dumps(doc), retain=retain)


def _count(db: Path | str, n: int, timeout: float = 10) -> bool:
    return wait_for(lambda: len(tickets_in(db)) >= n, timeout=timeout)


def test_one_ticket_per_alarm_routed_to_its_team_with_ticket_events(
    broker: Mosquitto,
    tmp_path: Path,
    prefix: str,
    svc: TicketServiceProc,
    pub: Publisher,
) -> None:
    events = Subscriber(broker.port, f"{prefix}/central/tickets/+").start()
    try:
        types = ["fire", "care", "wellness", "security", "maintenance"]
        for i, alarm_type in enumerate(types):
            _publish(pub, prefix, alarm_doc(SITE, "gw-a", f"k3f9-{i}", type=alarm_type))
        assert _count(svc.db, 5)
        found = tickets_in(svc.db)
        assert [(t.alarm_id, t.team) for t in found] == [
            ("k3f9-0", "fire-safety"),
            ("k3f9-1", "care"),
            ("k3f9-2", "care"),
            ("k3f9-3", "security"),
            ("k3f9-4", "maintenance"),
        ]
        assert all(t.state is TicketState.OPEN for t in found)
        assert all(0 <= t.open_latency_s < 1 for t in found), [t.open_latency_s for t in found]
        assert events.wait(lambda ms: len({m.topic for m in ms}) == 5)
        for m in events.snapshot():
            validator("ticket").validate(m.json())
        first = events.matching("/T-000001")[-1].json()
        assert first["team"] == "fire-safety" and first["alarm"]["alarm_id"] == "k3f9-0"
        # The events are retained: a newcomer sees the current state of every ticket.
        late = Subscriber(broker.port, f"{prefix}/central/tickets/+").start()
        assert late.wait(lambda ms: len(ms) == 5)
        assert all(m.retain for m in late.snapshot())
        late.stop()
    finally:
        events.stop()


def test_redelivered_same_and_older_revs_change_nothing_and_cleared_resolves(
    broker: Mosquitto,
    tmp_path: Path,
    prefix: str,
    svc: TicketServiceProc,
    pub: Publisher,
) -> None:
    _publish(pub, prefix, alarm_doc(SITE, "gw-a", "a-1", 1))
    _publish(pub, prefix, alarm_doc(SITE, "gw-a", "a-1", 1))
    _publish(pub, prefix, alarm_doc(SITE, "gw-a", "a-1", 3, state="acknowledged", by="web-jo"))
    _publish(pub, prefix, alarm_doc(SITE, "gw-a", "a-1", 2))  # older: ignored
    assert wait_for(lambda: tickets_in(svc.db)[0].alarm_rev == 3 if tickets_in(svc.db) else False)
    time.sleep(0.3)  # the older rev had time to arrive and must have changed nothing
    [ticket] = tickets_in(svc.db)
    assert (ticket.alarm_rev, ticket.state, ticket.acknowledged_by) == (
        3,
        TicketState.ACKNOWLEDGED,
        "web-jo",
    )
    _publish(pub, prefix, alarm_doc(SITE, "gw-a", "a-1", 4, state="closed", by="web-jo"))
    pub.publish(_topic(prefix, "gw-a", "a-1"), b"")  # the broker forgets the alarm
    assert wait_for(lambda: tickets_in(svc.db)[0].state is TicketState.RESOLVED)
    [ticket] = tickets_in(svc.db)
    assert ticket.alarm_state == "closed" and ticket.resolved_ts is not None
    assert "malformed" not in svc.log()
    assert svc.running()


def test_restart_gets_alarms_queued_in_its_session_and_retained_ones_from_before(
    broker: Mosquitto, tmp_path: Path, prefix: str
) -> None:
    pub = Publisher(broker.port)
    # Retained before the service ever connected: only reconciliation can find it.
    _publish(pub, prefix, alarm_doc(SITE, "gw-old", "r-1"))
    svc = TicketServiceProc(broker.url, tmp_path / "tickets.db", prefix).start()
    try:
        assert _count(svc.db, 1)
        assert svc.terminate() == 0
        # While it is down: a new alarm, not retained, so only the session can keep it,
        # and a newer rev of the first one.
        _publish(pub, prefix, alarm_doc(SITE, "gw-b", "q-1"), retain=False)
        _publish(pub, prefix, alarm_doc(SITE, "gw-old", "r-1", 2, state="closed"))
        svc.start()
        assert wait_for(
            lambda: (
                [(t.alarm_id, t.state) for t in tickets_in(svc.db)]
                == [("r-1", TicketState.RESOLVED), ("q-1", TicketState.OPEN)]
            )
        ), tickets_in(svc.db)
        svc.kill()  # a crash this time: nothing acknowledged twice opens a second ticket
        svc.start()
        time.sleep(0.5)
        assert len(tickets_in(svc.db)) == 2
    finally:
        pub.stop()
        if svc.running():
            svc.terminate()


def test_two_instances_share_the_alarms_and_open_each_ticket_once(
    broker: Mosquitto, tmp_path: Path, prefix: str
) -> None:
    db = tmp_path / "tickets.db"
    one = TicketServiceProc(broker.url, db, prefix, client_id="tickets-one").start()
    two = TicketServiceProc(broker.url, db, prefix, client_id="tickets-two").start()
    pub = Publisher(broker.port)
    try:
        for i in range(200):
            _publish(pub, prefix, alarm_doc(SITE, f"gw-{i % 20}", f"s-{i}", type="security"))
        assert _count(db, 200, timeout=30)
        time.sleep(0.3)
        found = tickets_in(db)
        assert len(found) == 200
        assert len({(t.gateway, t.alarm_id) for t in found}) == 200
        opened = [p.log().count(" opened for ") for p in (one, two)]
        assert sum(opened) == 200 and min(opened) > 20, opened  # both took a share
    finally:
        pub.stop()
        one.terminate()
        two.terminate()


def test_alarms_queued_for_a_stopped_instance_are_ticketed_by_the_others_reconciliation(
    broker: Mosquitto, tmp_path: Path, prefix: str
) -> None:
    # Mosquitto keeps giving a share group's messages to the session of an instance that
    # is stopped; the running one finds them in the retained state at its next round.
    db = tmp_path / "tickets.db"
    every = ["--reconcile-every", "2"]
    one = TicketServiceProc(broker.url, db, prefix, client_id="tickets-one", extra=every).start()
    two = TicketServiceProc(broker.url, db, prefix, client_id="tickets-two").start()
    assert two.terminate() == 0  # its session stays at the broker
    pub = Publisher(broker.port)
    try:
        for i in range(20):
            _publish(pub, prefix, alarm_doc(SITE, "gw-a", f"z-{i}"))
        assert _count(db, 20, timeout=10), len(tickets_in(db))
        assert len({t.alarm_id for t in tickets_in(db)}) == 20
    finally:
        pub.stop()
        one.terminate()


def test_a_database_locked_by_a_peer_delays_tickets_but_loses_none(
    broker: Mosquitto,
    tmp_path: Path,
    prefix: str,
    svc: TicketServiceProc,
    pub: Publisher,
) -> None:
    peer = sqlite3.connect(svc.db, isolation_level=None)
    try:
        peer.execute("BEGIN IMMEDIATE")  # as another instance or `tickets ack` would
        for i in range(10):
            _publish(pub, prefix, alarm_doc(SITE, "gw-a", f"l-{i}"))
        time.sleep(2)
        peer.execute("COMMIT")
        assert _count(svc.db, 10)
        assert sorted(t.alarm_id for t in tickets_in(svc.db)) == sorted(f"l-{i}" for i in range(10))
        assert svc.running()
    finally:
        peer.close()


def test_malformed_alarms_are_skipped_with_one_log_line_per_topic(
    broker: Mosquitto,
    tmp_path: Path,
    prefix: str,
    svc: TicketServiceProc,
    pub: Publisher,
) -> None:
    bad = {
        "b-json": b"{not json",
        "b-list": b"[1, 2]",
        "b-rev": json.dumps({**alarm_doc(SITE, "gw-a", "b-rev"), "rev": "three"}).encode(),
        "b-schema": json.dumps(
            {**alarm_doc(SITE, "gw-a", "b-schema"), "schema": {"name": "x", "version": 1}}
        ).encode(),
        "b-other": json.dumps(alarm_doc(SITE, "gw-a", "someone-else")).encode(),
        "b-huge": b'{"pad": "' + b"x" * 100_000 + b'"}',
    }
    for _ in range(2):
        for alarm_id, payload in bad.items():
            pub.publish(_topic(prefix, "gw-a", alarm_id), payload)
    _publish(pub, prefix, alarm_doc(SITE, "gw-a", "good-1"))
    assert _count(svc.db, 1)
    assert [t.alarm_id for t in tickets_in(svc.db)] == ["good-1"]
    log = svc.log()
    for alarm_id in bad:
        assert log.count(f"gw-a/alarms/{alarm_id}:") == 1, (alarm_id, log)
    assert "fails alarm.json: rev: 'three' is not of type 'integer'" in log
    assert "not JSON" in log and "more than the 65536" in log
    assert "the topic names sunrise-gardens/gw-a/b-other" in log
    assert svc.running()
    # Every refusal is counted, not only logged: twice each.
    stats = json.loads(tickets_cli("stats", "--db", str(svc.db), "--json").stdout)
    assert wait_for(
        lambda: (
            json.loads(tickets_cli("stats", "--db", str(svc.db), "--json").stdout)["counters"]
            == {"refused_malformed": 6, "refused_schema": 4, "refused_mismatch": 2}
        ),
        timeout=5,
    ), stats


class FakeGatewayCommands:
    """A paho client on a gateway's ack command topic that answers as the gateway does."""

    def __init__(
        self, port: int, base: str, answers: list[dict[str, Any] | None], *, v311: bool = False
    ) -> None:
        self.received: list[tuple[str, dict[str, Any], Any]] = []
        self.answers = answers  # one per command received; None: stay silent
        self.base, self.v311 = base, v311
        self._lock = threading.Lock()
        protocol = mqtt.MQTTv311 if v311 else mqtt.MQTTv5
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=protocol)
        self.client.on_message = self._on_message
        ready = threading.Event()
        self.client.on_subscribe = lambda *_a: ready.set()
        self.client.on_connect = lambda c, *_a: c.subscribe(f"{base}/cmd/alarms/+/ack", qos=1)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert ready.wait(10)

    def _on_message(self, client: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        args = json.loads(msg.payload)
        props: Any = msg.properties  # paho types properties loosely; MQTT 5: always set
        with self._lock:
            self.received.append((msg.topic, args, props))
            answer = (
                self.answers[len(self.received) - 1]
                if len(self.received) <= len(self.answers)
                else self.answers[-1]
            )
        if answer is None:
            return
        reply = {
            "schema": {"name": "community.reply", "version": 1},
            "request_id": args.get("request_id"),
            "command": msg.topic.split("/cmd/", 1)[1],
            "ts": "2026-11-27T04:01:10.402Z",
            "clock": "synced",
            **answer,
        }
        validator("command-reply").validate(reply)
        if self.v311:  # no response topic in MQTT 3.1.1: the gateway's reply topic
            client.publish(f"{self.base}/reply/{reply['command']}", json.dumps(reply), qos=1)
            return
        client.publish(
            props.ResponseTopic,
            json.dumps(reply),
            qos=1,
            properties=publish_properties(CorrelationData=props.CorrelationData),
        )

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _ack(db: Path | str, ticket: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return tickets_cli("ack", ticket, "--db", str(db), *extra)


@pytest.mark.parametrize("v311", [False, True], ids=["mqtt5-response-topic", "mqtt311-reply-topic"])
def test_ack_goes_to_the_gateway_that_raised_the_alarm_and_the_reply_is_recorded(
    broker: Mosquitto,
    tmp_path: Path,
    prefix: str,
    svc: TicketServiceProc,
    pub: Publisher,
    v311: bool,
) -> None:
    acked = alarm_doc(SITE, "gw-a", "a-7", 2, state="acknowledged", by="staff-li")
    gw = FakeGatewayCommands(
        broker.port,
        f"{prefix}/{SITE}/gw-a",
        [{"ok": True, "status": "accepted", "result": acked}],
        v311=v311,
    )
    try:
        _publish(pub, prefix, alarm_doc(SITE, "gw-a", "a-7"))
        assert _count(svc.db, 1)
        done = _ack(svc.db, "T-000001", "--by", "staff-li", "--note", "on my way")
        assert done.returncode == 0, done.stderr
        assert "answered accepted; acknowledged by staff-li" in done.stdout
        [(topic, args, props)] = gw.received
        assert topic == f"{prefix}/{SITE}/gw-a/cmd/alarms/a-7/ack"
        validator("alarm-ack").validate(args)
        assert args["by"] == "staff-li" and args["note"] == "on my way"
        assert args["request_id"].startswith("T-000001.")
        if not v311:
            assert props.CorrelationData == args["request_id"].encode()
        [ticket] = tickets_in(svc.db)
        assert ticket.state is TicketState.ACKNOWLEDGED
        assert (ticket.acknowledged_by, ticket.ack_note, ticket.alarm_rev) == (
            "staff-li",
            "on my way",
            2,
        )
        assert ticket.ack_latency_s is not None and ticket.ack_latency_s > 0
        again = _ack(svc.db, "1", "--by", "staff-mo")
        assert "already acknowledged by staff-li" in again.stdout
        assert len(gw.received) == 1
    finally:
        gw.stop()


def test_unanswered_ack_is_sent_again_and_an_error_reply_is_reported(
    broker: Mosquitto,
    tmp_path: Path,
    prefix: str,
    svc: TicketServiceProc,
    pub: Publisher,
) -> None:
    error = {"ok": False, "status": "error", "error": "unknown alarm 'a-9' on this gateway"}
    gw = FakeGatewayCommands(broker.port, f"{prefix}/{SITE}/gw-a", [None, error])
    try:
        _publish(pub, prefix, alarm_doc(SITE, "gw-a", "a-9"))
        assert _count(svc.db, 1)
        quick = _ack(svc.db, "T-000001", "--by", "staff-li", "--wait", "1")
        assert quick.returncode == 0
        assert (
            "acknowledgement sent to sunrise-gardens/gw-a alarm a-9, no answer yet" in quick.stdout
        )
        assert wait_for(lambda: len(gw.received) == 2, timeout=15)
        first, second = gw.received
        assert first[1] == second[1]  # the same request, idempotent at the gateway
        store = TicketStore(svc.db)
        try:
            assert wait_for(lambda: store.get(1).last_ack_error is not None)
            ticket = store.get(1)
            req = store.ack_request(first[1]["request_id"])
        finally:
            store.close()
        assert ticket.state is TicketState.OPEN
        assert ticket.last_ack_error == "unknown alarm 'a-9' on this gateway"
        assert req is not None and req.status is AckStatus.ERROR and req.attempts == 2
        time.sleep(0.5)
        assert len(gw.received) == 2  # an error is an answer: no more retries
    finally:
        gw.stop()


def test_a_waiting_ack_goes_out_as_soon_as_its_gateway_says_it_is_online(
    broker: Mosquitto,
    tmp_path: Path,
    prefix: str,
    svc: TicketServiceProc,
    pub: Publisher,
) -> None:
    base = f"{prefix}/{SITE}/gw-a"
    gw: FakeGatewayCommands | None = None
    store = TicketStore(svc.db)
    try:
        _publish(pub, prefix, alarm_doc(SITE, "gw-a", "a-3"))
        assert _count(svc.db, 1)
        # The gateway is offline (nobody on its command topic): the first send is lost.
        rid = store.request_ack(1, "staff-li", "", time.time())
        assert wait_for(lambda: store.ack_request(rid).attempts == 1)  # type: ignore[union-attr]
        first_sent = time.monotonic()
        gw = FakeGatewayCommands(broker.port, base, [{"ok": True, "status": "accepted"}])
        status = {"schema": {"name": "community.status", "version": 1}, "state": "online"}
        pub.publish(f"{base}/status", json.dumps(status))
        assert wait_for(
            lambda: store.ack_request(rid).status is AckStatus.ACCEPTED,  # type: ignore[union-attr]
            timeout=10,
        )
        # Well before the 5 s retry: it was the status that sent it.
        assert time.monotonic() - first_sent < 4.0
        assert "gw-a is online: sending its acknowledgements now" in svc.log()
    finally:
        store.close()
        if gw is not None:
            gw.stop()


def test_ack_refuses_unknown_tickets_and_bad_fields(tmp_path: Path) -> None:
    db = tmp_path / "tickets.db"
    TicketStore(db).close()
    unknown = _ack(db, "T-000099", "--by", "staff-li")
    assert unknown.returncode != 0 and "no ticket T-000099" in unknown.stderr
    bad = _ack(db, "T-x", "--by", "staff-li")
    assert bad.returncode != 0 and "is not a ticket id" in bad.stderr


def test_routes_file_overrides_defaults_and_a_bad_one_is_refused_with_its_line(
    broker: Mosquitto, tmp_path: Path, prefix: str
) -> None:
    routes = tmp_path / "routes.yaml"
    routes.write_text("version: 1\nteams:\n  wellness: night-nurse\n")
    assert load_routes(routes).team_for("wellness") == "night-nurse"
    assert load_routes(routes).team_for("fire") == "fire-safety"
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nteams:\n  fire: fire-safety\n  flood: plumbers\n")
    refused = tickets_cli(
        "serve", "--broker", broker.url, "--db", str(tmp_path / "x.db"), "--routes", str(bad)
    )
    assert refused.returncode == 2
    assert f"{bad}:4 teams.flood" in refused.stderr, refused.stderr
    svc = TicketServiceProc(broker.url, tmp_path / "tickets.db", prefix, routes=routes).start()
    pub = Publisher(broker.port)
    try:
        _publish(pub, prefix, alarm_doc(SITE, "gw-a", "w-1", type="wellness", severity="high"))
        assert _count(svc.db, 1)
        assert tickets_in(svc.db)[0].team == "night-nurse"
    finally:
        pub.stop()
        svc.terminate()


def test_serve_logs_in_with_a_password_file_and_says_when_refused(
    tmp_path: Path, prefix: str
) -> None:
    secrets = Path(tempfile.mkdtemp(prefix="tickets-auth-"))
    auth: Mosquitto | None = None
    try:
        passwords = secrets / "passwords"
        subprocess.run(
            ["mosquitto_passwd", "-c", "-b", str(passwords), "tickets", "right"], check=True
        )
        passwords.chmod(0o644)
        secrets.chmod(0o755)
        port = free_port()
        auth = Mosquitto(
            tmp_path / "broker",
            preamble="per_listener_settings true",
            extra=f"listener {port} 127.0.0.1\npassword_file {passwords}\nallow_anonymous false",
        )
        auth.start()
        (tmp_path / "right").write_text("right\n")
        (tmp_path / "wrong").write_text("wrong\n")
        url = f"mqtt://127.0.0.1:{port}"
        good = TicketServiceProc(
            url,
            tmp_path / "tickets.db",
            prefix,
            extra=["--username", "tickets", "--password-file", str(tmp_path / "right")],
        ).start()
        good.terminate()
        bad = TicketServiceProc(
            url,
            tmp_path / "tickets.db",
            prefix,
            extra=["--username", "tickets", "--password-file", str(tmp_path / "wrong")],
        ).start(ready=False)
        assert wait_for(lambda: "check --username and --password-file" in bad.log()), bad.log()
        assert bad.running()  # it keeps trying: the password may be fixed at the broker
        bad.terminate()
        no_user = tickets_cli(
            "serve",
            "--broker",
            url,
            "--db",
            str(tmp_path / "x.db"),
            "--password-file",
            str(tmp_path / "right"),
        )
        assert no_user.returncode == 2 and "a password needs --username" in no_user.stderr
    finally:
        if auth is not None:
            auth.remove()
        shutil.rmtree(secrets, ignore_errors=True)
