"""The platform's side of remote configuration in tests: keys, signed desired documents, publishing."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion

from community_protocol.documents import config_desired_document
from community_protocol.ed25519 import generate_key, load_private_key, sign_config
from community_protocol.ids import Identity
from tests.harness import GATEWAY, GatewayProc, Subscriber, write_config

__all__ = ["Platform", "config_status", "running_site", "signed_desired"]


def signed_desired(
    key: Ed25519PrivateKey | None,
    identity: Identity,
    version: int,
    config: dict[str, Any],
    *,
    signed_by: str = "ops-test",
) -> dict[str, Any]:
    """A desired configuration document, signed with `key` (None: unsigned)."""
    doc = config_desired_document(
        identity, version=version, config=config, signed_by=signed_by, issued_at=datetime.now(UTC)
    )
    return doc if key is None else sign_config(key, doc)


def config_status(config: Path) -> dict[str, Any]:
    """`gateway config status --json` of a config file."""
    done = subprocess.run(
        [GATEWAY, "config", "status", "-c", str(config), "--json"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    status: dict[str, Any] = json.loads(done.stdout)
    return status


@dataclass
class Platform:
    """Signs and publishes desired configurations for one gateway's config file."""

    config: Path
    port: int
    keys: Path
    key: Ed25519PrivateKey = field(init=False)
    public: Path = field(init=False)

    def __post_init__(self) -> None:
        private, self.public, _ = generate_key(self.keys, "config")
        self.key = load_private_key(private)

    def current(self) -> dict[str, Any]:
        doc: dict[str, Any] = yaml.safe_load(self.config.read_text())
        return doc

    @property
    def identity(self) -> Identity:
        doc = self.current()
        return Identity(doc["site"]["id"], doc["gateway"]["id"])

    @property
    def base(self) -> str:
        doc = self.current()
        return f"{doc['broker']['topic_prefix']}/{doc['site']['id']}/{doc['gateway']['id']}"

    def publish(self, *docs: dict[str, Any] | bytes) -> None:
        """Publish desired documents retained, QoS 1, as the platform does (one connection)."""
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="", protocol=mqtt.MQTTv5)
        client.connect("127.0.0.1", self.port)
        client.loop_start()
        try:
            for doc in docs:
                payload = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
                info = client.publish(f"{self.base}/config/desired", payload, qos=1, retain=True)
                info.wait_for_publish(10)
        finally:
            client.disconnect()
            client.loop_stop()


@contextmanager
def running_site(
    folder: Path,
    broker_url: str,
    port: int,
    devices: list[dict[str, Any]],
    trial_s: float,
    extra_env: dict[str, str] | None = None,
    sections: dict[str, Any] | None = None,
    before_start: Callable[[Path], None] | None = None,
) -> Iterator[tuple[Platform, GatewayProc, Subscriber]]:
    """A `gateway run` trusting a new platform key, and a subscriber to its whole tree.

    `sections`: more config sections (e.g. `web`), as write_config takes them;
    `before_start` is given the config file once written (to add a staff account).
    Yields once the gateway published its first reported document.
    """
    config = folder / "gw" / "gateway.yaml"
    config.parent.mkdir(parents=True)
    write_config(config, broker_url, devices)
    platform = Platform(config, port, folder / "keys")
    # Again, now trusting the platform's key.
    write_config(
        config,
        broker_url,
        devices,
        security={"config_keys": [str(platform.public)], "config_trial_s": trial_s},
        **(sections or {}),
    )
    if before_start is not None:
        before_start(config)
    sub = Subscriber(port, f"{platform.base}/#").start()
    gw = GatewayProc(config, extra_env=extra_env or {}).start()
    try:
        reported = lambda ms: any(m.topic.endswith("/config/reported") for m in ms)  # noqa: E731
        assert sub.wait(reported), "no reported document: " + gw.log()[-2000:]
        yield platform, gw, sub
    finally:
        if gw.running():
            gw.terminate()
        sub.stop()
