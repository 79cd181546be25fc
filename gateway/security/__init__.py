"""Trust boundaries at the broker: gateway identities, broker ACLs, signed commands.

See docs/security.md for the threat model these pieces answer.

May import: `gateway.sdk`, `gateway.config`, `gateway.storage`, `gateway.mqtt`,
`gateway.host` and the other feature packages; `settings` imports only `gateway.sdk`.
"""

from __future__ import annotations

from .identity import SERVICE_NAME, broker_identity, parse_identity

__all__ = ["SERVICE_NAME", "broker_identity", "parse_identity"]
