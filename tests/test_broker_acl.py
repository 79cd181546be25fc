"""The ACL of `gateway security acl` confines each identity, against a real Mosquitto.

Mosquitto 2.0.11, checked here: a SUBSCRIBE outside the ACL is granted (SUBACK QoS 1)
but nothing it matches is ever delivered; a denied QoS 1 PUBLISH is answered PUBACK
135 "Not authorized" under MQTT 5 (a plain success under 3.1.1) and is neither
delivered nor retained.  So the tests assert what a user relies on: nothing arrives,
nothing is stored.  (With `max_queued_messages 0` it also drops the connection of the
client whose QoS 1 publish it denied; the broker here uses 1000.)  "Nothing arrived" is proven by a marker published after the
refused message on the same connection: the broker handles one client's packets in
order, so once the marker is in, the refused message would have been in before it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from community_central.store import AckStatus, TicketStore
from paho.mqtt.enums import CallbackAPIVersion

from central.tests.tickets_harness import TicketServiceProc, alarm_doc, tickets_in
from tests.certs import Pki, make_client_cert, make_pki
from tests.harness import GATEWAY
from tests.peers import Mosquitto, free_port, wait_for

# One xdist worker runs this module, so its broker with a PKI and ACL (module-scoped)
# starts once per run, not once on each worker that gets one of its tests.
pytestmark = [pytest.mark.broker, pytest.mark.xdist_group("broker-acl")]

P = "community/v1"
WATCHER = "test.watcher"  # reads everything; added by the test, not by the generator
NAMES = ["gw-1@site-a", "gw-2@site-a", "gw-1@site-b", "service.tickets", "service.fleet"]
INVENTORY = f"""\
prefix: {P}
services:
  tickets: [service.tickets]
  fleet: [service.fleet]
gateways:
  - {{site: site-a, gateway: gw-1}}
  - {{site: site-a, gateway: gw-2}}
  - {{site: site-b, gateway: gw-1}}
