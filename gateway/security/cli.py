"""`gateway security`: broker ACLs for a fleet, and the command-signing keys."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .acl import ROLES, FleetError, load_fleet, render_emqx, render_mosquitto
from .identity import check_service_name

__all__ = ["security"]


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
    "--prefix", default=None, help="Topic prefix [default: the inventory's, or community/v1]."
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
