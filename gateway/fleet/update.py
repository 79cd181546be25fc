"""Signed software updates, gateway side: the manifest, its checks, and the database guard.

An update is a bundle of `scripts/bundle` (the program and every wheel) plus a
manifest that says what it is, signed Ed25519 by an update key the gateway trusts
(`security.update_keys`; docs/fleet.md, "Software updates"):

    {"kind": "community-gateway-update", "version": "0.2.0",
     "archive": {"name": "community-gateway-0.2.0-py311-x86_64.tar.gz",
                 "size": 31457280, "sha256": "64 hex digits",
                 "blocks": {"size": 1048576, "sha256": ["64 hex digits", ...]}},
     "arch": "x86_64", "python": "3.11",
     "schemas": {"outbox": {"min": 0, "max": 2}, "alarm database": {"min": 0, "max": 1}, ...},
     "auth": {"key_id": "16 hex digits", "sig": "base64 of 64 bytes"}}

`schemas` gives, for each database, the oldest file version the new release migrates
from (`min`) and the version it writes (`max`).  Before anything changes the gateway
checks the signature, that the bundle is for this machine, and that every database it
has would still open in THIS release after a rollback: a release that would migrate
a file past the version this one reads is refused with that reason (migrations are
forward-only; such a release is installed on site, see docs/fleet.md).  The archive's
size and hash are checked while it is fetched (`gateway.fleet.update_install`).

`archive.blocks` (optional, written by this release's `make_manifest`) holds the hash
of each block of the archive: a bundle sent over MQTT in chunks is checked block by
block as it arrives, so a chunk damaged or forged on the way costs its block, asked
for again, not the whole transfer (`gateway.fleet.update_chunks`).
"""

from __future__ import annotations

import hashlib
import platform
import re
import sqlite3
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.config.model import GatewayConfig
from gateway.storage.sqlitestore import Schema

if TYPE_CHECKING:
    # The signature code loads cryptography (about 7 MB of a gateway's memory): only
    # when an update is checked or signed, not for every start (tests/test_cli_startup.py).
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

__all__ = [
    "KIND",
    "Blocks",
    "LocalDatabase",
    "Manifest",
    "UpdateRefused",
    "archive_blocks",
    "block_hashes",
    "check_manifest",
    "local_databases",
    "make_manifest",
    "release_schemas",
    "schema_problems",
]

