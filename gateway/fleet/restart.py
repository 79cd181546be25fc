"""`gateway run`'s part of remote configuration: the trial at start, the restart at the end.

`start_trial` runs before the config is read: it rolls back a trial that was already
started once without a commit, or whose candidate does not load, so a configuration
that crashes, hangs or breaks the process's start can never keep the gateway down.
`finish_trial` runs when the gateway stopped: a restart it asked for, or a trial that
ended in a crash, makes the process execute itself again, on the config file as it is
then (the same PID, so systemd sees one service; it is told RELOADING first).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from gateway.config import ConfigError, load_config

from .state import FleetFiles, Trial
from .trial import on_start, rollback

__all__ = ["finish_trial", "reexec", "start_trial"]

log = logging.getLogger(__name__)

# The exit status of `serve` when the gateway asked to be started afresh
# (gateway.process.service.RESTART; not imported: the runtime is heavy).
RESTART = 75


def start_trial(config_path: Path) -> Trial | None:
    """The trial this start runs, or None; rolls back first when one is due."""
    files = FleetFiles(config_path)
    trial = on_start(files)
    if trial is None:
        return None
    try:
        load_config(config_path, allow_conflicts=True)
    except ConfigError as exc:
        first = exc.problems[0] if exc.problems else "no detail"
        rollback(files, trial, f"the new configuration does not load here: {first}")
        return None
    except Exception as exc:  # a bug in a check: the previous config did not have it
        rollback(files, trial, f"the new configuration cannot be checked: {exc!r}")
        return None
    return trial


def finish_trial(config_path: Path, trial: Trial | None, code: int) -> int:
    """The exit status for `gateway run`; does not return when the process must restart."""
    files = FleetFiles(config_path)
    if trial is not None and code not in (0, RESTART) and files.read_trial() is not None:
        rollback(files, trial, f"the gateway stopped with exit status {code} while trying it")
        code = RESTART
    if code == RESTART:
        reexec()
    return code


def reexec() -> None:
    """Execute this same command again, in place (the same PID, arguments, environment)."""
    log.info("starting again: %s", " ".join(sys.orig_argv))
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])
