"""Signs the acknowledgements the service sends, so a broker account alone cannot
silence a gateway's alarms (docs/security.md, "Signed commands").

The bytes signed are the contract's (`community_protocol.signing`); the gateway
verifies them with the public half.  Keys (id, PEM files) from the protocol's
`ed25519` module, Ed25519 from `cryptography`.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from community_protocol.documents import format_ts
from community_protocol.ed25519 import key_id, load_private_key
from community_protocol.ids import Identity
from community_protocol.signing import signed_message, signed_target

__all__ = ["CommandSigner", "load_private_key"]


class CommandSigner:
    """Signs command payloads for gateways with one private key."""

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key
        self.key_id = key_id(key.public_key())  # as the gateway names its trusted keys

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