KIND = "community-gateway-update"
_VERSION = re.compile(r"^[0-9A-Za-z][0-9A-Za-z.+_-]{0,63}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# A bundle is tens of MB; anything far larger is not one of ours.
MAX_ARCHIVE_BYTES = 1 << 30
# Blocks of at least 1 MiB, and at most 256 of them (the manifest rides in a command).
MIN_BLOCK_BYTES = 1 << 20
MAX_BLOCKS = 256


class UpdateRefused(Exception):
    """An update that must not be installed; the message says why, in one line."""


@dataclass(frozen=True)
class Blocks:
    """The archive's hash per block: block i is bytes [i * size, (i + 1) * size)."""

    size: int
    sha256: tuple[str, ...]

    def span(self, index: int, total: int) -> tuple[int, int]:
        """(offset, length) of block `index` in an archive of `total` bytes."""
        offset = index * self.size
        return offset, min(self.size, total - offset)


@dataclass(frozen=True)
class Manifest:
    """A verified update manifest."""

    version: str
    archive: str
    size: int
    sha256: str
    arch: str
    python: str
    schemas: Mapping[str, tuple[int, int]]  # database name -> (min, max) file version
    key_id: str
    blocks: Blocks | None = None  # absent in manifests of releases before it


@dataclass(frozen=True)
class LocalDatabase:
    """One of this gateway's databases: where it is and which version this release writes."""

    name: str
    path: Path
    version: int  # the schema version this running release reads and writes


def _field(doc: Mapping[str, Any], key: str, kind: type, where: str = "") -> Any:
    value = doc.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise UpdateRefused(f"manifest {where}{key} is missing or not a {kind.__name__}")
    return value


def _schemas(doc: Mapping[str, Any]) -> dict[str, tuple[int, int]]:
    raw = _field(doc, "schemas", dict)
    out: dict[str, tuple[int, int]] = {}
    for name, span in raw.items():
        if not isinstance(span, dict):
            raise UpdateRefused(f"manifest schemas.{name} must be {{'min': N, 'max': N}}")
        low = _field(span, "min", int, f"schemas.{name}.")
        high = _field(span, "max", int, f"schemas.{name}.")
        if not 0 <= low <= high:
            raise UpdateRefused(f"manifest schemas.{name}: min {low} > max {high}")
        out[str(name)] = (low, high)
    return out


def archive_blocks(doc: Mapping[str, Any]) -> Blocks | None:
    """The `archive.blocks` of a manifest (None without them); UpdateRefused when malformed."""
    archive = _field(doc, "archive", dict)
    raw = archive.get("blocks")
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise UpdateRefused("manifest archive.blocks must be {'size': N, 'sha256': [...]}")
    size = _field(raw, "size", int, "archive.blocks.")
    hashes = _field(raw, "sha256", list, "archive.blocks.")
    total = _field(archive, "size", int, "archive.")
    if size < MIN_BLOCK_BYTES or total < 1 or len(hashes) != -(-total // size):
        raise UpdateRefused(
            f"manifest archive.blocks: {len(hashes)} hashes of {size}-byte blocks do not"
            f" cover {total} bytes (blocks of at least {MIN_BLOCK_BYTES})"
        )
    if not all(isinstance(h, str) and _SHA256.match(h) for h in hashes):
        raise UpdateRefused("manifest archive.blocks.sha256 must be 64 lowercase hex digits each")
    return Blocks(size, tuple(hashes))


def block_hashes(archive: Path) -> dict[str, Any]:
    """`archive.blocks` of a manifest for `archive`: at least 1 MiB a block, at most 256."""
    total = archive.stat().st_size
    size = MIN_BLOCK_BYTES
    while -(-total // size) > MAX_BLOCKS:
        size *= 2
    hashes = []
    with open(archive, "rb") as f:
        while block := f.read(size):
            hashes.append(hashlib.sha256(block).hexdigest())
    return {"size": size, "sha256": hashes}


def check_manifest(
    doc: Any,
    keys: Iterable[Ed25519PublicKey],
    *,
    arch: str | None = None,
    python: str | None = None,
) -> Manifest:
    """The manifest, once signed by a trusted key and meant for this machine; UpdateRefused why not."""
    if not isinstance(doc, dict):
        raise UpdateRefused("the manifest is not a JSON object")
    keys = list(keys)
    if not keys:
        raise UpdateRefused("this gateway trusts no update key (security.update_keys is empty)")
    from community_protocol.ed25519 import SignatureError, verify_update

    try:
        kid = verify_update(keys, doc)
    except SignatureError as exc:
        raise UpdateRefused(f"manifest {exc}") from None
    if doc.get("kind") != KIND:
        raise UpdateRefused(f"manifest kind must be {KIND!r}")
    version = _field(doc, "version", str)
    if not _VERSION.match(version):
        raise UpdateRefused(f"manifest version {version!r} is not a version like 0.2.0")
    archive = _field(doc, "archive", dict)
    name = _field(archive, "name", str, "archive.")
    if "/" in name or name.startswith("."):
        raise UpdateRefused(f"manifest archive.name {name!r} must be a plain file name")
    size = _field(archive, "size", int, "archive.")
    if not 0 < size <= MAX_ARCHIVE_BYTES:
        raise UpdateRefused(
            f"manifest archive.size {size} is not between 1 and {MAX_ARCHIVE_BYTES}"
        )
    digest = _field(archive, "sha256", str, "archive.")
    if not _SHA256.match(digest):
        raise UpdateRefused("manifest archive.sha256 must be 64 lowercase hex digits")
    want_arch, want_py = _field(doc, "arch", str), _field(doc, "python", str)
    have_arch = arch or platform.machine()
    have_py = python or "{}.{}".format(*sys.version_info[:2])
    if (want_arch, want_py) != (have_arch, have_py):
        raise UpdateRefused(
            f"version {version} is built for {want_arch} with Python {want_py};"
            f" this gateway is {have_arch} with Python {have_py}"
        )
    blocks = archive_blocks(doc)
    return Manifest(version, name, size, digest, want_arch, want_py, _schemas(doc), kid, blocks)


def _file_version(path: Path) -> int | None:
    """PRAGMA user_version of an existing database, read-only; None when there is no file."""
    if not path.exists():
        return None
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    finally:
        conn.close()


def schema_problems(manifest: Manifest, databases: Iterable[LocalDatabase]) -> list[str]:
    """Why the databases would not survive this update and a rollback; empty when they would.

    For each database with a file: the new release must migrate from the file's
    version (`min` <= found), and must not write a version this release cannot read,
    else a rollback would find a file it refuses (Schema.apply: "newer than this
    gateway's").  A database the new release does not name is one it does not open.
    """
    out: list[str] = []
    for db in databases:
        span = manifest.schemas.get(db.name)
        try:
            found = _file_version(db.path)
        except sqlite3.Error as exc:
            out.append(f"the {db.name} ({db.path}) cannot be read to check its version: {exc}")
            continue
        if span is None or found is None:
            continue
        low, high = span
        if found < low:
            out.append(
                f"version {manifest.version} cannot migrate the {db.name} ({db.path}):"
                f" the file is at schema {found}, it migrates from schema {low} on"
            )
        elif found > high:
            out.append(
                f"version {manifest.version} cannot read the {db.name} ({db.path}):"
                f" the file is at schema {found}, newer than its schema {high}"
            )
        elif high > db.version:
            out.append(
                f"version {manifest.version} would migrate the {db.name} ({db.path}) to"
                f" schema {high}, which this version (schema {db.version}) cannot read"
                " after a rollback; install it on site (docs/fleet.md, Software updates)"
            )
    return out


def _store_schemas() -> dict[str, Schema]:
    """Each database's Schema in this release, by name (imported here: only when needed)."""
    from gateway.alarms.store import AlarmStore
    from gateway.notify.store import SmsStore
    from gateway.storage.outbox_sql import SCHEMA
    from gateway.web.requests import RequestStore

    found = (SCHEMA, AlarmStore.schema, RequestStore.schema, SmsStore.schema)
    return {s.name: s for s in found}


def release_schemas() -> dict[str, dict[str, int]]:
    """The manifest's `schemas` for this release: every file version from 0 migrates."""
    return {name: {"min": 0, "max": s.version} for name, s in _store_schemas().items()}


def local_databases(config: GatewayConfig) -> list[LocalDatabase]:
    """This gateway's databases at the paths its config gives, with this release's versions."""
    schemas = _store_schemas()
    state = config.gateway.state_dir
    paths = {
        "outbox": config.outbox.path,
        "alarm database": config.alarms.store_path(config.outbox.path),
        "request store": config.web.db_path or state / "web.db",
        "SMS record": (config.notify.sms.db_path if config.notify.sms else None)
        or state / "notify.db",
    }
    return [LocalDatabase(n, p, schemas[n].version) for n, p in paths.items() if n in schemas]


def make_manifest(
    key: Ed25519PrivateKey, archive: Path, *, version: str, arch: str, python: str, sha256: str
) -> dict[str, Any]:
    """A signed manifest for `archive` (a bundle of this release), for `scripts/update-manifest`."""
    from community_protocol.ed25519 import sign_update

    body = {
        "kind": KIND,
        "version": version,
        "archive": {
            "name": archive.name,
            "size": archive.stat().st_size,
            "sha256": sha256,
            "blocks": block_hashes(archive),
        },
        "arch": arch,
        "python": python,
        "schemas": release_schemas(),
    }
    return sign_update(key, body)
