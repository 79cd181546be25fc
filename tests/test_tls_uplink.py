"""The uplink over TLS with a client certificate and a password, against a real Mosquitto."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.certs import Pki, make_pki
from tests.harness import GatewayProc, Subscriber, topic_base, write_config
from tests.peers import Mosquitto, free_port, wait_for

pytestmark = [pytest.mark.broker]

SMOKE = {
    "id": "smoke-1",
    "kind": "smoke",
    "location": {"building": "2"},
    "driver": {"type": "simulated", "events": [{"type": "smoke.alarm", "every_s": 0.5}]},
}


@pytest.fixture
def tls_broker(tmp_path: Path) -> Any:
    """A broker with a plain listener (for the test's subscriber) and a TLS one for the gateway."""
    import tempfile

    pki = make_pki(Path(tempfile.mkdtemp(prefix="pki-")))
    pwfile = pki.dir / "passwords"
    subprocess.run(
        ["mosquitto_passwd", "-c", "-b", str(pwfile), "gw", "right-password"], check=True
    )
    pwfile.chmod(0o644)
    tls_port = free_port()
    broker = Mosquitto(
        tmp_path / "broker",
        preamble="per_listener_settings true",
        extra="\n".join(
            [
                f"listener {tls_port} 127.0.0.1",
                f"cafile {pki.ca}",
                f"certfile {pki.server_cert}",
                f"keyfile {pki.server_key}",
                "require_certificate true",
                f"password_file {pwfile}",
                "allow_anonymous false",
            ]
        ),
    )
    broker.start()
    yield broker, pki, tls_port
    broker.remove()


def config_for(
    tmp_path: Path,
    broker: Mosquitto,
    pki: Pki,
    port: int,
    *,
    ca: Path,
    password: str,
    client_cert: bool = True,
) -> Path:
    secrets = tmp_path / "secrets"
    secrets.mkdir(exist_ok=True)
    (secrets / "broker-password").write_text(password + "\n")
    broker_cfg = {
        "url": f"mqtts://localhost:{port}",
        "username": "gw",
        "password": {"file": str(secrets / "broker-password")},
        "tls": {
            "ca_file": str(ca),
            **(
                {"cert_file": str(pki.client_cert), "key_file": str(pki.client_key)}
                if client_cert
                else {}
            ),
        },
        "reconnect": {"min_delay_s": 0.2, "max_delay_s": 0.5},
    }
    return write_config(tmp_path / "gw.yaml", broker.url, [SMOKE], broker=broker_cfg)


def test_mutual_tls_and_password_deliver(tmp_path: Path, tls_broker: Any) -> None:
    broker, pki, port = tls_broker
    config = config_for(tmp_path, broker, pki, port, ca=pki.ca, password="right-password")
    sub = Subscriber(broker.port, f"{topic_base(config)}/#").start()
    gw = GatewayProc(config).start()
    try:
        assert sub.wait(lambda ms: any(m.topic.endswith("/events") for m in ms)), gw.log()
    finally:
        gw.terminate()


@pytest.mark.parametrize(
    ("wrong", "expected"),
    [
        ("ca", "set broker.tls.ca_file to the CA that signed it"),
        ("password", "the broker refused the credentials"),
        # Refused after the TLS 1.3 handshake, in an alert paho only logs.
        ("cert", "the broker requires a client certificate"),
    ],
)
def test_wrong_ca_or_password_is_reported_and_never_falls_back(
    tmp_path: Path, tls_broker: Any, wrong: str, expected: str
) -> None:
    broker, pki, port = tls_broker
    config = config_for(
        tmp_path,
        broker,
        pki,
        port,
        ca=pki.other_ca if wrong == "ca" else pki.ca,
        password="wrong" if wrong == "password" else "right-password",
        # With a client certificate, validate already refuses a CA that did not sign it.
        client_cert=wrong not in ("cert", "ca"),
    )
    sub = Subscriber(broker.port, f"{topic_base(config)}/#").start()
    gw = GatewayProc(config).start()
    try:
        assert wait_for(lambda: expected in gw.log(), timeout=15), gw.log()
        assert gw.running()
    finally:
        gw.terminate()
    assert gw.log().count(expected) == 1, "a repeated failure is logged once"
    assert sub.snapshot() == [], "nothing reached the broker by any other way"
