"""Ed25519 keys of the contract: key ids, PEM files, signing and verifying desired configurations and update manifests.

A key's id is the first 16 hex digits of the SHA-256 of its 32 raw public bytes, so
keys need no naming.  The bytes each signature covers are spelled in `signing`; this
module adds the cryptography, which needs `cryptography`
(`pip install community-protocol[signing]`).  Nothing else in the package imports it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import secrets
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .documents import format_ts
from .ids import Identity
from .signing import config_message, signed_message, signed_target, update_message

__all__ = [
    "KEY_ID",
    "CommandSigner",
    "SignatureError",
    "generate_key",
    "key_id",
    "load_private_key",
    "load_public_key",
    "sign_config",
    "sign_update",
    "verify_config",
    "verify_update",
]

KEY_ID = re.compile(r"^[0-9a-f]{16}$")


class SignatureError(ValueError):
    """A signed document that must not be trusted; the message says why, in one line."""


def key_id(public: Ed25519PublicKey) -> str:
    """The id of a public key: first 16 hex digits of SHA-256 of its 32 raw bytes."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


class CommandSigner:
    """Signs command payloads for gateways (the central side: acknowledgements)."""

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key
        self.public_key = key.public_key()
        self.key_id = key_id(self.public_key)

    def sign(
        self,
        identity: Identity,
        path: str,
        fields: Mapping[str, Any],
        *,
        now: datetime | None = None,
    ) -> dict[str, Any]:
        """`fields` plus an `auth` object for the command `path` to that gateway.

        Signed afresh on every call: a new nonce, so a retry is not a replay.
        """
        issued_at = format_ts(now or datetime.now(UTC))
        nonce = secrets.token_urlsafe(18)
        sig = self._key.sign(
            signed_message(signed_target(identity, path), issued_at, nonce, fields)
        )
        auth = {
            "key_id": self.key_id,
            "issued_at": issued_at,
            "nonce": nonce,
            "sig": base64.b64encode(sig).decode(),
        }
        return {**fields, "auth": auth}


def sign_config(key: Ed25519PrivateKey, document: Mapping[str, Any]) -> dict[str, Any]:
    """`document` (a config-desired.json without `auth`) with its `auth` added."""
    body = {k: v for k, v in document.items() if k != "auth"}
    identity = Identity(str(body["site"]), str(body["gateway"]))
    sig = key.sign(config_message(identity, body))
    auth = {"key_id": key_id(key.public_key()), "sig": base64.b64encode(sig).decode()}
    return {**body, "auth": auth}


def verify_config(
    identity: Identity, keys: Iterable[Ed25519PublicKey], document: Mapping[str, Any]
) -> str:
    """The key id that signed `document` for `identity`; SignatureError saying why not.

    The signature covers the site and gateway the verifier is (not the ones the
    document claims), so a document signed for another gateway never verifies here.
    """
    return _verify(
        keys,
        document,
        config_message(identity, document),
        what="a desired configuration",
        key_kind="a key",
        target=f" for {identity.site}/{identity.gateway}",
    )


def sign_update(key: Ed25519PrivateKey, manifest: Mapping[str, Any]) -> dict[str, Any]:
    """`manifest` (an update manifest without `auth`) with its `auth` added."""
    body = {k: v for k, v in manifest.items() if k != "auth"}
    sig = key.sign(update_message(body))
    auth = {"key_id": key_id(key.public_key()), "sig": base64.b64encode(sig).decode()}
    return {**body, "auth": auth}


def verify_update(keys: Iterable[Ed25519PublicKey], manifest: Mapping[str, Any]) -> str:
    """The key id that signed the update `manifest`; SignatureError saying why not."""
    return _verify(
        keys,
        manifest,
        update_message(manifest),
        what="an update manifest",
        key_kind="an update key",
    )


def _verify(
    keys: Iterable[Ed25519PublicKey],
    document: Mapping[str, Any],
    message: bytes,
    *,
    what: str,
    key_kind: str,
    target: str = "",
) -> str:
    """The key id whose signature in `document`'s `auth` covers `message`; SignatureError."""
    trusted = {key_id(k): k for k in keys}
    auth = document.get("auth")
    if not isinstance(auth, Mapping):
        raise SignatureError(f"not signed (no 'auth' object); {what} must be")
    kid, sig = auth.get("key_id"), auth.get("sig")
    if not (isinstance(kid, str) and KEY_ID.match(kid)):
        raise SignatureError("auth.key_id must be 16 hex digits")
    key = trusted.get(kid)
    if key is None:
        raise SignatureError(f"auth.key_id {kid} is not {key_kind} this gateway trusts")
    try:
        raw = base64.b64decode(sig, validate=True) if isinstance(sig, str) else b""
    except (binascii.Error, ValueError):
        raw = b""
    try:
        key.verify(raw, message)
    except (InvalidSignature, ValueError):
        kind = key_kind.split(" ", 1)[1]  # "an update key" -> "update key"
        raise SignatureError(f"auth.sig does not verify with {kind} {kid}{target}") from None
    return kid


def _read_pem(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from exc


def load_public_key(path: Path) -> Ed25519PublicKey:
    """An Ed25519 public key from a PEM file; ValueError saying what is wrong."""
    try:
        key = serialization.load_pem_public_key(_read_pem(path))
    except ValueError as exc:
        raise ValueError(f"{path} is not a PEM public key ({exc})") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"{path} is not an Ed25519 public key (gateway security keygen makes one)")
    return key


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """An Ed25519 private key from an unencrypted PEM file; ValueError saying what is wrong."""
    try:
        key = serialization.load_pem_private_key(_read_pem(path), password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path} is not an unencrypted PEM private key ({exc})") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(
            f"{path} is not an Ed25519 private key (gateway security keygen makes one)"
        )
    return key


def generate_key(folder: Path, name: str) -> tuple[Path, Path, str]:
    """Write folder/name.key (0600) and folder/name.pub; (private, public, key id)."""
    key = Ed25519PrivateKey.generate()
    private, public = folder / f"{name}.key", folder / f"{name}.pub"
    for p in (private, public):
        if p.exists():
            raise FileExistsError(f"{p} exists; keys are never overwritten")
    folder.mkdir(parents=True, exist_ok=True)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    public.chmod(0o644)
    return private, public, key_id(key.public_key())
