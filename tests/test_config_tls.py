"""TLS files are loaded and cross-checked at validate time, and `run` exits 2 on them.

Each case passed `validate` before (only "the file exists" was checked) and then killed
the uplink's handshake in a restart loop.  Certificates are made by the test.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.config import load_config, tlsfiles
from tests.certs import Issued, issue
from tests.harness import GATEWAY, config_problems, write_config

NOW = datetime.now(UTC)


def files(tmp_path: Path, **pems: bytes) -> dict[str, str]:
    out = {}
    for name, data in pems.items():
        path = tmp_path / f"{name}.pem"
        path.write_bytes(data)
        out[name] = str(path)
    return out


def config(
    tmp_path: Path, ca: bytes | None, cert: bytes | None, key: bytes | None, **broker: object
) -> Path:
    tls: dict[str, str] = {}
    pems = {
        k: v
        for k, v in {"ca_file": ca, "cert_file": cert, "key_file": key}.items()
        if v is not None
    }
    tls.update(files(tmp_path, **pems))
    return write_config(
        tmp_path / "gw.yaml",
        "mqtts://127.0.0.1:8883",
        [],
        broker={"tls": tls, **broker},
    )


@pytest.fixture(scope="module")
def ca() -> Issued:
    return issue("Platform CA", ca=True)


@pytest.fixture(scope="module")
def client(ca: Issued) -> Issued:
    return issue("sunrise.gw-1", issuer=ca)


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A folder every user may enter (pytest's tmp_path is under a root-only folder)."""
    path = Path(tempfile.mkdtemp(prefix="tls-perm-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def lines(path: Path) -> list[str]:
    return [p.split(" ", 1)[1] for p in config_problems(path)]


def test_good_files_validate(tmp_path: Path, ca: Issued, client: Issued) -> None:
    load_config(config(tmp_path, ca.cert, client.cert, client.key))


def test_a_key_of_another_certificate(tmp_path: Path, ca: Issued, client: Issued) -> None:
    other = issue("sunrise.gw-2", issuer=ca)
    path = config(tmp_path, ca.cert, client.cert, other.key)
    assert lines(path) == [
        f"broker.tls.key_file: {tmp_path}/key_file.pem is not the key of {tmp_path}/cert_file.pem "
        "(CN=sunrise.gw-1); give the key made with that certificate"
    ]


def test_an_expired_and_a_future_client_certificate_say_whose(tmp_path: Path, ca: Issued) -> None:
    old = issue(
        "sunrise.gw-1",
        issuer=ca,
        not_before=NOW - timedelta(days=400),
        not_after=NOW - timedelta(days=35),
    )
    (line,) = lines(config(tmp_path, ca.cert, old.cert, old.key))
    expiry = f"{NOW - timedelta(days=35):%Y-%m-%d}"
    assert line.startswith(
        f"broker.tls.cert_file: client certificate (CN=sunrise.gw-1) expired on {expiry}"
    )
    future = issue(
        "sunrise.gw-1",
        issuer=ca,
        not_before=NOW + timedelta(days=3),
        not_after=NOW + timedelta(days=400),
    )
    (line,) = lines(config(tmp_path, ca.cert, future.cert, future.key))
    assert "client certificate (CN=sunrise.gw-1) is not valid before" in line
    assert "is this box's clock right?" in line


def test_an_expired_ca(tmp_path: Path) -> None:
    old_ca = issue(
        "Old CA", ca=True, not_before=NOW - timedelta(days=800), not_after=NOW - timedelta(days=1)
    )
    (line,) = lines(config(tmp_path, old_ca.cert, None, None))
    assert line.startswith("broker.tls.ca_file: CA certificate (CN=Old CA) expired on ")


def test_a_client_certificate_the_ca_did_not_sign(tmp_path: Path, ca: Issued) -> None:
    stray_ca = issue("Old platform CA", ca=True)
    stray = issue("sunrise.gw-1", issuer=stray_ca)
    assert lines(config(tmp_path, ca.cert, stray.cert, stray.key)) == [
        "broker.tls.cert_file: the client certificate (CN=sunrise.gw-1) was issued by "
        "CN=Old platform CA, not by the CA in ca_file (CN=Platform CA); one of the two is "
        "from another platform or an old setup"
    ]


def test_an_intermediate_in_the_certificate_file_completes_the_chain(
    tmp_path: Path, ca: Issued
) -> None:
    middle = issue("Gateways CA", issuer=ca, ca=True)
    leaf = issue("sunrise.gw-1", issuer=middle)
    load_config(config(tmp_path, ca.cert, leaf.cert + middle.cert, leaf.key))


def test_files_that_are_not_pem(tmp_path: Path, ca: Issued, client: Issued) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    der = x509.load_pem_x509_certificate(ca.cert).public_bytes(serialization.Encoding.DER)
    found = lines(config(tmp_path, der, client.cert, b"not a key\n"))
    assert found == [
        f"broker.tls.ca_file: {tmp_path}/ca_file.pem is DER (binary), not PEM; convert it: "
        f"openssl x509 -inform der -in {tmp_path}/ca_file.pem -out {tmp_path}/ca_file.pem.pem",
        f"broker.tls.key_file: {tmp_path}/key_file.pem is not a PEM private key "
        "(no -----BEGIN ...----- block)",
    ]


def test_a_key_with_a_passphrase(tmp_path: Path, ca: Issued, client: Issued) -> None:
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(client.key, password=None)
    locked = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )
    (line,) = lines(config(tmp_path, ca.cert, client.cert, locked))
    assert "is protected by a passphrase, which the gateway cannot type" in line


def test_a_key_the_service_user_cannot_read(
    open_dir: Path, ca: Issued, client: Issued, monkeypatch: pytest.MonkeyPatch
) -> None:
    tmp_path = open_dir
    # As root on a box with the service user: check with that user's permissions.
    monkeypatch.setattr(tlsfiles, "_service_account", lambda: (65534, {65534}))
    path = config(tmp_path, ca.cert, client.cert, client.key)
    for name in ("ca_file", "cert_file"):
        (tmp_path / f"{name}.pem").chmod(0o644)
    (tmp_path / "key_file.pem").chmod(0o600)
    (line,) = lines(path)
    assert line == (
        f"broker.tls.key_file: {tmp_path}/key_file.pem is not readable by the service user "
        f"community-gateway: chown community-gateway {tmp_path}/key_file.pem && "
        f"chmod 600 {tmp_path}/key_file.pem"
    )


def test_readable_by_follows_the_folders(open_dir: Path) -> None:
    secret = open_dir / "locked" / "key.pem"
    secret.parent.mkdir()
    secret.write_text("k")
    secret.chmod(0o644)
    secret.parent.chmod(0o700)
    assert not tlsfiles.readable_by(secret, 65534, {65534})
    secret.parent.chmod(0o755)
    assert tlsfiles.readable_by(secret, 65534, {65534})


def test_an_unknown_key_hides_no_tls_problem(tmp_path: Path, ca: Issued, client: Issued) -> None:
    """The installer sees every problem of the file in one run."""
    other = issue("sunrise.gw-2", issuer=ca)
    path = config(tmp_path, ca.cert, client.cert, other.key, usrname="gw-1")
    text = path.read_text().replace(f"{tmp_path}/ca_file.pem", f"{tmp_path}/missing-ca.pem")
    path.write_text(text)
    found = lines(path)
    assert "broker.usrname: unknown key (check the spelling; see the sample config)" in found
    assert f"broker.tls.ca_file: file {tmp_path}/missing-ca.pem not found" in found
    assert any(p.startswith("broker.tls.key_file: ") and "is not the key of" in p for p in found)
    assert len(found) == 3, found


def test_run_exits_2_on_a_tls_problem(tmp_path: Path, ca: Issued, client: Issued) -> None:
    other = issue("sunrise.gw-2", issuer=ca)
    path = config(tmp_path, ca.cert, client.cert, other.key)
    result = subprocess.run(
        [GATEWAY, "run", "-c", str(path)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2, result.stderr
    assert "is not the key of" in result.stderr and "nothing was started" in result.stderr


def test_a_wrong_broker_url_hides_no_tls_problem(
    tmp_path: Path, ca: Issued, client: Issued
) -> None:
    """A required key in error (the URL) still lets the rest of the file be checked."""
    other = issue("sunrise.gw-2", issuer=ca)
    path = config(tmp_path, ca.cert, client.cert, other.key)
    path.write_text(path.read_text().replace("mqtts://127.0.0.1:8883", "https://broker"))
    found = lines(path)
    assert found[0] == "broker.url: must look like mqtt://host:1883 or mqtts://host:8883"
    assert found[1].startswith("broker.tls.key_file: ") and "is not the key of" in found[1]
    assert len(found) == 2, found
