"""`gateway check` as an installer runs it, against a real Mosquitto with TLS listeners.

The broker has one listener per situation an installer meets: the right one (mutual TLS
and a password), one with an expired certificate, one whose certificate names another
host.  Each wrong setup must fail with the exact reason, and the checks that depend on
it must be skipped rather than fail in turn.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

from gateway.config import load_config
from gateway.install.checks import serial_ports_of
from gateway.sdk.driver import DeviceSpec, DriverInfo, SerialPortUse
from gateway.sdk.model import Kind
from gateway.sdk.registry import available_drivers
from tests.certs import Pki, make_pki
from tests.harness import GATEWAY, write_config
from tests.peers import Mosquitto, free_port, pty_pair

pytestmark = [pytest.mark.broker]

SMOKE = {
    "id": "smoke-1",
    "kind": "smoke",
    "location": {"building": "2"},
    "driver": {"type": "simulated"},
}


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _leaf(d: Path, name: str, ca: str, cn: str, san: str | None, expired: bool = False) -> Path:
    """A certificate signed by `ca` (ca.pem/ca.key in d); expired ones ended in 2020."""
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{name}.key", "-subj", f"/CN={cn}", "-out", f"{name}.csr", cwd=d)  # fmt: skip
    (d / f"{name}.ext").write_text(
        f"subjectAltName={san}\n" if san else "basicConstraints=CA:FALSE\n"
    )
    if expired:
        # `openssl x509 -req` cannot date a certificate in the past; `openssl ca` can.
        (d / "index.txt").touch()
        (d / "serial").write_text("1000\n")
        (d / "ca.cnf").write_text(
            "[ca]\ndefault_ca = d\n[d]\ndatabase = index.txt\nnew_certs_dir = .\n"
            "serial = serial\ndefault_md = sha256\npolicy = p\nunique_subject = no\n"
            "[p]\ncommonName = supplied\n"
        )
        _openssl("ca", "-batch", "-config", "ca.cnf", "-cert", f"{ca}.pem", "-keyfile", f"{ca}.key",
                 "-in", f"{name}.csr", "-out", f"{name}.pem", "-notext", "-extfile", f"{name}.ext",
                 "-startdate", "20200101000000Z", "-enddate", "20200201000000Z", cwd=d)  # fmt: skip
    else:
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
                 "-CAcreateserial", "-days", "2", "-out", f"{name}.pem", "-extfile", f"{name}.ext",
                 cwd=d)  # fmt: skip
    for suffix in ("pem", "key"):
        (d / f"{name}.{suffix}").chmod(0o644)  # the broker reads them as user mosquitto
    return d / f"{name}.pem"


@dataclass(frozen=True)
class Site:
    broker: Mosquitto
    pki: Pki
    good: int  # mutual TLS and a password
    expired: int  # server certificate expired in 2020
    wrong_host: int  # server certificate for broker.example.net
    expired_cert: Path
    stray_client: Path  # a client certificate signed by the other CA
    plain: int  # no TLS at all
    late: Mosquitto  # a broker whose clock is five days ahead: our certificate expired
    late_tls: int  # its mutual TLS listener


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    pki = make_pki(Path(tempfile.mkdtemp(prefix="pki-check-")))
    d = pki.dir
    expired = _leaf(d, "expired", "ca", "localhost", "DNS:localhost,IP:127.0.0.1", expired=True)
    wrong = _leaf(d, "wrong-host", "ca", "broker.example.net", "DNS:broker.example.net")
    stray = _leaf(d, "stray-client", "other-ca", "test-site.gw", None)
    passwords = d / "passwords"
    subprocess.run(
        ["mosquitto_passwd", "-c", "-b", str(passwords), "gw", "right-password"], check=True
    )
    passwords.chmod(0o644)
    good, old, other, plain = free_port(), free_port(), free_port(), free_port()
    lines = [
        f"listener {good} 127.0.0.1",
        f"cafile {pki.ca}",
        f"certfile {pki.server_cert}",
        f"keyfile {pki.server_key}",
        "require_certificate true",
        f"password_file {passwords}",
        "allow_anonymous false",
    ]
    for port, cert in ((old, expired), (other, wrong)):
        lines += [
            f"listener {port} 127.0.0.1",
            f"certfile {cert}",
            f"keyfile {cert.with_suffix('.key')}",
            "allow_anonymous true",
        ]
    lines += [f"listener {plain} 127.0.0.1", "allow_anonymous true"]
    broker = Mosquitto(
        tmp_path_factory.mktemp("broker"),
        preamble="per_listener_settings true",
        extra="\n".join(lines),
    )
    broker.start()
    # Our client certificate is valid for two days; to this broker they are over.
    late_tls = free_port()
    late = Mosquitto(
        tmp_path_factory.mktemp("late-broker"),
        command=("faketime", "-f", "+5d", "mosquitto"),
        preamble="per_listener_settings true",
        extra="\n".join([f"listener {late_tls} 127.0.0.1", *lines[1:7]]),
    )
    late.start()
    yield Site(broker, pki, good, old, other, expired, stray, plain, late, late_tls)
    broker.remove()
    late.remove()
    shutil.rmtree(d, ignore_errors=True)


def broker_section(site: Site, **change: Any) -> dict[str, Any]:
    """The right settings for the good listener, with `change` applied (None deletes)."""
    secrets = site.pki.dir / "secrets"
    secrets.mkdir(exist_ok=True)
    (secrets / "right").write_text("right-password\n")
    (secrets / "wrong").write_text("wrong-password\n")
    cfg: dict[str, Any] = {
        "url": f"mqtts://localhost:{site.good}",
        "username": "gw",
        "password": {"file": str(secrets / "right")},
        "tls": {
            "ca_file": str(site.pki.ca),
            "cert_file": str(site.pki.client_cert),
            "key_file": str(site.pki.client_key),
        },
    }
    for key, value in change.items():
        if key in ("ca_file", "cert_file", "key_file"):
            if value is None:
                del cfg["tls"][key]
            else:
                cfg["tls"][key] = str(value)
        elif value is None:
            del cfg[key]
        else:
            cfg[key] = value
    return cfg


def run_check(config: Path, *prefix: str) -> tuple[int, dict[str, tuple[str, str]], str]:
    """Exit status, {check name: (status, rest of line)}, and the whole output."""
    out = subprocess.run(
        [*prefix, GATEWAY, "check", "-c", str(config)], capture_output=True, text=True, timeout=90
    )
    rows: dict[str, tuple[str, str]] = {}
    for line in out.stdout.splitlines():
        status = line[:4].strip()
        if status in ("OK", "FAIL", "SKIP"):
            name = line[6:].partition("  ")[0]
            rows[name.strip()] = (status, line)
    return out.returncode, rows, out.stdout + out.stderr


def test_a_commissioned_gateway_passes_every_check(tmp_path: Path, site: Site) -> None:
    config = write_config(tmp_path / "gw.yaml", "", [SMOKE], broker=broker_section(site))
    code, rows, output = run_check(config)
    assert code == 0, output
    for name in ("config", "outbox", "clock", "broker reachable", "TLS", "credentials",
                 "publish and read back", "device smoke-1"):  # fmt: skip
        assert rows[name][0] == "OK", output
    assert "with this gateway's client certificate" in rows["TLS"][1]
    assert "as gw" in rows["credentials"][1]
    assert output.rstrip().endswith("8 checks: 8 OK, 0 failed, 0 skipped")


CASES: dict[str, tuple[dict[str, Any], str, str]] = {
    "expired": (
        {"url": "mqtts://localhost:{expired}"},
        "TLS",
        "the broker's certificate has expired",
    ),
    "wrong host name": (
        {"url": "mqtts://localhost:{wrong_host}"},
        "TLS",
        "Hostname mismatch, certificate is not valid for 'localhost'",
    ),
    "unknown CA": (
        # Without a client certificate: with one, validate already refuses the pair.
        {"ca_file": "{other_ca}", "cert_file": None, "key_file": None},
        "TLS",
        "set broker.tls.ca_file to the CA that signed it",
    ),
    "missing client certificate": (
        {"cert_file": None, "key_file": None},
        "TLS",
        "the broker requires a client certificate: set broker.tls.cert_file and key_file",
    ),
    "no user name where the broker wants one": (
        {"username": None, "password": None},
        "credentials",
        "the broker refused a connection without a user name",
    ),
    "wrong password": (
        {"password": "wrong"},
        "credentials",
        "the broker refused the credentials",
    ),
    "plain listener": (
        {"url": "mqtts://localhost:{plain}"},
        "TLS",
        "this port does not speak TLS",
    ),
    "mqtt:// to a TLS port": (
        {"url": "mqtt://localhost:{wrong_host}", "tls": None, "username": None, "password": None},
        "MQTT connect",
        "speaks TLS, not plain MQTT: use mqtts://localhost:",
    ),
    "our certificate expired": (
        {"url": "mqtts://localhost:{late_tls}"},
        "TLS",
        "the broker refused this gateway's client certificate as expired",
    ),
    "nothing listening": (
        {"url": "mqtts://localhost:{closed}"},
        "broker reachable",
        "connection refused: is the broker running and listening on that port?",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_wrong_setup_fails_with_its_exact_reason(
    tmp_path: Path, site: Site, case: str
) -> None:
    change, failing, reason = CASES[case]
    names = {
        "expired": site.expired,
        "wrong_host": site.wrong_host,
        "closed": free_port(),
        "plain": site.plain,
        "late_tls": site.late_tls,
        "other_ca": site.pki.other_ca,
        "stray": site.stray_client,
        "stray_key": site.stray_client.with_suffix(".key"),
    }
    values: dict[str, Any] = {
        k: v.format(**names) if isinstance(v, str) else v for k, v in change.items()
    }
    if values.get("password") == "wrong":
        values["password"] = {"file": str(site.pki.dir / "secrets" / "wrong")}
    config = write_config(tmp_path / "gw.yaml", "", [SMOKE], broker=broker_section(site, **values))
    code, rows, output = run_check(config)
    assert code == 1, output
    assert rows[failing][0] == "FAIL" and reason in rows[failing][1], output
    failed = [name for name, (status, _) in rows.items() if status == "FAIL"]
    assert failed == [failing], f"only {failing} fails; the rest is OK or skipped:\n{output}"
    assert rows["publish and read back"][0] == "SKIP", output
    assert rows["device smoke-1"][0] == "OK", "devices are checked even when the broker is not"


def test_serial_ports_missing_or_not_permitted_are_named(
    request: pytest.FixtureRequest, site: Site
) -> None:
    # A world-readable folder: the second run is as user nobody, without the dialout group.
    work = Path(tempfile.mkdtemp(prefix="check-serial-"))
    request.addfinalizer(lambda: shutil.rmtree(work, ignore_errors=True))
    work.chmod(0o755)
    with pty_pair(work) as pair:
        port = os.path.realpath(pair.a)
        os.chown(port, 0, 20)  # root:dialout, as udev makes a USB serial adapter
        os.chmod(port, 0o660)
        devices = [
            {
                "id": "meter-1",
                "kind": "meter",
                "location": {"building": "A"},
                "driver": {
                    "type": "modbus",
                    "bus": {"port": port, "baud": 9600, "timeout_s": 0.2},
                    "unit_id": 1,
                    "profile": "eastron_sdm120",
                },
            },
            {
                "id": "meter-2",
                "kind": "meter",
                "location": {"building": "A"},
                "driver": {
                    "type": "modbus",
                    "bus": {"port": "/dev/ttyUSB-absent", "baud": 9600},
                    "unit_id": 2,
                    "profile": "eastron_sdm120",
                },
            },
        ]
        config = write_config(
            work / "gw.yaml",
            "",
            devices,
            broker={"url": site.broker.url},
            outbox={"path": f"/tmp/{work.name}-outbox.db"},  # writable by nobody too
        )
        config.chmod(0o644)
        code, rows, output = run_check(config)
        assert code == 1, output
        assert rows[f"serial {port}"][0] == "OK", output
        assert rows["serial /dev/ttyUSB-absent"][0] == "FAIL", output
        assert "not found (used by meter-2)" in output and "gateway ports" in output
        # The pty answers nothing: the device read fails with the driver's own reason.
        assert rows["device meter-1"][0] == "FAIL", output
        assert rows["device meter-2"][0] == "FAIL", output
        assert rows["publish and read back"][0] == "OK", output

        as_nobody = ("setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups")
        code, rows, output = run_check(config, *as_nobody)
        assert code == 1, output
        assert rows[f"serial {port}"][0] == "FAIL", output
        assert "no read/write permission for this user (used by meter-1)" in output
        assert "sudo usermod -aG dialout USER" in output


def test_an_invalid_config_lists_its_problems_and_checks_nothing_else(tmp_path: Path) -> None:
    config = tmp_path / "gw.yaml"
    config.write_text("version: 1\nsite: {id: a}\ngateway: {id: b}\nbroker: {url: http://x}\n")
    code, rows, output = run_check(config)
    assert code == 1
    assert list(rows) == ["config"] and rows["config"][0] == "FAIL"
    assert f"{config}:4 broker.url: must look like mqtt://host:1883 or mqtts://host:8883" in output


def test_ports_lists_what_pyserial_finds() -> None:
    from serial.tools import list_ports

    out = subprocess.run([GATEWAY, "ports"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    found = sorted(p.device for p in list_ports.comports())
    if not found:
        assert out.stdout.startswith("no serial ports found")
        return
    lines = out.stdout.splitlines()
    assert lines[0].split()[:3] == ["PORT", "USB", "VID:PID"]
    assert [line.split()[0] for line in lines[1:]] == found


class _TtySettings(BaseModel):
    """A driver that names its serial port `tty` and has a `port` that is a socket path."""

    model_config = ConfigDict(extra="forbid")
    tty: str
    port: str


def _tty_ports(spec: DeviceSpec) -> list[SerialPortUse]:
    return [SerialPortUse(spec.settings_as(_TtySettings).tty, ("tty",))]


def test_serial_ports_are_the_ones_each_driver_declares(tmp_path: Path) -> None:
    """Not every field called `port`: the driver says which device paths it opens."""
    drivers = dict(available_drivers())
    tty = DriverInfo(
        "ttyish",
        "test",
        _TtySettings,
        drivers["simulated"].factory,
        frozenset({Kind.METER}),
        tmp_path,
        serial_ports=_tty_ports,
    )
    drivers["ttyish"] = tty
    loc = {"building": "A"}
    devices = [
        {
            "id": "m-rtu",
            "kind": "meter",
            "location": loc,
            "driver": {
                "type": "modbus",
                "bus": {"port": "/dev/ttyUSB0"},
                "unit_id": 1,
                "profile": "eastron_sdm120",
            },
        },
        {
            "id": "m-tcp",
            "kind": "meter",
            "location": loc,
            "driver": {
                "type": "modbus",
                "bus": {"host": "127.0.0.1", "port": 502},
                "unit_id": 1,
                "profile": "eastron_sdm120",
            },
        },
        {
            "id": "m-dlt",
            "kind": "meter",
            "location": loc,
            "driver": {
                "type": "dlt645",
                "address": "000012345678",
                "bus": {"port": "/dev/ttyUSB1"},
            },
        },
        {
            "id": "sos-1",
            "kind": "elderly_alarm",
            "location": loc,
            "driver": {"type": "serial_line", "port": "/dev/ttyAMA0", "code": "1A2B3C"},
        },
        {
            "id": "z-1",
            "kind": "smoke",
            "location": loc,
            "driver": {"type": "zigbee2mqtt", "friendly_name": "b1/smoke"},
        },
        {
            "id": "odd-1",
            "kind": "meter",
            "location": loc,
            "driver": {"type": "ttyish", "tty": "/dev/ttyS3", "port": "/run/odd.sock"},
        },
    ]
    loaded = load_config(write_config(tmp_path / "gw.yaml", "mqtt://127.0.0.1:1", devices), drivers)
    assert serial_ports_of(loaded, drivers) == {
        "/dev/ttyUSB0": ["m-rtu"],
        "/dev/ttyUSB1": ["m-dlt"],
        "/dev/ttyAMA0": ["sos-1"],
        "/dev/ttyS3": ["odd-1"],
    }
