"""Remote diagnostics end to end: a real `gateway run` (simulated meter), a real Mosquitto.

Signed requests go to `cmd/diag/...` as the platform would send them; the replies come
back on `reply/diag/...` and are checked against the contract's schemas.
"""

from __future__ import annotations

import json
import threading
import uuid
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from community_protocol.ed25519 import generate_key, load_private_key
from community_protocol.ids import Identity
from community_protocol.schemas import validator
from community_protocol.topics import CommandPath
from gateway.security.signing import CommandSigner
from tests.harness import GatewayProc, Subscriber, simulated_meter, topic_base, write_config
from tests.peers import Mosquitto, wait_for
from tests.web_harness import start_web_gateway

pytestmark = [pytest.mark.broker, pytest.mark.slow]


class Platform:
    """Sends signed commands to one gateway and waits for each reply by request_id."""

    def __init__(self, broker: Mosquitto, config: Path, key: Path) -> None:
        doc = yaml.safe_load(config.read_text())
        self.identity = Identity(doc["site"]["id"], doc["gateway"]["id"])
        self.base = topic_base(config)
        self.signer = CommandSigner(load_private_key(key))
        self.replies = Subscriber(broker.port, f"{self.base}/reply/#").start()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2)
        connected = threading.Event()
        self.client.on_connect = lambda *_a: connected.set()
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()
        assert connected.wait(10)

    def wait_ready(self, broker: Mosquitto, gw: GatewayProc) -> None:
        """Until the gateway publishes health: it is subscribed to its commands by then."""
        health = Subscriber(broker.port, f"{self.base}/health").start()
        try:
            assert health.wait(lambda ms: len(ms) >= 1), gw.log()
        finally:
            health.stop()

    def send(self, path: str, fields: dict[str, Any], *, signed: bool = True) -> dict[str, Any]:
        """The reply to one command (checked against command-reply.json)."""
        rid = uuid.uuid4().hex[:12]
        payload = {**fields, "request_id": rid}
        if signed:
            payload = self.signer.sign(self.identity, path, payload)
        return self.send_raw(path, payload)

    def send_raw(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        rid = payload["request_id"]

        def mine() -> list[dict[str, Any]]:
            return [d for m in self.replies.snapshot() if (d := m.json())["request_id"] == rid]

        seen = len(mine())  # a replay reuses the request_id: wait for a new reply
        topic = f"{self.base}/cmd/{path}"
        self.client.publish(topic, json.dumps(payload), qos=1).wait_for_publish(10)
        assert wait_for(lambda: len(mine()) > seen, timeout=40), f"no reply to {path}"
        reply = mine()[-1]
        validator("command-reply").validate(reply)
        return reply

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
        self.replies.stop()


def _gateway(broker: Mosquitto, tmp: Path) -> tuple[Path, Path]:
    """A gateway trusting a fleet key (for diagnostics) and a ticket service's key."""
    private, public, _ = generate_key(tmp / "keys", "fleet")
    _, tickets, _ = generate_key(tmp / "keys", "tickets")
    config = write_config(
        tmp / "gw" / "gw.yaml",
        broker.url,
        [simulated_meter("meter-1", 2.0)],
        security={"config_keys": [str(public)], "command_keys": [str(tickets)]},
    )
    return config, private


def _result(reply: dict[str, Any], definition: str) -> Any:
    assert reply["ok"] is True, reply
    validator("command-reply", definition).validate(reply["result"])
    return reply["result"]


def test_every_diagnostic_over_a_real_broker_signed_and_rate_limited(
    broker: Mosquitto, tmp_path: Path
) -> None:
    config, key = _gateway(broker, tmp_path)
    gw = GatewayProc(config).start()
    platform = Platform(broker, config, key)
    telemetry = Subscriber(broker.port, f"{platform.base}/devices/meter-1/telemetry").start()
    try:
        assert telemetry.wait(lambda ms: len(ms) >= 2), gw.log()
        unsigned = platform.send(CommandPath.DIAG_LOGS, {}, signed=False)
        assert (unsigned["ok"], unsigned["status"]) == (False, "unauthorized")
        assert "must be signed" in unsigned["error"]
        tickets = CommandSigner(load_private_key(tmp_path / "keys" / "tickets.key"))
        payload = tickets.sign(platform.identity, CommandPath.DIAG_LOGS, {"request_id": "t1"})
        by_tickets = platform.send_raw(CommandPath.DIAG_LOGS, payload)
        assert (by_tickets["ok"], by_tickets["status"]) == (False, "unauthorized")
        assert "not a fleet key (security.config_keys)" in by_tickets["error"]

        health = _result(
            platform.send(CommandPath.DIAG_HEALTH, {"by": "ops-ana"}), "diag_health_result"
        )
        assert "simulated" in health["health"]["drivers"]
        outbox = _result(platform.send(CommandPath.DIAG_OUTBOX, {}), "diag_outbox_result")
        assert outbox["path"].endswith("outbox.db") and outbox["stats"]["accepted_total"] >= 2

        logs = _result(
            platform.send(CommandPath.DIAG_LOGS, {"lines": 50, "level": "info"}), "diag_logs_result"
        )
        assert any("running: 1 devices" in line for line in logs["lines"]), logs
        assert any("diagnostics diag/health for " in line for line in logs["lines"])

        read = _result(
            platform.send(CommandPath.DIAG_READ, {"device": "meter-1"}), "diag_read_result"
        )
        assert read["ok"] and read["device"] == "meter-1" and read["points"], read

        before = len(telemetry.snapshot())
        restart = platform.send(CommandPath.DIAG_RESTART, {"driver": "simulated"})
        assert _result(restart, "diag_restart_result") == {"driver": "simulated", "restarted": True}
        assert telemetry.wait(lambda ms: len(ms) >= before + 3), gw.log()
        assert "restarting driver simulated" in gw.log()

        check = _result(platform.send(CommandPath.DIAG_CHECK, {}), "diag_check_result")
        by_name = {r["name"]: r["status"] for r in check["results"]}
        assert by_name["config"] == "OK" and by_name["publish and read back"] == "OK", check
        assert by_name["device meter-1"] == "OK" and check["ok"] is True, check

        # A signed request is run once; a replay of the very same bytes is refused.
        payload = platform.signer.sign(
            platform.identity, CommandPath.DIAG_HEALTH, {"request_id": "r1", "by": "ops-cy"}
        )
        first = platform.send_raw(CommandPath.DIAG_HEALTH, payload)
        assert first["ok"] is True, first
        replay = platform.send_raw(CommandPath.DIAG_HEALTH, payload)
        assert (replay["ok"], replay["status"]) == (False, "replayed")

        # One requester in a hurry is slowed down, saying for how long (5 at once, then
        # one every 5 s: 15 requests overrun that however slowly this machine answers).
        replies = [platform.send(CommandPath.DIAG_HEALTH, {"by": "ops-ben"}) for _ in range(15)]
        statuses = [r["status"] for r in replies]
        assert statuses[0] == "done" and "busy" in statuses, statuses
        busy = next(r for r in replies if r["status"] == "busy")
        assert busy["error"].startswith("too many diagnostics requests; try again in "), busy
        assert gw.running()
    finally:
        telemetry.stop()
        platform.stop()
        assert gw.terminate() == 0


def test_shell_injection_in_every_argument_runs_nothing(broker: Mosquitto, tmp_path: Path) -> None:
    config, key = _gateway(broker, tmp_path)
    marker = tmp_path / "pwned"
    hostile = [
        f"; touch {marker}",
        f"$(touch {marker})",
        f"`touch {marker}`",
        f"meter-1 && touch {marker}",
        f"| touch {marker}\n",
        "../../../../etc/passwd",
    ]
    arguments = {
        CommandPath.DIAG_CHECK: ["devices", "cmd"],
        CommandPath.DIAG_OUTBOX: ["path"],
        CommandPath.DIAG_HEALTH: ["cmd"],
        CommandPath.DIAG_LOGS: ["lines", "level", "file"],
        CommandPath.DIAG_READ: ["device"],
        CommandPath.DIAG_RESTART: ["driver"],
    }
    gw = GatewayProc(config).start()
    platform = Platform(broker, config, key)
    try:
        platform.wait_ready(broker, gw)
        for path, names in arguments.items():
            for name in names:
                for value in hostile:
                    reply = platform.send(path, {name: value})
                    assert reply["ok"] is False and reply["status"] == "error", reply
                    assert "internal error" not in reply["error"], reply
            # `by` is only a label: it may run, but never as a command.
            platform.send(path, {"by": hostile[0][:64], "device": "meter-1", "driver": "nope"})
        for value in hostile[:3]:
            reply = platform.send(f"diag/logs{value.strip()}", {})
            assert reply["ok"] is False and "unknown command" in reply["error"], reply
        assert not marker.exists()
        assert "Traceback" not in gw.log() and gw.running()
    finally:
        platform.stop()
        assert gw.terminate() == 0


def test_a_gateway_that_trusts_no_fleet_key_refuses_every_diagnostic(
    broker: Mosquitto, tmp_path: Path
) -> None:
    # It trusts the ticket service's key (for acknowledgements): not enough to diagnose.
    private, public, _ = generate_key(tmp_path / "keys", "tickets")
    config = write_config(
        tmp_path / "gw" / "gw.yaml",
        broker.url,
        [simulated_meter("m-1", 1.0)],
        security={"command_keys": [str(public)]},
    )
    gw = GatewayProc(config).start()
    platform = Platform(broker, config, private)
    try:
        platform.wait_ready(broker, gw)
        for path in CommandPath.DIAG_COMMANDS:
            reply = platform.send(path, {})  # signed by a key trusted for other commands
            assert (reply["ok"], reply["status"]) == (False, "unauthorized"), reply
            assert "security.config_keys" in reply["error"]
    finally:
        platform.stop()
        assert gw.terminate() == 0


def test_a_pin_typed_as_a_staff_id_in_the_console_comes_back_redacted(
    broker: Mosquitto, tmp_path: Path
) -> None:
    # A real line of the real web console: a failed sign-in logs the id typed, and
    # people type their PIN into the id box.
    private, public, _ = generate_key(tmp_path / "keys", "fleet")
    gw = start_web_gateway(tmp_path, broker, sections={"security": {"config_keys": [str(public)]}})
    platform = Platform(broker, gw.config, private)
    try:
        gw.client().sign_in(staff_id="482913", secret="000000")
        assert wait_for(lambda: "failed sign-in of '482913'" in gw.proc.log()), gw.proc.log()
        logs = platform.send(CommandPath.DIAG_LOGS, {"level": "warning"})
        lines = _result(logs, "diag_logs_result")["lines"]
        [line] = [x for x in lines if "failed sign-in" in x]
        assert "482913" not in json.dumps(logs) and "'[redacted]' from 127.0.0.1" in line, line
    finally:
        platform.stop()
        gw.stop()
