"""Signs the acknowledgements the service sends, so a broker account alone cannot
silence a gateway's alarms (docs/security.md, "Signed commands").

The bytes signed are the contract's (`community_protocol.signing`); the gateway
verifies them with the public half.  Ed25519 from `cryptography`, the central side's
own dependency.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from community_protocol.documents import format_ts
from community_protocol.ids import Identity
from community_protocol.signing import signed_message, signed_target

__all__ = ["CommandSigner", "load_private_key"]


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """An Ed25519 private key from an unencrypted PEM file; ValueError saying what is wrong."""
    try:
        pem = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path} is not an unencrypted PEM private key ({exc})") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(
            f"{path} is not an Ed25519 private key (gateway security keygen makes one)"
        )
    return key


class CommandSigner:
    """Signs command payloads for gateways with one private key."""

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key
        raw = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        # The gateway names trusted keys the same way: SHA-256 of the raw key, 16 hex.
        self.key_id = hashlib.sha256(raw).hexdigest()[:16]

    def sign(
        self,
        identity: Identity,
        path: str,
        fields: Mapping[str, Any],
        *,
        now: datetime | None = None,
    ) -> dict[str, Any]:
        """`fields` plus an `auth` object for the command `path` to that gateway."""
        issued_at = format_ts(now or datetime.now(UTC))
        nonce = secrets.token_urlsafe(18)
        message = signed_message(signed_target(identity, path), issued_at, nonce, fields)
        auth = {
            "key_id": self.key_id,
            "issued_at": issued_at,
            "nonce": nonce,
            "sig": base64.b64encode(self._key.sign(message)).decode(),
        }
        return {**fields, "auth": auth}
