"""What `gateway check` verifies before an installer leaves a site, one result per check.

Each check returns `CheckResult`s; nothing here prints.  Order matters: a check whose
prerequisite failed is reported as skipped with the reason, so the first failure is
the one to fix.  Everything uses the gateway's own code paths: `load_config` for the
file, `build_client` for TLS and credentials, each driver's `read_once` for devices.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
import stat
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from community_protocol.enums import CheckStatus
from community_protocol.topics import Topics
from gateway.config import BrokerConfig, ClockCheck, ConfigError, LoadedConfig, load_config
from gateway.mqtt.client import (
    ConnectDiagnosis,
    build_client,
    explain_connect_error,
    reason_text,
    refused_credentials,
)
from gateway.sdk.clock import Clock
from gateway.sdk.devicechecks import serial_port_users
from gateway.sdk.driver import DeviceSpec, DriverInfo, ReadResult
from gateway.sdk.model import ClockState

__all__ = [
    "CheckResult",
    "Status",
    "check_broker",
    "check_clock",
    "check_config",
    "check_devices",
    "check_outbox_dir",
    "check_serial_ports",
    "serial_ports_of",
]

TIMEOUT_S = 5.0


# The contract's spelling: cmd/diag/check returns these results to the platform.
Status = CheckStatus


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One line of the report: what was checked, how it went, and what to do if it failed."""

    name: str
    status: Status
    detail: str
    hint: str = ""

    @property
    def failed(self) -> bool:
        return self.status is Status.FAIL


def _ok(name: str, detail: str) -> CheckResult:
    return CheckResult(name, Status.OK, detail)


def _fail(name: str, detail: str, hint: str = "") -> CheckResult:
    return CheckResult(name, Status.FAIL, detail, hint)


def _skip(name: str, detail: str) -> CheckResult:
    return CheckResult(name, Status.SKIP, detail)


# ---- config ---------------------------------------------------------------------------


def check_config(path: Path) -> tuple[CheckResult, LoadedConfig | None, list[str]]:
    """Validate the file; returns the result, the config, and every problem line."""
    try:
        loaded = load_config(path)
    except ConfigError as exc:
        n = len(exc.problems)
        result = _fail(
            "config",
            f"{path}: {n} problem{'s' if n != 1 else ''}",
            f"gateway validate -c {path} lists them with their line numbers",
        )
        return result, None, [str(p) for p in exc.problems]
    n = len(loaded.devices)
    return _ok("config", f"{path} is valid ({n} device{'s' if n != 1 else ''})"), loaded, []


def check_outbox_dir(loaded: LoadedConfig) -> CheckResult:
    """The outbox's folder exists (or can be made) and this user may write there."""
    path = loaded.config.outbox.path
    folder = path.parent
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not os.access(existing, os.W_OK | os.X_OK):
        return _fail(
            "outbox",
            f"{existing} is not writable by this user, so {path} cannot be created",
            "on an installed gateway outbox.path is /var/lib/community-gateway/outbox.db; "
            "run the check as the service user: sudo -u community-gateway gateway check ...",
        )
    return _ok("outbox", f"{path} can be written")


def check_clock(loaded: LoadedConfig) -> CheckResult:
    """Is the system clock set by NTP?  Wrong time breaks TLS and timestamps."""
    mode = loaded.config.clock.check
    if mode is ClockCheck.TRUST:
        return _ok("clock", "not checked (clock.check: trust)")
    if Clock(mode).state() is ClockState.SYNCED:
        return _ok("clock", "synchronised by NTP")
    return _fail(
        "clock",
        "not synchronised: messages are marked unsynced and TLS may fail as 'not yet valid'",
        "timedatectl shows the NTP service; the gateway needs to reach an NTP server (UDP 123)",
    )


# ---- broker ---------------------------------------------------------------------------


class _Session:
    """One paho connection driven step by step from this thread, with its outcomes."""

    def __init__(self, cfg: BrokerConfig, client_id: str) -> None:
        self.client = build_client(cfg, client_id)
        self.client.connect_timeout = TIMEOUT_S
        self.diagnosis = ConnectDiagnosis(self.client, tls=cfg.uses_tls)
        self.connack: Any = None
        self.lost = False
        self.granted: list[Any] | None = None
        self.received = threading.Event()
        self.payload = b""
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message

    def _on_connect(self, _c: Any, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        self.connack = rc

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, _rc: Any, _p: Any) -> None:
        self.lost = True

    def _on_subscribe(self, _c: Any, _u: Any, _mid: int, codes: Any, _p: Any) -> None:
        self.granted = list(codes)

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        self.payload = bytes(msg.payload)
        self.received.set()

    def pump_until(self, done: Callable[[], bool], timeout: float = TIMEOUT_S) -> bool:
        deadline = time.monotonic() + timeout
        while not done() and not self.lost and time.monotonic() < deadline:
            if self.client.loop(timeout=0.05) != mqtt.MQTT_ERR_SUCCESS:
                self.lost = True
        return done()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.disconnect()
            self.client.loop(timeout=0.1)


