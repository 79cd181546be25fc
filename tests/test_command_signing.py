"""Signed commands: a broker account alone cannot acknowledge a gateway's alarms.

First the router with the real verifier (every way a signature can be wrong), then a
real gateway and ticket service over a real Mosquitto: an unsigned acknowledgement is
refused with a clear reply and the alarm stays active; the service's signed one works.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from community_central.broker import publish_properties
from community_central.contract import validator
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion

from central.tests.tickets_harness import TicketServiceProc, tickets_cli, tickets_in
from gateway.mqtt.commands import Command, CommandRouter
from gateway.sdk.model import Identity
from gateway.security.signing import CommandSigner, CommandVerifier, ReplayCache
from tests.harness import (
    GATEWAY,
    GatewayProc,
    Subscriber,
    config_problems,
    topic_base,
    write_config,
)
from tests.peers import Mosquitto, wait_for

ME = Identity("sunrise-gardens", "gw-07")
NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


class Clock:
    """The synced time, or None while the clock is not synced."""

    def __init__(self) -> None:
        self.value: datetime | None = NOW

    def __call__(self) -> datetime | None:
        return self.value


def router(verifier: CommandVerifier) -> tuple[CommandRouter, list[Command]]:
    ran: list[Command] = []

    async def handler(cmd: Command) -> tuple[str, Any]:
        ran.append(cmd)
        return "accepted", None

    r = CommandRouter()
    r.register("alarms", handler)
    r.register("ping", handler)
    r.guard = verifier
    return r, ran


def send(r: CommandRouter, path: str, payload: dict[str, Any] | bytes) -> dict[str, Any]:
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    reply = asyncio.run(r.handle(path, raw))
    validator("command-reply").validate(
        {**reply, "ts": "2026-12-06T12:00:00.000Z", "clock": "synced"}
    )
    return reply


@pytest.fixture
def keys() -> tuple[CommandSigner, CommandSigner]:
    return CommandSigner(Ed25519PrivateKey.generate()), CommandSigner(Ed25519PrivateKey.generate())


def test_a_signed_ack_runs_once_and_every_forgery_is_refused_with_why(
    keys: tuple[CommandSigner, CommandSigner],
) -> None:
    trusted, stranger = keys
    clock = Clock()
    verifier = CommandVerifier(ME, [trusted.public_key], now=clock)
    r, ran = router(verifier)
    path = "alarms/k3f9/ack"
    fields = {"by": "staff-li", "note": "on my way", "request_id": "T-000042.ab12"}
    good = trusted.sign(ME, path, fields, now=NOW)
    validator("alarm-ack").validate(good)

    def refused(payload: dict[str, Any] | bytes, status: str, words: str, p: str = path) -> None:
        reply = send(r, p, payload)
        assert (reply["ok"], reply["status"]) == (False, status), reply
        assert words in reply["error"], reply["error"]

    refused(fields, "unauthorized", "must be signed by a key this gateway trusts")
    refused(
        stranger.sign(ME, path, fields, now=NOW), "unauthorized", "not a key this gateway trusts"
    )
    refused({**good, "by": "intruder"}, "unauthorized", "does not verify")
    refused({**good, "expires": "2030-01-01T00:00:00Z"}, "unauthorized", "does not verify")
    refused(good, "unauthorized", "does not verify", "alarms/other-alarm/ack")
    other_gw = trusted.sign(Identity("sunrise-gardens", "gw-08"), path, fields, now=NOW)
    refused(other_gw, "unauthorized", "does not verify")
    refused({**good, "auth": {**good["auth"], "sig": "AAAA"}}, "unauthorized", "does not verify")
    refused({**good, "auth": "yes"}, "unauthorized", "must be an object of key_id")
    old = trusted.sign(ME, path, fields, now=NOW - timedelta(hours=25))
    refused(old, "unauthorized", "more than 86400 s ago")
    refused(
        trusted.sign(ME, path, fields, now=NOW + timedelta(hours=1)),
        "unauthorized",
        "in the future",
    )
    assert ran == []

    assert send(r, path, good)["ok"] is True
    assert ran[0].args == {"by": "staff-li", "note": "on my way"}  # handlers never see auth
    refused(good, "replayed", "run already")
    assert len(ran) == 1
    # Other command families need no signature.
    assert send(r, "ping", {})["ok"] is True


def test_with_the_clock_unsynced_age_is_not_judged_but_replays_still_are(
    keys: tuple[CommandSigner, CommandSigner],
) -> None:
    trusted, _ = keys
    clock = Clock()
    clock.value = None  # a Pi without RTC that booted in the past
    r, ran = router(CommandVerifier(ME, [trusted.public_key], now=clock))
    queued = trusted.sign(ME, "alarms/a1/ack", {"by": "staff-li"}, now=NOW - timedelta(days=3))
    assert send(r, "alarms/a1/ack", queued)["ok"] is True
    assert send(r, "alarms/a1/ack", queued)["status"] == "replayed"
    assert len(ran) == 1


def test_the_replay_cache_is_bounded_in_size_and_in_time() -> None:
    cache = ReplayCache(size=3, keep_s=10)
    assert all(cache.add(n, now=0) for n in "abc")
    assert not cache.add("a", now=1)
    assert cache.add("d", now=2) and len(cache) == 3  # "a" made room
    assert cache.add("a", now=2)  # forgotten: the size bound; the age check covers it
    assert cache.add("e", now=20) and len(cache) == 1  # the others expired


def test_request_statuses_need_a_signature_too_and_the_families_are_configurable(
    keys: tuple[CommandSigner, CommandSigner],
) -> None:
    trusted, _ = keys
    r, ran = router(CommandVerifier(ME, [trusted.public_key], now=Clock()))
    r.register("requests", r._handlers["alarms"])
    reply = send(r, "requests/sr-881/status", {"status": "done"})
    assert reply["status"] == "unauthorized"
    signed = trusted.sign(ME, "requests/sr-881/status", {"status": "done"}, now=NOW)
    validator("command-request", "request_status").validate(signed)
    assert send(r, "requests/sr-881/status", signed)["ok"] is True and len(ran) == 1
    only_acks = CommandVerifier(ME, [trusted.public_key], signed=["alarms/*/ack"])
    assert not only_acks.needs_signature("requests/sr-881/status")
    assert only_acks.needs_signature("alarms/x/ack") and not only_acks.needs_signature("alarms/x")


def test_a_trusted_key_that_is_no_ed25519_public_key_fails_validate(tmp_path: Path) -> None:
    private = tmp_path / "keys" / "k.key"
    done = subprocess.run(
        [GATEWAY, "security", "keygen", "--out", str(private.parent), "--name", "k"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0 and "key id" in done.stdout, done.stderr
    assert private.stat().st_mode & 0o777 == 0o600
    config = write_config(
        tmp_path / "gw.yaml",
        "mqtt://127.0.0.1:1883",
        [],
        security={"command_keys": ["keys/k.pub", "keys/k.key", "keys/none.pub"]},
    )
    problems = config_problems(config)
    assert len(problems) == 2, problems
    assert "security.command_keys[1]" in problems[0] and "not a PEM public key" in problems[0]
    assert "security.command_keys[2]" in problems[1] and "cannot read" in problems[1]


class Requester:
    """An MQTT 5 client sending commands with a response topic in the gateway's subtree."""

    def __init__(self, port: int, base: str) -> None:
        self.reply_topic = f"{base}/reply/central/test-{uuid.uuid4().hex[:6]}"
        self.replies: list[dict[str, Any]] = []
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.on_message = lambda _c, _u, m: self.replies.append(json.loads(m.payload))
        ready = threading.Event()
        self.client.on_subscribe = lambda *_a: ready.set()
        self.client.on_connect = lambda c, *_a: c.subscribe(self.reply_topic, qos=1)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert ready.wait(10)

    def send(self, topic: str, payload: dict[str, Any]) -> None:
        props = publish_properties(ResponseTopic=self.reply_topic, CorrelationData=b"c1")
        self.client.publish(topic, json.dumps(payload), qos=1, properties=props).wait_for_publish(
            10
        )

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.mark.broker
@pytest.mark.slow
def test_an_unsigned_ack_is_refused_by_the_gateway_and_the_signed_one_from_tickets_works(
    broker: Mosquitto, tmp_path: Path
) -> None:
    keys = tmp_path / "keys"
    done = subprocess.run(
        [GATEWAY, "security", "keygen", "--out", str(keys), "--name", "tickets"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    device = {
        "id": "smoke-1",
        "kind": "smoke",
        "location": {"building": "2"},
        "driver": {"type": "simulated", "events": [{"at_s": 0.5, "type": "smoke.alarm"}]},
    }
    config = write_config(
        tmp_path / "gw" / "gw.yaml",
        broker.url,
        [device],
        alarms={"damping_s": 0.2},
        security={"command_keys": [str(keys / "tickets.pub")]},
    )
    base = topic_base(config)
    prefix = base.split("/test-site/")[0]
    alarms = Subscriber(broker.port, f"{base}/alarms/+").start()
    svc = TicketServiceProc(
        broker.url,
        tmp_path / "tickets.db",
        prefix,
        extra=["--signing-key", str(keys / "tickets.key")],
    ).start()
    gw = GatewayProc(config).start()
    intruder = Requester(broker.port, base)
    try:
        assert wait_for(lambda: len(tickets_in(svc.db)) == 1, timeout=20), gw.log()
        [ticket] = tickets_in(svc.db)
        intruder.send(
            f"{base}/cmd/alarms/{ticket.alarm_id}/ack", {"by": "intruder", "request_id": "x1"}
        )
        assert wait_for(lambda: intruder.replies, timeout=10), gw.log()
        [reply] = intruder.replies
        assert (reply["ok"], reply["status"], reply["request_id"]) == (False, "unauthorized", "x1")
        assert "must be signed by a key this gateway trusts" in reply["error"]
        assert [m.json()["state"] for m in alarms.snapshot() if m.payload][-1] == "active"

        acked = tickets_cli(
            "ack", "T-000001", "--db", str(svc.db), "--by", "staff-li", "--wait", "15"
        )
        assert acked.returncode == 0 and "answered accepted" in acked.stdout, (acked, svc.log())
        assert alarms.wait(
            lambda ms: any(m.payload and m.json()["state"] == "acknowledged" for m in ms),
            timeout=10,
        )
        docs = [m.json() for m in alarms.snapshot() if m.payload]
        assert {d["ack"]["by"] for d in docs if d["ack"]} == {"staff-li"}
    finally:
        intruder.stop()
        alarms.stop()
        gw.terminate()
        svc.terminate()
