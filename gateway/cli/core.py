"""Core commands: validate, devices, run, outbox."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from gateway.config import ConfigError, LoadedConfig, load_config

__all__ = ["COMMANDS", "config_option", "load_or_exit"]

config_option = click.option(
    "-c",
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    required=True,
    help="The gateway's YAML config file.",
)


def load_or_exit(path: Path) -> LoadedConfig:
    """Load the config or print every problem and exit 2."""
    try:
        return load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            click.echo(str(problem), err=True)
        n = len(exc.problems)
        click.echo(f"{path}: {n} problem{'s' if n != 1 else ''}, nothing was started", err=True)
        sys.exit(2)


@click.command()
@config_option
def validate(config_path: Path) -> None:
    """Check a config file completely, without connecting to anything."""
    loaded = load_or_exit(config_path)
    n = len(loaded.devices)
    click.echo(f"{config_path}: OK ({n} device{'s' if n != 1 else ''})")


@click.command()
@config_option
def devices(config_path: Path) -> None:
    """List the configured devices as a table."""
    loaded = load_or_exit(config_path)
    rows = [("ID", "KIND", "DRIVER", "BUILDING", "FLOOR", "UNIT", "NAME")]
    for d in loaded.devices:
        loc = d.ref.location
        rows.append((d.id, str(d.kind), d.driver, loc.building, loc.floor or "", loc.unit or "", d.name))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


COMMANDS: list[click.Command] = [validate, devices]
