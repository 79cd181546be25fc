"""A configuration file made into signed desired documents, one per gateway.

The file is a gateway config (docs/config.md) in YAML.  The fleet checks what it can
without the gateway's code (the gateway checks the rest, as `gateway validate` does,
before anything changes): a mapping with a `version`, `site`, `gateway` and `broker`
section, devices as a list, and no secret written inline (a password or token must
be a `{file: ...}` or `{env: ...}` reference to something already on the gateway: the
document travels through the broker and stays there retained).  Problems come back as
`file:line key.path: message`.

Each target gets its own copy with `site.id` and `gateway.id` set to it, so one file
serves a set of gateways; the document is signed for that gateway only
(config-desired.json, `community_protocol.signing`).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from community_protocol.documents import config_desired_document, dumps
from community_protocol.ed25519 import sign_config
from community_protocol.ids import Identity
from community_protocol.problems import Located, Problem

from ..yamlfile import ConfigError, KeyPath, load_located

__all__ = ["MAX_CONFIG_BYTES", "MAX_DOCUMENT_BYTES", "desired_for", "load_config_file"]

MAX_CONFIG_BYTES = 256 * 1024
MAX_DOCUMENT_BYTES = 1024 * 1024  # what a gateway reads of a desired document
# Keys whose value is a secret in the gateway's config models (broker.password, sinks'
# token, OSDP keys): inline, the secret would sit retained on the broker.
SECRET_KEYS = frozenset({"password", "token", "secret", "scbk", "master_key", "api_key", "psk"})
REQUIRED_SECTIONS = ("site", "gateway", "broker")


def load_config_file(path: Path) -> dict[str, Any]:
    """The config file as a dict; ConfigError listing every problem found, with lines."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ConfigError(
            [Problem(str(path), None, "", f"cannot read it: {exc.strerror}")]
        ) from exc
    if size > MAX_CONFIG_BYTES:
        raise ConfigError(
            [
                Problem(
                    str(path),
                    None,
                    "",
                    f"over {MAX_CONFIG_BYTES // 1024} KiB: not a gateway config",
                )
            ]
        )
    try:
        src = load_located(path)
    except OSError as exc:
        raise ConfigError(
            [Problem(str(path), None, "", f"cannot read it: {exc.strerror}")]
        ) from exc
    problems = shape_problems(src)
    if problems:
        raise ConfigError(problems)
    data: dict[str, Any] = src.data
    return data


def shape_problems(src: Located) -> list[Problem]:
    """What the fleet can tell is wrong without the gateway's config model."""
    doc = src.data
    if not isinstance(doc, Mapping):
        return [src.problem((), "a gateway config is a mapping (site:, gateway:, broker: ...)")]
    out: list[Problem] = []
    version = doc.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        out.append(
            src.problem(("version",), "the config file format version (an integer) is required")
        )
    for section in REQUIRED_SECTIONS:
        if not isinstance(doc.get(section), Mapping):
            out.append(src.problem((section,), "a mapping is required"))
    devices = doc.get("devices", [])
    if not isinstance(devices, list):
        out.append(src.problem(("devices",), "must be a list"))
    out.extend(src.problem(p, m) for p, m in _inline_secrets(doc, ()))
    return out


def _inline_secrets(value: Any, path: KeyPath) -> list[tuple[KeyPath, str]]:
    found: list[tuple[KeyPath, str]] = []
    if isinstance(value, Mapping):
        for key, sub in value.items():
            here = (*path, str(key))
            if str(key) in SECRET_KEYS and not (sub is None or isinstance(sub, Mapping)):
                found.append(
                    (
                        here,
                        "a secret is never sent inline: use {file: /path/on/the/gateway} or {env: NAME}",
                    )
                )
            else:
                found.extend(_inline_secrets(sub, here))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found.extend(_inline_secrets(item, (*path, i)))
    return found


def desired_for(
    identity: Identity,
    config: Mapping[str, Any],
    *,
    version: int,
    key: Ed25519PrivateKey,
    signed_by: str,
    issued_at: datetime | None = None,
) -> dict[str, Any]:
    """The signed desired document of `config` for one gateway; ValueError if too big."""
    mine = copy.deepcopy(dict(config))
    mine["site"] = {**mine.get("site", {}), "id": identity.site}
    mine["gateway"] = {**mine.get("gateway", {}), "id": identity.gateway}
    doc = config_desired_document(
        identity,
        version=version,
        config=mine,
        signed_by=signed_by,
        issued_at=issued_at or datetime.now(UTC),
    )
    signed = sign_config(key, doc)
    if len(dumps(signed)) > MAX_DOCUMENT_BYTES:
        raise ValueError(f"the desired document is over {MAX_DOCUMENT_BYTES // 1024} KiB")
    return signed
