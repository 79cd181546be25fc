"""The gateway's command guard from its `security:` config (docs/security.md)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from gateway.mqtt.commands import Guard
from gateway.sdk.model import Identity

from .settings import SecurityConfig

__all__ = ["command_guard"]

log = logging.getLogger(__name__)


def command_guard(
    cfg: SecurityConfig, identity: Identity, now: Callable[[], datetime | None]
) -> Guard | None:
    """A verifier of signed commands, or None (and a warning) when no key is trusted.

    The key files were checked by load_config; `now` gives the time only when the
    clock is synced, so the age of a command is judged only then.  The fleet keys
    (`config_keys`) sign remote diagnostics, and nothing else here.
    """
    if not cfg.command_keys:
        log.warning(
            "no security.command_keys: alarm acknowledgements and request statuses from the"
            " broker are not authenticated (docs/security.md, 'Signed commands')"
        )
        if not cfg.config_keys:
            return None
    # Only with keys: signing imports cryptography, about 8 MB of a gateway's memory.
    from .signing import CommandVerifier, ReplayCache, key_id, load_public_key

    keys = [load_public_key(p) for p in cfg.command_keys]
    fleet_keys = [load_public_key(p) for p in cfg.config_keys]
    if keys:
        log.info(
            "signed commands: %s need a signature by key %s",
            ", ".join(cfg.signed_commands) or "none",
            ", ".join(key_id(k) for k in keys),
        )
    return CommandVerifier(
        identity,
        keys,
        fleet_keys=fleet_keys,
        # Without command keys the ordinary families stay open, as they were.
        signed=cfg.signed_commands if keys else (),
        max_age_s=cfg.command_max_age_s,
        now=now,
        cache=ReplayCache(keep_s=cfg.command_max_age_s),
    )
