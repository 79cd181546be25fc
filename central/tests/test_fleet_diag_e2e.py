"""`community-central fleet diag` against a real `gateway run` and a real Mosquitto.

The gateway trusts one fleet key (`security.config_keys`); the command signs each
request with a key file, waits for the reply and checks it against command-reply.json.
A key the gateway does not trust gets a refusal, and a gateway that is not there a
bounded wait, each as one line and a failing exit status.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from community_central.broker import BrokerSettings
from community_central.fleet import DiagError, diag_fields, diagnose

from central.tests.tickets_harness import CENTRAL
from community_protocol.ed25519 import CommandSigner, generate_key, load_private_key
from community_protocol.ids import Identity
from community_protocol.schemas import validator
from tests.harness import GatewayProc, Subscriber, simulated_meter, topic_base, write_config
from tests.peers import Mosquitto

pytestmark = [pytest.mark.broker, pytest.mark.slow]


@dataclass
class Site:
    broker: BrokerSettings
    identity: Identity
    key: Path
    untrusted: Path
    gateway: GatewayProc

    def run(self, *args: str, key: Path | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [CENTRAL, "fleet", "diag", f"{self.identity.site}/{self.identity.gateway}", *args,
             "--key", str(key or self.key), "--broker", self.broker.url,
             "--prefix", self.broker.prefix, "--wait", "40"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip


@pytest.fixture
def site(tmp_path: Path, broker: Mosquitto) -> Iterator[Site]:
    private, public, _ = generate_key(tmp_path / "keys", "fleet")
    other, _, _ = generate_key(tmp_path / "keys", "stranger")
    config = write_config(
        tmp_path / "gw" / "gw.yaml",
        broker.url,
        [simulated_meter("meter-1", 2.0)],
        security={"config_keys": [str(public)]},
    )
    doc = yaml.safe_load(config.read_text())
    gw = GatewayProc(config).start()
    health = Subscriber(broker.port, f"{topic_base(config)}/health").start()
    try:
        # Health is published once it is subscribed to its commands.
        assert health.wait(lambda ms: len(ms) >= 1), gw.log()
        health.stop()
        identity = Identity(doc["site"]["id"], doc["gateway"]["id"])
        settings = BrokerSettings(broker.url, doc["broker"]["topic_prefix"])
        yield Site(settings, identity, private, other, gw)
    finally:
        health.stop()
        gw.terminate()


def test_check_and_logs_by_the_command_and_health_by_the_api(site: Site) -> None:
    check = site.run("check", "--by", "ops-ana")
    assert check.returncode in (0, 1), check.stderr
    out = check.stdout.splitlines()
    assert out[-1] in ("all checks passed", "a check failed"), check.stdout
    assert any(line.startswith("OK") and "meter-1" in line for line in out), check.stdout
    assert check.returncode == (0 if out[-1] == "all checks passed" else 1)

    logs = site.run("logs", "--lines", "50", "--level", "info")
    assert logs.returncode == 0, logs.stdout + logs.stderr
    assert any("running: 1 devices" in line for line in logs.stdout.splitlines()), logs.stdout
    # The gateway logged the check it ran for us, naming who asked.
    assert any("diag/check" in line and "ops-ana" in line for line in logs.stdout.splitlines())

    as_json = site.run("logs", "--lines", "3", "--json")
    assert as_json.returncode == 0, as_json.stderr
    reply = json.loads(as_json.stdout)
    validator("command-reply").validate(reply)
    assert reply["command"] == "diag/logs" and len(reply["result"]["lines"]) == 3

    path, fields = diag_fields("health")
    signer = CommandSigner(load_private_key(site.key))
    health = diagnose(site.broker, site.identity, path, fields, signer, wait_s=20)
    assert health["ok"] is True and "simulated" in health["result"]["health"]["drivers"]


def test_a_key_the_gateway_does_not_trust_is_refused(site: Site) -> None:
    done = site.run("health", key=site.untrusted)
    assert done.returncode == 1
    assert done.stdout.startswith("unauthorized: "), done.stdout + done.stderr
    assert "Traceback" not in done.stderr


def test_no_gateway_is_a_bounded_wait_and_one_line(site: Site) -> None:
    absent = Identity(site.identity.site, "gw-nobody")
    path, fields = diag_fields("outbox")
    signer = CommandSigner(load_private_key(site.key))
    with pytest.raises(DiagError, match=r"no reply from .*gw-nobody to diag/outbox within 1 s"):
        diagnose(site.broker, absent, path, fields, signer, wait_s=1)


def test_bad_arguments_are_refused_before_anything_is_sent(site: Site) -> None:
    for args, wanted in [
        (("read",), "read needs a DEVICE"),
        (("health", "meter-1"), "health takes no argument"),
        (("logs", "--lines", "0"), "--lines"),
        (("shell",), "'shell' is not one of"),
    ]:
        done = site.run(*args)
        assert done.returncode == 2 and wanted in done.stderr, (args, done.stderr)
        assert "Traceback" not in done.stderr
    with pytest.raises(ValueError, match="device"):
        diag_fields("read", device="x" * 65)
