"""Signs the acknowledgements the service sends, so a broker account alone cannot
silence a gateway's alarms (docs/security.md, "Signed commands").

The signer, the bytes it signs and the keys are the contract's
(`community_protocol.ed25519`); the gateway verifies with the public half.
"""

from __future__ import annotations

from community_protocol.ed25519 import CommandSigner, load_private_key

__all__ = ["CommandSigner", "load_private_key"]