"""


@dataclass
class Broker:
    mosquitto: Mosquitto
    tls_port: int
    pki: Pki
    certs: dict[str, tuple[Path, Path]]


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    work = tmp_path_factory.mktemp("acl")
    # Read by the broker as its own user: not under pytest's 0700 tree.
    files = Path(tempfile.mkdtemp(prefix="acl-test-"))
    files.chmod(0o755)
    inventory = work / "fleet.yaml"
    inventory.write_text(INVENTORY)
    acl = files / "acl"
    done = subprocess.run(
        [GATEWAY, "security", "acl", "--inventory", str(inventory), "-o", str(acl)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    with acl.open("a") as f:
        f.write(f"\nuser {WATCHER}\ntopic read #\n")
    passwords = files / "passwords"
    for i, name in enumerate([*NAMES, WATCHER]):
        flags = ["-c"] if i == 0 else []
        subprocess.run(
            ["mosquitto_passwd", *flags, "-b", str(passwords), name, f"pw-{name}"], check=True
        )
    passwords.chmod(0o644)
    pki = make_pki(files / "pki")
    certs = {name: make_client_cert(pki, f"c{i}", name) for i, name in enumerate(NAMES)}
    tls_port = free_port()
    m = Mosquitto(
        work / "broker",
        anonymous=False,
        max_queued=1000,
        password_file=passwords,
        acl_file=acl,
        extra="\n".join(
            [
                f"listener {tls_port} 127.0.0.1",
                f"cafile {pki.ca}",
                f"certfile {pki.server_cert}",
                f"keyfile {pki.server_key}",
                "require_certificate true",
                "use_identity_as_username true",
            ]
        ),
    )
    m.start()
    yield Broker(m, tls_port, pki, certs)
    m.remove()
    shutil.rmtree(files, ignore_errors=True)


@dataclass
class Client:
    """One identity's MQTT 5 connection, recording what it receives and its PUBACK codes."""

    name: str
    received: list[tuple[str, bytes, bool]] = field(default_factory=list)
    acks: dict[int, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    client: Any = None

    def topics(self) -> list[str]:
        with self.lock:
            return [t for t, _, _ in self.received]

    def publish(self, topic: str, payload: bytes = b"x", *, retain: bool = False) -> int:
        """Publish at QoS 1; the PUBACK's reason code (0 delivered, 135 not authorized)."""
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(10)
        assert wait_for(lambda: info.mid in self.acks, timeout=10)
        return self.acks[info.mid]

    def subscribe(self, *filters: str) -> None:
        done = threading.Event()
        self.client.on_subscribe = lambda *_a: done.set()
        self.client.subscribe([(f, 1) for f in filters])
        assert done.wait(10)

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def connect(broker: Broker, name: str, how: str) -> Client:
    """`name` logged in with its password, or with its client certificate (mTLS)."""
    c = Client(name)
    paho = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"{name}-{uuid.uuid4().hex[:6]}",
        protocol=mqtt.MQTTv5,
    )

    def on_message(_c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with c.lock:
            c.received.append((msg.topic, bytes(msg.payload), bool(msg.retain)))

    def on_publish(_c: Any, _u: Any, mid: int, rc: Any, _p: Any) -> None:
        c.acks[mid] = rc.value

    connected: list[Any] = []
    paho.on_message = on_message
    paho.on_publish = on_publish
    paho.on_connect = lambda _c, _u, _f, rc, _p: connected.append(rc)
    port = broker.mosquitto.port
    if how == "mtls" and name in broker.certs:
        cert, key = broker.certs[name]
        paho.tls_set(ca_certs=str(broker.pki.ca), certfile=str(cert), keyfile=str(key))
        port = broker.tls_port
    else:
        paho.username_pw_set(name, f"pw-{name}")
    paho.connect("127.0.0.1", port)
    paho.loop_start()
    assert wait_for(lambda: connected, timeout=10)
    assert not connected[0].is_failure, f"{name} refused: {connected[0]}"
    c.client = paho
    return c


@pytest.fixture
def watcher(broker: Broker) -> Iterator[Client]:
    w = connect(broker, WATCHER, "password")
    w.subscribe("#")
    yield w
    w.stop()


def marker_after(c: Client, own_topic: str, watcher: Client, *, retain: bool = False) -> None:
    """Publish a marker on `c`'s own topic and wait until the watcher has it."""
    tag = uuid.uuid4().hex.encode()
    assert c.publish(own_topic, tag, retain=retain) == 0
    assert wait_for(lambda: any(p == tag for _, p, _ in list(watcher.received)), timeout=10)


@pytest.mark.parametrize("how", ["password", "mtls"])
def test_a_gateway_publishes_only_under_its_own_subtree(
    broker: Broker, watcher: Client, how: str
) -> None:
    gw = connect(broker, "gw-1@site-a", how)
    try:
        run = uuid.uuid4().hex[:6]
        own = f"{P}/site-a/gw-1/alarms/own-{run}"
        foreign = [
            f"{P}/site-a/gw-2/alarms/a-{run}",  # same site, another gateway
            f"{P}/site-b/gw-1/alarms/a-{run}",  # another site, the same gateway id
            f"{P}/site-a/gw-2/cmd/alarms/a-{run}/ack",  # another gateway's commands
            f"{P}/central/tickets/T-{run}",
            f"{P}/site-a/gw-1-{run}/status",  # a prefix of its id is not its subtree
        ]
        for topic in foreign:
            assert gw.publish(topic, b'{"spoof": true}', retain=True) == 135, topic
        marker_after(gw, own, watcher, retain=True)
        assert [t for t in watcher.topics() if run in t] == [own]
        # Nothing was retained either.  One connection's subscriptions are answered in
        # order: once the own topic's retained message is in, the others' would be too.
        late = connect(broker, WATCHER, "password")
        try:
            late.subscribe(*foreign)
            late.subscribe(own)
            assert wait_for(lambda: own in late.topics(), timeout=10)
            assert late.topics() == [own]
        finally:
            late.stop()
            gw.publish(own, b"", retain=True)
    finally:
        gw.stop()


@pytest.mark.parametrize("how", ["password", "mtls"])
def test_a_gateway_reads_only_its_own_commands(broker: Broker, watcher: Client, how: str) -> None:
    gw = connect(broker, "gw-1@site-a", how)
    tickets = connect(broker, "service.tickets", how)
    other = connect(broker, "gw-1@site-b", how)
    try:
        run = uuid.uuid4().hex[:6]
        gw.subscribe(
            f"{P}/site-a/gw-2/cmd/#",
            f"{P}/site-b/+/cmd/#",
            f"{P}/site-b/#",
            f"{P}/#",
            f"$share/g-{run}/{P}/site-a/gw-2/cmd/#",
            f"{P}/site-a/gw-1/cmd/#",
        )
        assert tickets.publish(f"{P}/site-a/gw-2/cmd/alarms/a-{run}/ack") == 0
        assert tickets.publish(f"{P}/site-b/gw-1/cmd/alarms/a-{run}/ack") == 0
        assert other.publish(f"{P}/site-b/gw-1/devices/m-{run}/telemetry") == 0
        assert other.publish(f"{P}/site-b/gw-1/alarms/a-{run}") == 0
        own = f"{P}/site-a/gw-1/cmd/alarms/a-{run}/ack"
        assert tickets.publish(own) == 0
        assert wait_for(lambda: own in gw.topics(), timeout=10)
        # The foreign messages were published before `own`, from the same connections
        # or earlier ones that the watcher proves were handled.
        assert wait_for(lambda: sum(run in t for t in watcher.topics()) >= 5, timeout=10)
        assert {t for t in gw.topics() if run in t} == {own}
    finally:
        for c in (gw, tickets, other):
            c.stop()


@pytest.mark.parametrize("how", ["password", "mtls"])
def test_the_ticket_service_reads_alarms_and_writes_acks_only(
    broker: Broker, watcher: Client, how: str
) -> None:
    tickets = connect(broker, "service.tickets", how)
    gw = connect(broker, "gw-2@site-a", how)
    try:
        run = uuid.uuid4().hex[:6]
        tickets.subscribe(f"$share/tickets-{run}/{P}/+/+/alarms/+", f"{P}/+/+/reply/central/#")
        refused = [
            f"{P}/site-a/gw-2/devices/m-{run}/telemetry",
            f"{P}/site-a/gw-2/alarms/fake-{run}",
            f"{P}/site-a/gw-2/status",
            f"{P}/site-a/gw-2/cmd/devices/door-{run}/open",
        ]
        for topic in refused:
            assert tickets.publish(topic) == 135, topic
        assert tickets.publish(f"{P}/site-a/gw-2/cmd/alarms/a-{run}/ack") == 0
        assert tickets.publish(f"{P}/central/tickets/T-{run}") == 0
        alarm = f"{P}/site-a/gw-2/alarms/a-{run}"
        reply = f"{P}/site-a/gw-2/reply/central/tickets-{run}"
        assert gw.publish(alarm) == 0 and gw.publish(reply) == 0
        assert wait_for(lambda: {alarm, reply} <= set(tickets.topics()), timeout=10)
        assert not set(refused) & set(watcher.topics())
        # A response topic outside the gateway's subtree is refused to the gateway.
        assert gw.publish(f"{P}/central/ticket-service/tickets-{run}/replies") == 135
    finally:
        tickets.stop()
        gw.stop()


def test_an_unknown_user_or_a_wrong_password_is_refused(broker: Broker) -> None:
    for name, password in (("gw-9@site-a", "pw-gw-9@site-a"), ("gw-1@site-a", "wrong")):
        paho = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        paho.username_pw_set(name, password)
        codes: list[Any] = []
        paho.on_connect = lambda _c, _u, _f, rc, _p, seen=codes: seen.append(rc)
        paho.connect("127.0.0.1", broker.mosquitto.port)
        paho.loop_start()
        try:
            assert wait_for(lambda seen=codes: seen, timeout=10)
            assert codes[0].is_failure
        finally:
            paho.disconnect()
            paho.loop_stop()


def test_the_ticket_service_under_the_acl_refuses_a_spoofed_alarm_and_a_foreign_reply(
    broker: Broker, tmp_path: Path
) -> None:
    """Alarms, acks and replies all work within the generated ACL; lies are counted."""
    password = tmp_path / "tickets-password"
    password.write_text("pw-service.tickets\n")
    svc = TicketServiceProc(
        broker.mosquitto.url,
        tmp_path / "tickets.db",
        P,
        extra=["--username", "service.tickets", "--password-file", str(password)],
    ).start()
    gw = connect(broker, "gw-1@site-a", "password")
    neighbour = connect(broker, "gw-2@site-a", "password")
    run = uuid.uuid4().hex[:6]
    base = f"{P}/site-a/gw-1"
    commands: list[Any] = []
    gw.client.on_message = lambda _c, _u, msg: commands.append(msg)
    gw.subscribe(f"{base}/cmd/#")
    try:
        spoof = alarm_doc("site-b", "gw-1", f"s-{run}")  # says site-b, sent by site-a's gateway
        assert gw.publish(f"{base}/alarms/s-{run}", json.dumps(spoof).encode()) == 0
        real = alarm_doc("site-a", "gw-1", f"r-{run}")
        assert gw.publish(f"{base}/alarms/r-{run}", json.dumps(real).encode()) == 0
        assert wait_for(lambda: len(tickets_in(svc.db)) >= 1, timeout=10)
        assert [t.alarm_id for t in tickets_in(svc.db)] == [f"r-{run}"]

        store = TicketStore(svc.db)
        try:
            rid = store.request_ack(1, "staff-li", "", time.time())
            assert wait_for(lambda: commands, timeout=10)
            props = commands[0].properties
            assert props.ResponseTopic == f"{base}/reply/central/{svc.client_id}"
            forged = {"schema": {"name": "community.reply", "version": 1}, "request_id": rid,
                      "command": "x", "ok": False, "status": "error", "error": "forged"}  # fmt: skip
            mine = f"{P}/site-a/gw-2/reply/central/{svc.client_id}"
            assert neighbour.publish(mine, json.dumps(forged).encode()) == 0
            assert wait_for(
                lambda: store.counters().get("refused_reply_wrong_gateway") == 1, timeout=10
            )
            assert store.ack_request(rid).status is AckStatus.PENDING  # type: ignore[union-attr]
            reply = {**forged, "ok": True, "status": "accepted"}
            del reply["error"]
            assert gw.publish(props.ResponseTopic, json.dumps(reply).encode()) == 0
            assert wait_for(
                lambda: store.ack_request(rid).status is AckStatus.ACCEPTED,  # type: ignore[union-attr]
                timeout=10,
            )
            assert store.counters().get("refused_mismatch") == 1
        finally:
            store.close()
    finally:
        for c in (gw, neighbour):
            c.stop()
        svc.terminate()


def test_another_identity_with_a_gateways_client_id_gets_nothing_of_its_session(
    broker: Broker,
) -> None:
    """Client ids are the client's choice; the ACL is checked against the user on delivery."""
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    run = uuid.uuid4().hex[:6]
    cid = f"gw-1@site-a-{run}"
    cmd = f"{P}/site-a/gw-1/cmd/alarms/a-{run}/ack"

    present: list[bool] = []

    def session(name: str, clean: bool) -> tuple[Any, list[bytes]]:
        got: list[bytes] = []
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=cid, protocol=mqtt.MQTTv5)
        c.username_pw_set(name, f"pw-{name}")
        c.on_message = lambda _c, _u, m: got.append(bytes(m.payload))
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 600
        up = threading.Event()

        def on_connect(_c: Any, _u: Any, flags: Any, _rc: Any, _p: Any) -> None:
            present.append(bool(flags.session_present))
            up.set()

        c.on_connect = on_connect
        c.connect("127.0.0.1", broker.mosquitto.port, clean_start=clean, properties=props)
        c.loop_start()
        assert up.wait(10)
        return c, got

    real, _ = session("gw-1@site-a", True)
    done = threading.Event()
    real.on_subscribe = lambda *_a: done.set()
    real.subscribe(cmd, qos=1)
    assert done.wait(10)
    real.disconnect()
    real.loop_stop()
    tickets = connect(broker, "service.tickets", "password")
    try:
        assert tickets.publish(cmd, b"queued while away") == 0
        thief, got = session("gw-1@site-b", False)  # takes the session over
        try:
            assert present == [False, True], "the broker resumed the gateway's session"
            assert tickets.publish(cmd, b"sent while the thief holds it") == 0
            # A marker on the thief's own commands: once it is in, the others would be.
            own = f"{P}/site-b/gw-1/cmd/alarms/x-{run}/ack"
            subscribed = threading.Event()
            thief.on_subscribe = lambda *_a: subscribed.set()
            thief.subscribe(own, qos=1)
            assert subscribed.wait(10)
            assert tickets.publish(own, b"marker") == 0
            assert wait_for(lambda: b"marker" in got, timeout=10)
            assert got == [b"marker"]
        finally:
            thief.disconnect()
            thief.loop_stop()
    finally:
        tickets.stop()


