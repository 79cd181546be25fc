"""Throwaway certificates for TLS tests, made with the openssl command line."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

__all__ = ["Issued", "Pki", "ca_pem", "issue", "make_client_cert", "make_pki"]


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


# P-256 keys: openssl makes one in milliseconds where an RSA 2048 key takes a quarter of
# a second of CPU, and the suite makes about thirty (Mosquitto and paho take both).
_NEW_KEY = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1")


@dataclass(frozen=True)
class Pki:
    """A CA, a server certificate for 127.0.0.1/localhost, a client certificate, and strays."""

    dir: Path
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path  # a CA that signed nothing the broker uses


def _leaf(d: Path, name: str, ca: str, subject: str, san: str | None) -> None:
    _openssl(
        "req",
        *_NEW_KEY,
        "-nodes",
        "-keyout",
        f"{name}.key",
        "-subj",
        subject,
        "-out",
        f"{name}.csr",
        cwd=d,
    )
    ext = d / f"{name}.ext"
    ext.write_text(f"subjectAltName={san}\n" if san else "basicConstraints=CA:FALSE\n")
    _openssl(
        "x509",
        "-req",
        "-in",
        f"{name}.csr",
        "-CA",
        f"{ca}.pem",
        "-CAkey",
        f"{ca}.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-out",
        f"{name}.pem",
        "-extfile",
        ext.name,
        cwd=d,
    )


def make_pki(d: Path) -> Pki:
    """Create the files in `d` (world-readable: the broker reads them as its own user)."""
    d.mkdir(parents=True, exist_ok=True)
    for ca in ("ca", "other-ca"):
        _openssl(
            "req",
            "-x509",
            *_NEW_KEY,
            "-nodes",
            "-keyout",
            f"{ca}.key",
            "-out",
            f"{ca}.pem",
            "-days",
            "2",
            "-subj",
            f"/CN=test {ca}",
            cwd=d,
        )
    _leaf(d, "server", "ca", "/CN=localhost", "DNS:localhost,IP:127.0.0.1")
    _leaf(d, "client", "ca", "/CN=test-site.gw", None)
    d.chmod(0o755)
    for f in d.iterdir():
        f.chmod(0o644)
    return Pki(
        d,
        d / "ca.pem",
        d / "server.pem",
        d / "server.key",
        d / "client.pem",
        d / "client.key",
        d / "other-ca.pem",
    )


# ---- in-process certificates (fast: EC keys), for validate's TLS checks --------------


@dataclass(frozen=True)
class Issued:
    """A certificate and its key, as PEM bytes."""

    cert: bytes
    key: bytes


def issue(
    name: str,
    *,
    issuer: Issued | None = None,
    ca: bool = False,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
) -> Issued:
    """A certificate for CN=`name`, signed by `issuer` (self-signed without one).

    Made with the cryptography package in a few milliseconds; dates default to valid
    from an hour ago for a day, so a test can make expired and future ones.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    if issuer is None:
        issuer_name, signer = subject, key
    else:
        issuer_cert = x509.load_pem_x509_certificate(issuer.cert)
        issuer_name = issuer_cert.subject
        loaded = serialization.load_pem_private_key(issuer.key, password=None)
        assert isinstance(loaded, ec.EllipticCurvePrivateKey)
        signer = loaded
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - timedelta(hours=1))
        .not_valid_after(not_after or now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .sign(signer, hashes.SHA256())
    )
    return Issued(
        cert.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


def ca_pem() -> bytes:
    """A valid CA certificate in PEM, for a config that only needs `ca_file` to parse."""
    return issue("test ca", ca=True).cert


def make_client_cert(pki: Pki, name: str, common_name: str) -> tuple[Path, Path]:
    """Another client certificate from the test CA, with subject CN=common_name: (cert, key)."""
    _leaf(pki.dir, name, "ca", f"/CN={common_name}", None)
    cert, key = pki.dir / f"{name}.pem", pki.dir / f"{name}.key"
    for f in (cert, key):
        f.chmod(0o644)
    return cert, key
