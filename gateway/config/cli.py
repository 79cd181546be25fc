"""What every command that reads a config shares: the `-c FILE` option and loading it.

Kept outside the `gateway.cli` package on purpose: drivers' command modules import it,
and `gateway.cli` may import every package.  The option itself lives in
`gateway.sdk.options` (click only), for the commands that must not import the config.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from gateway.config import ConfigError, LoadedConfig, load_config
from gateway.sdk.options import config_option

__all__ = ["config_option", "load_or_exit"]


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
