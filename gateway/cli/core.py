"""Core commands: validate, devices, run, outbox."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from gateway.config import ConfigError, LoadedConfig, load_config
from gateway.logsetup import setup_logging

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
        rows.append(
            (d.id, str(d.kind), d.driver, loc.building, loc.floor or "", loc.unit or "", d.name)
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


@click.command()
@config_option
@click.option("--broker-url", help="Use this broker instead of the config's (demo, tests).")
@click.pass_context
def run(ctx: click.Context, config_path: Path, broker_url: str | None) -> None:
    """Run the gateway until SIGTERM or Ctrl-C."""
    loaded = load_or_exit(config_path)
    opts = ctx.find_root().obj or {}
    log_cfg = loaded.config.logging
    setup_logging(
        opts.get("log_level") or log_cfg.level, opts.get("log_format") or str(log_cfg.format)
    )
    from gateway.service import serve

    sys.exit(serve(loaded, broker_url=broker_url))


@click.command()
@config_option
def outbox(config_path: Path) -> None:
    """Show the outbox: depth, oldest message, drops, bytes written."""
    from gateway.runtime import build_outbox

    loaded = load_or_exit(config_path)
    box = build_outbox(loaded)
    box.open()
    try:
        s = box.stats()
    finally:
        box.close()
    age = "-" if s.oldest_age_s is None else f"{s.oldest_age_s:.0f} s"
    click.echo(f"outbox      {loaded.config.outbox.path}")
    click.echo(f"depth       {s.depth} ({s.depth_events} events, {s.depth_telemetry} telemetry)")
    click.echo(f"oldest      {age}")
    click.echo(f"dropped     {s.dropped_telemetry} telemetry (events are never dropped)")


COMMANDS: list[click.Command] = [validate, devices, run, outbox]