def check_broker(cfg: BrokerConfig, topics: Topics) -> list[CheckResult]:
    """Reachable, TLS verified, credentials accepted, and a message comes back."""
    where = f"{cfg.host}:{cfg.port}"
    results: list[CheckResult] = []
    try:
        with socket.create_connection((cfg.host, cfg.port), timeout=TIMEOUT_S):
            pass
    except OSError as exc:
        results.append(_fail("broker reachable", f"{where}: {explain_connect_error(exc)}"))
        return [*results, *_skipped_after("broker reachable", cfg)]
    results.append(_ok("broker reachable", f"{where} accepts connections"))

    # Never the gateway's own client id: the broker would disconnect the running gateway.
    session = _Session(
        cfg, f"{topics.identity.site}.{topics.identity.gateway}-check-{uuid.uuid4().hex[:6]}"
    )
    try:
        try:
            session.diagnosis.started = time.monotonic()
            session.client.connect(cfg.host, cfg.port, keepalive=30)
        except Exception as exc:
            if cfg.uses_tls and _speaks_plain_mqtt(cfg.host, cfg.port):
                results.append(_fail("TLS", _not_tls(cfg)))
                return [*results, *_skipped_after("TLS", cfg)]
            name = "TLS" if isinstance(exc, ssl.SSLError) else "broker reachable"
            results.append(_fail(name, explain_connect_error(exc)))
            return [*results, *_skipped_after(name, cfg)]
        session.pump_until(lambda: session.connack is not None)
        if session.connack is None:
            tls_reason = session.diagnosis.explain() if cfg.uses_tls else None
            if tls_reason is not None:
                results.append(_fail("TLS", tls_reason))
                return [*results, *_skipped_after("TLS", cfg)]
            if cfg.uses_tls and _speaks_plain_mqtt(cfg.host, cfg.port):
                results.append(_fail("TLS", _not_tls(cfg)))
                return [*results, *_skipped_after("TLS", cfg)]
            if not cfg.uses_tls and _speaks_tls(cfg.host, cfg.port):
                detail = f"{where} speaks TLS, not plain MQTT: use mqtts://{where} in broker.url"
                results.append(_fail("MQTT connect", detail))
                return [*results, *_skipped_after("MQTT connect", cfg)]
            results.append(
                _fail(
                    "MQTT connect",
                    f"no CONNACK from {where} within {TIMEOUT_S:.0f} s",
                    "is this port an MQTT listener (1883 plain, 8883 TLS)?",
                )
            )
            return [*results, *_skipped_after("MQTT connect", cfg)]
        if cfg.uses_tls:
            results.append(_ok("TLS", _tls_detail(cfg)))
        if session.connack.is_failure:
            results.append(_fail("credentials", _refusal(cfg, session.connack)))
            return [*results, _skip("publish and read back", "not connected")]
        who = f"as {cfg.username}" if cfg.username else "without a user name"
        results.append(_ok("credentials", f"accepted {who}"))
        results.append(_read_back(session, topics))
    finally:
        session.close()
    return results


# MQTT 3.1.1 CONNECT: clean session, empty client id, keep-alive 10 s.
_PLAIN_CONNECT = b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x0a\x00\x00"


def _speaks_plain_mqtt(host: str, port: int) -> bool:
    """Whether the port answers an MQTT CONNECT sent in the clear with a CONNACK."""
    try:
        with socket.create_connection((host, port), timeout=TIMEOUT_S) as sock:
            sock.sendall(_PLAIN_CONNECT)
            return sock.recv(1) == b"\x20"  # CONNACK, whatever its verdict
    except OSError:
        return False


