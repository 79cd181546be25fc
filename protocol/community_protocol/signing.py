"""What a signature covers: both sides build the signed bytes here.

A command (docs/security.md, "Signed commands"): the UTF-8 lines `community.cmd.v1`,
`{site}/{gateway}/cmd/{path}`, `issued_at`, `nonce`, and the canonical JSON of every
other field of the payload.  A desired configuration (config-desired.json,
docs/fleet.md): the lines `community.config.v1`, `{site}/{gateway}` and the canonical
JSON of the document without its `auth`.  The domain string in front keeps a
signature of one kind from ever passing as the other.  Canonical JSON: sorted keys, no
spaces, not ASCII-escaped.  An update manifest (docs/fleet.md, "Software updates"): the
lines `community.update.v1` and the canonical JSON of the manifest without its `auth`
(not bound to one gateway: one release serves the fleet).

The signature itself (Ed25519) needs a crypto library: `community_protocol.ed25519`
(the `signing` extra) has keys, signing and verifying; this module is the standard
library only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from .ids import Identity
from .topics import Topics

__all__ = [
    "CONFIG_DOMAIN",
    "DOMAIN",
    "UPDATE_DOMAIN",
    "canonical_json",
    "config_message",
    "signed_message",
    "signed_target",
    "update_message",
]

DOMAIN = "community.cmd.v1"
CONFIG_DOMAIN = "community.config.v1"
UPDATE_DOMAIN = "community.update.v1"


def canonical_json(value: Any) -> str:
    """The one JSON spelling a signature covers: sorted keys, no spaces, not ASCII-escaped."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def signed_target(identity: Identity, path: str) -> str:
    """The command's address as signed: its topic without the prefix, `{site}/{gateway}/cmd/{path}`."""
    return Topics("", identity).command(path).removeprefix("/")


def signed_message(target: str, issued_at: str, nonce: str, fields: Mapping[str, Any]) -> bytes:
    """The bytes a signature covers; `target` is `signed_target(identity, path)`."""
    body = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "\n".join((DOMAIN, target, issued_at, nonce, body)).encode()


def config_message(identity: Identity, document: Mapping[str, Any]) -> bytes:
    """The bytes a desired configuration's signature covers (its `auth` left out)."""
    body = {k: v for k, v in document.items() if k != "auth"}
    target = f"{identity.site}/{identity.gateway}"
    return "\n".join((CONFIG_DOMAIN, target, canonical_json(body))).encode()


def update_message(manifest: Mapping[str, Any]) -> bytes:
    """The bytes an update manifest's signature covers (its `auth` left out)."""
    body = {k: v for k, v in manifest.items() if k != "auth"}
    return "\n".join((UPDATE_DOMAIN, canonical_json(body))).encode()