def test_the_fleet_tool_writes_desired_configs_and_each_gateway_reads_only_its_own(
    broker: Broker,
) -> None:
    fleet = connect(broker, "service.fleet", "password")
    gw = connect(broker, "gw-1@site-a", "password")
    try:
        mine, theirs = (f"{P}/site-a/{g}/config/desired" for g in ("gw-1", "gw-2"))
        report = f"{P}/site-a/gw-1/config/reported"
        gw.subscribe(mine, theirs, report)
        fleet.subscribe(f"{P}/+/+/config/reported")
        # Published before `mine` on the same connection: had it been delivered, it
        # would have arrived first.
        assert fleet.publish(theirs) == 0
        assert fleet.publish(mine) == 0
        assert wait_for(lambda: mine in gw.topics(), timeout=10)
        assert theirs not in gw.topics()
        # The gateway sees its own report come back (a trial commits on it); so does the tool.
        assert gw.publish(report) == 0
        assert wait_for(lambda: report in gw.topics() and report in fleet.topics(), timeout=10)
        # The fleet tool configures, sends updates (the command and the bundle's
        # chunks) and asks for diagnostics; it cannot command a gateway otherwise, nor
        # speak for one.  (16: accepted, no subscriber now; 135: not authorised.)
        assert fleet.publish(f"{P}/site-a/gw-1/cmd/update") in (0, 16)
        assert fleet.publish(f"{P}/site-a/gw-1/cmd/update/chunk") in (0, 16)
        assert fleet.publish(f"{P}/site-a/gw-1/cmd/diag/check") in (0, 16)
        assert fleet.publish(f"{P}/site-a/gw-1/cmd/alarms/a-1/ack") == 135
        assert fleet.publish(f"{P}/site-a/gw-1/status") == 135
    finally:
        fleet.stop()
        gw.stop()
