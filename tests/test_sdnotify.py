"""systemd's notify and watchdog protocol, spoken by the real `gateway run`.

The test plays systemd's side: it binds the AF_UNIX datagram socket named in
NOTIFY_SOCKET, sets WATCHDOG_USEC, and reads what the gateway sends.  The watchdog's
rule (ping only while the gateway is alive) is checked in-process, where the uplink can
be stopped under the running gateway.  Last, a SIGTERM while the broker is down: the
backlog stays in the outbox file and reaches the broker after a restart.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import socket
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.config import load_config
from gateway.process import service
from gateway.process.runtime import Gateway
from gateway.process.sdnotify import Notifier
from tests.harness import GatewayProc, Received, Subscriber, topic_base, write_config
from tests.peers import Mosquitto, free_port, wait_for

pytestmark = [pytest.mark.broker]

SMOKE = {
    "id": "smoke-1",
    "kind": "smoke",
    "location": {"building": "1"},
    "driver": {"type": "simulated", "events": [{"type": "smoke.alarm", "every_s": 0.5}]},
}
METER = {
    "id": "meter-1",
    "kind": "meter",
    "location": {"building": "1", "unit": "101"},
    "driver": {"type": "simulated", "profile": "household_electricity", "rate_hz": 20},
}


@dataclass
class Datagram:
    at: float
    fields: dict[str, str]


class NotifySocket:
    """systemd's end of the notify protocol: a bound datagram socket, read by the test."""

    def __init__(self) -> None:
        # sun_path holds 108 bytes; pytest's tmp paths can be longer.
        self.dir = Path(tempfile.mkdtemp(prefix="notify-"))
        self.path = self.dir / "notify"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        self.sock.settimeout(0.1)
        self.received: list[Datagram] = []

    def poll(self, seconds: float) -> list[Datagram]:
        """Read for `seconds`; returns what arrived in that time (also kept in .received)."""
        new = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            fields = dict(line.split("=", 1) for line in data.decode().splitlines())
            new.append(Datagram(time.monotonic(), fields))
        self.received += new
        return new

    def wait_for(self, key: str, timeout: float = 15.0) -> Datagram | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for d in self.poll(0.1):
                if key in d.fields:
                    return d
        return None

    def close(self) -> None:
        self.sock.close()
        self.path.unlink(missing_ok=True)
        self.dir.rmdir()


@pytest.fixture
def notify() -> Iterator[NotifySocket]:
    s = NotifySocket()
    yield s
    s.close()


