"""Trust boundaries at the broker: gateway identities, broker ACLs, signed commands.

See docs/security.md for the threat model these pieces answer.
"""

from __future__ import annotations

from .identity import SERVICE_NAME, broker_identity, parse_identity

__all__ = ["SERVICE_NAME", "broker_identity", "parse_identity"]
