"""Command-line options shared by the gateway's commands and the drivers' commands.

Imports click only: `gateway run` declares its options before it imports anything
heavy, and a driver's command module declares them without importing the config.
"""

from __future__ import annotations

from pathlib import Path

import click

__all__ = ["config_option"]

config_option = click.option(
    "-c",
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    required=True,
    help="The gateway's YAML config file.",
)
