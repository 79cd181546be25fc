"""`gateway provision`: write a first config and its secret files, and optionally a CSR.

The config it writes is complete and valid (`load_config` accepts it) except, with a
CSR, for the client certificate that the platform's CA has yet to sign.  Secrets go to
files next to the config (`secrets/`), never into the YAML, with owner-only modes.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from gateway.config import CONFIG_VERSION, GatewayConfig
from gateway.sdk.files import write_private
from gateway.security.identity import broker_identity

__all__ = [
    "INSTALLED_OUTBOX",
    "Answers",
    "ProvisionError",
    "Written",
    "make_csr",
    "provision",
    "render_config",
    "service_owner",
]

INSTALLED_OUTBOX = Path("/var/lib/community-gateway/outbox.db")
SERVICE_USER = "community-gateway"
# P-256: small, fast on a Pi, and accepted by Mosquitto, EMQX and AWS IoT alike.
_OPENSSL_REQ: tuple[str, ...] = ("openssl", "req", "-new", "-newkey", "ec", "-nodes")
_OPENSSL_REQ += ("-pkeyopt", "ec_paramgen_curve:prime256v1")


class ProvisionError(Exception):
    """Refused before anything was written; the message says which answer to change."""


@dataclass(frozen=True, slots=True)
class Answers:
    """What the installer told `gateway provision`."""

    site: str
    gateway: str
    broker_url: str
    ca_file: Path | None = None
    username: str | None = None
    password: str | None = None
    csr: bool = False
    outbox_path: Path = INSTALLED_OUTBOX

    @property
    def common_name(self) -> str:
        """The broker identity `gateway@site` (docs/security.md): the CN and the user name."""
        return broker_identity(self.site, self.gateway)

    @property
    def broker_username(self) -> str | None:
        """The user name to write: the identity whenever there is a password to go with it."""
        return self.username or (self.common_name if self.password else None)


@dataclass(slots=True)
class Written:
    """Paths `provision` created."""

    config: Path
    secrets: list[Path] = field(default_factory=list)
    csr: Path | None = None


def _q(value: str) -> str:
    # A JSON string is a valid YAML scalar and needs no thought about quoting.
    return json.dumps(value)


def render_config(a: Answers) -> str:
    """The YAML text of the config, with comments an installer can follow."""
    lines = [
        "# Written by `gateway provision`. Check it with: gateway validate -c gateway.yaml",
        f"version: {CONFIG_VERSION}",
        "",
        "site:",
        f"  id: {_q(a.site)}",
        "",
        "gateway:",
        f"  id: {_q(a.gateway)}",
        "",
        "broker:",
        f"  url: {_q(a.broker_url)}",
    ]
    if a.broker_username:
        lines.append(f"  username: {_q(a.broker_username)}")
    if a.password:
        lines.append("  password: {file: secrets/broker-password}")
    tls: list[str] = []
    if a.ca_file is not None:
        tls.append("    ca_file: secrets/ca.crt")
    if a.csr:
        tls += [
            "    # client.crt is the certificate the platform's CA signs from client.csr",
            "    cert_file: secrets/client.crt",
            "    key_file: secrets/client.key",
        ]
    if tls:
        lines += ["  tls:", *tls]
    lines += [
        "",
        "outbox:",
        "  # The service may only write under /var/lib/community-gateway.",
        f"  path: {_q(str(a.outbox_path))}",
        "",
        "logging:",
        "  level: info",
        "  format: text     # json for a log shipper reading the journal",
        "",
        "# Add devices here; every driver's folder has a sample.yaml to copy from.",
        "devices: []",
        "",
    ]
    return "\n".join(lines)


def _check_answers(a: Answers) -> None:
    import yaml

    doc = yaml.safe_load(render_config(a))
    # Files are checked by load_config later; here only the shape and the values.
    doc["broker"].pop("password", None)
    doc["broker"].pop("tls", None)
    doc.pop("devices", None)  # validated one by one by load_config, not by the model
    try:
        GatewayConfig.model_validate(doc)
    except ValidationError as exc:
        names = {"site": "--site", "gateway": "--gateway", "broker": "--broker-url"}
        problems = []
        for err in exc.errors():
            flag = names.get(str(err["loc"][0]), ".".join(str(p) for p in err["loc"]))
            problems.append(f"{flag}: {err['msg'].removeprefix('Value error, ')}")
        raise ProvisionError("; ".join(problems)) from exc
    # One name per gateway, the one the generated ACL (`gateway security acl`) grants its
    # topics to: another name would either get nothing or be shared between gateways.
    if a.username and a.username != a.common_name:
        raise ProvisionError(
            f"--username: this gateway's broker identity is {a.common_name!r} "
            "(gateway@site, see docs/security.md); give that, or nothing"
        )
    if a.username and not a.password:
        raise ProvisionError("--username: a user name needs --password (mTLS needs neither)")
    if a.ca_file is not None and not a.ca_file.is_file():
        raise ProvisionError(f"--ca-file: {a.ca_file} not found")
    if a.csr and not a.broker_url.startswith("mqtts://"):
        raise ProvisionError("--csr: a client certificate needs an mqtts:// broker URL")


def service_owner() -> tuple[int, int] | None:
    """uid and gid of the service user, when it exists and we may give files to it."""
    import pwd

    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(SERVICE_USER)
    except KeyError:
        return None
    return entry.pw_uid, entry.pw_gid


def _chmod(path: Path, mode: int) -> None:
    # A boot partition (FAT, mounted by a laptop) has no modes and refuses chmod; first
    # boot applies the modes when it moves the files into /etc/community-gateway.
    with contextlib.suppress(PermissionError):
        os.chmod(path, mode)


def make_csr(key: Path, csr: Path, common_name: str) -> None:
    """A new P-256 key (mode 0600) and a certificate signing request with CN=common_name."""
    if shutil.which("openssl") is None:
        raise ProvisionError("--csr needs the openssl command: sudo apt-get install openssl")
    subprocess.run(
        [*_OPENSSL_REQ, "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={common_name}"],
        check=True,
        capture_output=True,
        umask=0o077,  # the key is never readable by others, not even for a moment
    )
    _chmod(key, 0o600)
    _chmod(csr, 0o644)  # public: it goes to the platform's CA


def provision(
    a: Answers, out: Path, *, force: bool = False, owner: tuple[int, int] | None = None
) -> Written:
    """Write out/gateway.yaml and out/secrets/*; with a.csr also out/client.csr."""
    _check_answers(a)
    config = out / "gateway.yaml"
    if config.exists() and not force:
        raise ProvisionError(f"{config} exists; give --force to replace it")
    secrets = out / "secrets"
    for d in (out, secrets):
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
        _chmod(d, 0o700)
        if owner is not None:
            os.chown(d, *owner)
    written = Written(config)
    if a.password:
        path = secrets / "broker-password"
        write_private(path, a.password.encode() + b"\n", owner=owner)
        written.secrets.append(path)
    if a.ca_file is not None:
        path = secrets / "ca.crt"
        if a.ca_file.resolve() != path.resolve():
            write_private(path, a.ca_file.read_bytes(), owner=owner)
        written.secrets.append(path)
    if a.csr:
        key, csr = secrets / "client.key", out / "client.csr"
        make_csr(key, csr, a.common_name)
        if owner is not None:
            os.chown(key, *owner)
        written.secrets.append(key)
        written.csr = csr
    write_private(config, render_config(a).encode(), owner=owner)
    return written
