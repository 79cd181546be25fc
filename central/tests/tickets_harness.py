"""Helpers for the ticket service tests: the service as a real process, alarm documents
shaped per the contract, a plain paho publisher standing in for gateways."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from community_central.broker import stop_loop
from community_central.contract import format_ts, validator
from community_central.records import Ticket
from community_central.store import TicketStore
from paho.mqtt.enums import CallbackAPIVersion

from tests.harness import ChildProcess
from tests.peers import wait_for

# The central distribution's command, installed beside this interpreter.
CENTRAL = str(Path(sys.executable).parent / "community-central")

__all__ = [
    "CENTRAL",
    "Publisher",
    "TicketServiceProc",
    "Workers",
    "alarm_doc",
    "tickets_cli",
    "tickets_in",
]


def alarm_doc(
    site: str,
    gateway: str,
    alarm_id: str,
    rev: int = 1,
    *,
    type: str = "fire",
    severity: str = "critical",
    state: str = "active",
    by: str | None = None,
    raised_at: datetime | None = None,
    device_id: str = "smoke-b2-stair-2",
) -> dict[str, Any]:
    """An alarm document as a gateway publishes it; checked against gateway/schemas/alarm.json."""
    now = format_ts(datetime.now(UTC))
    raised = format_ts(raised_at) if raised_at is not None else now
    acknowledged = state in ("acknowledged", "closed")
    cleared = state in ("cleared", "closed")
    doc = {
        "schema": {"name": "community.alarm", "version": 1},
        "site": site,
        "gateway": gateway,
        "alarm_id": alarm_id,
        "rev": rev,
        "type": type,
        "severity": severity,
        "state": state,
        "acknowledged": acknowledged,
        "cleared": cleared,
        "device": {
            "id": device_id,
            "kind": "smoke",
            "name": "Building 2 stairwell, floor 2",
            "location": {"building": "2", "floor": "2", "unit": "stairwell"},
        },
        "cause": "smoke.alarm",
        "rule": "fire",
        "raised_at": raised,
        "updated_at": now,
        "last_seen_at": raised,
        "count": 1,
        "escalation": 0,
        "ack": {"by": by or "staff-li", "note": "on my way", "at": now, "via": "mqtt"}
        if acknowledged
        else None,
        "cleared_at": now if cleared else None,
        "closed_at": now if state == "closed" else None,
        "clock": "synced",
    }
    validator("alarm").validate(doc)
    return doc


@dataclass
class TicketServiceProc(ChildProcess):
    """`community-central serve` as a real process, so it can be SIGTERMed or SIGKILLed."""

    broker_url: str
    db: Path | str  # a SQLite file or a postgresql:// URL
    prefix: str
    client_id: str = field(default_factory=lambda: f"tickets-{uuid.uuid4().hex[:6]}")
    group: str = "tickets"
    routes: Path | None = None
    extra: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    logdir: Path | None = None  # where its log goes; by default beside a SQLite file

    @property
    def log_path(self) -> Path:
        if self.logdir is None:
            assert isinstance(self.db, Path), "a PostgreSQL service needs a logdir"
            self.logdir = self.db.parent
        return self.logdir / f"{self.client_id}.log"

    def start(self, *, ready: bool = True) -> TicketServiceProc:
        """Start; with `ready`, wait until it follows the alarms (see `ready_marks`)."""
        cmd = [CENTRAL, "--log-level", "info", "serve", "--broker", self.broker_url]
        cmd += ["--db", str(self.db), "--prefix", self.prefix, "--client-id", self.client_id]
        cmd += ["--group", self.group]
        if self.routes is not None:
            cmd += ["--routes", str(self.routes)]
        cmd += self.extra
        marks = self.ready_marks()
        log = open(self.log_path, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=log, env=dict(os.environ))
        if ready and not wait_for(
            lambda: self.ready_marks() > marks or not self.running(), timeout=15
        ):
            self.kill()  # the test fails here, before any fixture or finally could stop it
            raise AssertionError(f"ticket service did not get ready:\n{self.log()}")
        if ready:
            assert self.running(), f"ticket service exited:\n{self.log()}"
        return self

    def terminate(self, timeout: float = 15) -> int:
        """SIGTERM; if it is still running after `timeout`, its threads' stacks
        (SIGUSR1, faulthandler) go into the failure, then it is killed."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGUSR1)
            time.sleep(1)
            self.kill()
            raise AssertionError(
                f"{self.client_id} did not stop within {timeout} s of SIGTERM:\n{self.log()}"
            ) from None

    def ready_marks(self) -> int:
        """Log lines saying it follows the alarms: the leader read the retained ones, or
        a follower handed that to the leader."""
        text = self.log()
        return text.count("retained alarms read") + text.count("the leader reads the retained")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class Publisher:
    """A paho MQTT 5 client publishing what gateways would, at QoS 1."""

    def __init__(self, port: int) -> None:
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"pub-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5,
        )
        self.client.max_inflight_messages_set(100)
        self.client.max_queued_messages_set(0)
        self._up = threading.Event()
        self.client.on_connect = lambda *_a: self._up.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self._up.wait(10), "publisher could not connect"

    def publish(self, topic: str, payload: bytes | str, *, retain: bool = True) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(10)

    def stop(self) -> None:
        assert stop_loop(self.client, "publisher", 10)


def tickets_cli(*args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
    """`community-central ARGS` as staff would type it; output captured as text."""
    return subprocess.run([CENTRAL, *args], capture_output=True, text=True, timeout=30, check=check)


def tickets_in(db: Path | str) -> list[Ticket]:
    """Every ticket in the service's database, oldest first."""
    store = TicketStore(db)
    try:
        return sorted(store.tickets(), key=lambda t: t.number)
    finally:
        store.close()


@dataclass
class Workers:
    """N `community-central serve` workers on one database, one share group."""

    broker_url: str
    db: Path | str
    prefix: str
    count: int
    logdir: Path
    extra: list[str] = field(default_factory=list)
    procs: list[TicketServiceProc] = field(default_factory=list)

    def start(self) -> Workers:
        run = uuid.uuid4().hex[:6]
        for i in range(self.count):
            proc = TicketServiceProc(
                self.broker_url,
                self.db,
                self.prefix,
                client_id=f"tickets-{run}-{i}",
                logdir=self.logdir,
                extra=list(self.extra),
            )
            self.procs.append(proc.start())
        return self

    def log(self) -> str:
        return "\n".join(f"--- {p.client_id}\n{p.log()}" for p in self.procs)

    def kill(self, i: int = 0) -> None:
        """kill -9 one worker, as a crash or the OOM killer would."""
        self.procs[i].kill()

    def terminate(self) -> None:
        for p in self.procs:
            if p.running():
                p.terminate()
