"""Signed commands: the central side signs, the gateway verifies, so a broker account
alone cannot acknowledge (silence) a gateway's alarms or forge a request's status.

A signed command carries `auth` in its JSON payload:

    {"by": "staff-li", "request_id": "T-000042.ab12",
     "auth": {"key_id": "3f1c…", "issued_at": "2026-12-06T17:00:00.000Z",
              "nonce": "9c0e…", "sig": "base64 of 64 bytes"}}

`sig` is Ed25519 over the UTF-8 bytes of, one per line:
`community.cmd.v1`, `{site}/{gateway}/cmd/{path}`, `issued_at`, `nonce`, and the
canonical JSON of every other field of the payload (sorted keys, no spaces,
`ensure_ascii=False`).  So a signature is bound to one gateway, one command path (one
alarm), and its exact arguments, `request_id` and `expires` included.

The gateway trusts the public keys in its config (`key_id` is the first 16 hex digits
of the SHA-256 of the raw public key, so it needs no naming) and refuses, with a reply
that says why: a command of a family that needs a signature and has none, an unknown
key, a wrong signature, one issued more than `max_age_s` ago or more than 5 minutes in
the future (judged only when its clock is synced: an unsynced Pi boots in the past),
and a nonce it has seen (the replay cache: bounded in size and kept for max_age_s).

Keys (ids, PEM files) and the signed bytes are the contract's (`community_protocol`'s
`ed25519` and `signing`, shared with the central side); this module adds the
command-specific parts: signer, verifier, replay cache.
"""

from __future__ import annotations

import base64
import binascii
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from community_protocol.ed25519 import KEY_ID as _KEY_ID
from community_protocol.ed25519 import (
    CommandSigner,
    generate_key,
    key_id,
    load_private_key,
    load_public_key,
)
from community_protocol.signing import signed_message, signed_target
from gateway.mqtt.commands import Command, CommandFailed
from gateway.sdk.model import Identity

__all__ = [
    "ALWAYS_SIGNED",
    "DEFAULT_SIGNED",
    "CommandSigner",
    "CommandVerifier",
    "ReplayCache",
    "generate_key",
    "key_id",
    "load_private_key",
    "load_public_key",
    "signed_message",
]

# Families whose commands must be signed when the gateway trusts any key: the ones a
# stolen broker account could use to silence alarms or mislead residents.
DEFAULT_SIGNED: tuple[str, ...] = ("alarms/*/ack", "requests/*/status")
# Families signed whatever `security.signed_commands` says, and only by a fleet key
# (`security.config_keys`, the keys that may reconfigure the gateway): remote
# diagnostics read logs and restart drivers, so neither a config that forgets them nor
# the ticket service's key opens them.
ALWAYS_SIGNED: tuple[str, ...] = ("diag/#",)
FUTURE_SKEW_S = 300.0
_NONCE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")


class ReplayCache:
    """Nonces seen recently: at most `size`, each kept `keep_s` (monotonic) seconds."""

    def __init__(self, size: int = 10_000, keep_s: float = 86_400.0) -> None:
        self.size, self.keep_s = size, keep_s
        self._seen: OrderedDict[str, float] = OrderedDict()

    def add(self, nonce: str, now: float | None = None) -> bool:
        """Record `nonce`; False if it was seen already (a replay)."""
        now = time.monotonic() if now is None else now
        while self._seen:  # forget the expired, oldest first
            oldest, at = next(iter(self._seen.items()))
            if now - at < self.keep_s:
                break
            del self._seen[oldest]
        if nonce in self._seen:
            return False
        if len(self._seen) >= self.size:
            self._seen.popitem(last=False)
        self._seen[nonce] = now
        return True

    def __len__(self) -> int:
        return len(self._seen)


def _matches(pattern: str, path: str) -> bool:
    """'alarms/*/ack' matches 'alarms/a1/ack': '*' is exactly one level, '#' the rest."""
    want, have = pattern.split("/"), path.split("/")
    for i, level in enumerate(want):
        if level == "#":
            return True
        if i >= len(have) or (level != "*" and level != have[i]):
            return False
    return len(want) == len(have)


