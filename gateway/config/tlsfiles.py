"""Cross-checks of TLS files at validate time, so a bad one never reaches a running uplink.

A key that does not match its certificate, a CA file that is not PEM, an expired client
certificate or a key the service cannot read all pass a "file exists" check and then
kill the uplink's handshake over and over.  `tls_problems` loads every file the way the
TLS library will and names the file and what to do; it never connects anywhere.

cryptography is imported when a file is checked, not with this module: it is about
8 MB of a gateway's memory, which a config without TLS files should not pay.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

__all__ = ["SERVICE_USER", "TlsFileProblem", "readable_by", "tls_problems"]

SERVICE_USER = "community-gateway"
# Certificates and keys are a few KiB; a bigger file is not one.
_MAX_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class TlsFileProblem:
    """A problem of one TLS setting (`key` is e.g. "cert_file")."""

    key: str
    message: str


class _Bad(Exception):
    """A file cannot be used; the message says why."""


def _service_account() -> tuple[int, set[int]] | None:
    """The service user's uid and groups, when validate runs as root on an installed box."""
    if os.geteuid() != 0:
        return None
    try:
        user = pwd.getpwnam(SERVICE_USER)
    except KeyError:
        return None
    gids = {user.pw_gid} | {g.gr_gid for g in grp.getgrall() if SERVICE_USER in g.gr_mem}
    return user.pw_uid, gids


def readable_by(path: Path, uid: int, gids: set[int]) -> bool:
    """Whether that user may read the file: read on it, search on every folder above."""
    if uid == 0:
        return True

    def allows(st: os.stat_result, bits: tuple[int, int, int]) -> bool:
        if st.st_uid == uid:
            return bool(st.st_mode & bits[0])
        if st.st_gid in gids:
            return bool(st.st_mode & bits[1])
        return bool(st.st_mode & bits[2])

    path = path.resolve()
    try:
        for folder in reversed(path.parents):
            if not allows(os.stat(folder), (stat.S_IXUSR, stat.S_IXGRP, stat.S_IXOTH)):
                return False
        return allows(os.stat(path), (stat.S_IRUSR, stat.S_IRGRP, stat.S_IROTH))
    except OSError:
        return False


