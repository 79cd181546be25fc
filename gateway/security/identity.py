"""A gateway's broker identity: `{gateway}@{site}`, one name for one gateway, both ways.

Site and gateway ids are `[A-Za-z0-9][A-Za-z0-9_.-]*`, so '@' never occurs in either:
the name splits at its only '@' into exactly one (site, gateway).  A dotted
`site.gateway` would not ('a.b' + 'c' and 'a' + 'b.c' give the same name).  The name
has no ':' (Mosquitto's password file is `user:hash`), no '/', '+' or '#', and is a
valid certificate CN, so the same name serves a password account and, with
`use_identity_as_username`, a client certificate.

Central services take names without '@' (`service.tickets`), so a service name can
never be mistaken for, or collide with, a gateway's.
"""

from __future__ import annotations

import re

from gateway.sdk.model import Identity

__all__ = ["SERVICE_NAME", "broker_identity", "check_service_name", "parse_identity"]

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# A central service's broker name: like an id, never an '@'.
SERVICE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def broker_identity(site: str, gateway: str) -> str:
    """The broker user name (or certificate CN) of one gateway: 'gw-1@site-a'."""
    Identity(site, gateway)  # refuses ids that could make the name ambiguous
    return f"{gateway}@{site}"


def parse_identity(name: str) -> Identity | None:
    """The (site, gateway) a broker name stands for; None for a service or anything else."""
    gateway, at, site = name.partition("@")
    if not at or not _ID.match(gateway) or not _ID.match(site):
        return None
    return Identity(site, gateway)


def check_service_name(name: str) -> str:
    """`name` if it can name a central service; ValueError saying why not."""
    if not SERVICE_NAME.match(name):
        raise ValueError(
            f"{name!r} cannot name a service: 1-128 letters, digits, '_', '.', '-' "
            "(no '@': that marks a gateway)"
        )
    return name
