"""What every command that reads a config shares: the `-c FILE` option and loading it.

Kept outside the `gateway.cli` package on purpose: importing that package registers
every driver's commands, so a driver's own CLI module importing it would be a cycle.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from gateway.config import ConfigError, LoadedConfig, load_config

__all__ = ["config_option", "load_or_exit"]

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
