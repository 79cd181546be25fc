"""Core commands: validate, devices, outbox, read (`run` is in `gateway.cli.run`)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from gateway.config.cli import config_option, load_or_exit
from gateway.sdk.capacity import rate_warnings
from gateway.sdk.driver import ReadResult
from gateway.sdk.registry import available_drivers

__all__ = ["config_option", "devices", "load_or_exit", "outbox", "read", "validate"]


@click.command()
@config_option
def validate(config_path: Path) -> None:
    """Check a config file completely, without connecting to anything."""
    loaded = load_or_exit(config_path, allow_conflicts=False)
    n = len(loaded.devices)
    click.echo(f"{config_path}: OK ({n} device{'s' if n != 1 else ''})")
    # Warnings, not problems: the gateway runs, but sheds (and counts) what it cannot store.
    for line in rate_warnings(loaded.devices, available_drivers()):
        click.echo(f"{config_path}: warning: {line}", err=True)


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
def outbox(config_path: Path) -> None:
    """Show the outbox: depth, oldest message, drops, bytes written."""
    from gateway.process.runtime import build_outbox

    loaded = load_or_exit(config_path)
    box = build_outbox(loaded, memory_tier=False)  # the gateway may be running
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


@click.command()
@click.argument("device_id")
@config_option
def read(device_id: str, config_path: Path) -> None:
    """Read one device once: every point with value, unit and raw data, or the exact fault."""
    import asyncio

    from gateway.sdk.registry import available_drivers

    loaded = load_or_exit(config_path)
    try:
        spec = loaded.device(device_id)
    except KeyError:
        known = ", ".join(d.id for d in loaded.devices)
        click.echo(f"no device {device_id!r} in {config_path} (devices: {known})", err=True)
        sys.exit(2)
    info = available_drivers()[spec.driver]
    if info.read_once is None:
        click.echo(f"driver {spec.driver} cannot read a device on demand", err=True)
        sys.exit(2)
    read_once = info.read_once

    async def once() -> ReadResult:
        return await read_once(spec)

    result = asyncio.run(once())
    if not result.ok:
        click.echo(f"{device_id}: FAULT {result.fault}", err=True)
        if result.hint:
            click.echo(f"  check: {result.hint}", err=True)
        sys.exit(1)
    rows = [("POINT", "VALUE", "UNIT", "RAW", "NOTE")]
    rows += [
        (p.name, "" if p.value is None else str(p.value), p.unit, p.raw, p.note)
        for p in result.points
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for row in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