def test_ready_after_the_outbox_exists_then_pings_then_stopping(
    tmp_path: Path, broker: Mosquitto, notify: NotifySocket
) -> None:
    config = write_config(tmp_path / "gw.yaml", broker.url, [SMOKE])
    outbox = tmp_path / "outbox.db"
    env = {"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "1500000"}  # a ping every 0.5 s
    gw = GatewayProc(config, extra_env=env).start()
    try:
        ready = notify.wait_for("READY")
        assert ready is not None, gw.log()
        assert outbox.exists(), "READY=1 only once messages have somewhere durable to go"
        assert ready.fields["READY"] == "1" and ready.fields["STATUS"] == "1 devices"
        assert notify.received[0] is ready, "nothing comes before READY=1"

        notify.poll(3.0)
        pings = [d.at for d in notify.received if d.fields.get("WATCHDOG") == "1"]
        assert len(pings) >= 4, notify.received
        gaps = [b - a for a, b in itertools.pairwise(pings)]
        assert all(0.3 < gap < 1.0 for gap in gaps), gaps
    finally:
        code = gw.terminate()
    stopping = notify.wait_for("STOPPING", timeout=2)
    assert stopping is not None and stopping.fields["STOPPING"] == "1"
    assert code == 0, gw.log()


def test_without_notify_socket_the_gateway_runs_as_usual(tmp_path: Path, broker: Mosquitto) -> None:
    config = write_config(tmp_path / "gw.yaml", broker.url, [SMOKE])
    sub = Subscriber(broker.port, f"{topic_base(config)}/#").start()
    gw = GatewayProc(config, extra_env={"WATCHDOG_USEC": "1000000"}).start()
    try:
        assert sub.wait(lambda ms: any(m.topic.endswith("/events") for m in ms)), gw.log()
    finally:
        assert gw.terminate() == 0, gw.log()
        sub.stop()


def test_pings_stop_when_the_uplink_is_dead(
    tmp_path: Path, broker: Mosquitto, notify: NotifySocket, caplog: pytest.LogCaptureFixture
) -> None:
    # In-process: service's watchdog loop against a running Gateway whose uplink thread
    # is then stopped under it, as if it had died.
    loaded = load_config(write_config(tmp_path / "gw.yaml", broker.url, [SMOKE]))
    notifier = Notifier({"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "600000"})

    async def scenario() -> tuple[int, int]:
        gw = Gateway(loaded)
        stop = asyncio.Event()
        run = asyncio.create_task(gw.run(stop))
        dog = asyncio.create_task(service._watchdog(gw, notifier))
        await asyncio.sleep(1.5)
        alive = len(await asyncio.to_thread(notify.poll, 0.1))
        await asyncio.to_thread(gw.uplink.stop, 0.2)
        assert not gw.alive()
        await asyncio.to_thread(notify.poll, 0.3)  # a ping already on its way
        dead = len(await asyncio.to_thread(notify.poll, 1.5))
        dog.cancel()
        stop.set()
        await run
        return alive, dead

    with caplog.at_level(logging.ERROR, logger="gateway.process.service"):
        alive, dead = asyncio.run(scenario())
    assert alive >= 4, "0.2 s between pings while alive"
    assert dead == 0, "no ping once the uplink is dead: systemd restarts the gateway"
    assert "withholding watchdog ping" in caplog.text


def undelivered(outbox: Path) -> list[str]:
    """msg_ids of device messages still waiting in the outbox file, read with plain sqlite3.

    Alarm states (channel `alarms`) carry no msg_id; tests/test_alarms_e2e.py follows them.
    """
    with sqlite3.connect(outbox) as db:
        rows = db.execute(
            "SELECT payload FROM messages WHERE pending != 0 AND channel != 'alarms' ORDER BY id"
        ).fetchall()
    return [json.loads(payload)["msg_id"] for (payload,) in rows]


@pytest.mark.slow
def test_sigterm_with_the_broker_down_loses_nothing(tmp_path: Path) -> None:
    port = free_port()
    config = write_config(tmp_path / "gw.yaml", f"mqtt://127.0.0.1:{port}", [SMOKE, METER])
    outbox = tmp_path / "outbox.db"

    gw = GatewayProc(config).start()

    def backlog() -> int:
        try:
            return len(undelivered(outbox)) if outbox.exists() else 0
        except sqlite3.OperationalError:  # the gateway is creating the schema right now
            return 0

    assert wait_for(lambda: backlog() >= 40, timeout=20), gw.log()
    assert gw.terminate() == 0, gw.log()
    waiting = undelivered(outbox)
    assert len(waiting) >= 40

    broker = Mosquitto(tmp_path / "broker", port=port)
    broker.start()
    try:
        sub = Subscriber(port, f"{topic_base(config)}/devices/#").start()
        gw = GatewayProc(config).start()
        try:

            def got(ms: list[Received]) -> set[str]:
                data = [m for m in ms if m.topic.endswith(("/telemetry", "/events"))]
                return {m.json()["msg_id"] for m in data}

            assert sub.wait(lambda ms: set(waiting) <= got(ms), timeout=20), gw.log()
            assert wait_for(lambda: not set(waiting) & set(undelivered(outbox)), timeout=10)
        finally:
            assert gw.terminate() == 0, gw.log()
            sub.stop()
    finally:
        broker.remove()