def _speaks_tls(host: str, port: int) -> bool:
    """Whether the port answers a TLS handshake (certificates not judged here)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with (
            socket.create_connection((host, port), timeout=TIMEOUT_S) as raw,
            ctx.wrap_socket(raw, server_hostname=host),
        ):
            return True
    except ssl.SSLError as exc:
        # An alert (a client certificate wanted) is TLS; garbage or a close is not.
        return exc.reason not in (None, "WRONG_VERSION_NUMBER", "UNEXPECTED_EOF_WHILE_READING")
    except OSError:
        return False


def _not_tls(cfg: BrokerConfig) -> str:
    where = f"{cfg.host}:{cfg.port}"
    return (
        f"{where}: this port does not speak TLS, it answers MQTT in the clear; "
        "use the broker's TLS port in broker.url (usually 8883)"
    )


def _refusal(cfg: BrokerConfig, connack: Any) -> str:
    """The CONNACK refusal; without a user name there is no broker.username to check."""
    if cfg.username is None and refused_credentials(connack):
        return (
            f"the broker refused a connection without a user name ({connack}): this config "
            "has none; the broker wants a username and password under broker:"
        )
    return reason_text(connack)


def _tls_detail(cfg: BrokerConfig) -> str:
    ca = cfg.tls.ca_file if cfg.tls and cfg.tls.ca_file else "the system's CAs"
    mutual = " with this gateway's client certificate" if cfg.tls and cfg.tls.cert_file else ""
    return f"certificate of {cfg.host} verified against {ca}{mutual}"


def _skipped_after(failed: str, cfg: BrokerConfig) -> list[CheckResult]:
    names = ["TLS"] if cfg.uses_tls else []
    names += ["credentials", "publish and read back"]
    return [_skip(n, f"needs '{failed}' first") for n in names if n != failed]


def _read_back(session: _Session, topics: Topics) -> CheckResult:
    name = "publish and read back"
    topic = topics.check(uuid.uuid4().hex)
    session.client.subscribe(topic, qos=1)
    if not session.pump_until(lambda: session.granted is not None):
        return _fail(name, f"no answer to SUBSCRIBE {topic}")
    assert session.granted is not None
    if any(getattr(code, "is_failure", False) for code in session.granted):
        return _fail(
            name,
            f"the broker refused the subscription to {topic} ({session.granted[0]})",
            f"the broker's ACL must let this gateway use {topics.base}/#",
        )
    payload = f"gateway check {time.time():.3f}".encode()
    info = session.client.publish(topic, payload, qos=1)
    if not session.pump_until(session.received.is_set):
        published = "acknowledged" if info.is_published() else "not acknowledged"
        return _fail(
            name,
            f"a message to {topic} was {published} but never came back",
            f"the broker's ACL must let this gateway publish and subscribe under {topics.base}/",
        )
    if session.payload != payload:
        return _fail(name, f"a different message came back on {topic}")
    return _ok(name, f"a QoS 1 message on {topics.check('…')} came back")


# ---- serial ports and devices -----------------------------------------------------------


def serial_ports_of(
    loaded: LoadedConfig, drivers: Mapping[str, DriverInfo] | None = None
) -> dict[str, list[str]]:
    """Serial device paths the devices open, as their drivers declare, with their users."""
    if drivers is None:
        from gateway.sdk.registry import available_drivers

        drivers = available_drivers()
    users = serial_port_users(loaded.devices, drivers)
    return {port: list(dict.fromkeys(s.id for s, _ in used)) for port, used in users.items()}


def check_serial_ports(
    loaded: LoadedConfig, drivers: Mapping[str, DriverInfo] | None = None
) -> list[CheckResult]:
    """Every serial port of the config exists and this user may read and write it."""
    results = []
    for port, users in serial_ports_of(loaded, drivers).items():
        name = f"serial {port}"
        used_by = f"used by {', '.join(users)}"
        if not os.path.exists(port):
            results.append(
                _fail(
                    name,
                    f"not found ({used_by})",
                    "is the USB adapter plugged in? `gateway ports` lists the ports of this "
                    "machine; prefer the stable /dev/serial/by-id/... name",
                )
            )
            continue
        st = os.stat(port)
        if not stat.S_ISCHR(st.st_mode):
            results.append(_fail(name, f"is not a character device ({used_by})"))
            continue
        if not os.access(port, os.R_OK | os.W_OK):
            group = _group_name(st.st_gid)
            results.append(
                _fail(
                    name,
                    f"no read/write permission for this user ({used_by})",
                    f"the port belongs to group {group}: sudo usermod -aG {group} USER, "
                    "then log in again (the service user is in dialout already)",
                )
            )
            continue
        results.append(_ok(name, f"present, read/write allowed ({used_by})"))
    return results


def _group_name(gid: int) -> str:
    import grp

    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


async def _read_all(
    loaded: LoadedConfig, drivers: Mapping[str, DriverInfo], timeout_s: float
) -> list[CheckResult]:
    results = []
    # One device after the other: devices of one RS-485 bus must not be read at once.
    for spec in loaded.devices:
        results.append(await _read_one(spec, drivers.get(spec.driver), timeout_s))
    return results


async def _read_one(spec: DeviceSpec, info: DriverInfo | None, timeout_s: float) -> CheckResult:
    name = f"device {spec.id}"
    if info is None or info.read_once is None:
        return _skip(name, f"driver {spec.driver} cannot read a device on demand")
    try:
        async with asyncio.timeout(timeout_s):
            result: ReadResult = await info.read_once(spec)
    except TimeoutError:
        return _fail(name, f"no result within {timeout_s:.0f} s", "check wiring and address")
    except Exception as exc:
        return _fail(name, f"{type(exc).__name__}: {exc}")
    if not result.ok:
        return _fail(name, result.fault, result.hint)
    shown = ", ".join(
        f"{p.name}={p.value}{' ' + p.unit if p.unit else ''}" for p in result.points[:3]
    )
    more = f" (+{len(result.points) - 3} more)" if len(result.points) > 3 else ""
    return _ok(name, f"{spec.driver}: {shown}{more}")


def check_devices(
    loaded: LoadedConfig, drivers: Mapping[str, DriverInfo] | None = None, timeout_s: float = 15.0
) -> list[CheckResult]:
    """Read every device once through its driver's `read_once`."""
    if drivers is None:
        from gateway.sdk.registry import available_drivers

        drivers = available_drivers()
    return asyncio.run(_read_all(loaded, drivers, timeout_s))
