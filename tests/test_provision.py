"""`gateway provision`: a config that validates, owner-only secrets, and a CSR for mutual TLS.

The last test is the whole commissioning flow: provision with --csr, have the CSR signed
by the broker's CA, drop the certificate in, and `gateway check` passes against a real
Mosquitto that requires client certificates.
"""

from __future__ import annotations

import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from gateway.cli import main
from gateway.config import ClockCheck, load_config
from gateway.sdk.clock import Clock
from gateway.sdk.model import ClockState
from tests.certs import Pki, ca_pem, make_pki
from tests.harness import GATEWAY
from tests.peers import Mosquitto, free_port


def gateway(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [GATEWAY, *args], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
    )


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_flags_alone_write_a_valid_config_and_private_secrets(tmp_path: Path) -> None:
    ca = tmp_path / "platform-ca.pem"
    ca.write_bytes(ca_pem())  # validate parses it
    out = tmp_path / "etc"
    result = gateway(
        "provision", "--site", "sunrise-gardens", "--gateway", "gw-07",
        "--broker-url", "mqtts://broker.example.net:8883", "--ca-file", str(ca),
        "--username", "", "--password", "s3cret pass", "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    config = out / "gateway.yaml"
    validated = gateway("validate", "-c", str(config))
    assert validated.returncode == 0 and "OK (0 devices)" in validated.stdout, validated.stderr

    cfg = load_config(config).config
    assert (cfg.site.id, cfg.gateway.id) == ("sunrise-gardens", "gw-07")
    assert (
        cfg.broker.url == "mqtts://broker.example.net:8883"
        and cfg.broker.username == "gw-07@sunrise-gardens"
    )
    assert cfg.broker.password is not None and cfg.broker.password.read() == "s3cret pass"
    assert cfg.broker.tls is not None and cfg.broker.tls.ca_file == out / "secrets" / "ca.crt"
    assert cfg.outbox.path == Path("/var/lib/community-gateway/outbox.db")
    assert "s3cret" not in config.read_text(), "a secret never goes into the YAML"

    assert mode(out) == 0o700 and mode(out / "secrets") == 0o700
    for path in (config, out / "secrets" / "broker-password", out / "secrets" / "ca.crt"):
        assert mode(path) == 0o600, path
    assert (out / "secrets" / "ca.crt").read_bytes() == ca.read_bytes()


def test_prompts_ask_for_what_flags_do_not_give(tmp_path: Path) -> None:
    out = tmp_path / "etc"
    answers = "site-a\ngw-1\nmqtt://10.0.0.5:1883\n\n\n\n"  # no CA, no user, no password
    result = CliRunner().invoke(main, ["provision", "--out", str(out)], input=answers)
    assert result.exit_code == 0, result.output
    assert "Site id" in result.output and "Broker password" in result.output
    cfg = load_config(out / "gateway.yaml").config
    assert cfg.broker.url == "mqtt://10.0.0.5:1883"
    assert cfg.broker.username is None and cfg.broker.password is None and cfg.broker.tls is None
    assert list((out / "secrets").iterdir()) == []


def test_a_wrong_answer_writes_nothing_and_an_existing_config_is_kept(tmp_path: Path) -> None:
    out = tmp_path / "etc"
    bad = gateway("provision", "--site", "no spaces", "--gateway", "gw", "--broker-url",
                  "mqtt://h:1883", "--ca-file", "", "--username", "", "--password", "",
                  "--out", str(out))  # fmt: skip
    assert bad.returncode == 2 and "--site: String should match pattern" in bad.stderr
    assert not out.exists()

    args = ["provision", "--site", "s", "--gateway", "g", "--broker-url", "mqtt://h:1883",
            "--ca-file", "", "--username", "", "--password", "", "--out", str(out)]  # fmt: skip
    assert gateway(*args).returncode == 0
    before = (out / "gateway.yaml").read_text()
    again = gateway(*[a if a != "mqtt://h:1883" else "mqtt://other:1883" for a in args])
    assert again.returncode == 2 and "give --force to replace it" in again.stderr
    assert (out / "gateway.yaml").read_text() == before
    forced = gateway(*[a if a != "mqtt://h:1883" else "mqtt://other:1883" for a in args], "--force")
    assert forced.returncode == 0 and "mqtt://other:1883" in (out / "gateway.yaml").read_text()


def test_the_broker_user_is_the_gateways_identity_and_no_other(tmp_path: Path) -> None:
    """gateway@site names one gateway ('a.b'+'c' and 'a'+'b.c' differ); a shared name is refused."""
    base = ["provision", "--broker-url", "mqtt://h:1883", "--ca-file", "", "--password", "pw"]
    made = {}
    for site, gw in (("a.b", "c"), ("a", "b.c")):
        out = tmp_path / f"{site}-{gw}"
        done = gateway(*base, "--site", site, "--gateway", gw, "--username", "", "--out", str(out))
        assert done.returncode == 0, done.stderr
        made[(site, gw)] = load_config(out / "gateway.yaml").config.broker.username
    assert made == {("a.b", "c"): "c@a.b", ("a", "b.c"): "b.c@a"}

    out = tmp_path / "shared"
    refused = gateway(
        *base, "--site", "a", "--gateway", "g", "--username", "gateways", "--out", str(out)
    )
    assert refused.returncode == 2 and not out.exists()
    assert "--username: this gateway's broker identity is 'g@a'" in refused.stderr
    same = gateway(*base, "--site", "a", "--gateway", "g", "--username", "g@a", "--out", str(out))
    assert same.returncode == 0, same.stderr


@pytest.fixture
def mtls_broker(tmp_path: Path) -> Iterator[tuple[Mosquitto, Pki, int]]:
    pki = make_pki(Path(tempfile.mkdtemp(prefix="pki-provision-")))
    port = free_port()
    broker = Mosquitto(
        tmp_path / "broker",
        preamble="per_listener_settings true",
        extra="\n".join(
            [
                f"listener {port} 127.0.0.1",
                f"cafile {pki.ca}",
                f"certfile {pki.server_cert}",
                f"keyfile {pki.server_key}",
                "require_certificate true",
                "allow_anonymous true",
            ]
        ),
    )
    broker.start()
    yield broker, pki, port
    broker.remove()
    shutil.rmtree(pki.dir, ignore_errors=True)


@pytest.mark.broker
def test_csr_signed_by_the_ca_commissions_the_gateway_over_mutual_tls(
    tmp_path: Path, mtls_broker: tuple[Mosquitto, Pki, int]
) -> None:
    _broker, pki, port = mtls_broker
    out = tmp_path / "etc"
    result = gateway(
        "provision", "--site", "site-a", "--gateway", "gw-1",
        "--broker-url", f"mqtts://localhost:{port}", "--ca-file", str(pki.ca),
        "--username", "", "--password", "", "--csr", "--out", str(out),
        "--outbox-path", str(tmp_path / "outbox.db"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    key, csr = out / "secrets" / "client.key", out / "client.csr"
    assert mode(key) == 0o600 and mode(csr) == 0o644
    assert "CN=gw-1@site-a" in result.stdout

    parsed = subprocess.run(
        ["openssl", "req", "-in", str(csr), "-noout", "-verify", "-subject"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert parsed.returncode == 0, parsed.stderr
    assert "subject=CN = gw-1@site-a" in parsed.stdout
    assert "verify OK" in parsed.stdout + parsed.stderr

    # Until the CA has signed it, validation names exactly the missing certificate.
    missing = gateway("validate", "-c", str(out / "gateway.yaml"))
    assert missing.returncode == 2
    assert missing.stderr.count("not found") == 1 and "broker.tls.cert_file" in missing.stderr

    subprocess.run(
        ["openssl", "x509", "-req", "-in", str(csr), "-CA", str(pki.ca),
         "-CAkey", str(pki.dir / "ca.key"), "-CAcreateserial", "-days", "2",
         "-out", str(out / "secrets" / "client.crt")],
        check=True, capture_output=True,
    )  # fmt: skip
    checked = gateway("check", "-c", str(out / "gateway.yaml"))
    # A provisioned gateway trusts only an NTP-set clock; CI machines may have none.
    synced = Clock(ClockCheck.KERNEL).state() is ClockState.SYNCED
    assert checked.returncode == (0 if synced else 1), checked.stdout + checked.stderr
    failed = [line for line in checked.stdout.splitlines() if line.startswith("FAIL")]
    assert failed == ([] if synced else [failed[0]]) and "clock" in "".join(failed[:1])
    assert "with this gateway's client certificate" in checked.stdout
    assert "OK    publish and read back" in checked.stdout
