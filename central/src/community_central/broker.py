"""How the central side reaches its broker: settings checked before any I/O, and paho.

The central side's broker settings (URL, credentials, CA, reconnect delays: command
line options, not the gateway's config model) and `build_client`, which keeps paho
behind it.  What does not depend on the settings (PUBLISH properties, credential
refusals, a bounded stop) is the protocol's, shared with the gateway, re-exported here.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from community_protocol.mqtt import publish_properties, refused_credentials, stop_loop

MAX_SECRET_BYTES = 64 * 1024

__all__ = [
    "BrokerSettings",
    "build_client",
    "publish_properties",
    "refused_credentials",
    "stop_loop",
]


@dataclass(frozen=True, slots=True)
class BrokerSettings:
    """One broker connection; `__post_init__` raises ValueError naming the bad option."""

    url: str
    prefix: str = "community/v1"
    username: str | None = None
    password_file: Path | None = None
    ca_file: Path | None = None
    keepalive_s: int = 30
    min_delay_s: int = 1
    max_delay_s: int = 10
    max_inflight: int = 100

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValueError("--broker: must look like mqtt://host:1883 or mqtts://host:8883")
        if parts.username or parts.password:
            raise ValueError("--broker: put no credentials in the URL; use --username")
        p = self.prefix
        if not p or any(c in p for c in "+#") or p.startswith("/") or p.endswith("/"):
            raise ValueError(
                "--prefix: a topic prefix has no '+', '#', nor leading or trailing '/'"
            )
        if self.password_file is not None and self.username is None:
            raise ValueError("--password-file: a password needs --username")
        if self.ca_file is not None and not self.uses_tls:
            raise ValueError("--ca-file: needs an mqtts:// broker URL")

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or (8883 if self.uses_tls else 1883)

    @property
    def uses_tls(self) -> bool:
        return urlsplit(self.url).scheme == "mqtts"

    def password(self) -> str | None:
        """The password file's text without its trailing newline; OSError if unreadable."""
        if self.password_file is None:
            return None
        with self.password_file.open("rb") as f:
            # A password is a line of text; a bigger file is the wrong file.
            raw = f.read(MAX_SECRET_BYTES + 1)
        if len(raw) > MAX_SECRET_BYTES:
            raise OSError(f"{self.password_file} is over {MAX_SECRET_BYTES} bytes: not a password")
        return raw.decode("utf-8", errors="replace").rstrip("\r\n")


def build_client(cfg: BrokerSettings, client_id: str) -> mqtt.Client:
    """An MQTT 5 paho client with TLS and credentials from `cfg`; not connected.

    TLS never falls back to plain text: an mqtts:// URL verifies the server certificate
    and host name.
    """
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    if cfg.uses_tls:
        context = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH, cafile=str(cfg.ca_file) if cfg.ca_file else None
        )
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        client.tls_set_context(context)
    if cfg.username is not None:
        client.username_pw_set(cfg.username, cfg.password())
    client.max_inflight_messages_set(cfg.max_inflight)
    client.reconnect_delay_set(max(1, cfg.min_delay_s), max(1, cfg.max_delay_s))
    return client
