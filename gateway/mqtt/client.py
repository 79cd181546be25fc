"""The paho-mqtt adapter: builds a configured client and explains connection failures.

Everything paho-specific that more than one module needs (the publisher, `gateway
check`) lives here, so the rest of the code never sets TLS or credentials on a client
itself; what central needs as well (`publish_properties`, `refused_credentials`) is
community_protocol.mqtt's, re-exported here.
"""

from __future__ import annotations

import re
import select
import ssl
import time
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from community_protocol.mqtt import publish_properties, refused_credentials
from gateway.config import BrokerConfig, MqttProtocol

__all__ = [
    "ConnectDiagnosis",
    "build_client",
    "connect_properties",
    "explain_connect_error",
    "publish_properties",
    "reason_text",
    "refused_credentials",
]


def build_client(cfg: BrokerConfig, client_id: str, *, persistent: bool = False) -> mqtt.Client:
    """A paho client with protocol, TLS and credentials from the config; not connected.

    TLS never falls back to plain text: an mqtts:// URL always verifies the server
    certificate and host name, and a failure is an error to report, not to work around.
    `persistent`: with MQTT 3.1.1, clean session off (MQTT 5 sets it at connect, with
    `connect_properties`).
    """
    protocol = mqtt.MQTTv5 if cfg.protocol is MqttProtocol.MQTT5 else mqtt.MQTTv311
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=protocol,
        clean_session=None if protocol == mqtt.MQTTv5 else not persistent,
    )
    if cfg.uses_tls:
        context = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH,
            cafile=str(cfg.tls.ca_file) if cfg.tls and cfg.tls.ca_file else None,
        )
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if cfg.tls is not None and cfg.tls.cert_file is not None and cfg.tls.key_file is not None:
            context.load_cert_chain(str(cfg.tls.cert_file), str(cfg.tls.key_file))
        client.tls_set_context(context)
    if cfg.username is not None:
        password = cfg.password.read() if cfg.password is not None else None
        client.username_pw_set(cfg.username, password)
    client.max_inflight_messages_set(cfg.max_inflight)
    # The gateway's outbox already holds everything unacknowledged; paho's own queue
    # only has to hold what the publisher hands it while disconnected.
    client.max_queued_messages_set(0)
    return client


def connect_properties(cfg: BrokerConfig) -> Properties:
    """MQTT 5 CONNECT properties of a persistent session: how long the broker keeps it."""
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = cfg.session_expiry_s
    return props


_VERIFY_HINTS: list[tuple[str, str]] = [
    ("expired", "the broker's certificate has expired: renew it, or check this gateway's clock"),
    (
        "not yet valid",
        "the broker's certificate is not valid yet: this gateway's clock is probably wrong",
    ),
    (
        "Hostname mismatch",
        "the certificate does not name this host: use the host name the certificate was issued for in broker.url",
    ),
    (
        "IP address mismatch",
        "the certificate does not name this IP address: use the host name it was issued for",
    ),
    (
        "unable to get local issuer",
        "the broker's certificate is signed by a CA this gateway does not trust: set broker.tls.ca_file to that CA",
    ),
    (
        "self-signed",
        "the broker's certificate is self-signed or from an unknown CA: set broker.tls.ca_file to the CA that signed it",
    ),
]


def explain_connect_error(exc: BaseException) -> str:
    """One line an installer can act on, for an exception raised while connecting."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        detail = exc.verify_message or str(exc)
        for needle, hint in _VERIFY_HINTS:
            if needle.lower() in detail.lower():
                return f"TLS certificate check failed ({detail}): {hint}"
        return f"TLS certificate check failed: {detail}"
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or str(exc)
        if (
            "CERTIFICATE_REQUIRED" in reason.upper()
            or "ALERT_CERTIFICATE_REQUIRED" in reason.upper()
        ):
            return "the broker requires a client certificate: set broker.tls.cert_file and key_file"
        if "CERTIFICATE_EXPIRED" in reason.upper():
            # The broker's alert about the certificate this gateway sent, not its own.
            return f"the broker refused this gateway's client certificate as expired ({reason}): renew broker.tls.cert_file, or the broker's clock is wrong"
        if "UNKNOWN_CA" in reason.upper() or "BAD_CERTIFICATE" in reason.upper():
            return f"the broker refused this gateway's client certificate ({reason}): is it signed by the CA the broker trusts?"
        return f"TLS handshake failed: {reason}"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused: is the broker running and listening on that port?"
    if isinstance(exc, TimeoutError):
        return "no answer from the broker (timeout): check the address, firewall and network"
    if isinstance(exc, OSError) and exc.strerror:
        return f"cannot reach the broker: {exc.strerror}"
    return f"{type(exc).__name__}: {exc}"


def reason_text(reason_code: Any) -> str:
    """Readable CONNACK refusal, with what to do for the common ones."""
    text = str(reason_code)
    if refused_credentials(reason_code):
        return f"the broker refused the credentials ({text}): check broker.username and the password file"
    return f"the broker refused the connection: {text}"


class ConnectDiagnosis:
    """Finds why a connection attempt got no CONNACK when paho itself does not say.

    With TLS 1.3 the broker judges the client certificate (missing, unknown CA) only
    after the handshake, in an alert.  paho either loses that alert (the broker's close
    resets the connection first: "EOF occurred in violation of protocol") or catches the
    SSL error on a read and only logs it.  So: read the alert before paho sends CONNECT,
    and keep paho's error log lines.  Attach before `connect()`.
    """

    def __init__(self, client: mqtt.Client, *, tls: bool) -> None:
        self.errors: list[str] = []
        self.tls_error: ssl.SSLError | None = None
        self.started = time.monotonic()
        client.on_log = self._on_log
        if tls:
            client.on_socket_open = self._listen_for_verdict

    def _on_log(self, _c: mqtt.Client, _u: Any, level: int, buf: str) -> None:
        if level == mqtt.MQTT_LOG_ERR:
            self.errors.append(buf)

    def _listen_for_verdict(self, _c: Any, _u: Any, sock: Any) -> None:
        # The broker sends nothing else before CONNECT: listen for a few round trips.
        wait = min(2.0, max(0.25, 2 * (time.monotonic() - self.started)))
        deadline = time.monotonic() + wait
        while (left := deadline - time.monotonic()) > 0:
            readable, _, _ = select.select([sock], [], [], left)
            if not readable:
                return
            try:
                sock.recv(1)
            except ssl.SSLWantReadError:
                continue  # a session ticket, handled inside the TLS layer
            except ssl.SSLError as exc:
                self.tls_error = exc
                return
            except OSError:
                return
            return

    def explain(self) -> str | None:
        """The TLS reason an installer can act on, or None if nothing was seen."""
        if self.tls_error is not None:
            return explain_connect_error(self.tls_error)
        for text in self.errors:
            # e.g. "failed to receive on socket: [SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] ..."
            found = re.search(r"\[SSL: (\w+)\]", text)
            if found:
                exc = ssl.SSLError(1, text.split(": ", 1)[-1])
                exc.reason = found.group(1)  # what the ssl module sets on a real one
                return explain_connect_error(exc)
        return None
