"""Opening one MQTT connection for the uplink: a cheap TCP probe, then CONNECT.

Every failure (DNS, refused, TLS, a refusing broker, no CONNACK) is reported through
`report` in words an installer can act on, and the caller retries with backoff.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt

from gateway.config import BrokerConfig, MqttProtocol
from gateway.mqtt.client import (
    ConnectDiagnosis,
    build_client,
    connect_properties,
    explain_connect_error,
    reason_text,
)

__all__ = ["CONNACK_TIMEOUT_S", "PROBE_TIMEOUT_S", "connect", "probe"]

PROBE_TIMEOUT_S = 2.0
CONNACK_TIMEOUT_S = 10.0


def _turn(client: mqtt.Client, timeout: float) -> bool:
    """One turn of the network loop, as the uplink makes them; False: the connection is gone.

    Not `client.loop()`: that makes a socket pair for waking a loop thread, and paho then
    writes a byte to it at every publish for the rest of the connection: a system call
    per message for nothing, since no loop thread waits on it.  A paho QoS 1 publish
    loop alone took 49 to 57 µs of CPU per message with it, 45 to 48 µs without.
    """
    sock = client.socket()
    if sock is None:
        return False
    pending = getattr(sock, "pending", None)  # TLS bytes decrypted already: select misses them
    if pending is not None and pending() > 0:
        readable, writable = True, False
    else:
        want = [sock] if client.want_write() else []
        r, w, _ = select.select([sock], want, [], timeout)
        readable, writable = bool(r), bool(w)
    if readable and client.loop_read() != mqtt.MQTT_ERR_SUCCESS:
        return False
    if writable and client.loop_write() != mqtt.MQTT_ERR_SUCCESS:
        return False
    return client.loop_misc() == mqtt.MQTT_ERR_SUCCESS


def probe(cfg: BrokerConfig, report: Callable[[str], None]) -> bool:
    """Whether the broker's port accepts a TCP connection: a SYN, not a TLS handshake.

    Lets a fleet retry often (a short maximum delay) at almost no cost to a broker
    that is down or restarting.
    """
    try:
        with socket.create_connection((cfg.host, cfg.port), PROBE_TIMEOUT_S):
            return True
    except OSError as exc:
        report(explain_connect_error(exc))
        return False


def connect(
    cfg: BrokerConfig,
    client_id: str,
    *,
    will: tuple[str, bytes],
    on_message: Callable[[mqtt.Client, Any, mqtt.MQTTMessage], None],
    stop: threading.Event,
    report: Callable[[str], None],
    track: Callable[[mqtt.Client | None], None],
) -> mqtt.Client | None:
    """A connected client with a persistent session, or None (reported) after a failure.

    `track` is told the client before CONNECT and None if it fails: with a persistent
    session, commands queued while the gateway was away arrive right after the CONNACK
    and are answered through it at once.
    """
    client = build_client(cfg, client_id, persistent=True)
    client.will_set(will[0], will[1], qos=1, retain=True)
    client.on_message = on_message
    track(client)
    result: dict[str, Any] = {}

    def on_connect(_c: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        result["rc"] = rc

    client.on_connect = on_connect
    diagnosis = ConnectDiagnosis(client, tls=cfg.uses_tls)
    try:
        if cfg.protocol is MqttProtocol.MQTT5:
            client.connect(
                cfg.host,
                cfg.port,
                cfg.keepalive_s,
                clean_start=False,
                properties=connect_properties(cfg),
            )
        else:  # 3.1.1: clean session is set on the client (build_client)
            client.connect(cfg.host, cfg.port, cfg.keepalive_s)
        deadline = time.monotonic() + CONNACK_TIMEOUT_S
        while "rc" not in result and time.monotonic() < deadline and not stop.is_set():
            if not _turn(client, 0.1):
                break  # the broker closed the connection: no CONNACK will come
    except Exception as exc:  # DNS, refused, TLS: every one is reported, then retried
        report(explain_connect_error(exc))
        sock = client.socket()
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()
        track(None)
        return None
    rc = result.get("rc")
    if rc is None or rc.is_failure:
        if rc is not None:
            report(reason_text(rc))
        else:
            report(
                diagnosis.explain()
                or "the broker closed the connection or sent no CONNACK within 10 s"
            )
        with contextlib.suppress(Exception):
            client.disconnect()
        track(None)
        return None
    return client