def _read(path: Path, account: tuple[int, set[int]] | None) -> bytes:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise _Bad(f"file {path} not found") from None
    except PermissionError:
        raise _Bad(
            f"cannot reach {path} as this user; check it as the service's user: "
            f"sudo -u {SERVICE_USER} gateway validate -c FILE"
        ) from None
    except OSError as exc:
        raise _Bad(f"{path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        raise _Bad(f"{path} is not a regular file")
    if st.st_size > _MAX_BYTES:
        raise _Bad(f"{path} is larger than {_MAX_BYTES // 1024} KiB; not a certificate or key")
    if account is not None and not readable_by(path, *account):
        raise _Bad(
            f"{path} is not readable by the service user {SERVICE_USER}: "
            f"chown {SERVICE_USER} {path} && chmod 600 {path}"
        )
    try:
        return path.read_bytes()
    except PermissionError:
        raise _Bad(
            f"cannot read {path} as this user; check it as the service's user: "
            f"sudo -u {SERVICE_USER} gateway validate -c FILE"
        ) from None
    except OSError as exc:
        raise _Bad(f"cannot read {path}: {exc.strerror or exc}") from None


def _not_pem_hint(data: bytes, path: Path, what: str) -> str:
    if data[:1] == b"\x30":  # an ASN.1 SEQUENCE: the same thing in binary DER
        return (
            f"{path} is DER (binary), not PEM; convert it: "
            f"openssl x509 -inform der -in {path} -out {path}.pem"
        )
    return f"{path} is not a PEM {what} (no -----BEGIN ...----- block)"


def _certs(data: bytes, path: Path) -> list[x509.Certificate]:
    from cryptography import x509

    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        certs = []
    if not certs:
        raise _Bad(_not_pem_hint(data, path, "certificate"))
    return certs


def _key(data: bytes, path: Path) -> PrivateKeyTypes:
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    try:
        return serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise _Bad(
            f"{path} is protected by a passphrase, which the gateway cannot type; "
            f"store it without one: openssl pkey -in {path} -out {path.stem}-plain.key"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise _Bad(_not_pem_hint(data, path, "private key")) from None


def _name(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string() or "no subject"


def _dates(cert: x509.Certificate, whose: str, now: datetime) -> str | None:
    if now < cert.not_valid_before_utc:
        return (
            f"{whose} ({_name(cert)}) is not valid before "
            f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC; is this box's clock right?"
        )
    if now > cert.not_valid_after_utc:
        return (
            f"{whose} ({_name(cert)}) expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC; "
            "install a renewed one"
        )
    return None


def _public(obj: x509.Certificate | PrivateKeyTypes) -> bytes:
    from cryptography.hazmat.primitives import serialization

    key = obj.public_key()
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _signed_by(chain: Sequence[x509.Certificate], cas: Sequence[x509.Certificate]) -> str | None:
    """None if the CAs issued the chain's first certificate (through the chain's others)."""
    from cryptography.exceptions import InvalidSignature

    current = chain[0]
    pool = list(chain[1:])
    for _ in range(8):  # a chain is a handful of certificates; bound the walk anyway
        for ca in cas:
            if ca.subject == current.issuer:
                try:
                    current.verify_directly_issued_by(ca)
                    return None
                except (ValueError, TypeError, InvalidSignature):
                    continue
        step = next((c for c in pool if c.subject == current.issuer), None)
        if step is None:
            break
        try:
            current.verify_directly_issued_by(step)
        except (ValueError, TypeError, InvalidSignature):
            break
        pool.remove(step)
        current = step
    cas_named = "; ".join(_name(ca) for ca in cas)
    return (
        f"the client certificate ({_name(chain[0])}) was issued by "
        f"{chain[0].issuer.rfc4514_string()}, not by the CA in ca_file ({cas_named}); "
        "one of the two is from another platform or an old setup"
    )


def tls_problems(
    ca_file: Path | None,
    cert_file: Path | None,
    key_file: Path | None,
    *,
    whose: str = "client certificate",
    now: datetime | None = None,
) -> list[TlsFileProblem]:
    """Every problem of a CA file, a certificate and its key, loaded as the TLS library will.

    Checks: each file is a regular file the service user can read (when run as root
    on a box with that user; otherwise this process), PEM that parses, the key matches
    the certificate, the certificates are valid now, and the CA signed the certificate.
    """
    now = now or datetime.now(UTC)
    account = _service_account()
    problems: list[TlsFileProblem] = []
    cas: list[x509.Certificate] = []
    chain: list[x509.Certificate] = []
    key: PrivateKeyTypes | None = None
    if ca_file is not None:
        try:
            cas = _certs(_read(ca_file, account), ca_file)
            dated = [_dates(c, "CA certificate", now) for c in cas]
            if all(dated):  # one valid CA in the bundle is enough
                problems.append(TlsFileProblem("ca_file", str(dated[0])))
        except _Bad as exc:
            problems.append(TlsFileProblem("ca_file", str(exc)))
    if cert_file is not None:
        try:
            chain = _certs(_read(cert_file, account), cert_file)
            expired = _dates(chain[0], whose, now)
            if expired:
                problems.append(TlsFileProblem("cert_file", expired))
        except _Bad as exc:
            problems.append(TlsFileProblem("cert_file", str(exc)))
    if key_file is not None:
        try:
            key = _key(_read(key_file, account), key_file)
        except _Bad as exc:
            problems.append(TlsFileProblem("key_file", str(exc)))
    if chain and key is not None and _public(chain[0]) != _public(key):
        problems.append(
            TlsFileProblem(
                "key_file",
                f"{key_file} is not the key of {cert_file} ({_name(chain[0])}); "
                "give the key made with that certificate",
            )
        )
    if chain and cas:
        unsigned = _signed_by(chain, cas)
        if unsigned:
            problems.append(TlsFileProblem("cert_file", unsigned))
    return problems
