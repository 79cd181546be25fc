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


def load_or_exit(path: Path, *, allow_conflicts: bool = True) -> LoadedConfig:
    """Load the config or print every problem and exit 2.

    2 is the exit status systemd is told not to restart on (RestartPreventExitStatus):
    a config problem needs a person, and a restart loop only hides it.  Conflicts
    between devices are printed as warnings and the config is returned (`run` leaves
    those devices out; `ack`, `alarms`, `read` still work); `validate` passes
    `allow_conflicts=False` and refuses them like any other problem.
    """
    try:
        loaded = load_config(path, allow_conflicts=allow_conflicts)
    except ConfigError as exc:
        for problem in exc.problems:
            click.echo(str(problem), err=True)
        n = len(exc.problems)
        click.echo(f"{path}: {n} problem{'s' if n != 1 else ''}, nothing was started", err=True)
        sys.exit(2)
    except Exception as exc:  # a bug in a check must still not restart-loop the service
        click.echo(
            f"{path}: cannot be checked ({type(exc).__name__}: {exc}); please report", err=True
        )
        sys.exit(2)
    for problem in loaded.conflicts:
        click.echo(f"{problem} (gateway run leaves this device out)", err=True)
    return loaded
