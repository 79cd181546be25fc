"""`gateway security`: broker ACLs for a fleet, and the command-signing keys."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import click

from community_protocol.topics import DEFAULT_PREFIX

from .acl import ROLES, FleetError, load_fleet, render_emqx, render_mosquitto
from .identity import check_service_name

__all__ = ["security"]

_STEM = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@click.group()
def security() -> None:
    """Trust boundaries at the broker (docs/security.md)."""


@security.command()
@click.option(
    "--inventory",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    required=True,
    help="YAML (prefix, services, gateways) or CSV of site,gateway lines.",
)
@click.option(
    "--tickets-user",
    multiple=True,
    help="Broker name of a ticket service instance (repeatable); adds to the inventory's.",
)
@click.option(
    "--requests-user",
    multiple=True,
    help="Broker name of the service answering kiosk requests (repeatable).",
)
@click.option(
    "--prefix", default=None, help=f"Topic prefix [default: the inventory's, or {DEFAULT_PREFIX}]."
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["mosquitto", "emqx"]),
    default="mosquitto",
    show_default=True,
)
@click.option(
    "-o",
    "--out",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="File to write (replaced atomically) [default: standard output].",
)
def acl(
    inventory: Path,
    tickets_user: tuple[str, ...],
    requests_user: tuple[str, ...],
    prefix: str | None,
    fmt: str,
    out: Path | None,
) -> None:
    """Write the broker ACL: each gateway confined to its own topics, services to their role."""
    try:
        fleet = load_fleet(inventory)
    except FleetError as exc:
        for line in exc.problems:
            click.echo(line, err=True)
        click.echo(f"{inventory}: no ACL written", err=True)
        sys.exit(2)
    for role, names in (("tickets", tickets_user), ("requests", requests_user)):
        for name in names:
            try:
                fleet.services.setdefault(role, []).append(check_service_name(name))
            except ValueError as exc:
                raise click.BadParameter(str(exc), param_hint=f"--{role}-user") from exc
    if prefix is not None:
        fleet.prefix = prefix.strip("/")
    assert set(fleet.services) <= set(ROLES)
    render = render_emqx if fmt == "emqx" else render_mosquitto
    text = render(fleet, inventory.name)
    if out is None:
        click.echo(text, nl=False)
        return
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.chmod(0o644)  # the broker reads it as its own user; it holds no secret
    tmp.replace(out)
    services = sum(len(v) for v in fleet.services.values())
    click.echo(f"wrote {out}: {len(fleet.gateways)} gateways, {services} services", err=True)


@security.command()
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    required=True,
    help="Folder for NAME.key (private, 0600) and NAME.pub (public).",
)
@click.option("--name", required=True, help="File name stem, e.g. tickets-2026.")
def keygen(out: Path, name: str) -> None:
    """Make an Ed25519 key pair for signing commands; gateways trust NAME.pub."""
    from .signing import generate_key

    if not _STEM.match(name):
        raise click.BadParameter("letters, digits, '_', '.', '-'", param_hint="--name")
    try:
        private, public, kid = generate_key(out, name)
    except (FileExistsError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"wrote {private} (mode 0600): the signing service's only, never to a gateway")
    click.echo(f"wrote {public}: key id {kid}; list it in the gateways' security.command_keys")


@security.command()
@click.option(
    "--key",
    "key_path",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    required=True,
    help="Private key from `gateway security keygen`.",
)
@click.option("--site", required=True)
@click.option("--gateway", "gateway_id", required=True)
@click.argument("path")
@click.argument("payload", default="{}")
def sign(key_path: Path, site: str, gateway_id: str, path: str, payload: str) -> None:
    """Print PAYLOAD (JSON) signed for the command PATH (e.g. alarms/a1/ack) of one gateway.

    For an operator's one-off command: pipe it to `mosquitto_pub -s -t
    PREFIX/SITE/GATEWAY/cmd/PATH`.
    """
    import json

    from gateway.sdk.model import Identity

    from .signing import CommandSigner, load_private_key

    try:
        signer = CommandSigner(load_private_key(key_path))
        identity = Identity(site, gateway_id)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        fields = json.loads(payload)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="PAYLOAD") from exc
    if not isinstance(fields, dict) or "auth" in fields:
        raise click.BadParameter("a JSON object without 'auth'", param_hint="PAYLOAD")
    click.echo(json.dumps(signer.sign(identity, path.strip("/"), fields), ensure_ascii=False))
