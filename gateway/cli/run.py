"""`gateway run`: catches SIGTERM and SIGINT first, then imports and starts the gateway.

This module imports click and the standard library only: the stop handlers are in
before the config, the drivers and the runtime are imported (seconds on a busy Pi), so
a stop during the start is a clean stop (exit 0, logged), not a kill by the signal.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from gateway.process.stopsignal import catch
from gateway.sdk.options import config_option

__all__ = ["run"]


@click.command()
@config_option
@click.option("--broker-url", help="Use this broker instead of the config's (demo, tests).")
@click.pass_context
def run(ctx: click.Context, config_path: Path, broker_url: str | None) -> None:
    """Run the gateway until SIGTERM or Ctrl-C."""
    signals = catch()
    from gateway.config.cli import load_or_exit
    from gateway.fleet.restart import finish_trial, start_trial
    from gateway.process.logsetup import setup_logging

    opts = ctx.find_root().obj or {}
    # Before anything else: a remote configuration tried and not committed is rolled
    # back here, one that does not even load too (docs/fleet.md).
    trial = start_trial(config_path)
    # Conflicting devices stay unstarted (reported unavailable); the others run.
    loaded = load_or_exit(config_path)
    log_cfg = loaded.config.logging
    setup_logging(
        opts.get("log_level") or log_cfg.level, opts.get("log_format") or str(log_cfg.format)
    )
    from gateway.process.service import serve

    try:
        code = serve(loaded, broker_url=broker_url, signals=signals)
    except Exception:
        if trial is None:
            raise
        logging.getLogger("gateway.run").exception("the gateway crashed trying a configuration")
        code = 1
    sys.exit(finish_trial(config_path, trial, code))
