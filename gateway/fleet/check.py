"""Checks a desired configuration before anything changes: signature, identity, version, config.

The config is checked as `gateway validate` checks a file (the candidate is written as
YAML beside the real config, so relative paths resolve the same), plus the offline
parts of `gateway check` (the outbox's folder, the serial ports the devices open) and
the rules of remote configuration: the same site and gateway ids, at least one
`security.config_keys` left (else the gateway could never be configured remotely
again), and secrets only as references to files already on the gateway.  Problems
come back at their paths in the document (`devices[3].driver.port`), not at lines.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from community_protocol.ed25519 import SignatureError, verify_config
from community_protocol.names import SCHEMA_VERSION, SchemaName
from gateway.config import ConfigError, LoadedConfig, load_config
from gateway.install.checks import Status, check_outbox_dir, check_serial_ports, serial_ports_of
from gateway.sdk.files import write_private
from gateway.sdk.model import Identity

from .state import FleetFiles, Running, sha256_of

__all__ = ["Candidate", "Refusal", "check_desired"]

MAX_PROBLEMS = 100
# `devices[3].driver.port` from a Problem's path, as load_config spells it.
_INDEX = re.compile(r"^devices\[(\d+)\]")


@dataclass(frozen=True, slots=True)
class Candidate:
    """A desired configuration that passed every check, ready to be tried."""

    version: int
    text: bytes  # the YAML written as the new config file
    sha256: str
    signed_by: str
    key_id: str


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a desired configuration is not applied; nothing changed."""

    version: int | None
    reason: str
    problems: tuple[dict[str, str], ...] = ()
    signed_by: str | None = None
    key_id: str | None = None
    # An old document (a version not above the running one) is not news: the retained
    # desired document of a version already applied comes back at every connection.
    quiet: bool = False


def _problem(path: str, message: str) -> dict[str, str]:
    return {"path": path, "message": message[:500]}


def check_desired(
    doc: Any,
    *,
    identity: Identity,
    keys: Sequence[Ed25519PublicKey],
    running: Running,
    files: FleetFiles,
    rolled_back: int | None = None,
) -> Candidate | Refusal:
    """A Candidate, or a Refusal saying why (with document paths).

    `rolled_back`: the version the last trial gave up; the same signed document comes
    back retained at every connection and is not tried again (a new version is).
    """
    if not isinstance(doc, Mapping):
        return Refusal(None, "the desired configuration is not a JSON object")
    version = doc.get("version")
    schema = doc.get("schema")
    if schema != {"name": str(SchemaName.CONFIG_DESIRED), "version": SCHEMA_VERSION}:
        return Refusal(None, f"schema must be {SchemaName.CONFIG_DESIRED} version {SCHEMA_VERSION}")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        return Refusal(None, "version must be an integer of at least 1")
    signed_by = doc.get("signed_by")
    who = signed_by if isinstance(signed_by, str) else None
    if not keys:
        return Refusal(
            version,
            "this gateway trusts no configuration key (security.config_keys); not applied",
            signed_by=who,
        )
    try:
        kid = verify_config(identity, keys, doc)
    except SignatureError as exc:
        return Refusal(version, f"{exc}; not applied", signed_by=who)
    if doc.get("site") != identity.site or doc.get("gateway") != identity.gateway:
        return Refusal(version, "the document names another gateway", signed_by=who, key_id=kid)
    if version <= running.version:
        return Refusal(
            version,
            f"version {version} is not above the running version {running.version}",
            signed_by=who,
            key_id=kid,
            quiet=True,
        )
    if version == rolled_back:
        return Refusal(
            version,
            f"version {version} was rolled back already; publish a new version to try again",
            signed_by=who,
            key_id=kid,
            quiet=True,
        )
    config = doc.get("config")
    if not isinstance(config, Mapping) or not isinstance(who, str) or not who:
        return Refusal(version, "config must be an object and signed_by a name", signed_by=who)
    text = yaml.safe_dump(dict(config), sort_keys=False, allow_unicode=True).encode()
    problems = _config_problems(text, identity, files)
    if problems:
        n = len(problems)
        return Refusal(
            version,
            f"{n} problem{'s' if n != 1 else ''} in the configuration; nothing changed",
            tuple(problems[:MAX_PROBLEMS]),
            signed_by=who,
            key_id=kid,
        )
    return Candidate(version, text, sha256_of(text), who, kid)


def _config_problems(text: bytes, identity: Identity, files: FleetFiles) -> list[dict[str, str]]:
    write_private(files.candidate_path, text)
    try:
        try:
            loaded = load_config(files.candidate_path)
        except ConfigError as exc:
            return [_problem(p.path, p.message) for p in exc.problems]
        return _rules(loaded, identity)
    finally:
        files.remove_candidate()


def _rules(loaded: LoadedConfig, identity: Identity) -> list[dict[str, str]]:
    cfg = loaded.config
    out: list[dict[str, str]] = []
    if cfg.identity != identity:
        out.append(
            _problem(
                "gateway.id",
                f"names {cfg.identity.site}/{cfg.identity.gateway}; this gateway is "
                f"{identity.site}/{identity.gateway} (an identity changes on site only)",
            )
        )
    if not cfg.security.config_keys:
        out.append(
            _problem(
                "security.config_keys",
                "must keep at least one key, or this gateway could never be configured remotely again",
            )
        )
    outbox = check_outbox_dir(loaded)
    if outbox.status is Status.FAIL:
        out.append(_problem("outbox.path", outbox.detail))
    users = serial_ports_of(loaded)
    positions = {spec.id: i for i, spec in enumerate(loaded.devices)}
    for result in check_serial_ports(loaded):
        if result.status is not Status.FAIL:
            continue
        port = result.name.removeprefix("serial ")
        for device in users.get(port, []):
            out.append(_problem(f"devices[{positions[device]}]", f"{port}: {result.detail}"))
    return out