class CommandVerifier:
    """The gateway's check of `auth` on commands; a CommandRouter guard.

    `keys` sign the ordinary families; `fleet_keys` alone sign the ALWAYS_SIGNED ones.
    """

    def __init__(
        self,
        identity: Identity,
        keys: Sequence[Ed25519PublicKey],
        *,
        signed: Sequence[str] = DEFAULT_SIGNED,
        max_age_s: float = 86_400.0,
        now: Callable[[], datetime | None] = lambda: None,
        cache: ReplayCache | None = None,
        fleet_keys: Sequence[Ed25519PublicKey] = (),
    ) -> None:
        self.identity = identity
        self.keys = {key_id(k): k for k in keys}
        self.fleet_keys = {key_id(k): k for k in fleet_keys}
        self.signed = tuple(dict.fromkeys((*signed, *ALWAYS_SIGNED)))
        self.max_age_s = max_age_s
        self._now = now  # the time when the clock is synced, else None
        self.cache = cache or ReplayCache(keep_s=max_age_s)

    def needs_signature(self, path: str) -> bool:
        return any(_matches(p, path) for p in self.signed)

    def __call__(self, cmd: Command) -> None:
        """Return if `cmd` may run; CommandFailed (status unauthorized / replayed) if not."""
        if cmd.auth is None:
            if self.needs_signature(cmd.path):
                raise CommandFailed(
                    f"command {cmd.path!r} must be signed by a key this gateway trusts"
                    " (field 'auth'); not run",
                    status="unauthorized",
                )
            return
        fleet = any(_matches(p, cmd.path) for p in ALWAYS_SIGNED)
        if not fleet and not self.keys:
            return  # no command key configured: the ordinary families are not verified
        auth = cmd.auth
        if not isinstance(auth, Mapping) or set(auth) != {"key_id", "issued_at", "nonce", "sig"}:
            raise CommandFailed(
                "field 'auth' must be an object of key_id, issued_at, nonce and sig",
                status="unauthorized",
            )
        kid, issued, nonce, sig = (auth["key_id"], auth["issued_at"], auth["nonce"], auth["sig"])
        if not (isinstance(kid, str) and _KEY_ID.match(kid)):
            raise CommandFailed("auth.key_id must be 16 hex digits", status="unauthorized")
        key = (self.fleet_keys if fleet else self.keys).get(kid)
        if key is None:
            what = "a fleet key (security.config_keys)" if fleet else "a key"
            raise CommandFailed(
                f"auth.key_id {kid} is not {what} this gateway trusts; not run",
                status="unauthorized",
            )
        if not (isinstance(nonce, str) and _NONCE.match(nonce)):
            raise CommandFailed(
                "auth.nonce must be 16-64 URL-safe characters", status="unauthorized"
            )
        when = _parse_time(issued)
        try:
            raw_sig = base64.b64decode(sig, validate=True) if isinstance(sig, str) else b""
        except (binascii.Error, ValueError):
            raw_sig = b""
        target = signed_target(self.identity, cmd.path)
        try:
            key.verify(raw_sig, signed_message(target, str(issued), nonce, cmd.signed or {}))
        except InvalidSignature:
            raise CommandFailed(
                "auth.sig does not verify for this gateway, command and arguments; not run",
                status="unauthorized",
            ) from None
        now = self._now()
        if now is not None:
            if now - when > timedelta(seconds=self.max_age_s):
                raise CommandFailed(
                    f"signed at {issued}, more than {self.max_age_s:g} s ago; not run",
                    status="unauthorized",
                )
            if when - now > timedelta(seconds=FUTURE_SKEW_S):
                raise CommandFailed(
                    f"signed at {issued}, in the future; not run", status="unauthorized"
                )
        if not self.cache.add(f"{kid}:{nonce}"):
            raise CommandFailed(
                "this signed command was run already (same nonce); not run again", status="replayed"
            )


def _parse_time(value: Any) -> datetime:
    moment = None
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            moment = None
    if moment is None or moment.tzinfo is None:
        raise CommandFailed("auth.issued_at must be an RFC 3339 time in UTC", status="unauthorized")
    return moment
