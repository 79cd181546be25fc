"""Installer commands: `gateway plan DEVICE` and `gateway scan modbus`."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from pathlib import Path

import click
from pydantic import ValidationError

from gateway.config.cli import config_option, load_or_exit

from .faults import FaultKind, LinkFault
from .link import Link, quiet_pymodbus
from .plan import plan_device, rtu_wire_chars
from .profile import Table
from .settings import ModbusSettings, SerialBus, TcpBus, bits_per_char

__all__ = ["parse_ids", "plan_command", "scan_command"]


def parse_ids(text: str, *, lowest: int = 1, highest: int = 247) -> list[int]:
    """'1-5,12' -> [1, 2, 3, 4, 5, 12]; raises ValueError outside lowest..highest."""
    ids: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        lo_text, _, hi_text = part.partition("-")
        try:
            lo = int(lo_text)
            hi = int(hi_text) if hi_text else lo
        except ValueError:
            raise ValueError(f"{part!r} is not a unit id or a range like 1-247") from None
        if lo > hi or lo < lowest or hi > highest:
            raise ValueError(f"{part!r}: unit ids go from {lowest} to {highest}")
        ids.update(range(lo, hi + 1))
    if not ids:
        raise ValueError("no unit ids given")
    return sorted(ids)


@click.command("plan")
@click.argument("device")
@config_option
def plan_command(device: str, config_path: Path) -> None:
    """Show the reads a Modbus device is polled with, and what they cost on the wire."""
    loaded = load_or_exit(config_path)
    try:
        spec = loaded.device(device)
    except KeyError:
        raise click.ClickException(f"no device {device!r} in {config_path}") from None
    s = spec.settings
    if not isinstance(s, ModbusSettings):
        raise click.ClickException(f"device {device} uses the {spec.driver} driver, not modbus")
    prof = s.profile_model
    plan = plan_device(prof.points, max_gap=s.gap, profile=prof)
    click.echo(
        f"{spec.id}: profile {s.profile} ({prof.model}), unit {s.unit_id} on "
        f"{s.bus.describe()}, max_gap {s.gap}"
    )
    rows = [("#", "FC", "TABLE", "START", "COUNT", "POINTS")]
    for i, read in enumerate(plan.reads):
        names = []
        for p, span_ids in zip(prof.points, plan.point_spans, strict=True):
            if any(sid in read.spans for sid in span_ids) and p.name not in names:
                names.append(p.name)
        rows.append(
            (
                str(i + 1),
                f"{read.table.function_code:02d}",
                str(read.table),
                f"{read.start} (0x{read.start:04X})",
                str(read.count),
                ", ".join(names),
            )
        )
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [cell.ljust(w) for cell, w in zip(row, widths, strict=False)]
        click.echo("  ".join([*cells, row[-1]]).rstrip())
    n_points = len(prof.points)
    click.echo(
        f"{len(plan.reads)} read{'s' if len(plan.reads) != 1 else ''} instead of {n_points} "
        f"(one per point); {plan.registers_requested()} registers"
    )
    if isinstance(s.bus, SerialBus):
        char_s = bits_per_char(s.bus.parity, s.bus.stopbits, s.bus.bytesize) / s.bus.baud
        ms = rtu_wire_chars(plan.reads) * char_s * 1000
        click.echo(f"line time per poll at {s.bus.baud} baud: at least {ms:.0f} ms")


def _bus_from_options(
    port: str | None,
    baud: int,
    parity: str,
    stopbits: int,
    host: str | None,
    tcp_port: int,
    framer: str,
    timeout: float,
) -> SerialBus | TcpBus:
    if (port is None) == (host is None):
        raise click.UsageError("give --port for a serial bus or --host for Modbus TCP, not both")
    try:
        if port is not None:
            return SerialBus.model_validate(
                {
                    "port": port,
                    "baud": baud,
                    "parity": parity,
                    "stopbits": stopbits,
                    "timeout_s": timeout,
                }
            )
        return TcpBus.model_validate(
            {"host": host, "port": tcp_port, "framer": framer, "timeout_s": timeout}
        )
    except ValidationError as exc:
        msgs = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise click.UsageError(msgs) from None


async def _probe(link: Link, unit: int, table: Table, register: int) -> str | None:
    """What unit `unit` answered to a one-register read, or None if it stayed silent."""
    try:
        values = await link.read(table, unit, register, 1, link.bus.timeout_s)
    except LinkFault as exc:
        if exc.fault.kind is FaultKind.EXCEPTION:
            return f"answered exception {exc.fault.code} (a device is there)"
        if exc.fault.kind is FaultKind.PORT:
            raise
        return None
    return f"answered {table} {register} = 0x{values[0]:04X}"


@click.command("scan")
@click.option("--port", help="Serial port of the RS-485 adapter, e.g. /dev/ttyUSB0.")
@click.option("--baud", type=int, default=9600, show_default=True)
@click.option("--parity", type=click.Choice(["N", "E", "O"]), default="N", show_default=True)
@click.option("--stopbits", type=click.Choice(["1", "2"]), default="1", show_default=True)
@click.option("--host", help="Modbus TCP device or TCP-to-RS485 gateway.")
@click.option("--tcp-port", type=int, default=502, show_default=True)
@click.option("--framer", type=click.Choice(["socket", "rtu"]), default="socket", show_default=True)
@click.option("--ids", default="1-247", show_default=True, help="Unit ids: 1-247, or 1-10,12.")
@click.option("--timeout", type=float, default=0.2, show_default=True, help="Seconds per id.")
@click.option(
    "--table", type=click.Choice(["holding", "input"]), default="holding", show_default=True
)
@click.option("--register", type=int, default=0, show_default=True, help="Register to read.")
def scan_command(
    port: str | None,
    baud: int,
    parity: str,
    stopbits: str,
    host: str | None,
    tcp_port: int,
    framer: str,
    ids: str,
    timeout: float,
    table: str,
    register: int,
) -> None:
    """Find the unit ids that answer on a bus: one register read each; an exception
    reply counts too (the device is there, it just lacks that register)."""
    bus = _bus_from_options(port, baud, parity, int(stopbits), host, tcp_port, framer, timeout)
    try:
        wanted = parse_ids(ids, lowest=1 if port else 0, highest=247 if port else 255)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--ids") from None
    found = asyncio.run(_scan(bus, wanted, Table(table), register))
    if not found:
        click.echo(f"no device answered on {bus.describe()}", err=True)
        sys.exit(1)
    listed = ", ".join(str(u) for u, _ in found)
    click.echo(
        f"{len(found)} device{'s' if len(found) != 1 else ''} found on {bus.describe()}: {listed}"
    )


class _Progress:
    """Where a scan stands, on stderr: a bar on a terminal; through a pipe or into a log
    a line at every tenth of the ids and at least every few seconds."""

    EVERY_S = 5.0

    def __init__(self, label: str, total: int, per_id_s: float) -> None:
        self.label, self.total = label, total
        self.tty = sys.stderr.isatty()
        self.done = 0
        self.last = time.monotonic()
        self.bar = (
            click.progressbar(length=total, label=label, file=sys.stderr) if self.tty else None
        )
        if self.bar is not None:
            self.bar.render_progress()
        else:
            click.echo(f"{label}: {total} ids, up to {total * per_id_s:.0f} s", err=True)

    def step(self, unit: int, found: int) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.update(1)
            return
        tenth = self.done * 10 // self.total != (self.done - 1) * 10 // self.total
        now = time.monotonic()
        if tenth or now - self.last >= self.EVERY_S:
            self.last = now
            click.echo(
                f"{self.label}: {self.done}/{self.total} ids (up to {unit}), {found} found",
                err=True,
            )

    def finish(self) -> None:
        if self.bar is not None:
            self.bar.render_finish()


async def _scan(
    bus: SerialBus | TcpBus, wanted: list[int], table: Table, register: int
) -> list[tuple[int, str]]:
    quiet_pymodbus()
    link = Link(bus, logging.getLogger("drivers.modbus.scan"))
    found: list[tuple[int, str]] = []
    progress = _Progress(f"scanning {bus.describe()}", len(wanted), bus.timeout_s)
    try:
        for unit in wanted:
            try:
                what = await _probe(link, unit, table, register)
            except LinkFault as exc:
                raise click.ClickException(f"{exc.fault.detail}; check: {exc.fault.hint}") from None
            if what is not None:
                found.append((unit, what))
                # At once, not at the end: a full scan of a bus takes about a minute.
                click.echo(f"unit {unit}: {what}")
            progress.step(unit, len(found))
    finally:
        progress.finish()
        await link.close()
    return found
