"""The `security:` config section: which keys the gateway trusts for signed commands and configurations."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["SecurityConfig", "security_problems"]

_PATTERN = re.compile(r"^([A-Za-z0-9_.-]+|\*)(/([A-Za-z0-9_.-]+|\*))*(/#)?$")


class SecurityConfig(BaseModel):
    """Signed commands (docs/security.md): trusted public keys and what must be signed.

    Without `command_keys` nothing is verified (and the gateway logs that at start):
    any broker account that may publish to this gateway's `cmd/` can acknowledge its
    alarms.  With keys, the command families in `signed_commands` run only when signed
    by one of them.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Software updates (docs/fleet.md, "Software updates"): none trusted, none installed.
    update_keys: list[Path] = Field(
        default_factory=list,
        description="Ed25519 public keys (PEM) whose signed update manifests this gateway installs",
    )
    update_trial_s: float = Field(
        120.0,
        ge=10,
        le=3600,
        description="A new release must reach the broker with its devices up within this time,"
        " or the previous one runs again",
    )
    update_max_bytes: int = Field(
        256 * 1024 * 1024,
        ge=1024 * 1024,
        le=1 << 30,
        description="The largest bundle this gateway takes over MQTT; a bigger one is"
        " refused before anything is written",
    )
    update_transfer_idle_s: float = Field(
        600.0,
        ge=5,
        le=86_400,
        description="An update over MQTT that receives no chunk for this long is dropped"
        " and its file deleted",
    )
    update_max_starts: int = Field(
        2,
        ge=1,
        le=10,
        description="Starts of a new release without passing its health gate before the"
        " launcher switches back (a crash loop)",
    )

    command_keys: list[Path] = Field(
        default_factory=list,
        description="Ed25519 public keys (PEM) of the central services, e.g. secrets/tickets.pub",
    )
    signed_commands: list[str] = Field(
        default_factory=lambda: ["alarms/*/ack", "requests/*/status"],
        description="Command paths that must be signed; '*' is one level, a final '#' the rest",
    )
    command_max_age_s: float = Field(
        86_400.0,
        gt=0,
        le=30 * 86_400,
        description="A signed command older than this is refused (when the clock is synced)",
    )

    config_keys: list[Path] = Field(
        default_factory=list,
        description="Ed25519 public keys (PEM) whose signed desired configurations this gateway"
        " applies (docs/fleet.md); none: remote configuration is refused",
    )
    config_trial_s: float = Field(
        60.0,
        ge=5,
        le=3600,
        description="A new remote configuration must bring the gateway back to the broker"
        " within this time, or the previous one is restored",
    )

    @field_validator("signed_commands")
    @classmethod
    def _patterns(cls, value: list[str]) -> list[str]:
        for p in value:
            if not _PATTERN.match(p):
                raise ValueError(f"{p!r} is not a command path pattern like 'alarms/*/ack'")
        return value


def security_problems(cfg: SecurityConfig) -> list[tuple[tuple[str | int, ...], str]]:
    """(key path, message) for every trusted key file that is not an Ed25519 public key."""
    out: list[tuple[tuple[str | int, ...], str]] = []
    if not (cfg.command_keys or cfg.config_keys or cfg.update_keys):
        return out  # signing imports cryptography (about 8 MB): only for a key to check
    from .signing import load_public_key

    for field in ("command_keys", "config_keys", "update_keys"):
        for i, path in enumerate(getattr(cfg, field)):
            try:
                load_public_key(path)
            except ValueError as exc:
                out.append((("security", field, i), str(exc)))
    return out
