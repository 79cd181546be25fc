"""What a command's signature covers (docs/security.md, "Signed commands"): both sides build it here.

The central side signs and the gateway verifies the same bytes: the UTF-8 lines
`community.cmd.v1`, `{site}/{gateway}/cmd/{path}`, `issued_at`, `nonce`, and the
canonical JSON of every other field of the payload (sorted keys, no spaces, not
ASCII-escaped).  The signature itself (Ed25519) needs a crypto library, which each
side brings; this module is the standard library only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from .ids import Identity
from .topics import Topics

__all__ = ["DOMAIN", "signed_message", "signed_target"]

DOMAIN = "community.cmd.v1"


def signed_target(identity: Identity, path: str) -> str:
    """The command's address as signed: its topic without the prefix, `{site}/{gateway}/cmd/{path}`."""
    return Topics("", identity).command(path).removeprefix("/")


def signed_message(target: str, issued_at: str, nonce: str, fields: Mapping[str, Any]) -> bytes:
    """The bytes a signature covers; `target` is `signed_target(identity, path)`."""
    body = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "\n".join((DOMAIN, target, issued_at, nonce, body)).encode()
