"""End-to-end helpers: the real `gateway` process and a real MQTT subscriber."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from tests.peers import free_port, wait_for

__all__ = [
    "SUBSCRIBER_CLIENTS",
    "ChildProcess",
    "FakeClock",
    "GatewayProc",
    "Received",
    "Subscriber",
    "config_problems",
    "demo_config",
    "write_config",
]

GATEWAY = str(Path(sys.executable).parent / "gateway")
DEMO = Path(__file__).resolve().parent.parent / "config" / "demo.yaml"
# The clients of every Subscriber: tests/plugin.py stops one its test left running.
SUBSCRIBER_CLIENTS: weakref.WeakSet[mqtt.Client] = weakref.WeakSet()


def demo_config(folder: Path) -> Path:
    """config/demo.yaml copied into `folder`: its outbox there, its web console on a free port.

    The demo's own 8080 and state/ folder would be shared by tests running in parallel
    (and with a demo someone runs).
    """
    text = DEMO.read_text()
    assert "state/demo-outbox.db" in text and "\n  port: 8080\n" in text, "demo.yaml changed"
    config = folder / "gw.yaml"
    config.write_text(
        text.replace("state/demo-outbox.db", str(folder / "o.db")).replace(
            "\n  port: 8080\n", f"\n  port: {free_port()}\n"
        )
    )
    return config


class FakeClock:
    """A monotonic clock a test moves by hand: `clock.now += 1.5`."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def write_config(
    path: Path, broker_url: str, devices: list[dict[str, Any]], **sections: Any
) -> Path:
    """A gateway config file for a test: unique site/gateway ids, outbox in the test's dir."""
    doc: dict[str, Any] = {
        "version": 1,
        "site": {"id": "test-site"},
        "gateway": {"id": f"gw-{uuid.uuid4().hex[:8]}"},
        "broker": {"url": broker_url, "topic_prefix": f"t{uuid.uuid4().hex[:8]}/v1"},
        "outbox": {"path": str(path.parent / "outbox.db"), "commit_interval_ms": 20},
        "clock": {"check": "trust"},
        "health": {"interval_s": 1},
        "devices": devices,
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(doc.get(key), dict):
            doc[key].update(value)
        else:
            doc[key] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def config_problems(path: Path) -> list[str]:
    """Every problem `gateway validate` finds in the file (the test fails if it loads)."""
    import pytest

    from gateway.config import ConfigError, load_config

    with pytest.raises(ConfigError) as info:
        load_config(path)
    return [str(p) for p in info.value.problems]


def topic_base(config: Path) -> str:
    doc = yaml.safe_load(config.read_text())
    return f"{doc['broker']['topic_prefix']}/{doc['site']['id']}/{doc['gateway']['id']}"


@dataclass
class Received:
    topic: str
    payload: bytes
    retain: bool
    at: float

    def json(self) -> Any:
        return json.loads(self.payload)


@dataclass
class Subscriber:
    """A real MQTT client that records everything under a topic filter.

    It keeps its session on the broker (fixed client id, no clean start, long session
    expiry), as a platform consumer would, so messages published while it is
    reconnecting after a broker restart are still delivered to it. One the test does
    not `stop()` is stopped after the test's fixtures (tests/plugin.py), so a test
    that needs it stopped earlier (before its broker goes) stops it itself.
    """

    port: int
    topic: str
    client_id: str = field(default_factory=lambda: f"sub-{uuid.uuid4().hex[:8]}")
    messages: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=mqtt.MQTTv5
        )
        self.client.on_message = self._on_message
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self.client.reconnect_delay_set(1, 2)
        SUBSCRIBER_CLIENTS.add(self.client)

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        if not rc.is_failure:
            client.subscribe(self.topic, qos=1)
            self.connected.set()

    def _on_subscribe(self, _c: mqtt.Client, _u: Any, _mid: int, _rc: Any, _p: Any) -> None:
        self.subscribed.set()

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append(
                Received(msg.topic, bytes(msg.payload), bool(msg.retain), time.monotonic())
            )

    def start(self) -> Subscriber:
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        self.client.connect_async(
            "127.0.0.1", self.port, keepalive=5, clean_start=False, properties=props
        )
        self.client.loop_start()
        assert self.connected.wait(10), "subscriber could not connect"
        # Only after the SUBACK is the subscription part of the session the broker keeps.
        assert self.subscribed.wait(10), "subscriber got no SUBACK"
        return self

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def snapshot(self) -> list[Received]:
        with self._lock:
            return list(self.messages)

    def matching(self, suffix: str) -> list[Received]:
        return [m for m in self.snapshot() if m.topic.endswith(suffix)]

    def wait(self, predicate: Any, timeout: float = 15.0) -> bool:
        return wait_for(lambda: predicate(self.snapshot()), timeout=timeout, interval=0.05)


class ChildProcess:
    """A real child process a test can SIGTERM or SIGKILL; `proc` is set once started."""

    proc: subprocess.Popen[bytes] | None

    def terminate(self, timeout: float = 15) -> int:
        """SIGTERM and its exit status; one still running after `timeout` is killed, and
        the test fails (TimeoutExpired) instead of leaving it running after the run."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=10)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class GatewayProc(ChildProcess):
    """`gateway run` as a real process, so it can be SIGTERMed or SIGKILLed."""

    config: Path
    broker_url: str | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> GatewayProc:
        cmd = [GATEWAY, "--log-level", "info", "run", "-c", str(self.config)]
        if self.broker_url:
            cmd += ["--broker-url", self.broker_url]
        log = open(self.config.parent / "gateway.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=log,
            # The outbox's memory tier goes beside the config, as systemd's runtime
            # directory would: a gateway a test kills leaves nothing in /dev/shm.
            env={
                "RUNTIME_DIRECTORY": str(self.config.parent / "run"),
                **os.environ,
                **self.extra_env,
            },
        )
        return self

    def log(self) -> str:
        return (self.config.parent / "gateway.log").read_text(errors="replace")


def simulated_meter(device_id: str, rate_hz: float) -> dict[str, Any]:
    """A simulated household meter sending `rate_hz` readings a second."""
    return {
        "id": device_id,
        "kind": "meter",
        "location": {"building": "1", "floor": 1, "unit": device_id},
        "driver": {"type": "simulated", "profile": "household_electricity", "rate_hz": rate_hz},
    }


def fill(folder: Path) -> Path:
    """Write a file until the file system refuses; returns it (delete it to free the room)."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        chunk = b"\1" * 4096
        with contextlib.suppress(OSError):
            for _ in range(100_000):  # 400 MB at most: bounded even if the mount failed
                os.write(fd, chunk)
    finally:
        os.close(fd)
    return filler
